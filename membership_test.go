package paxos_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/paxoskit/paxos"
	"github.com/paxoskit/paxos/core"
)

// changeOn runs a membership change on node id's loop harness and returns
// its outcome.
func (c *cluster) changeOn(id uint64, change func(n *paxos.Node) (paxos.Membership, error)) (paxos.Membership, error) {
	var m paxos.Membership
	err := c.onLoop(func() error {
		var err error
		m, err = change(c.nodes[id].node)
		return err
	})
	return m, err
}

// TestMembershipRemoveAndAdd: removing a voter of three leaves a group of
// two that goes on choosing values (both needed), with the removed node
// refusing proposals as no member; adding it back makes three again, and
// it catches up. A change naming a stale version changes nothing.
func TestMembershipRemoveAndAdd(t *testing.T) {
	c := newCluster(t, 3, 1, []uint32{1}, nil)
	m := c.waitMaster(0)
	gone := c.follower(m)
	stay := m
	before, _ := c.nodes[m].node.Membership(0)
	if before.Version != 0 || !slices.Equal(before.Voters(), []uint64{1, 2, 3}) {
		t.Fatalf("first membership %+v", before)
	}
	got, err := c.changeOn(stay, func(n *paxos.Node) (paxos.Membership, error) { return n.RemoveMember(context.Background(), 0, gone) })
	if err != nil {
		t.Fatalf("RemoveMember(%d): %v", gone, err)
	}
	if got.Has(gone) || got.Version == 0 || got.From != got.Version+core.ConfigDelay {
		t.Fatalf("after removing %d: %+v", gone, got)
	}
	// Until the change governs (ConfigDelay instances on: the master
	// fills them), and after, values are chosen.
	c.runUntil("the removal to govern", 5*time.Second, func() bool {
		now, _ := c.nodes[stay].node.NowInstanceID(0)
		return now >= got.From
	})
	c.mustPropose(stay, 0, "two voters", nil)
	r := c.propose(gone, 0, "from the removed node", nil)
	c.wait(r)
	if !errors.Is(r.err, paxos.ErrNotMember) {
		t.Fatalf("proposal on the removed node: %v, want ErrNotMember", r.err)
	}
	// Two voters: both are needed. With the other voter down and the
	// removed node up, nothing is chosen; with the removed node down and
	// both voters up, values are.
	other := 6 - stay - gone
	c.crash(other)
	r = c.propose(stay, 0, "one voter and the removed node", nil)
	c.wait(r)
	if r.err == nil {
		t.Fatalf("a value was chosen with one of two voters down (the removed node counted?): instance %d", r.inst)
	}
	c.start(other)
	c.crash(gone)
	c.waitMaster(0)
	c.mustPropose(stay, 0, "without the removed node", nil)

	t.Logf("t=%v before the stale change", c.now)
	// A stale version changes nothing.
	_, err = c.changeOn(stay, func(n *paxos.Node) (paxos.Membership, error) {
		return n.ChangeMembership(context.Background(), 0, before.Version, []paxos.Member{{ID: 1}, {ID: 2}, {ID: 3}})
	})
	if !errors.Is(err, paxos.ErrConfigChanged) {
		t.Fatalf("change naming version %d after %d: %v, want ErrConfigChanged", before.Version, got.Version, err)
	}

	c.start(gone)
	back, err := c.changeOn(stay, func(n *paxos.Node) (paxos.Membership, error) { return n.AddMember(context.Background(), 0, gone, "") })
	if err != nil {
		t.Fatalf("AddMember(%d): %v", gone, err)
	}
	if !back.Has(gone) || back.Version <= got.Version {
		t.Fatalf("after adding %d back: %+v (removal was %+v)", gone, back, got)
	}
	inst := c.mustPropose(stay, 0, "three again", nil)
	c.runUntil("the re-added node to catch up", 5*time.Second, func() bool {
		now, _ := c.nodes[gone].node.NowInstanceID(0)
		return now > inst
	})
	if mb, _ := c.nodes[gone].node.Membership(0); mb.Version != back.Version {
		t.Fatalf("re-added node knows membership %+v, want version %d", mb, back.Version)
	}
}

// TestMembershipValidation: changes no group could run are refused before
// anything is proposed.
func TestMembershipValidation(t *testing.T) {
	c := newCluster(t, 3, 1, []uint32{1}, nil)
	m := c.waitMaster(0)
	for name, change := range map[string]func(n *paxos.Node) (paxos.Membership, error){
		"no voter": func(n *paxos.Node) (paxos.Membership, error) {
			return n.ChangeMembership(context.Background(), 0, 0, []paxos.Member{{ID: 1, Follower: true}})
		},
		"duplicate": func(n *paxos.Node) (paxos.Membership, error) {
			return n.ChangeMembership(context.Background(), 0, 0, []paxos.Member{{ID: 1}, {ID: 1}})
		},
		"zero id": func(n *paxos.Node) (paxos.Membership, error) {
			return n.ChangeMembership(context.Background(), 0, 0, []paxos.Member{{ID: 0}})
		},
		"add a member":  func(n *paxos.Node) (paxos.Membership, error) { return n.AddMember(context.Background(), 0, 2, "") },
		"remove no one": func(n *paxos.Node) (paxos.Membership, error) { return n.RemoveMember(context.Background(), 0, 9) },
		"promote voter": func(n *paxos.Node) (paxos.Membership, error) { return n.PromoteFollower(context.Background(), 0, 1) },
		"replace absent": func(n *paxos.Node) (paxos.Membership, error) {
			return n.ChangeMember(context.Background(), 0, 9, 4, "")
		},
	} {
		before := c.nodes[m].node.Stats().Proposals
		if _, err := c.changeOn(m, change); !errors.Is(err, paxos.ErrInvalidMembership) {
			t.Errorf("%s: %v, want ErrInvalidMembership", name, err)
		}
		if after := c.nodes[m].node.Stats().Proposals; after != before {
			t.Errorf("%s: %d proposals made", name, after-before)
		}
	}
}

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
	if got.Has(gone) || got.Version == 0 || got.From != got.Version+core.ConfigDelay || !got.Known {
		t.Fatalf("after removing %d: %+v", gone, got)
	}
	if now, _ := c.nodes[stay].node.Membership(0); now.Version != got.Version {
		t.Fatalf("Membership right after the change returned: version %d, want %d", now.Version, got.Version)
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

// TestFollowerJoinsAndIsPromoted: node 4 starts empty with Join: it
// refuses proposals until it is added; added as a follower it learns the
// configuration and every value and executes them, its loss changes
// nothing for the voters, its vote never makes a majority, and promoted
// it votes.
func TestFollowerJoinsAndIsPromoted(t *testing.T) {
	c := newCluster(t, 4, 1, []uint32{1}, func(o *paxos.Options) {
		o.Nodes = []uint64{1, 2, 3}
		o.Join = o.MyNode == 4
	})
	m := c.waitMaster(0)
	c.mustPropose(m, 0, "before", nil)
	if mb, _ := c.nodes[4].node.Membership(0); mb.Known || len(mb.Members) != 0 {
		t.Fatalf("a joiner not added yet shows membership %+v, want none known", mb)
	}
	r := c.propose(4, 0, "from the joiner", nil)
	c.wait(r)
	if !errors.Is(r.err, paxos.ErrNotMember) {
		t.Fatalf("proposal on a node not added yet: %v, want ErrNotMember", r.err)
	}
	mb, err := c.changeOn(m, func(n *paxos.Node) (paxos.Membership, error) {
		return n.AddFollower(context.Background(), 0, 4, "10.0.0.4:7000")
	})
	if err != nil || !slices.Equal(mb.Followers(), []uint64{4}) || !slices.Equal(mb.Voters(), []uint64{1, 2, 3}) || mb.Members[3].Addr != "10.0.0.4:7000" {
		t.Fatalf("AddFollower(4): %+v, %v", mb, err)
	}
	// The members' transports learn the new member's address.
	c.runUntil("the members' transports to learn node 4's address", time.Second, func() bool {
		for _, id := range []uint64{1, 2, 3} {
			if c.nodes[id].addrs[4] != "10.0.0.4:7000" {
				return false
			}
		}
		return true
	})
	inst := c.mustPropose(m, 0, "after", nil)
	c.runUntil("the follower to execute", 5*time.Second, func() bool {
		now, _ := c.nodes[4].node.NowInstanceID(0)
		return now > inst
	})
	if sm := c.nodes[4].sm(1); !hasValue(sm.execs, "before") || !hasValue(sm.execs, "after") {
		t.Fatalf("follower executed %v", sm.execs)
	}
	if got, _ := c.nodes[4].node.Membership(0); got.Version != mb.Version || !got.Known {
		t.Fatalf("follower knows membership %+v, want version %d", got, mb.Version)
	}
	// Its loss changes nothing.
	c.crash(4)
	c.mustPropose(m, 0, "without the follower", nil)
	c.start(4)
	// Its vote never makes a majority: with two voters down, nothing is
	// chosen though the follower is up.
	var down []uint64
	for _, id := range []uint64{1, 2, 3} {
		if id != m && len(down) < 2 {
			down = append(down, id)
		}
	}
	for _, id := range down {
		c.crash(id)
	}
	r = c.propose(m, 0, "one voter and a follower", nil)
	c.wait(r)
	if r.err == nil {
		t.Fatalf("chosen with one voter of three and the follower up: instance %d", r.inst)
	}
	for _, id := range down {
		c.start(id)
	}
	c.waitMaster(0)
	m = c.waitMaster(0)
	prom, err := c.changeOn(m, func(n *paxos.Node) (paxos.Membership, error) { return n.PromoteFollower(context.Background(), 0, 4) })
	if err != nil || !slices.Equal(prom.Voters(), []uint64{1, 2, 3, 4}) || len(prom.Followers()) != 0 {
		t.Fatalf("PromoteFollower(4): %+v, %v", prom, err)
	}
	c.runUntil("the promotion to govern", 5*time.Second, func() bool {
		now, _ := c.nodes[m].node.NowInstanceID(0)
		return now >= prom.From
	})
	c.mustPropose(m, 0, "four voters", nil)
	// An address change is a change too: the transports learn it.
	moved, err := c.changeOn(m, func(n *paxos.Node) (paxos.Membership, error) {
		return n.MoveMember(context.Background(), 0, 4, "10.0.0.44:7000")
	})
	if err != nil || moved.Members[3].Addr != "10.0.0.44:7000" || moved.Version <= prom.Version {
		t.Fatalf("MoveMember(4): %+v, %v", moved, err)
	}
	c.runUntil("the transports to learn node 4's new address", time.Second, func() bool {
		for _, id := range []uint64{1, 2, 3} {
			if c.nodes[id].addrs[4] != "10.0.0.44:7000" {
				return false
			}
		}
		return true
	})
}

// TestIdentityFollowsMembership: after a change, a node restarts with the
// member list it first started with or with the configuration the log
// decided; a list that is neither (a typo) is refused, nothing written.
func TestIdentityFollowsMembership(t *testing.T) {
	var nodes []uint64 // the member list the next start names, nil: the first one
	c := newCluster(t, 3, 1, []uint32{1}, func(o *paxos.Options) {
		if nodes != nil {
			o.Nodes = nodes
		}
	})
	m := c.waitMaster(0)
	gone := uint64(3)
	if m == gone {
		gone = 2
	}
	got, err := c.changeOn(m, func(n *paxos.Node) (paxos.Membership, error) { return n.RemoveMember(context.Background(), 0, gone) })
	if err != nil {
		t.Fatal(err)
	}
	c.runUntil("the removal to govern", 5*time.Second, func() bool {
		now, _ := c.nodes[m].node.NowInstanceID(0)
		return now >= got.From
	})
	c.mustPropose(m, 0, "after the change", nil) // its records synced cover the change's chosen mark
	restartWith := func(id uint64, list []uint64) error {
		c.crash(id)
		h := c.nodes[id]
		before := len(h.recs)
		nodes = list
		o := paxos.Options{MyNode: id, Nodes: list, ClusterID: 1, Groups: 1, StateMachines: []paxos.StateMachine{&recSM{smid: 1}}}
		h.inc++
		h.env = &nodeEnv{h: h, inc: h.inc}
		o.Env = h.env.all()
		n, err := paxos.RunNode(o)
		if err != nil {
			if len(h.recs) != before {
				t.Errorf("refused start with %v wrote %d records", list, len(h.recs)-before)
			}
			return err
		}
		n.Close()
		return nil
	}
	id := m
	if err := restartWith(id, got.Voters()); err != nil {
		t.Fatalf("restart with the voters the log decided %v: %v", got.Voters(), err)
	}
	if err := restartWith(id, []uint64{1, 2, 3}); err != nil {
		t.Fatalf("restart with the first member list: %v", err)
	}
	if err := restartWith(id, []uint64{id}); !errors.Is(err, paxos.ErrIdentityMismatch) {
		t.Fatalf("restart with the member list [%d]: %v, want ErrIdentityMismatch", id, err)
	}
}

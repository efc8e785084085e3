package paxos_test

import (
	"context"
	"errors"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/paxoskit/paxos"
)

// masterOf returns the node of c that holds the lease of group 0, 0 if none
// does; it fails the test if two do (the harness's nodes share one clock).
func (c *cluster) masterOf() uint64 {
	c.t.Helper()
	var held []uint64
	for _, id := range c.ids {
		if h := c.nodes[id]; h.up && h.node.IsMaster(0) {
			held = append(held, id)
		}
	}
	if len(held) > 1 {
		c.t.Fatalf("nodes %v all hold the lease of group 0", held)
	}
	if len(held) == 0 {
		return 0
	}
	return held[0]
}

// follower returns a node other than m.
func (c *cluster) follower(m uint64) uint64 {
	if c.ids[0] != m {
		return c.ids[0]
	}
	return c.ids[1]
}

func (c *cluster) waitMaster(not uint64) uint64 {
	c.t.Helper()
	var m uint64
	c.runUntil("a master", 5*time.Second, func() bool {
		m = c.masterOf()
		return m != 0 && m != not
	})
	return m
}

type readOut struct {
	done bool
	info paxos.ReadInfo
	err  error
	seen []execRec // the state machine's executions when the read ran
	at   time.Duration
}

func (c *cluster) read(id uint64, mode paxos.ReadMode) *readOut {
	r := &readOut{}
	h := c.nodes[id]
	h.node.ReadAsync(0, mode, func(ri paxos.ReadInfo, err error) {
		r.done, r.info, r.err, r.at = true, ri, err, c.now
		if err == nil {
			r.seen = slices.Clone(h.sm(1).execs)
		}
	})
	c.runUntil("a read", 5*time.Second, func() bool { return r.done })
	return r
}

// onLoop runs a blocking node call on another goroutine while the
// harness's virtual time runs, and returns its error. Virtual time stands
// still until the call has posted its work to the node's loop (or ended):
// a goroutine slow to start must not see seconds of virtual time pass.
func (c *cluster) onLoop(call func() error) error {
	c.t.Helper()
	errc := make(chan error, 1)
	c.mu.Lock()
	posted := c.seq
	c.mu.Unlock()
	go func() { errc <- call() }()
	var err error
	for deadline := time.Now().Add(10 * time.Second); ; {
		select {
		case err = <-errc:
			return err
		default:
		}
		c.mu.Lock()
		moved := c.seq != posted
		c.mu.Unlock()
		if moved {
			break
		}
		if time.Now().After(deadline) {
			c.t.Fatal("a node call posted nothing to the loop in 10s")
		}
		time.Sleep(100 * time.Microsecond)
	}
	c.runUntil("a node call", 5*time.Second, func() bool {
		select {
		case err = <-errc:
			return true
		default:
			runtime.Gosched()
			return false
		}
	})
	return err
}

func hasValue(es []execRec, v string) bool {
	return slices.ContainsFunc(es, func(e execRec) bool { return e.value == v })
}

// TestMasterElected: a fresh group elects a master without any proposal;
// every node learns who it is and its version (the instance of its master
// record), through Master, Status and OnMasterChange.
func TestMasterElected(t *testing.T) {
	changes := map[uint64][]paxos.Master{}
	c := newCluster(t, 3, 1, []uint32{1}, func(o *paxos.Options) {
		id := o.MyNode
		o.OnMasterChange = func(g uint64, m paxos.Master) { changes[id] = append(changes[id], m) }
	})
	m := c.waitMaster(0)
	c.runUntil("every node to know the master", 2*time.Second, func() bool {
		for _, id := range c.ids {
			if got, _ := c.nodes[id].node.Master(0); got.Node != m {
				return false
			}
		}
		return true
	})
	want, _ := c.nodes[m].node.Master(0)
	if want.Version == 0 {
		t.Fatalf("master %d has version 0", m)
	}
	for _, id := range c.ids {
		got, _ := c.nodes[id].node.Master(0)
		st, _ := c.nodes[id].node.Status(0)
		if got != want || st.Master != m || st.MasterVersion != want.Version || st.IsMaster != (id == m) {
			t.Errorf("node %d: Master %+v, status %+v; want %+v", id, got, st, want)
		}
		if ch := changes[id]; len(ch) == 0 || ch[len(ch)-1] != want {
			t.Errorf("node %d: master changes %v, want the last to be %+v", id, ch, want)
		}
	}
	// The master record is the version's instance: the first value follows it.
	if i := c.mustPropose(1, 0, "first", nil); i <= want.Version {
		t.Errorf("first value at instance %d, not after the master record %d", i, want.Version)
	}
}

// TestLinearizableReads: a lease read on the master and a read index on a
// follower both see a write that completed before they began, without a
// proposal; a lease read off the master is refused with the master's id.
func TestLinearizableReads(t *testing.T) {
	c := newCluster(t, 3, 1, []uint32{1}, nil)
	m := c.waitMaster(0)
	f := c.follower(m)
	inst := c.mustPropose(m, 0, "written", nil)
	before := c.nodes[m].node.Stats().Proposals

	r := c.read(m, paxos.ReadLease)
	if r.err != nil || !r.info.ByLease || r.info.Index < inst || !hasValue(r.seen, "written") {
		t.Fatalf("lease read on the master: %+v", r)
	}
	// A follower proposes and acks; a read index on the master right after
	// must see it even before the master's own state machine could be
	// assumed to have it.
	inst2 := c.mustPropose(f, 0, "from follower", nil)
	r = c.read(f, paxos.ReadIndex)
	if r.err != nil || r.info.ByLease || r.info.Index < inst2 || !hasValue(r.seen, "from follower") {
		t.Fatalf("read index on a follower: %+v", r)
	}
	r = c.read(f, paxos.ReadAuto)
	if r.err != nil || r.info.ByLease {
		t.Fatalf("auto read on a follower: %+v", r)
	}
	r = c.read(f, paxos.ReadLease)
	var nm *paxos.NotMasterError
	if !errors.As(r.err, &nm) || !errors.Is(r.err, paxos.ErrNotMaster) || nm.Master.Node != m {
		t.Fatalf("lease read on a follower: %v, want NotMasterError naming %d", r.err, m)
	}
	if got := c.nodes[m].node.Stats().Proposals; got != before {
		t.Errorf("reads made the master propose: %d proposals, was %d", got, before)
	}
	if s := c.nodes[m].node.Stats(); s.LeaseReads == 0 {
		t.Errorf("master stats %+v: no lease reads counted", s)
	}
	if s := c.nodes[f].node.Stats(); s.IndexReads < 2 {
		t.Errorf("follower stats %+v: want 2 index reads", s)
	}
}

// TestNoQuorumFailsFast: with the other two nodes down, a proposal and a
// read on the survivor fail with ErrNoQuorum at once, and a proposal in
// flight when the majority went away ends well before its timeout.
func TestNoQuorumFailsFast(t *testing.T) {
	c := newCluster(t, 3, 1, []uint32{1}, nil)
	m := c.waitMaster(0)
	s := c.follower(m)
	c.mustPropose(s, 0, "before", nil)
	for _, id := range c.ids {
		if id != s {
			c.crash(id)
		}
	}
	start := c.now
	inflight := c.propose(s, 0, "in flight", nil)
	c.wait(inflight)
	if !errors.Is(inflight.err, paxos.ErrNoQuorum) || inflight.at-start > 2*time.Second {
		t.Fatalf("proposal in flight: %v after %v; want ErrNoQuorum well within the 3s timeout", inflight.err, inflight.at-start)
	}
	start = c.now
	r := c.propose(s, 0, "after", nil)
	c.wait(r)
	if !errors.Is(r.err, paxos.ErrNoQuorum) || errors.Is(r.err, paxos.ErrTimeout) || r.at != start {
		t.Fatalf("proposal without a quorum: %v after %v; want ErrNoQuorum at once", r.err, r.at-start)
	}
	rd := c.read(s, paxos.ReadAuto)
	if !errors.Is(rd.err, paxos.ErrNoQuorum) || rd.at != c.now {
		t.Fatalf("read without a quorum: %+v", rd)
	}
	if st := c.nodes[s].node.Stats(); st.NoQuorum < 3 {
		t.Errorf("NoQuorum counted %d, want 3", st.NoQuorum)
	}
}

// TestCheckQuorum: a master cut off from both peers loses its lease and
// steps down; the other two elect a master with a higher version, and the
// old one follows it once it is back.
func TestCheckQuorum(t *testing.T) {
	c := newCluster(t, 3, 1, []uint32{1}, nil)
	m := c.waitMaster(0)
	old, _ := c.nodes[m].node.Master(0)
	c.isolate(m, true)
	c.runUntil("the cut-off master to step down", 3*time.Second, func() bool {
		st, _ := c.nodes[m].node.Status(0)
		return !st.IsLeader && !st.IsMaster
	})
	m2 := c.waitMaster(m)
	now, _ := c.nodes[m2].node.Master(0)
	if now.Version <= old.Version {
		t.Fatalf("new master %+v, old %+v: version did not grow", now, old)
	}
	// Back, its raised promise makes the master come back with a higher
	// ballot (a new version); then it follows.
	c.isolate(m, false)
	c.runUntil("the old master to follow a new one", 3*time.Second, func() bool {
		got, _ := c.nodes[m].node.Master(0)
		cur := c.masterOf()
		want, _ := c.nodes[m2].node.Master(0)
		return cur != 0 && cur != m && got.Node == cur && got.Version >= now.Version && want == got
	})
}

// TestTransferMaster hands mastership to a named node, which takes over
// without waiting out the lease; DropMaster lets another node take over.
func TestTransferMaster(t *testing.T) {
	c := newCluster(t, 3, 1, []uint32{1}, nil)
	m := c.waitMaster(0)
	v1, _ := c.nodes[m].node.Master(0)
	to := c.ids[0]
	if to == m {
		to = c.ids[1]
	}
	start := c.now
	if err := c.onLoop(func() error { return c.nodes[m].node.TransferMaster(context.Background(), 0, to) }); err != nil {
		t.Fatalf("TransferMaster: %v", err)
	}
	c.runUntil("the new master's lease", time.Second, func() bool { return c.masterOf() == to })
	v2, _ := c.nodes[to].node.Master(0)
	if v2.Version <= v1.Version || c.now-start >= time.Second {
		t.Fatalf("after transfer: %+v (was %+v) after %v; want a higher version within the 1s lease", v2, v1, c.now-start)
	}
	c.mustPropose(m, 0, "after transfer", nil)

	if err := c.onLoop(func() error { return c.nodes[m].node.DropMaster(0) }); !errors.Is(err, paxos.ErrNotMaster) {
		t.Errorf("DropMaster on a follower: %v, want ErrNotMaster", err)
	}
	if err := c.onLoop(func() error { return c.nodes[to].node.DropMaster(0) }); err != nil {
		t.Fatalf("DropMaster: %v", err)
	}
	m3 := c.waitMaster(to)
	v3, _ := c.nodes[m3].node.Master(0)
	if v3.Version <= v2.Version {
		t.Fatalf("after drop: %+v, was %+v", v3, v2)
	}
	// Refused before it reaches the loop.
	if err := c.nodes[m3].node.TransferMaster(context.Background(), 0, m3); !errors.Is(err, paxos.ErrInvalidOptions) {
		t.Errorf("transfer to itself: %v", err)
	}
}

func TestSetMasterLease(t *testing.T) {
	c := newCluster(t, 1, 1, []uint32{1}, nil)
	n := c.nodes[1].node
	for _, d := range []time.Duration{time.Millisecond, 2 * time.Second} {
		if err := n.SetMasterLease(0, d); !errors.Is(err, paxos.ErrInvalidOptions) {
			t.Errorf("SetMasterLease(%v): %v, want ErrInvalidOptions", d, err)
		}
	}
	if err := c.onLoop(func() error { return n.SetMasterLease(0, 500*time.Millisecond) }); err != nil {
		t.Fatalf("SetMasterLease(500ms): %v", err)
	}
	if _, err := n.Master(7); !errors.Is(err, paxos.ErrUnknownGroup) {
		t.Errorf("Master(7): %v", err)
	}
}

// TestForwardedWriteSurvivesMasterCrash: a write a follower forwarded to a
// master that crashed before sending it anywhere is answered once the next
// master's record is executed, well within the proposal timeout, and is
// executed once (issue 9: "a write in flight when the master dies is
// answered as soon as its outcome is known"). Without fences its outcome
// stayed unknown until ErrTimeout.
func TestForwardedWriteSurvivesMasterCrash(t *testing.T) {
	c := newCluster(t, 3, 1, []uint32{1}, nil)
	m := c.waitMaster(0)
	f := c.follower(m)
	c.mustPropose(f, 0, "before", nil)
	// The master hears the others, they no longer hear it: the forward
	// arrives and goes no further.
	for _, o := range c.ids {
		if o != m {
			c.drop[[2]uint64{m, o}] = true
		}
	}
	recv := c.nodes[m].node.Stats().MsgsReceived
	start := c.now
	r := c.propose(f, 0, "in flight", nil)
	c.run(20 * time.Millisecond)
	if c.nodes[m].node.Stats().MsgsReceived == recv || r.done {
		t.Fatalf("setup: master received nothing, or the write ended already: %+v", r)
	}
	c.crash(m)
	c.wait(r)
	if r.err != nil || r.at-start > 2*time.Second {
		t.Fatalf("write forwarded to the crashed master: %v after %v; want success well within the 3s timeout", r.err, r.at-start)
	}
	if st := c.nodes[f].node.Stats(); st.Resent == 0 || st.Timeouts != 0 {
		t.Fatalf("stats of the proposing node: Resent %d, Timeouts %d; want a resend and no timeout", st.Resent, st.Timeouts)
	}
	c.run(100 * time.Millisecond)
	for _, id := range c.ids {
		if id == m {
			continue
		}
		n := 0
		for _, e := range c.nodes[id].sm(1).execs {
			if e.value == "in flight" {
				n++
			}
		}
		if n != 1 {
			t.Fatalf("node %d executed the write %d times, want once", id, n)
		}
	}
}

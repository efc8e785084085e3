package sim

import (
	"errors"
	"fmt"
	"time"

	"github.com/paxoskit/paxos"
	"github.com/paxoskit/paxos/internal/kvsm"
)

// client issues KV operations one at a time to random live nodes and
// records them for the linearizability check.
type client struct {
	id       int
	r        *run
	seq      int
	versions map[string]uint64 // last version seen per key, for CAS
	// master is, per group, the master the client last heard of (from the
	// node that served its last operation, or from ErrNotMaster): most
	// reads go there, as clients that route reads to the master do. A
	// deposed master that does not know it gets them too.
	master map[uint64]uint64
}

// learnMaster notes the master node n knows of for group.
func (c *client) learnMaster(n *simNode, node *paxos.Node, group uint64) {
	if n.node != node || node == nil {
		return
	}
	if m, err := node.Master(group); err == nil {
		c.master[group] = m.Node
	}
}

func (c *client) next() {
	r := c.r
	if r.w.now >= r.clientStop {
		return
	}
	r.w.after(r.w.between(0, r.opts.ThinkTime), c.issue)
}

// backOff follows a failed operation: a node without a quorum fails at
// once, so a client that went on at its usual pace would spin against it.
func (c *client) backOff() {
	r := c.r
	if r.w.now >= r.clientStop {
		return
	}
	r.w.after(r.w.between(10*time.Millisecond, 100*time.Millisecond)+r.w.between(0, r.opts.ThinkTime), c.issue)
}

func (c *client) issue() {
	r := c.r
	if r.w.now >= r.clientStop || r.err != nil {
		return
	}
	var up []*simNode
	for _, n := range r.nodes {
		if r.serving(n) {
			up = append(up, n)
		}
	}
	if len(up) == 0 {
		r.w.after(10*time.Millisecond, c.issue)
		return
	}
	n := up[r.w.rng.IntN(len(up))]
	k := r.w.rng.IntN(r.opts.Keys)
	group := uint64(k % r.opts.Groups)
	key := fmt.Sprintf("g%d/k%d", group, k)
	c.seq++
	op := kvsm.Op{Key: key}
	switch p := r.w.rng.IntN(100); {
	case p < 35:
		op.Kind, op.Value = kvsm.Put, fmt.Sprintf("c%d.%d", c.id, c.seq)
	case p < 65:
		op.Kind, op.Value = kvsm.Get, fmt.Sprintf("c%d.%d", c.id, c.seq)
	case p < 75:
		op.Kind, op.Value = kvsm.Delete, fmt.Sprintf("c%d.%d", c.id, c.seq) // the value only makes the op unique
	default:
		op.Kind, op.Value, op.Version = kvsm.CAS, fmt.Sprintf("c%d.%d", c.id, c.seq), c.versions[key]
	}
	if op.Kind == kvsm.Get && r.w.chance(r.opts.ReadRate) {
		if m := c.master[group]; m != 0 && r.serving(r.nodes[m-1]) && r.w.chance(0.7) {
			n = r.nodes[m-1]
		}
		c.read(n, group, op)
		return
	}
	data := op.Encode()
	if _, dup := r.proposed[string(data)]; dup {
		// The checkers tell operations apart by their bytes.
		r.failf("client %d: operation %v encodes like an earlier one", c.id, op)
		return
	}
	r.proposed[string(data)] = struct{}{}
	invoked := r.w.now
	id := r.rec.Invoke(c.id, op, int64(invoked))
	r.open[id] = string(data)
	r.stats.Ops++
	r.w.tracef("client %d -> n%d %v", c.id, n.id, op)
	node := n.node
	done := false
	finish := func(out paxos.Result, err error) {
		if done {
			return
		}
		done = true
		if err != nil {
			r.stats.OpsUnknown++
			r.rec.Unknown(id)
			r.w.tracef("client %d <- %v", c.id, err)
			if invoked >= r.liveFrom && !errors.Is(err, paxos.ErrCheckpointInstalled) {
				r.failCheck("liveness", "client %d: %v invoked at %v after healing failed: %v", c.id, op, invoked, err)
			}
			if errors.Is(err, paxos.ErrNoQuorum) && !errors.Is(err, paxos.ErrTimeout) {
				// Never started: it must never be chosen.
				if _, ok := r.executed[string(data)]; ok {
					r.failCheck("no-quorum", "client %d: %v failed with %v, but it was chosen already", c.id, op, err)
				}
				r.noQuorum[string(data)] = true
			}
			c.backOff()
			return
		}
		res, _ := out.Value.(kvsm.Result)
		delete(r.open, id)
		r.stats.OpsOK++
		r.rec.Return(id, res, int64(r.w.now))
		r.acked = append(r.acked, ack{group, out.Instance})
		r.maxAcked[group] = max(r.maxAcked[group], out.Instance)
		c.versions[key] = res.Version
		c.learnMaster(n, node, group)
		r.w.tracef("client %d <- instance %d %+v", c.id, out.Instance, res)
		c.next()
	}
	smCtx := &paxos.SMCtx{SMID: kvsm.SMID}
	if r.w.chance(r.opts.BatchRate) {
		node.BatchProposeAsync(group, data, smCtx, finish)
	} else {
		node.ProposeAsync(group, data, smCtx, finish)
	}
	// The node may crash with the proposal; the client gives up on its own.
	r.w.after(proposeTimeout+500*time.Millisecond, func() { finish(paxos.Result{}, paxos.ErrTimeout) })
}

// read sends a get as a linearizable read (Node.ReadAsync) in a random
// mode: its function looks the key up in the node's state machine at the
// linearizable point and returns what a get through the log would. A read
// that fails read nothing: it leaves the history.
func (c *client) read(n *simNode, group uint64, op kvsm.Op) {
	r := c.r
	mode := paxos.ReadMode(r.w.rng.IntN(3))
	invoked := r.w.now
	id := r.rec.Invoke(c.id, op, int64(invoked))
	r.stats.Reads++
	// Every write acknowledged before the read began is at or below the
	// index it reads at; so is every instance executed anywhere before it
	// began (a leader confirms its chosen prefix, and every instance
	// chosen before the read is at or below that), which a read that
	// confirmed nothing misses more often than it misses a write.
	acked, executed := r.maxAcked[group], uint64(len(r.digests[group])-1)
	node, sm, inc := n.node, n.sm, n.inc
	mark := r.markRead(n, group)
	r.w.tracef("client %d -> n%d read(%v) %v", c.id, n.id, mode, op)
	done := false
	fail := func(err error) {
		c.master[group] = 0
		if nm := (*paxos.NotMasterError)(nil); errors.As(err, &nm) {
			c.master[group] = nm.Master.Node
		}
		r.rec.Absent(id)
		r.stats.ReadsFailed++
		r.w.tracef("client %d <- read %v", c.id, err)
		if invoked < r.liveFrom {
			return
		}
		if mode == paxos.ReadLease && errors.Is(err, paxos.ErrNotMaster) {
			if _, master := r.holds(n, group); !master || n.node != node {
				return // not the master: a lease read may only fail so
			}
		}
		r.failCheck("liveness", "client %d: %v read (%v) on node %d invoked at %v after healing failed: %v", c.id, op, mode, n.id, invoked, err)
	}
	node.ReadAsync(group, mode, func(info paxos.ReadInfo, err error) {
		if done {
			return
		}
		done = true
		if err != nil {
			fail(err)
			c.backOff()
			return
		}
		defer c.next()
		if info.Index < max(acked, executed) {
			r.failCheck("read", "node %d group %d: %v read (%v, by lease %v) at index %d, below instance %d acknowledged and instance %d executed before it began",
				n.id, group, op, mode, info.ByLease, info.Index, acked, executed)
			return
		}
		if info.ByLease {
			r.checkLeaseRead(n, inc, group, invoked)
		} else {
			r.checkReadRound(n, inc, group, mark, invoked, info.Index)
		}
		e := sm.Lookup(group, op.Key)
		res := kvsm.Result{OK: true, Found: e.Exists, Value: e.Value, Version: e.Version}
		r.rec.Return(id, res, int64(r.w.now))
		c.versions[op.Key] = res.Version
		c.learnMaster(n, node, group)
		r.w.tracef("client %d <- read index %d lease=%v %+v", c.id, info.Index, info.ByLease, res)
	})
	// The node may crash with the read; the client gives up on its own.
	r.w.after(proposeTimeout+500*time.Millisecond, func() {
		if !done {
			done = true
			fail(paxos.ErrTimeout)
			c.backOff()
		}
	})
}

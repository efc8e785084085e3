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
}

func (c *client) next() {
	r := c.r
	if r.w.now >= r.clientStop {
		return
	}
	r.w.after(r.w.between(0, r.opts.ThinkTime), c.issue)
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
		} else {
			res, _ := out.Value.(kvsm.Result)
			delete(r.open, id)
			r.stats.OpsOK++
			r.rec.Return(id, res, int64(r.w.now))
			r.acked = append(r.acked, ack{group, out.Instance})
			c.versions[key] = res.Version
			r.w.tracef("client %d <- instance %d %+v", c.id, out.Instance, res)
		}
		c.next()
	}
	smCtx := &paxos.SMCtx{SMID: kvsm.SMID}
	if r.w.chance(r.opts.BatchRate) {
		n.node.BatchProposeAsync(group, data, smCtx, finish)
	} else {
		n.node.ProposeAsync(group, data, smCtx, finish)
	}
	// The node may crash with the proposal; the client gives up on its own.
	r.w.after(proposeTimeout+500*time.Millisecond, func() { finish(paxos.Result{}, paxos.ErrTimeout) })
}

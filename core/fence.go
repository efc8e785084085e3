package core

import (
	"maps"
	"slices"

	pb "github.com/paxoskit/paxos/core/paxospb"
)

// Fences: a proposal that leaves its node, forwarded to the master or bound
// to an instance by it, carries the version of that master (Value.fence,
// the instance of its master record). Execution skips a fenced value unless
// the newest master record executed before it is at its fence (Fenced).
// Since execution follows the log, every node skips the same values, and
// once a newer master record is executed, a value sent to an older master
// that was not executed before it never will be: its proposer can send it
// again without risking a second execution, and a write in flight when
// its master died gets an answer as soon as the next master's record is
// executed. Leaders also drop values fenced for another master (onForward,
// fillWindow), so such values are rarely chosen at all.

// Fenced reports whether v, executed where the newest master record
// executed before it is at version, is to be skipped.
func Fenced(version uint64, v *pb.Value) bool {
	return v.Fence != 0 && v.Fence != version && !v.Noop
}

// staleFence reports whether a leader must drop v, forwarded to it: v is
// fenced for another master version (an earlier leadership of this node,
// or another leader that handed its queue on). That holds for our own
// proposals too: one we forwarded may come back from a leader that lost
// its role, after we gave it up and sent it again.
func (c *Core) staleFence(v *pb.Value) bool {
	if c.cfg.Canary == CanaryStaleForward || c.cfg.Canary == CanaryNoFence {
		return false
	}
	return v.Fence != 0 && v.Fence != c.masterAt
}

// own reports whether v is a proposal of this incarnation.
func (c *Core) own(v *pb.Value) bool {
	return v.Node == c.cfg.ID && v.Boot == c.boot && !v.Noop
}

// fence stamps our proposal v, leaving this node for the master of
// version, with that version (once: a stamped value keeps its fence).
func (c *Core) fence(v *pb.Value, version uint64) {
	if c.own(v) && v.Fence == 0 {
		v.Fence = version
		c.sent[v.Seq] = v
	}
}

// handedOut follows the executed log: our proposal executed at instance i
// is settled; a master record at i kills every proposal sent under an older
// fence and not executed yet.
func (c *Core) handedOut(i uint64, v *pb.Value) {
	switch {
	case v == nil:
	case v.Master:
		if len(c.sent) == 0 {
			return
		}
		for _, seq := range slices.Sorted(maps.Keys(c.sent)) {
			if f := c.sent[seq].Fence; f < i {
				c.kill(seq)
			}
		}
	case c.own(v):
		delete(c.sent, v.Seq)
	}
}

// kill gives up proposal seq: it will never be executed.
func (c *Core) kill(seq uint64) {
	v := c.sent[seq]
	delete(c.sent, seq)
	for i, bv := range c.bound {
		if bv == v {
			delete(c.bound, i) // not to be queued again if another value takes i
		}
	}
	c.dead = append(c.dead, v)
}

// Dead hands out this node's proposals that can no longer be executed:
// each was sent to a master whose successor's record is now executed here
// without it (see Fenced). Proposing its data again is safe. Like
// Committed, call it after each Ready; the order is deterministic.
func (c *Core) Dead() []*pb.Value {
	d := c.dead
	c.dead = nil
	return d
}

// Resend queues the data of dead proposal v again, as a new proposal, and
// returns its sequence number (false if the queue is full).
func (c *Core) Resend(v *pb.Value) (uint64, bool) {
	return c.enqueue(&pb.Value{Smid: v.Smid, Data: v.Data, Batch: v.Batch, Config: v.Config})
}

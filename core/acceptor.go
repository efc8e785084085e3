package core

import (
	"cmp"
	"slices"

	pb "github.com/paxoskit/paxos/core/paxospb"
)

// promise raises the acceptor's promise to b; it covers every instance.
func (c *Core) promise(b Ballot) {
	if c.promised.Less(b) {
		c.promised = b
		c.hsDirty = true
	}
}

// yield makes a preparing or leading proposer give way to a higher ballot.
func (c *Core) yield(b Ballot) {
	if c.role != follower && c.ballot.Less(b) {
		c.becomeFollower(c.cfg.Rand(c.cfg.ElectionTicks) + 1)
	}
}

func (c *Core) reject(m *pb.Message) {
	c.send(&pb.Message{Type: pb.MsgType_MSG_REJECT, To: m.From, Ballot: c.promised.pb(), Instance: uint64(m.Type)})
}

// onPrepare is phase 1b: promise and report every entry from m.Instance on.
func (c *Core) onPrepare(m *pb.Message) {
	b := ballotOf(m.Ballot)
	if b.Less(c.promised) {
		c.reject(m)
		return
	}
	if c.granted(b, m.TransferFrom) {
		// A lease granted to another leader runs here (or this node just
		// restarted): no promise until it ran out.
		// The refusal says how long the grant still runs, so the proposer
		// waits that long instead of running again and again (each run
		// raises its own promise, which would then refuse the leader).
		if g := c.grant; g.node != 0 && g.ticks > 0 && !g.ballot.IsZero() {
			c.send(&pb.Message{Type: pb.MsgType_MSG_REJECT, To: m.From, Ballot: g.ballot.pb(), Instance: uint64(m.Type), Seq: 1,
				LeaseUs: uint64(g.ticks) * c.cfg.TickMicros})
		} else if !c.promised.IsZero() {
			c.reject(m)
		}
		return
	}
	if t := m.TransferFrom; t != nil && c.grant.ticks > 0 && c.grant.node == t.Node && c.grant.node != b.Node {
		// The grantee handed over: the grant passes to its successor.
		c.grant.node, c.grant.ballot = b.Node, b
	}
	c.promise(b)
	c.yield(b)
	p := &pb.Message{Type: pb.MsgType_MSG_PROMISE, To: m.From, Ballot: m.Ballot, Entries: c.entriesFrom(m.Instance)}
	if m.Instance <= c.memBase {
		// Chosen instances from m.Instance to memBase are no longer in
		// memory: the promise says it starts above them, and the proposer,
		// which lacks them, catches up before leading.
		p.Instance = c.memBase + 1
	}
	c.send(p)
}

// onAccept is phase 2b: accept unless promised to a higher ballot.
func (c *Core) onAccept(m *pb.Message) {
	b := ballotOf(m.Ballot)
	if b.Less(c.promised) && c.cfg.Canary != CanaryIgnorePromise {
		c.reject(m)
		return
	}
	c.promise(b)
	c.yield(b)
	if b.Node != c.cfg.ID {
		c.followLeader(b)
	}
	ids := make([]uint64, 0, len(m.Entries))
	var chosen []*pb.Entry
	for _, e := range m.Entries {
		if c.tooFar(e.Instance) || e.Instance <= c.memBase || e.Instance <= c.noVote {
			continue // no vote: this node must catch up first, or executed it long ago
		}
		if old := c.log[e.Instance]; old != nil && old.Chosen {
			// Already decided: tell the proposer the outcome instead of
			// voting, so every vote we send stands on a stored record.
			chosen = append(chosen, old)
			continue
		}
		c.setLog(&pb.Entry{Instance: e.Instance, Ballot: m.Ballot, Value: e.Value})
		if c.nonVoter(e.Instance) {
			continue // a follower (or removed): it holds the value, its vote would not count
		}
		ids = append(ids, e.Instance)
	}
	if len(ids) > 0 {
		c.send(&pb.Message{Type: pb.MsgType_MSG_ACCEPTED, To: m.From, Ballot: m.Ballot, Instances: ids})
	}
	if len(chosen) > 0 {
		c.send(&pb.Message{Type: pb.MsgType_MSG_CHOSEN, To: m.From, Entries: chosen})
	}
}

// followLeader records that b's proposer leads; proposals go there.
func (c *Core) followLeader(b Ballot) {
	if b != c.leaderBallot {
		c.leaderVersion = 0 // until its heartbeat says
	}
	c.leader, c.leaderBallot, c.leaderTicks = b.Node, b, 0
}

// entriesFrom returns the stored entries from instance from on, in order.
func (c *Core) entriesFrom(from uint64) []*pb.Entry {
	var out []*pb.Entry
	from = max(from, c.memBase+1)
	if c.maxIndex < from {
		return nil
	}
	if c.maxIndex-from < uint64(len(c.log)) {
		for i := max(from, 1); i <= c.maxIndex; i++ {
			if e := c.log[i]; e != nil {
				out = append(out, e)
			}
		}
		return out
	}
	for i, e := range c.log {
		if i >= from {
			out = append(out, e)
		}
	}
	slices.SortFunc(out, func(a, b *pb.Entry) int { return cmp.Compare(a.Instance, b.Instance) })
	return out
}

package sim

import (
	"github.com/paxoskit/paxos/core"
	pb "github.com/paxoskit/paxos/core/paxospb"
)

// The acceptor checker watches every promise and vote a node sends. A vote
// below a promise the node already made breaks Paxos at once. And acceptor
// state must be durable before a message reveals it: when the node crashes,
// what is left on its disk must still cover every promise and vote it sent.

type slot struct{ group, instance uint64 }

// revealed is what a node has told others about its acceptor state.
type revealed struct {
	promised map[uint64]core.Ballot // per group
	accepted map[slot]core.Ballot
}

// noteSent feeds every message a node sends to the checkers that watch
// acceptor and proposer state directly (and to the fault aimed at
// proposers that just sent a prepare).
func (r *run) noteSent(n *simNode, m *pb.Message) {
	switch m.Type {
	case pb.MsgType_MSG_PREPARE:
		r.checkBallot(n, m)
		r.notePrepare(n, m)
		r.crashAfterPrepare(n)
	case pb.MsgType_MSG_ACCEPT:
		r.checkBallot(n, m)
		r.checkAdoption(n, m)
	case pb.MsgType_MSG_SNAP_REQ:
		r.stats.Transfers++
	case pb.MsgType_MSG_HEARTBEAT, pb.MsgType_MSG_READ_INDEX_RESP:
		r.noteRoundSent(n, m)
	}
	r.noteLeader(n, m)
	r.noteRevealed(n, m)
}

// noteRevealed records the promises and votes a message reveals, and fails
// the run on a vote below a promise the node made.
func (r *run) noteRevealed(n *simNode, m *pb.Message) {
	if m.Type != pb.MsgType_MSG_PROMISE && m.Type != pb.MsgType_MSG_ACCEPTED {
		return
	}
	if n.revealed.promised == nil {
		n.revealed = revealed{promised: map[uint64]core.Ballot{}, accepted: map[slot]core.Ballot{}}
	}
	b := core.Ballot{Counter: m.Ballot.GetCounter(), Node: m.Ballot.GetNode()}
	if p := n.revealed.promised[m.Group]; m.Type == pb.MsgType_MSG_ACCEPTED && b.Less(p) {
		r.failCheck("promise", "node %d group %d voted at %v after promising %v", n.id, m.Group, b, p)
	}
	if p := n.revealed.promised[m.Group]; p.Less(b) {
		n.revealed.promised[m.Group] = b
	}
	for _, i := range m.Instances {
		s := slot{m.Group, i}
		if a := n.revealed.accepted[s]; a.Less(b) {
			n.revealed.accepted[s] = b
		}
	}
}

// checkDurable runs right after a crash has dropped n's unsynced bytes.
func (r *run) checkDurable(n *simNode) {
	if n.revealed.promised == nil {
		return
	}
	for g := range uint64(r.opts.Groups) {
		recs, err := n.disk.load(g, 0)
		if err != nil {
			continue // open() reports torn or corrupt logs at restart
		}
		mark := n.disk.mark(g, n.disk.size) // a checkpoint covers the votes below it
		var promised core.Ballot
		accepted := map[uint64]*pb.Entry{}
		for _, rec := range recs {
			if hs := rec.HardState; hs != nil {
				promised = core.Ballot{Counter: hs.Promised.GetCounter(), Node: hs.Promised.GetNode()}
			}
			if e := rec.Entry; e != nil {
				accepted[e.Instance] = e
			}
		}
		if want := n.revealed.promised[g]; promised.Less(want) {
			r.failCheck("durability", "node %d group %d revealed a promise of %v but its disk kept %v", n.id, g, want, promised)
			return
		}
		for s, b := range n.revealed.accepted {
			if s.group != g || s.instance < mark {
				continue
			}
			e := accepted[s.instance]
			if e == nil || (!e.Chosen && core.Ballot{Counter: e.Ballot.GetCounter(), Node: e.Ballot.GetNode()}.Less(b)) {
				r.failCheck("durability", "node %d group %d voted for instance %d at %v but its disk lost the vote", n.id, g, s.instance, b)
				return
			}
		}
	}
}

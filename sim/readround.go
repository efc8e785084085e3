package sim

import (
	"time"

	"github.com/paxoskit/paxos/core"
	pb "github.com/paxoskit/paxos/core/paxospb"
)

// The read-round checker looks at read index confirmations directly: a
// leader may answer a read index request (a peer's MSG_READ_INDEX, or a
// read of its own) only after a majority acked a heartbeat it sent after
// the request reached it. Without that round a deposed leader that does
// not know it yet answers with a stale index, which the read and
// linearizability checkers only see when a write lands in that window.

// hbRound is what the checker knows of one node incarnation's heartbeat
// rounds in one group.
type hbRound struct {
	sent   []hbSent          // heartbeats sent, in order
	ballot core.Ballot       // the ballot the acks are for
	acked  map[uint64]uint64 // peer -> highest seq acked under ballot
	// readResp is when the node last got a read index answer (index > 0)
	// from a leader.
	readResp time.Duration
	gotResp  bool
}

type hbSent struct {
	seq    uint64
	ballot core.Ballot
	clock  time.Duration // the sender's clock when it left
}

type roundKey struct{ node, inc, group uint64 }

func (r *run) round(n *simNode, g uint64) *hbRound {
	k := roundKey{n.id, n.inc, g}
	h := r.rounds[k]
	if h == nil {
		h = &hbRound{acked: map[uint64]uint64{}}
		r.rounds[k] = h
	}
	return h
}

// noteRoundSent follows heartbeats and read index answers a node sends.
func (r *run) noteRoundSent(n *simNode, m *pb.Message) {
	switch m.Type {
	case pb.MsgType_MSG_HEARTBEAT:
		if m.Seq != 0 {
			h := r.round(n, m.Group)
			h.sent = append(h.sent, hbSent{m.Seq, ballotOf(m.Ballot), n.clock.now(r.w.now)})
		}
	case pb.MsgType_MSG_READ_INDEX_RESP:
		if m.Instance == 0 {
			return // refused
		}
		h := r.round(n, m.Group)
		k := readReqKey{n.id, n.inc, m.Group, m.To, m.Seq}
		base, ok := r.readReqs[k]
		if !ok {
			return // a duplicate answer, or a request seen before a crash
		}
		delete(r.readReqs, k)
		if !r.confirmed(n, m.Group, h, base) && !r.opts.endToEnd {
			r.failCheck("read-round", "node %d group %d answered node %d's read index request %d with index %d without a majority round after the request (heartbeats since: %d, acks %v)",
				n.id, m.Group, m.To, m.Seq, m.Instance, len(h.sent)-base, h.acked)
		}
	}
}

type readReqKey struct{ node, inc, group, from, id uint64 }

// noteRoundDelivered follows what a node receives: heartbeat acks, read
// index requests and answers.
func (r *run) noteRoundDelivered(n *simNode, m *pb.Message) {
	switch m.Type {
	case pb.MsgType_MSG_HEARTBEAT_ACK:
		h := r.round(n, m.Group)
		b := ballotOf(m.Ballot)
		if h.ballot.Less(b) {
			h.ballot = b
			clear(h.acked)
		}
		if b == h.ballot {
			h.acked[m.From] = max(h.acked[m.From], m.Seq)
		}
	case pb.MsgType_MSG_READ_INDEX:
		k := readReqKey{n.id, n.inc, m.Group, m.From, m.Seq}
		if _, ok := r.readReqs[k]; !ok {
			r.readReqs[k] = len(r.round(n, m.Group).sent)
		}
	case pb.MsgType_MSG_READ_INDEX_RESP:
		if m.Instance > 0 {
			h := r.round(n, m.Group)
			h.readResp, h.gotResp = r.w.now, true
		}
	}
}

// confirmed reports whether a majority (the node itself included) acked a
// heartbeat the node sent after its base-th one.
func (r *run) confirmed(n *simNode, g uint64, h *hbRound, base int) bool {
	if base >= len(h.sent) {
		return false
	}
	first := h.sent[base]
	if first.ballot != h.ballot {
		// Acks for another ballot than the first heartbeat after the
		// request: look for a later heartbeat of the acked ballot.
		for _, s := range h.sent[base:] {
			if s.ballot == h.ballot {
				first = s
				break
			}
		}
		if first.ballot != h.ballot {
			return false
		}
	}
	return r.quorumOK(g, func(p uint64) bool { return p == n.id || h.acked[p] >= first.seq })
}

// readMark is where a client's read stands in its node's rounds when it
// is invoked.
type readMark struct{ sent int }

func (r *run) markRead(n *simNode, g uint64) readMark {
	return readMark{len(r.round(n, g).sent)}
}

// checkReadRound runs when a read served by read index returns on node n
// (incarnation inc): since it was invoked, n either got a read index
// answer from a leader (whose round noteRoundSent checked) or confirmed
// it with a round of its own.
func (r *run) checkReadRound(n *simNode, inc, g uint64, mark readMark, invoked time.Duration, index uint64) {
	if n.inc != inc || r.opts.endToEnd {
		return
	}
	h := r.round(n, g)
	if h.gotResp && h.readResp >= invoked {
		return
	}
	if !r.confirmed(n, g, h, mark.sent) {
		r.failCheck("read-round", "node %d group %d served a read index read (index %d) invoked at %v with neither a leader's answer nor a majority round of its own since (heartbeats since: %d, acks %v)",
			n.id, g, index, invoked, len(h.sent)-mark.sent, h.acked)
	}
}

// leaseBasis returns the sender's clock when the newest heartbeat of the
// node's current leadership that a majority (itself included) acked left,
// and whether there is one.
func (r *run) leaseBasis(n *simNode, g uint64, h *hbRound) (time.Duration, bool) {
	for i := len(h.sent) - 1; i >= 0; i-- { // newest first: few are unacked
		s := h.sent[i]
		if s.ballot != h.ballot {
			continue
		}
		if r.quorumOK(g, func(p uint64) bool { return p == n.id || h.acked[p] >= s.seq }) {
			return s.clock, true
		}
	}
	return 0, false
}

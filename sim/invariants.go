package sim

import (
	"slices"

	"github.com/paxoskit/paxos/core"
	pb "github.com/paxoskit/paxos/core/paxospb"
)

// The checkers in this file look at the protocol's invariants directly, on
// every message and every first execution, instead of waiting for an
// unlucky crash to turn a broken invariant into a visible disagreement.
//
//   - durable quorum: when an instance is first executed anywhere, a
//     majority of the nodes' synced disks hold its value;
//   - ballot uniqueness: a ballot is used (in a prepare or an accept) by one
//     incarnation of its node only, and for one value per instance;
//   - phase-1 adoption: a new leader's accepts carry, for every instance its
//     phase-1 quorum reported, the value reported with the highest ballot
//     (or the chosen value reported), and a no-op in holes below the
//     highest reported instance.

func ballotOf(b *pb.Ballot) core.Ballot {
	return core.Ballot{Counter: b.GetCounter(), Node: b.GetNode()}
}

// checkDurableQuorum runs when instance i of group g is first executed.
func (r *run) checkDurableQuorum(g, i uint64, v *pb.Value) {
	cf := r.confAt(g, i)
	var held []uint64
	for _, n := range r.nodes {
		if e := n.disk.latest(g, i, n.disk.durable, nil); e != nil && core.SameProposal(e.Value, v) {
			held = append(held, n.id)
		}
	}
	if !majority(cf.voters, func(id uint64) bool { return slices.Contains(held, id) }) {
		r.failCheck("durable-quorum", "group %d instance %d executed with %v, but only the synced disks of %v hold it, no majority of its configuration's voters %v (version %d)",
			g, i, v, held, cf.voters, cf.version)
	}
}

type ballotUse struct {
	group uint64
	b     core.Ballot
}

type slotBallot struct {
	group, instance uint64
	b               core.Ballot
}

// checkBallot runs for every PREPARE and ACCEPT a node sends.
func (r *run) checkBallot(n *simNode, m *pb.Message) {
	b := ballotOf(m.Ballot)
	if b.Node != n.id {
		r.failCheck("ballot", "node %d sent a %v with node %d's ballot %v", n.id, m.Type, b.Node, b)
		return
	}
	key := ballotUse{m.Group, b}
	if inc, ok := r.ballotInc[key]; ok && inc != n.inc {
		r.failCheck("ballot", "node %d group %d used ballot %v in incarnation %d and again in %d", n.id, m.Group, b, inc, n.inc)
		return
	}
	r.ballotInc[key] = n.inc
	for _, e := range m.Entries {
		k := slotBallot{m.Group, e.Instance, b}
		if v, ok := r.acceptVal[k]; ok && !core.SameProposal(v, e.Value) {
			r.failCheck("ballot", "group %d instance %d: ballot %v carried %v and %v", m.Group, e.Instance, b, v, e.Value)
			return
		}
		r.acceptVal[k] = e.Value
	}
}

// phase1 is what one proposer incarnation learned in phase 1 of one ballot.
type phase1 struct {
	from      uint64
	reports   map[uint64]*pb.Entry // per instance: a chosen report, else the highest-ballot one
	maxReport uint64
	promisers []uint64 // remote promises counted, in delivery order
	quorum    bool     // the proposer finished phase 1 (it sent an ACCEPT of the ballot)
	aborted   bool     // a promise showed it too far behind to lead
}

type phase1Key struct {
	node, inc, group uint64
	b                core.Ballot
}

func (p *phase1) report(e *pb.Entry) {
	if e.Instance < p.from {
		return
	}
	p.maxReport = max(p.maxReport, e.Instance)
	cur := p.reports[e.Instance]
	switch {
	case cur == nil, e.Chosen && !cur.Chosen:
		p.reports[e.Instance] = e
	case !cur.Chosen && ballotOf(cur.Ballot).Less(ballotOf(e.Ballot)):
		p.reports[e.Instance] = e
	}
}

// notePrepare starts following a proposer's phase 1. Its own promise is
// delivered inside the node; what it reported is what the node's disk held
// when the prepare left (the promise was synced before it; entries accepted
// later carry ballots at or above the prepare's).
func (r *run) notePrepare(n *simNode, m *pb.Message) {
	b := ballotOf(m.Ballot)
	key := phase1Key{n.id, n.inc, m.Group, b}
	if r.p1[key] != nil {
		return
	}
	p := &phase1{from: m.Instance, reports: map[uint64]*pb.Entry{}}
	for s := range n.disk.slots {
		if s.group != m.Group || s.instance < m.Instance {
			continue
		}
		own := n.disk.latest(s.group, s.instance, n.disk.size, func(e *pb.Entry) bool {
			return e.Chosen || ballotOf(e.Ballot).Less(b)
		})
		if own != nil {
			p.report(own)
		}
	}
	r.p1[key] = p
}

// noteDelivered follows the promises a preparing proposer receives: it
// counts the first quorum of distinct promisers, as the proposer does.
func (r *run) noteDelivered(n *simNode, m *pb.Message) {
	if m.Type != pb.MsgType_MSG_PROMISE {
		return
	}
	p := r.p1[phase1Key{n.id, n.inc, m.Group, ballotOf(m.Ballot)}]
	if p == nil || p.quorum || p.aborted {
		return
	}
	for _, id := range p.promisers {
		if id == m.From {
			return
		}
	}
	if m.Instance > p.from {
		p.aborted = true // the acceptor dropped instances the proposer lacks: it catches up first
		return
	}
	for _, e := range m.Entries {
		if e.Instance > p.from-1+core.MaxLag {
			p.aborted = true
			return
		}
	}
	for _, e := range m.Entries {
		p.report(e)
	}
	p.promisers = append(p.promisers, m.From)
}

// checkAdoption runs for every ACCEPT: the values at instances phase 1
// reported must be the ones phase 1 says.
func (r *run) checkAdoption(n *simNode, m *pb.Message) {
	p := r.p1[phase1Key{n.id, n.inc, m.Group, ballotOf(m.Ballot)}]
	if p == nil || p.aborted {
		return
	}
	// The first ACCEPT of the ballot shows phase 1 done: the promises
	// delivered so far are those the proposer adopted from (a majority of
	// each configuration it knows to govern; later ones it ignores).
	p.quorum = true
	for _, e := range m.Entries {
		if e.Instance < p.from || e.Instance > p.maxReport {
			continue
		}
		rep := p.reports[e.Instance]
		switch {
		case rep != nil && !core.SameProposal(rep.Value, e.Value):
			r.failCheck("phase1", "node %d group %d ballot %v: instance %d proposed %v, but phase 1 reported %v (ballot %v, chosen %v)",
				n.id, m.Group, ballotOf(m.Ballot), e.Instance, e.Value, rep.Value, ballotOf(rep.Ballot), rep.Chosen)
			return
		case rep == nil && !e.Value.Noop:
			r.failCheck("phase1", "node %d group %d ballot %v: instance %d is a hole below reported instance %d but got %v, not a no-op",
				n.id, m.Group, ballotOf(m.Ballot), e.Instance, p.maxReport, e.Value)
			return
		}
	}
}

package core

import pb "github.com/paxoskit/paxos/core/paxospb"

// Ballot is a proposal number: counter first, node id breaks ties.
type Ballot struct {
	Counter uint64
	Node    uint64
}

func ballotOf(b *pb.Ballot) Ballot {
	if b == nil {
		return Ballot{}
	}
	return Ballot{Counter: b.Counter, Node: b.Node}
}

func (b Ballot) pb() *pb.Ballot { return &pb.Ballot{Counter: b.Counter, Node: b.Node} }

// Less reports whether b orders before o.
func (b Ballot) Less(o Ballot) bool {
	if b.Counter != o.Counter {
		return b.Counter < o.Counter
	}
	return b.Node < o.Node
}

// IsZero reports whether b is the zero ballot, which no proposer uses.
func (b Ballot) IsZero() bool { return b.Counter == 0 && b.Node == 0 }

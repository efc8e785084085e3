package core

import (
	"testing"

	pb "github.com/paxoskit/paxos/core/paxospb"
)

// BenchmarkAcceptPath measures an acceptor's Step on the uncontested accept
// path: one ACCEPT in, one ACCEPTED and one record out, then Ready/Advance.
func BenchmarkAcceptPath(b *testing.B) {
	fresh := func() *Core {
		c, err := New(Config{ID: 2, Peers: []uint64{1, 2, 3}, Rand: func(int) int { return 0 }}, State{})
		if err != nil {
			b.Fatal(err)
		}
		c.Ready()
		c.Advance()
		return c
	}
	c := fresh()
	ballot := &pb.Ballot{Counter: 1, Node: 1}
	value := &pb.Value{Node: 1, Boot: 1, Seq: 1, Smid: 1, Data: make([]byte, 100)}
	m := &pb.Message{Type: pb.MsgType_MSG_ACCEPT, From: 1, To: 2, Ballot: ballot, Entries: []*pb.Entry{{Ballot: ballot, Value: value}}}
	b.ReportAllocs()
	i := uint64(0)
	for b.Loop() {
		if i++; i > MaxLag {
			// Nothing gets chosen here, so start over before the
			// acceptor's window ends.
			b.StopTimer()
			c, i = fresh(), 1
			b.StartTimer()
		}
		m.Entries[0].Instance = i
		if err := c.Step(m); err != nil {
			b.Fatal(err)
		}
		rd := c.Ready()
		if len(rd.Messages) != 1 || len(rd.Entries) != 1 {
			b.Fatalf("ready: %d messages, %d entries", len(rd.Messages), len(rd.Entries))
		}
		c.Advance()
	}
}

// BenchmarkLeaderPath measures a leader proposing and getting a value
// chosen: Propose, its own vote, one follower's ACCEPTED (a majority of
// three), the chosen notice and the commit.
func BenchmarkLeaderPath(b *testing.B) {
	c, err := New(Config{ID: 1, Peers: []uint64{1, 2, 3}, Rand: func(int) int { return 0 }}, State{})
	if err != nil {
		b.Fatal(err)
	}
	c.startPrepare(nil)
	c.flush()
	rd := c.Ready()
	c.Early()
	c.Advance()
	var ballot *pb.Ballot
	for _, m := range rd.Messages {
		if m.Type == pb.MsgType_MSG_PREPARE {
			ballot = m.Ballot
		}
	}
	for _, from := range []uint64{2, 3} {
		if err := c.Step(&pb.Message{Type: pb.MsgType_MSG_PROMISE, From: from, To: 1, Ballot: ballot}); err != nil {
			b.Fatal(err)
		}
	}
	if !c.IsLeader() {
		b.Fatal("not leader after promises")
	}
	c.Early()
	c.Ready()
	c.Advance()
	data := make([]byte, 100)
	b.ReportAllocs()
	for b.Loop() {
		c.Propose(1, data)
		accepts := c.Early()
		c.Ready()
		c.Advance() // persisted: the leader's own vote counts
		inst := accepts[0].Entries[0].Instance
		if err := c.Step(&pb.Message{Type: pb.MsgType_MSG_ACCEPTED, From: 2, To: 1, Ballot: ballot, Instances: []uint64{inst}}); err != nil {
			b.Fatal(err)
		}
		if got := c.Committed(); len(got) != 1 || got[0].Instance != inst {
			b.Fatalf("committed %v, want instance %d", got, inst)
		}
		c.Early()
		c.Ready()
		c.Advance()
	}
}

package core

import (
	"testing"

	pb "github.com/paxoskit/paxos/core/paxospb"
)

// Unit tests of fence.go: what a value is stamped with when it leaves its
// node, which forwards a leader drops, and when a proposal is given up.

func TestFenced(t *testing.T) {
	for _, tc := range []struct {
		version uint64
		v       *pb.Value
		want    bool
	}{
		{7, &pb.Value{Fence: 0}, false},             // unfenced: always executed
		{7, &pb.Value{Fence: 7}, false},             // sent to the master in force
		{7, &pb.Value{Fence: 4}, true},              // sent to an earlier master
		{4, &pb.Value{Fence: 7}, true},              // its master's record never took effect here
		{7, &pb.Value{Fence: 4, Noop: true}, false}, // no-ops carry nothing
	} {
		if got := Fenced(tc.version, tc.v); got != tc.want {
			t.Errorf("Fenced(%d, %v) = %v, want %v", tc.version, tc.v, got, tc.want)
		}
	}
}

var (
	ftLeader1 = &pb.Ballot{Counter: 1, Node: 1}
	ftLeader2 = &pb.Ballot{Counter: 2, Node: 2}
)

// ftChosen tells c, from node from, that entries are chosen.
func ftChosen(t *testing.T, c *Core, from uint64, es ...*pb.Entry) {
	t.Helper()
	for _, e := range es {
		e.Chosen = true
	}
	mtStep(t, c, &pb.Message{Type: pb.MsgType_MSG_CHOSEN, From: from, Entries: es})
}

// ftFollower is node 3 following node 1, whose master record is at
// instance 1 (version 1): it knows the record is chosen and has executed it.
func ftFollower(t *testing.T) *Core {
	t.Helper()
	f := mtCore(t, mtConfig(3, []uint64{1, 2, 3}), State{})
	mtStep(t, f, &pb.Message{Type: pb.MsgType_MSG_HEARTBEAT, From: 1, Ballot: ftLeader1, Seq: 1, LeaseUs: 1, Instance: 1})
	ftChosen(t, f, 1, &pb.Entry{Instance: 1, Value: &pb.Value{Node: 1, Boot: 1, Noop: true, Master: true}})
	f.Committed()
	return f
}

func TestForwardCarriesFence(t *testing.T) {
	f := mtCore(t, mtConfig(3, []uint64{1, 2, 3}), State{})
	// Node 1 is known from an ACCEPT only: its version is not, so the
	// proposal waits.
	mtStep(t, f, &pb.Message{Type: pb.MsgType_MSG_ACCEPT, From: 1, Ballot: ftLeader1,
		Entries: []*pb.Entry{{Instance: 1, Ballot: ftLeader1, Value: &pb.Value{Node: 1, Boot: 1, Noop: true, Master: true}}}})
	if _, ok := f.Propose(0, []byte("a")); !ok {
		t.Fatal("Propose refused")
	}
	if fw := mtFind(mtDrain(f), pb.MsgType_MSG_FORWARD); fw != nil {
		t.Fatalf("forwarded %v before the leader's version was known", fw)
	}
	out := mtStep(t, f, &pb.Message{Type: pb.MsgType_MSG_HEARTBEAT, From: 1, Ballot: ftLeader1, Seq: 1, LeaseUs: 1, Instance: 1})
	fw := mtFind(out, pb.MsgType_MSG_FORWARD)
	if fw == nil || len(fw.Values) != 1 || fw.Values[0].Fence != 1 {
		t.Fatalf("forward after the heartbeat of version 1: %v, want the value fenced 1", fw)
	}
}

func TestDeadAfterNewerMasterRecord(t *testing.T) {
	f := ftFollower(t)
	seqA, _ := f.Propose(0, []byte("a")) // executed before the next record
	seqB, _ := f.Propose(0, []byte("b")) // not: given up
	mtDrain(f)
	if len(f.sent) != 2 {
		t.Fatalf("sent %v, want both proposals", f.sent)
	}
	ftChosen(t, f, 1,
		&pb.Entry{Instance: 2, Value: &pb.Value{Node: 3, Boot: f.Boot(), Seq: seqA, Data: []byte("a"), Fence: 1}},
		&pb.Entry{Instance: 3, Value: &pb.Value{Node: 2, Boot: 1, Noop: true, Master: true}})
	f.Committed() // (the drain handed them out already)
	d := f.Dead()
	if len(d) != 1 || d[0].Seq != seqB || d[0].Fence != 1 {
		t.Fatalf("Dead after node 2's record at 3: %v, want proposal %d (fenced 1) only", d, seqB)
	}
	if len(f.sent) != 0 || len(f.Dead()) != 0 {
		t.Fatalf("after Dead: sent %v, more dead", f.sent)
	}
	// Sent again, it is a new proposal: it waits while the leader heard of
	// is older than the record executed, and goes to node 2 fenced 3.
	seqC, ok := f.Resend(d[0])
	if fw := mtFind(mtDrain(f), pb.MsgType_MSG_FORWARD); fw != nil {
		t.Fatalf("forwarded %v to the master replaced by record 3", fw)
	}
	for range 2 {
		f.Tick() // past the grant to node 1 (lease 1us: 2 ticks)
		mtDrain(f)
	}
	out := mtStep(t, f, &pb.Message{Type: pb.MsgType_MSG_HEARTBEAT, From: 2, Ballot: ftLeader2, Seq: 1, LeaseUs: 1, Instance: 3})
	fw := mtFind(out, pb.MsgType_MSG_FORWARD)
	if !ok || seqC == seqB || fw == nil || len(fw.Values) != 1 || fw.Values[0].Seq != seqC || fw.Values[0].Fence != 3 || string(fw.Values[0].Data) != "b" {
		t.Fatalf("resend: seq %d (was %d), forward %v, want b fenced 3", seqC, seqB, fw)
	}
}

// A record of a newer master handed out before a value sent under a still
// newer fence (the follower heard that master first) leaves the value alone.
func TestNotDeadUnderNewerFence(t *testing.T) {
	f := mtCore(t, mtConfig(3, []uint64{1, 2, 3}), State{})
	mtStep(t, f, &pb.Message{Type: pb.MsgType_MSG_HEARTBEAT, From: 2, Ballot: ftLeader2, Seq: 1, LeaseUs: 1, Instance: 3})
	f.Propose(0, []byte("a"))
	mtDrain(f)
	ftChosen(t, f, 1,
		&pb.Entry{Instance: 1, Value: &pb.Value{Node: 1, Boot: 1, Noop: true, Master: true}},
		&pb.Entry{Instance: 2, Value: &pb.Value{Node: 1, Boot: 1, Noop: true}})
	f.Committed()
	if d := f.Dead(); len(d) != 0 || len(f.sent) != 1 {
		t.Fatalf("record 1 killed a value fenced 3: dead %v, sent %v", d, f.sent)
	}
}

func TestLeaderDropsStaleFence(t *testing.T) {
	c, _ := mtLeader(t, []uint64{1, 2, 3}, 2) // master record at 1
	before := c.Stats.DroppedForwards
	out := mtStep(t, c, &pb.Message{Type: pb.MsgType_MSG_FORWARD, From: 3, Ballot: c.Ballot().pb(), Values: []*pb.Value{
		{Node: 3, Boot: 1, Seq: 1, Data: []byte("old"), Fence: 7}, // for another master
		{Node: 3, Boot: 1, Seq: 2, Data: []byte("now"), Fence: 1},
		{Node: 1, Boot: c.Boot(), Seq: 9, Data: []byte("mine, back"), Fence: 5}, // ours, handed on by a former leader
	}})
	if c.Stats.DroppedForwards != before+2 {
		t.Fatalf("DroppedForwards %d, want %d", c.Stats.DroppedForwards, before+2)
	}
	acc := mtFind(out, pb.MsgType_MSG_ACCEPT)
	if acc == nil || len(acc.Entries) != 1 || string(acc.Entries[0].Value.Data) != "now" {
		t.Fatalf("ACCEPT %v, want only the value fenced 1", acc)
	}
}

// A proposal of ours the leader bound, given up when a newer record was
// handed out, is not queued again when another value takes its instance:
// its data was sent again already. (One whose instance went to another
// value before that is queued again: it was proposed nowhere else.)
func TestGivenUpNotRequeued(t *testing.T) {
	c, _ := mtLeader(t, []uint64{1, 2, 3}, 2) // master record at 1
	seqX, _ := c.Propose(0, []byte("x"))
	seqY, _ := c.Propose(0, []byte("y"))
	mtDrain(c)
	at := map[uint64]uint64{}
	for i, v := range c.bound {
		at[v.Seq] = i
	}
	if at[seqX] != 2 || at[seqY] != 3 || c.sent[seqY] == nil || c.sent[seqY].Fence != 1 {
		t.Fatalf("bound %v sent %v: want x at 2, y at 3, fenced 1", c.bound, c.sent)
	}
	// Node 2 took over (a refusal naming its ballot deposes node 1); its
	// record is at 2, where x was.
	mtStep(t, c, &pb.Message{Type: pb.MsgType_MSG_REJECT, From: 2, Ballot: ftLeader2})
	if c.IsLeader() {
		t.Fatal("node 1 still leads after node 2's refusal")
	}
	ftChosen(t, c, 2,
		&pb.Entry{Instance: 1, Value: &pb.Value{Node: 1, Boot: c.Boot(), Noop: true, Master: true}},
		&pb.Entry{Instance: 2, Value: &pb.Value{Node: 2, Boot: 1, Noop: true, Master: true}})
	c.Committed()
	if d := c.Dead(); len(d) != 1 || d[0].Seq != seqY {
		t.Fatalf("dead %v, want proposal y (%d) only", d, seqY)
	}
	ftChosen(t, c, 2, &pb.Entry{Instance: 3, Value: &pb.Value{Node: 2, Boot: 1, Seq: 1, Data: []byte("z"), Fence: 2}})
	var queued []string
	for _, v := range c.queue {
		queued = append(queued, string(v.Data))
	}
	if len(queued) != 1 || queued[0] != "x" || c.queue[0].Fence != 0 {
		t.Fatalf("queued %v (%v), want x alone, unfenced", queued, c.queue)
	}
}

package core_test

import (
	"testing"

	"github.com/paxoskit/paxos/core"
	pb "github.com/paxoskit/paxos/core/paxospb"
)

func acceptedAt(i uint64, data string) *pb.Entry {
	return &pb.Entry{Instance: i, Ballot: &pb.Ballot{Counter: 1, Node: 2}, Value: &pb.Value{Node: 2, Boot: 1, Seq: i, Data: []byte(data)}}
}

// allMessages drains a core's output: early messages and every Ready's.
func allMessages(c *core.Core) []*pb.Message {
	out := c.Early()
	for c.HasReady() {
		rd := c.Ready()
		out = append(out, rd.Messages...)
		c.Advance()
		out = append(out, c.Early()...)
	}
	return out
}

// restoredAt restores a core from a checkpoint at instance 4 over a disk
// holding accepted entries 1 to 4 (the third with value third) and a
// chosen watermark at watermark.
func restoredAt(t *testing.T, watermark uint64, third string) *core.Core {
	t.Helper()
	st := core.State{
		HardState: &pb.HardState{Promised: &pb.Ballot{Counter: 1, Node: 2}, Boot: 1, ChosenUpto: watermark},
		Entries:   []*pb.Entry{acceptedAt(1, "a"), acceptedAt(2, "b"), acceptedAt(3, third), acceptedAt(4, "d")},
		Base:      4,
	}
	c, err := core.New(core.Config{ID: 1, Peers: []uint64{1, 2, 3}, Rand: func(int) int { return 0 }}, st)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// learnResponse drains c and returns the last learn response it sent.
func learnResponse(c *core.Core) *pb.Message {
	var resp *pb.Message
	for _, m := range allMessages(c) {
		if m.Type == pb.MsgType_MSG_LEARN_RESP {
			resp = m
		}
	}
	return resp
}

// A core restored from a checkpoint newer than its durable chosen
// watermark must not serve the log records below the checkpoint: they may
// hold a value accepted there, not the one chosen (the checkpoint commits
// apart from the log). A learner asking for them is told to fetch a
// checkpoint, and the log below is cleaned.
func TestRestoreAboveWatermark(t *testing.T) {
	c := restoredAt(t, 2, "maybe not chosen")
	if c.LogStart() != 5 || c.ChosenUpto() != 4 || c.Applied() != 4 {
		t.Fatalf("log start %d, chosen %d, applied %d; want 5, 4, 4", c.LogStart(), c.ChosenUpto(), c.Applied())
	}
	rd := c.Ready()
	if rd.CleanBelow != 5 {
		t.Errorf("the first Ready cleans below %d, want 5", rd.CleanBelow)
	}
	c.Advance()
	if err := c.Step(&pb.Message{Type: pb.MsgType_MSG_LEARN_REQ, From: 3, To: 1, Instance: 3}); err != nil {
		t.Fatal(err)
	}
	if reads := c.LogReads(); len(reads) != 0 {
		t.Fatalf("the core asked storage for %v below its checkpoint", reads)
	}
	resp := learnResponse(c)
	if resp == nil || len(resp.Entries) != 0 || resp.LogStart != 5 {
		t.Fatalf("learn response %v, want no entries and log start 5", resp)
	}
}

// With the watermark at the checkpoint, the records below it are the
// chosen values: a learner is served from storage.
func TestRestoreAtWatermarkServesStorage(t *testing.T) {
	c := restoredAt(t, 4, "c")
	allMessages(c)
	if err := c.Step(&pb.Message{Type: pb.MsgType_MSG_LEARN_REQ, From: 3, To: 1, Instance: 3}); err != nil {
		t.Fatal(err)
	}
	reads := c.LogReads()
	if len(reads) != 1 || reads[0] != (core.LogRead{To: 3, From: 3}) {
		t.Fatalf("reads %v, want one from instance 3 for node 3", reads)
	}
	c.ServeLog(3, 3, []*pb.Entry{acceptedAt(3, "c"), acceptedAt(4, "d")})
	resp := learnResponse(c)
	if resp == nil || len(resp.Entries) != 2 || !resp.Entries[0].Chosen || string(resp.Entries[1].Value.Data) != "d" {
		t.Fatalf("learn response %v, want instances 3 and 4 as chosen", resp)
	}
}

// Install moves a core past a checkpoint: it hands out Committed from the
// instance after it, never votes at or below it, and cleans below it.
func TestInstall(t *testing.T) {
	c, err := core.New(core.Config{ID: 1, Peers: []uint64{1, 2, 3}, Rand: func(int) int { return 0 }}, core.State{})
	if err != nil {
		t.Fatal(err)
	}
	allMessages(c)
	if c.Install(0, 0, 0, nil) {
		t.Fatal("installed a checkpoint at instance 0")
	}
	if !c.Install(10, 0, 0, nil) || c.Applied() != 10 || c.ChosenUpto() != 10 || c.LogStart() != 11 {
		t.Fatalf("after Install(10): applied %d, chosen %d, log start %d", c.Applied(), c.ChosenUpto(), c.LogStart())
	}
	if c.Install(7, 0, 0, nil) {
		t.Fatal("installed a checkpoint older than what was executed")
	}
	rd := c.Ready()
	if rd.CleanBelow != 11 || len(rd.Committed) != 0 {
		t.Fatalf("Ready after Install: clean below %d, committed %v", rd.CleanBelow, rd.Committed)
	}
	c.Advance()
	// While a checkpoint up to 12 is on its way, nothing up to 12 gets a
	// vote; then an accept at instance 9 gets none (installed) and one at
	// 11 does.
	c.Installing(12)
	early := &pb.Message{Type: pb.MsgType_MSG_ACCEPT, From: 2, To: 1, Ballot: &pb.Ballot{Counter: 4, Node: 2}, Entries: []*pb.Entry{acceptedAt(12, "soon")}}
	early.Entries[0].Ballot = early.Ballot
	if err := c.Step(early); err != nil {
		t.Fatal(err)
	}
	for _, m := range allMessages(c) {
		if m.Type == pb.MsgType_MSG_ACCEPTED {
			t.Fatalf("voted for %v while installing a checkpoint up to 12", m.Instances)
		}
	}
	c.Installing(0)
	acc := &pb.Message{Type: pb.MsgType_MSG_ACCEPT, From: 2, To: 1, Ballot: &pb.Ballot{Counter: 5, Node: 2},
		Entries: []*pb.Entry{acceptedAt(9, "old"), acceptedAt(11, "new")}}
	acc.Entries[0].Ballot, acc.Entries[1].Ballot = acc.Ballot, acc.Ballot
	if err := c.Step(acc); err != nil {
		t.Fatal(err)
	}
	for _, m := range allMessages(c) {
		if m.Type == pb.MsgType_MSG_ACCEPTED && (len(m.Instances) != 1 || m.Instances[0] != 11) {
			t.Fatalf("voted for %v, want only instance 11", m.Instances)
		}
	}
	if err := c.Step(&pb.Message{Type: pb.MsgType_MSG_CHOSEN, From: 2, To: 1, Entries: []*pb.Entry{{Instance: 11, Chosen: true, Value: acceptedAt(11, "new").Value}}}); err != nil {
		t.Fatal(err)
	}
	if got := c.Committed(); len(got) != 1 || got[0].Instance != 11 {
		t.Fatalf("committed %v, want instance 11", got)
	}
}

// A node that learns instances chosen during its phase 1, and drops them
// from memory, must not take them for holes when it wins: it proposes
// only above what it knows chosen. (The liveness property found it with
// one instance in memory: the leader proposed no-ops at chosen instances
// and kept them in flight forever.)
func TestLeaderSkipsInstancesChosenDuringPhase1(t *testing.T) {
	c, err := core.New(core.Config{ID: 1, Peers: []uint64{1, 2, 3}, MemTail: 1, Rand: func(int) int { return 0 }}, core.State{})
	if err != nil {
		t.Fatal(err)
	}
	var prepare *pb.Message
	for range 10 {
		for _, m := range allMessages(c) {
			if m.Type == pb.MsgType_MSG_PREPARE {
				prepare = m
			}
		}
		if prepare != nil {
			break
		}
		c.Propose(0, []byte("mine")) // a queued value makes an idle node prepare
		c.Tick()
	}
	if prepare == nil || prepare.Instance != 1 {
		t.Fatalf("no prepare from instance 1: %v", prepare)
	}
	var chosen []*pb.Entry
	for i := uint64(1); i <= 3; i++ {
		chosen = append(chosen, &pb.Entry{Instance: i, Chosen: true, Value: acceptedAt(i, "theirs").Value})
	}
	if err := c.Step(&pb.Message{Type: pb.MsgType_MSG_CHOSEN, From: 2, To: 1, Entries: chosen}); err != nil {
		t.Fatal(err)
	}
	allMessages(c)
	c.Committed()
	if c.ChosenUpto() != 3 || c.MemBase() < 1 {
		t.Fatalf("chosen %d, memory base %d: the test needs instances dropped from memory", c.ChosenUpto(), c.MemBase())
	}
	if err := c.Step(&pb.Message{Type: pb.MsgType_MSG_PROMISE, From: 2, To: 1, Ballot: prepare.Ballot}); err != nil {
		t.Fatal(err)
	}
	if !c.IsLeader() {
		t.Fatal("no leadership from two promises")
	}
	for _, m := range allMessages(c) {
		for _, e := range m.Entries {
			if m.Type == pb.MsgType_MSG_ACCEPT && e.Instance <= 3 {
				t.Errorf("the new leader proposed %v at instance %d, chosen before it won", e.Value, e.Instance)
			}
		}
	}
}

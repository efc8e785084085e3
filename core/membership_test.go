package core

import (
	"slices"
	"testing"

	pb "github.com/paxoskit/paxos/core/paxospb"
)

// Unit tests of membership.go: when a change governs, compare and set,
// which votes count, what a leader may propose, and re-prepare.

func voters(ids ...uint64) *pb.Membership {
	m := &pb.Membership{}
	for _, id := range ids {
		m.Members = append(m.Members, &pb.Member{Id: id})
	}
	return m
}

// chooseAt tells follower c (of leader 1) that entries are chosen, in order.
func chooseAt(t *testing.T, c *Core, es ...*pb.Entry) {
	t.Helper()
	for _, e := range es {
		e.Chosen = true
	}
	mtStep(t, c, &pb.Message{Type: pb.MsgType_MSG_CHOSEN, From: 1, Entries: es})
}

func TestConfGovernsAfterDelay(t *testing.T) {
	c := mtCore(t, mtConfig(3, []uint64{1, 2, 3}), State{})
	change := voters(1, 2, 3, 4)
	chooseAt(t, c,
		&pb.Entry{Instance: 1, Value: &pb.Value{Node: 1, Boot: 1, Noop: true, Master: true}},
		&pb.Entry{Instance: 2, Value: &pb.Value{Node: 1, Boot: 1, Seq: 1, Config: change}})
	if c.Stats.ConfChanges != 1 {
		t.Fatalf("ConfChanges %d after a change naming version 0", c.Stats.ConfChanges)
	}
	if old, now := c.confAt(2+ConfigDelay-1), c.confAt(2+ConfigDelay); len(old.Voters) != 3 || len(now.Voters) != 4 || now.Version != 2 {
		t.Fatalf("confAt(%d) = %v, confAt(%d) = %v: want 3 voters, then 4 from version 2", 1+ConfigDelay, old, 2+ConfigDelay, now)
	}
	if cf, ok := c.ChangeAccepted(2); !ok || cf.From != 2+ConfigDelay {
		t.Fatalf("ChangeAccepted(2) = %v, %v", cf, ok)
	}
	// Node 4 is a member now (its messages are taken), still no voter of
	// the next instance.
	if !c.isMember(4) || !slices.Contains(c.Members(), 4) || c.confAt(c.chosenUpto+1).IsVoter(4) {
		t.Fatalf("members %v known %v", c.Members(), c.known)
	}
	// A change naming version 0 again changes nothing: compare and set.
	chooseAt(t, c, &pb.Entry{Instance: 3, Value: &pb.Value{Node: 2, Boot: 1, Seq: 1, Config: voters(1, 2)}})
	if c.Stats.ConfRejects != 1 || c.Conf().Version != 2 {
		t.Fatalf("stale change: ConfRejects %d, newest version %d", c.Stats.ConfRejects, c.Conf().Version)
	}
	if _, ok := c.ChangeAccepted(3); ok {
		t.Fatal("ChangeAccepted(3) for a rejected change")
	}
	// What a checkpoint at 2 carries: the first configuration (in force
	// after 2) and the change; at 1, the first only.
	if at2, at1 := c.ConfsAt(2), c.ConfsAt(1); len(at2) != 2 || len(at1) != 1 || at1[0].Version != 0 {
		t.Fatalf("ConfsAt(2) = %v, ConfsAt(1) = %v", at2, at1)
	}
	got, err := ConfsFromPB(ConfStatePB(c.ConfsAt(2)))
	if err != nil || len(got) != 2 || got[1].From != 2+ConfigDelay || !slices.Equal(got[1].Voters, []uint64{1, 2, 3, 4}) {
		t.Fatalf("ConfState round trip: %v, %v", got, err)
	}
}

func TestConfFromPBRefuses(t *testing.T) {
	for name, m := range map[string]*pb.Membership{
		"no voter":  {Members: []*pb.Member{{Id: 1, Follower: true}}},
		"duplicate": {Members: []*pb.Member{{Id: 1}, {Id: 1}}},
		"zero":      {Members: []*pb.Member{{Id: 0}}},
		"nil":       {Members: []*pb.Member{nil}},
	} {
		if _, err := ConfFromPB(m, 5); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := ConfsFromPB(&pb.ConfState{Confs: []*pb.ConfEntry{
		{From: 300, Version: 44, Members: voters(1).Members}, {From: 300, Version: 45, Members: voters(1).Members},
	}}); err == nil {
		t.Error("configurations out of order accepted")
	}
}

// A leader counts for instance i the votes of Conf(i)'s voters only, binds
// no instance beyond ConfigDelay past its chosen prefix, and runs phase 1
// again when a new configuration's voters did not promise.
func TestLeaderAcrossChange(t *testing.T) {
	c, _ := mtLeader(t, []uint64{1, 2, 3}, 2) // promises of 1 and 2; record at 1
	mtStep(t, c, &pb.Message{Type: pb.MsgType_MSG_ACCEPTED, From: 2, Ballot: c.Ballot().pb(), Instances: []uint64{1}})
	if c.ChosenUpto() != 1 {
		t.Fatalf("record not chosen: %d", c.ChosenUpto())
	}
	ballot := c.Ballot()
	// Replace 2 by 4: voters {1,3,4}; node 1 holds no promise of 3 or 4.
	c.ProposeConf(&pb.Membership{Expect: 0, Members: voters(1, 3, 4).Members})
	mtDrain(c)
	mtStep(t, c, &pb.Message{Type: pb.MsgType_MSG_ACCEPTED, From: 2, Ballot: c.Ballot().pb(), Instances: []uint64{2}})
	if c.ChosenUpto() != 2 || c.Conf().Version != 2 {
		t.Fatalf("change not chosen: chosenUpto %d, conf %v", c.ChosenUpto(), c.Conf())
	}
	if c.IsLeader() || c.Ballot() == ballot {
		t.Fatalf("leader kept ballot %v with no promise from the new voters 3 and 4", ballot)
	}
	// Promises of 3 and 4: a majority of the new voters, and with 1 of
	// the old ones (1, 3).
	prep := c.Ballot().pb()
	mtStep(t, c, &pb.Message{Type: pb.MsgType_MSG_PROMISE, From: 4, Ballot: prep})
	if c.IsLeader() {
		t.Fatal("leader with promises of 1 and 4: not a majority of {1,2,3}, which still governs")
	}
	mtStep(t, c, &pb.Message{Type: pb.MsgType_MSG_PROMISE, From: 3, Ballot: prep})
	if !c.IsLeader() {
		t.Fatal("not leading with promises of 1, 3 and 4")
	}
	// It fills up to where the change governs, and no further.
	for i := 0; i < 100 && c.chosenUpto < 2+ConfigDelay-1; i++ {
		var ids []uint64
		for j := c.chosenUpto + 1; j < c.next; j++ {
			ids = append(ids, j)
		}
		mtStep(t, c, &pb.Message{Type: pb.MsgType_MSG_ACCEPTED, From: 3, Ballot: c.Ballot().pb(), Instances: ids})
	}
	if c.next-1 > c.chosenUpto+ConfigDelay {
		t.Fatalf("bound instance %d with the chosen prefix at %d", c.next-1, c.chosenUpto)
	}
	if c.ChosenUpto() != 2+ConfigDelay-1 {
		t.Fatalf("filled up to %d, want %d", c.ChosenUpto(), 2+ConfigDelay-1)
	}
	// Instance 2+ConfigDelay is governed by {1,3,4}: node 2's vote does
	// not count, node 4's does.
	seq, _ := c.Propose(0, []byte("v"))
	_ = seq
	mtDrain(c)
	i := c.next - 1
	if c.confAt(i).Version != 2 {
		t.Fatalf("instance %d governed by %v", i, c.confAt(i))
	}
	mtStep(t, c, &pb.Message{Type: pb.MsgType_MSG_ACCEPTED, From: 2, Ballot: c.Ballot().pb(), Instances: []uint64{i}})
	if c.ChosenUpto() >= i {
		t.Fatalf("instance %d chosen by the votes of 1 and 2 (2 no voter there)", i)
	}
	mtStep(t, c, &pb.Message{Type: pb.MsgType_MSG_ACCEPTED, From: 4, Ballot: c.Ballot().pb(), Instances: []uint64{i}})
	if c.ChosenUpto() != i {
		t.Fatalf("instance %d not chosen by the votes of 1 and 4", i)
	}
}

// A leader that removed itself stops leading once the change governs, and
// then starts no phase 1.
func TestRemovedLeaderStepsDown(t *testing.T) {
	c, _ := mtLeader(t, []uint64{1, 2, 3}, 2, 3)
	mtStep(t, c, &pb.Message{Type: pb.MsgType_MSG_ACCEPTED, From: 2, Ballot: c.Ballot().pb(), Instances: []uint64{1}})
	c.ProposeConf(&pb.Membership{Members: voters(2, 3).Members})
	mtDrain(c)
	mtStep(t, c, &pb.Message{Type: pb.MsgType_MSG_ACCEPTED, From: 2, Ballot: c.Ballot().pb(), Instances: []uint64{2}})
	if !c.IsLeader() || c.Conf().Version != 2 {
		t.Fatalf("after its removal was chosen: leader %v, conf %v", c.IsLeader(), c.Conf())
	}
	for k := 0; k < 100 && c.IsLeader(); k++ {
		var ids []uint64
		for j := c.chosenUpto + 1; j < c.next; j++ {
			ids = append(ids, j)
		}
		mtStep(t, c, &pb.Message{Type: pb.MsgType_MSG_ACCEPTED, From: 2, Ballot: c.Ballot().pb(), Instances: ids})
	}
	if c.IsLeader() || c.ChosenUpto() != 2+ConfigDelay-1 || c.next > 2+ConfigDelay {
		t.Fatalf("removed leader: leading %v, chosen %d, next %d", c.IsLeader(), c.ChosenUpto(), c.next)
	}
	for k := 0; k < 10*c.cfg.ElectionTicks; k++ {
		c.Tick()
		if p := mtFind(mtDrain(c), pb.MsgType_MSG_PREPARE); p != nil {
			t.Fatalf("removed node prepared: %v", p)
		}
	}
}

// A preparing node that learns, from a promise, that it was removed stops
// preparing, and the rest of the promise is ignored (it once panicked on
// the phase 1 state its step-down had dropped: canary 18, seed 864).
func TestPreparerLearnsItsRemoval(t *testing.T) {
	c := mtCore(t, mtConfig(3, []uint64{1, 2, 3}), State{})
	var prep *pb.Message
	for i := 0; i < 50 && prep == nil; i++ {
		c.Tick()
		prep = mtFind(mtDrain(c), pb.MsgType_MSG_PREPARE)
	}
	if prep == nil {
		t.Fatal("no prepare")
	}
	es := []*pb.Entry{{Instance: 1, Chosen: true, Value: &pb.Value{Node: 1, Boot: 1, Seq: 1, Config: voters(1, 2)}}}
	for i := uint64(2); i <= ConfigDelay; i++ {
		es = append(es, &pb.Entry{Instance: i, Chosen: true, Value: &pb.Value{Node: 1, Boot: 1, Noop: true}})
	}
	b := &pb.Ballot{Counter: 1, Node: 1}
	es = append(es, &pb.Entry{Instance: ConfigDelay + 2, Ballot: b, Value: &pb.Value{Node: 1, Boot: 1, Seq: 2, Data: []byte("x")}})
	mtStep(t, c, &pb.Message{Type: pb.MsgType_MSG_PROMISE, From: 1, Ballot: prep.Ballot, Entries: es})
	if c.role != follower || c.ChosenUpto() != ConfigDelay || c.mayPrepare() {
		t.Fatalf("after learning its removal: role %v, chosen %d, may prepare %v", c.role, c.ChosenUpto(), c.mayPrepare())
	}
}

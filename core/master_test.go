package core

import (
	"testing"

	pb "github.com/paxoskit/paxos/core/paxospb"
)

// Unit tests of master.go: lease arithmetic, grants, LeaseSeq, QuorumLost
// and the master version accessors. Time is ticks only; every assertion is
// on state after explicit steps.

const mtTick = 10_000 // microseconds per tick in these tests

func mtConfig(id uint64, peers []uint64) Config {
	return Config{
		ID: id, Peers: peers,
		ElectionTicks: 5, HeartbeatTicks: 3, RetryTicks: 10, LearnTicks: 1000,
		TickMicros: mtTick, LeaseMicros: 2 * mtTick,
		Rand: func(int) int { return 0 }, // every backoff is 1 tick
	}
}

func mtCore(t *testing.T, cfg Config, st State) *Core {
	t.Helper()
	c, err := New(cfg, st)
	if err != nil {
		t.Fatal(err)
	}
	mtDrain(c)
	return c
}

// mtDrain handles c's output like a driver with a synchronous disk and
// returns the messages that left, Early ones first in each round.
func mtDrain(c *Core) []*pb.Message {
	var out []*pb.Message
	for {
		out = append(out, c.Early()...)
		if !c.HasReady() {
			return out
		}
		rd := c.Ready()
		out = append(out, c.Early()...)
		out = append(out, rd.Messages...)
		c.Advance()
	}
}

func mtFind(ms []*pb.Message, typ pb.MsgType) *pb.Message {
	for _, m := range ms {
		if m.Type == typ {
			return m
		}
	}
	return nil
}

func mtStep(t *testing.T, c *Core, m *pb.Message) []*pb.Message {
	t.Helper()
	m.To = c.cfg.ID
	if err := c.Step(m); err != nil {
		t.Fatalf("step %v: %v", m.Type, err)
	}
	return mtDrain(c)
}

// mtLeader makes a fresh core of node 1 the leader: it ticks until phase 1
// starts and gets a promise from every peer in promisers. It returns the
// core and the messages its promotion sent (heartbeat, accepts).
func mtLeader(t *testing.T, peers []uint64, promisers ...uint64) (*Core, []*pb.Message) {
	t.Helper()
	c := mtCore(t, mtConfig(1, peers), State{})
	var out []*pb.Message
	for i := 0; i < 5 && c.role != preparing; i++ {
		c.Tick()
		out = mtDrain(c)
	}
	prep := mtFind(out, pb.MsgType_MSG_PREPARE)
	if prep == nil {
		t.Fatalf("no PREPARE after ticks: %v", out)
	}
	out = nil
	for _, p := range promisers {
		out = append(out, mtStep(t, c, &pb.Message{Type: pb.MsgType_MSG_PROMISE, From: p, Ballot: prep.Ballot})...)
	}
	if !c.IsLeader() {
		t.Fatalf("node 1 does not lead after promises from %v", promisers)
	}
	return c, out
}

func TestLeaseTicks(t *testing.T) {
	c := mtCore(t, mtConfig(1, []uint64{1, 2, 3}), State{})
	for _, tc := range []struct {
		us   uint64
		want int
	}{
		{0, 1},              // no lease: just the extra tick
		{1, 2},              // a part of a tick counts as a tick
		{mtTick, 2},         // one tick plus one
		{mtTick + 1, 3},     // rounded up
		{2 * mtTick, 3},     //
		{30 * mtTick, 31},   // the default lease (ElectionTicks) of a 30-tick election
		{30*mtTick - 1, 31}, //
		{1_000_000 * mtTick, 1_000_001},
	} {
		if got := c.leaseTicks(tc.us); got != tc.want {
			t.Errorf("leaseTicks(%d) = %d, want %d", tc.us, got, tc.want)
		}
	}
	// A zero TickMicros is taken as 1us per tick (setDefaults replaces it,
	// but leaseTicks must not divide by zero).
	c.cfg.TickMicros = 0
	if got := c.leaseTicks(5); got != 6 {
		t.Errorf("leaseTicks(5) with TickMicros 0 = %d, want 6", got)
	}
}

func TestDefaultLeaseIsElectionTimeout(t *testing.T) {
	cfg := mtConfig(1, []uint64{1, 2, 3})
	cfg.LeaseMicros = 0
	c := mtCore(t, cfg, State{})
	if want := uint64(cfg.ElectionTicks) * mtTick; c.cfg.LeaseMicros != want {
		t.Fatalf("default LeaseMicros = %d, want %d", c.cfg.LeaseMicros, want)
	}
	// The ack window is the lease, at least an election timeout.
	if got, want := c.ackWindow(), cfg.ElectionTicks+1; got != want {
		t.Fatalf("ackWindow = %d, want %d", got, want)
	}
	c.cfg.LeaseMicros = mtTick
	if got := c.ackWindow(); got != cfg.ElectionTicks {
		t.Fatalf("ackWindow with a short lease = %d, want the election timeout %d", got, cfg.ElectionTicks)
	}
}

func TestGranted(t *testing.T) {
	c := mtCore(t, mtConfig(2, []uint64{1, 2, 3}), State{})
	b11 := Ballot{Counter: 1, Node: 1}
	b23 := Ballot{Counter: 2, Node: 3}
	if c.granted(b23, nil) || !c.mayPrepare() {
		t.Fatal("a fresh core grants no one and may prepare")
	}

	c.grant = grant{node: 1, ballot: b11, ticks: 3}
	for _, tc := range []struct {
		name     string
		b        Ballot
		transfer *pb.Ballot
		want     bool
	}{
		{"another proposer", b23, nil, true},
		{"the grantee, same ballot", b11, nil, false},
		{"the grantee, a higher ballot", Ballot{Counter: 7, Node: 1}, nil, false},
		{"this node itself", Ballot{Counter: 9, Node: 2}, nil, true},
		{"handed over by the grantee's ballot", b23, b11.pb(), false},
		{"handed over by another ballot of the grantee", b23, (&Ballot{Counter: 2, Node: 1}).pb(), true},
		{"handed over by another node", b23, (&Ballot{Counter: 1, Node: 2}).pb(), true},
	} {
		if got := c.granted(tc.b, tc.transfer); got != tc.want {
			t.Errorf("granted to 1.1: %s (%v, %v) = %v, want %v", tc.name, tc.b, tc.transfer, got, tc.want)
		}
	}
	if c.mayPrepare() {
		t.Error("node 2 may prepare while it grants node 1")
	}

	// The grant runs out after its ticks.
	for i := 0; i < 2; i++ {
		c.Tick()
		mtDrain(c)
		if !c.granted(b23, nil) {
			t.Fatalf("grant over after %d of 3 ticks", i+1)
		}
	}
	c.Tick()
	mtDrain(c)
	if c.granted(b23, nil) {
		t.Fatal("grant still runs after 3 ticks")
	}

	// A grant to no one (node 0) refuses everyone, a transfer included.
	c.grant = grant{node: 0, ticks: 2}
	if !c.granted(b11, nil) || !c.granted(b23, b11.pb()) || !c.granted(Ballot{}, (&Ballot{}).pb()) {
		t.Error("a grant to node 0 lets a proposer through")
	}
}

func TestGrantOnHeartbeatAck(t *testing.T) {
	c := mtCore(t, mtConfig(2, []uint64{1, 2, 3}), State{})
	b11 := &pb.Ballot{Counter: 1, Node: 1}
	out := mtStep(t, c, &pb.Message{Type: pb.MsgType_MSG_HEARTBEAT, From: 1, Ballot: b11, Seq: 4, LeaseUs: 2 * mtTick, Instance: 3})
	ack := mtFind(out, pb.MsgType_MSG_HEARTBEAT_ACK)
	if ack == nil || ack.Seq != 4 || ack.To != 1 {
		t.Fatalf("heartbeat seq 4 acked with %v", ack)
	}
	if c.grant.node != 1 || c.grant.ballot != ballotOf(b11) || c.grant.ticks != 3 {
		t.Fatalf("grant after the ack = %+v, want node 1 ballot 1.1 for 3 ticks", c.grant)
	}
	if c.Promised() != ballotOf(b11) || c.LeaderVersion() != 3 || c.Leader() != 1 {
		t.Fatalf("promised %v, leader %d version %d", c.Promised(), c.Leader(), c.LeaderVersion())
	}
	// Another leader's heartbeat is neither acked nor followed meanwhile.
	out = mtStep(t, c, &pb.Message{Type: pb.MsgType_MSG_HEARTBEAT, From: 3, Ballot: &pb.Ballot{Counter: 2, Node: 3}, Seq: 1, LeaseUs: mtTick, Instance: 9})
	if len(out) != 0 || c.Leader() != 1 || c.Promised() != ballotOf(b11) {
		t.Fatalf("node 3's heartbeat during node 1's grant: sent %v, leader %d, promised %v", out, c.Leader(), c.Promised())
	}
	// So is a prepare: refused with the promise that stands.
	out = mtStep(t, c, &pb.Message{Type: pb.MsgType_MSG_PREPARE, From: 3, Ballot: &pb.Ballot{Counter: 2, Node: 3}, Instance: 1})
	if rej := mtFind(out, pb.MsgType_MSG_REJECT); rej == nil || ballotOf(rej.Ballot) != ballotOf(b11) || mtFind(out, pb.MsgType_MSG_PROMISE) != nil {
		t.Fatalf("prepare 2.3 during node 1's grant: %v", out)
	}
	// A prepare that node 1 handed over passes.
	out = mtStep(t, c, &pb.Message{Type: pb.MsgType_MSG_PREPARE, From: 3, Ballot: &pb.Ballot{Counter: 3, Node: 3}, Instance: 1, TransferFrom: b11})
	if p := mtFind(out, pb.MsgType_MSG_PROMISE); p == nil || p.Ballot.Counter != 3 {
		t.Fatalf("prepare 3.3 handed over by 1.1: %v", out)
	}
	// A heartbeat with no seq (none asked for a lease) is followed, not acked.
	c2 := mtCore(t, mtConfig(2, []uint64{1, 2, 3}), State{})
	out = mtStep(t, c2, &pb.Message{Type: pb.MsgType_MSG_HEARTBEAT, From: 1, Ballot: b11, Instance: 1})
	if len(out) != 0 || c2.grant.ticks != 0 || c2.Leader() != 1 {
		t.Fatalf("seq-less heartbeat: sent %v, grant %+v, leader %d", out, c2.grant, c2.Leader())
	}
}

func TestGrantToSelf(t *testing.T) {
	c, _ := mtLeader(t, []uint64{1, 2, 3}, 2)
	lt := c.leaseTicks(c.cfg.LeaseMicros)
	if c.grant.node != 1 || c.grant.ballot != c.Ballot() || c.grant.ticks != lt {
		t.Fatalf("leader's grant to itself = %+v, want node 1 ballot %v for %d ticks", c.grant, c.Ballot(), lt)
	}
	if c.granted(c.Ballot(), nil) || !c.granted(Ballot{Counter: 9, Node: 3}, nil) {
		t.Fatal("a leader's own grant must let its ballot through and refuse others")
	}
	// Its acceptor refuses node 3's higher prepare: the leader stays.
	out := mtStep(t, c, &pb.Message{Type: pb.MsgType_MSG_PREPARE, From: 3, Ballot: &pb.Ballot{Counter: 9, Node: 3}, Instance: 1})
	if mtFind(out, pb.MsgType_MSG_REJECT) == nil || !c.IsLeader() {
		t.Fatalf("leader took prepare 9.3: %v, leading %v", out, c.IsLeader())
	}
	// StepDown ends its own grant but starts no phase 1 for its ticks.
	c.StepDown(3)
	mtDrain(c)
	if c.IsLeader() || c.grant.ticks != 0 || c.mayPrepare() {
		t.Fatalf("after StepDown: leading %v, grant %+v, mayPrepare %v", c.IsLeader(), c.grant, c.mayPrepare())
	}
	if c.granted(Ballot{Counter: 9, Node: 3}, nil) {
		t.Fatal("a stepped-down leader still refuses other proposers")
	}
	prep := c.Stats.Prepares
	for i := 0; i < 3; i++ {
		c.Tick()
		mtDrain(c)
	}
	if !c.mayPrepare() {
		t.Fatal("no phase 1 allowed after the StepDown ticks")
	}
	if c.Stats.Prepares != prep {
		t.Fatalf("phase 1 started during the StepDown ticks (%d prepares, %d before)", c.Stats.Prepares, prep)
	}
}

func TestRestartHold(t *testing.T) {
	cfg := mtConfig(2, []uint64{1, 2, 3})
	hs := &pb.HardState{Promised: &pb.Ballot{Counter: 1, Node: 1}, Boot: 1}
	c := mtCore(t, cfg, State{HardState: hs})
	lt := c.leaseTicks(cfg.LeaseMicros)
	if c.hold != lt || !c.granted(Ballot{Counter: 5, Node: 3}, nil) || !c.granted(Ballot{Counter: 5, Node: 2}, nil) ||
		!c.granted(Ballot{Counter: 5, Node: 3}, (&pb.Ballot{Counter: 1, Node: 1})) || c.mayPrepare() {
		t.Fatalf("restarted core: hold %d (want %d), must refuse everyone, itself and transfers included", c.hold, lt)
	}
	// It refuses prepares and acks nothing, but follows a leader.
	out := mtStep(t, c, &pb.Message{Type: pb.MsgType_MSG_PREPARE, From: 3, Ballot: &pb.Ballot{Counter: 2, Node: 3}, Instance: 1})
	if mtFind(out, pb.MsgType_MSG_PROMISE) != nil || mtFind(out, pb.MsgType_MSG_REJECT) == nil {
		t.Fatalf("prepare during the hold: %v", out)
	}
	out = mtStep(t, c, &pb.Message{Type: pb.MsgType_MSG_HEARTBEAT, From: 1, Ballot: &pb.Ballot{Counter: 1, Node: 1}, Seq: 1, LeaseUs: mtTick, Instance: 1})
	if len(out) != 0 || c.Leader() != 1 || c.LeaderVersion() != 1 || c.grant.ticks != 0 {
		t.Fatalf("heartbeat during the hold: sent %v, leader %d version %d, grant %+v", out, c.Leader(), c.LeaderVersion(), c.grant)
	}
	for i := 1; i < lt; i++ {
		c.Tick()
		mtDrain(c)
		if c.mayPrepare() {
			t.Fatalf("hold over after %d of %d ticks", i, lt)
		}
	}
	c.Tick()
	mtDrain(c)
	if c.hold != 0 || !c.mayPrepare() {
		t.Fatalf("hold %d after %d ticks", c.hold, lt)
	}
	out = mtStep(t, c, &pb.Message{Type: pb.MsgType_MSG_PREPARE, From: 3, Ballot: &pb.Ballot{Counter: 2, Node: 3}, Instance: 1})
	if mtFind(out, pb.MsgType_MSG_PROMISE) == nil {
		t.Fatalf("prepare after the hold: %v", out)
	}
	// A fresh core (no hard state) does not hold.
	if f := mtCore(t, cfg, State{}); f.hold != 0 || !f.mayPrepare() {
		t.Fatalf("fresh core holds %d ticks", f.hold)
	}
}

func TestRestartHoldStartsNoPhase1(t *testing.T) {
	cfg := mtConfig(1, []uint64{1, 2, 3})
	hs := &pb.HardState{Promised: &pb.Ballot{Counter: 1, Node: 2}, Boot: 1}
	c := mtCore(t, cfg, State{HardState: hs})
	lt := c.leaseTicks(cfg.LeaseMicros)
	c.Propose(0, []byte("x"))
	mtDrain(c)
	for i := 1; i < lt; i++ {
		c.Tick()
		mtDrain(c)
	}
	if c.Stats.Prepares != 0 {
		t.Fatalf("phase 1 within the hold of %d ticks", lt)
	}
	c.Tick()
	if out := mtDrain(c); c.Stats.Prepares != 1 || mtFind(out, pb.MsgType_MSG_PREPARE) == nil {
		t.Fatalf("no phase 1 when the hold ends: %d prepares, sent %v", c.Stats.Prepares, out)
	}
}

func TestLeaseSeq(t *testing.T) {
	for _, tc := range []struct {
		peers []uint64
		acks  map[uint64]uint64 // peer -> heartbeat seq it acks
		want  uint64
	}{
		{[]uint64{1, 2, 3}, nil, 0},
		{[]uint64{1, 2, 3}, map[uint64]uint64{2: 1}, 1},
		{[]uint64{1, 2, 3}, map[uint64]uint64{2: 1, 3: 3}, 3},
		{[]uint64{1, 2, 3}, map[uint64]uint64{2: 2, 3: 1}, 2},
		{[]uint64{1, 2, 3, 4, 5}, map[uint64]uint64{2: 3}, 0},
		{[]uint64{1, 2, 3, 4, 5}, map[uint64]uint64{2: 3, 3: 1}, 1},
		{[]uint64{1, 2, 3, 4, 5}, map[uint64]uint64{2: 3, 3: 1, 4: 2, 5: 3}, 3},
		{[]uint64{1, 2, 3, 4, 5}, map[uint64]uint64{2: 1, 3: 2, 4: 3}, 2},
	} {
		c, _ := mtLeader(t, tc.peers, tc.peers[1:len(tc.peers)/2+1]...)
		// Three heartbeat rounds: seqs 1 (at promotion), 2 and 3, well
		// within the ack window.
		c.cfg.HeartbeatTicks = 1
		for i := 0; i < 2; i++ {
			c.Tick()
			mtDrain(c)
		}
		if c.hbSeq != 3 {
			t.Fatalf("hbSeq %d, want 3", c.hbSeq)
		}
		for p, s := range tc.acks {
			mtStep(t, c, &pb.Message{Type: pb.MsgType_MSG_HEARTBEAT_ACK, From: p, Ballot: c.Ballot().pb(), Seq: s})
		}
		if got := c.LeaseSeq(); got != tc.want {
			t.Errorf("%d peers, acks %v: LeaseSeq %d, want %d", len(tc.peers), tc.acks, got, tc.want)
		}
		// An ack of an older seq does not lower what a peer acked, and acks
		// for another ballot do not count.
		for p := range tc.acks {
			mtStep(t, c, &pb.Message{Type: pb.MsgType_MSG_HEARTBEAT_ACK, From: p, Ballot: c.Ballot().pb(), Seq: 0})
		}
		for _, p := range tc.peers[1:] {
			mtStep(t, c, &pb.Message{Type: pb.MsgType_MSG_HEARTBEAT_ACK, From: p, Ballot: &pb.Ballot{Counter: 1, Node: 2}, Seq: 3})
		}
		if got := c.LeaseSeq(); got != tc.want {
			t.Errorf("%d peers, acks %v, then stale and foreign acks: LeaseSeq %d, want %d", len(tc.peers), tc.acks, got, tc.want)
		}
		c.StepDown(1)
		if c.LeaseSeq() != 0 {
			t.Errorf("LeaseSeq %d after StepDown", c.LeaseSeq())
		}
	}
}

func TestQuorumLost(t *testing.T) {
	cfg := mtConfig(2, []uint64{1, 2, 3})
	e := cfg.ElectionTicks
	c := mtCore(t, cfg, State{})
	// Start-up grace: silent for two election timeouts, still not lost.
	for i := 1; i < 2*e; i++ {
		c.Tick()
		mtDrain(c)
		if c.QuorumLost() {
			t.Fatalf("QuorumLost at tick %d, within the start-up grace of %d", i, 2*e)
		}
	}
	c.Tick()
	mtDrain(c)
	if !c.QuorumLost() {
		t.Fatalf("not QuorumLost after %d silent ticks", 2*e)
	}
	// Hearing from one peer makes a majority with itself.
	mtStep(t, c, &pb.Message{Type: pb.MsgType_MSG_LEARN_REQ, From: 3, Instance: 1})
	if c.QuorumLost() {
		t.Fatal("QuorumLost right after hearing from node 3")
	}
	for i := 1; i <= e; i++ {
		c.Tick()
		mtDrain(c)
		if c.QuorumLost() {
			t.Fatalf("QuorumLost %d ticks after hearing from node 3 (election %d)", i, e)
		}
	}
	c.Tick()
	mtDrain(c)
	if !c.QuorumLost() {
		t.Fatalf("not QuorumLost %d ticks after hearing from node 3", e+1)
	}
	// A follower of a live leader is never cut off.
	mtStep(t, c, &pb.Message{Type: pb.MsgType_MSG_HEARTBEAT, From: 1, Ballot: &pb.Ballot{Counter: 9, Node: 1}, Seq: 1, LeaseUs: mtTick, Instance: 1})
	if c.Leader() != 1 || c.QuorumLost() {
		t.Fatalf("follower of node 1: leader %d, QuorumLost %v", c.Leader(), c.QuorumLost())
	}
}

// TestQuorumKeptWaitingOutPeerGrant: a node whose prepare a peer refused
// for a lease it granted a (dead) master waits that grant out without
// reporting its quorum lost (paxoskv answered 503 during failovers when
// the peer's grant outlasted its own by more than an election timeout);
// one election timeout after the wait it may.
func TestQuorumKeptWaitingOutPeerGrant(t *testing.T) {
	cfg := mtConfig(2, []uint64{1, 2, 3})
	e := cfg.ElectionTicks
	c := mtCore(t, cfg, State{})
	var prep *pb.Message
	for i := 0; i < 4*e && prep == nil; i++ {
		c.Tick()
		prep = mtFind(mtDrain(c), pb.MsgType_MSG_PREPARE)
	}
	if prep == nil {
		t.Fatal("no prepare from a leaderless node")
	}
	wait := 3 * e // the grant node 3 still runs, in ticks
	mtStep(t, c, &pb.Message{Type: pb.MsgType_MSG_REJECT, From: 3, Ballot: &pb.Ballot{Counter: 1, Node: 1}, Seq: 1, LeaseUs: uint64(wait) * mtTick})
	for i := 1; i <= wait+e-2; i++ {
		c.Tick()
		if c.role == preparing {
			break // the wait is over: it asks again
		}
		mtDrain(c)
		if c.QuorumLost() {
			t.Fatalf("QuorumLost %d ticks into waiting out node 3's grant of %d ticks", i, wait)
		}
	}
	for i := 0; i < 4*e && !c.QuorumLost(); i++ {
		c.Tick()
		mtDrain(c)
	}
	if !c.QuorumLost() {
		t.Fatal("never QuorumLost after the wait with no answer")
	}
}

func TestQuorumLostLeader(t *testing.T) {
	peers := []uint64{1, 2, 3}
	c, _ := mtLeader(t, peers, 2)
	w := c.ackWindow()
	// Past the grace; node 2 keeps acking: the leader keeps its quorum.
	for c.ticks < uint64(2*c.cfg.ElectionTicks+w) {
		c.Tick()
		mtDrain(c)
		mtStep(t, c, &pb.Message{Type: pb.MsgType_MSG_HEARTBEAT_ACK, From: 2, Ballot: c.Ballot().pb(), Seq: c.hbSeq})
		if !c.IsLeader() || c.QuorumLost() {
			t.Fatalf("acked leader at tick %d: leading %v, QuorumLost %v", c.ticks, c.IsLeader(), c.QuorumLost())
		}
	}
	// Silence: it leads for its ack window, then steps down.
	for i := 1; i <= w; i++ {
		c.Tick()
		mtDrain(c)
		if !c.IsLeader() {
			t.Fatalf("stepped down %d ticks after the last ack, window %d", i, w)
		}
	}
	c.Tick()
	mtDrain(c)
	if c.IsLeader() || c.Stats.QuorumLosses != 1 {
		t.Fatalf("after %d silent ticks: leading %v, quorumLosses %d", w+1, c.IsLeader(), c.Stats.QuorumLosses)
	}

	// With CanaryLeaseAfterQuorumLoss the leader stays; QuorumLost says it
	// is cut off.
	cfg := mtConfig(1, peers)
	cfg.Canary = CanaryLeaseAfterQuorumLoss
	c = mtCore(t, cfg, State{})
	var out []*pb.Message
	for i := 0; i < 5 && c.role != preparing; i++ {
		c.Tick()
		out = mtDrain(c)
	}
	mtStep(t, c, &pb.Message{Type: pb.MsgType_MSG_PROMISE, From: 2, Ballot: mtFind(out, pb.MsgType_MSG_PREPARE).Ballot})
	for i := 0; i < 2*c.cfg.ElectionTicks+w+1; i++ {
		c.Tick()
		mtDrain(c)
	}
	if !c.IsLeader() || !c.QuorumLost() {
		t.Fatalf("canary leader: leading %v, QuorumLost %v", c.IsLeader(), c.QuorumLost())
	}
}

func TestMasterVersion(t *testing.T) {
	peers := []uint64{1, 2, 3}
	c, out := mtLeader(t, peers, 2)
	if c.MasterAt() != 1 || c.LeaderVersion() != 1 || c.MasterReady() {
		t.Fatalf("new leader: MasterAt %d, LeaderVersion %d, MasterReady %v", c.MasterAt(), c.LeaderVersion(), c.MasterReady())
	}
	acc := mtFind(out, pb.MsgType_MSG_ACCEPT)
	if acc == nil || len(acc.Entries) != 1 || acc.Entries[0].Instance != 1 || !acc.Entries[0].Value.Master || !acc.Entries[0].Value.Noop {
		t.Fatalf("promotion's ACCEPT %v, want the master record at 1", acc)
	}
	hb := mtFind(out, pb.MsgType_MSG_HEARTBEAT)
	if hb == nil || hb.Instance != 1 || hb.Seq == 0 || hb.LeaseUs != c.cfg.LeaseMicros {
		t.Fatalf("promotion's HEARTBEAT %v, want version 1, a seq and the lease", hb)
	}
	// Node 2's vote and the leader's own (durable since mtDrain) choose it.
	mtStep(t, c, &pb.Message{Type: pb.MsgType_MSG_ACCEPTED, From: 2, Ballot: c.Ballot().pb(), Instances: []uint64{1}})
	if c.ChosenUpto() != 1 || !c.MasterReady() {
		t.Fatalf("master record voted by a majority: chosenUpto %d, MasterReady %v", c.ChosenUpto(), c.MasterReady())
	}
	c.StepDown(1)
	mtDrain(c)
	if c.MasterAt() != 0 || c.MasterReady() || c.LeaderVersion() != 0 {
		t.Fatalf("stepped down: MasterAt %d, MasterReady %v, LeaderVersion %d", c.MasterAt(), c.MasterReady(), c.LeaderVersion())
	}

	// A follower learns the version from heartbeats; an ACCEPT of a new
	// ballot resets it until that leader's heartbeat says; it is 0 once
	// the leader is forgotten.
	f := mtCore(t, mtConfig(3, peers), State{})
	if f.LeaderVersion() != 0 {
		t.Fatalf("fresh follower: LeaderVersion %d", f.LeaderVersion())
	}
	mtStep(t, f, &pb.Message{Type: pb.MsgType_MSG_HEARTBEAT, From: 1, Ballot: &pb.Ballot{Counter: 1, Node: 1}, Seq: 1, LeaseUs: 1, Instance: 4})
	if f.LeaderVersion() != 4 || f.MasterAt() != 0 || f.MasterReady() {
		t.Fatalf("follower of version 4: LeaderVersion %d, MasterAt %d, MasterReady %v", f.LeaderVersion(), f.MasterAt(), f.MasterReady())
	}
	mtStep(t, f, &pb.Message{Type: pb.MsgType_MSG_ACCEPT, From: 1, Ballot: &pb.Ballot{Counter: 1, Node: 1},
		Entries: []*pb.Entry{{Instance: 5, Ballot: &pb.Ballot{Counter: 1, Node: 1}, Value: &pb.Value{Node: 1, Boot: 1, Seq: 1}}}})
	if f.LeaderVersion() != 4 {
		t.Fatalf("an ACCEPT of the same leadership changed LeaderVersion to %d", f.LeaderVersion())
	}
	for range 2 {
		f.Tick() // past the grant to node 1 (lease 1us: 2 ticks)
		mtDrain(f)
	}
	mtStep(t, f, &pb.Message{Type: pb.MsgType_MSG_ACCEPT, From: 2, Ballot: &pb.Ballot{Counter: 2, Node: 2},
		Entries: []*pb.Entry{{Instance: 6, Ballot: &pb.Ballot{Counter: 2, Node: 2}, Value: &pb.Value{Node: 2, Boot: 1, Noop: true, Master: true}}}})
	if f.Leader() != 2 || f.LeaderVersion() != 0 {
		t.Fatalf("after node 2's ACCEPT: leader %d, LeaderVersion %d (want 0 until its heartbeat)", f.Leader(), f.LeaderVersion())
	}
	mtStep(t, f, &pb.Message{Type: pb.MsgType_MSG_HEARTBEAT, From: 2, Ballot: &pb.Ballot{Counter: 2, Node: 2}, Seq: 1, LeaseUs: 1, Instance: 6})
	if f.LeaderVersion() != 6 {
		t.Fatalf("node 2's heartbeat: LeaderVersion %d, want 6", f.LeaderVersion())
	}
	for i := 0; i <= f.cfg.ElectionTicks; i++ {
		f.Tick()
		mtDrain(f)
	}
	if f.Leader() == 2 || f.LeaderVersion() == 6 {
		t.Fatalf("leader forgotten after an election timeout: leader %d, LeaderVersion %d", f.Leader(), f.LeaderVersion())
	}
}

func TestMasterRecordAfterPhase1Values(t *testing.T) {
	// A new leader re-proposes what phase 1 found, then puts its master
	// record at the first free instance: its version is above every
	// instance an earlier leader may have got chosen.
	c := mtCore(t, mtConfig(1, []uint64{1, 2, 3}), State{})
	b12 := &pb.Ballot{Counter: 1, Node: 2}
	mtStep(t, c, &pb.Message{Type: pb.MsgType_MSG_ACCEPT, From: 2, Ballot: b12,
		Entries: []*pb.Entry{{Instance: 3, Ballot: b12, Value: &pb.Value{Node: 2, Boot: 1, Seq: 1, Data: []byte("v")}}}})
	var out []*pb.Message
	for i := 0; i < 20 && c.role != preparing; i++ {
		c.Tick() // node 2 goes silent: forgotten after an election timeout
		out = mtDrain(c)
	}
	prep := mtFind(out, pb.MsgType_MSG_PREPARE)
	if prep == nil || !ballotOf(b12).Less(ballotOf(prep.Ballot)) {
		t.Fatalf("no PREPARE above 1.2: %v", out)
	}
	out = mtStep(t, c, &pb.Message{Type: pb.MsgType_MSG_PROMISE, From: 3, Ballot: prep.Ballot})
	if !c.IsLeader() || c.MasterAt() != 4 || c.LeaderVersion() != 4 {
		t.Fatalf("leader holding instance 3: leading %v, MasterAt %d", c.IsLeader(), c.MasterAt())
	}
	acc := mtFind(out, pb.MsgType_MSG_ACCEPT)
	var got []uint64
	for _, e := range acc.GetEntries() {
		got = append(got, e.Instance)
		if (e.Instance == 4) != e.Value.Master || (e.Instance < 3) != (e.Value.Noop && !e.Value.Master) {
			t.Errorf("entry %d: %v", e.Instance, e.Value)
		}
		if e.Instance == 3 && string(e.Value.Data) != "v" {
			t.Errorf("instance 3 re-proposed as %v, want v", e.Value)
		}
	}
	if len(got) != 4 || got[0] != 1 || got[3] != 4 {
		t.Fatalf("promotion accepts instances %v, want 1..4 (no-ops, v, master record)", got)
	}
}

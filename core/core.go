package core

import (
	"fmt"
	"maps"
	"slices"

	pb "github.com/paxoskit/paxos/core/paxospb"
)

// Canary deliberately breaks the protocol so tests can prove the simulator
// catches the breakage. It is for tests only; production leaves it zero.
type Canary uint8

// The broken variants. CanaryEarlyReply, CanaryIgnoreStorageError,
// CanaryNoIdentityCheck and the checkpoint canaries are implemented by the
// node runtime, CanaryUseCorrupt by the simulator's disk; the others here.
const (
	CanaryNone                 Canary = iota
	CanaryIgnorePromise               // acceptors accept ballots below their promise
	CanaryNoAdopt                     // a new leader ignores values accepted in phase 1
	CanaryEarlyReply                  // messages leave before their records are synced
	CanaryEarlySelfVote               // a leader counts its own vote before its record is durable
	CanaryEarlyPrepare                // a prepare leaves before the proposer's own promise is durable
	CanaryQuorumAll                   // a value needs every member's vote, not a majority's
	CanaryStaleForward                // a leader takes forwards addressed to an earlier ballot
	CanaryIgnoreStorageError          // the runtime goes on after a storage write or sync failed
	CanaryUseCorrupt                  // storage hands out records that fail their checksum
	CanaryNoIdentityCheck             // the runtime starts on storage recorded for another identity
	CanaryCleanPastCheckpoint         // the runtime cleans the log past what its checkpoint covers
	CanaryCheckpointAhead             // a checkpoint claims one instance more than its state holds
	CanaryNonAtomicInstall            // a received checkpoint is installed (the log cut past it) but never made durable
	CanaryLeaseNoDrift                // the master's lease lasts as long as the followers' grants: no clock drift margin
	CanaryReadIndexNoRound            // a leader answers read index requests without a majority round
	CanaryLeaseAfterQuorumLoss        // a master keeps its lease (and serves lease reads) after losing its quorum
	CanaryNoFence                     // fences are ignored: leaders propose, and nodes execute, values sent to a master no longer in force
	CanaryConfImmediate               // a configuration change governs the instance after the one that chose it, not ConfigDelay later
	CanaryCountRemoved                // a leader counts the votes of nodes that are not voters of the instance's configuration
	CanaryLast                 = CanaryCountRemoved
)

// MaxLag bounds how far past its chosen prefix a node stores or proposes
// instances. Entries beyond it are ignored (the node learns them later, in
// order), and a proposer that finds the cluster that far ahead catches up
// before leading. It keeps every loop over instances bounded whatever a
// peer sends.
const MaxLag = 1 << 16

// DefaultMaxLearnEntries is the default Config.MaxLearnEntries.
const DefaultMaxLearnEntries = 256

// maxInstance is the largest instance number a message may carry.
const maxInstance = 1 << 48

// Config configures one group's Core.
type Config struct {
	ID    uint64   // this node
	Peers []uint64 // every voting member, including ID (with Join: the members it may talk to)
	// Join starts a node that is not (yet) in the group's configuration
	// and does not know it: it votes when asked, proposes and leads
	// nothing, and takes the configuration from a checkpoint it installs
	// or from the first master record of the log it learns.
	Join  bool
	Group uint64

	// Window is how many instances a leader keeps in flight; at least 1.
	Window int
	// HeartbeatTicks is how often a leader announces itself.
	HeartbeatTicks int
	// ElectionTicks is how long a follower trusts a silent leader, and the
	// upper bound of the random backoff before a new prepare.
	ElectionTicks int
	// RetryTicks is how long a proposer waits before resending accepts or
	// restarting phase 1.
	RetryTicks int
	// LearnTicks is how often a node asks a peer for chosen values it lacks.
	LearnTicks int
	// MaxLearnEntries bounds the entries of one learn response (which also
	// stops after about MaxLearnBytes of values).
	MaxLearnEntries int
	// MaxQueue bounds the proposals waiting for an instance.
	MaxQueue int
	// TickMicros is how long a tick is, in microseconds, and LeaseMicros
	// the lease this node asks for as leader (see master.go). A restarted
	// node holds off every proposer for LeaseMicros: it must be at least
	// the longest lease any member asks for.
	TickMicros  uint64
	LeaseMicros uint64
	// MemTail is how many executed instances stay in memory to serve
	// learners; older chosen values are read back from storage (see
	// LogReads) or, once cleaned, covered by a checkpoint.
	MemTail int

	// Rand returns a uniformly random integer in [0, n). Every random choice
	// of the core comes from it.
	Rand func(n int) int

	Canary Canary
}

func (c *Config) setDefaults() {
	if c.Window == 0 {
		c.Window = 16
	}
	if c.HeartbeatTicks == 0 {
		c.HeartbeatTicks = 5
	}
	if c.ElectionTicks == 0 {
		c.ElectionTicks = 30
	}
	if c.RetryTicks == 0 {
		c.RetryTicks = 10
	}
	if c.LearnTicks == 0 {
		c.LearnTicks = 20
	}
	if c.MaxLearnEntries == 0 {
		c.MaxLearnEntries = DefaultMaxLearnEntries
	}
	if c.MaxQueue == 0 {
		c.MaxQueue = 4096
	}
	if c.MemTail == 0 {
		c.MemTail = 1024
	}
	if c.TickMicros == 0 {
		c.TickMicros = 10_000
	}
	if c.LeaseMicros == 0 {
		c.LeaseMicros = uint64(c.ElectionTicks) * c.TickMicros
	}
}

type role uint8

const (
	follower role = iota
	preparing
	leading
)

// inflight is an instance a leader has sent accepts for.
type inflight struct {
	entry *pb.Entry
	acks  []uint64
	age   int // ticks since the accepts were last sent
}

// Ready is the output of a Core; see the package doc for how to handle it.
type Ready struct {
	HardState *pb.HardState // nil when unchanged; persist after Entries
	Entries   []*pb.Entry   // records to persist, in order; later ones win
	// CleanBelow, when non-zero, is a clean record to persist after the
	// hard state: the log below it is no longer needed.
	CleanBelow uint64
	MustSync   bool
	Messages   []*pb.Message
	Committed  []*pb.Entry
}

// LogRead asks the driver to read chosen values from storage for a learner
// (see LogReads and ServeLog).
type LogRead struct {
	To   uint64 // the learner
	From uint64 // first instance to read
}

// Core is one group's Paxos node. It is not safe for concurrent use.
type Core struct {
	cfg Config

	quietTicks int // leader: ticks since it last broadcast a heartbeat

	// Acceptor and learner state.
	promised   Ballot
	boot       uint64
	hsDirty    bool
	log        map[uint64]*pb.Entry // entries are immutable: replaced, never edited
	maxIndex   uint64               // highest instance in log
	chosenUpto uint64               // every instance <= chosenUpto is chosen
	savedUpto  uint64               // chosen watermark handed out in a Ready
	bootSaved  bool                 // the Ready carrying this boot was persisted
	bootReady  bool                 // the outstanding Ready carries it
	applied    uint64               // last instance handed out in Committed
	maxKnown   uint64               // highest instance any peer mentioned
	memBase    uint64               // instances <= memBase are not in log: read from storage or cleaned
	logStart   uint64               // lowest instance storage still holds; below it only a checkpoint
	clean      uint64               // clean record not yet handed out in a Ready
	reads      []LogRead            // storage reads not yet handed out
	reading    map[uint64]bool      // learners with a storage read in flight
	behind     bool                 // a peer said the values this node needs were cleaned
	snapFrom   uint64               // that peer, until WantCheckpoint hands it out
	noVote     uint64               // a checkpoint covering up to it is being installed: no votes there

	// Proposer state.
	role        role
	ballot      Ballot // current ballot while preparing or leading
	maxSeen     uint64 // highest ballot counter seen anywhere
	promises    []uint64
	p1          map[uint64]*pb.Entry // highest-ballot entry per instance from phase 1
	p1Max       uint64
	prepareFrom uint64
	roleTicks   int
	backoff     int
	next        uint64 // leader: next free instance
	inflight    map[uint64]*inflight
	queue       []*pb.Value
	bound       map[uint64]*pb.Value // instance -> our proposal sent there
	sent        map[uint64]*pb.Value // seq -> our proposal forwarded or bound under a fence, not yet executed
	confs       []Conf               // configurations from the one governing chosenUpto+1 (or older, still in memory) on; see membership.go
	known       []uint64             // every member of confs: messages from others are refused
	members     []uint64             // every member of the active configurations: broadcasts go to them
	membersAt   uint64               // From of the first active configuration when members was computed
	confUnknown bool                 // joined: confs are a placeholder until the first master record or a checkpoint
	dead        []*pb.Value          // our proposals that can no longer be executed (see Dead)
	version     uint64               // the newest master record chosen (or installed): the master version at chosenUpto
	seq         uint64
	fwdSeen     map[origin]*seenWindow

	// Master state (master.go).
	ticks         uint64               // ticks since start
	grant         grant                // the lease this acceptor granted
	hold          int                  // ticks this restarted acceptor still supports no proposer
	noLead        int                  // ticks this node starts no phase 1 (it dropped mastership)
	leaderless    uint64               // tick since which it follows no one, granted no one, holds not
	hbSeq         uint64               // last heartbeat seq sent
	acked         map[uint64]uint64    // leader: peer -> highest heartbeat seq acked under this ballot
	ackTick       map[uint64]uint64    // leader: peer -> tick of its last ack or vote under this ballot
	heard         map[uint64]uint64    // peer -> tick it was last heard from
	masterAt      uint64               // leader: instance of its master record
	leaderVersion uint64               // follower: the master record of the leader it follows
	fillTo        uint64               // leader: fill instances up to it with no-ops
	confFill      uint64               // leader: fill instances up to it with no-ops at once (a configuration governs after it)
	recordDue     bool                 // leader: its master record (at masterAt) is not proposed yet
	deferred      map[uint64]*pb.Value // leader: values phase 1 recovered past ConfigDelay beyond the chosen prefix, proposed as it advances
	pendingReads  []readReq            // leader: read index requests awaiting their round
	readRound     bool                 // leader: a heartbeat round is wanted for reads
	readStates    []ReadState          // answers not yet handed out

	leader       uint64 // leader heard from recently, 0 if none
	leaderBallot Ballot
	leaderTicks  int
	learnTicks   int
	stuckTicks   int
	lastUpto     uint64

	// Output not yet handed out in a Ready.
	msgs        []*pb.Message
	early       []*pb.Message
	selfVotes   []*pb.Message // our votes waiting for a Ready to persist them
	pendingSelf []*pb.Message // our votes in the outstanding Ready
	entries     []*pb.Entry
	local       []*pb.Message
	outAccepts  []*pb.Entry
	outChosen   []*pb.Entry
	outstanding bool

	// Stats counts protocol events for monitoring.
	Stats Stats
}

// Stats counts protocol events of one Core.
type Stats struct {
	Prepares, Promotions, StepDowns, Rejects, Forwards uint64
	DroppedForwards, QuorumLosses                      uint64
	ConfChanges, ConfRejects                           uint64
	Chosen, Learned, Conflicts                         uint64
}

// State is a group's durable state, what New restores a Core from.
type State struct {
	HardState *pb.HardState // the last one stored; nil for a fresh group
	Entries   []*pb.Entry   // the stored entries above Base, in write order
	// Base is the instance the checkpoint the driver restored covers: every
	// instance up to it is chosen and executed. Entries at or below it are
	// ignored. 0 without a checkpoint.
	Base uint64
	// LogStart is the lowest instance whose value storage may still hold
	// (the latest clean record); 0 or 1 when nothing was cleaned.
	LogStart uint64
	// Confs are the configurations the checkpoint at Base carries (see
	// ConfsAt); nil: the group's first configuration, Config.Peers.
	Confs []Conf
	// Version is the master version in force at Base (the checkpoint's).
	Version uint64
}

// SplitRecords turns a group's stored records, in write order, into a
// State: the last hard state, the entries in order, the last clean mark.
// The caller sets Base.
func SplitRecords(recs []*pb.Record) State {
	var st State
	for _, r := range recs {
		if r.HardState != nil {
			st.HardState = r.HardState
		}
		if r.Entry != nil {
			st.Entries = append(st.Entries, r.Entry)
		}
		st.LogStart = max(st.LogStart, r.CleanBelow)
	}
	return st
}

// New restores a Core from its durable state. It refuses (ErrCorruptState)
// a state whose log was cleaned past its checkpoint: instances between
// Base and LogStart would be lost.
func New(cfg Config, st State) (*Core, error) {
	hs, entries := st.HardState, st.Entries
	cfg.setDefaults()
	if cfg.ID == 0 || !cfg.Join && !slices.Contains(cfg.Peers, cfg.ID) {
		return nil, fmt.Errorf("%w: node %d is not among peers %v", ErrInvalidConfig, cfg.ID, cfg.Peers)
	}
	if cfg.Rand == nil {
		return nil, fmt.Errorf("%w: no randomness source", ErrInvalidConfig)
	}
	if cfg.Window < 1 || cfg.MemTail < 1 {
		return nil, fmt.Errorf("%w: window %d, memory tail %d", ErrInvalidConfig, cfg.Window, cfg.MemTail)
	}
	peers := slices.Clone(cfg.Peers)
	slices.Sort(peers)
	if len(slices.Compact(slices.Clone(peers))) != len(peers) {
		return nil, fmt.Errorf("%w: duplicate peers %v", ErrInvalidConfig, cfg.Peers)
	}
	if st.LogStart > st.Base+1 {
		return nil, fmt.Errorf("%w: %w: the log was cleaned below instance %d but the checkpoint covers only up to %d", ErrCorruptState, ErrLogGap, st.LogStart, st.Base)
	}
	cfg.Peers = peers
	c := &Core{
		cfg:      cfg,
		log:      map[uint64]*pb.Entry{},
		inflight: map[uint64]*inflight{},
		bound:    map[uint64]*pb.Value{},
		sent:     map[uint64]*pb.Value{},
		deferred: map[uint64]*pb.Value{},
		fwdSeen:  map[origin]*seenWindow{},
		reading:  map[uint64]bool{},
		acked:    map[uint64]uint64{},
		ackTick:  map[uint64]uint64{},
		heard:    map[uint64]uint64{},
		memBase:  st.Base,
		logStart: max(st.LogStart, 1),
		version:  st.Version,
	}
	switch {
	case len(st.Confs) > 0:
		c.setConfs(slices.Clone(st.Confs))
	case cfg.Join:
		// Not known yet: a configuration without voters, in which no
		// quorum exists (see confUnknown).
		c.confUnknown = true
		c.setConfs([]Conf{{From: 1, Followers: slices.DeleteFunc(slices.Clone(peers), func(id uint64) bool { return id == cfg.ID })}})
	default:
		c.setConfs([]Conf{{From: 1, Voters: peers}})
	}
	if hs != nil {
		c.promised = ballotOf(hs.Promised)
		c.boot = hs.Boot
		// It may have granted a lease before it went down, and forgot.
		c.hold = c.leaseTicks(cfg.LeaseMicros)
	}
	// A new incarnation: proposals made from now on must not collide with
	// those of earlier ones, and the bump is durable before any leaves.
	c.boot++
	c.hsDirty = true
	c.maxSeen = c.promised.Counter
	stored := 0
	for _, e := range entries {
		if e == nil || e.Instance == 0 || e.Instance > maxInstance || e.Value == nil {
			return nil, fmt.Errorf("%w: bad entry %v", ErrCorruptState, e)
		}
		if !e.Chosen && ballotOf(e.Ballot).IsZero() {
			return nil, fmt.Errorf("%w: accepted entry %d without a ballot", ErrCorruptState, e.Instance)
		}
		if b := ballotOf(e.Ballot); b.Counter > c.maxSeen {
			c.maxSeen = b.Counter
		}
		if e.Instance <= st.Base {
			continue // the checkpoint covers it
		}
		if old := c.log[e.Instance]; old != nil && old.Chosen && !e.Chosen {
			continue // a chosen record is final
		}
		if c.log[e.Instance] == nil {
			stored++
		}
		c.log[e.Instance] = e
		c.maxIndex = max(c.maxIndex, e.Instance)
	}
	c.maxIndex = max(c.maxIndex, st.Base)
	c.chosenUpto, c.applied, c.savedUpto = st.Base, st.Base, st.Base
	if hs != nil && hs.ChosenUpto > st.Base {
		if hs.ChosenUpto-st.Base > uint64(stored) {
			return nil, fmt.Errorf("%w: watermark %d above the %d stored entries after instance %d", ErrCorruptState, hs.ChosenUpto, stored, st.Base)
		}
		for i := st.Base + 1; i <= hs.ChosenUpto; i++ {
			e := c.log[i]
			if e == nil {
				return nil, fmt.Errorf("%w: watermark says instance %d of %d is chosen, but it has no record", ErrCorruptState, i, hs.ChosenUpto)
			}
			if !e.Chosen {
				c.log[i] = &pb.Entry{Instance: i, Ballot: e.Ballot, Value: e.Value, Chosen: true}
			}
		}
		c.savedUpto = hs.ChosenUpto
	}
	if hs.GetChosenUpto() < st.Base {
		// The checkpoint may cover instances whose chosen value never
		// reached this disk (a checkpoint commits apart from the log):
		// their records are not to be served. The log starts after it.
		c.Clean(st.Base + 1)
	}
	// Accepting a ballot implies promising it. A crash between the records
	// of one Ready may keep an accepted entry but not the promise raised
	// with it; never promise less than what was accepted.
	for _, e := range c.log {
		if b := ballotOf(e.Ballot); c.promised.Less(b) {
			c.promised = b
		}
	}
	c.maxKnown = c.maxIndex
	c.advanceChosen()
	// Wait a random while before the first prepare, so restarted nodes do
	// not all disrupt a working leader at once.
	c.backoff = c.cfg.Rand(c.cfg.ElectionTicks) + 1
	return c, nil
}

// ID returns this node's id.
func (c *Core) ID() uint64 { return c.cfg.ID }

// Members returns the voters and followers of every configuration that
// governs an instance from the chosen prefix on, this node included.
func (c *Core) Members() []uint64 { return c.members }

// Boot returns this incarnation's number; proposals carry it.
func (c *Core) Boot() uint64 { return c.boot }

// ChosenUpto returns the end of the contiguous chosen prefix.
func (c *Core) ChosenUpto() uint64 { return c.chosenUpto }

// Leader returns the node this core believes leads, or 0.
func (c *Core) Leader() uint64 {
	if c.role == leading {
		return c.cfg.ID
	}
	return c.leader
}

// IsLeader reports whether this core has won phase 1 and not lost it since.
func (c *Core) IsLeader() bool { return c.role == leading }

// Promised returns the highest ballot this node's acceptor promised.
func (c *Core) Promised() Ballot { return c.promised }

// Applied returns the last instance handed out in Committed (or covered by
// the checkpoint the core was restored or installed from).
func (c *Core) Applied() uint64 { return c.applied }

// LogStart returns the lowest instance whose chosen value this node's
// storage may still hold; below it the log was cleaned.
func (c *Core) LogStart() uint64 { return c.logStart }

// MemBase returns the highest instance no longer held in memory.
func (c *Core) MemBase() uint64 { return c.memBase }

// LogLen returns how many instances the core holds in memory.
func (c *Core) LogLen() int { return len(c.log) }

// LogBound is what LogLen never exceeds: the memory tail, the executed
// instances whose records are not yet handed out in a Ready, the chosen
// ones not yet executed, and the instances above the chosen prefix (at
// most MaxLag). It does not grow with the length of the history.
func (c *Core) LogBound() int {
	return c.cfg.MemTail + int(c.applied-min(c.applied, c.savedUpto)) + int(c.chosenUpto-c.applied) + int(c.maxIndex-c.chosenUpto)
}

// Behind reports whether a peer said the values this node needs next were
// cleaned from its log: only a checkpoint can bring this node forward.
func (c *Core) Behind() bool { return c.behind }

// WantCheckpoint returns a peer that told this node its log was cleaned
// past what this node needs, once per such answer, or 0: the driver should
// fetch a checkpoint from it and Install it.
func (c *Core) WantCheckpoint() uint64 {
	p := c.snapFrom
	c.snapFrom = 0
	return p
}

// Pending returns how many proposals wait for an instance here.
func (c *Core) Pending() int { return len(c.queue) }

// Propose queues a value and returns its sequence number, unique within this
// incarnation. It reports false when the queue is full.
func (c *Core) Propose(smid uint32, data []byte) (seq uint64, ok bool) {
	return c.enqueue(&pb.Value{Smid: smid, Data: data})
}

// Cancel withdraws this incarnation's proposal seq if it still waits in the
// queue, neither bound to an instance nor forwarded, so it can never be
// chosen. It reports whether it did.
func (c *Core) Cancel(seq uint64) bool {
	for i, v := range c.queue {
		if v.Node == c.cfg.ID && v.Boot == c.boot && v.Seq == seq {
			c.queue = append(c.queue[:i:i], c.queue[i+1:]...)
			return true
		}
	}
	return false
}

// Queued reports whether this incarnation's proposal seq still waits in
// the queue, neither bound to an instance nor forwarded.
func (c *Core) Queued(seq uint64) bool {
	for _, v := range c.queue {
		if v.Node == c.cfg.ID && v.Boot == c.boot && v.Seq == seq {
			return true
		}
	}
	return false
}

// ProposeBatch queues a value whose data is a marshaled paxospb.Batch.
func (c *Core) ProposeBatch(data []byte) (seq uint64, ok bool) {
	return c.enqueue(&pb.Value{Data: data, Batch: true})
}

func (c *Core) enqueue(v *pb.Value) (uint64, bool) {
	if len(c.queue) >= c.cfg.MaxQueue {
		return 0, false
	}
	c.seq++
	v.Node, v.Boot, v.Seq = c.cfg.ID, c.boot, c.seq
	c.queue = append(c.queue, v)
	c.dispatch()
	c.flush()
	return c.seq, true
}

// HasReady reports whether Ready has something to hand out. Messages that
// may leave early are not counted; see Early.
func (c *Core) HasReady() bool {
	if c.outstanding {
		return false
	}
	return c.hsDirty || len(c.entries) > 0 || len(c.msgs) > 0 || len(c.selfVotes) > 0 ||
		c.chosenUpto > c.applied || c.chosenUpto > c.savedUpto || c.clean != 0
}

// Ready hands out the pending output. Call Advance once it is handled.
func (c *Core) Ready() Ready {
	rd := Ready{Entries: c.entries, Messages: c.msgs}
	if c.hsDirty || c.chosenUpto > c.savedUpto {
		rd.HardState = &pb.HardState{Promised: c.promised.pb(), Boot: c.boot, ChosenUpto: c.chosenUpto}
		rd.MustSync = c.hsDirty // a watermark alone need not be synced
		c.bootReady = c.bootReady || c.hsDirty
		c.hsDirty = false
		c.savedUpto = c.chosenUpto
	}
	for _, e := range rd.Entries {
		if !e.Chosen {
			rd.MustSync = true
		}
	}
	rd.CleanBelow, c.clean = c.clean, 0
	rd.Committed = c.Committed()
	c.compact()
	c.entries, c.msgs = nil, nil
	c.pendingSelf, c.selfVotes = c.selfVotes, nil
	c.outstanding = true
	return rd
}

// Advance tells the core the last Ready was handled: its records are
// durable, so this node's own votes in it now count.
func (c *Core) Advance() {
	c.outstanding = false
	if c.bootReady {
		c.bootSaved = true
	}
	votes := c.pendingSelf
	c.pendingSelf = nil
	for _, m := range votes {
		c.step(m)
	}
	c.flush()
}

// Tick advances logical time by one unit.
func (c *Core) Tick() {
	c.roleTicks++
	c.tickMaster()
	if c.backoff > 0 {
		c.backoff--
	}
	if c.leader != 0 {
		c.leaderTicks++
		if c.leaderTicks > c.cfg.ElectionTicks {
			c.leader = 0
			// Not all at once: every follower heard the same last heartbeat.
			c.backoff = max(c.backoff, c.cfg.Rand(c.cfg.ElectionTicks)+1)
		}
	}
	switch c.role {
	case preparing:
		if c.roleTicks > c.cfg.RetryTicks {
			c.becomeFollower(c.cfg.Rand(c.cfg.ElectionTicks) + 1)
		}
	case leading:
		c.tickLeader()
	}
	c.tickLearner()
	c.dispatch()
	c.flush()
}

// Step handles a message from a peer. Invalid messages are dropped with an
// error wrapping ErrInvalidMessage, ErrNotMember or ErrWrongGroup.
func (c *Core) Step(m *pb.Message) error {
	if err := c.validate(m); err != nil {
		return err
	}
	c.step(m)
	c.flush()
	return nil
}

func (c *Core) validate(m *pb.Message) error {
	if m == nil {
		return fmt.Errorf("%w: nil", ErrInvalidMessage)
	}
	if m.Group != c.cfg.Group || m.To != c.cfg.ID {
		return fmt.Errorf("%w: group %d to %d, I am group %d node %d", ErrWrongGroup, m.Group, m.To, c.cfg.Group, c.cfg.ID)
	}
	if m.From == c.cfg.ID || !c.isMember(m.From) {
		return fmt.Errorf("%w: node %d", ErrNotMember, m.From)
	}
	if m.Ballot != nil && m.Ballot.Node != 0 && !c.isMember(m.Ballot.Node) && m.Type != pb.MsgType_MSG_REJECT {
		return fmt.Errorf("%w: ballot of node %d", ErrNotMember, m.Ballot.Node)
	}
	if b := m.TransferFrom; b != nil && !c.isMember(b.Node) {
		return fmt.Errorf("%w: transfer from node %d", ErrNotMember, b.Node)
	}
	if m.Instance > maxInstance || m.Stray > maxInstance {
		return fmt.Errorf("%w: instance %d", ErrInvalidMessage, m.Instance)
	}
	switch m.Type {
	case pb.MsgType_MSG_PREPARE, pb.MsgType_MSG_PROMISE, pb.MsgType_MSG_ACCEPT,
		pb.MsgType_MSG_ACCEPTED, pb.MsgType_MSG_REJECT, pb.MsgType_MSG_HEARTBEAT, pb.MsgType_MSG_FORWARD,
		pb.MsgType_MSG_HEARTBEAT_ACK, pb.MsgType_MSG_TIMEOUT_NOW:
		if m.Ballot == nil || ballotOf(m.Ballot).IsZero() {
			return fmt.Errorf("%w: %v without ballot", ErrInvalidMessage, m.Type)
		}
	case pb.MsgType_MSG_CHOSEN, pb.MsgType_MSG_LEARN_REQ, pb.MsgType_MSG_LEARN_RESP,
		pb.MsgType_MSG_READ_INDEX, pb.MsgType_MSG_READ_INDEX_RESP:
	default:
		return fmt.Errorf("%w: type %v", ErrInvalidMessage, m.Type)
	}
	for _, e := range m.Entries {
		if e == nil || e.Instance == 0 || e.Instance > maxInstance || e.Value == nil {
			return fmt.Errorf("%w: bad entry in %v", ErrInvalidMessage, m.Type)
		}
		if (e.ByBallot || !e.Chosen && m.Type != pb.MsgType_MSG_CHOSEN && m.Type != pb.MsgType_MSG_LEARN_RESP) && e.Ballot == nil {
			return fmt.Errorf("%w: entry %d without ballot", ErrInvalidMessage, e.Instance)
		}
	}
	for _, v := range m.Values {
		if v == nil || !c.isMember(v.Node) {
			return fmt.Errorf("%w: bad forwarded value", ErrInvalidMessage)
		}
	}
	for _, i := range m.Instances {
		if i == 0 || i > maxInstance {
			return fmt.Errorf("%w: instance %d", ErrInvalidMessage, i)
		}
	}
	return nil
}

// step dispatches a validated (or local) message.
func (c *Core) step(m *pb.Message) {
	if m.From != c.cfg.ID {
		c.heard[m.From] = c.ticks
		switch m.Type {
		case pb.MsgType_MSG_PROMISE, pb.MsgType_MSG_ACCEPTED, pb.MsgType_MSG_HEARTBEAT_ACK:
			if c.role != follower && ballotOf(m.Ballot) == c.ballot {
				c.ackTick[m.From] = c.ticks
			}
		}
	}
	if m.ChosenUpto > c.maxKnown {
		c.maxKnown = m.ChosenUpto
	}
	if b := ballotOf(m.Ballot); b.Counter > c.maxSeen {
		c.maxSeen = b.Counter
	}
	switch m.Type {
	case pb.MsgType_MSG_PREPARE:
		c.onPrepare(m)
	case pb.MsgType_MSG_PROMISE:
		c.onPromise(m)
	case pb.MsgType_MSG_ACCEPT:
		c.onAccept(m)
	case pb.MsgType_MSG_ACCEPTED:
		c.onAccepted(m)
	case pb.MsgType_MSG_REJECT:
		c.onReject(m)
	case pb.MsgType_MSG_CHOSEN, pb.MsgType_MSG_LEARN_RESP:
		if m.Type == pb.MsgType_MSG_LEARN_RESP && len(m.Entries) == 0 && m.LogStart > c.chosenUpto+1 {
			// The peer cleaned what this node needs next.
			c.behind, c.snapFrom = true, m.From
		}
		for _, e := range m.Entries {
			if !e.ByBallot {
				c.learn(e.Instance, e.Value)
				continue
			}
			if old := c.log[e.Instance]; old != nil && !old.Chosen && ballotOf(old.Ballot) == ballotOf(e.Ballot) {
				c.learn(e.Instance, old.Value)
			}
		}
	case pb.MsgType_MSG_LEARN_REQ:
		c.onLearnReq(m)
	case pb.MsgType_MSG_HEARTBEAT:
		c.onHeartbeat(m)
	case pb.MsgType_MSG_FORWARD:
		c.onForward(m)
	case pb.MsgType_MSG_HEARTBEAT_ACK:
		c.onHeartbeatAck(m)
	case pb.MsgType_MSG_READ_INDEX:
		c.readIndex(m.From, m.Seq)
	case pb.MsgType_MSG_READ_INDEX_RESP:
		c.onReadIndexResp(m)
	case pb.MsgType_MSG_TIMEOUT_NOW:
		c.onTimeoutNow(m)
	}
	if m.ChosenUpto > c.chosenUpto && m.From != c.cfg.ID {
		// A peer is ahead: ask it now rather than at the next learn tick.
		// A learn response that brought values is answered at once, so a
		// lagging node streams the log; other hints are throttled.
		streaming := m.Type == pb.MsgType_MSG_LEARN_RESP && len(m.Entries) > 0
		if streaming || m.Type != pb.MsgType_MSG_LEARN_RESP && c.learnTicks >= 0 {
			c.send(&pb.Message{Type: pb.MsgType_MSG_LEARN_REQ, To: m.From, Instance: c.chosenUpto + 1})
			c.learnTicks = -c.cfg.RetryTicks
		}
	}
	c.dispatch()
}

// send queues a message; messages to self are delivered in flush.
func (c *Core) send(m *pb.Message) {
	m.From = c.cfg.ID
	m.Group = c.cfg.Group
	m.ChosenUpto = c.chosenUpto
	if m.To == c.cfg.ID {
		if m.Type == pb.MsgType_MSG_ACCEPTED && c.cfg.Canary != CanaryEarlySelfVote {
			// Our own vote counts only once its record is durable: it is
			// delivered by the Advance after the Ready that persists it.
			c.selfVotes = append(c.selfVotes, m)
			return
		}
		c.local = append(c.local, m)
		return
	}
	// A forward carries proposal ids with this incarnation's boot; they are
	// unique only once the boot is durable.
	earlyPrepare := m.Type == pb.MsgType_MSG_PREPARE && c.cfg.Canary == CanaryEarlyPrepare
	if (early(m.Type) || earlyPrepare) && (m.Type != pb.MsgType_MSG_FORWARD || c.bootSaved) {
		c.early = append(c.early, m)
		return
	}
	c.msgs = append(c.msgs, m)
}

// early reports whether a message may leave before the records of its
// Ready are durable. Only promises and votes (PROMISE, ACCEPTED) reveal
// acceptor state, and a PREPARE's ballot is unique across restarts only once
// the proposer's own promise of it is durable; those three wait. Everything
// else may go at once: an ACCEPT's ballot was made durable by the prepare
// that won it, and chosen values (CHOSEN, LEARN_RESP) were counted from
// durable votes only, this node's own included. So a leader's disk and its
// followers' disks work in parallel.
func early(t pb.MsgType) bool {
	switch t {
	case pb.MsgType_MSG_PREPARE, pb.MsgType_MSG_PROMISE, pb.MsgType_MSG_ACCEPTED, pb.MsgType_MSG_HEARTBEAT_ACK:
		return false
	}
	return true
}

// Committed hands out the chosen values not yet handed out, in instance
// order. They were chosen by durable votes, so the driver may execute them
// at any time, even while a Ready's sync is in flight; whatever it does not
// take comes in the next Ready.
func (c *Core) Committed() []*pb.Entry {
	var out []*pb.Entry
	for i := c.applied + 1; i <= c.chosenUpto; i++ {
		out = append(out, c.log[i])
		c.handedOut(i, c.log[i].Value)
	}
	c.applied = c.chosenUpto
	c.compact()
	return out
}

// compact drops from memory the executed instances older than the memory
// tail. Only instances whose chosen record was handed out in a Ready (and
// so written before any later storage read) go: a learner asking for them
// is served from storage.
func (c *Core) compact() {
	upto := min(c.applied, c.savedUpto)
	for c.memBase+uint64(c.cfg.MemTail) < upto {
		c.memBase++
		delete(c.log, c.memBase)
	}
	c.pruneConfs()
}

// Clean records that the log below instance below is no longer needed: a
// durable checkpoint covers it. The clean record goes out in the next Ready;
// learners that need older instances are then told to fetch a checkpoint.
// The driver must not clean past the checkpoint (below-1 must be covered);
// Clean ignores a mark at or under the current one.
func (c *Core) Clean(below uint64) {
	if below <= c.logStart {
		return
	}
	c.logStart, c.clean = below, below
}

// Install moves the core past a checkpoint the driver has made durable and
// restored into the state machines: every instance up to at is chosen and
// executed. The core drops what it held of them, never votes on them again,
// and hands out Committed from at+1; a leader steps down (its instances may
// be among them). It reports false, changing nothing, if at is not beyond
// what the core executed already.
//
// version is the master version in force at the checkpoint, and upto the
// newest proposal of this incarnation the checkpoint holds: proposals sent
// under an older fence and not among those are dead (see Dead); the
// outcome of the others up to upto is unknown here. confs are the
// configurations the checkpoint carries (ConfsAt of its instance).
func (c *Core) Install(at, version, upto uint64, confs []Conf) bool {
	if at <= c.applied {
		return false
	}
	if (at > c.chosenUpto || c.confUnknown) && len(confs) > 0 {
		// The log up to at is not known here: the checkpoint's
		// configurations are those in force after it.
		c.setConfs(slices.Clone(confs))
		c.membersAt = 0
		c.confUnknown = false
	}
	for _, seq := range slices.Sorted(maps.Keys(c.sent)) {
		switch {
		case seq <= upto:
			delete(c.sent, seq)
		case c.sent[seq].Fence < version:
			c.kill(seq)
		}
	}
	c.version = max(c.version, version)
	if c.role != follower {
		c.becomeFollower(c.cfg.Rand(c.cfg.ElectionTicks) + 1)
	}
	for i := range c.log {
		if i <= at {
			delete(c.log, i)
		}
	}
	for i := range c.bound {
		if i <= at {
			delete(c.bound, i) // its outcome is inside the checkpoint: unknown here
		}
	}
	c.memBase, c.applied, c.noVote = at, at, 0
	c.chosenUpto = max(c.chosenUpto, at)
	c.maxIndex, c.maxKnown = max(c.maxIndex, at), max(c.maxKnown, at)
	c.behind = false
	c.Clean(at + 1)
	c.advanceChosen()
	c.flush()
	return true
}

// Installing tells the core a checkpoint covering every instance up to at
// is on its way (0: no longer): until Install, it votes on none of them.
func (c *Core) Installing(at uint64) { c.noVote = at }

// LogReads hands out the storage reads learners need: for each, read the
// chosen values from From on (about MaxLearnEntries entries and
// MaxLearnBytes bytes) and pass them to ServeLog. Like Early, it may be
// called at any time.
func (c *Core) LogReads() []LogRead {
	r := c.reads
	c.reads = nil
	return r
}

// ServeLog answers the learner of a LogRead with the entries storage
// returned from instance from on (nil if the read failed). Only a
// contiguous run of chosen instances is sent.
func (c *Core) ServeLog(to, from uint64, entries []*pb.Entry) {
	delete(c.reading, to)
	var out []*pb.Entry
	next := from
	for _, e := range entries {
		if e == nil || e.Instance != next || e.Value == nil || next > c.savedUpto || next < c.logStart {
			break
		}
		out = append(out, &pb.Entry{Instance: next, Value: e.Value, Chosen: true})
		next++
	}
	m := &pb.Message{Type: pb.MsgType_MSG_LEARN_RESP, To: to, Entries: out}
	if len(out) == 0 {
		m.LogStart = c.logStart
	}
	c.send(m)
	c.flush()
}

// Early hands out the messages that may leave at once, before the pending
// records are durable (see early). The driver may call it at any time,
// including while a Ready is being handled.
func (c *Core) Early() []*pb.Message {
	m := c.early
	c.early = nil
	return m
}

// broadcast sends m to every other member as one message with To == 0
// (the driver encodes it once and hands the same bytes to each peer), and
// to this node too if self.
func (c *Core) broadcast(m *pb.Message, self bool) {
	if self {
		c.send(&pb.Message{Type: m.Type, To: c.cfg.ID, Ballot: m.Ballot, Instance: m.Instance, Entries: m.Entries, Instances: m.Instances, Values: m.Values, TransferFrom: m.TransferFrom})
	}
	if len(c.members) > 1 {
		m.To = 0
		c.send(m)
	}
}

// flush turns batched accepts and chosen notices into messages and delivers
// messages to self until nothing is left.
func (c *Core) flush() {
	for {
		if len(c.outAccepts) > 0 && c.role == leading {
			c.broadcast(&pb.Message{Type: pb.MsgType_MSG_ACCEPT, Ballot: c.ballot.pb(), Entries: c.outAccepts}, true)
		}
		if c.readRound && c.role == leading {
			c.sendHeartbeat()
		}
		c.outAccepts = nil
		if len(c.outChosen) > 0 {
			c.broadcast(&pb.Message{Type: pb.MsgType_MSG_CHOSEN, Entries: c.outChosen}, false)
			c.outChosen = nil
		}
		if len(c.local) == 0 {
			return
		}
		m := c.local[0]
		c.local = c.local[1:]
		c.step(m)
	}
}

func (c *Core) persist(e *pb.Entry) { c.entries = append(c.entries, e) }

// tooFar reports whether instance i lies beyond what this node stores now.
func (c *Core) tooFar(i uint64) bool { return i > c.chosenUpto+MaxLag }

func (c *Core) setLog(e *pb.Entry) {
	c.log[e.Instance] = e
	c.maxIndex = max(c.maxIndex, e.Instance)
	c.maxKnown = max(c.maxKnown, e.Instance)
	c.persist(e)
}

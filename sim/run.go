package sim

import (
	"errors"
	"fmt"
	"io"
	"runtime/debug"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/paxoskit/paxos/core"
	pb "github.com/paxoskit/paxos/core/paxospb"
	"github.com/paxoskit/paxos/internal/kvsm"
	"github.com/paxoskit/paxos/linearizability"
)

// proposeTimeout is the node's proposal timeout in simulated runs.
const proposeTimeout = 2 * time.Second

// Stats counts what happened in a run, faults included, so a sweep can show
// which faults actually fired.
type Stats struct {
	Events                                        uint64
	Sent, Delivered, Dropped, Duplicated, Delayed uint64
	PartitionDrops, Partitions                    uint64
	Crashes, PowerCuts, Restarts, TornWrites      uint64
	Closes, Misconfigured                         uint64
	StorageErrors, Corruptions, CorruptionsFound  uint64
	DriftingClocks, ClockJumps                    uint64
	MinorityDown, LateDeliveries, Flaps           uint64
	ReLeads, LedAfterCutOff, SameCounterPrepares  uint64
	QuickRecrashes                                uint64
	Checkpoints, Restores, Installs, Transfers    uint64
	CkptCrashes, CkptErrors, StorageReads         uint64
	MaxLiveBytes, LongDowns, MaxInMemory          uint64
	LostBytes                                     uint64
	Pauses, MasterChanges, LeaseReads, IndexReads uint64
	Reads, ReadsFailed, MasterPauses, Stalls      uint64
	Syncs, Commits, Batches                       uint64
	Resent, Fenced                                uint64
	ConfTries, ConfChanges, ConfFollowers         uint64
	Ops, OpsOK, OpsUnknown, OpsNeverExecuted      uint64
	SimTime                                       time.Duration
}

// Result is the outcome of one run.
type Result struct {
	Options Options
	Stats   Stats
	// Err is the first violated invariant, nil if the run passed.
	Err     error
	Verdict linearizability.Verdict
	history *linearizability.Recorder
}

// WriteHTML writes the porcupine visualization of the run's client history.
func (res *Result) WriteHTML(path string) error {
	if res.history == nil {
		return errors.New("sim: run has no history")
	}
	return res.history.WriteHTML(path, res.Verdict)
}

// Violation is an invariant a run broke.
type Violation struct {
	Check string // agreement, order, validity, durability, liveness, linearizability, ...
	Msg   string
}

func (v *Violation) Error() string { return v.Check + ": " + v.Msg }

type netFaults struct{ drop, dup, reorder, late float64 }

type diskFaults struct{ writeErr, syncErr, corrupt float64 }

// run is the state of one simulated run.
type run struct {
	opts     Options
	w        *world
	nodes    []*simNode
	net      netFaults
	disks    diskFaults
	blocked  map[link]int
	netEpoch int // bumped by heal: cuts made before it have nothing to repair
	clients  []*client
	rec      *linearizability.Recorder
	stats    Stats
	err      error

	healAt, liveFrom, clientStop, end time.Duration
	// rejoin is when a minority kept away comes back: once the operations
	// in flight when the clients stopped have ended, since its return may
	// cost the leader its ballot and drop the forwards in flight (by
	// design, they are never resent blindly).
	rejoin time.Duration

	chosen [][]*pb.Value // per group, by instance: the oracle
	// The direct invariant checkers' state (invariants.go).
	ballotInc map[ballotUse]uint64
	acceptVal map[slotBallot]*pb.Value
	p1        map[phase1Key]*phase1
	leaders   map[uint64]*leadership   // per group
	cutOff    map[uint64]time.Duration // node -> when its last isolation ended
	minority  map[uint64]bool          // nodes kept away through liveness: true crashed, false cut off
	ids       []map[valueID]uint64     // per group: instance of each proposal
	proposed  map[string]struct{}      // every value a client proposed
	executed  map[string]kvsm.Result   // every client value chosen, with its result
	execAt    map[string]time.Duration // when each client value was first executed anywhere
	noQuorum  map[string]bool          // values whose proposal failed with ErrNoQuorum alone: never started
	oracleSM  *kvsm.Machine            // the KV state machine fed the chosen log, in order
	digests   [][]uint64               // per group, by instance: oracleSM's state digest after it
	versions  []uint64                 // per group: the newest master record in the chosen log so far
	confs     [][]oracleConf           // per group: the configurations the chosen log made (see membership.go)
	open      map[int]string           // history id -> value, of operations without a known outcome
	masters   map[uint64]*masterState  // per group: lease beliefs (lease.go)
	maxAcked  map[uint64]uint64        // per group: highest instance acknowledged to a client
	rounds    map[roundKey]*hbRound    // heartbeat rounds (readround.go)
	readReqs  map[readReqKey]int       // read index requests a leader got: its heartbeats sent then
	acked     []ack                    // proposals reported successful
}

type valueID struct{ node, boot, seq uint64 }

type ack struct{ group, instance uint64 }

// Run executes one simulated run; trace, if non-nil, receives every event.
func Run(opts Options, trace io.Writer) (res *Result) {
	r := &run{
		opts:     opts,
		w:        newWorld(opts.Seed, trace),
		blocked:  map[link]int{},
		rec:      linearizability.NewRecorder(),
		chosen:   make([][]*pb.Value, opts.Groups),
		ids:      make([]map[valueID]uint64, opts.Groups),
		proposed: map[string]struct{}{},
		executed: map[string]kvsm.Result{},
		execAt:   map[string]time.Duration{},
		noQuorum: map[string]bool{},
		oracleSM: kvsm.New(),
		digests:  make([][]uint64, opts.Groups),
		versions: make([]uint64, opts.Groups),
		open:     map[int]string{},
		net:      netFaults{opts.DropRate, opts.DupRate, opts.ReorderRate, opts.LateRate},
		disks:    diskFaults{opts.WriteErrorRate, opts.SyncErrorRate, opts.CorruptRate},

		ballotInc: map[ballotUse]uint64{},
		acceptVal: map[slotBallot]*pb.Value{},
		p1:        map[phase1Key]*phase1{},
		leaders:   map[uint64]*leadership{},
		cutOff:    map[uint64]time.Duration{},
		minority:  map[uint64]bool{},
		masters:   map[uint64]*masterState{},
		maxAcked:  map[uint64]uint64{},
		rounds:    map[roundKey]*hbRound{},
		readReqs:  map[readReqKey]int{},
	}
	for g := range r.ids {
		r.ids[g] = map[valueID]uint64{}
		r.digests[g] = []uint64{r.oracleSM.StateDigest(uint64(g))}
	}
	r.healAt = opts.SafetyTime
	r.liveFrom = r.healAt + opts.SettleTime
	r.clientStop = r.liveFrom + opts.LivenessTime
	r.rejoin = r.clientStop
	if opts.MinorityDown {
		r.rejoin += proposeTimeout + time.Second
	}
	r.end = r.rejoin + opts.DrainTime
	res = &Result{Options: opts, history: r.rec}
	defer func() {
		if p := recover(); p != nil {
			res.Err = &Violation{"panic", fmt.Sprintf("%v\n%s", p, debug.Stack())}
		}
		r.stats.Events = r.w.events
		r.stats.SimTime = r.w.now
		for _, n := range r.nodes {
			r.harvest(n)
		}
		res.Stats = r.stats
	}()
	r.w.tracef("options %s", opts)
	for i := range opts.Nodes {
		r.nodes = append(r.nodes, &simNode{id: uint64(i + 1), disk: disk{corruptRecord: -1}})
	}
	r.setClocks()
	r.initConfs()
	if opts.MinorityDown {
		r.chooseMinority()
	}
	for _, n := range r.nodes {
		r.start(n)
	}
	for i := range opts.Clients {
		c := &client{id: i, r: r, versions: map[string]uint64{}, master: map[uint64]uint64{}}
		r.clients = append(r.clients, c)
		c.next()
	}
	r.scheduleFault(opts.CrashRate, r.crashOne)
	r.scheduleFault(opts.PartitionRate, r.partition)
	r.scheduleFault(opts.ClockJumpRate, r.jumpClock)
	r.scheduleFault(opts.FlapRate, r.flap)
	r.scheduleFault(opts.PauseRate, r.pauseOne)
	r.scheduleFault(opts.ConfRate, r.reconfigure)
	if opts.LongDown {
		r.w.at(r.w.between(r.healAt/10, r.healAt/4), r.longDown)
	}
	r.w.at(r.healAt, r.heal)
	r.w.at(r.liveFrom, r.checkMasters)
	for r.err == nil && r.w.now < r.end {
		r.w.runUntil(min(r.w.now+100*time.Millisecond, r.end))
		r.checkMemory()
	}
	if r.err == nil {
		r.checkEnd()
	}
	if r.err == nil {
		// An operation whose value no node ever executed never took effect.
		// An operation whose outcome a client never heard either never
		// took effect (no node executed its value) or took effect with the
		// result the chosen log gives it.
		for id, data := range r.open {
			if res, ok := r.executed[data]; ok {
				// It took effect before its value was first executed.
				r.rec.EffectedBy(id, res, int64(r.execAt[data]))
			} else {
				r.rec.Absent(id)
				r.stats.OpsNeverExecuted++
			}
		}
		res.Verdict = r.rec.Check(time.Minute)
		if !res.Verdict.OK() {
			r.failf("history of %d ops (%d unknown) is not linearizable (porcupine %v)", res.Verdict.Ops, res.Verdict.Unknown, res.Verdict.Result)
			r.err.(*Violation).Check = "linearizability"
		}
	}
	res.Err = r.err
	return res
}

func (r *run) failf(format string, args ...any) {
	r.failCheck("invariant", format, args...)
}

func (r *run) failCheck(check, format string, args ...any) {
	if r.err != nil {
		return
	}
	r.err = &Violation{check, fmt.Sprintf(format, args...)}
	r.w.halted = true
	r.w.tracef("VIOLATION %v", r.err)
}

// scheduleFault fires f at exponentially distributed intervals during the
// safety phase.
func (r *run) scheduleFault(rate float64, f func()) {
	if rate <= 0 {
		return
	}
	at := r.w.now + time.Duration(r.w.rng.ExpFloat64()/rate*float64(time.Second))
	if at >= r.healAt {
		return
	}
	r.w.at(at, func() {
		f()
		r.scheduleFault(rate, f)
	})
}

// crashOne crashes a random node, most often one with a sync in flight:
// the crash then lands between writes and their sync, where lost records
// matter most. Sometimes several nodes fail at once, as in a power cut.
func (r *run) crashOne() {
	victims := []*simNode{r.nodes[r.w.rng.IntN(len(r.nodes))]}
	switch {
	case r.w.chance(0.3):
		victims = victims[:0]
		for _, m := range r.nodes {
			if m.syncing > 0 || r.w.chance(0.5) {
				victims = append(victims, m)
			}
		}
		r.stats.PowerCuts++
	case r.w.chance(0.7):
		var syncing []*simNode
		for _, m := range r.nodes {
			if m.up && m.syncing > 0 {
				syncing = append(syncing, m)
			}
		}
		if len(syncing) > 0 {
			victims[0] = syncing[r.w.rng.IntN(len(syncing))]
		}
	}
	for _, n := range victims {
		if !n.up {
			continue
		}
		if r.w.chance(0.2) && !n.env.closed {
			// A clean shutdown first: Close, let the loop run what it has
			// queued, then the process ends (unsynced bytes may still be lost).
			r.stats.Closes++
			r.w.tracef("n%d close", n.id)
			n.node.Close()
			r.w.after(r.w.between(0, 5*time.Millisecond), func() { r.stopClosed(n) })
			continue
		}
		r.crash(n)
		r.w.after(r.w.between(time.Millisecond, r.opts.MaxDown), func() {
			if r.w.now < r.healAt {
				r.restart(n)
			}
		})
	}
}

// stopClosed ends the process of a node that was closed, and restarts it
// later like a crashed one.
func (r *run) stopClosed(n *simNode) {
	if !n.up || !n.env.closed {
		return
	}
	r.crash(n)
	r.w.after(r.w.between(time.Millisecond, r.opts.MaxDown), func() {
		if r.w.now < r.healAt {
			r.restart(n)
		}
	})
}

// heal ends the safety phase: every node comes back, links are repaired and
// the network stops losing, duplicating and badly delaying messages.
func (r *run) heal() {
	r.w.tracef("heal all")
	clear(r.blocked)
	r.netEpoch++
	r.net = netFaults{}
	r.disks = diskFaults{}
	for _, n := range r.nodes {
		if n.up && (n.env.closed || n.env.failed) {
			r.crash(n) // closed or failed, its process not yet ended
		}
		r.restart(n)
	}
	r.keepAway()
	r.healMasters()
	if r.opts.ConfRate > 0 {
		r.restoreVoters()
	}
}

// onCommit is the oracle: every node's every executed instance passes here.
func (r *run) onCommit(n *simNode, g, i uint64, v *pb.Value) {
	r.w.tracef("n%d g%d exec %d noop=%v master=%v fence=%d from=%d.%d.%d", n.id, g, i, v.Noop, v.Master, v.Fence, v.Node, v.Boot, v.Seq)
	if want := n.lastExec[g] + 1; i != want {
		r.failCheck("order", "node %d group %d executed instance %d, expected %d", n.id, g, i, want)
		return
	}
	r.checkDigest(n, "before executing", g, i-1)
	n.lastExec[g] = i
	chosen := r.chosen[g]
	for uint64(len(chosen)) <= i {
		chosen = append(chosen, nil)
	}
	r.chosen[g] = chosen
	if prev := chosen[i]; prev != nil {
		if !core.SameProposal(prev, v) {
			r.failCheck("agreement", "group %d instance %d: node %d executed %v, earlier execution was %v", g, i, n.id, v, prev)
		}
		return
	}
	chosen[i] = v
	r.stats.Commits++
	r.checkDurableQuorum(g, i, v)
	if !v.Noop {
		if v.Config == nil {
			r.checkProposed(g, i, v)
		}
		id := valueID{v.Node, v.Boot, v.Seq}
		if at, dup := r.ids[g][id]; dup {
			r.failCheck("validity", "group %d: proposal %v chosen at instances %d and %d", g, id, at, i)
		}
		r.ids[g][id] = i
	}
	r.advanceOracle(g)
}

// advanceOracle runs the chosen log, in instance order, through the
// oracle state machine, recording its state digest after every instance
// and the result of every client value.
func (r *run) advanceOracle(g uint64) {
	for i := uint64(len(r.digests[g])); i < uint64(len(r.chosen[g])) && r.chosen[g][i] != nil; i++ {
		v := r.chosen[g][i]
		if v.Master {
			r.versions[g] = i
		}
		fenced := v.Fence != 0 && v.Fence != r.versions[g] && !v.Noop
		if fenced {
			// Sent to a master no longer in force: skipped by every node.
			r.stats.Fenced++
		}
		if v.Config != nil && !v.Noop && !fenced {
			r.noteConf(g, i, v)
		}
		if !v.Noop && !fenced && v.Config == nil {
			items := [][]byte{v.Data}
			if v.Batch {
				b := &pb.Batch{}
				if err := proto.Unmarshal(v.Data, b); err == nil {
					items = items[:0]
					for _, it := range b.Items {
						items = append(items, it.Data)
					}
				}
			}
			for _, data := range items {
				out, _ := r.oracleSM.Execute(g, i, data, nil)
				r.executed[string(data)] = out.(kvsm.Result)
				r.execAt[string(data)] = r.w.now
				if r.noQuorum[string(data)] {
					r.failCheck("no-quorum", "group %d instance %d: %s was chosen, but its proposal failed with ErrNoQuorum alone (never started)", g, i, data)
				}
			}
		}
		r.digests[g] = append(r.digests[g], r.oracleSM.StateDigest(g))
	}
}

// checkDigest compares node n's state of group g, which holds every
// instance up to i, with the oracle's after instance i, when the oracle
// got that far.
func (r *run) checkDigest(n *simNode, when string, g, i uint64) {
	if i < uint64(len(r.digests[g])) {
		if d, want := n.sm.StateDigest(g), r.digests[g][i]; d != want {
			r.failCheck("state", "node %d group %d: state digest %x %s instance %d, the chosen log gives %x", n.id, g, d, when, i+1, want)
		}
	}
}

// onJump follows a node whose state machine jumped to a checkpoint's
// instance: at start (restored) or from a peer (installed). Its state must
// be what the chosen log gives at that instance, and it goes on from the
// next one: no value skipped, none executed twice.
func (r *run) onJump(n *simNode, how string, g, at uint64) {
	r.w.tracef("n%d g%d %s checkpoint %d", n.id, g, how, at)
	if at <= n.lastExec[g] {
		r.failCheck("order", "node %d group %d %s checkpoint %d after executing up to %d", n.id, g, how, at, n.lastExec[g])
		return
	}
	n.lastExec[g] = at
	r.checkDigest(n, "after "+how+" checkpoint at", g, at)
}

// checkMemory fails the run if a node holds more of its log in memory
// than its core's bound, which does not grow with the history.
func (r *run) checkMemory() {
	for _, n := range r.nodes {
		if !n.up || n.node == nil {
			continue
		}
		for g := range uint64(r.opts.Groups) {
			st, err := n.node.Status(g)
			if err == nil && st.InMemory > st.MemoryBound {
				r.failCheck("memory", "node %d group %d holds %d instances in memory, above its bound %d (status %+v)", n.id, g, st.InMemory, st.MemoryBound, st)
				return
			}
			r.stats.MaxInMemory = max(r.stats.MaxInMemory, uint64(st.InMemory))
		}
	}
}

// checkEnd runs after the drain: every node is up and has executed the
// same instances into the same state, including every acknowledged one.
func (r *run) checkEnd() {
	for g := range uint64(r.opts.Groups) {
		top := uint64(len(r.chosen[g])) - 1
		if len(r.chosen[g]) == 0 {
			top = 0
		}
		var digest uint64
		for k, n := range r.nodes {
			if !n.up {
				r.failCheck("liveness", "node %d is down after healing", n.id)
				return
			}
			st, err := n.node.Status(g)
			if err != nil || n.lastExec[g] != top || st.Chosen != top || st.Executed != top {
				r.failCheck("liveness", "group %d: node %d executed up to %d (status %+v, %v), cluster reached %d",
					g, n.id, n.lastExec[g], st, err, top)
				return
			}
			d := n.sm.Digest(g)
			if k > 0 && d != digest {
				r.failCheck("agreement", "group %d: node %d state digest %x differs from node 1's %x", g, n.id, d, digest)
				return
			}
			digest = d
		}
	}
	for _, a := range r.acked {
		if a.instance >= uint64(len(r.chosen[a.group])) || r.chosen[a.group][a.instance] == nil {
			r.failCheck("durability", "group %d instance %d was acknowledged but is not chosen", a.group, a.instance)
			return
		}
	}
}

// checkProposed fails the run if a chosen value (or an item of a chosen
// batch) is not something a client proposed.
func (r *run) checkProposed(g, i uint64, v *pb.Value) {
	items := [][]byte{v.Data}
	if v.Batch {
		b := &pb.Batch{}
		if err := proto.Unmarshal(v.Data, b); err != nil {
			r.failCheck("validity", "group %d instance %d: undecodable batch: %v", g, i, err)
			return
		}
		items = items[:0]
		for _, it := range b.Items {
			items = append(items, it.Data)
		}
		r.stats.Batches++
	}
	for _, data := range items {
		if _, ok := r.proposed[string(data)]; !ok {
			r.failCheck("validity", "group %d instance %d: value %q was never proposed", g, i, data)
		}
	}
}

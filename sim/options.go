package sim

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/paxoskit/paxos/core"
)

// Options is everything a run depends on. Derive draws them from a seed;
// a run with the same Options replays exactly.
type Options struct {
	Seed   uint64
	Nodes  int // 3 or 5
	Groups int
	Window int

	Clients   int
	ThinkTime time.Duration // upper bound of a client's pause between ops
	Keys      int
	BatchRate float64 // share of client operations sent with BatchPropose

	// Fault rates, drawn per seed (swarm testing): some seeds get none of a
	// fault, others a lot.
	DropRate      float64       // per message
	DupRate       float64       // per message
	ReorderRate   float64       // per message: an extra delay up to LongDelay
	MinDelay      time.Duration // network latency range
	MaxDelay      time.Duration
	LongDelay     time.Duration
	PartitionRate float64 // partitions started per simulated second
	CrashRate     float64 // crashes per simulated second
	TornRate      float64 // chance a crash keeps a prefix of unsynced bytes
	MaxDown       time.Duration
	SyncLatency   time.Duration // upper bound of one fsync

	// Storage faults: a Write or Sync that fails (the node must stop with
	// ErrStorage and is restarted), and a bit flipped in a synced record
	// while a node is down (its restart must refuse the disk; the damaged
	// block is then restored and the node restarted).
	WriteErrorRate float64 // per Write
	SyncErrorRate  float64 // per Sync
	CorruptRate    float64 // per crash

	// Clocks: every node's clock runs at its own rate, within ClockDrift of
	// the true (simulated) rate, and jumps forward by up to MaxJump at
	// ClockJumpRate per second. Timers run on the node's clock.
	ClockDrift    float64
	ClockJumpRate float64
	MaxJump       time.Duration

	// MinorityDown keeps a random minority crashed or cut off through the
	// liveness phase; the majority must serve every operation. The
	// minority comes back for the drain and must converge too.
	MinorityDown bool

	// Faults aimed at rare paths: a copy of a message delivered seconds
	// later (LateRate, per message); the leader cut off for a term and then
	// the new leader cut off, so leadership flaps back (FlapRate per
	// second); a second crash right after a restart, before its first
	// sync (RecrashRate, per restart).
	LateRate    float64
	FlapRate    float64
	RecrashRate float64

	// The log's life cycle: a checkpoint every CheckpointInterval
	// instances (0: the library default, beyond a short run) with
	// HoldCount instances of log kept below it, MemTail executed instances
	// kept in memory (0: the default). Checkpoint jobs (taking, sending,
	// receiving, installing) take up to CkptLatency; while one runs the
	// node crashes with chance CkptCrashRate, and each checkpoint store
	// operation fails with chance CkptErrorRate.
	CheckpointInterval int
	HoldCount          int
	MemTail            int
	CkptLatency        time.Duration
	CkptCrashRate      float64
	CkptErrorRate      float64
	// LongDown crashes one node early in the safety phase and keeps it
	// down for most of it, so it comes back behind the cleaned log while
	// faults still fire: checkpoint transfers then meet crashes.
	LongDown bool

	// Masters and reads: nodes ask for MasterLease and are told the
	// clocks stay within ClockDrift (MaxClockDrift; 0.001 when
	// ClockDrift is 0). During the safety phase a node's process stops
	// for up to MaxPause at PauseRate per second (a SIGSTOP: handlers,
	// timer firings and deliveries wait and then run in order, the clock
	// runs on); half the pauses hit a master, and a third stall the
	// whole host (its links are cut too). ReadRate is the share of client
	// gets sent as linearizable reads (Node.ReadAsync, random mode)
	// instead of through the log.
	MasterLease time.Duration
	PauseRate   float64
	MaxPause    time.Duration
	ReadRate    float64
	// ConfRate is how many membership changes per second clients ask for
	// during the faults (see membership.go); the last Spares nodes start
	// with Join, outside the first configuration.
	ConfRate float64
	Spares   int
	// Followers makes some of the nodes a change leaves out followers.
	Followers bool
	// ClockEdges puts every drifting clock at an edge of the bound, 1-d
	// or 1+d: the worst case for leases, where the master's clock is slow
	// and its followers' fast.
	ClockEdges bool
	// DriftBeyondBound, when above 0, makes the clocks drift by up to that
	// much while the nodes are still told ClockDrift: a broken assumption
	// the lease checker must catch. Never drawn by Derive.
	DriftBeyondBound float64
	// endToEnd turns off the checkers that look at the lease and read
	// index protocol directly (lease-bound, read-round), so a test can
	// show the end-to-end checkers (lease, read, linearizability) catch
	// what they would have caught first.
	endToEnd bool

	SafetyTime   time.Duration // faults on
	SettleTime   time.Duration // after healing, before liveness is demanded
	LivenessTime time.Duration // clients must succeed
	DrainTime    time.Duration // clients stopped; nodes must converge

	Canary core.Canary
}

// Derive draws a run's options from its seed. nodes and groups of 0 are
// drawn too.
func Derive(seed uint64, nodes, groups int) Options {
	r := rand.New(rand.NewPCG(seed, 0x5eed))
	some := func(p float64, hi float64) float64 {
		if r.Float64() < p {
			return 0
		}
		return r.Float64() * hi
	}
	// Draw both always, so fixing one keeps every other option of the seed.
	drawnNodes, drawnGroups := []int{3, 5}[r.IntN(2)], 1+r.IntN(2)
	if nodes == 0 {
		nodes = drawnNodes
	}
	if groups == 0 {
		groups = drawnGroups
	}
	o := Options{
		Seed:          seed,
		Nodes:         nodes,
		Groups:        groups,
		Window:        []int{1, 2, 4, 16}[r.IntN(4)],
		Clients:       2 + r.IntN(4),
		ThinkTime:     time.Duration(5+r.IntN(60)) * time.Millisecond,
		Keys:          2 + r.IntN(4),
		BatchRate:     some(0.5, 1),
		DropRate:      some(0.3, 0.2),
		DupRate:       some(0.5, 0.1),
		ReorderRate:   some(0.5, 0.1),
		MinDelay:      time.Duration(50+r.IntN(500)) * time.Microsecond,
		MaxDelay:      time.Duration(1+r.IntN(20)) * time.Millisecond,
		LongDelay:     time.Duration(50+r.IntN(500)) * time.Millisecond,
		PartitionRate: some(0.3, 1.5),
		CrashRate:     some(0.3, 1.5),
		TornRate:      r.Float64(),
		MaxDown:       time.Duration(10+r.IntN(2000)) * time.Millisecond,
		SyncLatency:   time.Duration(50+r.IntN([]int{2000, 20000}[r.IntN(2)])) * time.Microsecond,
		SafetyTime:    5 * time.Second,
		SettleTime:    3 * time.Second,
		LivenessTime:  3 * time.Second,
		DrainTime:     3 * time.Second,
	}
	// Drawn after the options above, so adding these kept their values.
	o.WriteErrorRate = some(0.7, 0.004)
	o.SyncErrorRate = some(0.7, 0.004)
	o.CorruptRate = some(0.6, 0.6)
	o.ClockDrift = some(0.3, 0.05)
	o.ClockJumpRate = some(0.6, 0.5)
	o.MaxJump = time.Duration(1+r.IntN(1000)) * time.Millisecond
	o.MinorityDown = r.Float64() < 0.3
	o.LateRate = some(0.5, 0.01)
	o.FlapRate = some(0.5, 0.6)
	o.RecrashRate = some(0.5, 0.5)
	if r.Float64() < 0.005 {
		// A long run: minutes of simulated time, tens of thousands of
		// instances, so slow leaks and late bugs have room to show.
		o.SafetyTime = time.Duration(60+r.IntN(60)) * time.Second
		o.Clients, o.ThinkTime = 32, time.Duration(1+r.IntN(3))*time.Millisecond
		o.Keys = 32 // spread over more keys, the history stays checkable
		// A restart without checkpoints replays the whole log, so crashes
		// and storage failures come ten times less often here.
		o.CrashRate /= 10
		o.WriteErrorRate /= 10
		o.SyncErrorRate /= 10
	}
	// Drawn after everything above (the long-run choice included), so
	// adding them kept every earlier seed's options.
	if r.Float64() < 0.6 {
		o.CheckpointInterval = 1 + r.IntN(100)
		o.HoldCount = 1 + r.IntN(40)
		if o.SafetyTime > 5*time.Second {
			// A long run's 32 fast clients would have a node behind the
			// cleaned log after every crash: each install leaves the
			// proposals in flight unknown, and a history with thousands
			// of unknown operations is beyond porcupine's minute.
			o.CheckpointInterval *= 10
			o.HoldCount *= 10
		}
	}
	if r.Float64() < 0.4 || o.CheckpointInterval > 0 && r.Float64() < 0.6 {
		o.MemTail = 1 + r.IntN(32)
	}
	o.CkptLatency = time.Duration(100+r.IntN(20000)) * time.Microsecond
	o.CkptCrashRate = some(0.5, 0.2)
	o.CkptErrorRate = some(0.6, 0.05)
	// Not in long runs: a 3-node cluster on two nodes for a minute, cut by
	// partitions, times out thousands of operations, a history beyond
	// porcupine's minute (seed 11460).
	o.LongDown = r.Float64() < 0.3 && o.SafetyTime <= 5*time.Second
	// Masters and reads, drawn after everything above.
	o.MasterLease = time.Duration(150+r.IntN(851)) * time.Millisecond
	o.PauseRate = some(0.3, 1)
	o.MaxPause = time.Duration(float64(o.MasterLease) * (0.5 + 1.5*r.Float64())).Round(time.Millisecond)
	o.ReadRate = r.Float64()
	o.ClockEdges = r.Float64() < 0.5
	// Membership changes, drawn after everything above. Not with a
	// minority kept away through the liveness phase: the final
	// configuration (every node a voter) could not be reached.
	if x := some(0.5, 1); !o.MinorityDown {
		o.ConfRate = x
	}
	// Spares: nodes started empty with Join, not in the first
	// configuration, added by the changes (and at heal).
	if x := r.IntN(1 + o.Nodes/2); o.ConfRate > 0 {
		o.Spares = x
	}
	o.Followers = r.Float64() < 0.5 && o.ConfRate > 0
	return o
}

func (o Options) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "seed=%d nodes=%d groups=%d window=%d clients=%d think=%v keys=%d batch=%.2f\n",
		o.Seed, o.Nodes, o.Groups, o.Window, o.Clients, o.ThinkTime, o.Keys, o.BatchRate)
	fmt.Fprintf(&b, "  net: drop=%.3f dup=%.3f reorder=%.3f delay=%v..%v long=%v partitions=%.2f/s\n",
		o.DropRate, o.DupRate, o.ReorderRate, o.MinDelay, o.MaxDelay, o.LongDelay, o.PartitionRate)
	fmt.Fprintf(&b, "  nodes: crashes=%.2f/s torn=%.2f maxdown=%v sync<=%v\n", o.CrashRate, o.TornRate, o.MaxDown, o.SyncLatency)
	fmt.Fprintf(&b, "  storage: write-errors=%.4f sync-errors=%.4f corrupt=%.2f/crash\n", o.WriteErrorRate, o.SyncErrorRate, o.CorruptRate)
	fmt.Fprintf(&b, "  clocks: drift<=%.3f edges=%v jumps=%.2f/s maxjump=%v\n", o.ClockDrift, o.ClockEdges, o.ClockJumpRate, o.MaxJump)
	fmt.Fprintf(&b, "  rare: late=%.4f flaps=%.2f/s recrash=%.2f minority-down=%v\n", o.LateRate, o.FlapRate, o.RecrashRate, o.MinorityDown)
	fmt.Fprintf(&b, "  log: checkpoint-every=%d hold=%d memtail=%d ckpt-latency<=%v ckpt-crash=%.2f ckpt-errors=%.3f long-down=%v\n",
		o.CheckpointInterval, o.HoldCount, o.MemTail, o.CkptLatency, o.CkptCrashRate, o.CkptErrorRate, o.LongDown)
	fmt.Fprintf(&b, "  master: lease=%v pauses=%.2f/s maxpause=%v reads=%.2f membership-changes=%.2f/s spares=%d followers=%v", o.MasterLease, o.PauseRate, o.MaxPause, o.ReadRate, o.ConfRate, o.Spares, o.Followers)
	if o.DriftBeyondBound > 0 {
		fmt.Fprintf(&b, " drift-beyond-bound=%.3f (nodes told %.3f)", o.DriftBeyondBound, o.maxClockDrift())
	}
	b.WriteByte('\n')
	fmt.Fprintf(&b, "  phases: safety=%v settle=%v liveness=%v drain=%v", o.SafetyTime, o.SettleTime, o.LivenessTime, o.DrainTime)
	if o.Canary != core.CanaryNone {
		fmt.Fprintf(&b, " canary=%d", o.Canary)
	}
	return b.String()
}

// maxClockDrift is the clock drift bound the nodes are told
// (Options.MaxClockDrift): the run's ClockDrift, at least 0.001.
func (o Options) maxClockDrift() float64 { return max(o.ClockDrift, 0.001) }

package sim

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/paxoskit/paxos"
	"github.com/paxoskit/paxos/core"
	pb "github.com/paxoskit/paxos/core/paxospb"
	"github.com/paxoskit/paxos/env"
	"github.com/paxoskit/paxos/internal/kvsm"
	"github.com/paxoskit/paxos/internal/testhooks"
)

// simNode is one cluster member across its incarnations. The disk survives
// crashes; everything else is rebuilt on restart.
type simNode struct {
	id       uint64
	inc      uint64 // incarnation; events of older ones are dropped
	up       bool
	node     *paxos.Node
	sm       *kvsm.Machine
	disk     disk
	lastExec []uint64 // per group, in this incarnation
	env      *nodeEnv // this incarnation's environment
	syncing  int      // syncs in flight
	synced   bool     // this incarnation completed a sync
	clock    clock
	revealed revealed // acceptor state its messages exposed
	// paused: the process is stopped (SIGSTOP) until the pause ends; the
	// handlers, timer firings, deliveries and completions due meanwhile
	// wait in deferred, in order.
	paused   bool
	deferred []event
}

// nodeEnv implements env's seams for one incarnation of a node.
type nodeEnv struct {
	r      *run
	n      *simNode
	inc    uint64
	closed bool // Close was called: posts are refused, as by a stopped loop
	recv   func([]byte)

	lastSent    []byte
	lastDecoded *pb.Message
	failed      bool // an injected storage failure hit this incarnation
}

func (e *nodeEnv) alive() bool { return e.n.up && e.n.inc == e.inc }

// onLoop runs f, something of this incarnation's process, now, or once
// a pause of the process ends; never once the incarnation is gone.
func (e *nodeEnv) onLoop(f func()) {
	if !e.alive() {
		return
	}
	if e.n.paused {
		e.n.deferred = append(e.n.deferred, event{fn: f, env: e})
		return
	}
	f()
}

// Post queues f behind everything already scheduled now, like a loop's
// queue; after Close it refuses, and after a crash the post is lost.
func (e *nodeEnv) Post(f func()) bool {
	if e.closed || !e.alive() {
		return false
	}
	e.r.w.post(e, f)
	return true
}

func (e *nodeEnv) Now() time.Duration { return e.n.clock.now(e.r.w.now) }

type simTimer struct{ stopped, fired bool }

func (t *simTimer) Stop() bool {
	was := !t.stopped && !t.fired
	t.stopped = true
	return was
}

// AfterFunc fires like a real timer: at d it posts f to the loop, so a Stop
// that comes after the firing returns false and f still runs.
func (e *nodeEnv) AfterFunc(d time.Duration, f func()) env.Timer {
	t := &simTimer{}
	e.r.w.after(e.n.clock.trueDelay(d), func() {
		if !t.stopped && e.alive() {
			t.fired = true
			e.Post(f)
		}
	})
	return t
}

func (e *nodeEnv) Start(recv func([]byte)) { e.recv = recv }

// Send decodes each message once for the checkers: a broadcast hands the
// same bytes to every peer in a row.
func (e *nodeEnv) Send(to uint64, msg []byte) {
	e.checkStopped("sent a message")
	m := e.lastDecoded
	if len(msg) == 0 || len(e.lastSent) != len(msg) || &e.lastSent[0] != &msg[0] {
		m = e.r.decode(msg)
		if m == nil {
			e.r.failCheck("invariant", "node %d sent an undecodable message", e.n.id)
			return
		}
		e.lastSent, e.lastDecoded = msg, m
		e.r.noteSent(e.n, m)
	}
	e.r.send(e.n.id, to, msg, m)
}

func (e *nodeEnv) Identity() (*pb.Identity, error) { return e.n.disk.identity, nil }

func (e *nodeEnv) SetIdentity(id *pb.Identity) error {
	e.n.disk.identity = id
	return nil
}

func (e *nodeEnv) Load(group, from uint64) ([]*pb.Record, error) { return e.n.disk.load(group, from) }

// Read serves a learner from the disk after a short delay, as a storage
// read off the loop would. A read below the clean mark means the node
// needed what it cleaned.
func (e *nodeEnv) Read(group, from uint64, maxEntries, maxBytes int, done func([]*pb.Entry, error)) {
	e.checkStopped("read")
	if mark := e.n.disk.mark(group, e.n.disk.size); from < mark {
		e.r.failCheck("cleaning", "node %d group %d read its log from instance %d, below its clean mark %d", e.n.id, group, from, mark)
		return
	}
	e.r.stats.StorageReads++
	e.r.w.after(e.r.w.between(10*time.Microsecond, time.Millisecond), func() {
		if e.alive() {
			es := e.n.disk.read(group, from, maxEntries, maxBytes)
			e.Post(func() { done(es, nil) })
		}
	})
}

// Go runs a job off the loop: at a random later time (or never, if the
// process ends first), the job runs and its done is posted. Sometimes the
// node crashes while the job runs, which is where checkpoints break.
func (e *nodeEnv) Go(job func() error, done func(error)) {
	r := e.r
	d := r.w.between(r.opts.CkptLatency/20, r.opts.CkptLatency)
	r.crashSoon(e, r.opts.CkptCrashRate, d, "while a checkpoint job runs")
	r.w.after(d, func() {
		// A paused process runs no job either.
		e.onLoop(func() {
			if !e.closed {
				err := job()
				e.Post(func() { done(err) })
			}
		})
	})
}

// crashSoon crashes e's node within d, with chance p, during the safety
// phase; it restarts later.
func (r *run) crashSoon(e *nodeEnv, p float64, d time.Duration, why string) {
	if r.w.now >= r.healAt || !r.w.chance(p) {
		return
	}
	r.w.after(r.w.between(0, d), func() {
		if e.alive() && r.w.now < r.healAt {
			r.stats.CkptCrashes++
			r.w.tracef("n%d crash %s", e.n.id, why)
			r.crash(e.n)
			r.w.after(r.w.between(time.Millisecond, r.opts.MaxDown), func() { r.restart(e.n) })
		}
	})
}

// errInjected is the storage failure the simulator injects.
var errInjected = errors.New("sim: injected storage failure")

func (e *nodeEnv) Write(recs []*pb.Record) error {
	e.checkStopped("wrote")
	if e.r.w.chance(e.r.disks.writeErr) {
		e.storageFailed("write")
		return errInjected
	}
	return e.n.disk.write(recs)
}

func (e *nodeEnv) Sync(done func(error)) {
	e.checkStopped("synced")
	upto := e.n.disk.size
	fail := e.r.w.chance(e.r.disks.syncErr)
	e.n.syncing++
	e.r.w.after(e.r.w.between(e.r.opts.SyncLatency/10, e.r.opts.SyncLatency), func() {
		if !e.alive() {
			return
		}
		e.n.syncing--
		if fail {
			e.storageFailed("sync")
			e.onLoop(func() { done(errInjected) })
			return
		}
		// The disk completes the sync even while the process is paused;
		// the node hears of it on its loop.
		e.r.stats.Syncs++
		e.n.synced = true
		e.n.disk.durable = max(e.n.disk.durable, upto)
		e.n.disk.clean()
		e.onLoop(func() { done(nil) })
	})
}

// storageFailed notes an injected failure: from now on this incarnation
// must do nothing (the runtime stops with ErrStorage), and a supervisor
// restarts its process a little later.
func (e *nodeEnv) storageFailed(what string) {
	r, n := e.r, e.n
	r.stats.StorageErrors++
	e.failed = true
	r.w.tracef("n%d storage %s failed (injected)", n.id, what)
	r.w.after(r.w.between(time.Millisecond, 50*time.Millisecond), func() {
		if !e.alive() {
			return
		}
		r.crash(n)
		// A supervisor restarts the process, whatever the phase (a sync
		// that started before the heal may fail after it).
		r.w.after(r.w.between(time.Millisecond, r.opts.MaxDown), func() { r.restart(n) })
	})
}

// checkStopped fails the run if the incarnation acts after its storage
// failed.
func (e *nodeEnv) checkStopped(what string) {
	if e.failed {
		e.r.failCheck("storage", "node %d %s after a storage failure: it must stop with ErrStorage", e.n.id, what)
	}
}

func (e *nodeEnv) close() error {
	e.closed = true
	return nil
}

func (e *nodeEnv) IntN(n int) int { return e.r.w.rng.IntN(n) }

// The checkpoint store of the node's disk.

func (e *nodeEnv) Latest(group uint64) (uint64, error) { return e.n.disk.ckpts[group].instance, nil }

func (e *nodeEnv) Create(group, instance uint64) (env.CheckpointWriter, error) {
	if e.r.w.chance(e.r.opts.CkptErrorRate) {
		e.r.stats.CkptErrors++
		return nil, errInjected
	}
	return &ckptWriter{e: e, group: group, instance: instance}, nil
}

func (e *nodeEnv) Open(group, instance uint64) (io.ReadCloser, error) {
	c, ok := e.n.disk.ckpts[group]
	if !ok || c.instance != instance {
		return nil, fmt.Errorf("sim: group %d has no checkpoint %d", group, instance)
	}
	return readerAt{bytes.NewReader(c.data)}, nil
}

type readerAt struct{ *bytes.Reader }

func (readerAt) Close() error { return nil }

// ckptWriter is a checkpoint being written: nothing of it is on the disk
// until Commit.
type ckptWriter struct {
	e               *nodeEnv
	group, instance uint64
	buf             []byte
	done            bool
}

func (w *ckptWriter) Write(p []byte) (int, error) {
	w.buf = append(w.buf, p...)
	return len(p), nil
}

func (w *ckptWriter) Commit() error {
	e := w.e
	if w.done || !e.alive() {
		return errors.New("sim: commit of a finished checkpoint or a dead process")
	}
	w.done = true
	if e.r.w.chance(e.r.opts.CkptErrorRate) {
		e.r.stats.CkptErrors++
		return errInjected
	}
	d := &e.n.disk
	if d.ckpts == nil {
		d.ckpts = map[uint64]diskCkpt{}
	}
	if cur, ok := d.ckpts[w.group]; !ok || cur.instance < w.instance {
		d.ckpts[w.group] = diskCkpt{w.instance, w.buf}
	}
	return nil
}

func (w *ckptWriter) Abort() { w.done = true }

// start boots a new incarnation of n on its disk.
func (r *run) start(n *simNode) {
	n.inc++
	n.up = true
	n.syncing = 0
	n.synced = false
	if torn := n.disk.open(r.opts.Canary == core.CanaryUseCorrupt); torn {
		r.stats.TornWrites++
	}
	n.sm = kvsm.New()
	n.lastExec = make([]uint64, r.opts.Groups)
	e := &nodeEnv{r: r, n: n, inc: n.inc}
	opts := r.nodeOptions(n.id, env.Env{Loop: e, Clock: e, Transport: e, Storage: e, Rand: e, Close: e.close, Checkpoints: e, Worker: e})
	testhooks.Attach(&opts, testhooks.Hooks{
		OnCommit: func(group, instance uint64, v *pb.Value) {
			if e.alive() {
				r.onCommit(n, group, instance, v)
			}
		},
		OnRestore: func(group, instance uint64) {
			r.stats.Restores++
			r.onJump(n, "restored", group, instance)
		},
		OnInstall: func(group, instance uint64) {
			if e.alive() {
				r.stats.Installs++
				r.onJump(n, "installed", group, instance)
				r.crashSoon(e, max(r.opts.CkptCrashRate, 0.3), 500*time.Millisecond, "after installing a checkpoint")
			}
		},
		OnCheckpoint: func(group, instance uint64) {
			if e.alive() {
				r.stats.Checkpoints++
				r.w.tracef("n%d g%d checkpoint %d", n.id, group, instance)
				r.stats.MaxLiveBytes = max(r.stats.MaxLiveBytes, uint64(n.disk.liveBytes()))
			}
		},
		OnLease: func(group uint64, until time.Duration, version uint64) {
			if e.alive() {
				r.onLease(n, group, until, version)
			}
		},
		OnRead: func(group, index uint64, byLease bool) {
			if e.alive() {
				r.onRead(n, group, index, byLease)
			}
		},
		MemTail: r.opts.MemTail,
		Canary:  r.opts.Canary,
	})
	if n.inc > 1 && r.w.chance(0.1) {
		r.tryMisconfigured(n, opts)
	}
	node, err := paxos.RunNode(opts)
	if err == nil {
		n.env, n.node = e, node
	}
	if n.disk.corruptRecord >= 0 {
		r.checkRefusedCorrupt(n, node, err)
		return
	}
	if n.disk.badCkpt != 0 {
		r.checkRefusedCheckpoint(n, node, err)
		return
	}
	if err != nil {
		n.up = false
		if errors.Is(err, core.ErrCorruptState) {
			// The disk and the checkpoint store disagree: a log cleaned
			// past the checkpoint, a watermark without its entries.
			r.failCheck("restore", "node %d: restart: %v", n.id, err)
			return
		}
		r.failf("node %d: restart: %v", n.id, err)
		return
	}
}

// checkRefusedCorrupt runs after a start on a disk with a flipped bit: the
// start must have failed with ErrStorage naming the damaged record. The
// block is then restored and the node started again.
func (r *run) checkRefusedCorrupt(n *simNode, node *paxos.Node, err error) {
	rec := fmt.Sprintf("offset %d ", n.disk.corruptRecord)
	switch {
	case err == nil:
		r.failCheck("corruption", "node %d started on a disk whose record at offset %d has a flipped bit", n.id, n.disk.corruptRecord)
		return
	case !errors.Is(err, paxos.ErrStorage) || !strings.Contains(err.Error(), rec):
		r.failCheck("corruption", "node %d on a disk with a flipped bit at record offset %d: error %v, want ErrStorage naming the record", n.id, n.disk.corruptRecord, err)
		return
	}
	r.refused(n, "disk", err, n.disk.repair)
}

// refused follows a start that rightly refused a damaged disk: the damage
// is repaired, as from a backup, and the node started again.
func (r *run) refused(n *simNode, what string, err error, repair func()) {
	r.stats.CorruptionsFound++
	r.w.tracef("n%d refused its corrupt %s: %v", n.id, what, err)
	n.up = false
	repair()
	r.w.after(r.w.between(time.Millisecond, 100*time.Millisecond), func() { r.restart(n) })
}

// checkRefusedCheckpoint runs after a start on a disk whose checkpoint has
// a flipped bit: the start must have failed with ErrStorage and
// ErrBadCheckpoint. The checkpoint is then restored and the node started
// again.
func (r *run) checkRefusedCheckpoint(n *simNode, node *paxos.Node, err error) {
	if err == nil || !errors.Is(err, paxos.ErrStorage) || !errors.Is(err, paxos.ErrBadCheckpoint) {
		r.failCheck("corruption", "node %d on a disk whose checkpoint of group %d has a flipped bit: started %v, error %v, want ErrStorage and ErrBadCheckpoint",
			n.id, n.disk.badCkpt-1, node != nil, err)
		return
	}
	r.refused(n, "checkpoint", err, n.disk.repairCheckpoint)
}

// corrupt flips a bit in a synced record of a node that is down: an entry,
// a hard state or the last synced record.
func (r *run) corrupt(n *simNode) {
	if r.w.chance(0.3) && n.disk.flipCheckpoint(r.w.rng.IntN(8), r.w.rng.IntN(1<<20)) {
		r.stats.Corruptions++
		r.w.tracef("n%d disk: flipped a bit in a checkpoint", n.id)
		return
	}
	all := n.disk.records(false, false)
	if len(all) == 0 {
		return
	}
	var pick []int
	switch r.w.rng.IntN(3) {
	case 0:
		pick = n.disk.records(true, false)
	case 1:
		pick = n.disk.records(false, true)
	}
	if len(pick) == 0 {
		pick = all[len(all)-1:] // the last synced record
	}
	off := pick[r.w.rng.IntN(len(pick))]
	n.disk.flip(off, r.w.rng.IntN(1<<20))
	r.stats.Corruptions++
	r.w.tracef("n%d disk: flipped a bit in the record at offset %d", n.id, off)
}

func (r *run) crash(n *simNode) {
	if !n.up {
		return
	}
	keep := 0
	if unsynced := n.disk.size - n.disk.durable; unsynced > 0 && r.w.chance(r.opts.TornRate) {
		keep = r.w.rng.IntN(unsynced)
	}
	r.stats.LostBytes += uint64(n.disk.crash(keep))
	r.checkDurable(n)
	if n.disk.corruptRecord < 0 && n.disk.badCkpt == 0 && r.w.chance(r.disks.corrupt) {
		r.corrupt(n)
	}
	n.up = false
	r.harvest(n)
	n.paused, n.deferred = false, nil // a crash ends a pause
	r.endBeliefs(n)
	r.stats.Crashes++
	r.w.tracef("n%d crash (kept %d unsynced bytes)", n.id, keep)
}

// harvest adds the counters of n's node, which ends, to the run's.
func (r *run) harvest(n *simNode) {
	if n.node != nil {
		r.stats.Resent += n.node.Stats().Resent
		n.node = nil
	}
}

func (r *run) restart(n *simNode) {
	if n.up || r.err != nil {
		return
	}
	r.stats.Restarts++
	r.w.tracef("n%d restart", n.id)
	r.start(n)
	if n.up && r.w.now < r.healAt && r.w.chance(r.opts.RecrashRate) {
		r.recrash(n)
	}
}

// nodeOptions are the Options every incarnation of node id starts with.
func (r *run) nodeOptions(id uint64, e env.Env) paxos.Options {
	// Every node starts with the first configuration's voters: the
	// others' members, a spare's peers to learn from.
	var ids []uint64
	for _, m := range r.nodes {
		if !r.spare(m.id) {
			ids = append(ids, m.id)
		}
	}
	return paxos.Options{
		MyNode:         id,
		Nodes:          ids,
		ClusterID:      clusterID,
		Groups:         r.opts.Groups,
		StateMachines:  []paxos.StateMachine{r.nodes[id-1].sm},
		Env:            e,
		Window:         r.opts.Window,
		ProposeTimeout: proposeTimeout,
		Logger:         discard,

		CheckpointInterval: r.opts.CheckpointInterval,
		HoldCount:          r.opts.HoldCount,

		MasterLease:   r.opts.MasterLease,
		MaxClockDrift: r.opts.maxClockDrift(),

		Join: r.spare(id),
	}
}

// spare reports whether node id is one of the last Spares nodes: started
// with Join, no member of the first configuration.
func (r *run) spare(id uint64) bool { return id > uint64(len(r.nodes)-r.opts.Spares) }

var discard = slog.New(slog.DiscardHandler)

// clusterID is the cluster id of simulated clusters.
const clusterID = 0x51

// tryMisconfigured restarts n the way an operator's typo would (another
// member list, cluster id or node id on its disk) and checks the node
// refuses with ErrIdentityMismatch, writing nothing.
func (r *run) tryMisconfigured(n *simNode, good paxos.Options) {
	bad := good
	switch r.w.rng.IntN(3) {
	case 0:
		bad.Nodes = []uint64{n.id} // a cluster of one
	case 1:
		bad.ClusterID++
	default:
		bad.MyNode = uint64(len(r.nodes)) + 1 - n.id // another node's id, or itself in the middle
		if bad.MyNode == n.id {
			bad.Nodes = append(bad.Nodes, uint64(len(r.nodes))+1)
		}
		bad.Join = r.spare(bad.MyNode) // as that node would start
	}
	e := &nodeEnv{r: r, n: n, inc: n.inc}
	bad.Env = env.Env{Loop: e, Clock: e, Transport: e, Storage: e, Rand: e, Close: e.close}
	// A refused start may restore its groups before it refuses (to check
	// the member list against the configuration the log decided): give it
	// a state machine of its own and no oracle hooks.
	bad.StateMachines = []paxos.StateMachine{kvsm.New()}
	testhooks.Attach(&bad, testhooks.Hooks{Canary: r.opts.Canary, MemTail: r.opts.MemTail})
	before := n.disk.size
	node, err := paxos.RunNode(bad)
	r.stats.Misconfigured++
	switch {
	case !errors.Is(err, paxos.ErrIdentityMismatch):
		r.failCheck("identity", "node %d started with a wrong identity (%v): got node %v, error %v", n.id, bad.Nodes, node != nil, err)
	case n.disk.size != before || e.recv != nil:
		r.failCheck("identity", "node %d refused a wrong identity but wrote %d bytes or started its transport", n.id, n.disk.size-before)
	}
	r.w.tracef("n%d misconfigured restart refused: %v", n.id, err)
}

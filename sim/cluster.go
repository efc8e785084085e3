package sim

import (
	"errors"
	"fmt"
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

func (e *nodeEnv) Load(group uint64) ([]*pb.Record, error) { return e.n.disk.load(group) }

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
			done(errInjected)
			return
		}
		e.r.stats.Syncs++
		e.n.synced = true
		e.n.disk.durable = max(e.n.disk.durable, upto)
		done(nil)
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
	opts := r.nodeOptions(n.id, env.Env{Loop: e, Clock: e, Transport: e, Storage: e, Rand: e, Close: e.close})
	testhooks.Attach(&opts, testhooks.Hooks{
		OnCommit: func(group, instance uint64, v *pb.Value) {
			if e.alive() {
				r.onCommit(n, group, instance, v)
			}
		},
		Canary: r.opts.Canary,
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
	if err != nil {
		n.up = false
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
	r.stats.CorruptionsFound++
	r.w.tracef("n%d refused its corrupt disk: %v", n.id, err)
	n.up = false
	n.disk.repair()
	r.w.after(r.w.between(time.Millisecond, 100*time.Millisecond), func() { r.restart(n) })
}

// corrupt flips a bit in a synced record of a node that is down: an entry,
// a hard state or the last synced record.
func (r *run) corrupt(n *simNode) {
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
	if n.disk.corruptRecord < 0 && r.w.chance(r.disks.corrupt) {
		r.corrupt(n)
	}
	n.up = false
	n.node = nil
	r.stats.Crashes++
	r.w.tracef("n%d crash (kept %d unsynced bytes)", n.id, keep)
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
	ids := make([]uint64, len(r.nodes))
	for i, m := range r.nodes {
		ids[i] = m.id
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
	}
}

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
	}
	e := &nodeEnv{r: r, n: n, inc: n.inc}
	bad.Env = env.Env{Loop: e, Clock: e, Transport: e, Storage: e, Rand: e, Close: e.close}
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

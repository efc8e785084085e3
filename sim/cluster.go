package sim

import (
	"errors"
	"log/slog"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/paxoskit/paxos"
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
}

func (e *nodeEnv) alive() bool { return e.n.up && e.n.inc == e.inc }

// Post queues f behind everything already scheduled now, like a loop's
// queue; after Close it refuses, and after a crash the post is lost.
func (e *nodeEnv) Post(f func()) bool {
	if e.closed || !e.alive() {
		return false
	}
	e.r.w.after(0, func() {
		if e.alive() {
			f()
		}
	})
	return true
}

func (e *nodeEnv) Now() time.Duration { return e.r.w.now }

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
	e.r.w.after(d, func() {
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
	m := e.lastDecoded
	if len(msg) == 0 || len(e.lastSent) != len(msg) || &e.lastSent[0] != &msg[0] {
		m = &pb.Message{}
		if err := proto.Unmarshal(msg, m); err != nil {
			e.r.failCheck("invariant", "node %d sent an undecodable message: %v", e.n.id, err)
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

func (e *nodeEnv) Write(recs []*pb.Record) error { return e.n.disk.write(recs) }

func (e *nodeEnv) Sync(done func(error)) {
	upto := len(e.n.disk.data)
	e.n.syncing++
	e.r.w.after(e.r.w.between(e.r.opts.SyncLatency/10, e.r.opts.SyncLatency), func() {
		if e.alive() {
			e.n.syncing--
			e.r.stats.Syncs++
			e.n.disk.durable = max(e.n.disk.durable, upto)
			done(nil)
		}
	})
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
	torn, err := n.disk.open()
	if err != nil {
		r.failf("node %d: storage: %v", n.id, err)
		return
	}
	if torn {
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
	if err != nil {
		r.failf("node %d: restart: %v", n.id, err)
		return
	}
	n.env = e
	n.node = node
}

func (r *run) crash(n *simNode) {
	if !n.up {
		return
	}
	keep := 0
	if unsynced := len(n.disk.data) - n.disk.durable; unsynced > 0 && r.w.chance(r.opts.TornRate) {
		keep = r.w.rng.IntN(unsynced)
	}
	r.stats.LostBytes += uint64(n.disk.crash(keep))
	r.checkDurable(n)
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
	before := len(n.disk.data)
	node, err := paxos.RunNode(bad)
	r.stats.Misconfigured++
	switch {
	case !errors.Is(err, paxos.ErrIdentityMismatch):
		r.failCheck("identity", "node %d started with a wrong identity (%v): got node %v, error %v", n.id, bad.Nodes, node != nil, err)
	case len(n.disk.data) != before || e.recv != nil:
		r.failCheck("identity", "node %d refused a wrong identity but wrote %d bytes or started its transport", n.id, len(n.disk.data)-before)
	}
	r.w.tracef("n%d misconfigured restart refused: %v", n.id, err)
}

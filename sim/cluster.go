package sim

import (
	"time"

	"github.com/paxoskit/paxos"
	pb "github.com/paxoskit/paxos/core/paxospb"
	"github.com/paxoskit/paxos/env"
	"github.com/paxoskit/paxos/internal/kvsm"
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
	syncing  int      // syncs in flight
	revealed revealed // acceptor state its messages exposed
}

// nodeEnv implements env's seams for one incarnation of a node.
type nodeEnv struct {
	r   *run
	n   *simNode
	inc uint64
}

func (e *nodeEnv) alive() bool { return e.n.up && e.n.inc == e.inc }

func (e *nodeEnv) Post(f func()) {
	e.r.w.after(0, func() {
		if e.alive() {
			f()
		}
	})
}

func (e *nodeEnv) Now() time.Duration { return e.r.w.now }

type simTimer struct{ stopped, fired bool }

func (t *simTimer) Stop() bool {
	was := !t.stopped && !t.fired
	t.stopped = true
	return was
}

func (e *nodeEnv) AfterFunc(d time.Duration, f func()) env.Timer {
	t := &simTimer{}
	e.r.w.after(d, func() {
		if !t.stopped && e.alive() {
			t.fired = true
			f()
		}
	})
	return t
}

func (e *nodeEnv) Send(to uint64, msg []byte) {
	e.r.noteSent(e.n, msg)
	e.r.send(e.n.id, to, msg)
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
	ids := make([]uint64, len(r.nodes))
	for i, m := range r.nodes {
		ids[i] = m.id
	}
	node, err := paxos.RunNode(paxos.Options{
		MyNode:         n.id,
		Nodes:          ids,
		Groups:         r.opts.Groups,
		StateMachines:  []paxos.StateMachine{n.sm},
		Env:            env.Env{Loop: e, Clock: e, Transport: e, Storage: e, Rand: e},
		Window:         r.opts.Window,
		ProposeTimeout: proposeTimeout,
		OnCommit: func(group, instance uint64, v *pb.Value) {
			if e.alive() {
				r.onCommit(n, group, instance, v)
			}
		},
		Canary: r.opts.Canary,
	})
	if err != nil {
		r.failf("node %d: restart: %v", n.id, err)
		return
	}
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

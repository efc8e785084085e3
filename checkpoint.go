package paxos

import (
	"fmt"
	"io"
	"maps"
	"slices"

	"github.com/paxoskit/paxos/core"
	pb "github.com/paxoskit/paxos/core/paxospb"
)

// This file is the log's life cycle on one node: checkpoints taken every
// CheckpointInterval instances, the start from the newest checkpoint, log
// cleaning behind it, and the install of a checkpoint a peer sent
// (transfer.go moves the bytes).

// ckptState is a group's checkpoint bookkeeping, owned by the loop.
type ckptState struct {
	machines   []Checkpointer // the group's machines; nil if one of them is not a Checkpointer
	last       uint64         // instance of the newest committed checkpoint, 0 if none
	taking     bool           // a checkpoint is being written
	installing bool           // a received checkpoint is being restored: execution waits
	held       []*pb.Entry    // chosen values that wait for the install
	// skip holds, per SMID, the instance up to which a machine's state
	// already holds the log (its own durable state, or the checkpoint
	// restored into it): those values are not executed again for it.
	skip  map[uint32]uint64
	recv  *snapRecv
	sends map[uint64]*snapSend // by receiver
	// marks holds, per proposing node, its newest proposal executed here
	// (checkpoints carry it: an install tells which proposals of this
	// node it covers).
	marks map[uint64]propMark
}

// mark records that a proposal was executed.
func (c *ckptState) mark(v *pb.Value) {
	if c.marks == nil {
		c.marks = map[uint64]propMark{}
	}
	if m := c.marks[v.Node]; v.Boot > m.boot || v.Boot == m.boot && v.Seq > m.seq {
		c.marks[v.Node] = propMark{v.Node, v.Boot, v.Seq}
	}
}

// markList returns the marks sorted by node.
func (c *ckptState) markList() []propMark {
	var out []propMark
	for _, node := range slices.Sorted(maps.Keys(c.marks)) {
		out = append(out, c.marks[node])
	}
	return out
}

func (c *ckptState) setMarks(marks []propMark) {
	c.marks = map[uint64]propMark{}
	for _, m := range marks {
		c.marks[m.node] = m
	}
}

// checkpointers returns sms as Checkpointers, or nil if one is not.
func checkpointers(sms []StateMachine) []Checkpointer {
	var out []Checkpointer
	for _, sm := range sms {
		c, ok := sm.(Checkpointer)
		if !ok {
			return nil
		}
		out = append(out, c)
	}
	return out
}

// canCheckpoint reports whether the group's checkpoints can be taken,
// stored and sent in this environment.
func (n *Node) canCheckpoint(g *group) bool {
	return len(g.ckpt.machines) > 0 && n.env.Checkpoints != nil && n.env.Worker != nil
}

// restoreGroup brings a fresh group's machines to its newest checkpoint,
// if there is one (g.ckpt.last), and records, per machine, the instance its
// state covers: the log is replayed from the checkpoint on, and values a
// machine's state already holds are skipped for it.
func (n *Node) restoreGroup(g *group) (confs []core.Conf, err error) {
	g.ckpt.skip = map[uint32]uint64{}
	var at uint64
	if n.canCheckpoint(g) {
		if at, err = n.env.Checkpoints.Latest(g.id); err != nil {
			return nil, fmt.Errorf("group %d: newest checkpoint: %w", g.id, err)
		}
	}
	if at > 0 {
		store := n.env.Checkpoints
		meta, err := n.loadCheckpoint(g, at, true, func() (io.ReadCloser, error) { return store.Open(g.id, at) })
		if err != nil {
			return nil, err
		}
		g.ckpt.setMarks(meta.marks)
		g.version, confs = meta.version, meta.confs
		g.ckpt.last = at
		if n.opts.hooks.OnRestore != nil {
			n.opts.hooks.OnRestore(g.id, at)
		}
	}
	for _, sm := range g.sms {
		covered := at // every machine was restored (or kept its newer durable state)
		if d, ok := sm.(DurableStateMachine); ok {
			covered = max(covered, d.DurableInstance(g.id))
		}
		g.ckpt.skip[sm.SMID()] = covered
	}
	return confs, nil
}

// loadCheckpoint restores the group's checkpoint at instance into its
// machines. At start (durableFirst) a durable machine whose own state is
// newer keeps it.
func (n *Node) loadCheckpoint(g *group, at uint64, durableFirst bool, open func() (io.ReadCloser, error)) (ckptMeta, error) {
	r, err := open()
	if err != nil {
		return ckptMeta{}, fmt.Errorf("group %d: open checkpoint %d: %w", g.id, at, err)
	}
	defer r.Close()
	meta, err := readCheckpoint(r, g.id, at, g.ckpt.machines, func(sm Checkpointer, r io.Reader) error {
		if d, ok := sm.(DurableStateMachine); ok && durableFirst && d.DurableInstance(g.id) >= at {
			return nil // its own state is newer; its bytes are skipped
		}
		return sm.RestoreCheckpoint(g.id, at, r)
	})
	if err != nil {
		return ckptMeta{}, fmt.Errorf("group %d: checkpoint %d: %w", g.id, at, err)
	}
	return meta, nil
}

// skipped reports whether the value of instance for machine smid is
// already in its state.
func (g *group) skipped(smid uint32, instance uint64) bool {
	upto, ok := g.ckpt.skip[smid]
	return ok && instance <= upto
}

// maybeCheckpoint starts a checkpoint of the group once CheckpointInterval
// instances were executed since the last one: views are captured now, on
// the loop, and written by a Worker job.
func (n *Node) maybeCheckpoint(g *group) {
	c := &g.ckpt
	if c.taking || c.installing || !n.canCheckpoint(g) || g.executed < c.last+uint64(n.opts.CheckpointInterval) {
		return
	}
	at := g.executed
	claimed := at
	if n.opts.hooks.Canary == core.CanaryCheckpointAhead {
		claimed = at + 1 // the bug: a checkpoint claiming an instance its state does not hold
	}
	views := make([]any, len(c.machines))
	for i, sm := range c.machines {
		v, err := sm.PrepareCheckpoint(g.id, claimed)
		if err != nil {
			n.warn("checkpoint", "state machine could not prepare a checkpoint", "group", g.id, "smid", sm.SMID(), "err", err)
			return
		}
		views[i] = v
	}
	c.taking = true
	store, machines, meta := n.env.Checkpoints, c.machines, ckptMeta{c.markList(), g.version, g.core.ConfsAt(at)}
	n.env.Worker.Go(func() error {
		w, err := store.Create(g.id, claimed)
		if err != nil {
			return err
		}
		if err := writeCheckpoint(w, g.id, claimed, meta, machines, views); err != nil {
			w.Abort()
			return err
		}
		return w.Commit()
	}, func(err error) {
		c.taking = false
		if n.closed {
			return
		}
		if err != nil {
			n.stats.checkpointErrors.Add(1)
			n.warn("checkpoint", "checkpoint failed; the log is kept until one succeeds", "group", g.id, "instance", at, "err", err)
			return
		}
		n.stats.checkpoints.Add(1)
		c.last = max(c.last, claimed)
		if n.opts.hooks.OnCheckpoint != nil {
			n.opts.hooks.OnCheckpoint(g.id, claimed)
		}
		n.clean(g)
		n.process()
	})
}

// clean lets the group's log go below HoldCount instances under the
// newest checkpoint (and under every durable machine's own state).
func (n *Node) clean(g *group) {
	bound := g.ckpt.last
	if n.opts.hooks.Canary == core.CanaryCleanPastCheckpoint {
		// The bug: cleaning up to what was executed, not checkpointed.
		g.core.Clean(g.executed + 1)
		return
	}
	for _, sm := range g.sms {
		if d, ok := sm.(DurableStateMachine); ok {
			bound = min(bound, d.DurableInstance(g.id))
		}
	}
	if n.opts.HoldCount < 0 {
		return
	}
	hold := uint64(n.opts.HoldCount)
	if bound <= hold {
		return
	}
	g.core.Clean(bound - hold + 1)
}

// beginInstall stops execution in the group while a received checkpoint is
// restored; chosen values wait in held.
func (n *Node) beginInstall(g *group) { g.ckpt.installing = true }

// install restores the committed checkpoint at instance into the group's
// machines (off the loop: nothing executes in the group meanwhile) and
// moves the core past it; then the values held meanwhile that lie beyond
// it are executed.
func (n *Node) install(g *group, at uint64) {
	store := n.env.Checkpoints
	n.installFrom(g, at, func() (io.ReadCloser, error) { return store.Open(g.id, at) })
}

// installFrom is install reading the checkpoint from open.
func (n *Node) installFrom(g *group, at uint64, open func() (io.ReadCloser, error)) {
	n.beginInstall(g)
	var meta ckptMeta
	n.env.Worker.Go(func() (err error) {
		meta, err = n.loadCheckpoint(g, at, false, open)
		return err
	}, func(err error) {
		if n.closed {
			return
		}
		if err != nil {
			// The machines may hold half of a state: stop. A restart
			// restores the newest committed checkpoint whole.
			n.opts.Logger.Error("installing a checkpoint failed; stopping node", "group", g.id, "instance", at, "err", err)
			n.stop(fmt.Errorf("%w: install checkpoint: %w", ErrStorage, err))
			return
		}
		n.finishInstall(g, at, meta)
		n.process()
	})
}

// finishInstall moves the group past the checkpoint at instance, restored
// into its machines, and executes the values held meanwhile beyond it.
func (n *Node) finishInstall(g *group, at uint64, meta ckptMeta) {
	c := &g.ckpt
	c.installing = false
	var upto uint64 // this incarnation's proposals the checkpoint may hold
	for _, m := range meta.marks {
		if m.node == n.opts.MyNode && m.boot == g.core.Boot() {
			upto = m.seq
		}
	}
	g.core.Install(at, meta.version, upto, meta.confs)
	g.core.Installing(0) // Install clears it too, unless the core had executed past at
	c.last = max(c.last, at)
	clear(c.skip)
	held := c.held
	c.held = nil
	installed := at > g.executed
	if installed {
		c.setMarks(meta.marks)
		g.version = meta.version
	}
	mine := c.marks[n.opts.MyNode]
	if installed {
		g.executed = at
		g.status.executed.Store(at)
		n.stats.installs.Add(1)
		if n.opts.hooks.OnInstall != nil {
			n.opts.hooks.OnInstall(g.id, at)
		}
	}
	for _, e := range held {
		if e.Instance > g.executed {
			n.execute(g, e)
		}
	}
	// A proposal of this node the checkpoint may hold (its sequence number
	// is not above the newest one of this node it executed) has an
	// outcome unknown here; the others may still be chosen later.
	for _, seq := range slices.Sorted(maps.Keys(g.pending)) {
		if installed && mine.boot == g.core.Boot() && seq <= mine.seq && !g.core.Queued(seq) {
			n.stats.timeouts.Add(1)
			n.untrack(g, seq).fail(fmt.Errorf("%w: %w", ErrTimeout, ErrCheckpointInstalled))
		}
	}
}

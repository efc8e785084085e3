package paxos

import (
	"fmt"
	"io"
	"slices"

	"github.com/paxoskit/paxos/core"
	pb "github.com/paxoskit/paxos/core/paxospb"
)

// StateMachine is the application's deterministic state machine. Every node
// calls Execute with the same values in the same order.
type StateMachine interface {
	// SMID routes values: a value proposed with SMCtx.SMID goes to the state
	// machine with that id.
	SMID() uint32
	// Execute applies a chosen value and returns its result, which reaches
	// the proposer in Result.Value (results on other nodes are dropped).
	// ctx is the proposer's SMCtx.Ctx on the node that proposed the value
	// and nil everywhere else. A returned error reaches the proposer wrapped
	// in ErrExecuteFailed; the instance still counts as executed, so errors
	// must be deterministic too.
	Execute(group, instance uint64, value []byte, ctx any) (result any, err error)
}

// Checkpointer is a StateMachine whose state can be checkpointed: the node
// then takes checkpoints every Options.CheckpointInterval instances, starts
// from the newest one instead of replaying the whole log, cleans the log
// below it (keeping Options.HoldCount instances), and sends it to nodes
// that fell behind past the cleaned log. Only a group whose state machines
// are all Checkpointers takes checkpoints.
//
// A checkpoint is taken in two steps, so a large state does not stall the
// group: PrepareCheckpoint captures a consistent view on the node's loop,
// cheaply (a copy-on-write snapshot, a frozen reference: the machine's
// business), and SaveCheckpoint streams that view off the loop while
// Execute goes on.
type Checkpointer interface {
	StateMachine
	// PrepareCheckpoint runs on the node's loop right after the value of
	// instance executed in group, and returns a consistent view of the
	// group's state as of that instance. It must not block.
	PrepareCheckpoint(group, instance uint64) (view any, err error)
	// SaveCheckpoint writes a view PrepareCheckpoint returned to w. It runs
	// off the loop, concurrently with Execute and other groups' calls.
	SaveCheckpoint(group uint64, view any, w io.Writer) error
	// RestoreCheckpoint replaces the group's state with the checkpoint r
	// holds, which covers every instance up to instance. It runs on the
	// node's loop (or in RunNode, before the node starts). An error stops
	// the node: the group's machines may hold half of a state.
	RestoreCheckpoint(group, instance uint64, r io.Reader) error
}

// DurableStateMachine is a StateMachine that keeps its own durable state
// (PhxPaxos's GetCheckpointInstanceID): on a restart the node executes
// for it only the values above DurableInstance, and the log is never
// cleaned above it. To be sent to lagging nodes it must also be a
// Checkpointer.
type DurableStateMachine interface {
	StateMachine
	// DurableInstance returns the highest instance of group whose effects
	// the machine's durable state holds (0 if none). It never goes down.
	DurableInstance(group uint64) uint64
}

// SMCtx names the state machine a proposal is for and carries a context
// that only the proposing node's Execute sees.
type SMCtx struct {
	SMID uint32
	Ctx  any
}

// Result is the outcome of a proposal that was chosen and executed on the
// proposing node.
type Result struct {
	Instance uint64 // the instance the value was chosen at
	Index    uint32 // the value's position in its batch (BatchPropose); 0 otherwise
	Value    any    // what the state machine's Execute returned
}

func (g *group) sm(smid uint32) StateMachine {
	for _, sm := range g.sms {
		if sm.SMID() == smid {
			return sm
		}
	}
	return nil
}

// execute runs one chosen entry: every value in it goes to its state
// machine, and a proposal of this node's learns its result.
func (n *Node) execute(g *group, e *pb.Entry) {
	if g.ckpt.installing {
		g.ckpt.held = append(g.ckpt.held, e) // executed once the install is done
		return
	}
	if e.Instance != g.executed+1 {
		panic(fmt.Sprintf("paxos: group %d executes instance %d after %d", g.id, e.Instance, g.executed))
	}
	v := e.Value
	n.stats.committed.Add(1)
	g.executed = e.Instance
	g.status.executed.Store(e.Instance)
	if n.opts.hooks.OnCommit != nil {
		n.opts.hooks.OnCommit(g.id, e.Instance, v)
	}
	if v.Master {
		g.version = e.Instance
	}
	if v.Noop {
		return
	}
	mine := v.Node == n.opts.MyNode && v.Boot == g.core.Boot()
	if core.Fenced(g.version, v) && n.opts.hooks.Canary != core.CanaryNoFence {
		// Sent to a master no longer in force: skipped on every node. Our
		// caller, if still waiting, gets it proposed again.
		n.stats.fenced.Add(1)
		if mine {
			n.resend(g, v)
		}
		return
	}
	g.ckpt.mark(v)
	var p *proposal
	if mine {
		p = n.untrack(g, v.Seq)
	}
	if v.Config != nil {
		n.executeConf(g, e.Instance, p)
		return
	}
	if v.Batch {
		n.executeBatch(g, e.Instance, v.Data, p)
		return
	}
	var ctx any
	if p != nil {
		ctx = p.ctx
	}
	out, err := n.apply(g, e.Instance, v.Smid, v.Data, ctx)
	if p != nil {
		p.cb(Result{Instance: e.Instance, Value: out}, err)
	}
}

// apply runs one value on the state machine its SMID names.
func (n *Node) apply(g *group, instance uint64, smid uint32, data []byte, ctx any) (any, error) {
	sm := g.sm(smid)
	if sm == nil {
		return nil, fmt.Errorf("%w: %d", ErrNoStateMachine, smid)
	}
	if g.skipped(smid, instance) {
		return nil, nil // its state holds this value already
	}
	out, err := sm.Execute(g.id, instance, data, ctx)
	if err != nil {
		return out, fmt.Errorf("%w: %w", ErrExecuteFailed, err)
	}
	return out, nil
}

// AddStateMachine registers sm in every group (or only in the listed
// ones). It takes effect on the node's loop before any proposal made
// after it returns. Register before values for it are chosen: a node that
// executes a value whose SMID is unknown reports ErrNoStateMachine to its
// proposer.
func (n *Node) AddStateMachine(sm StateMachine, groups ...uint64) error {
	if sm == nil {
		return fmt.Errorf("%w: nil state machine", ErrInvalidOptions)
	}
	for _, g := range groups {
		if _, err := n.group(g); err != nil {
			return err
		}
	}
	if !n.env.Loop.Post(func() {
		for _, g := range n.groups {
			if len(groups) == 0 || slices.Contains(groups, g.id) {
				g.sms = append(g.sms, sm)
				// A machine added after start is in no checkpoint: the
				// group takes none from now on (and so cleans no more).
				g.ckpt.machines = nil
			}
		}
	}) {
		return ErrClosed
	}
	return nil
}

package paxos

import (
	"fmt"
	"slices"

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
	v := e.Value
	n.stats.committed.Add(1)
	g.status.executed.Store(e.Instance)
	if n.opts.hooks.OnCommit != nil {
		n.opts.hooks.OnCommit(g.id, e.Instance, v)
	}
	if v.Noop {
		return
	}
	var p *proposal
	if v.Node == n.opts.MyNode && v.Boot == g.core.Boot() {
		p = n.untrack(g, v.Seq)
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
			}
		}
	}) {
		return ErrClosed
	}
	return nil
}

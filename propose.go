package paxos

import (
	"context"
	"fmt"
	"slices"
	"time"

	pb "github.com/paxoskit/paxos/core/paxospb"
	"github.com/paxoskit/paxos/env"
)

// proposal is a value this node proposed and waits for: a single value
// (cb) or a batch (items).
type proposal struct {
	g     *group // set once tracked
	seq   uint64 // core's sequence number, once tracked
	ctx   any
	cb    func(Result, error)
	items []batchItem
	timer env.Timer
}

func (p *proposal) fail(err error) {
	if p.cb != nil {
		p.cb(Result{}, err)
	}
	for i, it := range p.items {
		it.cb(Result{Index: uint32(i)}, err)
	}
}

// outcome is what a blocking call waits for.
type outcome struct {
	res Result
	err error
}

// ProposeAsync proposes value to group and calls cb on the node's loop with
// the result, once the proposing node executed the value, or with an error:
// ErrTimeout after Options.ProposeTimeout (outcome unknown), or at once on
// the caller's goroutine if the node is closed. It never blocks.
func (n *Node) ProposeAsync(group uint64, value []byte, smCtx *SMCtx, cb func(Result, error)) {
	p := &proposal{cb: cb}
	if !n.env.Loop.Post(func() { n.propose(p, group, value, smCtx, n.opts.ProposeTimeout) }) {
		cb(Result{}, ErrClosed)
	}
}

// Propose proposes value and waits until the proposing node executed it.
// The context governs the wait: its deadline replaces
// Options.ProposeTimeout, and when it ends first Propose returns an error
// wrapping both ErrTimeout (the outcome is unknown: the value may still be
// chosen) and the context's error, and gives the proposal's pending slot
// back at once.
func (n *Node) Propose(ctx context.Context, group uint64, value []byte, smCtx *SMCtx) (Result, error) {
	ch := make(chan outcome, 1)
	p := &proposal{cb: func(r Result, err error) { ch <- outcome{r, err} }}
	return n.wait(ctx, p, ch, func(timeout time.Duration) { n.propose(p, group, value, smCtx, timeout) })
}

// wait runs start on the loop with the timeout ctx allows, and waits for
// the outcome or for ctx to end.
func (n *Node) wait(ctx context.Context, p *proposal, ch <-chan outcome, start func(time.Duration)) (Result, error) {
	if err := ctx.Err(); err != nil {
		return Result{}, fmt.Errorf("%w: %w", ErrTimeout, err)
	}
	timeout := n.opts.ProposeTimeout
	if dl, ok := ctx.Deadline(); ok {
		timeout = max(time.Until(dl), time.Millisecond)
	}
	if !n.env.Loop.Post(func() { start(timeout) }) {
		return Result{}, ErrClosed
	}
	select {
	case o := <-ch:
		return o.res, o.err
	case <-ctx.Done():
		n.env.Loop.Post(func() { n.cancel(p) })
		return Result{}, fmt.Errorf("%w: %w", ErrTimeout, ctx.Err())
	}
}

func (n *Node) propose(p *proposal, gid uint64, value []byte, smCtx *SMCtx, timeout time.Duration) {
	g, smid, ctx, err := n.admit(gid, value, smCtx)
	if err != nil {
		p.cb(Result{}, err)
		return
	}
	seq, ok := g.core.Propose(smid, value)
	if !ok {
		p.cb(Result{}, fmt.Errorf("%w: group %d queue full", ErrOverloaded, gid))
		return
	}
	p.ctx = ctx
	n.track(g, seq, p, timeout)
}

// admitAny checks what every proposal of group gid needs.
func (n *Node) admitAny(gid uint64) (*group, error) {
	if n.closed {
		return nil, ErrClosed
	}
	g, err := n.group(gid)
	if err != nil {
		return nil, err
	}
	switch cf := g.core.Conf(); {
	case !g.core.ConfKnown():
		return nil, fmt.Errorf("%w: joined group %d, whose configuration it has not learned yet", ErrNotMember, gid)
	case len(g.pending) >= n.opts.MaxPending:
		return nil, fmt.Errorf("%w: %d proposals pending in group %d", ErrOverloaded, len(g.pending), gid)
	case !slices.Contains(cf.Members(), n.opts.MyNode):
		return nil, fmt.Errorf("%w: removed from group %d by its configuration of version %d", ErrNotMember, gid, cf.Version)
	case g.core.QuorumLost():
		n.stats.noQuorum.Add(1)
		return nil, fmt.Errorf("%w: group %d", ErrNoQuorum, gid)
	}
	return g, nil
}

// admit checks a proposal and resolves its state machine.
func (n *Node) admit(gid uint64, value []byte, smCtx *SMCtx) (g *group, smid uint32, ctx any, err error) {
	if len(value) > n.opts.MaxValueSize {
		return nil, 0, nil, fmt.Errorf("%w: %d bytes, limit %d", ErrValueTooLarge, len(value), n.opts.MaxValueSize)
	}
	if g, err = n.admitAny(gid); err != nil {
		return nil, 0, nil, err
	}
	if smCtx != nil {
		smid, ctx = smCtx.SMID, smCtx.Ctx
	} else if len(g.sms) > 0 {
		smid = g.sms[0].SMID()
	}
	if g.sm(smid) == nil {
		return nil, 0, nil, fmt.Errorf("%w: %d", ErrNoStateMachine, smid)
	}
	return g, smid, ctx, nil
}

// track waits for a proposal core accepted, failing it after timeout.
func (n *Node) track(g *group, seq uint64, p *proposal, timeout time.Duration) {
	n.stats.proposals.Add(1)
	p.g, p.seq = g, seq
	p.timer = n.env.Clock.AfterFunc(timeout, func() {
		// The timer may fire after the proposal ended (Stop lost the race):
		// only the proposal still pending (under its newest sequence
		// number: see resend) times out.
		if g.pending[p.seq] == p {
			delete(g.pending, p.seq)
			n.stats.timeouts.Add(1)
			p.fail(fmt.Errorf("%w: after %v", ErrTimeout, timeout))
		}
	})
	g.pending[seq] = p
	n.process()
}

// resend proposes again the data of our proposal v, which will never be
// executed (core.Dead, or skipped for its fence), if its caller still
// waits; the wait goes on under the new sequence number.
func (n *Node) resend(g *group, v *pb.Value) {
	p := g.pending[v.Seq]
	if p == nil {
		return // timed out, cancelled, or its outcome unknown after an install
	}
	delete(g.pending, v.Seq)
	seq, ok := g.core.Resend(v)
	if !ok {
		p.timer.Stop()
		p.fail(fmt.Errorf("%w: group %d queue full when its master changed", ErrOverloaded, g.id))
		return
	}
	n.stats.resent.Add(1)
	p.seq = seq
	g.pending[seq] = p
}

// resendDead resends the proposals core found dead.
func (n *Node) resendDead(g *group) {
	for _, v := range g.core.Dead() {
		n.resend(g, v)
	}
}

// untrack ends the wait for proposal seq and returns it, nil if it is not
// pending (timed out, cancelled, or of an earlier incarnation).
func (n *Node) untrack(g *group, seq uint64) *proposal {
	p := g.pending[seq]
	if p != nil {
		delete(g.pending, seq)
		p.timer.Stop()
	}
	return p
}

// cancel gives up on p, whose caller stopped waiting: its pending slot is
// free at once, and if it still waits in core's queue it is withdrawn.
func (n *Node) cancel(p *proposal) {
	if g := p.g; g != nil && g.pending[p.seq] == p {
		n.untrack(g, p.seq)
		g.core.Cancel(p.seq)
		n.stats.cancelled.Add(1)
		n.process()
	}
}

package paxos

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/protobuf/proto"

	pb "github.com/paxoskit/paxos/core/paxospb"
	"github.com/paxoskit/paxos/env"
)

// BatchPropose puts the values of many callers into one instance, as
// PhxPaxos does: a batch is proposed once it holds Options.BatchCount values
// or Options.BatchBytes bytes, or Options.BatchDelay after its first value.
// Each caller learns the instance, its index in the batch and its result;
// Execute runs once per value, in batch order, with that caller's
// SMCtx.Ctx.

// BatchProposeAsync adds value to the group's current batch and calls cb on
// the node's loop once the proposing node executed it. It never blocks.
func (n *Node) BatchProposeAsync(group uint64, value []byte, smCtx *SMCtx, cb func(Result, error)) {
	if !n.env.Loop.Post(func() { n.batchPropose(group, value, smCtx, cb, n.opts.ProposeTimeout) }) {
		cb(Result{}, ErrClosed)
	}
}

// BatchPropose is the blocking form of BatchProposeAsync; ctx governs the
// wait as in Propose. A value already flushed in a batch with others' values
// cannot be withdrawn: when ctx ends, only the wait ends.
func (n *Node) BatchPropose(ctx context.Context, group uint64, value []byte, smCtx *SMCtx) (Result, error) {
	ch := make(chan outcome, 1)
	cb := func(r Result, err error) { ch <- outcome{r, err} }
	return n.wait(ctx, &proposal{}, ch, func(timeout time.Duration) { n.batchPropose(group, value, smCtx, cb, timeout) })
}

type batchItem struct {
	smid uint32
	data []byte
	ctx  any
	cb   func(Result, error)
}

// batcher collects one group's values until a flush condition holds.
type batcher struct {
	items   []batchItem
	bytes   int
	timeout time.Duration // the shortest wait any item asked for
	timer   env.Timer
	gen     uint64 // counts flushes, so a late timer cannot flush a newer batch
}

func (n *Node) batchPropose(gid uint64, value []byte, smCtx *SMCtx, cb func(Result, error), timeout time.Duration) {
	g, smid, ctx, err := n.admit(gid, value, smCtx)
	if err != nil {
		cb(Result{}, err)
		return
	}
	b := &g.batch
	b.items = append(b.items, batchItem{smid: smid, data: value, ctx: ctx, cb: cb})
	b.bytes += len(value)
	if len(b.items) == 1 || timeout < b.timeout {
		b.timeout = timeout
	}
	if len(b.items) >= n.opts.BatchCount || b.bytes >= n.opts.BatchBytes {
		n.flushBatch(g)
		return
	}
	if b.timer == nil {
		gen := b.gen
		b.timer = n.env.Clock.AfterFunc(n.opts.BatchDelay, func() {
			if g.batch.gen == gen {
				n.flushBatch(g)
			}
		})
	}
}

func (n *Node) flushBatch(g *group) {
	b := &g.batch
	if b.timer != nil {
		b.timer.Stop()
		b.timer = nil
	}
	b.gen++
	items, timeout := b.items, b.timeout
	b.items, b.bytes = nil, 0
	if len(items) == 0 {
		return
	}
	if n.closed {
		(&proposal{items: items}).fail(ErrClosed)
		return
	}
	msg := &pb.Batch{Items: make([]*pb.BatchItem, len(items))}
	for i, it := range items {
		msg.Items[i] = &pb.BatchItem{Smid: it.smid, Data: it.data}
	}
	data, err := proto.Marshal(msg)
	if err != nil {
		panic(fmt.Sprintf("paxos: marshal batch: %v", err))
	}
	seq, ok := g.core.ProposeBatch(data)
	if !ok {
		(&proposal{items: items}).fail(fmt.Errorf("%w: group %d queue full", ErrOverloaded, g.id))
		return
	}
	n.track(g, seq, &proposal{items: items}, timeout)
}

// executeBatch runs every value of a batched instance; p is the local
// proposal if this node proposed it.
func (n *Node) executeBatch(g *group, instance uint64, data []byte, p *proposal) {
	msg := &pb.Batch{}
	if err := proto.Unmarshal(data, msg); err != nil {
		// Every node sees the same bytes and skips them alike.
		n.opts.Logger.Error("undecodable batch", "group", g.id, "instance", instance, "err", err)
		if p != nil {
			for i, it := range p.items {
				it.cb(Result{Instance: instance, Index: uint32(i)}, fmt.Errorf("%w: batch: %w", ErrExecuteFailed, err))
			}
		}
		return
	}
	for i, item := range msg.Items {
		var local *batchItem
		if p != nil && i < len(p.items) {
			local = &p.items[i]
		}
		var ctx any
		if local != nil {
			ctx = local.ctx
		}
		out, err := n.apply(g, instance, item.Smid, item.Data, ctx)
		if local != nil {
			local.cb(Result{Instance: instance, Index: uint32(i), Value: out}, err)
		}
	}
}

package paxos

import (
	"context"
	"fmt"

	"google.golang.org/protobuf/proto"

	pb "github.com/paxoskit/paxos/core/paxospb"
	"github.com/paxoskit/paxos/env"
)

// BatchPropose puts the values of many callers into one instance, as
// PhxPaxos does: a batch is proposed once it holds Options.BatchCount values
// or Options.BatchBytes bytes, or Options.BatchDelay after its first value.
// Each caller learns the instance and its index in the batch; Execute runs
// once per value, in batch order, with that caller's SMCtx.Ctx.

// BatchProposeAsync adds value to the group's current batch and calls cb on
// the node's loop once the proposing node executed it. It never blocks.
func (n *Node) BatchProposeAsync(group uint64, value []byte, smCtx *SMCtx, cb func(instance uint64, index uint32, err error)) {
	if !n.post(func() { n.batchPropose(group, value, smCtx, cb) }) {
		cb(0, 0, ErrClosed)
	}
}

// BatchPropose is the blocking form of BatchProposeAsync.
func (n *Node) BatchPropose(ctx context.Context, group uint64, value []byte, smCtx *SMCtx) (instance uint64, index uint32, err error) {
	type result struct {
		instance uint64
		index    uint32
		err      error
	}
	ch := make(chan result, 1)
	n.BatchProposeAsync(group, value, smCtx, func(i uint64, x uint32, err error) { ch <- result{i, x, err} })
	select {
	case r := <-ch:
		return r.instance, r.index, r.err
	case <-ctx.Done():
		return 0, 0, ctx.Err()
	}
}

type batchItem struct {
	smid uint32
	data []byte
	ctx  any
	cb   func(uint64, uint32, error)
}

// batcher collects one group's values until a flush condition holds.
type batcher struct {
	items []batchItem
	bytes int
	timer env.Timer
}

func (n *Node) batchPropose(gid uint64, value []byte, smCtx *SMCtx, cb func(uint64, uint32, error)) {
	g, smid, ctx, err := n.admit(gid, value, smCtx)
	if err != nil {
		cb(0, 0, err)
		return
	}
	b := &g.batch
	b.items = append(b.items, batchItem{smid: smid, data: value, ctx: ctx, cb: cb})
	b.bytes += len(value)
	if len(b.items) >= n.opts.BatchCount || b.bytes >= n.opts.BatchBytes {
		n.flushBatch(g)
		return
	}
	if b.timer == nil {
		b.timer = n.env.Clock.AfterFunc(n.opts.BatchDelay, func() {
			g.batch.timer = nil
			n.flushBatch(g)
		})
	}
}

func (n *Node) flushBatch(g *group) {
	b := &g.batch
	if b.timer != nil {
		b.timer.Stop()
		b.timer = nil
	}
	items := b.items
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
		for i, it := range items {
			it.cb(0, uint32(i), ErrOverloaded)
		}
		return
	}
	n.track(g.id, seq, &proposal{items: items})
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
				it.cb(instance, uint32(i), fmt.Errorf("%w: batch: %w", ErrExecuteFailed, err))
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
		err := n.apply(g, instance, item.Smid, item.Data, ctx)
		if local != nil {
			local.cb(instance, uint32(i), err)
		}
	}
}

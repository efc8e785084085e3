package paxos

import (
	"errors"
	"fmt"

	"google.golang.org/protobuf/proto"

	"github.com/paxoskit/paxos/core"
	pb "github.com/paxoskit/paxos/core/paxospb"
)

// This file is the group-commit driver: it feeds the cores what arrives
// (messages, ticks) and follows core's driver contract for what leaves.

type groupReady struct {
	g  *group
	rd core.Ready
}

// receive handles a message from a peer, on the loop. Malformed messages
// are counted and dropped; misaddressed ones are logged at WARN too.
func (n *Node) receive(data []byte) {
	if n.closed {
		return
	}
	n.stats.msgsRecv.Add(1)
	n.stats.bytesRecv.Add(uint64(len(data)))
	m := &pb.Message{}
	if err := proto.Unmarshal(data, m); err != nil {
		n.stats.badMessages.Add(1)
		n.opts.Logger.Debug("dropping undecodable message", "err", err)
		return
	}
	if m.To == 0 {
		m.To = n.opts.MyNode // a broadcast
	}
	g, err := n.group(m.Group)
	if err != nil {
		n.stats.unknownGroups.Add(1)
		n.warn("group", "dropping message for a group this node does not have (is --groups the same on every node?)",
			"from", m.From, "group", m.Group, "groups", len(n.groups))
		return
	}
	switch m.Type {
	case pb.MsgType_MSG_SNAP_REQ, pb.MsgType_MSG_SNAP_CHUNK, pb.MsgType_MSG_SNAP_ACK:
		if m.To == n.opts.MyNode {
			n.onSnap(g, m)
		}
		n.process()
		return
	}
	if err := g.core.Step(m); err != nil {
		n.stats.badMessages.Add(1)
		if errors.Is(err, core.ErrNotMember) {
			n.warn("member", "dropping message from a node that is not a member", "from", m.From, "members", n.opts.Nodes, "err", err)
		} else {
			n.opts.Logger.Debug("dropping message", "err", err)
		}
		return
	}
	n.process()
}

func (n *Node) onTick() {
	if n.closed {
		return
	}
	for _, g := range n.groups {
		g.core.Tick()
		n.tickSnap(g)
		n.tickReads(g)
	}
	n.process()
	n.tick = n.env.Clock.AfterFunc(n.opts.TickInterval, n.onTick)
}

// process follows core's driver contract for every group: early messages
// go out at once; then each Ready's committed values are executed, its
// records written, and (once synced) its messages sent. One Write and one
// Sync cover all groups: group commit. While a sync is in flight, new
// output waits for the next.
func (n *Node) process() {
	defer n.publish()
	if n.closed {
		return
	}
	for _, g := range n.groups {
		n.sendAll(g, g.core.Early())
		for _, e := range g.core.Committed() {
			n.execute(g, e)
		}
		n.resendDead(g)
		n.lifeCycle(g)
	}
	for !n.syncing && !n.closed {
		var rds []groupReady
		for _, g := range n.groups {
			if g.core.HasReady() {
				rds = append(rds, groupReady{g, g.core.Ready()})
			}
		}
		if len(rds) == 0 {
			return
		}
		if n.opts.hooks.Canary == core.CanaryEarlyReply {
			n.send(rds)
		}
		var recs []*pb.Record
		mustSync := false
		for _, r := range rds {
			for _, e := range r.rd.Committed {
				n.execute(r.g, e)
			}
			n.resendDead(r.g)
			for _, e := range r.rd.Entries {
				recs = append(recs, &pb.Record{Group: r.g.id, Entry: e})
			}
			if r.rd.HardState != nil { // after the entries its watermark covers
				recs = append(recs, &pb.Record{Group: r.g.id, HardState: r.rd.HardState})
			}
			if r.rd.CleanBelow != 0 {
				recs = append(recs, &pb.Record{Group: r.g.id, CleanBelow: r.rd.CleanBelow})
			}
			mustSync = mustSync || r.rd.MustSync
		}
		if len(recs) > 0 {
			if err := n.env.Storage.Write(recs); err != nil {
				n.fail(err)
				return
			}
		}
		if !mustSync {
			n.finish(rds)
			continue
		}
		n.syncing = true
		n.stats.syncs.Add(1)
		n.env.Storage.Sync(func(err error) {
			n.syncing = false
			if err != nil {
				n.fail(err)
				return
			}
			n.finish(rds)
			n.process()
		})
	}
}

// lifeCycle runs what follows execution in a group: storage reads for
// learners, checkpoints, and fetching a checkpoint when the log a peer
// holds no longer reaches this node.
func (n *Node) lifeCycle(g *group) {
	for _, r := range g.core.LogReads() {
		n.env.Storage.Read(g.id, r.From, core.DefaultMaxLearnEntries, core.MaxLearnBytes, func(es []*pb.Entry, err error) {
			if n.closed {
				return
			}
			if err != nil {
				n.warn("read", "reading the log for a learner failed", "group", g.id, "from", r.From, "err", err)
				es = nil
			}
			g.core.ServeLog(r.To, r.From, es)
			n.process()
		})
	}
	n.readStates(g)
	if p := g.core.WantCheckpoint(); p != 0 {
		n.startRecv(g, p)
	}
	n.maybeCheckpoint(g)
	if n.opts.hooks.Canary == core.CanaryCleanPastCheckpoint && g.ckpt.last > 0 {
		n.clean(g)
	}
}

// publish makes every group's state visible to Status readers.
func (n *Node) publish() {
	for _, g := range n.groups {
		if !n.closed {
			n.serveReads(g)
			n.updateMaster(g)
			n.updatePeers(g)
		}
		g.publish()
	}
}

func (n *Node) fail(err error) {
	if n.closed || n.opts.hooks.Canary == core.CanaryIgnoreStorageError {
		return
	}
	n.opts.Logger.Error("storage failed; stopping node", "err", err)
	n.stop(fmt.Errorf("%w: %w", ErrStorage, err))
}

func (n *Node) send(rds []groupReady) {
	for _, r := range rds {
		n.sendAll(r.g, r.rd.Messages)
	}
}

// sendAll marshals and sends msgs. A broadcast (To == 0) is marshaled once
// and every other member gets the same bytes.
func (n *Node) sendAll(g *group, msgs []*pb.Message) {
	for _, m := range msgs {
		data, err := proto.Marshal(m)
		if err != nil {
			panic(fmt.Sprintf("paxos: marshal own message: %v", err))
		}
		if m.Type == pb.MsgType_MSG_HEARTBEAT && m.Seq != 0 {
			n.noteHeartbeat(g, m)
		}
		if m.To != 0 {
			n.transmit(m.To, data)
			continue
		}
		for _, to := range g.core.Members() {
			if to != n.opts.MyNode {
				n.transmit(to, data)
			}
		}
	}
}

func (n *Node) transmit(to uint64, data []byte) {
	n.stats.msgsSent.Add(1)
	n.stats.bytesSent.Add(uint64(len(data)))
	n.env.Transport.Send(to, data)
}

// finish sends a persisted Ready's messages and advances its core.
func (n *Node) finish(rds []groupReady) {
	if n.closed {
		return
	}
	if n.opts.hooks.Canary != core.CanaryEarlyReply {
		n.send(rds)
	}
	for _, r := range rds {
		r.g.core.Advance()
	}
}

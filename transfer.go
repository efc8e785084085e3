package paxos

import (
	"bytes"
	"errors"
	"fmt"
	"hash/crc32"
	"io"

	"google.golang.org/protobuf/proto"

	"github.com/paxoskit/paxos/core"
	pb "github.com/paxoskit/paxos/core/paxospb"
	"github.com/paxoskit/paxos/env"
)

// Checkpoint transfer. A node whose next instance was cleaned from a peer's
// log (core.WantCheckpoint) asks that peer for its newest checkpoint
// (SNAP_REQ). The sender streams the stored file in chunks (SNAP_CHUNK),
// each with its CRC, at most snapWindow bytes beyond what the receiver has
// acknowledged as written (SNAP_ACK). Lost chunks are resent from the
// acknowledged offset after a silence; a transfer that makes no progress
// for long is dropped by both sides, and the receiver starts again from
// the start with whichever peer answers next. A sender serves many
// receivers at once, one transfer per receiver; a receiver runs one
// transfer per group. Once the last byte is written and the whole file
// checks (its trailer's CRC), the receiver commits it to its own store,
// restores it into its machines and moves its core past it, without a
// restart.

const (
	snapChunk  = 256 << 10 // bytes per chunk
	snapWindow = 4 * snapChunk
	// snapRetryTicks of silence make a sender resend from the acknowledged
	// offset; snapGiveUp retries without progress end the transfer. A
	// receiver gives up after snapRetryTicks without a first chunk, or 4
	// times that without progress.
	snapRetryTicks = 50
	snapGiveUp     = 10
)

// snapSend is a transfer this node serves.
type snapSend struct {
	to, id, at   uint64
	file         io.ReaderAt
	closer       io.Closer
	acked, next  uint64 // acknowledged offset; next offset to read
	eof          bool   // the last chunk was sent; end is the file size
	end          uint64
	reading      bool
	gen          int // bumped when reads restart from acked
	idle, misses int
}

// snapRecv is the transfer this node receives for a group.
type snapRecv struct {
	from, id, at uint64
	w            env.CheckpointWriter
	recvd        uint64   // bytes accepted, in order
	written      uint64   // bytes the store has taken
	queue        [][]byte // accepted, not yet written
	writing      bool
	last         bool // the last chunk was accepted
	done         bool // committing or installing: no more chunks
	aborted      bool
	check        ckptCheck
	idle         int
	copy         []byte // every byte, kept by CanaryNonAtomicInstall only
}

func (n *Node) sendSnap(g *group, m *pb.Message) {
	m.From, m.Group = n.opts.MyNode, g.id
	data, err := proto.Marshal(m)
	if err != nil {
		panic(fmt.Sprintf("paxos: marshal own message: %v", err))
	}
	n.transmit(m.To, data)
}

// onSnap handles a checkpoint transfer message.
func (n *Node) onSnap(g *group, m *pb.Message) {
	if m.From == n.opts.MyNode || !g.core.IsMember(m.From) || m.Transfer == 0 || len(m.Data) > snapChunk {
		n.stats.badMessages.Add(1)
		return
	}
	switch m.Type {
	case pb.MsgType_MSG_SNAP_REQ:
		n.serveSnap(g, m)
	case pb.MsgType_MSG_SNAP_ACK:
		n.onSnapAck(g, m)
	case pb.MsgType_MSG_SNAP_CHUNK:
		n.onSnapChunk(g, m)
	}
}

// serveSnap starts sending the newest checkpoint to a peer that lacks
// instance m.Instance, replacing a transfer to it already running.
func (n *Node) serveSnap(g *group, m *pb.Message) {
	c := &g.ckpt
	at := c.last
	if !n.canCheckpoint(g) || at == 0 || at+1 < m.Instance {
		// Nothing useful to send: the peer can learn the log instead.
		n.sendSnap(g, &pb.Message{Type: pb.MsgType_MSG_SNAP_ACK, To: m.From, Transfer: m.Transfer, Last: true})
		return
	}
	if c.sends == nil {
		c.sends = map[uint64]*snapSend{}
	}
	if old := c.sends[m.From]; old != nil {
		if old.id == m.Transfer {
			return // a duplicate request
		}
		n.endSend(g, old)
	}
	s := &snapSend{to: m.From, id: m.Transfer, at: at}
	c.sends[m.From] = s
	n.stats.snapSends.Add(1)
	store := n.env.Checkpoints
	var f io.ReadCloser
	var newest uint64
	n.env.Worker.Go(func() (err error) {
		// The newest checkpoint now: a newer one than c.last may have
		// been committed (and the older removed) since.
		for range 3 {
			if newest, err = store.Latest(g.id); err == nil && newest > 0 {
				if f, err = store.Open(g.id, newest); err == nil {
					return nil
				}
			}
		}
		if err == nil {
			err = errors.New("no checkpoint")
		}
		return err
	}, func(err error) {
		ra, ok := f.(io.ReaderAt)
		if err == nil && !ok {
			err = errors.New("checkpoint reader is not an io.ReaderAt")
		}
		if c.sends[s.to] != s || n.closed || err != nil {
			if f != nil {
				f.Close()
			}
			if err != nil && c.sends[s.to] == s {
				n.warn("snapsend", "cannot send a checkpoint", "group", g.id, "to", s.to, "err", err)
				delete(c.sends, s.to)
				// Refuse, so the receiver asks again at once.
				n.sendSnap(g, &pb.Message{Type: pb.MsgType_MSG_SNAP_ACK, To: s.to, Transfer: s.id, Last: true})
			}
			return
		}
		s.file, s.closer, s.at = ra, f, newest
		n.pumpSnap(g, s)
	})
}

// pumpSnap reads and sends chunks while the window allows.
func (n *Node) pumpSnap(g *group, s *snapSend) {
	if s.reading || s.eof || s.file == nil || s.next-s.acked >= snapWindow || g.ckpt.sends[s.to] != s {
		return
	}
	s.reading = true
	off, gen := s.next, s.gen
	buf := make([]byte, snapChunk)
	var got int
	var eof bool
	file := s.file
	n.env.Worker.Go(func() error {
		var err error
		got, err = file.ReadAt(buf, int64(off))
		if errors.Is(err, io.EOF) {
			eof, err = true, nil
		}
		return err
	}, func(err error) {
		s.reading = false
		if g.ckpt.sends[s.to] != s || n.closed {
			return
		}
		if err != nil {
			n.warn("snapsend", "reading a checkpoint to send failed", "group", g.id, "to", s.to, "err", err)
			n.endSend(g, s)
			return
		}
		if gen != s.gen {
			n.pumpSnap(g, s) // a resend began meanwhile
			return
		}
		data := buf[:got]
		n.sendSnap(g, &pb.Message{Type: pb.MsgType_MSG_SNAP_CHUNK, To: s.to, Transfer: s.id, Instance: s.at,
			Offset: off, Data: data, Crc: crc32.Checksum(data, castagnoli), Last: eof})
		n.stats.snapBytesSent.Add(uint64(got))
		s.next = off + uint64(got)
		if eof {
			s.eof, s.end = true, s.next
		}
		n.pumpSnap(g, s)
	})
}

func (n *Node) onSnapAck(g *group, m *pb.Message) {
	if r := g.ckpt.recv; r != nil && r.id == m.Transfer && r.from == m.From && m.Last {
		n.abortRecv(g, "the peer has no checkpoint to send")
		return
	}
	s := g.ckpt.sends[m.From]
	if s == nil || s.id != m.Transfer {
		return
	}
	if m.Last {
		n.endSend(g, s) // the receiver is done or gave up
		return
	}
	if m.Offset > s.acked && m.Offset <= s.next {
		s.acked, s.idle, s.misses = m.Offset, 0, 0
	}
	if s.eof && s.acked >= s.end {
		n.endSend(g, s)
		return
	}
	n.pumpSnap(g, s)
}

func (n *Node) endSend(g *group, s *snapSend) {
	if g.ckpt.sends[s.to] == s {
		delete(g.ckpt.sends, s.to)
	}
	if s.closer != nil {
		s.closer.Close()
		s.closer = nil
	}
}

// startRecv asks peer for a checkpoint, unless a transfer runs already.
func (n *Node) startRecv(g *group, peer uint64) {
	if g.ckpt.recv != nil || !n.canCheckpoint(g) {
		return
	}
	id := uint64(n.env.Rand.IntN(1<<62)) + 1
	g.ckpt.recv = &snapRecv{from: peer, id: id}
	n.stats.snapRecvs.Add(1)
	n.sendSnap(g, &pb.Message{Type: pb.MsgType_MSG_SNAP_REQ, To: peer, Transfer: id, Instance: g.core.ChosenUpto() + 1})
}

func (n *Node) onSnapChunk(g *group, m *pb.Message) {
	r := g.ckpt.recv
	if r == nil || r.id != m.Transfer || r.from != m.From {
		// Not (or no longer) wanted: stop the sender.
		n.sendSnap(g, &pb.Message{Type: pb.MsgType_MSG_SNAP_ACK, To: m.From, Transfer: m.Transfer, Last: true})
		return
	}
	if r.done || r.aborted {
		return
	}
	if r.at == 0 {
		if m.Instance <= g.executed {
			n.abortRecv(g, "the checkpoint is not newer than this node's state")
			return
		}
		r.at = m.Instance
		g.core.Installing(r.at)
	}
	if m.Instance != r.at {
		n.abortRecv(g, "the sender changed checkpoints")
		return
	}
	if m.Offset != r.recvd || crc32.Checksum(m.Data, castagnoli) != m.Crc {
		if m.Offset == r.recvd {
			n.stats.badMessages.Add(1) // corrupted in flight: the sender resends
		}
		n.sendSnap(g, &pb.Message{Type: pb.MsgType_MSG_SNAP_ACK, To: r.from, Transfer: r.id, Offset: r.written})
		return
	}
	r.idle = 0
	r.queue = append(r.queue, m.Data)
	if n.opts.hooks.Canary == core.CanaryNonAtomicInstall {
		r.copy = append(r.copy, m.Data...)
	}
	r.recvd += uint64(len(m.Data))
	r.check.feed(m.Data)
	r.last = m.Last
	n.stats.snapBytesRecv.Add(uint64(len(m.Data)))
	n.writeRecv(g, r)
}

// writeRecv hands the accepted bytes to the store, one job at a time.
func (n *Node) writeRecv(g *group, r *snapRecv) {
	if r.writing || r.aborted {
		return
	}
	if len(r.queue) == 0 {
		if r.last && r.written == r.recvd {
			n.commitRecv(g, r)
		}
		return
	}
	var data []byte
	for _, q := range r.queue {
		data = append(data, q...)
	}
	r.queue = nil
	r.writing = true
	store, at := n.env.Checkpoints, r.at
	n.env.Worker.Go(func() error {
		if r.w == nil {
			w, err := store.Create(g.id, at)
			if err != nil {
				return err
			}
			r.w = w
		}
		_, err := r.w.Write(data)
		return err
	}, func(err error) {
		r.writing = false
		if r.aborted {
			n.discardRecv(r)
			return
		}
		if n.closed {
			return
		}
		if err != nil {
			n.abortRecv(g, "writing the checkpoint failed: "+err.Error())
			return
		}
		r.written += uint64(len(data))
		n.sendSnap(g, &pb.Message{Type: pb.MsgType_MSG_SNAP_ACK, To: r.from, Transfer: r.id, Offset: r.written})
		n.writeRecv(g, r)
	})
}

// commitRecv checks the whole received file, commits it and installs it.
func (n *Node) commitRecv(g *group, r *snapRecv) {
	if !r.check.ok(g.id, r.at) || r.w == nil {
		n.abortRecv(g, "the received checkpoint fails its checksum or is not of this group and instance")
		return
	}
	if r.at <= g.executed {
		n.abortRecv(g, "this node executed past the checkpoint meanwhile")
		return
	}
	r.done = true
	n.sendSnap(g, &pb.Message{Type: pb.MsgType_MSG_SNAP_ACK, To: r.from, Transfer: r.id, Offset: r.written, Last: true})
	w, at := r.w, r.at
	if n.opts.hooks.Canary == core.CanaryNonAtomicInstall {
		// The bug: the machines and the log move to the checkpoint, but
		// the checkpoint itself is never made durable.
		g.ckpt.recv = nil
		n.env.Worker.Go(func() error { w.Abort(); return nil }, func(error) {})
		n.installFrom(g, at, func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(r.copy)), nil })
		return
	}
	n.env.Worker.Go(w.Commit, func(err error) {
		if g.ckpt.recv == r {
			g.ckpt.recv = nil
		}
		if n.closed {
			return
		}
		if err != nil {
			n.warn("snaprecv", "committing a received checkpoint failed", "group", g.id, "err", err)
			g.core.Installing(0)
			return
		}
		n.install(g, at)
	})
}

// abortRecv drops the group's transfer; the core asks again (it is still
// behind) and a new transfer starts from the start.
func (n *Node) abortRecv(g *group, why string) {
	r := g.ckpt.recv
	if r == nil {
		return
	}
	n.opts.Logger.Info("checkpoint transfer dropped", "group", g.id, "from", r.from, "why", why)
	n.stats.snapAborts.Add(1)
	g.ckpt.recv = nil
	g.core.Installing(0)
	r.aborted = true
	n.sendSnap(g, &pb.Message{Type: pb.MsgType_MSG_SNAP_ACK, To: r.from, Transfer: r.id, Last: true})
	if !r.writing {
		n.discardRecv(r)
	}
}

func (n *Node) discardRecv(r *snapRecv) {
	if w := r.w; w != nil {
		r.w = nil
		n.env.Worker.Go(func() error { w.Abort(); return nil }, func(error) {})
	}
}

// tickSnap ages the group's transfers: a silent sender resends from the
// acknowledged offset, and transfers without progress end.
func (n *Node) tickSnap(g *group) {
	c := &g.ckpt
	for _, s := range c.sends {
		if s.idle++; s.idle < snapRetryTicks {
			continue
		}
		s.idle = 0
		if s.misses++; s.misses > snapGiveUp {
			n.endSend(g, s)
			continue
		}
		s.next, s.eof = s.acked, false
		s.gen++
		n.pumpSnap(g, s)
	}
	if r := c.recv; r != nil && !r.done && !r.writing {
		// A request that got no chunk may have been lost, or gone to a
		// node that is down: ask again soon (the next peer that says the
		// log was cleaned is asked). A sender that went silent mid-way
		// had several resends to come back.
		limit := 4 * snapRetryTicks
		if r.at == 0 {
			limit = snapRetryTicks
		}
		if r.idle++; r.idle > limit {
			n.abortRecv(g, "the sender went silent")
		}
	}
}

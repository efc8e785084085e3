package paxos

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"

	"github.com/paxoskit/paxos/core"
	pb "github.com/paxoskit/paxos/core/paxospb"
	"google.golang.org/protobuf/proto"
)

// The checkpoint file of a group: the state of every state machine of the
// group as of one instance, as a sequence of checksummed frames.
//
//	magic "PXCKPT02"
//	frame := kind(1) len(u32 BE) crc32c(payload, u32 BE) payload
//	'H' group(u64) instance(u64) count(u32) smid(u32)*count
//	'P' count(u32) (node(u64) boot(u64) seq(u64))*count version(u64): per
//	    proposing node, its newest proposal executed up to the instance;
//	    then the master version in force there (the newest master record)
//	'M' a paxospb.ConfState: the configurations in force after the
//	    instance (core.ConfsAt)
//	then for each state machine, in header order: 'D'* (its bytes) 'E'
//	'Z' size(u64) crc(u32): the length and CRC-32C of every byte before
//	    this frame, so a copy can be checked whole without parsing it
//
// Frames carry at most ckptFrameSize bytes.

const (
	ckptMagic     = "PXCKPT02" // 01: no master version (before fences)
	ckptFrameSize = 64 << 10
	ckptHeader    = 9
	ckptTrailer   = ckptHeader + 12 // the 'Z' frame
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// propMark is the newest proposal of a node (its boot and sequence
// number) a group executed.
type propMark struct{ node, boot, seq uint64 }

// ckptMeta is what a checkpoint carries beside the machines' states: the
// proposal marks and the master version in force at its instance.
type ckptMeta struct {
	marks   []propMark
	version uint64
	confs   []core.Conf
}

// ErrBadCheckpoint means a checkpoint's bytes are corrupt or truncated, or
// describe another group, instance or set of state machines.
var ErrBadCheckpoint = errors.New("paxos: bad checkpoint")

// ckptWriter frames the bytes of a checkpoint.
type ckptWriter struct {
	w    io.Writer
	crc  uint32
	size uint64
	buf  []byte // pending 'D' bytes
}

func (c *ckptWriter) raw(p []byte) error {
	c.crc = crc32.Update(c.crc, castagnoli, p)
	c.size += uint64(len(p))
	_, err := c.w.Write(p)
	return err
}

func (c *ckptWriter) frame(kind byte, payload []byte) error {
	var h [ckptHeader]byte
	h[0] = kind
	binary.BigEndian.PutUint32(h[1:], uint32(len(payload)))
	binary.BigEndian.PutUint32(h[5:], crc32.Checksum(payload, castagnoli))
	if err := c.raw(h[:]); err != nil {
		return err
	}
	return c.raw(payload)
}

// Write buffers state machine bytes into 'D' frames.
func (c *ckptWriter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		k := min(len(p), ckptFrameSize-len(c.buf))
		c.buf = append(c.buf, p[:k]...)
		p = p[k:]
		if len(c.buf) == ckptFrameSize {
			if err := c.frame('D', c.buf); err != nil {
				return 0, err
			}
			c.buf = c.buf[:0]
		}
	}
	return n, nil
}

func (c *ckptWriter) endMachine() error {
	if len(c.buf) > 0 {
		if err := c.frame('D', c.buf); err != nil {
			return err
		}
		c.buf = c.buf[:0]
	}
	return c.frame('E', nil)
}

// writeCheckpoint writes the checkpoint of group at instance: the views
// PrepareCheckpoint returned, saved by their machines.
func writeCheckpoint(w io.Writer, group, instance uint64, meta ckptMeta, sms []Checkpointer, views []any) error {
	bw := bufio.NewWriterSize(w, ckptFrameSize+2*ckptHeader)
	c := &ckptWriter{w: bw}
	if err := c.raw([]byte(ckptMagic)); err != nil {
		return err
	}
	h := binary.BigEndian.AppendUint64(nil, group)
	h = binary.BigEndian.AppendUint64(h, instance)
	h = binary.BigEndian.AppendUint32(h, uint32(len(sms)))
	for _, sm := range sms {
		h = binary.BigEndian.AppendUint32(h, sm.SMID())
	}
	if err := c.frame('H', h); err != nil {
		return err
	}
	p := binary.BigEndian.AppendUint32(nil, uint32(len(meta.marks)))
	for _, m := range meta.marks {
		p = binary.BigEndian.AppendUint64(p, m.node)
		p = binary.BigEndian.AppendUint64(p, m.boot)
		p = binary.BigEndian.AppendUint64(p, m.seq)
	}
	p = binary.BigEndian.AppendUint64(p, meta.version)
	if err := c.frame('P', p); err != nil {
		return err
	}
	confs, err := proto.Marshal(core.ConfStatePB(meta.confs))
	if err != nil {
		return err
	}
	if err := c.frame('M', confs); err != nil {
		return err
	}
	for i, sm := range sms {
		if err := sm.SaveCheckpoint(group, views[i], c); err != nil {
			return fmt.Errorf("state machine %d: save checkpoint: %w", sm.SMID(), err)
		}
		if err := c.endMachine(); err != nil {
			return err
		}
	}
	z := binary.BigEndian.AppendUint64(nil, c.size)
	z = binary.BigEndian.AppendUint32(z, c.crc)
	if err := c.frame('Z', z); err != nil {
		return err
	}
	return bw.Flush()
}

// ckptReader reads the frames of a checkpoint.
type ckptReader struct {
	r    *bufio.Reader
	crc  uint32
	size uint64
	kind byte
	data []byte // payload of the current 'D' frame not yet read
	buf  []byte
}

func (c *ckptReader) bad(format string, args ...any) error {
	return fmt.Errorf("%w: at byte %d: "+format, append([]any{ErrBadCheckpoint, c.size}, args...)...)
}

func (c *ckptReader) full(p []byte) error {
	if _, err := io.ReadFull(c.r, p); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return c.bad("truncated")
		}
		return err
	}
	c.crc = crc32.Update(c.crc, castagnoli, p)
	c.size += uint64(len(p))
	return nil
}

// drain reads the frames left up to the trailer, checking them, and
// returns the first problem (nil if the rest is sound).
func (c *ckptReader) drain() error {
	for {
		kind, _, err := c.next()
		if err != nil {
			return err
		}
		if kind == 'Z' {
			return nil
		}
	}
}

// next reads one frame; its payload is valid until the next call.
func (c *ckptReader) next() (byte, []byte, error) {
	crc, size := c.crc, c.size
	var h [ckptHeader]byte
	if err := c.full(h[:]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(h[1:])
	if n > ckptFrameSize {
		return 0, nil, c.bad("frame of %d bytes", n)
	}
	if cap(c.buf) < int(n) {
		c.buf = make([]byte, n)
	}
	p := c.buf[:n]
	if err := c.full(p); err != nil {
		return 0, nil, err
	}
	if crc32.Checksum(p, castagnoli) != binary.BigEndian.Uint32(h[5:]) {
		return 0, nil, c.bad("frame checksum mismatch")
	}
	if h[0] == 'Z' {
		if n != 12 || binary.BigEndian.Uint64(p) != size || binary.BigEndian.Uint32(p[8:]) != crc {
			return 0, nil, c.bad("trailer does not match the bytes before it")
		}
	}
	return h[0], p, nil
}

// Read returns the bytes of the current state machine, io.EOF at its 'E'.
func (c *ckptReader) Read(p []byte) (int, error) {
	for len(c.data) == 0 {
		if c.kind == 'E' {
			return 0, io.EOF
		}
		kind, payload, err := c.next()
		if err != nil {
			return 0, err
		}
		switch kind {
		case 'D':
			c.data = payload
		case 'E':
			c.kind = 'E'
		default:
			return 0, c.bad("frame %q inside a state machine's bytes", kind)
		}
	}
	n := copy(p, c.data)
	c.data = c.data[n:]
	return n, nil
}

// readCheckpoint checks the checkpoint r holds against group, instance and
// the group's machines, and hands each machine its bytes: restore is called
// with the machine and a reader of its bytes; it must read them all or
// return an error. Every frame is checked.
func readCheckpoint(r io.Reader, group, instance uint64, sms []Checkpointer, restore func(sm Checkpointer, r io.Reader) error) (ckptMeta, error) {
	c := &ckptReader{r: bufio.NewReaderSize(r, ckptFrameSize+2*ckptHeader)}
	magic := make([]byte, len(ckptMagic))
	if err := c.full(magic); err != nil {
		return ckptMeta{}, err
	}
	if string(magic) == "PXCKPT01" {
		return ckptMeta{}, c.bad("a checkpoint of an older format (PXCKPT01, without the master version); delete it: this node will fetch a new one or replay its log")
	}
	if string(magic) != ckptMagic {
		return ckptMeta{}, c.bad("not a checkpoint (magic %q)", magic)
	}
	kind, h, err := c.next()
	if err != nil {
		return ckptMeta{}, err
	}
	if kind != 'H' || len(h) < 20 {
		return ckptMeta{}, c.bad("no header")
	}
	g, at, count := binary.BigEndian.Uint64(h), binary.BigEndian.Uint64(h[8:]), binary.BigEndian.Uint32(h[16:])
	if g != group || at != instance || uint64(len(h)) != 20+4*uint64(count) {
		return ckptMeta{}, c.bad("header of group %d instance %d, want group %d instance %d", g, at, group, instance)
	}
	var ids, want []uint32
	for i := range count {
		ids = append(ids, binary.BigEndian.Uint32(h[20+4*i:]))
	}
	for _, sm := range sms {
		want = append(want, sm.SMID())
	}
	if fmt.Sprint(ids) != fmt.Sprint(want) {
		return ckptMeta{}, fmt.Errorf("%w: it holds state machines %v, this node runs %v", ErrBadCheckpoint, ids, want)
	}
	kind, p, err := c.next()
	if err != nil {
		return ckptMeta{}, err
	}
	if kind != 'P' || len(p) < 12 || uint64(len(p)) != 12+24*uint64(binary.BigEndian.Uint32(p)) {
		return ckptMeta{}, c.bad("no proposal marks")
	}
	var meta ckptMeta
	q := p[4:]
	for ; len(q) > 8; q = q[24:] {
		meta.marks = append(meta.marks, propMark{binary.BigEndian.Uint64(q), binary.BigEndian.Uint64(q[8:]), binary.BigEndian.Uint64(q[16:])})
	}
	meta.version = binary.BigEndian.Uint64(q)
	kind, p, err = c.next()
	if err != nil {
		return ckptMeta{}, err
	}
	st := &pb.ConfState{}
	if kind != 'M' || proto.Unmarshal(p, st) != nil {
		return ckptMeta{}, c.bad("no configurations")
	}
	if meta.confs, err = core.ConfsFromPB(st); err != nil {
		return ckptMeta{}, c.bad("configurations: %v", err)
	}
	for _, sm := range sms {
		c.kind, c.data = 0, nil
		if err := restore(sm, c); err != nil {
			// A damaged frame kind (D read as E: a frame's checksum does
			// not cover its kind) reaches the machine as a short stream;
			// the trailer, which covers every byte, tells.
			if bad := c.drain(); bad != nil {
				return ckptMeta{}, fmt.Errorf("%w (state machine %d: %v)", bad, sm.SMID(), err)
			}
			return ckptMeta{}, fmt.Errorf("state machine %d: %w", sm.SMID(), err)
		}
		if _, err := io.Copy(io.Discard, c); err != nil {
			return ckptMeta{}, err
		}
	}
	kind, _, err = c.next()
	if err != nil {
		return ckptMeta{}, err
	}
	if kind != 'Z' {
		return ckptMeta{}, c.bad("frame %q where the trailer belongs", kind)
	}
	return meta, nil
}

// ckptCheck checks a checkpoint's bytes as they stream in, without parsing
// them: at the end, the trailer must match everything before it.
type ckptCheck struct {
	crc  uint32
	size uint64
	tail []byte // the last ckptTrailer bytes seen, not yet in crc
	head []byte // the first bytes: magic and the start of the header
}

// ckptHead is how much of a checkpoint's start names its group and instance.
const ckptHead = len(ckptMagic) + ckptHeader + 16

func (k *ckptCheck) feed(p []byte) {
	if n := ckptHead - len(k.head); n > 0 {
		k.head = append(k.head, p[:min(n, len(p))]...)
	}
	k.tail = append(k.tail, p...)
	if over := len(k.tail) - ckptTrailer; over > 0 {
		k.crc = crc32.Update(k.crc, castagnoli, k.tail[:over])
		k.size += uint64(over)
		k.tail = append(k.tail[:0], k.tail[over:]...)
	}
}

// ok reports whether the bytes fed so far are a whole checkpoint of group
// at instance.
func (k *ckptCheck) ok(group, instance uint64) bool {
	if len(k.tail) != ckptTrailer || k.tail[0] != 'Z' || len(k.head) != ckptHead {
		return false
	}
	h := k.head[len(ckptMagic):]
	if string(k.head[:len(ckptMagic)]) != ckptMagic || h[0] != 'H' ||
		binary.BigEndian.Uint64(h[ckptHeader:]) != group || binary.BigEndian.Uint64(h[ckptHeader+8:]) != instance {
		return false
	}
	p := k.tail[ckptHeader:]
	return binary.BigEndian.Uint32(k.tail[1:]) == 12 &&
		binary.BigEndian.Uint32(k.tail[5:]) == crc32.Checksum(p, castagnoli) &&
		binary.BigEndian.Uint64(p) == k.size && binary.BigEndian.Uint32(p[8:]) == k.crc
}

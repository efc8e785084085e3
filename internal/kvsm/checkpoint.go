package kvsm

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
)

// Checkpoint errors.
var (
	// ErrBadCheckpoint reports a checkpoint stream that is malformed,
	// truncated, or for another group or instance than the one being
	// restored. Errors returned by [Machine.RestoreCheckpoint] for such
	// input wrap it; test with errors.Is.
	ErrBadCheckpoint = errors.New("kvsm: bad checkpoint")
	// ErrCheckpointBusy is returned by [Machine.PrepareCheckpoint] while the
	// group's previous view is still being saved.
	ErrCheckpointBusy = errors.New("kvsm: checkpoint of the group is being saved")
	// ErrBadView is returned by [Machine.SaveCheckpoint] for a view that is
	// not a pending view of that Machine and group: a value PrepareCheckpoint
	// did not return, a view of another group or Machine, a view already
	// saved (or being saved), or one superseded by a later PrepareCheckpoint.
	ErrBadView = errors.New("kvsm: unusable checkpoint view")
)

// Checkpoint stream format (all integers are minimal uvarints unless said
// otherwise):
//
//	header:  "kvsm-ckp" | format version (1) | group | instance | key count
//	records: per key, in strictly increasing byte order of keys:
//	         len(key) | key | exists (1 byte: 0 or 1) | len(value) | value | version
//	trailer: "kvsm-end" | key count | StateDigest (8 bytes, big endian)
//
// A record's exists/value/version encoding is the one [Machine.Digest]
// hashes. Nothing may follow the trailer. The encoding is canonical: a
// state has exactly one checkpoint per group and instance, and restoring a
// checkpoint and saving it again gives the same bytes.
const (
	ckptMagic   = "kvsm-ckp"
	ckptEnd     = "kvsm-end"
	ckptVersion = 1
	// maxFieldLen bounds one key or value in a checkpoint (1 GiB):
	// SaveCheckpoint refuses larger ones, RestoreCheckpoint rejects larger
	// lengths before reading them.
	maxFieldLen = 1 << 30
	// readChunk is the most RestoreCheckpoint allocates for a key or value
	// ahead of the bytes actually read, so a corrupt length cannot make it
	// allocate much more than the stream holds.
	readChunk = 64 << 10
	ioBufSize = 64 << 10
)

type viewState uint8

const (
	viewPending    viewState = iota // returned by PrepareCheckpoint, not yet saved
	viewSaving                      // SaveCheckpoint is streaming it
	viewDone                        // saved (or its save failed); released
	viewSuperseded                  // a later PrepareCheckpoint took its place
)

func (s viewState) String() string {
	switch s {
	case viewPending:
		return "pending"
	case viewSaving:
		return "being saved"
	case viewDone:
		return "already saved"
	default:
		return "superseded by a later PrepareCheckpoint"
	}
}

// checkpointView is the view PrepareCheckpoint returns: the group's base
// map, frozen while the view holds it.
type checkpointView struct {
	m        *Machine
	g        *group
	group    uint64
	instance uint64
	digest   uint64
	kv       map[string]Entry // frozen; nil once the view is done or superseded
	state    viewState        // guarded by m.mu
}

// PrepareCheckpoint returns a view of the state of group as of now, which
// the caller declares to be right after instance executed; the view is
// for [Machine.SaveCheckpoint] and never changes, whatever executes later.
//
// The state is copy-on-write: the view holds the group's map, which stays
// frozen until the view is saved, and meanwhile writes go to an overlay.
// PrepareCheckpoint takes O(1), whatever the size of the state, plus
// folding back into the map what is left of the previous overlay: the keys
// written while the previous view was held, less [drainPerApply] per apply
// since it was released (so usually nothing; amortized, O(1) per write).
//
// A group has at most one outstanding view. If the previous view is still
// being saved, PrepareCheckpoint returns [ErrCheckpointBusy]; if it was
// prepared but its save has not started, the new view supersedes it (saving
// the old one then fails with [ErrBadView]). A view that is never saved
// keeps the overlay in use until the next PrepareCheckpoint or
// [Machine.RestoreCheckpoint] of the group, which is harmless.
func (m *Machine) PrepareCheckpoint(group, instance uint64) (any, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	g := m.groupLocked(group)
	if v := g.view; v != nil {
		if v.state == viewSaving {
			return nil, fmt.Errorf("%w: group %d, instance %d", ErrCheckpointBusy, group, v.instance)
		}
		// Pending: nothing reads its map, so it can be thawed.
		v.state, v.kv = viewSuperseded, nil
		g.view = nil
	}
	g.foldSome(-1)
	v := &checkpointView{
		m:        m,
		g:        g,
		group:    group,
		instance: instance,
		digest:   g.digest,
		kv:       g.base,
		state:    viewPending,
	}
	g.view = v
	return v, nil
}

// SaveCheckpoint writes the view PrepareCheckpoint returned for group to
// w, in the format RestoreCheckpoint reads (keys in sorted order, so equal
// states give equal bytes). It runs concurrently with Execute and other
// calls: it reads the frozen view without holding the Machine's lock. It
// streams through a bufio.Writer; its memory besides that is one slice of
// the keys (for sorting), not a copy of the state. Each view can be saved
// once; the view is released when SaveCheckpoint returns, even on error,
// so a failed save needs a new PrepareCheckpoint.
//
// It returns an error wrapping [ErrBadView] for an unusable view, the
// writer's error if a write fails, and an error if a key or value is
// larger than a checkpoint can hold (1 GiB).
func (m *Machine) SaveCheckpoint(group uint64, view any, w io.Writer) error {
	v, ok := view.(*checkpointView)
	if !ok || v == nil || v.m != m || v.group != group {
		return fmt.Errorf("%w: not a view of this machine's group %d", ErrBadView, group)
	}
	m.mu.Lock()
	if v.state != viewPending {
		st := v.state
		m.mu.Unlock()
		return fmt.Errorf("%w: view of group %d at instance %d is %v", ErrBadView, group, v.instance, st)
	}
	v.state = viewSaving
	kv := v.kv
	m.mu.Unlock()
	defer m.release(v)

	keys := make([]string, 0, len(kv))
	for k := range kv {
		keys = append(keys, k)
	}
	slices.Sort(keys)

	bw := bufio.NewWriterSize(w, ioBufSize)
	buf := make([]byte, 0, 3*binary.MaxVarintLen64+len(ckptMagic))
	buf = append(buf, ckptMagic...)
	buf = binary.AppendUvarint(buf, ckptVersion)
	buf = binary.AppendUvarint(buf, group)
	buf = binary.AppendUvarint(buf, v.instance)
	buf = binary.AppendUvarint(buf, uint64(len(keys)))
	if _, err := bw.Write(buf); err != nil {
		return err
	}
	for _, k := range keys {
		e := kv[k]
		if len(k) > maxFieldLen || len(e.Value) > maxFieldLen {
			return fmt.Errorf("kvsm: checkpoint of group %d: key %.32q or its value exceeds %d bytes", group, k, maxFieldLen)
		}
		buf = binary.AppendUvarint(buf[:0], uint64(len(k)))
		if _, err := bw.Write(buf); err != nil {
			return err
		}
		if _, err := bw.WriteString(k); err != nil {
			return err
		}
		buf = buf[:0]
		if e.Exists {
			buf = append(buf, 1)
		} else {
			buf = append(buf, 0)
		}
		buf = binary.AppendUvarint(buf, uint64(len(e.Value)))
		if _, err := bw.Write(buf); err != nil {
			return err
		}
		if _, err := bw.WriteString(e.Value); err != nil {
			return err
		}
		buf = binary.AppendUvarint(buf[:0], e.Version)
		if _, err := bw.Write(buf); err != nil {
			return err
		}
	}
	buf = append(buf[:0], ckptEnd...)
	buf = binary.AppendUvarint(buf, uint64(len(keys)))
	buf = binary.BigEndian.AppendUint64(buf, v.digest)
	if _, err := bw.Write(buf); err != nil {
		return err
	}
	return bw.Flush()
}

// release ends a view's save: the group's base is no longer frozen (unless
// a restore replaced it meanwhile, in which case the view's map is simply
// dropped).
func (m *Machine) release(v *checkpointView) {
	m.mu.Lock()
	defer m.mu.Unlock()
	v.state, v.kv = viewDone, nil
	if v.g.view == v {
		v.g.view = nil
	}
}

// RestoreCheckpoint replaces the state of group with the checkpoint r holds
// (as SaveCheckpoint wrote it), which must be of group and instance. It
// reads r through a bufio.Reader to its end, builds the new state aside and
// installs it only once the whole stream has decoded and checked out
// (record order, key count and StateDigest), so on error the group's state
// is unchanged. It then sets the group's Stats.LastInstance to instance;
// Stats.Executed, which counts the values this Machine executed, is left
// as it is.
//
// Malformed, truncated or trailing input, or a checkpoint of another group
// or instance, gives an error wrapping [ErrBadCheckpoint]; a read error
// of r other than io.EOF is returned wrapped as is. RestoreCheckpoint never
// panics on bad input and allocates at most about twice the bytes the
// stream actually holds. A view of the group prepared before the restore
// stays valid and still saves the state it was prepared on.
func (m *Machine) RestoreCheckpoint(group, instance uint64, r io.Reader) error {
	kv, digest, err := readCheckpoint(bufio.NewReaderSize(r, ioBufSize), group, instance)
	if err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	g := m.groupLocked(group)
	// A view still holding the old base keeps it: nothing writes it again.
	g.base, g.overlay, g.drain, g.view = kv, nil, nil, nil
	g.digest = digest
	g.stats.LastInstance = instance
	return nil
}

// readCheckpoint decodes a checkpoint stream and returns its state and
// StateDigest.
func readCheckpoint(br *bufio.Reader, group, instance uint64) (map[string]Entry, uint64, error) {
	var scratch [len(ckptMagic)]byte
	if _, err := io.ReadFull(br, scratch[:]); err != nil {
		return nil, 0, readErr(err, "header")
	}
	if string(scratch[:]) != ckptMagic {
		return nil, 0, fmt.Errorf("%w: no kvsm checkpoint header", ErrBadCheckpoint)
	}
	format, err := readUvarint(br, "format version")
	if err != nil {
		return nil, 0, err
	}
	if format != ckptVersion {
		return nil, 0, fmt.Errorf("%w: unknown format version %d", ErrBadCheckpoint, format)
	}
	g, err := readUvarint(br, "group")
	if err != nil {
		return nil, 0, err
	}
	if g != group {
		return nil, 0, fmt.Errorf("%w: checkpoint of group %d, restoring group %d", ErrBadCheckpoint, g, group)
	}
	inst, err := readUvarint(br, "instance")
	if err != nil {
		return nil, 0, err
	}
	if inst != instance {
		return nil, 0, fmt.Errorf("%w: checkpoint at instance %d, restoring instance %d", ErrBadCheckpoint, inst, instance)
	}
	count, err := readUvarint(br, "key count")
	if err != nil {
		return nil, 0, err
	}

	kv := make(map[string]Entry, min(count, 1<<16))
	var digest uint64
	var buf []byte
	var prev string
	for i := uint64(0); i < count; i++ {
		if buf, err = readField(br, buf, "key", "key length"); err != nil {
			return nil, 0, err
		}
		if i > 0 && string(buf) <= prev {
			return nil, 0, fmt.Errorf("%w: key %d (%.32q) out of order", ErrBadCheckpoint, i, buf)
		}
		key := string(buf)
		flag, err := br.ReadByte()
		if err != nil {
			return nil, 0, readErr(err, "exists flag")
		}
		if flag > 1 {
			return nil, 0, fmt.Errorf("%w: key %.32q: exists flag %d", ErrBadCheckpoint, key, flag)
		}
		if buf, err = readField(br, buf, "value", "value length"); err != nil {
			return nil, 0, err
		}
		e := Entry{Value: string(buf), Exists: flag == 1}
		if !e.Exists && e.Value != "" {
			return nil, 0, fmt.Errorf("%w: deleted key %.32q has a value", ErrBadCheckpoint, key)
		}
		if e.Version, err = readUvarint(br, "version"); err != nil {
			return nil, 0, err
		}
		kv[key] = e
		digest += entryHash(key, e)
		prev = key
	}

	if _, err := io.ReadFull(br, scratch[:]); err != nil {
		return nil, 0, readErr(err, "trailer")
	}
	if string(scratch[:]) != ckptEnd {
		return nil, 0, fmt.Errorf("%w: no trailer after %d keys", ErrBadCheckpoint, count)
	}
	n, err := readUvarint(br, "trailer key count")
	if err != nil {
		return nil, 0, err
	}
	if n != count {
		return nil, 0, fmt.Errorf("%w: trailer counts %d keys, header %d", ErrBadCheckpoint, n, count)
	}
	var sum [8]byte
	if _, err := io.ReadFull(br, sum[:]); err != nil {
		return nil, 0, readErr(err, "digest")
	}
	if d := binary.BigEndian.Uint64(sum[:]); d != digest {
		return nil, 0, fmt.Errorf("%w: digest %#x, content hashes to %#x", ErrBadCheckpoint, d, digest)
	}
	switch _, err := br.ReadByte(); {
	case err == nil:
		return nil, 0, fmt.Errorf("%w: data after the trailer", ErrBadCheckpoint)
	case err != io.EOF:
		return nil, 0, readErr(err, "end of stream")
	}
	return kv, digest, nil
}

// readErr turns a read error into the error RestoreCheckpoint returns: the
// end of the stream where more was expected means a truncated checkpoint.
func readErr(err error, what string) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%w: truncated at %s: %w", ErrBadCheckpoint, what, io.ErrUnexpectedEOF)
	}
	return fmt.Errorf("kvsm: reading checkpoint %s: %w", what, err)
}

// readUvarint reads one minimally encoded uvarint.
func readUvarint(br *bufio.Reader, what string) (uint64, error) {
	var x uint64
	for i, shift := 0, uint(0); i < binary.MaxVarintLen64; i, shift = i+1, shift+7 {
		b, err := br.ReadByte()
		if err != nil {
			return 0, readErr(err, what)
		}
		if b < 0x80 {
			if i == binary.MaxVarintLen64-1 && b > 1 {
				break // overflow
			}
			if b == 0 && i > 0 {
				return 0, fmt.Errorf("%w: non-minimal varint for %s", ErrBadCheckpoint, what)
			}
			return x | uint64(b)<<shift, nil
		}
		x |= uint64(b&0x7f) << shift
	}
	return 0, fmt.Errorf("%w: %s overflows uint64", ErrBadCheckpoint, what)
}

// readField reads a uvarint length and that many bytes into buf[:0],
// growing buf by at most readChunk bytes ahead of what was read. what and
// whatLen name the field and its length in errors.
func readField(br *bufio.Reader, buf []byte, what, whatLen string) ([]byte, error) {
	n, err := readUvarint(br, whatLen)
	if err != nil {
		return buf, err
	}
	if n > maxFieldLen {
		return buf, fmt.Errorf("%w: %s length %d exceeds %d", ErrBadCheckpoint, what, n, maxFieldLen)
	}
	buf = buf[:0]
	for len(buf) < int(n) {
		chunk := min(int(n)-len(buf), readChunk)
		buf = slices.Grow(buf, chunk)
		at := len(buf)
		buf = buf[:at+chunk]
		if _, err := io.ReadFull(br, buf[at:]); err != nil {
			return buf, readErr(err, what)
		}
	}
	return buf, nil
}

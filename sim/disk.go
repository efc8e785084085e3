package sim

import (
	"errors"
	"fmt"
	"slices"

	"google.golang.org/protobuf/proto"

	pb "github.com/paxoskit/paxos/core/paxospb"
)

// errCorrupt means a record inside the synced log failed its checksum.
var errCorrupt = errors.New("sim: corrupt record")

// frameHeader is the length and checksum in front of every record.
const frameHeader = 8

// disk is one node's append-only log of records, modelled by size: each
// record occupies frameHeader plus its encoded size in a byte space whose
// first size bytes are written and first durable bytes synced. Bytes past
// durable are lost on a crash, except that a prefix of them may survive (a
// torn write: a record cut short fails its checksum). The bytes themselves
// are not kept: a record written intact reads back intact, and the one
// record the corruption fault damages is kept encoded, with its bit
// flipped.
type disk struct {
	size     int // bytes written
	durable  int // bytes synced
	identity *pb.Identity

	recs []diskRecord // every record, in order
	// slots indexes the entry records by instance, for the checkers.
	slots map[slot][]diskEntry

	bad           error  // corruption open found in the synced prefix
	corruptRecord int    // start of the record with a flipped bit, -1 if none
	corruptBytes  []byte // its encoding, with the bit flipped

	// marks are the clean records, in order; entries below a group's
	// synced mark are removed from recs (cleaned holds how far).
	marks   []diskMark
	cleaned map[uint64]uint64
	// ckpts holds each group's newest committed checkpoint. A commit is
	// atomic and durable (a rename and fsync); an uncommitted checkpoint
	// lives only in its writer, and dies with the process.
	ckpts map[uint64]diskCkpt
	// badCkpt is the group+1 of a checkpoint with a flipped bit (0: none);
	// goodCkpt its bytes before the flip.
	badCkpt  uint64
	goodCkpt []byte
}

// flipCheckpoint corrupts one bit of a committed checkpoint, if there is
// one; it reports whether it did.
func (d *disk) flipCheckpoint(pick, bit int) bool {
	var groups []uint64
	for g := range d.ckpts {
		groups = append(groups, g)
	}
	if len(groups) == 0 {
		return false
	}
	slices.Sort(groups)
	g := groups[pick%len(groups)]
	c := d.ckpts[g]
	if len(c.data) == 0 {
		return false
	}
	d.badCkpt, d.goodCkpt = g+1, c.data
	bad := slices.Clone(c.data)
	bad[bit/8%len(bad)] ^= 1 << (bit % 8)
	d.ckpts[g] = diskCkpt{c.instance, bad}
	return true
}

// repairCheckpoint undoes flipCheckpoint.
func (d *disk) repairCheckpoint() {
	if d.badCkpt != 0 {
		c := d.ckpts[d.badCkpt-1]
		d.ckpts[d.badCkpt-1] = diskCkpt{c.instance, d.goodCkpt}
		d.badCkpt, d.goodCkpt = 0, nil
	}
}

type diskMark struct {
	end          int
	group, below uint64
}

type diskCkpt struct {
	instance uint64
	data     []byte
}

// diskRecord is one record, at bytes [start, end).
type diskRecord struct {
	start, end int
	r          *pb.Record
}

// diskEntry is one entry record, at bytes [start, end).
type diskEntry struct {
	start, end int
	e          *pb.Entry
}

func (d *disk) write(recs []*pb.Record) error {
	for _, r := range recs {
		start := d.size
		d.size += frameHeader + proto.Size(r)
		d.recs = append(d.recs, diskRecord{start, d.size, r})
		if r.CleanBelow != 0 {
			d.marks = append(d.marks, diskMark{d.size, r.Group, r.CleanBelow})
		}
		if e := r.Entry; e != nil {
			if d.slots == nil {
				d.slots = map[slot][]diskEntry{}
			}
			s := slot{r.Group, e.Instance}
			d.slots[s] = append(d.slots[s], diskEntry{start, d.size, e})
		}
	}
	return nil
}

// latest returns the last entry record of (group, instance) that lies
// within the first upto bytes and satisfies ok (nil: any), or nil. A record
// the corruption fault damaged still counts: its node refuses to start
// until the block is restored, so it can neither use nor contradict it.
func (d *disk) latest(group, instance uint64, upto int, ok func(*pb.Entry) bool) *pb.Entry {
	es := d.slots[slot{group, instance}]
	for k := len(es) - 1; k >= 0; k-- {
		if es[k].end <= upto && (ok == nil || ok(es[k].e)) {
			return es[k].e
		}
	}
	return nil
}

// truncate keeps the first n bytes: the records wholly inside them.
func (d *disk) truncate(n int) {
	k := len(d.recs)
	for k > 0 && d.recs[k-1].end > n {
		k--
	}
	clear(d.recs[k:])
	d.recs = d.recs[:k]
	d.size = n
	m := len(d.marks)
	for m > 0 && d.marks[m-1].end > n {
		m--
	}
	d.marks = d.marks[:m]
	for s, es := range d.slots {
		k := len(es)
		for k > 0 && es[k-1].end > n {
			k--
		}
		if k == 0 {
			delete(d.slots, s)
		} else {
			d.slots[s] = es[:k]
		}
	}
}

// crash drops unsynced bytes; keep of them survive (0 for a clean loss).
func (d *disk) crash(keep int) (lost int) {
	lost = d.size - d.durable - keep
	end := d.durable + keep
	k := len(d.recs)
	for k > 0 && d.recs[k-1].end > end {
		k--
	}
	torn := 0
	if k < len(d.recs) && d.recs[k].start < end {
		torn = end - d.recs[k].start // a record cut short stays, as garbage
	}
	d.truncate(end - torn)
	d.size = end
	return lost
}

// open scans the log the way a restarting node would. The disk keeps the
// length of its synced prefix apart from the log (as a superblock written
// by each sync would), so a record that fails its checksum is told apart:
// past the synced prefix it is a torn write, and the log is cut there;
// inside it, it is corruption, which Load reports, naming the record. With
// useCorrupt (a canary) checksums inside the synced prefix are ignored.
func (d *disk) open(useCorrupt bool) (torn bool) {
	d.bad = nil
	if d.corruptRecord >= 0 && !useCorrupt {
		for k, rec := range d.recs {
			if rec.start == d.corruptRecord {
				d.bad = fmt.Errorf("%w: record %d at offset %d (%d bytes) fails its checksum", errCorrupt, k, rec.start, rec.end-rec.start-frameHeader)
			}
		}
	}
	end := 0
	if n := len(d.recs); n > 0 {
		end = d.recs[n-1].end
	}
	torn = end < d.size // the bytes of a record cut short
	d.size = end
	d.durable = end
	return torn
}

// flip corrupts one bit of the synced record that starts at off.
func (d *disk) flip(off, bit int) {
	for _, rec := range d.recs {
		if rec.start != off {
			continue
		}
		b, err := proto.Marshal(rec.r)
		if err != nil || len(b) == 0 {
			return
		}
		b[bit/8%len(b)] ^= 1 << (bit % 8)
		d.corruptRecord, d.corruptBytes = off, b
		return
	}
}

// repair undoes flip, as restoring the damaged block from a backup would.
func (d *disk) repair() {
	d.corruptRecord, d.corruptBytes = -1, nil
}

// records returns the start offsets of the synced records, the entry
// records only (entries), the hard states only (hardStates), or all.
func (d *disk) records(entries, hardStates bool) []int {
	var offs []int
	for _, rec := range d.recs {
		if rec.end > d.durable {
			break
		}
		isEntry := rec.r.Entry != nil
		if entries && !isEntry || hardStates && isEntry {
			continue
		}
		offs = append(offs, rec.start)
	}
	return offs
}

// load returns the records of group, in write order, as env.Storage.Load
// does: hard states, the clean record with the highest mark, and the
// entries at or above from and the mark. A record with a flipped bit is
// decoded from its damaged bytes: only the canary that skips checksums
// gets that far.
func (d *disk) load(group, from uint64) ([]*pb.Record, error) {
	if d.bad != nil {
		return nil, d.bad
	}
	var all []*pb.Record
	mark := uint64(0)
	for _, rec := range d.recs {
		r := rec.r
		if rec.start == d.corruptRecord {
			r = &pb.Record{}
			if err := proto.Unmarshal(d.corruptBytes, r); err != nil {
				return nil, fmt.Errorf("%w at offset %d: %w", errCorrupt, rec.start, err)
			}
		}
		if r.Group == group {
			all = append(all, r)
			mark = max(mark, r.CleanBelow)
		}
	}
	out := all[:0]
	for _, r := range all {
		switch {
		case r.CleanBelow != 0 && r.CleanBelow < mark:
		case r.Entry != nil && (r.Entry.Instance < from || r.Entry.Instance < mark):
		default:
			out = append(out, r)
		}
	}
	return out, nil
}

// mark returns the group's highest clean mark among the first upto bytes.
func (d *disk) mark(group uint64, upto int) uint64 {
	m := uint64(0)
	for _, k := range d.marks {
		if k.end <= upto && k.group == group {
			m = max(m, k.below)
		}
	}
	return m
}

// read returns the latest written entry of each instance from from on, as
// env.Storage.Read does.
func (d *disk) read(group, from uint64, maxEntries, maxBytes int) []*pb.Entry {
	var out []*pb.Entry
	size := 0
	if from < d.mark(group, d.size) {
		return nil
	}
	for i := from; len(out) < maxEntries && size < maxBytes; i++ {
		e := d.latest(group, i, d.size, nil)
		if e == nil {
			break
		}
		out = append(out, e)
		size += len(e.Value.GetData())
	}
	return out
}

// clean removes the entries below every synced clean mark, as a storage
// that deletes behind its marks would.
func (d *disk) clean() {
	for _, k := range d.marks {
		if k.end > d.durable || k.below <= d.cleaned[k.group] {
			continue
		}
		if d.cleaned == nil {
			d.cleaned = map[uint64]uint64{}
		}
		d.cleaned[k.group] = k.below
		recs := d.recs[:0]
		for j, rec := range d.recs {
			// The last record stays: open finds the log's end by it.
			if e := rec.r.Entry; e == nil || rec.r.Group != k.group || e.Instance >= k.below || rec.start == d.corruptRecord || j == len(d.recs)-1 {
				recs = append(recs, rec)
			}
		}
		clear(d.recs[len(recs):])
		d.recs = recs
		for s := range d.slots {
			if s.group == k.group && s.instance < k.below {
				delete(d.slots, s)
			}
		}
	}
}

// liveBytes is the disk space the records take.
func (d *disk) liveBytes() int {
	n := 0
	for _, rec := range d.recs {
		n += rec.end - rec.start
	}
	for _, c := range d.ckpts {
		n += len(c.data)
	}
	return n
}

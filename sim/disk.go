package sim

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"

	"google.golang.org/protobuf/proto"

	pb "github.com/paxoskit/paxos/core/paxospb"
)

// errCorrupt means a record in the middle of the log failed its checksum.
var errCorrupt = errors.New("sim: corrupt record")

// disk is one node's append-only record log. Bytes past durable are lost on
// a crash, except that a prefix of them may survive (a torn write).
type disk struct {
	data     []byte
	durable  int
	identity *pb.Identity // written durably, apart from the log

	recs []diskRecord // every record, in order
	// slots indexes the entry records by instance, for the checkers.
	slots map[slot][]diskEntry

	bad           error // corruption open found in the synced prefix
	corruptAt     int   // offset of a flipped byte, -1 if none (set by the corruption fault)
	corruptBit    byte
	corruptRecord int // start of the record holding it
}

// diskRecord is one record: data[start:end], decoded.
type diskRecord struct {
	start, end int
	r          *pb.Record
}

// diskEntry is one entry record: data[start:end].
type diskEntry struct {
	start, end int
	e          *pb.Entry
}

// latest returns the last entry record of (group, instance) that lies
// within data[:upto] and satisfies ok (nil: any), or nil. A record the
// corruption fault damaged still counts: its node refuses to start until
// the block is restored, so it can neither use nor contradict it.
func (d *disk) latest(group, instance uint64, upto int, ok func(*pb.Entry) bool) *pb.Entry {
	es := d.slots[slot{group, instance}]
	for k := len(es) - 1; k >= 0; k-- {
		if es[k].end <= upto && (ok == nil || ok(es[k].e)) {
			return es[k].e
		}
	}
	return nil
}

// truncate cuts data to n bytes and forgets the entries past it.
func (d *disk) truncate(n int) {
	d.data = d.data[:n]
	k := len(d.recs)
	for k > 0 && d.recs[k-1].end > n {
		k--
	}
	clear(d.recs[k:])
	d.recs = d.recs[:k]
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

const frameHeader = 8 // length u32, crc32 u32

func (d *disk) write(recs []*pb.Record) error {
	for _, r := range recs {
		start := len(d.data)
		var hdr [frameHeader]byte
		data, err := proto.MarshalOptions{}.MarshalAppend(append(d.data, hdr[:]...), r)
		if err != nil {
			d.data = d.data[:start]
			return err
		}
		payload := data[start+frameHeader:]
		binary.LittleEndian.PutUint32(data[start:], uint32(len(payload)))
		binary.LittleEndian.PutUint32(data[start+4:], crc32.ChecksumIEEE(payload))
		d.data = data
		d.recs = append(d.recs, diskRecord{start, len(data), r})
		if e := r.Entry; e != nil {
			if d.slots == nil {
				d.slots = map[slot][]diskEntry{}
			}
			s := slot{r.Group, e.Instance}
			d.slots[s] = append(d.slots[s], diskEntry{start, len(d.data), e})
		}
	}
	return nil
}

// crash drops unsynced bytes; keep of them survive (0 for a clean loss).
func (d *disk) crash(keep int) (lost int) {
	lost = len(d.data) - d.durable - keep
	d.truncate(d.durable + keep)
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
	off := 0
	for k := 0; off < len(d.data); k++ {
		rest := len(d.data) - off
		if rest < frameHeader {
			break
		}
		n := int(binary.LittleEndian.Uint32(d.data[off:]))
		end := off + frameHeader + n
		if rest < frameHeader+n {
			if off < d.durable && d.bad == nil {
				d.bad = fmt.Errorf("%w: record %d at offset %d claims %d bytes past the end of the synced log", errCorrupt, k, off, n)
			}
			break
		}
		sum := binary.LittleEndian.Uint32(d.data[off+4:])
		if crc32.ChecksumIEEE(d.data[off+frameHeader:end]) != sum {
			if end > d.durable {
				break // torn: written but never synced
			}
			if d.bad == nil && !useCorrupt {
				d.bad = fmt.Errorf("%w: record %d at offset %d (%d bytes) fails its checksum", errCorrupt, k, off, n)
			}
		}
		off = end
	}
	if off < len(d.data) {
		d.truncate(off)
		torn = true
	}
	d.durable = len(d.data)
	return torn
}

// flip corrupts one bit of the payload of the record that starts at off.
func (d *disk) flip(off, bit int) {
	n := max(int(binary.LittleEndian.Uint32(d.data[off:])), 1)
	at := off + frameHeader + bit/8%n
	d.data[at] ^= 1 << (bit % 8)
	d.corruptAt, d.corruptBit = at, 1<<(bit%8)
}

// repair undoes flip, as restoring the damaged block from a backup would.
func (d *disk) repair() {
	if d.corruptAt >= 0 {
		d.data[d.corruptAt] ^= d.corruptBit
	}
	d.corruptAt, d.corruptBit = -1, 0
}

// recordsOf returns those of offs whose record is an entry (entries) or a
// hard state (!entries).
func (d *disk) recordsOf(offs []int, entries bool) []int {
	var out []int
	for _, off := range offs {
		n := int(binary.LittleEndian.Uint32(d.data[off:]))
		r := &pb.Record{}
		if proto.Unmarshal(d.data[off+frameHeader:off+frameHeader+n], r) == nil && (r.Entry != nil) == entries {
			out = append(out, off)
		}
	}
	return out
}

// records returns the start offsets of the synced records.
func (d *disk) records() []int {
	var offs []int
	for off := 0; off+frameHeader <= d.durable; {
		offs = append(offs, off)
		off += frameHeader + int(binary.LittleEndian.Uint32(d.data[off:]))
	}
	return offs
}

// load returns the records of group, in write order.
// Records are served from the decoded copies kept at write time (the
// runtime never changes a record it wrote), except one holding a flipped
// bit, which is decoded from its bytes: only the canary that skips
// checksums gets that far.
func (d *disk) load(group uint64) ([]*pb.Record, error) {
	if d.bad != nil {
		return nil, d.bad
	}
	var out []*pb.Record
	for _, rec := range d.recs {
		r := rec.r
		if d.corruptAt >= rec.start && d.corruptAt < rec.end {
			r = &pb.Record{}
			if err := proto.Unmarshal(d.data[rec.start+frameHeader:rec.end], r); err != nil {
				return nil, fmt.Errorf("%w at offset %d: %w", errCorrupt, rec.start, err)
			}
		}
		if r.Group == group {
			out = append(out, r)
		}
	}
	return out, nil
}

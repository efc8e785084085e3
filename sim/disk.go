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

	// slots indexes the entry records by instance, for the checkers.
	slots map[slot][]diskEntry
}

// diskEntry is one entry record: data[start:end].
type diskEntry struct {
	start, end int
	e          *pb.Entry
}

// latest returns the last entry record of (group, instance) that lies
// within data[:upto] and satisfies ok (nil: any), or nil.
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
		payload, err := proto.Marshal(r)
		if err != nil {
			return err
		}
		var hdr [frameHeader]byte
		binary.LittleEndian.PutUint32(hdr[0:], uint32(len(payload)))
		binary.LittleEndian.PutUint32(hdr[4:], crc32.ChecksumIEEE(payload))
		start := len(d.data)
		d.data = append(d.data, hdr[:]...)
		d.data = append(d.data, payload...)
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

// open scans the log the way a restarting node would: a torn last record
// is cut off, a bad record followed by more data is corruption.
func (d *disk) open() (torn bool, err error) {
	off := 0
	for off < len(d.data) {
		rest := len(d.data) - off
		if rest < frameHeader {
			break
		}
		n := int(binary.LittleEndian.Uint32(d.data[off:]))
		if rest < frameHeader+n {
			break
		}
		sum := binary.LittleEndian.Uint32(d.data[off+4:])
		if crc32.ChecksumIEEE(d.data[off+frameHeader:off+frameHeader+n]) != sum {
			if off+frameHeader+n == len(d.data) {
				break
			}
			return false, fmt.Errorf("%w at offset %d", errCorrupt, off)
		}
		off += frameHeader + n
	}
	if off < len(d.data) {
		d.truncate(off)
		torn = true
	}
	d.durable = len(d.data)
	return torn, nil
}

// load returns the records of group, in write order.
func (d *disk) load(group uint64) ([]*pb.Record, error) {
	var out []*pb.Record
	for off := 0; off+frameHeader <= len(d.data); {
		n := int(binary.LittleEndian.Uint32(d.data[off:]))
		r := &pb.Record{}
		if err := proto.Unmarshal(d.data[off+frameHeader:off+frameHeader+n], r); err != nil {
			return nil, fmt.Errorf("%w at offset %d: %w", errCorrupt, off, err)
		}
		if r.Group == group {
			out = append(out, r)
		}
		off += frameHeader + n
	}
	return out, nil
}

// Package storage is the production implementation of env.Storage: a
// goleveldb database holding, per group, the latest HardState, the clean
// mark and the latest Entry of every instance, and the node's Identity.
//
// # Layout
//
// Keys have a fixed binary layout:
//
//	'h' group(u64 BE)                  -> the group's HardState
//	'c' group(u64 BE)                  -> the group's clean mark (u64 BE)
//	'e' group(u64 BE) instance(u64 BE) -> the entry of that instance
//	'i'                                -> the node's Identity
//	's'                                -> empty; see syncKey
//
// so a prefix scan of 'e'+group yields a group's entries in instance order.
// A value is the CRC-32 (Castagnoli, big-endian) of the protobuf bytes of the
// inner message (HardState, Entry or Identity, not the Record; for a clean
// mark, of its 8 bytes), then those bytes.
//
// A KV store in which the latest record per key wins is equivalent, for the
// core, to the simulator's log: core.New applies a group's records in order,
// later records of an instance replace earlier ones, and a chosen entry is
// final.
//
// # Group commit
//
// One goroutine owns all writes. Write and Sync only append to a queue; the
// goroutine repeatedly takes everything queued, puts all of its records into
// one leveldb batch and writes it, with an fsync if a Sync was among the
// taken operations, then calls those Syncs' callbacks in order. While one
// fsync runs, the Writes and Syncs of many Readies and groups pile up and
// share the next one.
//
// # Cleaning
//
// A clean record (Record.clean_below) raises the group's clean mark; the
// stored mark only ever grows. Once the batch holding a new mark has been
// written, the writer goroutine deletes the group's entries below it,
// gradually: at most cleanChunk keys per batch, added to the batches it
// writes anyway and, when its queue is empty, in batches of deletes only
// (not fsynced), always taking queued Writes and Syncs first. Batches reach
// the journal in order, so no delete can survive a crash that loses the
// mark. At Open the goroutine resumes, for every group with a mark, the
// deletes a crash or Close interrupted: it seeks the group's entries below
// the mark, which costs one seek per group once they are gone. Load and
// Read read the mark and the entries from one snapshot and never return an
// entry below the mark; the writer drops entries below the mark it is
// given after the mark.
//
// Deleted keys leave tombstones, and goleveldb reclaims the space of the
// deleted entries only when a compaction reaches them, which with this
// store's options may take hundreds of MiB of writes. So once cleaning has
// deleted compactAfter bytes, a compactor goroutine compacts the cleaned
// ranges (db.CompactRange), off the write path, one at a time and at most
// every compactInterval. Measured by TestCleanDiskUsage (cleaning_test.go,
// where the numbers are): 200,000 entries of 1 KiB, cleaned behind the
// head keeping 10,000, take 209 MiB on disk without it and 15..55 MiB with
// it.
package storage

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"log/slog"
	"maps"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/syndtr/goleveldb/leveldb"
	lerrors "github.com/syndtr/goleveldb/leveldb/errors"
	"github.com/syndtr/goleveldb/leveldb/opt"
	lstorage "github.com/syndtr/goleveldb/leveldb/storage"
	"github.com/syndtr/goleveldb/leveldb/util"
	"google.golang.org/protobuf/proto"

	pb "github.com/paxoskit/paxos/core/paxospb"
)

// ErrCorrupt means a stored record failed its checksum or could not be
// decoded. Load and Read wrap it with the database directory, the group and
// the instance (or "hard state", or "clean mark").
var ErrCorrupt = errors.New("storage: corrupt record")

// ErrClosed is returned by operations on a closed Storage.
var ErrClosed = errors.New("storage: closed")

// Options configure Open.
type Options struct {
	// Dir is the directory of the goleveldb database; it is created if
	// missing.
	Dir string
	// Sync makes Sync fsync. When false, Sync only orders writes: records
	// survive a process crash but not a machine crash. Meant for benchmarks
	// and tests; callers should default it to true.
	Sync bool
	// Logger receives diagnostics; nil discards them.
	Logger *slog.Logger

	// writeBuffer overrides the memtable size (tests use it to force
	// journal rotations).
	writeBuffer int
	// compactBytes overrides compactAfter; negative disables compaction
	// (for measurements).
	compactBytes int64
}

// defaultWriteBuffer is the goleveldb memtable (and so journal file) size.
// The default 4 MiB is sized for mixed read/write workloads; this store is
// write-mostly (read by Load at startup and by Read, mostly of recent
// entries that are still in the memtable), so a larger memtable
// means fewer journal rotations and level-0 flushes on the write path, at
// the price of up to 16 MiB of journal to replay on Open.
const defaultWriteBuffer = 16 << 20

// cleanChunk and cleanChunkBytes bound the entries one batch deletes: at
// most cleanChunk keys (a seek for a group counts as one), and it stops
// once the keys and values it read reach cleanChunkBytes. Reading the
// entries to delete is the cost (goleveldb has no range delete): with
// entries of 1 KiB, reading 1,000 of them took up to 2 ms on the
// development machine (an SSD-backed VM), added to the latency of the
// batch they rode on, and 256 KiB up to about 1 ms.
const (
	cleanChunk      = 1000
	cleanChunkBytes = 256 << 10
)

// compactAfter is how many bytes of entries (keys and values) cleaning
// deletes before it asks for the cleaned ranges to be compacted. goleveldb
// drops deleted data and its tombstones only when a compaction reaches
// them, and with this store's few large level-0 tables that may take
// hundreds of MiB of writes (see TestCleanDiskUsage): compacting the
// cleaned ranges keeps disk use near the live data plus this much.
const compactAfter = 32 << 20

// compactInterval is the least time between the starts of two range
// compactions: each one flushes the memtable (its tombstones overlap the
// range) and occupies goleveldb's table compaction goroutine.
const compactInterval = 250 * time.Millisecond

// Stats are cumulative counters of a Storage.
type Stats struct {
	Syncs    uint64 // batch writes that were fsynced
	Batches  uint64 // batch writes (including batches of deletes only)
	Records  uint64 // records written
	Bytes    uint64 // key and value bytes written
	Deleted  uint64 // entry keys deleted below clean marks
	Compacts uint64 // range compactions of cleaned entries
}

// Storage is a node's durable record store, shared by its groups. It
// implements env.Storage and is safe for concurrent use.
type Storage struct {
	opts Options
	log  *slog.Logger
	stor *journalSyncStorage
	db   *leveldb.DB

	mu      sync.Mutex
	cond    *sync.Cond // signals the goroutine: queue non-empty or closing
	queue   []op
	spare   []op
	closing bool
	failed  error          // sticky write failure; set by the goroutine
	loads   sync.WaitGroup // Loads, Reads and identity accesses in flight; Close waits for them

	// badMarks holds the groups whose stored clean mark is corrupt, found
	// at Open; read-only afterwards. Writing a clean record for such a
	// group fails: the writer cannot tell whether it would lower the mark.
	badMarks map[uint64]error

	stopped   chan struct{}
	closeOnce sync.Once
	closeErr  error

	// Owned by the goroutine.
	batch   leveldb.Batch
	dirty   bool                   // records written without fsync since the last fsync
	marks   map[uint64]*groupClean // groups with a clean mark
	pending []uint64               // groups with entries to delete, oldest first
	steps   []cleanStep
	cleaned int64 // bytes deleted since the last compaction request

	// The compactor goroutine compacts the ranges in compactReq, the
	// writer's requests (group -> instance below which all is cleaned),
	// merged until it takes them.
	compactMu   sync.Mutex
	compactReq  map[uint64]compactRange
	compactWake chan struct{} // cap 1
	compactStop chan struct{} // closed by Close
	compactDone chan struct{} // closed when the compactor has returned

	syncs, batches, records, bytes, deleted, compacts atomic.Uint64
}

// groupClean is the writer goroutine's view of a group's clean mark.
type groupClean struct {
	mark    uint64 // highest mark put in a batch
	written uint64 // highest mark in a batch written to the database: deletes stop there
	done    uint64 // no entry below done is left to delete
	queued  bool   // in Storage.pending
	// compacted is the done of the group's last compaction request: the
	// entries below it were deleted and their range compacted.
	compacted uint64
}

// compactRange is a group's range of entries to compact: [from, below).
type compactRange struct{ from, below uint64 }

// cleanStep is the progress of deleting one group's entries in a batch,
// applied once the batch is written.
type cleanStep struct {
	group   uint64
	done    uint64 // the group's new groupClean.done
	deleted int
	bytes   int  // keys and values deleted
	drop    bool // the scan failed: stop cleaning the group until its mark moves
}

// op is one queued Write, Sync, or barrier of a Load or Read.
type op struct {
	buf     []byte  // keys and values of a Write, back to back
	kvs     []kvIdx // offsets into buf
	done    func(error)
	barrier chan struct{}
}

type kvIdx struct{ key, val, end int } // buf[key:val] is the key, buf[val:end] the value

// Open opens (creating if needed) the database in opts.Dir and starts its
// writer goroutine. It fails if the directory is unusable or locked by
// another process (or another Storage of this one).
func Open(opts Options) (*Storage, error) {
	if opts.Dir == "" {
		return nil, errors.New("storage: open: Options.Dir is empty")
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	fs, err := lstorage.OpenFile(opts.Dir, false)
	if err != nil {
		return nil, fmt.Errorf("storage: open %s: %w", opts.Dir, err)
	}
	stor := &journalSyncStorage{Storage: fs, dir: opts.Dir, sync: opts.Sync, log: logger}
	wb := opts.writeBuffer
	if wb <= 0 {
		wb = defaultWriteBuffer
	}
	db, err := leveldb.Open(stor, &opt.Options{
		WriteBuffer: wb,
		// Values are small protobufs with little redundancy, written once
		// and read back only at startup: snappy would cost CPU on every
		// flush and compaction for little space. (The journal, which is on
		// the latency path, is never compressed anyway.)
		Compression: opt.NoCompression,
		// Only Storage writes, from one goroutine: goleveldb's own write
		// merging would find nothing to merge.
		NoWriteMerge: true,
		// The store is a log: written once, read back at startup, keys
		// mostly increasing. Compaction rewrites values for nothing here,
		// so let more level-0 tables pile up before compacting or
		// throttling, and make tables larger.
		CompactionL0Trigger:    16,
		WriteL0SlowdownTrigger: 32,
		WriteL0PauseTrigger:    48,
		CompactionTableSize:    16 << 20,
		CompactionTotalSize:    256 << 20,
	})
	if err != nil {
		fs.Close()
		return nil, fmt.Errorf("storage: open %s: %w", opts.Dir, err)
	}
	s := &Storage{
		opts:     opts,
		log:      logger,
		stor:     stor,
		db:       db,
		stopped:  make(chan struct{}),
		badMarks: map[uint64]error{},
		marks:    map[uint64]*groupClean{},
	}
	if err := s.loadMarks(); err != nil {
		db.Close()
		stor.Close()
		return nil, err
	}
	s.cond = sync.NewCond(&s.mu)
	s.compactWake = make(chan struct{}, 1)
	s.compactStop = make(chan struct{})
	s.compactDone = make(chan struct{})
	logger.Debug("storage opened", "dir", opts.Dir, "sync", opts.Sync, "clean_marks", len(s.marks), "corrupt_clean_marks", len(s.badMarks))
	go s.run()
	go s.compactor()
	return s, nil
}

// loadMarks reads every group's clean mark (one key per group) and queues
// the groups for cleaning: a crash or Close may have interrupted the
// deletes below their marks. Finding out whether any entry is left costs
// one seek per group, done lazily by the writer goroutine.
func (s *Storage) loadMarks() error {
	it := s.db.NewIterator(util.BytesPrefix([]byte{'c'}), nil)
	defer it.Release()
	for it.Next() {
		k := it.Key()
		if len(k) != 9 {
			s.log.Error("storage: ignoring clean mark key of bad length", "dir", s.opts.Dir, "key", fmt.Sprintf("%x", k))
			continue
		}
		g := binary.BigEndian.Uint64(k[1:])
		m, err := decodeMark(it.Value())
		if err != nil {
			err = fmt.Errorf("%w: %s: group %d, clean mark: %v", ErrCorrupt, s.opts.Dir, g, err)
			s.log.Error("storage: corrupt clean mark", "dir", s.opts.Dir, "group", g, "err", err)
			s.badMarks[g] = err
			continue
		}
		s.marks[g] = &groupClean{mark: m, written: m, queued: true}
		s.pending = append(s.pending, g)
	}
	if err := it.Error(); err != nil {
		return fmt.Errorf("storage: open %s: read clean marks: %w", s.opts.Dir, err)
	}
	return nil
}

func hardStateKey(group uint64) []byte {
	k := make([]byte, 9)
	k[0] = 'h'
	binary.BigEndian.PutUint64(k[1:], group)
	return k
}

func cleanKey(group uint64) []byte {
	k := make([]byte, 9)
	k[0] = 'c'
	binary.BigEndian.PutUint64(k[1:], group)
	return k
}

func entryPrefix(group uint64) []byte {
	k := make([]byte, 9)
	k[0] = 'e'
	binary.BigEndian.PutUint64(k[1:], group)
	return k
}

func entryKey(group, instance uint64) []byte {
	k := make([]byte, 17)
	k[0] = 'e'
	binary.BigEndian.PutUint64(k[1:], group)
	binary.BigEndian.PutUint64(k[9:], instance)
	return k
}

// keyInstance returns the instance of an entry key. A key that is too
// short (possible only on a corrupt database) reads as if zero-padded.
func keyInstance(k []byte) uint64 {
	var b [8]byte
	if len(k) > 9 {
		copy(b[:], k[9:])
	}
	return binary.BigEndian.Uint64(b[:])
}

// identityKey holds the node's Identity. Its first byte is none of 'h',
// 'c' and 'e', so no group's key can match it.
var identityKey = []byte{'i'}

// syncKey is written (with an empty value) when a Sync must fsync records
// written earlier without one but has no records of its own: goleveldb
// ignores empty batches.
var syncKey = []byte{'s'}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// encodeValue frames a marshalled message: crc32c(msg) then msg.
func encodeValue(msg []byte) []byte {
	v := make([]byte, 4+len(msg))
	binary.BigEndian.PutUint32(v, crc32.Checksum(msg, castagnoli))
	copy(v[4:], msg)
	return v
}

// decodeValue checks a value's frame and unmarshals it into m.
func decodeValue(v []byte, m proto.Message) error {
	if len(v) < 4 {
		return fmt.Errorf("value of %d bytes is shorter than its checksum", len(v))
	}
	want := binary.BigEndian.Uint32(v)
	if got := crc32.Checksum(v[4:], castagnoli); got != want {
		return fmt.Errorf("checksum mismatch: stored %#08x, computed %#08x", want, got)
	}
	if err := proto.Unmarshal(v[4:], m); err != nil {
		return fmt.Errorf("unmarshal: %v", err)
	}
	return nil
}

// decodeMark checks a clean mark value's frame and returns the mark.
func decodeMark(v []byte) (uint64, error) {
	if len(v) != 4+8 {
		return 0, fmt.Errorf("value of %d bytes, want 12", len(v))
	}
	want := binary.BigEndian.Uint32(v)
	if got := crc32.Checksum(v[4:], castagnoli); got != want {
		return 0, fmt.Errorf("checksum mismatch: stored %#08x, computed %#08x", want, got)
	}
	return binary.BigEndian.Uint64(v[4:]), nil
}

func validate(r *pb.Record) error {
	if r == nil {
		return errors.New("nil record")
	}
	n := 0
	if r.HardState != nil {
		n++
	}
	if r.Entry != nil {
		n++
	}
	if r.CleanBelow != 0 {
		n++
	}
	switch {
	case n == 0:
		return fmt.Errorf("record of group %d has none of hard_state, entry and clean_below", r.Group)
	case n > 1:
		return fmt.Errorf("record of group %d has more than one of hard_state, entry and clean_below", r.Group)
	case r.Entry != nil && r.Entry.Instance == 0:
		return fmt.Errorf("entry of group %d has instance 0", r.Group)
	}
	return nil
}

// Write queues recs to be written, in order, after everything queued
// before; it does not wait for IO. The records are encoded before Write
// returns, so the caller may reuse them. Write fails, writing nothing, if a
// record is invalid (nil, not exactly one of hard_state, entry and
// clean_below set, or an entry of instance 0), if a clean record's group
// has a corrupt stored mark (an error wrapping ErrCorrupt), if the Storage
// is closed (ErrClosed), or if an earlier batch write failed (that error).
//
// A clean record whose mark is not above the group's current one changes
// nothing (the mark only grows), and neither does an entry below the mark
// of a clean record written before it (Load and Read would not return it).
func (s *Storage) Write(recs []*pb.Record) error {
	var o op
	o.kvs = make([]kvIdx, 0, len(recs))
	size := 0
	for i, r := range recs {
		if err := validate(r); err != nil {
			return fmt.Errorf("storage: write: record %d: %w", i, err)
		}
		if r.CleanBelow != 0 {
			if err := s.badMarks[r.Group]; err != nil {
				return fmt.Errorf("storage: write: record %d: cannot raise the clean mark: %w", i, err)
			}
		}
		size += 1 + 16 + 4 + 8 + proto.Size(r) // key, checksum and an upper bound of the value
	}
	// One buffer: growing it would copy large values again. Buffers are
	// reused: a fresh large one costs zeroing and page faults per byte.
	o.buf = getBuf(size)
	for i, r := range recs {
		kv := kvIdx{key: len(o.buf)}
		var msg proto.Message
		switch {
		case r.HardState != nil:
			o.buf = append(o.buf, hardStateKey(r.Group)...)
			msg = r.HardState
		case r.Entry != nil:
			o.buf = append(o.buf, entryKey(r.Group, r.Entry.Instance)...)
			msg = r.Entry
		default:
			o.buf = append(o.buf, cleanKey(r.Group)...)
		}
		kv.val = len(o.buf)
		o.buf = append(o.buf, 0, 0, 0, 0)
		if msg != nil {
			var err error
			o.buf, err = proto.MarshalOptions{}.MarshalAppend(o.buf, msg)
			if err != nil {
				return fmt.Errorf("storage: write: record %d: marshal: %w", i, err)
			}
		} else {
			o.buf = binary.BigEndian.AppendUint64(o.buf, r.CleanBelow)
		}
		kv.end = len(o.buf)
		binary.BigEndian.PutUint32(o.buf[kv.val:], crc32.Checksum(o.buf[kv.val+4:kv.end], castagnoli))
		o.kvs = append(o.kvs, kv)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.usableLocked(); err != nil {
		return err
	}
	if len(o.kvs) > 0 {
		s.queue = append(s.queue, o)
		s.cond.Signal()
	}
	return nil
}

// Sync calls done once every record written before the call is durable
// (fsynced if Options.Sync), or with the error that prevented it. It returns
// at once. done runs on the storage's goroutine, never the caller's: it must
// not block for long (it delays all later writes) and must not call Close
// or Load (they wait for that goroutine); callers re-post it to their own
// loop. The done callbacks of successive
// Syncs run in call order. On a closed Storage done gets ErrClosed, on a
// goroutine of its own.
func (s *Storage) Sync(done func(error)) {
	if done == nil {
		done = func(error) {}
	}
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		go done(ErrClosed)
		return
	}
	s.queue = append(s.queue, op{done: done})
	s.cond.Signal()
	s.mu.Unlock()
}

// barrier queues a barrier behind everything written so far and registers
// a database access that Close waits for. On success the caller waits on
// the returned channel, then must call s.loads.Done.
func (s *Storage) barrier() (chan struct{}, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return nil, ErrClosed
	}
	barrier := make(chan struct{})
	s.queue = append(s.queue, op{barrier: barrier})
	s.cond.Signal()
	s.loads.Add(1)
	return barrier, nil
}

// failure returns the sticky write failure, if any.
func (s *Storage) failure() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.failed
}

// Load returns the group's records: its HardState record (if any), then its
// clean record (Record.CleanBelow set to the group's mark, if it has one),
// then its entries at instances at or above both from and the mark, in
// instance order. It first waits until everything written before the call
// has reached the database (not necessarily the disk). Every checksum is
// verified; a bad record fails Load with an error wrapping ErrCorrupt that
// names the directory, the group and the instance (or "hard state", or
// "clean mark").
func (s *Storage) Load(group, from uint64) ([]*pb.Record, error) {
	barrier, err := s.barrier()
	if err != nil {
		return nil, err
	}
	defer s.loads.Done()
	<-barrier
	if err := s.failure(); err != nil {
		return nil, err
	}
	snap, err := s.db.GetSnapshot()
	if err != nil {
		return nil, fmt.Errorf("storage: %s: load group %d: %w", s.opts.Dir, group, err)
	}
	defer snap.Release()

	var out []*pb.Record
	v, err := snap.Get(hardStateKey(group), nil)
	switch {
	case err == nil:
		hs := &pb.HardState{}
		if err := decodeValue(v, hs); err != nil {
			return nil, fmt.Errorf("%w: %s: group %d, hard state: %v", ErrCorrupt, s.opts.Dir, group, err)
		}
		out = append(out, &pb.Record{Group: group, HardState: hs})
	case errors.Is(err, leveldb.ErrNotFound):
	default:
		return nil, s.readErr(err, "load", group, "hard state")
	}
	mark, err := s.mark(snap, "load", group)
	if err != nil {
		return nil, err
	}
	if mark > 0 {
		out = append(out, &pb.Record{Group: group, CleanBelow: mark})
	}
	err = s.scan(snap, "load", group, max(from, mark), false, func(e *pb.Entry) bool {
		out = append(out, &pb.Record{Group: group, Entry: e})
		return true
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Read calls done with the group's entries from instance from on: the
// latest entry of each instance, in instance order, contiguous. It stops
// before the first instance it holds no entry for or that is below the
// group's clean mark (so it returns nothing if from is below the mark),
// after maxEntries entries, or once the total length of the entries'
// Value.Data reaches maxBytes: the entry that reaches it is included, so a
// Read that finds any entry returns at least one. A limit <= 0 means no
// limit.
//
// Read returns at once; it reads on a goroutine of its own, after
// everything written before the call has reached the database (synced or
// not), and calls done from that goroutine. Checksums are verified: a bad
// record fails the Read with an error wrapping ErrCorrupt that names the
// directory, the group and the instance. On a closed Storage, or one whose
// writes failed, done gets ErrClosed or the write failure. Close waits for
// Reads in flight, including their done: done must not call Close.
func (s *Storage) Read(group, from uint64, maxEntries, maxBytes int, done func([]*pb.Entry, error)) {
	if done == nil {
		done = func([]*pb.Entry, error) {}
	}
	barrier, err := s.barrier()
	if err != nil {
		go done(nil, err)
		return
	}
	go func() {
		defer s.loads.Done()
		<-barrier
		done(s.read(group, from, maxEntries, maxBytes))
	}()
}

func (s *Storage) read(group, from uint64, maxEntries, maxBytes int) ([]*pb.Entry, error) {
	if err := s.failure(); err != nil {
		return nil, err
	}
	snap, err := s.db.GetSnapshot()
	if err != nil {
		return nil, fmt.Errorf("storage: %s: read group %d: %w", s.opts.Dir, group, err)
	}
	defer snap.Release()
	mark, err := s.mark(snap, "read", group)
	if err != nil || from < mark || from == 0 {
		return nil, err
	}
	var out []*pb.Entry
	bytes := 0
	err = s.scan(snap, "read", group, from, true, func(e *pb.Entry) bool {
		out = append(out, e)
		bytes += len(e.GetValue().GetData())
		return (maxEntries <= 0 || len(out) < maxEntries) && (maxBytes <= 0 || bytes < maxBytes)
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// mark returns the group's clean mark in snap, 0 if it has none.
func (s *Storage) mark(snap *leveldb.Snapshot, op string, group uint64) (uint64, error) {
	v, err := snap.Get(cleanKey(group), nil)
	switch {
	case errors.Is(err, leveldb.ErrNotFound):
		return 0, nil
	case err != nil:
		return 0, s.readErr(err, op, group, "clean mark")
	}
	m, err := decodeMark(v)
	if err != nil {
		return 0, fmt.Errorf("%w: %s: group %d, clean mark: %v", ErrCorrupt, s.opts.Dir, group, err)
	}
	return m, nil
}

// scan decodes the group's entries in snap from instance from on and hands
// them to f in instance order until f returns false. If contiguous, it
// stops before the first instance missing after from (from included).
func (s *Storage) scan(snap *leveldb.Snapshot, op string, group, from uint64, contiguous bool, f func(*pb.Entry) bool) error {
	rng := util.BytesPrefix(entryPrefix(group))
	rng.Start = entryKey(group, from)
	it := snap.NewIterator(rng, &opt.ReadOptions{DontFillCache: true})
	defer it.Release()
	last := "no entry read yet"
	next := from
	for it.Next() {
		k := it.Key()
		if len(k) != 17 {
			return fmt.Errorf("%w: %s: group %d: entry key %x has %d bytes, want 17 (%s)", ErrCorrupt, s.opts.Dir, group, k, len(k), last)
		}
		inst := binary.BigEndian.Uint64(k[9:])
		if contiguous && inst != next {
			return nil
		}
		e := &pb.Entry{}
		if err := decodeValue(it.Value(), e); err != nil {
			return fmt.Errorf("%w: %s: group %d, instance %d: %v", ErrCorrupt, s.opts.Dir, group, inst, err)
		}
		if e.Instance != inst {
			return fmt.Errorf("%w: %s: group %d, instance %d: stored entry is of instance %d", ErrCorrupt, s.opts.Dir, group, inst, e.Instance)
		}
		if !f(e) || inst == 1<<64-1 {
			return nil
		}
		next = inst + 1
		last = fmt.Sprintf("after instance %d", inst)
	}
	if err := it.Error(); err != nil {
		return s.readErr(err, op, group, last)
	}
	return nil
}

func (s *Storage) readErr(err error, op string, group uint64, where string) error {
	if lerrors.IsCorrupted(err) {
		return fmt.Errorf("%w: %s: group %d, %s: %w", ErrCorrupt, s.opts.Dir, group, where, err)
	}
	return fmt.Errorf("storage: %s: %s group %d, %s: %w", s.opts.Dir, op, group, where, err)
}

// Identity returns the identity recorded by SetIdentity, or nil, nil if
// none. A record that fails its checksum or cannot be decoded is an error
// wrapping ErrCorrupt that names the directory and "identity".
func (s *Storage) Identity() (*pb.Identity, error) {
	if err := s.enter(); err != nil {
		return nil, err
	}
	defer s.loads.Done()
	v, err := s.db.Get(identityKey, nil)
	switch {
	case errors.Is(err, leveldb.ErrNotFound):
		return nil, nil
	case err != nil && lerrors.IsCorrupted(err):
		return nil, fmt.Errorf("%w: %s: identity: %w", ErrCorrupt, s.opts.Dir, err)
	case err != nil:
		return nil, fmt.Errorf("storage: %s: read identity: %w", s.opts.Dir, err)
	}
	id := &pb.Identity{}
	if err := decodeValue(v, id); err != nil {
		return nil, fmt.Errorf("%w: %s: identity: %v", ErrCorrupt, s.opts.Dir, err)
	}
	return id, nil
}

// SetIdentity records id durably (a synced write, unless Options.Sync is
// false) before it returns, replacing any earlier identity. It is not
// ordered with Write: it neither waits for queued records nor makes them
// durable. It fails if id is nil, if the Storage is closed (ErrClosed), or
// if an earlier batch write failed (that error).
func (s *Storage) SetIdentity(id *pb.Identity) error {
	if id == nil {
		return errors.New("storage: set identity: nil identity")
	}
	msg, err := proto.Marshal(id)
	if err != nil {
		return fmt.Errorf("storage: set identity: marshal: %w", err)
	}
	if err := s.enter(); err != nil {
		return err
	}
	defer s.loads.Done()
	err = s.db.Put(identityKey, encodeValue(msg), &opt.WriteOptions{Sync: s.opts.Sync})
	if err == nil {
		// A journal rotation during the write may have failed to fsync
		// the previous journal.
		err = s.stor.err()
	}
	if err != nil {
		return fmt.Errorf("storage: %s: write identity: %w", s.opts.Dir, err)
	}
	s.log.Debug("storage identity recorded", "dir", s.opts.Dir, "node", id.NodeId, "cluster", id.ClusterId, "members", id.Members)
	return nil
}

// enter admits a direct database access, which Close then waits for before
// closing the database: it fails with ErrClosed once Close has begun, or
// with the sticky write failure. On success the caller must call
// s.loads.Done.
func (s *Storage) enter() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.usableLocked(); err != nil {
		return err
	}
	s.loads.Add(1)
	return nil
}

// usableLocked reports ErrClosed once Close has begun, or the sticky write
// failure. The caller holds s.mu.
func (s *Storage) usableLocked() error {
	if s.closing {
		return ErrClosed
	}
	return s.failed
}

// Close writes and fsyncs everything queued (calling the pending Syncs'
// callbacks), stops the goroutine and closes the database. It returns the
// error of a failed write or close, if any. Later calls return the same.
func (s *Storage) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closing = true
		s.cond.Signal()
		s.mu.Unlock()
		<-s.stopped
		close(s.compactStop)
		<-s.compactDone
		s.loads.Wait()
		errs := []error{s.failed}
		if err := s.db.Close(); err != nil {
			errs = append(errs, fmt.Errorf("storage: close %s: %w", s.opts.Dir, err))
		}
		if err := s.stor.Close(); err != nil {
			errs = append(errs, fmt.Errorf("storage: close %s: %w", s.opts.Dir, err))
		}
		if err := s.stor.err(); err != nil && s.failed == nil {
			errs = append(errs, err)
		}
		s.closeErr = errors.Join(errs...)
		s.log.Debug("storage closed", "dir", s.opts.Dir, "err", s.closeErr)
	})
	return s.closeErr
}

// Stats returns the cumulative counters.
func (s *Storage) Stats() Stats {
	return Stats{
		Syncs:    s.syncs.Load(),
		Batches:  s.batches.Load(),
		Records:  s.records.Load(),
		Bytes:    s.bytes.Load(),
		Deleted:  s.deleted.Load(),
		Compacts: s.compacts.Load(),
	}
}

// run is the writer goroutine.
func (s *Storage) run() {
	defer close(s.stopped)
	for {
		s.mu.Lock()
		for len(s.queue) == 0 && !s.closing && (len(s.pending) == 0 || s.failed != nil) {
			s.cond.Wait()
		}
		if len(s.queue) == 0 && !s.closing {
			// Idle, with entries to delete: one chunk, then look at
			// the queue again.
			s.mu.Unlock()
			s.cleanIdle()
			continue
		}
		ops := s.queue
		s.queue, s.spare = s.spare[:0], nil
		closing := s.closing
		s.mu.Unlock()

		s.commit(ops, closing)

		for i := range ops {
			if ops[i].buf != nil {
				putBuf(ops[i].buf) // goleveldb copied it
			}
		}
		clear(ops) // drop references to callbacks and buffers
		s.mu.Lock()
		s.spare = ops[:0]
		s.mu.Unlock()
		// Once closing is set nothing more is queued, so everything was
		// taken above.
		if closing {
			return
		}
	}
}

// commit writes the records of ops as one batch, fsynced if one of them is
// a Sync (or final, on Close), and then runs the Syncs' callbacks in order.
// Unless final, the batch also deletes up to cleanChunk entries below
// clean marks written earlier.
func (s *Storage) commit(ops []op, final bool) {
	failed := s.failure()
	if failed == nil {
		b := &s.batch
		b.Reset()
		var steps []cleanStep
		if !final {
			steps = s.addDeletes(b)
		}
		hasSync := final
		var nrec, nput, nbytes uint64
		var raised []uint64 // groups whose mark this batch raises
		for i := range ops {
			o := &ops[i]
			for _, kv := range o.kvs {
				key, val := o.buf[kv.key:kv.val], o.buf[kv.val:kv.end]
				nrec++
				switch key[0] {
				case 'c':
					g, m := binary.BigEndian.Uint64(key[1:]), binary.BigEndian.Uint64(val[4:])
					gc := s.marks[g]
					if gc == nil {
						gc = &groupClean{}
						s.marks[g] = gc
					}
					if m <= gc.mark {
						continue // never lower the mark
					}
					gc.mark = m
					raised = append(raised, g)
				case 'e':
					if gc := s.marks[binary.BigEndian.Uint64(key[1:])]; gc != nil && binary.BigEndian.Uint64(key[9:]) < gc.mark {
						continue // cleaned already: Load and Read would hide it
					}
				}
				b.Put(key, val)
				nput++
				nbytes += uint64(kv.end - kv.key)
			}
			if o.done != nil {
				hasSync = true
			}
		}
		sync := s.opts.Sync && hasSync
		if b.Len() == 0 && sync && s.dirty {
			b.Put(syncKey, nil)
		}
		if b.Len() > 0 {
			failed = s.writeBatch(b, sync, nput > 0, fmt.Sprintf("%d records", nrec))
		}
		if failed == nil {
			s.records.Add(nrec)
			s.bytes.Add(nbytes)
			s.applySteps(steps)
			for _, g := range raised {
				gc := s.marks[g]
				gc.written = gc.mark
				if gc.done < gc.written && !gc.queued {
					gc.queued = true
					s.pending = append(s.pending, g)
				}
			}
		}
	}
	for i := range ops {
		o := &ops[i]
		if o.done != nil {
			o.done(failed)
		}
		if o.barrier != nil {
			close(o.barrier)
		}
	}
}

// writeBatch writes b, fsynced if sync; puts says whether it holds records
// (not only deletes) that a later Sync must make durable. A failure breaks
// the Storage for good: it is returned and kept as the sticky failure.
func (s *Storage) writeBatch(b *leveldb.Batch, sync, puts bool, what string) error {
	err := s.db.Write(b, &opt.WriteOptions{Sync: sync})
	if err == nil {
		// A journal rotation during the write may have failed to fsync
		// the previous journal.
		err = s.stor.err()
	}
	if err != nil {
		failed := fmt.Errorf("storage: %s: write batch of %s: %w", s.opts.Dir, what, err)
		s.log.Error("storage write failed; storage is broken", "dir", s.opts.Dir, "err", err)
		s.mu.Lock()
		s.failed = failed
		s.mu.Unlock()
		s.pending = nil
		return failed
	}
	s.batches.Add(1)
	switch {
	case sync:
		s.syncs.Add(1)
		s.dirty = false
	case puts:
		s.dirty = true
	}
	return nil
}

// cleanIdle writes one batch of deletes, not fsynced: nothing needs them
// durable, since Open resumes cleaning and Load and Read hide what is left.
func (s *Storage) cleanIdle() {
	if s.failure() != nil {
		return
	}
	b := &s.batch
	b.Reset()
	steps := s.addDeletes(b)
	if b.Len() > 0 {
		if s.writeBatch(b, false, false, fmt.Sprintf("%d deletes", b.Len())) != nil {
			return
		}
	}
	s.applySteps(steps)
}

// addDeletes adds to b the deletes of a chunk of entries (see cleanChunk)
// below the written marks of the groups pending cleaning, oldest first,
// and returns the progress to apply once b is written.
func (s *Storage) addDeletes(b *leveldb.Batch) []cleanStep {
	steps := s.steps[:0]
	budget, bytes := cleanChunk, 0
	for _, g := range s.pending {
		if budget <= 0 || bytes >= cleanChunkBytes {
			break
		}
		budget--
		gc := s.marks[g]
		it := s.db.NewIterator(&util.Range{Start: entryKey(g, gc.done), Limit: entryKey(g, gc.written)}, &opt.ReadOptions{DontFillCache: true})
		st := cleanStep{group: g, done: gc.written}
		for it.Next() {
			if budget <= 0 || bytes >= cleanChunkBytes {
				st.done = keyInstance(it.Key()) // resume at the first key left
				break
			}
			b.Delete(it.Key())
			n := len(it.Key()) + len(it.Value())
			st.deleted++
			st.bytes += n
			bytes += n
			budget--
		}
		if err := it.Error(); err != nil {
			s.log.Error("storage: cleaning stopped: cannot scan entries below the clean mark", "dir", s.opts.Dir, "group", g, "mark", gc.written, "err", err)
			st.done, st.drop = gc.done, true
		}
		it.Release()
		steps = append(steps, st)
	}
	s.steps = steps
	return steps
}

// applySteps records the progress of a written batch's deletes.
func (s *Storage) applySteps(steps []cleanStep) {
	if len(steps) == 0 {
		return
	}
	var n uint64
	for _, st := range steps {
		gc := s.marks[st.group]
		gc.done = max(gc.done, st.done)
		n += uint64(st.deleted)
		s.cleaned += int64(st.bytes)
		if st.drop || gc.done >= gc.written {
			gc.queued = false
		}
	}
	s.deleted.Add(n)
	s.pending = slices.DeleteFunc(s.pending, func(g uint64) bool { return !s.marks[g].queued })
	limit := s.opts.compactBytes
	if limit == 0 {
		limit = compactAfter
	}
	if limit > 0 && s.cleaned >= limit {
		s.cleaned = 0
		s.requestCompaction()
	}
}

// requestCompaction asks the compactor to compact, for every group that
// cleaning has deleted entries of since its last request, the range of
// those entries.
func (s *Storage) requestCompaction() {
	s.compactMu.Lock()
	if s.compactReq == nil {
		s.compactReq = map[uint64]compactRange{}
	}
	for g, gc := range s.marks {
		if gc.done <= gc.compacted {
			continue
		}
		r, ok := s.compactReq[g]
		if !ok {
			r.from = gc.compacted
		}
		r.below = gc.done
		s.compactReq[g] = r
		gc.compacted = gc.done
	}
	s.compactMu.Unlock()
	select {
	case s.compactWake <- struct{}{}:
	default:
	}
}

// compactor is the goroutine that compacts cleaned ranges, off the write
// path: one compaction at a time, starts at least compactInterval apart.
// Compaction only reclaims space: a failure is logged, nothing more.
func (s *Storage) compactor() {
	defer close(s.compactDone)
	var last time.Time
	for {
		select {
		case <-s.compactStop:
			return
		case <-s.compactWake:
		}
		if wait := compactInterval - time.Since(last); wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-s.compactStop:
				t.Stop()
				return
			case <-t.C:
			}
		}
		last = time.Now()
		s.compactMu.Lock()
		req := s.compactReq
		s.compactReq = nil
		s.compactMu.Unlock()
		for _, g := range slices.Sorted(maps.Keys(req)) {
			select {
			case <-s.compactStop:
				return
			default:
			}
			start := time.Now()
			r := req[g]
			err := s.db.CompactRange(util.Range{Start: entryKey(g, r.from), Limit: entryKey(g, r.below)})
			if err != nil {
				s.log.Warn("storage: compaction of cleaned entries failed", "dir", s.opts.Dir, "group", g, "from", r.from, "below", r.below, "err", err)
				continue
			}
			s.compacts.Add(1)
			s.log.Debug("storage: compacted cleaned entries", "dir", s.opts.Dir, "group", g, "from", r.from, "below", r.below, "took", time.Since(start))
		}
	}
}

// journalSyncStorage wraps goleveldb's file storage to close a durability
// gap of goleveldb: when the memtable is full, a write switches to a new
// journal file and closes the old one without fsyncing it. Records written
// there without fsync would then be covered neither by a later fsync of the
// new journal nor, until the background flush of the old memtable to a
// table completes, by a table; a machine crash in that window would lose
// them while keeping later records. With Options.Sync, journal files are
// fsynced when closed (once per memtable, off the common path) and their
// creation is made durable by fsyncing the directory.
type journalSyncStorage struct {
	lstorage.Storage
	dir  string
	sync bool
	log  *slog.Logger

	mu       sync.Mutex
	firstErr error
	closes   atomic.Uint64 // journals fsynced on close
}

func (st *journalSyncStorage) err() error {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.firstErr
}

func (st *journalSyncStorage) setErr(err error) {
	st.log.Error("storage journal fsync failed", "dir", st.dir, "err", err)
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.firstErr == nil {
		st.firstErr = fmt.Errorf("storage: %s: %w", st.dir, err)
	}
}

func (st *journalSyncStorage) Create(fd lstorage.FileDesc) (lstorage.Writer, error) {
	w, err := st.Storage.Create(fd)
	if err != nil || fd.Type != lstorage.TypeJournal || !st.sync {
		return w, err
	}
	if err := syncDir(st.dir); err != nil {
		w.Close()
		return nil, fmt.Errorf("fsync directory after creating journal %s: %w", fd, err)
	}
	return &journalWriter{Writer: w, st: st, fd: fd}, nil
}

type journalWriter struct {
	lstorage.Writer
	st     *journalSyncStorage
	fd     lstorage.FileDesc
	closed bool // only goleveldb's write path and Close use it, serially
}

func (w *journalWriter) Close() error {
	if w.closed {
		return w.Writer.Close()
	}
	w.closed = true
	if err := w.Writer.Sync(); err != nil {
		// goleveldb ignores the error of closing a journal: keep it for
		// the next batch write to report.
		w.st.setErr(fmt.Errorf("fsync journal %s on close: %w", w.fd, err))
		w.Writer.Close()
		return err
	}
	w.st.closes.Add(1)
	return w.Writer.Close()
}

func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Sync(); err != nil && !errors.Is(err, syscall.EINVAL) {
		return err
	}
	return nil
}

var bufPool sync.Pool // of *[]byte

func getBuf(size int) []byte {
	if p, ok := bufPool.Get().(*[]byte); ok && cap(*p) >= size {
		return (*p)[:0]
	}
	return make([]byte, 0, size)
}

func putBuf(b []byte) {
	if cap(b) > 64<<20 {
		return // keep the pool from pinning huge buffers
	}
	bufPool.Put(&b)
}

// Package storage is the production implementation of env.Storage: a
// goleveldb database holding, per group, the latest HardState and the latest
// Entry of every instance, and the node's Identity.
//
// # Layout
//
// Keys have a fixed binary layout:
//
//	'h' group(u64 BE)                  -> the group's HardState
//	'e' group(u64 BE) instance(u64 BE) -> the entry of that instance
//	'i'                                -> the node's Identity
//	's'                                -> empty; see syncKey
//
// so a prefix scan of 'e'+group yields a group's entries in instance order.
// A value is the CRC-32 (Castagnoli, big-endian) of the protobuf bytes of the
// inner message (HardState, Entry or Identity, not the Record), then those
// bytes.
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
package storage

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/syndtr/goleveldb/leveldb"
	lerrors "github.com/syndtr/goleveldb/leveldb/errors"
	"github.com/syndtr/goleveldb/leveldb/opt"
	lstorage "github.com/syndtr/goleveldb/leveldb/storage"
	"github.com/syndtr/goleveldb/leveldb/util"
	"google.golang.org/protobuf/proto"

	pb "github.com/paxoskit/paxos/core/paxospb"
)

// ErrCorrupt means a stored record failed its checksum or could not be
// decoded. Load wraps it with the database directory, the group and the
// instance (or "hard state").
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
}

// defaultWriteBuffer is the goleveldb memtable (and so journal file) size.
// The default 4 MiB is sized for mixed read/write workloads; this store is
// write-mostly (it is only read by Load at startup), so a larger memtable
// means fewer journal rotations and level-0 flushes on the write path, at
// the price of up to 16 MiB of journal to replay on Open.
const defaultWriteBuffer = 16 << 20

// Stats are cumulative counters of a Storage.
type Stats struct {
	Syncs   uint64 // batch writes that were fsynced
	Batches uint64 // batch writes
	Records uint64 // records written
	Bytes   uint64 // key and value bytes written
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
	loads   sync.WaitGroup // Loads and identity accesses in flight; Close waits for them

	stopped   chan struct{}
	closeOnce sync.Once
	closeErr  error

	// Owned by the goroutine.
	batch leveldb.Batch
	dirty bool // records written without fsync since the last fsync

	syncs, batches, records, bytes atomic.Uint64
}

// op is one queued Write, Sync or Load barrier.
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
		opts:    opts,
		log:     logger,
		stor:    stor,
		db:      db,
		stopped: make(chan struct{}),
	}
	s.cond = sync.NewCond(&s.mu)
	go s.run()
	logger.Debug("storage opened", "dir", opts.Dir, "sync", opts.Sync)
	return s, nil
}

func hardStateKey(group uint64) []byte {
	k := make([]byte, 9)
	k[0] = 'h'
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

// identityKey holds the node's Identity. Its first byte is neither 'h' nor
// 'e', so no group's hard state key or entry prefix can match it.
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

func validate(r *pb.Record) error {
	switch {
	case r == nil:
		return errors.New("nil record")
	case r.HardState != nil && r.Entry != nil:
		return fmt.Errorf("record of group %d has both a hard state and an entry", r.Group)
	case r.HardState == nil && r.Entry == nil:
		return fmt.Errorf("record of group %d has neither a hard state nor an entry", r.Group)
	case r.Entry != nil && r.Entry.Instance == 0:
		return fmt.Errorf("entry of group %d has instance 0", r.Group)
	}
	return nil
}

// Write queues recs to be written, in order, after everything queued
// before; it does not wait for IO. The records are encoded before Write
// returns, so the caller may reuse them. Write fails, writing nothing, if a
// record is invalid (nil, not exactly one of hard_state and entry set, or an
// entry of instance 0), if the Storage is closed (ErrClosed), or if an
// earlier batch write failed (that error).
func (s *Storage) Write(recs []*pb.Record) error {
	var o op
	o.kvs = make([]kvIdx, 0, len(recs))
	size := 0
	for i, r := range recs {
		if err := validate(r); err != nil {
			return fmt.Errorf("storage: write: record %d: %w", i, err)
		}
		size += 1 + 16 + 4 + proto.Size(r) // key, checksum and an upper bound of the value
	}
	// One buffer: growing it would copy large values again. Buffers are
	// reused: a fresh large one costs zeroing and page faults per byte.
	o.buf = getBuf(size)
	for i, r := range recs {
		var key []byte
		var msg proto.Message
		if r.HardState != nil {
			key, msg = hardStateKey(r.Group), r.HardState
		} else {
			key, msg = entryKey(r.Group, r.Entry.Instance), r.Entry
		}
		kv := kvIdx{key: len(o.buf)}
		o.buf = append(o.buf, key...)
		kv.val = len(o.buf)
		o.buf = append(o.buf, 0, 0, 0, 0)
		var err error
		o.buf, err = proto.MarshalOptions{}.MarshalAppend(o.buf, msg)
		if err != nil {
			return fmt.Errorf("storage: write: record %d: marshal: %w", i, err)
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

// Load returns the group's records: its HardState record (if any), then its
// entries in instance order. It first waits until everything written before
// the call has reached the database (not necessarily the disk). Every
// checksum is verified; a bad record fails Load with an error wrapping
// ErrCorrupt that names the directory, the group and the instance.
func (s *Storage) Load(group uint64) ([]*pb.Record, error) {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return nil, ErrClosed
	}
	barrier := make(chan struct{})
	s.queue = append(s.queue, op{barrier: barrier})
	s.cond.Signal()
	s.loads.Add(1)
	s.mu.Unlock()
	defer s.loads.Done()
	<-barrier
	s.mu.Lock()
	failed := s.failed
	s.mu.Unlock()
	if failed != nil {
		return nil, failed
	}

	var out []*pb.Record
	v, err := s.db.Get(hardStateKey(group), nil)
	switch {
	case err == nil:
		hs := &pb.HardState{}
		if err := decodeValue(v, hs); err != nil {
			return nil, fmt.Errorf("%w: %s: group %d, hard state: %v", ErrCorrupt, s.opts.Dir, group, err)
		}
		out = append(out, &pb.Record{Group: group, HardState: hs})
	case errors.Is(err, leveldb.ErrNotFound):
	default:
		return nil, s.readErr(err, group, "hard state")
	}

	it := s.db.NewIterator(util.BytesPrefix(entryPrefix(group)), &opt.ReadOptions{DontFillCache: true})
	defer it.Release()
	last := "no entry read yet"
	for it.Next() {
		k := it.Key()
		if len(k) != 17 {
			return nil, fmt.Errorf("%w: %s: group %d: entry key %x has %d bytes, want 17 (%s)", ErrCorrupt, s.opts.Dir, group, k, len(k), last)
		}
		inst := binary.BigEndian.Uint64(k[9:])
		e := &pb.Entry{}
		if err := decodeValue(it.Value(), e); err != nil {
			return nil, fmt.Errorf("%w: %s: group %d, instance %d: %v", ErrCorrupt, s.opts.Dir, group, inst, err)
		}
		if e.Instance != inst {
			return nil, fmt.Errorf("%w: %s: group %d, instance %d: stored entry is of instance %d", ErrCorrupt, s.opts.Dir, group, inst, e.Instance)
		}
		out = append(out, &pb.Record{Group: group, Entry: e})
		last = fmt.Sprintf("after instance %d", inst)
	}
	if err := it.Error(); err != nil {
		return nil, s.readErr(err, group, last)
	}
	return out, nil
}

func (s *Storage) readErr(err error, group uint64, where string) error {
	if lerrors.IsCorrupted(err) {
		return fmt.Errorf("%w: %s: group %d, %s: %w", ErrCorrupt, s.opts.Dir, group, where, err)
	}
	return fmt.Errorf("storage: %s: load group %d, %s: %w", s.opts.Dir, group, where, err)
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
		Syncs:   s.syncs.Load(),
		Batches: s.batches.Load(),
		Records: s.records.Load(),
		Bytes:   s.bytes.Load(),
	}
}

// run is the writer goroutine.
func (s *Storage) run() {
	defer close(s.stopped)
	for {
		s.mu.Lock()
		for len(s.queue) == 0 && !s.closing {
			s.cond.Wait()
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
func (s *Storage) commit(ops []op, final bool) {
	s.mu.Lock()
	failed := s.failed
	s.mu.Unlock()
	if failed == nil {
		b := &s.batch
		b.Reset()
		hasSync := final
		var nrec, nbytes uint64
		for i := range ops {
			o := &ops[i]
			for _, kv := range o.kvs {
				b.Put(o.buf[kv.key:kv.val], o.buf[kv.val:kv.end])
				nrec++
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
			err := s.db.Write(b, &opt.WriteOptions{Sync: sync})
			if err == nil {
				// A journal rotation during the write may have failed
				// to fsync the previous journal.
				err = s.stor.err()
			}
			if err != nil {
				failed = fmt.Errorf("storage: %s: write batch of %d records: %w", s.opts.Dir, nrec, err)
				s.log.Error("storage write failed; storage is broken", "dir", s.opts.Dir, "err", err)
				s.mu.Lock()
				s.failed = failed
				s.mu.Unlock()
			} else {
				s.batches.Add(1)
				s.records.Add(nrec)
				s.bytes.Add(nbytes)
				if sync {
					s.syncs.Add(1)
					s.dirty = false
				} else {
					s.dirty = true
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

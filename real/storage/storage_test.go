package storage

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/syndtr/goleveldb/leveldb"
	"google.golang.org/protobuf/proto"

	pb "github.com/paxoskit/paxos/core/paxospb"
)

func open(t testing.TB, dir string, sync bool) *Storage {
	t.Helper()
	s, err := Open(Options{Dir: dir, Sync: sync})
	if err != nil {
		t.Fatalf("Open(%s): %v", dir, err)
	}
	return s
}

func hs(group, counter, boot uint64) *pb.Record {
	return &pb.Record{Group: group, HardState: &pb.HardState{
		Promised: &pb.Ballot{Counter: counter, Node: 1}, Boot: boot,
	}}
}

func entry(group, inst uint64, data string, chosen bool) *pb.Record {
	return &pb.Record{Group: group, Entry: &pb.Entry{
		Instance: inst,
		Ballot:   &pb.Ballot{Counter: 3, Node: 2},
		Value:    &pb.Value{Node: 2, Boot: 1, Seq: inst, Smid: 7, Data: []byte(data)},
		Chosen:   chosen,
	}}
}

// syncWait calls Sync and waits for its callback.
func syncWait(t testing.TB, s *Storage) {
	t.Helper()
	ch := make(chan error, 1)
	s.Sync(func(err error) { ch <- err })
	select {
	case err := <-ch:
		if err != nil {
			t.Fatalf("Sync: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Sync callback not called")
	}
}

func mustWrite(t testing.TB, s *Storage, recs ...*pb.Record) {
	t.Helper()
	if err := s.Write(recs); err != nil {
		t.Fatalf("Write: %v", err)
	}
}

func checkLoad(t *testing.T, s *Storage, group uint64, want []*pb.Record) {
	t.Helper()
	got, err := s.Load(group, 0)
	if err != nil {
		t.Fatalf("Load(%d): %v", group, err)
	}
	if len(got) != len(want) {
		t.Fatalf("Load(%d): %d records, want %d:\n got %v\nwant %v", group, len(got), len(want), got, want)
	}
	for i := range want {
		if !proto.Equal(got[i], want[i]) {
			t.Fatalf("Load(%d)[%d] = %v, want %v", group, i, got[i], want[i])
		}
	}
}

func TestRoundTrip(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, true)
	// Groups 1..3 interleaved, entries out of order, one instance
	// rewritten (accepted, then chosen) and one hard state rewritten.
	mustWrite(t, s,
		entry(2, 5, "g2-5", false),
		hs(1, 1, 1),
		entry(1, 3, "g1-3", false),
		entry(1, 1, "g1-1", true),
		entry(3, 1<<40, "g3-big", false),
	)
	mustWrite(t, s,
		entry(1, 2, "g1-2", false),
		entry(1, 3, "g1-3-accepted-again", false),
		hs(2, 4, 1),
		entry(2, 1, "g2-1", true),
	)
	mustWrite(t, s,
		hs(1, 9, 2),
		entry(1, 3, "g1-3-final", true),
		entry(3, 7, "g3-7", false),
	)
	syncWait(t, s)
	st := s.Stats()
	if st.Records != 12 || st.Syncs != 1 || st.Batches == 0 || st.Bytes == 0 {
		t.Errorf("Stats = %+v, want 12 records, 1 sync", st)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	s = open(t, dir, true)
	defer s.Close()
	checkLoad(t, s, 1, []*pb.Record{
		hs(1, 9, 2),
		entry(1, 1, "g1-1", true),
		entry(1, 2, "g1-2", false),
		entry(1, 3, "g1-3-final", true),
	})
	checkLoad(t, s, 2, []*pb.Record{
		hs(2, 4, 1),
		entry(2, 1, "g2-1", true),
		entry(2, 5, "g2-5", false),
	})
	checkLoad(t, s, 3, []*pb.Record{
		entry(3, 7, "g3-7", false),
		entry(3, 1<<40, "g3-big", false),
	})
	checkLoad(t, s, 4, nil)
	checkLoad(t, s, 0, nil)
}

// TestLoadSeesQueuedWrites: Load waits for earlier writes to be applied.
func TestLoadSeesQueuedWrites(t *testing.T) {
	s := open(t, t.TempDir(), true)
	defer s.Close()
	for i := uint64(1); i <= 100; i++ {
		mustWrite(t, s, entry(1, i, fmt.Sprint(i), false))
	}
	got, err := s.Load(1, 0)
	if err != nil || len(got) != 100 {
		t.Fatalf("Load: %d records, %v; want 100", len(got), err)
	}
}

func TestGroupCommit(t *testing.T) {
	const n = 1000
	for _, mode := range []string{"natural", "blocked"} {
		t.Run(mode, func(t *testing.T) {
			s := open(t, t.TempDir(), true)
			defer s.Close()
			release := make(chan struct{})
			if mode == "blocked" {
				// Hold the writer goroutine in a callback until all n
				// pairs are queued: they must then share one fsync.
				s.Sync(func(error) { <-release })
			}
			wait := writeSyncPairs(t, s, n, func(i int) *pb.Record { return entry(uint64(i%8), uint64(i+1), "v", false) })
			close(release)
			wait()
			st := s.Stats()
			t.Logf("%s: %d syncs, %d batches for %d Sync calls", mode, st.Syncs, st.Batches, n)
			if st.Syncs >= n {
				t.Errorf("Stats.Syncs = %d, want < %d (batched)", st.Syncs, n)
			}
			if mode == "blocked" && st.Syncs > 2 {
				t.Errorf("Stats.Syncs = %d with the writer held, want <= 2", st.Syncs)
			}
			if st.Records != n {
				t.Errorf("Stats.Records = %d, want %d", st.Records, n)
			}
		})
	}
}

func TestUnsyncedWritesBecomeDurable(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, true)
	mustWrite(t, s, hs(1, 1, 1), entry(1, 1, "a", true))
	// Let the goroutine write it without fsync.
	if _, err := s.Load(1, 0); err != nil {
		t.Fatal(err)
	}
	if st := s.Stats(); st.Batches != 1 || st.Syncs != 0 {
		t.Fatalf("after unsynced write: Stats = %+v, want 1 batch, 0 syncs", st)
	}
	// A Sync with no records of its own must still fsync them.
	syncWait(t, s)
	if st := s.Stats(); st.Syncs != 1 {
		t.Fatalf("after Sync: Stats.Syncs = %d, want 1", st.Syncs)
	}
	// Nothing new written: a further Sync need not fsync.
	syncWait(t, s)
	if st := s.Stats(); st.Syncs != 1 {
		t.Fatalf("after idle Sync: Stats.Syncs = %d, want 1", st.Syncs)
	}
	// Close flushes writes with no Sync after them.
	mustWrite(t, s, entry(1, 2, "b", true))
	mustWrite(t, s, entry(1, 3, "c", false))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if st := s.Stats(); st.Syncs != 2 {
		t.Fatalf("after Close: Stats.Syncs = %d, want 2", st.Syncs)
	}
	s = open(t, dir, true)
	defer s.Close()
	checkLoad(t, s, 1, []*pb.Record{hs(1, 1, 1), entry(1, 1, "a", true), entry(1, 2, "b", true), entry(1, 3, "c", false)})
}

// TestJournalRotationSyncsOldJournal forces memtable rotations with
// unsynced writes in between and checks that each closed journal was
// fsynced and that nothing is lost across reopen.
func TestJournalRotationSyncsOldJournal(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(Options{Dir: dir, Sync: true, writeBuffer: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	big := strings.Repeat("x", 1000)
	const n = 500
	for i := uint64(1); i <= n; i++ {
		mustWrite(t, s, entry(1, i, big, true)) // chosen: no Sync needed
		// Sync often enough that writes reach goleveldb as separate
		// batches: one huge batch would rotate the memtable only once.
		if i%10 == 0 {
			syncWait(t, s)
		}
	}
	if _, err := s.Load(1, 0); err != nil {
		t.Fatal(err)
	}
	if c := s.stor.closes.Load(); c == 0 {
		t.Errorf("no journal fsynced on close after %d KiB through a 64 KiB memtable", n)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = open(t, dir, true)
	defer s.Close()
	got, err := s.Load(1, 0)
	if err != nil || len(got) != n {
		t.Fatalf("Load after reopen: %d records, %v; want %d", len(got), err, n)
	}
}

func corruptEntry(t *testing.T, dir string, group, inst uint64, val []byte) {
	t.Helper()
	db, err := leveldb.OpenFile(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Put(entryKey(group, inst), val, nil); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestCorruption(t *testing.T) {
	garbage := []byte{0x0a, 0x05, 0x01} // field 1, length 5, 1 byte: truncated
	if err := proto.Unmarshal(garbage, &pb.Entry{}); err == nil {
		t.Fatal("test garbage unmarshals")
	}
	goodOther, _ := proto.Marshal(entry(7, 99, "other", true).Entry)
	cases := []struct {
		name string
		val  func(stored []byte) []byte
		want string
	}{
		{"bad checksum", func(v []byte) []byte {
			v = append([]byte(nil), v...)
			v[len(v)-1] ^= 0xff
			return v
		}, "checksum mismatch"},
		{"garbage proto", func([]byte) []byte { return encodeValue(garbage) }, "unmarshal"},
		{"short value", func([]byte) []byte { return []byte{1, 2} }, "shorter"},
		{"wrong instance", func([]byte) []byte { return encodeValue(goodOther) }, "of instance 99"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			s := open(t, dir, true)
			mustWrite(t, s, hs(7, 1, 1), entry(7, 1, "a", true), entry(7, 42, "b", false), entry(7, 43, "c", false), entry(8, 42, "other group", false))
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			db, err := leveldb.OpenFile(dir, nil)
			if err != nil {
				t.Fatal(err)
			}
			stored, err := db.Get(entryKey(7, 42), nil)
			db.Close()
			if err != nil {
				t.Fatal(err)
			}
			corruptEntry(t, dir, 7, 42, c.val(stored))

			s = open(t, dir, true)
			defer s.Close()
			recs, err := s.Load(7, 0)
			if err == nil {
				t.Fatalf("Load of corrupt group returned %d records, no error", len(recs))
			}
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("Load error %v does not wrap ErrCorrupt", err)
			}
			msg := err.Error()
			t.Logf("Load error: %v", msg)
			for _, want := range []string{dir, "group 7", "instance 42", c.want} {
				if !strings.Contains(msg, want) {
					t.Errorf("Load error %q does not mention %q", msg, want)
				}
			}
			// Other groups are unaffected.
			checkLoad(t, s, 8, []*pb.Record{entry(8, 42, "other group", false)})
		})
	}

	t.Run("hard state", func(t *testing.T) {
		dir := t.TempDir()
		s := open(t, dir, true)
		mustWrite(t, s, hs(5, 1, 1))
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		db, err := leveldb.OpenFile(dir, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := db.Put(hardStateKey(5), encodeValue(garbage)[:5], nil); err != nil {
			t.Fatal(err)
		}
		db.Close()
		s = open(t, dir, true)
		defer s.Close()
		_, err = s.Load(5, 0)
		if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "group 5, hard state") || !strings.Contains(err.Error(), dir) {
			t.Fatalf("Load error = %v, want ErrCorrupt naming dir, group 5 and hard state", err)
		}
	})
}

func TestInvalidWrite(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, true)
	bad := []*pb.Record{
		nil,
		{Group: 1},
		{Group: 1, HardState: &pb.HardState{}, Entry: &pb.Entry{Instance: 1}},
		{Group: 1, Entry: &pb.Entry{Instance: 0}},
	}
	for i, b := range bad {
		if err := s.Write([]*pb.Record{entry(1, 1, "ok", false), b}); err == nil {
			t.Errorf("Write with invalid record %d (%v) succeeded", i, b)
		}
	}
	if err := s.Write(nil); err != nil {
		t.Errorf("empty Write: %v", err)
	}
	syncWait(t, s)
	if st := s.Stats(); st.Records != 0 || st.Batches != 0 {
		t.Errorf("Stats after invalid writes = %+v, want nothing written", st)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = open(t, dir, true)
	defer s.Close()
	checkLoad(t, s, 1, nil)
}

func TestNoSyncMode(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, false)
	const n = 200
	writeSyncPairs(t, s, n, func(i int) *pb.Record { return entry(1, uint64(i+1), "v", false) })()
	if st := s.Stats(); st.Syncs != 0 || st.Records != n {
		t.Errorf("Stats = %+v, want 0 syncs, %d records", st, n)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = open(t, dir, false)
	defer s.Close()
	got, err := s.Load(1, 0)
	if err != nil || len(got) != n {
		t.Fatalf("Load: %d records, %v; want %d", len(got), err, n)
	}
}

func TestClosed(t *testing.T) {
	s := open(t, t.TempDir(), true)
	// Syncs queued before Close complete successfully.
	mustWrite(t, s, entry(1, 1, "a", false))
	pending := make(chan error, 1)
	s.Sync(func(err error) { pending <- err })
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-pending:
		if err != nil {
			t.Errorf("Sync queued before Close: %v", err)
		}
	default:
		t.Error("Close returned before the queued Sync's callback ran")
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := s.Write([]*pb.Record{entry(1, 2, "b", false)}); !errors.Is(err, ErrClosed) {
		t.Errorf("Write after Close = %v, want ErrClosed", err)
	}
	ch := make(chan error, 1)
	s.Sync(func(err error) { ch <- err })
	select {
	case err := <-ch:
		if !errors.Is(err, ErrClosed) {
			t.Errorf("Sync after Close: done(%v), want ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Sync after Close: done not called")
	}
	if _, err := s.Load(1, 0); !errors.Is(err, ErrClosed) {
		t.Errorf("Load after Close = %v, want ErrClosed", err)
	}
}

// TestWriteFailure breaks the database under the Storage: the failing
// batch's Syncs and all later ones get the error, later Writes return it.
func TestWriteFailure(t *testing.T) {
	s := open(t, t.TempDir(), true)
	syncWait(t, s)
	s.db.Close() // every later batch write fails
	mustWrite(t, s, entry(1, 1, "a", false))
	errs := make(chan error, 3)
	s.Sync(func(err error) { errs <- err })
	first := <-errs
	if first == nil || !errors.Is(first, leveldb.ErrClosed) {
		t.Fatalf("Sync after failed write: done(%v), want the write error", first)
	}
	if err := s.Write([]*pb.Record{entry(1, 2, "b", false)}); err == nil || err.Error() != first.Error() {
		t.Errorf("Write on broken storage = %v, want %v", err, first)
	}
	s.Sync(func(err error) { errs <- err })
	s.Sync(func(err error) { errs <- err })
	for range 2 {
		if err := <-errs; err == nil || err.Error() != first.Error() {
			t.Errorf("later Sync: done(%v), want %v", err, first)
		}
	}
	if _, err := s.Load(1, 0); err == nil {
		t.Error("Load on broken storage succeeded")
	}
	if err := s.Close(); err == nil {
		t.Error("Close of broken storage reported no error")
	}
}

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, true)
	defer s.Close()
	if s2, err := Open(Options{Dir: dir, Sync: true}); err == nil {
		s2.Close()
		t.Fatal("second Open of a locked directory succeeded")
	} else if t.Logf("lock error: %v", err); !strings.Contains(err.Error(), dir) {
		t.Errorf("lock error %q does not name the directory", err)
	}

	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(Options{Dir: file}); err == nil || !strings.Contains(err.Error(), file) {
		t.Errorf("Open of a regular file = %v, want an error naming it", err)
	}
	if _, err := Open(Options{}); err == nil {
		t.Error("Open with no Dir succeeded")
	}
	// A fresh nested directory is created.
	nested := filepath.Join(t.TempDir(), "a", "b")
	s3, err := Open(Options{Dir: nested})
	if err != nil {
		t.Fatalf("Open of a missing nested directory: %v", err)
	}
	s3.Close()
}

// TestConcurrent exercises Write, Sync and Load from many goroutines under
// the race detector.
func TestConcurrent(t *testing.T) {
	s := open(t, t.TempDir(), true)
	var wg sync.WaitGroup
	for g := uint64(1); g <= 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := uint64(1); i <= 50; i++ {
				if err := s.Write([]*pb.Record{hs(g, i, 1), entry(g, i, "v", false)}); err != nil {
					t.Error(err)
					return
				}
				done := make(chan error, 1)
				s.Sync(func(err error) { done <- err })
				if err := <-done; err != nil {
					t.Error(err)
					return
				}
			}
			recs, err := s.Load(g, 0)
			if err != nil || len(recs) != 51 {
				t.Errorf("Load(%d): %d records, %v", g, len(recs), err)
			}
		}()
	}
	wg.Wait()
	t.Logf("Stats: %+v", s.Stats())
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

func payload(inst uint64) *pb.Record {
	return &pb.Record{Group: 1, Entry: &pb.Entry{
		Instance: inst,
		Ballot:   &pb.Ballot{Counter: 1, Node: 1},
		Value:    &pb.Value{Node: 1, Boot: 1, Seq: inst, Data: make([]byte, 100)},
	}}
}

// BenchmarkSyncedWrite: one 100-byte entry per Write+Sync, waiting for the
// fsync each time: the latency-bound rate of a single node with one
// outstanding Ready.
func BenchmarkSyncedWrite(b *testing.B) {
	s := open(b, b.TempDir(), true)
	defer s.Close()
	done := make(chan error, 1)
	var inst uint64
	for b.Loop() {
		inst++
		if err := s.Write([]*pb.Record{payload(inst)}); err != nil {
			b.Fatal(err)
		}
		s.Sync(func(err error) { done <- err })
		if err := <-done; err != nil {
			b.Fatal(err)
		}
	}
	st := s.Stats()
	b.ReportMetric(float64(st.Syncs)/b.Elapsed().Seconds(), "syncs/s")
}

// BenchmarkGroupCommit: 64 writers each doing Write+Sync of one 100-byte
// entry and waiting for it, as 64 groups' Readies would; they share fsyncs.
func BenchmarkGroupCommit(b *testing.B) {
	const writers = 64
	s := open(b, b.TempDir(), true)
	defer s.Close()
	var next atomic.Uint64
	n := uint64(b.N)
	b.ResetTimer()
	var wg sync.WaitGroup
	for range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			done := make(chan error, 1)
			for {
				i := next.Add(1)
				if i > n {
					return
				}
				if err := s.Write([]*pb.Record{payload(i)}); err != nil {
					b.Error(err)
					return
				}
				s.Sync(func(err error) { done <- err })
				if err := <-done; err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	st := s.Stats()
	secs := b.Elapsed().Seconds()
	b.ReportMetric(float64(st.Records)/secs, "writes/s")
	b.ReportMetric(float64(st.Syncs)/secs, "syncs/s")
	if st.Syncs > 0 {
		b.ReportMetric(float64(st.Records)/float64(st.Syncs), "writes/sync")
	}
}

// writeSyncPairs issues n Write+Sync pairs, the records made by rec. The
// returned wait fails the test unless every Sync callback runs, without
// error and in call order.
func writeSyncPairs(t *testing.T, s *Storage, n int, rec func(i int) *pb.Record) (wait func()) {
	t.Helper()
	var mu sync.Mutex
	var order []int
	all := make(chan struct{})
	for i := 0; i < n; i++ {
		mustWrite(t, s, rec(i))
		s.Sync(func(err error) {
			if err != nil {
				t.Errorf("Sync %d: %v", i, err)
			}
			mu.Lock()
			order = append(order, i)
			if len(order) == n {
				close(all)
			}
			mu.Unlock()
		})
	}
	return func() {
		t.Helper()
		select {
		case <-all:
		case <-time.After(15 * time.Second):
			t.Fatal("not all Sync callbacks called")
		}
		mu.Lock()
		defer mu.Unlock()
		for i, v := range order {
			if v != i {
				t.Fatalf("callback %d ran at position %d", v, i)
			}
		}
	}
}

func TestIdentity(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, true)
	if id, err := s.Identity(); err != nil || id != nil {
		t.Fatalf("Identity of a fresh directory = %v, %v; want nil, nil", id, err)
	}
	mustWrite(t, s, hs(1, 1, 1), entry(1, 1, "a", true), entry(1, 2, "b", false), hs(2, 3, 1))
	want := &pb.Identity{NodeId: 3, ClusterId: 0xC0FFEE, Members: []uint64{1, 2, 3}}
	syncsBefore := s.Stats().Syncs
	if err := s.SetIdentity(want); err != nil {
		t.Fatalf("SetIdentity: %v", err)
	}
	if got, err := s.Identity(); err != nil || !proto.Equal(got, want) {
		t.Fatalf("Identity = %v, %v; want %v", got, err, want)
	}
	if err := s.SetIdentity(nil); err == nil {
		t.Error("SetIdentity(nil) succeeded")
	}
	// The identity is not a group's record.
	recs1 := []*pb.Record{hs(1, 1, 1), entry(1, 1, "a", true), entry(1, 2, "b", false)}
	checkLoad(t, s, 1, recs1)
	checkLoad(t, s, 2, []*pb.Record{hs(2, 3, 1)})
	for _, g := range []uint64{0, 'i', 'i' << 56, 1<<64 - 1} {
		checkLoad(t, s, g, nil)
	}
	if st := s.Stats(); st.Syncs != syncsBefore {
		t.Errorf("SetIdentity counted as a batch sync: Stats = %+v", st)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Identity(); !errors.Is(err, ErrClosed) {
		t.Errorf("Identity after Close = %v, want ErrClosed", err)
	}
	if err := s.SetIdentity(want); !errors.Is(err, ErrClosed) {
		t.Errorf("SetIdentity after Close = %v, want ErrClosed", err)
	}

	s = open(t, dir, true)
	if got, err := s.Identity(); err != nil || !proto.Equal(got, want) {
		t.Fatalf("Identity after reopen = %v, %v; want %v", got, err, want)
	}
	checkLoad(t, s, 1, recs1)
	// A later SetIdentity replaces it.
	want2 := &pb.Identity{NodeId: 3, ClusterId: 0xC0FFEE, Members: []uint64{1, 2, 3, 4}}
	if err := s.SetIdentity(want2); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = open(t, dir, false)
	defer s.Close()
	if got, err := s.Identity(); err != nil || !proto.Equal(got, want2) {
		t.Fatalf("Identity after second reopen = %v, %v; want %v", got, err, want2)
	}
	checkLoad(t, s, 1, recs1)
}

// TestIdentityNoSync: with Options.Sync false, SetIdentity does not fsync
// but the identity survives Close and Open.
func TestIdentityNoSync(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, false)
	want := &pb.Identity{NodeId: 1, ClusterId: 7, Members: []uint64{1}}
	if err := s.SetIdentity(want); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = open(t, dir, false)
	defer s.Close()
	if got, err := s.Identity(); err != nil || !proto.Equal(got, want) {
		t.Fatalf("Identity = %v, %v; want %v", got, err, want)
	}
}

func TestIdentityCorruption(t *testing.T) {
	cases := []struct {
		name string
		val  func(stored []byte) []byte
		want string
	}{
		{"flipped byte", func(v []byte) []byte {
			v = append([]byte(nil), v...)
			v[len(v)/2] ^= 0x10
			return v
		}, "checksum mismatch"},
		{"flipped checksum byte", func(v []byte) []byte {
			v = append([]byte(nil), v...)
			v[0] ^= 0x01
			return v
		}, "checksum mismatch"},
		{"garbage proto", func([]byte) []byte { return encodeValue([]byte{0x0a, 0x05, 0x01}) }, "unmarshal"},
		{"short value", func([]byte) []byte { return []byte{1, 2} }, "shorter"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			s := open(t, dir, true)
			mustWrite(t, s, hs(1, 1, 1), entry(1, 1, "a", true))
			if err := s.SetIdentity(&pb.Identity{NodeId: 2, ClusterId: 9, Members: []uint64{1, 2, 3}}); err != nil {
				t.Fatal(err)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			db, err := leveldb.OpenFile(dir, nil)
			if err != nil {
				t.Fatal(err)
			}
			stored, err := db.Get(identityKey, nil)
			if err == nil {
				err = db.Put(identityKey, c.val(stored), nil)
			}
			if cerr := db.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				t.Fatal(err)
			}

			s = open(t, dir, true)
			defer s.Close()
			id, err := s.Identity()
			if err == nil {
				t.Fatalf("Identity of a corrupt record = %v, no error", id)
			}
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("Identity error %v does not wrap ErrCorrupt", err)
			}
			t.Logf("Identity error: %v", err)
			for _, want := range []string{dir, "identity", c.want} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("Identity error %q does not mention %q", err, want)
				}
			}
			// Groups are unaffected.
			checkLoad(t, s, 1, []*pb.Record{hs(1, 1, 1), entry(1, 1, "a", true)})
		})
	}
}

// TestIdentityConcurrent sets and reads the identity while the writer
// goroutine is busy, under the race detector.
func TestIdentityConcurrent(t *testing.T) {
	s := open(t, t.TempDir(), true)
	defer s.Close()
	// Queued, not yet written: the writer goroutine works on them while
	// the identity is set and read.
	wait := writeSyncPairs(t, s, 200, func(i int) *pb.Record { return entry(1, uint64(i+1), "v", false) })
	for n := uint64(1); n <= 20; n++ {
		if err := s.SetIdentity(&pb.Identity{NodeId: 1, ClusterId: n}); err != nil {
			t.Fatal(err)
		}
		if id, err := s.Identity(); err != nil || id.GetClusterId() != n {
			t.Fatalf("Identity = %v, %v; want cluster %d", id, err, n)
		}
	}
	wait()
	if recs, err := s.Load(1, 0); err != nil || len(recs) != 200 {
		t.Fatalf("Load: %d records, %v; want 200", len(recs), err)
	}
}

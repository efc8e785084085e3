package storage

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/syndtr/goleveldb/leveldb"
	"google.golang.org/protobuf/proto"

	pb "github.com/paxoskit/paxos/core/paxospb"
)

// readWait calls Read and waits for its done.
func readWait(t testing.TB, s *Storage, group, from uint64, maxEntries, maxBytes int) ([]*pb.Entry, error) {
	t.Helper()
	type result struct {
		ents []*pb.Entry
		err  error
	}
	ch := make(chan result, 1)
	s.Read(group, from, maxEntries, maxBytes, func(ents []*pb.Entry, err error) { ch <- result{ents, err} })
	select {
	case r := <-ch:
		return r.ents, r.err
	case <-time.After(10 * time.Second):
		t.Fatal("Read: done not called")
		return nil, nil
	}
}

// checkRead checks that Read returns the entries of want, in order.
func checkRead(t *testing.T, s *Storage, group, from uint64, maxEntries, maxBytes int, want []*pb.Record) {
	t.Helper()
	got, err := readWait(t, s, group, from, maxEntries, maxBytes)
	if err != nil {
		t.Fatalf("Read(%d, %d, %d, %d): %v", group, from, maxEntries, maxBytes, err)
	}
	if len(got) != len(want) {
		t.Fatalf("Read(%d, %d, %d, %d): %d entries, want %d:\n got %v\nwant %v", group, from, maxEntries, maxBytes, len(got), len(want), got, want)
	}
	for i := range want {
		if !proto.Equal(got[i], want[i].Entry) {
			t.Fatalf("Read(%d, %d, %d, %d)[%d] = %v, want %v", group, from, maxEntries, maxBytes, i, got[i], want[i].Entry)
		}
	}
}

func TestReadContiguous(t *testing.T) {
	s := open(t, t.TempDir(), true)
	defer s.Close()
	mustWrite(t, s, hs(1, 1, 1))
	mustWrite(t, s, entries(1, 1, 5)...)
	mustWrite(t, s, entries(1, 7, 9)...)
	mustWrite(t, s, entries(2, 6, 6)...)
	mustWrite(t, s, entry(1, 2, "v2 chosen", true)) // the latest entry wins
	want := entries(1, 1, 5)
	want[1] = entry(1, 2, "v2 chosen", true)
	checkRead(t, s, 1, 1, 0, 0, want)
	checkRead(t, s, 1, 3, 100, 1<<20, want[2:])
	checkRead(t, s, 1, 6, 0, 0, nil) // missing instance
	checkRead(t, s, 1, 7, 0, 0, entries(1, 7, 9))
	checkRead(t, s, 1, 10, 0, 0, nil)
	checkRead(t, s, 1, 0, 0, 0, nil) // there is no instance 0
	checkRead(t, s, 3, 1, 0, 0, nil)
	checkRead(t, s, 2, 6, 0, 0, entries(2, 6, 6))
}

func TestReadLimits(t *testing.T) {
	s := open(t, t.TempDir(), true)
	defer s.Close()
	var recs []*pb.Record
	for i := uint64(1); i <= 10; i++ {
		recs = append(recs, entry(1, i, strings.Repeat("x", 10), false)) // 10 bytes of data each
	}
	mustWrite(t, s, recs...)
	for _, c := range []struct {
		maxEntries, maxBytes, want int
	}{
		{0, 0, 10},
		{-1, -1, 10},
		{3, 0, 3},
		{1, 0, 1},
		{100, 0, 10},
		{0, 1, 1},  // one entry always fits
		{0, 10, 1}, // reaching maxBytes stops
		{0, 11, 2}, // the entry that crosses it is included
		{0, 25, 3}, // 30 bytes
		{0, 100, 10},
		{0, 1000, 10},
		{2, 25, 2}, // the first limit reached wins
		{5, 25, 3},
	} {
		t.Run(fmt.Sprintf("entries=%d,bytes=%d", c.maxEntries, c.maxBytes), func(t *testing.T) {
			checkRead(t, s, 1, 1, c.maxEntries, c.maxBytes, recs[:c.want])
		})
	}
	// Entries without data count zero bytes.
	mustWrite(t, s, &pb.Record{Group: 2, Entry: &pb.Entry{Instance: 1}}, &pb.Record{Group: 2, Entry: &pb.Entry{Instance: 2, Value: &pb.Value{Noop: true}}})
	if got, err := readWait(t, s, 2, 1, 0, 1); err != nil || len(got) != 2 {
		t.Errorf("Read of entries without data: %d entries, %v; want 2", len(got), err)
	}
}

func TestReadCleanMark(t *testing.T) {
	s := open(t, t.TempDir(), true)
	defer s.Close()
	mustWrite(t, s, entries(1, 1, 10)...)
	mustWrite(t, s, clean(1, 4))
	checkRead(t, s, 1, 3, 0, 0, nil) // below the mark
	checkRead(t, s, 1, 1, 0, 0, nil)
	checkRead(t, s, 1, 4, 0, 0, entries(1, 4, 10))
	checkRead(t, s, 1, 8, 2, 0, entries(1, 8, 9))
	waitNoEntriesBelow(t, s, 1, 4)
	checkRead(t, s, 1, 4, 0, 0, entries(1, 4, 10))
}

// TestReadSeesUnsyncedWrites: Read sees every Write before it, without a
// Sync, and does not wait for fsyncs of its own.
func TestReadSeesUnsyncedWrites(t *testing.T) {
	s := open(t, t.TempDir(), true)
	defer s.Close()
	for i := uint64(1); i <= 100; i++ {
		mustWrite(t, s, entry(1, i, fmt.Sprint(i), false))
		got, err := readWait(t, s, 1, 1, 0, 0)
		if err != nil || uint64(len(got)) != i {
			t.Fatalf("Read after %d writes: %d entries, %v", i, len(got), err)
		}
	}
	if st := s.Stats(); st.Syncs != 0 {
		t.Errorf("Stats.Syncs = %d, want 0: Read must not fsync", st.Syncs)
	}
}

// TestReadAsync: Read returns before done runs, and done runs on another
// goroutine, so a caller may hold a lock that done needs.
func TestReadAsync(t *testing.T) {
	s := open(t, t.TempDir(), true)
	defer s.Close()
	mustWrite(t, s, entries(1, 1, 3)...)
	var mu sync.Mutex
	got := make(chan int, 1)
	mu.Lock()
	s.Read(1, 1, 0, 0, func(ents []*pb.Entry, err error) {
		mu.Lock()
		defer mu.Unlock()
		got <- len(ents)
	})
	mu.Unlock()
	if n := <-got; n != 3 {
		t.Errorf("Read: %d entries, want 3", n)
	}
	s.Read(1, 1, 0, 0, nil) // nil done is allowed
}

func TestReadCorrupt(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, true)
	mustWrite(t, s, entries(7, 1, 5)...)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	corruptEntry(t, dir, 7, 3, encodeValue([]byte{0x0a, 0x05, 0x01}))
	s = open(t, dir, true)
	defer s.Close()
	checkRead(t, s, 7, 1, 2, 0, entries(7, 1, 2)) // stops before the bad one
	_, err := readWait(t, s, 7, 1, 0, 0)
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Read over a corrupt entry: %v, want ErrCorrupt", err)
	}
	for _, want := range []string{dir, "group 7", "instance 3"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Read error %q does not mention %q", err, want)
		}
	}
}

func TestReadClosed(t *testing.T) {
	s := open(t, t.TempDir(), true)
	mustWrite(t, s, entries(1, 1, 3)...)
	// Reads in flight when Close begins complete, done included, before
	// Close returns.
	var finished atomic.Int32
	for range 10 {
		s.Read(1, 1, 0, 0, func(ents []*pb.Entry, err error) {
			time.Sleep(20 * time.Millisecond)
			if err == nil && len(ents) == 3 || errors.Is(err, ErrClosed) {
				finished.Add(1)
			} else {
				t.Errorf("Read in flight at Close: %d entries, %v", len(ents), err)
			}
		})
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if n := finished.Load(); n != 10 {
		t.Errorf("Close returned with %d of 10 Reads done", n)
	}
	if _, err := readWait(t, s, 1, 1, 0, 0); !errors.Is(err, ErrClosed) {
		t.Errorf("Read after Close = %v, want ErrClosed", err)
	}
}

func TestReadAfterWriteFailure(t *testing.T) {
	s := open(t, t.TempDir(), true)
	syncWait(t, s)
	s.db.Close() // every later batch write fails
	mustWrite(t, s, entry(1, 1, "a", false))
	if _, err := readWait(t, s, 1, 1, 0, 0); err == nil || !errors.Is(err, leveldb.ErrClosed) {
		t.Errorf("Read on broken storage = %v, want the write error", err)
	}
	s.Close()
}

// TestReadConcurrent runs Reads of several groups while their logs are
// written, rewritten and cleaned, under the race detector: every Read
// returns a contiguous run from its from, never below the mark it saw,
// each entry the value last written for its instance at most.
func TestReadConcurrent(t *testing.T) {
	s := open(t, t.TempDir(), true)
	defer s.Close()
	const (
		groups = 4
		n      = 2000
	)
	var wg, writers sync.WaitGroup
	var written [groups]atomic.Uint64 // highest instance written
	var marks [groups]atomic.Uint64   // highest clean mark written
	stop := make(chan struct{})
	for g := uint64(0); g < groups; g++ {
		writers.Add(1)
		go func() { // writer
			defer writers.Done()
			for i := uint64(1); i <= n; i++ {
				recs := []*pb.Record{entry(g, i, fmt.Sprint(i), false)}
				if i%7 == 0 {
					recs = append(recs, entry(g, i-3, fmt.Sprint(i-3), true)) // rewrite, chosen now
				}
				if i%100 == 0 {
					recs = append(recs, clean(g, i-50))
					// Before the Write: readers take it for an upper
					// bound of the marks they may see.
					marks[g].Store(i - 50)
				}
				if err := s.Write(recs); err != nil {
					t.Error(err)
					return
				}
				written[g].Store(i)
				if i%10 == 0 {
					done := make(chan error, 1)
					s.Sync(func(err error) { done <- err })
					if err := <-done; err != nil {
						t.Error(err)
						return
					}
				}
			}
		}()
		for r := 0; r < 2; r++ {
			wg.Add(1)
			go func() { // reader
				defer wg.Done()
				for k := 0; ; k++ {
					select {
					case <-stop:
						return
					default:
					}
					mark, head := marks[g].Load(), written[g].Load()
					from := mark + uint64(k%60)
					if from == 0 {
						from = 1
					}
					ents, err := readWait(t, s, g, from, 50+k%50, 0)
					if err != nil {
						t.Error(err)
						return
					}
					// Written before the Read: from..min(head, from+limit) is there,
					// unless a later mark passed from.
					if len(ents) == 0 && from <= head && marks[g].Load() <= from {
						t.Errorf("group %d: Read from %d (head %d, mark %d) returned nothing", g, from, head, mark)
						return
					}
					for i, e := range ents {
						if e.Instance != from+uint64(i) || string(e.Value.Data) != fmt.Sprint(e.Instance) {
							t.Errorf("group %d: Read from %d: entry %d is %v", g, from, i, e)
							return
						}
					}
				}
			}()
		}
	}
	writers.Wait()
	close(stop)
	wg.Wait()
	for g := uint64(0); g < groups; g++ {
		mark := uint64(n - 50)
		recs, err := s.Load(g, 0)
		if err != nil || len(recs) != 1+51 || recs[0].CleanBelow != mark {
			t.Errorf("Load(%d): %d records, %v; want the mark %d and 51 entries", g, len(recs), err, mark)
		}
	}
}

package storage

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/syndtr/goleveldb/leveldb/util"

	pb "github.com/paxoskit/paxos/core/paxospb"
	"github.com/paxoskit/paxos/env"
)

func openCkpts(t testing.TB, dir string, sync bool) *Checkpoints {
	t.Helper()
	c, err := OpenCheckpoints(dir, sync, nil)
	if err != nil {
		t.Fatalf("OpenCheckpoints(%s): %v", dir, err)
	}
	return c
}

// writeCkpt creates, writes and commits a checkpoint.
func writeCkpt(t testing.TB, c env.Checkpoints, group, instance uint64, data string) {
	t.Helper()
	w, err := c.Create(group, instance)
	if err != nil {
		t.Fatalf("Create(%d, %d): %v", group, instance, err)
	}
	if _, err := io.WriteString(w, data); err != nil {
		t.Fatalf("Write: %v", err)
	}
	if err := w.Commit(); err != nil {
		t.Fatalf("Commit(%d, %d): %v", group, instance, err)
	}
}

func checkLatest(t testing.TB, c env.Checkpoints, group, want uint64) {
	t.Helper()
	got, err := c.Latest(group)
	if err != nil || got != want {
		t.Fatalf("Latest(%d) = %d, %v; want %d", group, got, err, want)
	}
}

func readCkpt(t testing.TB, c env.Checkpoints, group, instance uint64) string {
	t.Helper()
	r, err := c.Open(group, instance)
	if err != nil {
		t.Fatalf("Open(%d, %d): %v", group, instance, err)
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// names lists a directory's entries.
func names(t testing.TB, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

func TestCheckpointsRoundTrip(t *testing.T) {
	for _, sync := range []bool{true, false} {
		t.Run(fmt.Sprint("sync=", sync), func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "checkpoints")
			c := openCkpts(t, dir, sync)
			checkLatest(t, c, 1, 0)

			w, err := c.Create(1, 10)
			if err != nil {
				t.Fatal(err)
			}
			big := bytes.Repeat([]byte("0123456789"), 100_000)
			if _, err := w.Write(big); err != nil {
				t.Fatal(err)
			}
			checkLatest(t, c, 1, 0) // not visible before Commit
			if _, err := c.Open(1, 10); err == nil {
				t.Fatal("Open of an uncommitted checkpoint succeeded")
			}
			if err := w.Commit(); err != nil {
				t.Fatal(err)
			}
			w.Abort() // no-op after Commit
			if err := w.Commit(); err == nil {
				t.Error("second Commit succeeded")
			}
			if _, err := w.Write([]byte("x")); err == nil {
				t.Error("Write after Commit succeeded")
			}
			checkLatest(t, c, 1, 10)
			checkLatest(t, c, 2, 0)
			if got := readCkpt(t, c, 1, 10); got != string(big) {
				t.Fatalf("checkpoint read back: %d bytes, want %d", len(got), len(big))
			}
			if got := names(t, filepath.Join(dir, "g1")); !slices.Equal(got, []string{"00000000000000000010.ckpt"}) {
				t.Errorf("group directory holds %v", got)
			}

			// A newer checkpoint replaces it; the old one, open for
			// reading, stays readable.
			old, err := c.Open(1, 10)
			if err != nil {
				t.Fatal(err)
			}
			writeCkpt(t, c, 1, 25, "twenty-five")
			checkLatest(t, c, 1, 25)
			if got := readCkpt(t, c, 1, 25); got != "twenty-five" {
				t.Errorf("checkpoint 25 = %q", got)
			}
			if b, err := io.ReadAll(old); err != nil || !bytes.Equal(b, big) {
				t.Errorf("old checkpoint open during Commit: %d bytes, %v", len(b), err)
			}
			old.Close()
			_, err = c.Open(1, 10)
			if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), filepath.Join(dir, "g1", "00000000000000000010.ckpt")) {
				t.Errorf("Open of a removed checkpoint = %v, want ErrNotExist naming the path", err)
			}
			// The same instance again replaces it.
			writeCkpt(t, c, 1, 25, "again")
			if got := readCkpt(t, c, 1, 25); got != "again" {
				t.Errorf("checkpoint 25 rewritten = %q", got)
			}
			// An empty checkpoint, a huge instance, another group.
			writeCkpt(t, c, 1<<64-1, 1<<64-1, "")
			checkLatest(t, c, 1<<64-1, 1<<64-1)
			if got := readCkpt(t, c, 1<<64-1, 1<<64-1); got != "" {
				t.Errorf("empty checkpoint = %q", got)
			}

			// Reopen: everything is still there.
			c = openCkpts(t, dir, sync)
			checkLatest(t, c, 1, 25)
			checkLatest(t, c, 1<<64-1, 1<<64-1)
		})
	}
}

func TestCheckpointsAbort(t *testing.T) {
	dir := t.TempDir()
	c := openCkpts(t, dir, true)
	writeCkpt(t, c, 3, 5, "five")
	w, err := c.Create(3, 9)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(w, "nine")
	w.Abort()
	w.Abort()
	if err := w.Commit(); err == nil {
		t.Error("Commit after Abort succeeded")
	}
	if _, err := w.Write([]byte("x")); err == nil {
		t.Error("Write after Abort succeeded")
	}
	checkLatest(t, c, 3, 5)
	if got := names(t, filepath.Join(dir, "g3")); !slices.Equal(got, []string{"00000000000000000005.ckpt"}) {
		t.Errorf("after Abort the group directory holds %v", got)
	}
}

// TestCheckpointsCrash: a crash during a checkpoint leaves its temporary
// file, which Latest ignores and OpenCheckpoints removes.
func TestCheckpointsCrash(t *testing.T) {
	dir := t.TempDir()
	c := openCkpts(t, dir, true)
	writeCkpt(t, c, 1, 7, "seven")
	w, err := c.Create(1, 12)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(w, "half of twel")
	// Crash: neither Commit nor Abort.
	checkLatest(t, c, 1, 7)
	tmp := filepath.Join(dir, "g1", "00000000000000000030.1234.tmp")
	if err := os.WriteFile(tmp, []byte("older crash"), 0o644); err != nil {
		t.Fatal(err)
	}
	if n := len(names(t, filepath.Join(dir, "g1"))); n != 3 {
		t.Fatalf("group directory holds %d files, want 3", n)
	}
	c = openCkpts(t, dir, true)
	checkLatest(t, c, 1, 7)
	if got := names(t, filepath.Join(dir, "g1")); !slices.Equal(got, []string{"00000000000000000007.ckpt"}) {
		t.Errorf("after OpenCheckpoints the group directory holds %v", got)
	}
	if got := readCkpt(t, c, 1, 7); got != "seven" {
		t.Errorf("checkpoint 7 = %q", got)
	}
}

// TestCheckpointsBadContents: files and directories that are not
// checkpoints are ignored.
func TestCheckpointsBadContents(t *testing.T) {
	dir := t.TempDir()
	c := openCkpts(t, dir, true)
	writeCkpt(t, c, 2, 40, "forty")
	g := filepath.Join(dir, "g2")
	for _, name := range []string{
		"garbage.ckpt", "123.ckpt", "00000000000000000000.ckpt", "-0000000000000000099.ckpt",
		"99999999999999999999.ckpt", // overflows uint64
		"00000000000000000099.ckpt.bak", "notes.txt", "00000000000000000099",
	} {
		if err := os.WriteFile(filepath.Join(g, name), []byte("junk"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(g, "00000000000000000077.ckpt"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(g, "00000000000000000078.tmp"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"gx", "g", "junk.tmp", "g5"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("junk"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	c = openCkpts(t, dir, true)
	checkLatest(t, c, 2, 40)
	// g5 is a file, not a directory: an error, naming it.
	if _, err := c.Latest(5); err == nil || !strings.Contains(err.Error(), filepath.Join(dir, "g5")) {
		t.Errorf("Latest of a group whose directory is a file = %v, want an error naming it", err)
	}
	if _, err := c.Create(5, 1); err == nil || !strings.Contains(err.Error(), filepath.Join(dir, "g5")) {
		t.Errorf("Create in a group whose directory is a file = %v, want an error naming it", err)
	}
	// Commit removes older checkpoints only, not the junk.
	writeCkpt(t, c, 2, 50, "fifty")
	checkLatest(t, c, 2, 50)
	if got := names(t, g); len(got) != 11 || slices.Contains(got, "00000000000000000040.ckpt") {
		t.Errorf("after Commit the group directory holds %v", got)
	}
}

func TestCheckpointsErrors(t *testing.T) {
	dir := t.TempDir()
	c := openCkpts(t, dir, true)
	if _, err := c.Create(1, 0); err == nil {
		t.Error("Create at instance 0 succeeded")
	}
	if _, err := c.Open(1, 0); err == nil {
		t.Error("Open at instance 0 succeeded")
	}
	if _, err := c.Open(1, 3); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Open of a missing checkpoint = %v, want ErrNotExist", err)
	}
	file := filepath.Join(dir, "file")
	os.WriteFile(file, nil, 0o644)
	if _, err := OpenCheckpoints(file, true, nil); err == nil || !strings.Contains(err.Error(), file) {
		t.Errorf("OpenCheckpoints of a file = %v, want an error naming it", err)
	}
	if _, err := OpenCheckpoints("", true, nil); err == nil {
		t.Error("OpenCheckpoints of an empty path succeeded")
	}
	nested := filepath.Join(dir, "a", "b", "c")
	c = openCkpts(t, nested, true)
	writeCkpt(t, c, 1, 1, "x")
	checkLatest(t, c, 1, 1)
}

// TestCheckpointsConcurrent creates, commits, aborts and reads checkpoints
// of several groups at once, under the race detector.
func TestCheckpointsConcurrent(t *testing.T) {
	c := openCkpts(t, t.TempDir(), false)
	var wg sync.WaitGroup
	for g := uint64(1); g <= 4; g++ {
		wg.Add(2)
		go func() { // writer
			defer wg.Done()
			for i := uint64(1); i <= 40; i++ {
				w, err := c.Create(g, i)
				if err != nil {
					t.Error(err)
					return
				}
				fmt.Fprintf(w, "group %d instance %d", g, i)
				if i%5 == 0 {
					w.Abort()
					continue
				}
				if err := w.Commit(); err != nil {
					t.Error(err)
					return
				}
			}
		}()
		go func() { // reader: whatever is latest is whole
			defer wg.Done()
			for range 200 {
				inst, err := c.Latest(g)
				if err != nil {
					t.Error(err)
					return
				}
				if inst == 0 {
					continue
				}
				r, err := c.Open(g, inst)
				if errors.Is(err, fs.ErrNotExist) {
					continue // replaced meanwhile
				}
				if err != nil {
					t.Error(err)
					return
				}
				b, err := io.ReadAll(r)
				r.Close()
				if want := fmt.Sprintf("group %d instance %d", g, inst); err != nil || string(b) != want {
					t.Errorf("checkpoint %d/%d = %q, %v; want %q", g, inst, b, err, want)
					return
				}
			}
		}()
	}
	wg.Wait()
	for g := uint64(1); g <= 4; g++ {
		checkLatest(t, c, g, 39)
	}
}

// TestCheckpointsInsideDatabase: the checkpoint store may live in a
// subdirectory of the goleveldb directory (as real.Open puts it): goleveldb
// ignores it across writes, compactions, close and reopen.
func TestCheckpointsInsideDatabase(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(Options{Dir: dir, Sync: true, writeBuffer: 64 << 10, compactBytes: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	c := openCkpts(t, filepath.Join(dir, "checkpoints"), true)
	writeCkpt(t, c, 1, 100, "hundred")
	// A stray .tmp in the checkpoint directory must not confuse
	// goleveldb either (its temporary files are named N.tmp).
	w, err := c.Create(1, 200)
	if err != nil {
		t.Fatal(err)
	}
	data := strings.Repeat("d", 1000)
	for i := uint64(1); i <= 3000; i += 100 {
		var recs []*pb.Record
		for j := i; j < i+100; j++ {
			recs = append(recs, entry(1, j, data, true))
		}
		if i > 1000 {
			recs = append(recs, clean(1, i-1000))
		}
		mustWrite(t, s, recs...)
		syncWait(t, s)
	}
	waitDeleted(t, s, 1900)
	if err := s.db.CompactRange(util.Range{}); err != nil {
		t.Fatalf("full compaction: %v", err)
	}
	st := s.Stats()
	t.Logf("stats %+v, journals fsynced on close %d", st, s.stor.closes.Load())
	if st.Compacts == 0 {
		t.Error("no range compaction ran")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = open(t, dir, true)
	defer s.Close()
	recs, err := s.Load(1, 0)
	if err != nil || len(recs) != 1+1100 {
		t.Fatalf("Load after reopen: %d records, %v; want 1101", len(recs), err)
	}
	w.Abort()
	checkLatest(t, c, 1, 100)
	c = openCkpts(t, filepath.Join(dir, "checkpoints"), true)
	if got := readCkpt(t, c, 1, 100); got != "hundred" {
		t.Errorf("checkpoint after reopen = %q", got)
	}
}

package real

import (
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	pb "github.com/paxoskit/paxos/core/paxospb"
)

func TestTmpWorker(t *testing.T) {
	loop := NewLoop()
	w := NewWorker(loop)
	var onLoop atomic.Bool
	res := make(chan error, 1)
	boom := errors.New("boom")
	w.Go(func() error { return boom }, func(err error) {
		// on the loop: post something and check ordering via the loop
		onLoop.Store(true)
		res <- err
	})
	if err := <-res; !errors.Is(err, boom) || !onLoop.Load() {
		t.Fatalf("done(%v)", err)
	}
	w.Go(func() error { return nil }, nil)
	// A running job: Close+Stop+Wait waits for it, done dropped.
	started, release := make(chan struct{}), make(chan struct{})
	var jobEnded, doneRan atomic.Bool
	w.Go(func() error { close(started); <-release; jobEnded.Store(true); return nil }, func(error) { doneRan.Store(true) })
	<-started
	w.Close()
	var lateJob atomic.Bool
	w.Go(func() error { lateJob.Store(true); return nil }, func(error) { lateJob.Store(true) })
	loop.Stop()
	go func() { time.Sleep(50 * time.Millisecond); close(release) }()
	w.Wait()
	if !jobEnded.Load() {
		t.Fatal("Wait returned before the job")
	}
	time.Sleep(20 * time.Millisecond)
	if doneRan.Load() || lateJob.Load() {
		t.Fatalf("done ran %v, late job ran %v", doneRan.Load(), lateJob.Load())
	}
}

func TestTmpOpen(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close()
	dir := t.TempDir()
	e, err := Open(Config{ID: 1, ClusterID: 9, Peers: map[uint64]string{1: addr}, DataDir: dir, NoSync: false})
	if err != nil {
		t.Fatal(err)
	}
	if e.Checkpoints == nil || e.Worker == nil {
		t.Fatal("missing seams")
	}
	if err := e.Storage.Write([]*pb.Record{{Group: 1, Entry: &pb.Entry{Instance: 1, Value: &pb.Value{Data: []byte("a")}}}}); err != nil {
		t.Fatal(err)
	}
	got := make(chan int, 1)
	e.Storage.Read(1, 1, 0, 0, func(ents []*pb.Entry, err error) { got <- len(ents) })
	if n := <-got; n != 1 {
		t.Fatal(n)
	}
	done := make(chan error, 1)
	e.Worker.Go(func() error {
		w, err := e.Checkpoints.Create(1, 5)
		if err != nil {
			return err
		}
		io.WriteString(w, "ckpt")
		return w.Commit()
	}, func(err error) { done <- err })
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(dir, "checkpoints", "g1", "00000000000000000005.ckpt")); err != nil || fi.Size() != 4 {
		t.Fatal(fi, err)
	}
	recs, err := e.Storage.Load(1, 0)
	if err != nil || len(recs) != 1 {
		t.Fatal(recs, err)
	}
	// Close waits for a running job, which may still use the storage.
	started := make(chan struct{})
	var jobErr atomic.Pointer[error]
	e.Worker.Go(func() error {
		close(started)
		time.Sleep(100 * time.Millisecond)
		err := e.Storage.Write([]*pb.Record{{Group: 1, Entry: &pb.Entry{Instance: 2}}})
		jobErr.Store(&err)
		return nil
	}, func(error) { t.Error("done ran after Close") })
	<-started
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if v := jobErr.Load(); v == nil {
		t.Fatal("Close returned before the job")
	} else if *v != nil {
		t.Fatalf("job's Write: %v", *v)
	}
	e.Worker.Go(func() error { t.Error("job after Close"); return nil }, nil)
	time.Sleep(20 * time.Millisecond)
}

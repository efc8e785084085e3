package paxos_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/paxoskit/paxos"
	"github.com/paxoskit/paxos/real"
	"github.com/paxoskit/paxos/real/storage"
)

// counterSM counts executions; safe for the test goroutine to read.
type counterSM struct {
	id uint32
	mu sync.Mutex
	n  int
}

func (c *counterSM) SMID() uint32 { return c.id }
func (c *counterSM) Execute(group, instance uint64, value []byte, ctx any) (any, error) {
	c.mu.Lock()
	c.n++
	c.mu.Unlock()
	return string(value), nil
}

func (c *counterSM) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

// TestProductionEnv runs three nodes on loopback TCP and goleveldb through
// RunNode's own environment: proposals, the query methods, AddStateMachine,
// Close, and a restart that replays the log from disk.
func TestProductionEnv(t *testing.T) {
	dir := t.TempDir()
	peers, err := loopbackPeers(3)
	if err != nil {
		t.Fatal(err)
	}
	start := func(id uint64, sms ...paxos.StateMachine) *paxos.Node {
		n, err := real.RunNode(paxos.Options{MyNode: id, ClusterID: 7, StateMachines: sms},
			real.Config{Peers: peers, DataDir: filepath.Join(dir, fmt.Sprint(id))})
		if err != nil {
			t.Fatalf("node %d: %v", id, err)
		}
		return n
	}
	sms := []*counterSM{{id: 1}, {id: 1}, {id: 1}}
	nodes := []*paxos.Node{start(1, sms[0]), start(2, sms[1]), start(3, sms[2])}
	defer func() {
		for _, n := range nodes {
			n.Close()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	// Instance 1 holds the first master's record; a change of master under
	// load would put another record between the values.
	var last uint64
	for i := range 5 {
		res, err := nodes[i%3].Propose(ctx, 0, []byte(fmt.Sprint("v", i)), &paxos.SMCtx{SMID: 1})
		if err != nil {
			t.Fatalf("propose %d: %v", i, err)
		}
		if res.Value != fmt.Sprint("v", i) || res.Instance <= max(last, 1) {
			t.Fatalf("propose %d: result %+v after instance %d", i, res, last)
		}
		last = res.Instance
	}
	// Node 1 executes the last value once it learns it was chosen.
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if now, _ := nodes[0].NowInstanceID(0); now > last {
			break
		}
	}
	if now, err := nodes[0].NowInstanceID(0); err != nil || now <= last {
		t.Fatalf("NowInstanceID = %d, %v; want above %d", now, err, last)
	}
	if min, err := nodes[0].MinChosenInstanceID(0); err != nil || min != 1 {
		t.Fatalf("MinChosenInstanceID = %d, %v; want 1", min, err)
	}
	if _, err := nodes[0].NowInstanceID(9); !errors.Is(err, paxos.ErrUnknownGroup) {
		t.Fatalf("NowInstanceID(9) error %v, want ErrUnknownGroup", err)
	}

	// A second state machine, added on every node before values for it.
	extra := []*counterSM{{id: 2}, {id: 2}, {id: 2}}
	for i, n := range nodes {
		if err := n.AddStateMachine(extra[i]); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := nodes[1].Propose(ctx, 0, []byte("x"), &paxos.SMCtx{SMID: 2}); err != nil {
		t.Fatal(err)
	}
	if extra[1].count() != 1 {
		t.Fatalf("state machine 2 on the proposer ran %d times, want 1", extra[1].count())
	}

	// Node 3 closes; proposals to it fail at once, the other two go on.
	nodes[2].Close()
	had := sms[2].count() // the loop has stopped: final
	if _, err := nodes[2].Propose(ctx, 0, []byte("late"), nil); !errors.Is(err, paxos.ErrClosed) {
		t.Fatalf("propose on a closed node: %v, want ErrClosed", err)
	}
	// A value forwarded to a master that just closed is lost (its outcome
	// unknown): wait until node 1 knows a live master.
	waitMaster(t, nodes[0], 3)
	if _, err := nodes[0].Propose(ctx, 0, []byte("two of three"), nil); err != nil {
		t.Fatalf("propose with node 3 down: %v", err)
	}
	// Enough values that node 3 must stream them from a peer. Meanwhile a
	// reader polls every status method (go test -race checks them).
	const missed = 2000
	stopPoll := make(chan struct{})
	polled := make(chan uint64)
	go func() {
		var last uint64
		for {
			select {
			case <-stopPoll:
				// The proposers returned; the status is published when
				// the handler that executed their values ends.
				for deadline := time.Now().Add(5 * time.Second); last < missed && time.Now().Before(deadline); time.Sleep(time.Millisecond) {
					for _, n := range nodes[:2] {
						if st, err := n.Status(0); err == nil {
							last = max(last, st.Chosen)
						}
					}
				}
				polled <- last
				return
			default:
			}
			for _, n := range nodes[:2] {
				st, err := n.Status(0)
				now, err2 := n.NowInstanceID(0)
				s := n.Stats()
				if err != nil || err2 != nil || st.Executed+1 > now+1 || s.Env.Fsyncs == 0 {
					t.Errorf("status %+v (%v), now %d (%v), stats %+v", st, err, now, err2, s)
				}
				last = max(last, st.Chosen)
			}
		}
	}()
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for w := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < missed; i += 32 {
				if _, err := nodes[i%2].Propose(ctx, 0, []byte(fmt.Sprint("m", i)), nil); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("propose with node 3 down: %v", err)
	}
	close(stopPoll)
	if last := <-polled; last < missed {
		t.Errorf("the status reader saw chosen up to %d, want at least %d", last, missed)
	}

	// Restarted on its directory, node 3 replays its log into a fresh
	// state machine before RunNode returns, then catches up.
	fresh := &counterSM{id: 1}
	restarted := time.Now()
	nodes[2] = start(3, fresh, &counterSM{id: 2})
	// (Values executed just before Close whose chosen mark waited for a
	// sync in flight are not replayed: they are learned again.)
	if got := fresh.count(); got < 2 || got > had || had < 5 {
		t.Fatalf("RunNode returned with %d values replayed, want 2 to the %d node 3 had executed", got, had)
	}
	deadline := restarted.Add(30 * time.Second)
	for fresh.count() < 6+missed {
		if time.Now().After(deadline) {
			t.Fatalf("restarted node executed %d values, want %d", fresh.count(), 6+missed)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("node 3 replayed and caught up %d values in %v", fresh.count(), time.Since(restarted))
}

// TestProductionIdentity is the typo the issue found by hand: node 3
// restarted on its data directory with only itself in the peer list. The
// start is refused before anything is written, its port is released, and
// the right peer list starts again.
func TestProductionIdentity(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "3")
	peers, err := loopbackPeers(3)
	if err != nil {
		t.Fatal(err)
	}
	opts := paxos.Options{MyNode: 3, ClusterID: 7, StateMachines: []paxos.StateMachine{&counterSM{id: 1}}}
	n, err := real.RunNode(opts, real.Config{Peers: peers, DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	n.Close()
	// What the directory holds, as a node would read it: the identity and
	// every record. (goleveldb reorganises its files on each open.)
	files := func() string {
		st, err := storage.Open(storage.Options{Dir: dir})
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		id, err := st.Identity()
		if err != nil {
			t.Fatal(err)
		}
		recs, err := st.Load(0, 0)
		if err != nil {
			t.Fatal(err)
		}
		return fmt.Sprint(id, recs)
	}
	before := files()

	for name, bad := range map[string]struct {
		opts  paxos.Options
		peers map[uint64]string
	}{
		"only itself":   {opts, map[uint64]string{3: peers[3]}},
		"other cluster": {paxos.Options{MyNode: 3, ClusterID: 8}, peers},
		"swapped dirs":  {paxos.Options{MyNode: 2, ClusterID: 7}, peers},
	} {
		n, err := real.RunNode(bad.opts, real.Config{Peers: bad.peers, DataDir: dir})
		if !errors.Is(err, paxos.ErrIdentityMismatch) || n != nil {
			t.Fatalf("%s: RunNode = %v, %v; want ErrIdentityMismatch", name, n, err)
		}
		t.Logf("%s: %v", name, err)
		if after := files(); before != after {
			t.Errorf("%s: the refused start changed the data directory: %v -> %v", name, before, after)
		}
	}
	// The port was released and the right configuration starts.
	n, err = real.RunNode(opts, real.Config{Peers: peers, DataDir: dir})
	if err != nil {
		t.Fatalf("restart with the right peers: %v", err)
	}
	n.Close()

	// Bad options are refused before the directory is even created.
	fresh := filepath.Join(t.TempDir(), "never")
	for name, cfg := range map[string]real.Config{
		"listen elsewhere":  {Peers: peers, DataDir: fresh, ListenAddr: "127.0.0.1:1"},
		"two ids, one addr": {Peers: map[uint64]string{1: peers[1], 2: peers[1], 3: peers[3]}, DataDir: fresh},
		"no data dir":       {Peers: peers},
	} {
		if _, err := real.RunNode(opts, cfg); !errors.Is(err, paxos.ErrInvalidOptions) {
			t.Errorf("%s: %v, want ErrInvalidOptions", name, err)
		}
	}
	if _, err := os.Stat(fresh); !os.IsNotExist(err) {
		t.Errorf("invalid options created the data directory: %v", err)
	}
}

// lockedSum is a Checkpointer safe to read from the test goroutine.
type lockedSum struct {
	mu  sync.Mutex
	sum uint64
}

func (s *lockedSum) SMID() uint32 { return 1 }
func (s *lockedSum) Execute(group, instance uint64, value []byte, ctx any) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sum += uint64(len(value))
	return nil, nil
}
func (s *lockedSum) get() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sum
}
func (s *lockedSum) PrepareCheckpoint(group, instance uint64) (any, error) { return s.get(), nil }
func (s *lockedSum) SaveCheckpoint(group uint64, view any, w io.Writer) error {
	_, err := fmt.Fprint(w, view)
	return err
}
func (s *lockedSum) RestoreCheckpoint(group, instance uint64, r io.Reader) error {
	var v uint64
	if _, err := fmt.Fscan(r, &v); err != nil {
		return err
	}
	s.mu.Lock()
	s.sum = v
	s.mu.Unlock()
	return nil
}

// TestProductionCheckpoints: on TCP and goleveldb, checkpoints every 20
// instances with 10 held. A node restarts from its own newest checkpoint
// (RunNode returns with it restored, not with the log replayed from 1),
// then, having missed more than the others keep, catches up by a
// checkpoint transfer; the others cleaned their logs.
func TestProductionCheckpoints(t *testing.T) {
	dir := t.TempDir()
	peers, err := loopbackPeers(3)
	if err != nil {
		t.Fatal(err)
	}
	sms := map[uint64]*lockedSum{}
	start := func(id uint64) *paxos.Node {
		sms[id] = &lockedSum{}
		n, err := real.RunNode(paxos.Options{MyNode: id, ClusterID: 7, StateMachines: []paxos.StateMachine{sms[id]},
			CheckpointInterval: 20, HoldCount: 10},
			real.Config{Peers: peers, DataDir: filepath.Join(dir, fmt.Sprint(id))})
		if err != nil {
			t.Fatalf("node %d: %v", id, err)
		}
		return n
	}
	nodes := []*paxos.Node{start(1), start(2), start(3)}
	defer func() {
		for _, n := range nodes {
			n.Close()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	propose := func(k int) {
		for i := range k {
			if _, err := nodes[0].Propose(ctx, 0, []byte(fmt.Sprint("value ", i)), nil); err != nil {
				t.Fatalf("propose: %v", err)
			}
		}
	}
	waitSame := func(id uint64) paxos.GroupStatus {
		for ctx.Err() == nil {
			want, _ := nodes[0].Status(0)
			st, _ := nodes[id-1].Status(0)
			if st.Executed == want.Executed && sms[id].get() == sms[1].get() {
				return st
			}
			time.Sleep(5 * time.Millisecond)
		}
		t.Fatalf("node %d did not catch up", id)
		return paxos.GroupStatus{}
	}
	propose(100)
	waitSame(3)
	nodes[2].Close()
	waitMaster(t, nodes[0], 3)
	propose(100)

	// Restart the others too, so no send queue still holds what node 3
	// missed: the log they kept is all there is.
	for i := range 2 {
		nodes[i].Close()
		nodes[i] = start(uint64(i + 1))
	}
	nodes[2] = start(3)
	waitMaster(t, nodes[0], 0)
	st, _ := nodes[2].Status(0)
	if st.Checkpoint < 80 || st.Executed < st.Checkpoint || sms[3].get() == 0 {
		t.Fatalf("node 3 restarted with checkpoint %d, executed %d, state %d: want its own checkpoint restored", st.Checkpoint, st.Executed, sms[3].get())
	}
	st = waitSame(3)
	if s := nodes[2].Stats(); s.Installs == 0 || s.SnapBytesRecv == 0 {
		t.Errorf("node 3 caught up without a checkpoint transfer: %+v", s)
	}
	one, _ := nodes[0].Status(0)
	if min, _ := nodes[0].MinChosenInstanceID(0); one.LogStart <= 1 || min != one.LogStart || one.Checkpoint < 180 {
		t.Errorf("node 1: log start %d, MinChosenInstanceID %d, checkpoint %d", one.LogStart, min, one.Checkpoint)
	}
	files, err := filepath.Glob(filepath.Join(dir, "1", "checkpoints", "g0", "*.ckpt"))
	if err != nil || len(files) != 1 {
		t.Errorf("node 1 keeps checkpoint files %v (%v), want the newest only", files, err)
	}
	t.Logf("node 3: installed checkpoint, executed %d; node 1 log starts at %d, checkpoint %d", st.Executed, one.LogStart, one.Checkpoint)
}

// waitMaster waits until n knows a master other than node not.
func waitMaster(t *testing.T, n *paxos.Node, not uint64) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if m, _ := n.Master(0); m.Node != 0 && m.Node != not {
			return
		}
	}
	t.Fatalf("node %d knows no master but %d", n.MyNodeID(), not)
}

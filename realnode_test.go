package paxos_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/paxoskit/paxos"
)

// counterSM counts executions; safe for the test goroutine to read.
type counterSM struct {
	id uint32
	mu sync.Mutex
	n  int
}

func (c *counterSM) SMID() uint32 { return c.id }
func (c *counterSM) Execute(group, instance uint64, value []byte, ctx any) error {
	c.mu.Lock()
	c.n++
	c.mu.Unlock()
	if out, ok := ctx.(*string); ok {
		*out = string(value)
	}
	return nil
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
	peers := map[uint64]string{}
	for id := uint64(1); id <= 3; id++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		peers[id] = ln.Addr().String()
		ln.Close()
	}
	start := func(id uint64, sms ...paxos.StateMachine) *paxos.Node {
		n, err := paxos.RunNode(paxos.Options{
			MyNode: id, Peers: peers, ListenAddr: peers[id], ClusterID: 7,
			DataDir: filepath.Join(dir, fmt.Sprint(id)), StateMachines: sms,
		})
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

	for i := range 5 {
		var echo string
		inst, err := nodes[i%3].Propose(ctx, 0, []byte(fmt.Sprint("v", i)), &paxos.SMCtx{SMID: 1, Ctx: &echo})
		if err != nil {
			t.Fatalf("propose %d: %v", i, err)
		}
		if echo != fmt.Sprint("v", i) || inst != uint64(i+1) {
			t.Fatalf("propose %d: instance %d echo %q", i, inst, echo)
		}
	}
	if now, err := nodes[0].NowInstanceID(0); err != nil || now != 6 {
		t.Fatalf("NowInstanceID = %d, %v; want 6", now, err)
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
	if _, err := nodes[2].Propose(ctx, 0, []byte("late"), nil); !errors.Is(err, paxos.ErrClosed) {
		t.Fatalf("propose on a closed node: %v, want ErrClosed", err)
	}
	if _, err := nodes[0].Propose(ctx, 0, []byte("two of three"), nil); err != nil {
		t.Fatalf("propose with node 3 down: %v", err)
	}
	// Enough values that node 3 must stream them from a peer.
	const missed = 2000
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

	// Restarted on its directory, node 3 replays its log into a fresh
	// state machine and catches up.
	fresh := &counterSM{id: 1}
	restarted := time.Now()
	nodes[2] = start(3, fresh, &counterSM{id: 2})
	deadline := restarted.Add(30 * time.Second)
	for fresh.count() < 6+missed {
		if time.Now().After(deadline) {
			t.Fatalf("restarted node executed %d values, want %d", fresh.count(), 6+missed)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("node 3 replayed and caught up %d values in %v", fresh.count(), time.Since(restarted))
}

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
	"github.com/paxoskit/paxos/real"
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

	for i := range 5 {
		res, err := nodes[i%3].Propose(ctx, 0, []byte(fmt.Sprint("v", i)), &paxos.SMCtx{SMID: 1})
		if err != nil {
			t.Fatalf("propose %d: %v", i, err)
		}
		if res.Value != fmt.Sprint("v", i) || res.Instance != uint64(i+1) {
			t.Fatalf("propose %d: result %+v", i, res)
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
	had := sms[2].count() // the loop has stopped: final
	if _, err := nodes[2].Propose(ctx, 0, []byte("late"), nil); !errors.Is(err, paxos.ErrClosed) {
		t.Fatalf("propose on a closed node: %v, want ErrClosed", err)
	}
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
	if got := fresh.count(); got != had || had < 5 {
		t.Fatalf("RunNode returned with %d values replayed, want the %d node 3 had executed", got, had)
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

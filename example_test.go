package paxos_test

import (
	"context"
	"fmt"
	"log"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/paxoskit/paxos"
	"github.com/paxoskit/paxos/real"
)

// counter is a replicated counter: "inc" adds one, "get" reads. Execute
// returns the value after the command, which reaches the proposer.
type counter struct {
	mu sync.Mutex // Execute runs on the node's loop; value is read elsewhere
	n  int
}

func (c *counter) SMID() uint32 { return 1 }

func (c *counter) Execute(group, instance uint64, cmd []byte, ctx any) (any, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch string(cmd) {
	case "inc":
		c.n++
	case "get":
	default:
		return nil, fmt.Errorf("unknown command %q", cmd)
	}
	return c.n, nil
}

func (c *counter) value() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

// threeNodes starts a three-node cluster on loopback, one state machine
// list per node from sms, and returns the nodes and a function that stops
// them and removes their data.
func threeNodes(sms func(id uint64) []paxos.StateMachine) ([]*paxos.Node, func()) {
	dir, err := os.MkdirTemp("", "paxos-example-")
	if err != nil {
		log.Fatal(err)
	}
	peers, err := loopbackPeers(3)
	if err != nil {
		log.Fatal(err)
	}
	quiet := slog.New(slog.DiscardHandler)
	var nodes []*paxos.Node
	for id := uint64(1); id <= 3; id++ {
		node, err := real.RunNode(paxos.Options{
			MyNode:        id,
			ClusterID:     42,
			StateMachines: sms(id),
			Logger:        quiet,
		}, real.Config{Peers: peers, DataDir: filepath.Join(dir, strconv.FormatUint(id, 10))})
		if err != nil {
			log.Fatal(err)
		}
		nodes = append(nodes, node)
	}
	return nodes, func() {
		for _, n := range nodes {
			n.Close()
		}
		os.RemoveAll(dir)
	}
}

// loopbackPeers gives nodes 1..n distinct free loopback addresses (the
// listeners stay open until all are taken: closed one by one, the system
// may hand the same port out twice).
func loopbackPeers(n int) (map[uint64]string, error) {
	peers := map[uint64]string{}
	for id := range uint64(n) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		defer ln.Close()
		peers[id+1] = ln.Addr().String()
	}
	return peers, nil
}

// waitExecuted waits until every node has executed up to instance.
func waitExecuted(nodes []*paxos.Node, instance uint64) {
	for _, n := range nodes {
		for {
			if now, _ := n.NowInstanceID(0); now > instance {
				break
			}
			time.Sleep(time.Millisecond)
		}
	}
}

// A replicated counter on three nodes in one process: increments proposed
// on different nodes are executed by every node in the same order.
func Example() {
	counters := map[uint64]*counter{}
	nodes, stop := threeNodes(func(id uint64) []paxos.StateMachine {
		counters[id] = &counter{}
		return []paxos.StateMachine{counters[id]}
	})
	defer stop()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var last paxos.Result
	for i := range 5 {
		res, err := nodes[i%3].Propose(ctx, 0, []byte("inc"), nil)
		if err != nil {
			log.Fatal(err)
		}
		last = res
	}
	waitExecuted(nodes, last.Instance)
	for id := uint64(1); id <= 3; id++ {
		fmt.Printf("node %d: counter %d\n", id, counters[id].value())
	}
	// Output:
	// node 1: counter 5
	// node 2: counter 5
	// node 3: counter 5
}

// Propose returns what the state machine's Execute returned on the
// proposing node: here the counter's value after the increment.
func ExampleNode_Propose() {
	nodes, stop := threeNodes(func(uint64) []paxos.StateMachine {
		return []paxos.StateMachine{&counter{}}
	})
	defer stop()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// Instances grow with each value (a change of master adds its record
	// between them, so the numbers themselves vary).
	var last uint64
	for range 3 {
		res, err := nodes[0].Propose(ctx, 0, []byte("inc"), nil)
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("a later instance: %v, counter is %d\n", res.Instance > last, res.Value)
		last = res.Instance
	}
	// A command the machine refuses comes back as ErrExecuteFailed.
	_, err := nodes[1].Propose(ctx, 0, []byte("reset"), nil)
	fmt.Println(err)
	// Output:
	// a later instance: true, counter is 1
	// a later instance: true, counter is 2
	// a later instance: true, counter is 3
	// paxos: execute failed: unknown command "reset"
}

// registry is a second state machine: it remembers names.
type registry struct {
	mu    sync.Mutex
	names []string
}

func (r *registry) SMID() uint32 { return 2 }

func (r *registry) Execute(group, instance uint64, name []byte, ctx any) (any, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.names = append(r.names, string(name))
	return len(r.names), nil
}

// Several state machines share one group's log: SMCtx.SMID routes each
// value to its machine, and a nil SMCtx goes to the first one.
func Example_severalStateMachines() {
	nodes, stop := threeNodes(func(uint64) []paxos.StateMachine {
		return []paxos.StateMachine{&counter{}, &registry{}}
	})
	defer stop()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	inc, err := nodes[0].Propose(ctx, 0, []byte("inc"), nil) // SMID 1, the first machine
	if err != nil {
		log.Fatal(err)
	}
	reg, err := nodes[2].Propose(ctx, 0, []byte("alice"), &paxos.SMCtx{SMID: 2})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("counter: %v\n", inc.Value)
	fmt.Printf("registry: %v name(s), after the counter: %v\n", reg.Value, reg.Instance > inc.Instance)
	// Output:
	// counter: 1
	// registry: 1 name(s), after the counter: true
}

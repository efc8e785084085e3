// Command paxosecho is the echo sample of the PhxPaxos README: every line
// typed on stdin is proposed; every node's state machine prints what it
// executes; the proposer also prints the echo it got back through its
// context.
//
// Run one per terminal:
//
//	paxosecho --id 1 --peers 1=127.0.0.1:11111,2=127.0.0.1:11112,3=127.0.0.1:11113 --data /tmp/echo1
//	paxosecho --id 2 --peers ... --data /tmp/echo2
//	paxosecho --id 3 --peers ... --data /tmp/echo3
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/paxoskit/paxos"
	"github.com/paxoskit/paxos/cmd/internal/cli"
	"github.com/paxoskit/paxos/real"
)

// echoSM prints each value it executes and returns it, so the proposer
// gets its echo back.
type echoSM struct{}

func (echoSM) SMID() uint32 { return 1 }

func (echoSM) Execute(group, instance uint64, value []byte, ctx any) (any, error) {
	fmt.Printf("[SM Execute] ok, smid 1 instanceid %d value %s\n", instance, value)
	return string(value), nil
}

func main() {
	id := flag.Uint64("id", 0, "this node's id (a key of --peers)")
	peers := flag.String("peers", "", "every node: 1=HOST:PORT,2=HOST:PORT,...")
	data := flag.String("data", "", "data directory")
	cluster := flag.Uint64("cluster-id", 0xec0, "cluster id, the same on every node")
	flag.Parse()
	p, err := cli.ParsePeers(*peers)
	if err != nil || *id == 0 || *data == "" || p[*id] == "" {
		fmt.Fprintln(os.Stderr, "usage: paxosecho --id N --peers 1=HOST:PORT,2=HOST:PORT,3=HOST:PORT --data DIR")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
		}
		os.Exit(2)
	}
	node, err := real.RunNode(paxos.Options{
		MyNode:        *id,
		ClusterID:     *cluster,
		StateMachines: []paxos.StateMachine{echoSM{}},
	}, real.Config{Peers: p, DataDir: *data})
	if err != nil {
		fmt.Fprintln(os.Stderr, "paxosecho:", err)
		os.Exit(1)
	}
	defer node.Close()
	fmt.Printf("node %d up at %s; type a line to propose it\n", *id, p[*id])
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		line := in.Text()
		if line == "" {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		res, err := node.Propose(ctx, 0, []byte(line), &paxos.SMCtx{SMID: 1})
		cancel()
		if err != nil {
			fmt.Printf("propose failed: %v\n", err)
			continue
		}
		fmt.Printf("Propose ok, instanceid %d, echo resp value %s\n", res.Instance, res.Value)
	}
}

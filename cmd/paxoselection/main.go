// Command paxoselection is the PhxElection sample of the PhxPaxos README:
// a node that takes part in electing a master and prints a line each time
// the master it knows of changes. It needs no state machine: the master
// and its lease come with the library.
//
// Run one per terminal:
//
//	paxoselection --id 1 --peers 1=127.0.0.1:11111,2=127.0.0.1:11112,3=127.0.0.1:11113 --data /tmp/elect1
//	paxoselection --id 2 --peers ... --data /tmp/elect2
//	paxoselection --id 3 --peers ... --data /tmp/elect3
//
// or let it run three of itself and kill the master:
//
//	paxoselection demo [--lease 1s] [--forever]
//
// Exit status: 0 after a clean stop (SIGINT, SIGTERM), 1 when the node
// cannot start, 2 for bad command-line flags.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/paxoskit/paxos"
	"github.com/paxoskit/paxos/cmd/internal/cli"
	"github.com/paxoskit/paxos/real"
)

// clusterID is what paxoselection nodes put in every frame unless told
// otherwise.
const clusterID = 0xe1ec

// minLease is the shortest --lease: the library's bound, ten ticks of
// its default 10 ms tick.
const minLease = 100 * time.Millisecond

func main() {
	var err error
	if len(os.Args) > 1 && os.Args[1] == "demo" {
		err = demo(os.Args[2:], os.Stdout)
	} else {
		err = node(os.Args[1:])
	}
	var fe *cli.FlagError
	switch {
	case err == nil:
	case errors.Is(err, flag.ErrHelp):
		os.Exit(0)
	case errors.As(err, &fe):
		if !fe.Reported {
			fmt.Fprintf(os.Stderr, "paxoselection: %s\n%s", fe.Msg, usage)
		}
		os.Exit(2)
	default:
		fmt.Fprintln(os.Stderr, "paxoselection:", err)
		os.Exit(1)
	}
}

const usage = `usage:
  paxoselection --id N --peers 1=HOST:PORT,2=HOST:PORT,3=HOST:PORT --data DIR [--lease D] [--cluster-id C]
  paxoselection demo [--lease D] [--forever]
`

// nodeConfig is the command line of a node.
type nodeConfig struct {
	id        uint64
	peers     map[uint64]string
	data      string
	lease     time.Duration
	clusterID uint64
}

// parseNode parses and checks a node's flags. Errors are *cli.FlagError, or
// flag.ErrHelp for -h.
func parseNode(args []string, stderr io.Writer) (nodeConfig, error) {
	fs := flag.NewFlagSet("paxoselection", flag.ContinueOnError)
	fs.SetOutput(stderr)
	id := fs.Uint64("id", 0, "this node's id (a key of --peers)")
	peers := fs.String("peers", "", "every node: 1=HOST:PORT,2=HOST:PORT,...")
	data := fs.String("data", "", "data directory")
	lease := fs.Duration("lease", time.Second, "master lease: a new master takes over about this long after the old one dies")
	cluster := fs.Uint64("cluster-id", clusterID, "cluster id (non-zero), the same on every node")
	if err := cli.Parse(fs, args); err != nil {
		return nodeConfig{}, err
	}
	switch {
	case *id == 0 || *peers == "" || *data == "":
		return nodeConfig{}, cli.Errorf("needs --id, --peers and --data")
	case *lease < minLease:
		return nodeConfig{}, cli.Errorf("--lease must be at least %v, got %v", minLease, *lease)
	case *cluster == 0:
		return nodeConfig{}, cli.Errorf("--cluster-id must be non-zero")
	}
	p, err := cli.ParsePeers(*peers)
	if err != nil {
		return nodeConfig{}, cli.Errorf("--peers: %v", err)
	}
	if _, ok := p[*id]; !ok {
		return nodeConfig{}, cli.Errorf("--id %d is not in --peers", *id)
	}
	return nodeConfig{id: *id, peers: p, data: *data, lease: *lease, clusterID: *cluster}, nil
}

// node runs one election node until SIGINT or SIGTERM.
func node(args []string) error {
	c, err := parseNode(args, os.Stderr)
	if err != nil {
		return err
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sig)
	out := newPrinter(os.Stdout)
	defer out.close()
	n, err := real.RunNode(paxos.Options{
		MyNode:      c.id,
		ClusterID:   c.clusterID,
		MasterLease: c.lease,
		Logger:      slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
		OnMasterChange: func(group uint64, m paxos.Master) {
			out.printf("%s\n", masterLine(time.Now(), c.id, m))
		},
	}, real.Config{Peers: c.peers, DataDir: c.data})
	if err != nil {
		return err
	}
	out.printf("%s node %d: up at %s, lease %v; waiting for a master\n", stamp(time.Now()), c.id, c.peers[c.id], c.lease)
	<-sig
	signal.Stop(sig) // a second Ctrl-C kills at once
	n.Close()
	return nil
}

// masterLine is the line a node prints when the master it knows of
// changes; the demo and the tests parse it (see parseMasterLine).
func masterLine(now time.Time, me uint64, m paxos.Master) string {
	switch {
	case m.Node == 0:
		return fmt.Sprintf("%s node %d: no master", stamp(now), me)
	case m.Node == me:
		return fmt.Sprintf("%s node %d: master is node %d, version %d: I am master", stamp(now), me, m.Node, m.Version)
	}
	return fmt.Sprintf("%s node %d: master is node %d, version %d", stamp(now), me, m.Node, m.Version)
}

func stamp(t time.Time) string { return t.Format("15:04:05.000") }

// printer writes lines from callbacks that must not block (OnMasterChange
// runs on the node's loop) on a goroutine of its own, in order.
type printer struct {
	mu     sync.Mutex
	w      io.Writer
	queue  []string
	closed bool
	wake   chan struct{}
	done   chan struct{}
}

func newPrinter(w io.Writer) *printer {
	p := &printer{w: w, wake: make(chan struct{}, 1), done: make(chan struct{})}
	go p.run()
	return p
}

// printf queues a line; after close it is dropped.
func (p *printer) printf(format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	p.queue = append(p.queue, fmt.Sprintf(format, args...))
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

func (p *printer) run() {
	defer close(p.done)
	for {
		_, open := <-p.wake
		p.mu.Lock()
		q := p.queue
		p.queue = nil
		p.mu.Unlock()
		for _, s := range q {
			io.WriteString(p.w, s)
		}
		if !open {
			return
		}
	}
}

// close writes what is queued and stops the printer.
func (p *printer) close() {
	p.mu.Lock()
	p.closed = true
	close(p.wake)
	p.mu.Unlock()
	<-p.done
}

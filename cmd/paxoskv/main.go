// Command paxoskv is a replicated key-value server over paxoskit, with a
// JSON HTTP API. Its state machine is the one the simulator checks
// (internal/kvsm), so what the simulator proves covers this sample.
//
//	paxoskv serve --id 1 --listen 127.0.0.1:7001 --http 127.0.0.1:8001 \
//	    --peers 1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003 --data /tmp/kv1
//	paxoskv demo   # three nodes in one process, prints curl commands
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/paxoskit/paxos"
	"github.com/paxoskit/paxos/cmd/internal/cli"
	"github.com/paxoskit/paxos/internal/kvsm"
)

const maxValue = 1 << 20

// clusterID is what paxoskv nodes put in every frame unless told otherwise.
const clusterID = 0x70617873 // "paxs"

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	var err error
	switch os.Args[1] {
	case "serve":
		err = serve(os.Args[2:])
	case "demo":
		err = demo(os.Args[2:])
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "paxoskv:", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, `usage:
  paxoskv serve --id N --listen HOST:PORT --http HOST:PORT --peers 1=HOST:PORT,2=... --data DIR [--groups G]
  paxoskv demo [--dir DIR] [--groups G]`)
	os.Exit(2)
}

type nodeConfig struct {
	id        uint64
	listen    string
	http      string
	peers     map[uint64]string
	data      string
	groups    int
	timeout   time.Duration
	clusterID uint64
	logger    *slog.Logger
}

// startNode runs one paxoskv node and its HTTP server.
func startNode(c nodeConfig) (stop func(), err error) {
	sm := kvsm.New()
	node, err := paxos.RunNode(paxos.Options{
		MyNode:        c.id,
		Groups:        c.groups,
		StateMachines: []paxos.StateMachine{sm},
		DataDir:       c.data,
		ListenAddr:    c.listen,
		Peers:         c.peers,
		ClusterID:     c.clusterID,
		MaxValueSize:  maxValue + 1024,
		Logger:        c.logger,
	})
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", c.http)
	if err != nil {
		node.Close()
		return nil, err
	}
	srv := &http.Server{Handler: (&server{node: node, sm: sm, groups: c.groups, timeout: c.timeout}).handler()}
	go srv.Serve(ln)
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		node.Close()
	}, nil
}

func serve(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ExitOnError)
	id := fs.Uint64("id", 0, "this node's id (a key of --peers)")
	listen := fs.String("listen", "", "Paxos TCP address, HOST:PORT")
	httpAddr := fs.String("http", "", "HTTP API address, HOST:PORT")
	peers := fs.String("peers", "", "every node: 1=HOST:PORT,2=HOST:PORT,...")
	data := fs.String("data", "", "data directory")
	groups := fs.Int("groups", 1, "Paxos groups; keys map to groups by hash")
	timeout := fs.Duration("timeout", 5*time.Second, "per-request timeout")
	cluster := fs.Uint64("cluster-id", clusterID, "cluster id; nodes drop frames from other clusters")
	verbose := fs.Bool("v", false, "debug logging")
	fs.Parse(args)
	p, err := cli.ParsePeers(*peers)
	if err != nil {
		return err
	}
	if *id == 0 || *listen == "" || *httpAddr == "" || *data == "" {
		return errors.New("serve needs --id, --listen, --http, --peers and --data")
	}
	if _, ok := p[*id]; !ok {
		return fmt.Errorf("--id %d is not in --peers", *id)
	}
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	stop, err := startNode(nodeConfig{*id, *listen, *httpAddr, p, *data, *groups, *timeout, *cluster, logger})
	if err != nil {
		return err
	}
	fmt.Printf("paxoskv node %d ready: paxos %s, http %s\n", *id, *listen, *httpAddr)
	waitSignal()
	stop()
	return nil
}

func demo(args []string) error {
	fs := flag.NewFlagSet("demo", flag.ExitOnError)
	dir := fs.String("dir", "", "data directory (default: a new temporary one)")
	groups := fs.Int("groups", 1, "Paxos groups")
	fs.Parse(args)
	if *dir == "" {
		d, err := os.MkdirTemp("", "paxoskv-demo-")
		if err != nil {
			return err
		}
		*dir = d
	}
	ports, err := freePorts(6)
	if err != nil {
		return err
	}
	peers := map[uint64]string{}
	for i := range 3 {
		peers[uint64(i+1)] = fmt.Sprintf("127.0.0.1:%d", ports[i])
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	var stops []func()
	for i := range 3 {
		id := uint64(i + 1)
		stop, err := startNode(nodeConfig{id, peers[id], fmt.Sprintf("127.0.0.1:%d", ports[3+i]),
			peers, filepath.Join(*dir, fmt.Sprintf("node%d", id)), *groups, 5 * time.Second, clusterID, logger})
		if err != nil {
			for _, s := range stops {
				s()
			}
			return err
		}
		stops = append(stops, stop)
	}
	h1, h2, h3 := ports[3], ports[4], ports[5]
	fmt.Printf(`paxoskv demo: 3 nodes, data in %s
  node 1: paxos %s, http 127.0.0.1:%d
  node 2: paxos %s, http 127.0.0.1:%d
  node 3: paxos %s, http 127.0.0.1:%d

Try:
  curl -X PUT -d hello http://127.0.0.1:%d/kv/greeting          # {"version":1}
  curl http://127.0.0.1:%d/kv/greeting                          # read on another node
  curl -X PUT -d bye 'http://127.0.0.1:%d/kv/greeting?version=1' # compare-and-set
  curl -X PUT -d again 'http://127.0.0.1:%d/kv/greeting?version=1' # 409: version is 2 now
  curl 'http://127.0.0.1:%d/kv/greeting?stale=1'                # local, possibly stale read
  curl -X DELETE http://127.0.0.1:%d/kv/greeting

Ctrl-C stops the cluster.
`, *dir, peers[1], h1, peers[2], h2, peers[3], h3, h1, h2, h3, h1, h2, h3)
	waitSignal()
	for _, s := range stops {
		s()
	}
	return nil
}

// freePorts reserves n loopback ports by binding and releasing them.
func freePorts(n int) ([]int, error) {
	var ports []int
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func waitSignal() {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, os.Interrupt, syscall.SIGTERM)
	<-ch
}

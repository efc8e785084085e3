// Command paxoskv is a replicated key-value server over paxoskit, with an
// HTTP API: values are raw bytes, errors and metadata are JSON. Its state
// machine is the one the simulator checks (internal/kvsm), so what the
// simulator proves covers this sample.
//
//	paxoskv serve --id 1 --listen 127.0.0.1:7001 --http 127.0.0.1:8001 \
//	    --peers 1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003 --data /tmp/kv1
//	paxoskv demo   # three nodes in one process, prints curl commands
//
// Membership is administered over HTTP: GET /members shows every group's
// configuration, POST /members adds, removes, replaces or promotes a node
// in every group. A new node starts empty with --join, its --peers naming
// itself and the members it learns from, and serves once a member added it:
//
//	paxoskv serve --join --id 4 --http 127.0.0.1:8004 \
//	    --peers 4=127.0.0.1:7004,1=127.0.0.1:7001,2=127.0.0.1:7002 --data /tmp/kv4
//	curl -X POST --data '{"op":"add","id":4,"addr":"127.0.0.1:7004"}' http://127.0.0.1:8001/members
//
// A linearizable GET is confirmed without a Paxos write: by the master's
// lease or a read index round (?read=auto, lease or index; ?read=propose
// keeps the older path through Paxos). Every answer names the master in
// X-Paxoskv-Master; with --http-peers and --redirect, writes sent to a
// follower are answered with a 307 to the master.
//
// Exit status: 0 after a clean stop (SIGINT, SIGTERM), 1 when the node
// cannot start (invalid options, identity mismatch, address in use, ...),
// 2 for bad command-line flags.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"syscall"
	"time"

	"github.com/paxoskit/paxos"
	"github.com/paxoskit/paxos/cmd/internal/cli"
	"github.com/paxoskit/paxos/internal/kvsm"
	"github.com/paxoskit/paxos/real"
)

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
	var fe *cli.FlagError
	switch {
	case err == nil:
	case errors.Is(err, flag.ErrHelp):
		os.Exit(0)
	case errors.As(err, &fe):
		if !fe.Reported {
			fmt.Fprintf(os.Stderr, "paxoskv %s: %s\nrun 'paxoskv %s -h' for the flags\n", os.Args[1], fe.Msg, os.Args[1])
		}
		os.Exit(2)
	default:
		fmt.Fprintln(os.Stderr, "paxoskv:", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, `usage:
  paxoskv serve --id N --http HOST:PORT --peers 1=HOST:PORT,2=... --data DIR [--listen HOST:PORT] [--groups G] [--timeout D]
                [--cluster-id C] [--master-lease D] [--http-peers 1=HOST:PORT,2=... [--redirect]] [--join] [-v]
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
	// checkpoint and hold are Options.CheckpointInterval and HoldCount
	// (0: the library defaults).
	checkpoint, hold int
	// masterLease is Options.MasterLease (0: the library default).
	masterLease time.Duration
	// httpPeers is every node's HTTP address, when known (--http-peers);
	// redirect answers writes on a follower with a 307 to the master's.
	httpPeers map[uint64]string
	redirect  bool
	// join starts the node empty, outside its groups' configurations
	// (Options.Join): peers then names this node and the members it
	// learns from, and Options.Nodes is those members.
	join bool
}

// startNode runs one paxoskv node and then, once the node has started, its
// HTTP server: a node that fails to start (invalid options, identity
// mismatch, storage error) never opens the HTTP port.
func startNode(c nodeConfig) (stop func(), err error) {
	if c.groups < 1 {
		return nil, fmt.Errorf("%w: %d groups, want at least 1", paxos.ErrInvalidOptions, c.groups)
	}
	sm := kvsm.New()
	logger := c.logger
	if logger == nil {
		logger = slog.Default()
	}
	node, err := runNode(paxos.Options{
		MyNode:        c.id,
		Join:          c.join,
		ClusterID:     c.clusterID,
		Groups:        c.groups,
		StateMachines: []paxos.StateMachine{sm},
		MaxValueSize:  maxProposal,
		Logger:        c.logger,

		CheckpointInterval: c.checkpoint,
		HoldCount:          c.hold,
		MasterLease:        c.masterLease,
		OnMasterChange: func(group uint64, m paxos.Master) {
			logger.Info("master changed", "group", group, "master", m.Node, "version", m.Version)
		},
	}, real.Config{Peers: c.peers, ListenAddr: c.listen, DataDir: c.data})
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", c.http)
	if err != nil {
		node.Close()
		return nil, err
	}
	srv := &http.Server{
		Handler: (&server{node: node, sm: sm, groups: c.groups, timeout: c.timeout,
			httpPeers: c.httpPeers, redirect: c.redirect}).handler(),
		ReadHeaderTimeout: 10 * time.Second,
	}
	go srv.Serve(ln)
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		ln.Close() // Serve may not have started: then Shutdown did not close it
		node.Close()
	}, nil
}

// runNode is real.RunNode, except for a joiner (opts.Join): cfg.Peers
// names this node (its listen address) and the members it learns from,
// while opts.Nodes must be those members alone, without this node, which
// is no member yet. real.RunNode insists that Nodes be the ids of Peers,
// so the joiner's environment is opened here and the node started on it.
func runNode(opts paxos.Options, cfg real.Config) (*paxos.Node, error) {
	if !opts.Join {
		return real.RunNode(opts, cfg)
	}
	opts.Nodes = nil
	for _, id := range slices.Sorted(maps.Keys(cfg.Peers)) {
		if id != opts.MyNode {
			opts.Nodes = append(opts.Nodes, id)
		}
	}
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	cfg.ID, cfg.ClusterID, cfg.Logger = opts.MyNode, opts.ClusterID, opts.Logger
	e, err := real.Open(cfg)
	if err != nil {
		return nil, err
	}
	opts.Env = e
	return paxos.RunNode(opts) // closes e on error
}

// parseServe parses and checks the flags of paxoskv serve. Errors are
// *cli.FlagError, or flag.ErrHelp for -h.
func parseServe(args []string, stderr io.Writer) (nodeConfig, error) {
	fs := flag.NewFlagSet("paxoskv serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	id := fs.Uint64("id", 0, "this node's id (a key of --peers)")
	join := fs.Bool("join", false, "start this node empty, outside the configuration, to be added with POST /members on a member; "+
		"--peers then names this node (its own Paxos address) and the members it learns from, not every node (restart it with the same flags)")
	listen := fs.String("listen", "", "Paxos TCP address to listen on, HOST:PORT (default: this node's address in --peers; its host may be 0.0.0.0)")
	httpAddr := fs.String("http", "", "HTTP API address, HOST:PORT")
	peers := fs.String("peers", "", "every node: 1=HOST:PORT,2=HOST:PORT,... (with --join: this node and the members to learn from)")
	data := fs.String("data", "", "data directory")
	groups := fs.Int("groups", 1, "Paxos groups (>= 1); keys map to groups by hash; every node must use the same number")
	timeout := fs.Duration("timeout", 5*time.Second, "per-request timeout (> 0)")
	cluster := fs.Uint64("cluster-id", clusterID, "cluster id (non-zero); nodes drop frames from other clusters")
	verbose := fs.Bool("v", false, "debug logging")
	checkpoint := fs.Int("checkpoint-interval", 0, "instances between two checkpoints of a group (default 10000)")
	hold := fs.Int("hold-count", 0, "instances of log kept below the newest checkpoint (default 100000; -1 never cleans)")
	lease := fs.Duration("master-lease", 0, "master lease (default 0: the library's 1s); a new master takes over about this long after the old one dies")
	httpPeers := fs.String("http-peers", "", "every node's HTTP address: 1=HOST:PORT,2=HOST:PORT,... (optional; needed by --redirect)")
	redirect := fs.Bool("redirect", false, "answer PUT and DELETE on a follower with 307 to the master's HTTP address (needs --http-peers)")
	if err := cli.Parse(fs, args); err != nil {
		return nodeConfig{}, err
	}
	switch {
	case *id == 0 || *httpAddr == "" || *peers == "" || *data == "":
		return nodeConfig{}, cli.Errorf("serve needs --id, --http, --peers and --data")
	case *groups < 1:
		return nodeConfig{}, cli.Errorf("--groups must be at least 1, got %d", *groups)
	case *timeout <= 0:
		return nodeConfig{}, cli.Errorf("--timeout must be positive, got %v", *timeout)
	case *cluster == 0:
		return nodeConfig{}, cli.Errorf("--cluster-id must be non-zero")
	case *checkpoint < 0:
		return nodeConfig{}, cli.Errorf("--checkpoint-interval must not be negative, got %d", *checkpoint)
	case *lease < 0 || *lease > 0 && *lease < minLease:
		return nodeConfig{}, cli.Errorf("--master-lease must be 0 (the library default) or at least %v, got %v", minLease, *lease)
	case *redirect && *httpPeers == "":
		return nodeConfig{}, cli.Errorf("--redirect needs --http-peers (the nodes' HTTP addresses)")
	}
	if _, _, err := net.SplitHostPort(*httpAddr); err != nil {
		return nodeConfig{}, cli.Errorf("--http %q: %v", *httpAddr, err)
	}
	p, err := cli.ParsePeers(*peers)
	if err != nil {
		return nodeConfig{}, cli.Errorf("--peers: %v", err)
	}
	if _, ok := p[*id]; !ok {
		return nodeConfig{}, cli.Errorf("--id %d is not in --peers", *id)
	}
	if *join && len(p) < 2 {
		return nodeConfig{}, cli.Errorf("--join needs --peers to name this node and at least one member to learn from")
	}
	var hp map[uint64]string
	if *httpPeers != "" {
		if hp, err = parseHTTPPeers(*httpPeers, p); err != nil {
			return nodeConfig{}, cli.Errorf("--http-peers: %v", err)
		}
	}
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	return nodeConfig{
		id: *id, listen: *listen, http: *httpAddr, peers: p, data: *data, groups: *groups, timeout: *timeout,
		clusterID: *cluster, logger: logger, checkpoint: *checkpoint, hold: *hold,
		masterLease: *lease, httpPeers: hp, redirect: *redirect, join: *join,
	}, nil
}

// minLease is the shortest --master-lease: the library's bound, ten ticks
// of its default 10 ms tick.
const minLease = 100 * time.Millisecond

// parseHTTPPeers parses --http-peers like --peers: ID=HOST:PORT pairs, each
// id a member of peers.
func parseHTTPPeers(s string, peers map[uint64]string) (map[uint64]string, error) {
	hp, err := cli.ParsePeers(s)
	if err != nil {
		return nil, err
	}
	for id, addr := range hp {
		if _, ok := peers[id]; !ok {
			return nil, fmt.Errorf("node %d is not in --peers", id)
		}
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return nil, fmt.Errorf("node %d: %v", id, err)
		}
	}
	return hp, nil
}

func serve(args []string) error {
	c, err := parseServe(args, os.Stderr)
	if err != nil {
		return err
	}
	sig := notifySignals()
	defer signal.Stop(sig)
	stop, err := startNode(c)
	if err != nil {
		return err
	}
	listen := c.listen
	if listen == "" {
		listen = c.peers[c.id]
	}
	fmt.Printf("paxoskv node %d ready: paxos %s, http %s\n", c.id, listen, c.http)
	if c.join {
		fmt.Printf("paxoskv node %d joining: it serves once a member added it: POST /members {\"op\":\"add\",\"id\":%d,\"addr\":%q} on a member\n", c.id, c.id, c.peers[c.id])
	}
	<-sig
	signal.Stop(sig) // a second Ctrl-C kills at once
	stop()
	return nil
}

func demo(args []string) (err error) {
	fs := flag.NewFlagSet("paxoskv demo", flag.ContinueOnError)
	dir := fs.String("dir", "", "data directory, kept on exit (default: a new temporary one, removed on exit)")
	groups := fs.Int("groups", 1, "Paxos groups (>= 1)")
	if err := cli.Parse(fs, args); err != nil {
		return err
	}
	if *groups < 1 {
		return cli.Errorf("--groups must be at least 1, got %d", *groups)
	}
	sig := notifySignals()
	defer signal.Stop(sig)
	if *dir == "" {
		d, err := os.MkdirTemp("", "paxoskv-demo-")
		if err != nil {
			return err
		}
		*dir = d
		// Runs after the nodes are stopped below, on every return.
		defer func() {
			if rerr := os.RemoveAll(d); rerr != nil {
				if err == nil {
					err = fmt.Errorf("removing %s: %w", d, rerr)
				}
				return
			}
			fmt.Printf("paxoskv demo: removed %s\n", d)
		}()
	}
	ports, err := cli.FreePorts(6)
	if err != nil {
		return err
	}
	peers := map[uint64]string{}
	for i := range 3 {
		peers[uint64(i+1)] = fmt.Sprintf("127.0.0.1:%d", ports[i])
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	var stops []func()
	defer func() {
		for _, s := range stops {
			s()
		}
	}()
	httpPeers := map[uint64]string{}
	for i := range 3 {
		httpPeers[uint64(i+1)] = fmt.Sprintf("127.0.0.1:%d", ports[3+i])
	}
	for i := range 3 {
		id := uint64(i + 1)
		stop, err := startNode(nodeConfig{id: id, listen: peers[id], http: httpPeers[id], peers: peers,
			data: filepath.Join(*dir, fmt.Sprintf("node%d", id)), groups: *groups, timeout: 5 * time.Second,
			clusterID: clusterID, logger: logger, httpPeers: httpPeers})
		if err != nil {
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
  curl -X PUT --data-binary hello http://127.0.0.1:%d/kv/greeting          # {"version":1}
  curl -i http://127.0.0.1:%d/kv/greeting                                 # raw bytes; version in X-Paxoskv-Version
  curl -i 'http://127.0.0.1:%d/kv/greeting?read=index'                    # read index round; X-Paxoskv-Master names the master
  curl -X PUT --data-binary bye 'http://127.0.0.1:%d/kv/greeting?version=1' # compare-and-set
  curl -X PUT --data-binary again 'http://127.0.0.1:%d/kv/greeting?version=1' # 409: version is 2 now
  curl 'http://127.0.0.1:%d/kv/greeting?stale=true'                       # local, possibly stale read
  curl -X DELETE http://127.0.0.1:%d/kv/greeting
  curl http://127.0.0.1:%d/status

Ctrl-C stops the cluster.
`, *dir, peers[1], h1, peers[2], h2, peers[3], h3, h1, h2, h3, h3, h1, h2, h3, h1)
	<-sig
	signal.Stop(sig) // a second Ctrl-C kills at once
	return nil
}

// notifySignals returns a channel that receives SIGINT and SIGTERM.
func notifySignals() chan os.Signal {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, os.Interrupt, syscall.SIGTERM)
	return ch
}

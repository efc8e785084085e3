package real

import (
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"path/filepath"
	"slices"
	"sync"

	"github.com/paxoskit/paxos"
	pb "github.com/paxoskit/paxos/core/paxospb"
	"github.com/paxoskit/paxos/env"
	"github.com/paxoskit/paxos/real/storage"
	"github.com/paxoskit/paxos/real/transport"
)

// Config describes one node's production environment.
type Config struct {
	ID        uint64            // this node; real.RunNode takes it from Options.MyNode
	ClusterID uint64            // put in every frame; real.RunNode takes it from Options.ClusterID
	Peers     map[uint64]string // node id -> host:port of every member, this node included
	// ListenAddr is the TCP address to listen on; default Peers[ID]. Its
	// port must be that of Peers[ID], and its host too unless it is a
	// wildcard (0.0.0.0, ::, empty).
	ListenAddr string
	// DataDir is the goleveldb directory, created if missing; checkpoints
	// are kept in its subdirectory "checkpoints" (goleveldb ignores
	// names it does not use).
	DataDir string
	// NoSync skips fsync. A machine that loses power may then forget
	// promises and votes, which can break agreement: tests and benchmarks
	// only.
	NoSync bool
	Logger *slog.Logger // default slog.Default(): frames of other clusters or non-members are logged at WARN
}

// Validate checks cfg without opening or binding anything. Errors wrap
// paxos.ErrInvalidOptions.
func (cfg Config) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{paxos.ErrInvalidOptions}, args...)...)
	}
	switch {
	case cfg.ID == 0:
		return bad("node id must be non-zero")
	case cfg.ClusterID == 0:
		return bad("cluster id is required (non-zero)")
	case cfg.DataDir == "":
		return bad("a data directory is required")
	case cfg.Peers[cfg.ID] == "":
		return fmt.Errorf("%w: %w: node %d has no address in Peers %v", paxos.ErrInvalidOptions, paxos.ErrNotMember, cfg.ID, cfg.Peers)
	}
	byAddr := map[string]uint64{}
	for _, id := range slices.Sorted(maps.Keys(cfg.Peers)) {
		addr := cfg.Peers[id]
		host, port, err := net.SplitHostPort(addr)
		if id == 0 || err != nil || port == "" || port == "0" {
			return bad("peer %d=%q: want a non-zero id and HOST:PORT with a fixed port", id, addr)
		}
		key := net.JoinHostPort(host, port)
		if other, dup := byAddr[key]; dup {
			return bad("nodes %d and %d have the same address %s", other, id, addr)
		}
		byAddr[key] = id
	}
	if cfg.ListenAddr != "" && cfg.ListenAddr != cfg.Peers[cfg.ID] {
		lhost, lport, err := net.SplitHostPort(cfg.ListenAddr)
		phost, pport, _ := net.SplitHostPort(cfg.Peers[cfg.ID])
		wildcard := lhost == "" || lhost == "0.0.0.0" || lhost == "::"
		if err != nil || lport != pport || !wildcard && lhost != phost {
			return bad("listen address %s does not match node %d's address %s in Peers", cfg.ListenAddr, cfg.ID, cfg.Peers[cfg.ID])
		}
	}
	return nil
}

// Open builds the production environment of one node: it opens storage and
// the checkpoint store in DataDir and listens on ListenAddr. The node it is
// given to owns it; its Close refuses new Worker jobs, stops the loop (after
// the handlers already posted), waits for the running jobs, then closes the
// transport and the storage.
func Open(cfg Config) (env.Env, error) {
	if err := cfg.Validate(); err != nil {
		return env.Env{}, err
	}
	if cfg.ListenAddr == "" {
		cfg.ListenAddr = cfg.Peers[cfg.ID]
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	st, err := storage.Open(storage.Options{Dir: cfg.DataDir, Sync: !cfg.NoSync, Logger: cfg.Logger})
	if err != nil {
		return env.Env{}, fmt.Errorf("%w: %w", paxos.ErrStorage, err)
	}
	// After storage.Open, which locks DataDir against other processes.
	ckpts, err := storage.OpenCheckpoints(filepath.Join(cfg.DataDir, "checkpoints"), !cfg.NoSync, cfg.Logger)
	if err != nil {
		st.Close()
		return env.Env{}, fmt.Errorf("%w: %w", paxos.ErrStorage, err)
	}
	tr, err := transport.New(transport.Config{
		ID: cfg.ID, ListenAddr: cfg.ListenAddr, Peers: cfg.Peers, ClusterID: cfg.ClusterID, Logger: cfg.Logger,
	})
	if err != nil {
		st.Close()
		return env.Env{}, err
	}
	loop := NewLoop()
	worker := NewWorker(loop)
	var once sync.Once
	var closeErr error
	return env.Env{
		Loop:        loop,
		Clock:       NewClock(loop),
		Transport:   loopTransport{tr, loop},
		Storage:     loopStorage{st, loop},
		Rand:        NewRand(),
		Checkpoints: ckpts,
		Worker:      worker,
		Close: func() error {
			once.Do(func() {
				worker.Close() // refuse new jobs first: the loop's last handlers may start some
				loop.Stop()
				worker.Wait() // jobs may still use the transport and the storage
				closeErr = errors.Join(tr.Close(), st.Close())
			})
			return closeErr
		},
		Counters: func() env.Counters {
			ts := tr.Stats()
			return env.Counters{
				Fsyncs: st.Stats().Syncs, SendDrops: ts.QueueDrops, BadFrames: ts.BadFrames,
				ForeignFrames: ts.ForeignFrames, StrangerFrames: ts.StrangerFrames,
			}
		},
	}, nil
}

// RunNode runs a node on the production environment in one call: it
// validates opts and cfg before opening anything, takes the node id,
// cluster id and logger from opts (and opts.Nodes from the keys of
// cfg.Peers when empty: with opts.Join, the others, the members it learns
// from), opens the environment and starts the node.
func RunNode(opts paxos.Options, cfg Config) (*paxos.Node, error) {
	ids := slices.Sorted(maps.Keys(cfg.Peers))
	if opts.Join {
		ids = slices.DeleteFunc(ids, func(id uint64) bool { return id == opts.MyNode })
	}
	if len(opts.Nodes) == 0 {
		opts.Nodes = ids
	} else if !slices.Equal(ids, slices.Sorted(slices.Values(opts.Nodes))) {
		return nil, fmt.Errorf("%w: Nodes %v differ from the ids in Peers %v", paxos.ErrInvalidOptions, opts.Nodes, ids)
	}
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	cfg.ID, cfg.ClusterID = opts.MyNode, opts.ClusterID
	if cfg.Logger == nil {
		cfg.Logger = opts.Logger
	}
	e, err := Open(cfg)
	if err != nil {
		return nil, err
	}
	opts.Env = e
	return paxos.RunNode(opts)
}

// loopTransport delivers received messages on the node's loop.
type loopTransport struct {
	t    *transport.Transport
	loop *Loop
}

func (l loopTransport) Send(to uint64, msg []byte)     { l.t.Send(to, msg) }
func (l loopTransport) SetPeer(id uint64, addr string) { l.t.SetPeer(id, addr) }
func (l loopTransport) Start(recv func(msg []byte)) {
	l.t.Start(func(_ uint64, msg []byte) { l.loop.Post(func() { recv(msg) }) })
}

// loopStorage runs the callbacks of Sync and Read on the node's loop, as
// env requires.
type loopStorage struct {
	s    *storage.Storage
	loop *Loop
}

func (l loopStorage) Identity() (*pb.Identity, error)   { return l.s.Identity() }
func (l loopStorage) SetIdentity(id *pb.Identity) error { return l.s.SetIdentity(id) }
func (l loopStorage) Load(group, from uint64) ([]*pb.Record, error) {
	return l.s.Load(group, from)
}
func (l loopStorage) Write(recs []*pb.Record) error { return l.s.Write(recs) }
func (l loopStorage) Sync(done func(error)) {
	l.s.Sync(func(err error) { l.loop.Post(func() { done(err) }) })
}
func (l loopStorage) Read(group, from uint64, maxEntries, maxBytes int, done func([]*pb.Entry, error)) {
	l.s.Read(group, from, maxEntries, maxBytes, func(ents []*pb.Entry, err error) {
		l.loop.Post(func() { done(ents, err) })
	})
}

// Worker runs jobs on goroutines of their own and posts their done
// callbacks to a loop. It implements env.Worker.
type Worker struct {
	loop    *Loop
	mu      sync.Mutex
	closed  bool
	running sync.WaitGroup
}

var _ env.Worker = (*Worker)(nil)

// NewWorker returns a Worker whose callbacks run on loop.
func NewWorker(loop *Loop) *Worker { return &Worker{loop: loop} }

// Go runs job on a new goroutine, then posts done(job's error) to the
// loop. After Close it does nothing: neither job nor done runs. done is
// dropped if the loop has stopped by the time job returns.
func (w *Worker) Go(job func() error, done func(error)) {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return
	}
	w.running.Add(1)
	w.mu.Unlock()
	go func() {
		defer w.running.Done()
		err := job()
		if done != nil {
			w.loop.Post(func() { done(err) })
		}
	}()
}

// Close makes later calls to Go do nothing. It does not wait for the jobs
// already running; Wait does.
func (w *Worker) Close() {
	w.mu.Lock()
	w.closed = true
	w.mu.Unlock()
}

// Wait waits for the jobs started before Close to return. It must follow
// Close.
func (w *Worker) Wait() { w.running.Wait() }

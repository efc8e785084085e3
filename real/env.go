package real

import (
	"errors"
	"log/slog"

	pb "github.com/paxoskit/paxos/core/paxospb"
	"github.com/paxoskit/paxos/env"
	"github.com/paxoskit/paxos/real/storage"
	"github.com/paxoskit/paxos/real/transport"
)

// Config describes one node's production environment.
type Config struct {
	ID         uint64
	ListenAddr string
	Peers      map[uint64]string // node id -> address
	ClusterID  uint64
	DataDir    string
	Sync       bool // fsync storage writes
	Logger     *slog.Logger
}

// Env is a running production environment: a loop, the wall clock, TCP and
// goleveldb. Seams returns it as the env.Env a node runs on.
type Env struct {
	Loop      *Loop
	Clock     *Clock
	Transport *transport.Transport
	Storage   *storage.Storage
	Rand      *Rand
}

// Open opens storage and starts listening; Serve starts delivering.
func Open(cfg Config) (*Env, error) {
	st, err := storage.Open(storage.Options{Dir: cfg.DataDir, Sync: cfg.Sync, Logger: cfg.Logger})
	if err != nil {
		return nil, err
	}
	tr, err := transport.New(transport.Config{
		ID: cfg.ID, ListenAddr: cfg.ListenAddr, Peers: cfg.Peers, ClusterID: cfg.ClusterID, Logger: cfg.Logger,
	})
	if err != nil {
		st.Close()
		return nil, err
	}
	loop := NewLoop()
	return &Env{Loop: loop, Clock: NewClock(loop), Transport: tr, Storage: st, Rand: NewRand()}, nil
}

// Seams returns the environment in the form the node runtime takes.
func (e *Env) Seams() env.Env {
	return env.Env{Loop: e.Loop, Clock: e.Clock, Transport: e.Transport, Storage: loopStorage{e.Storage, e.Loop}, Rand: e.Rand}
}

// Serve starts accepting peers' messages and hands each to recv on the loop.
func (e *Env) Serve(recv func(msg []byte)) {
	e.Transport.Start(func(_ uint64, msg []byte) {
		e.Loop.Post(func() { recv(msg) })
	})
}

// Close stops the transport, flushes and closes storage, then stops the
// loop. Call it after the node has stopped using the environment.
func (e *Env) Close() error {
	err := e.Transport.Close()
	err = errors.Join(err, e.Storage.Close())
	e.Loop.Stop()
	return err
}

// loopStorage runs Sync's callback on the node's loop, as env requires.
type loopStorage struct {
	s    *storage.Storage
	loop *Loop
}

func (l loopStorage) Load(group uint64) ([]*pb.Record, error) { return l.s.Load(group) }
func (l loopStorage) Write(recs []*pb.Record) error           { return l.s.Write(recs) }
func (l loopStorage) Sync(done func(error)) {
	l.s.Sync(func(err error) { l.loop.Post(func() { done(err) }) })
}

// Package paxos turns a deterministic state machine into a replicated one:
// every node of a group executes the same values in the same order, chosen
// by Multi-Paxos. The protocol lives in package core; this file is the node
// runtime that drives it through the seams of package env, the same code
// under the simulator and in production.
package paxos

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/paxoskit/paxos/core"
	pb "github.com/paxoskit/paxos/core/paxospb"
	"github.com/paxoskit/paxos/env"
	"github.com/paxoskit/paxos/real"
)

// StateMachine is the application's deterministic state machine. Every node
// calls Execute with the same values in the same order.
type StateMachine interface {
	// SMID routes values: a value proposed with SMCtx.SMID goes to the state
	// machine with that id.
	SMID() uint32
	// Execute applies a chosen value. ctx is the proposer's SMCtx.Ctx on the
	// node that proposed the value and nil everywhere else. A returned
	// error reaches the proposer wrapped in ErrExecuteFailed; the instance
	// still counts as executed, so errors must be deterministic too.
	Execute(group, instance uint64, value []byte, ctx any) error
}

// SMCtx names the state machine a proposal is for and carries a context
// that only the proposing node's Execute sees (to return results, say).
type SMCtx struct {
	SMID uint32
	Ctx  any
}

// Options configures a Node. Zero fields take the documented defaults.
type Options struct {
	MyNode uint64   // this node's id, non-zero
	Nodes  []uint64 // every voting member, including MyNode
	Groups int      // independent Paxos groups, numbered from 0; default 1

	// StateMachines run in every group. A proposal with a nil SMCtx goes
	// to the first one.
	StateMachines []StateMachine

	// Env is the world the node runs in (the simulator passes one). Left
	// empty, RunNode builds the production one from the fields below: TCP
	// on ListenAddr and goleveldb in DataDir.
	Env env.Env

	DataDir    string            // storage directory (production env)
	ListenAddr string            // this node's TCP address, host:port (production env)
	Peers      map[uint64]string // node id -> TCP address; Nodes defaults to its keys
	ClusterID  uint64            // frames from another cluster id are dropped
	Sync       SyncPolicy        // default SyncAlways

	TickInterval   time.Duration // default 10ms; protocol timeouts count ticks
	ProposeTimeout time.Duration // default 3s; then a proposal fails with ErrTimeout
	Window         int           // instances in flight per group; default 128
	MaxValueSize   int           // default 8 MiB
	MaxPending     int           // proposals waiting per group; default 4096

	// BatchPropose flushes a batch at BatchCount values (default 5),
	// BatchBytes bytes (default 512 KiB) or BatchDelay after its first
	// value (default 20ms), the PhxPaxos defaults.
	BatchCount int
	BatchBytes int
	BatchDelay time.Duration
	Logger     *slog.Logger // default discards

	// OnCommit, if set, sees every chosen instance in order on this node,
	// no-ops included, before it is executed. For monitoring and checkers.
	OnCommit func(group, instance uint64, v *pb.Value)

	// Canary deliberately breaks the protocol; tests only.
	Canary core.Canary
}

// SyncPolicy says whether storage writes are fsynced.
type SyncPolicy int

const (
	// SyncAlways fsyncs acceptor state before any message reveals it. Only
	// this setting survives power loss; it is the default.
	SyncAlways SyncPolicy = iota
	// SyncNever skips fsync; a crashed machine may forget promises and
	// votes, which can break agreement. For tests and benchmarks.
	SyncNever
)

func (o *Options) setDefaults() error {
	if len(o.Nodes) == 0 {
		for id := range o.Peers {
			o.Nodes = append(o.Nodes, id)
		}
		slices.Sort(o.Nodes)
	}
	if o.Groups == 0 {
		o.Groups = 1
	}
	if o.TickInterval == 0 {
		o.TickInterval = 10 * time.Millisecond
	}
	if o.ProposeTimeout == 0 {
		o.ProposeTimeout = 3 * time.Second
	}
	if o.Window == 0 {
		o.Window = 128
	}
	if o.MaxValueSize == 0 {
		o.MaxValueSize = 8 << 20
	}
	if o.MaxPending == 0 {
		o.MaxPending = 4096
	}
	if o.BatchCount == 0 {
		o.BatchCount = 5
	}
	if o.BatchBytes == 0 {
		o.BatchBytes = 512 << 10
	}
	if o.BatchDelay == 0 {
		o.BatchDelay = 20 * time.Millisecond
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	switch {
	case o.MyNode == 0 || !slices.Contains(o.Nodes, o.MyNode):
		return fmt.Errorf("%w: %w: MyNode %d not in Nodes %v", ErrInvalidOptions, ErrNotMember, o.MyNode, o.Nodes)
	case o.Groups < 0 || o.Window < 0 || o.MaxValueSize < 0 || o.MaxPending < 0:
		return fmt.Errorf("%w: negative size", ErrInvalidOptions)
	case o.Env == (env.Env{}) && (o.DataDir == "" || o.ListenAddr == ""):
		return fmt.Errorf("%w: DataDir and ListenAddr are required without an Env", ErrInvalidOptions)
	case o.Env != (env.Env{}) && (o.Env.Loop == nil || o.Env.Clock == nil || o.Env.Transport == nil || o.Env.Storage == nil || o.Env.Rand == nil):
		return fmt.Errorf("%w: incomplete Env", ErrInvalidOptions)
	}
	return nil
}

// Node runs the groups of one cluster member. Its methods are safe for
// concurrent use; callbacks run on the node's loop and must not block.
type Node struct {
	opts    Options
	env     env.Env
	groups  []*group
	pending map[pendingKey]*proposal
	syncing bool
	closed  bool
	tick    env.Timer
	stats   Stats
	own     *real.Env // the production environment RunNode built, if any
}

// Stats counts what a node rejected or failed at.
type Stats struct {
	BadMessages uint64 // undecodable or invalid messages dropped
	Proposals   uint64
	Timeouts    uint64
	Syncs       uint64 // syncs the runtime asked storage for
	Fsyncs      uint64 // fsyncing batch writes of the production storage
	SendDrops   uint64 // messages the production transport dropped
	Committed   uint64
}

type group struct {
	id    uint64
	core  *core.Core
	sms   []StateMachine
	batch batcher
}

type pendingKey struct{ group, seq uint64 }

// proposal is a value this node proposed and waits for: a single value
// (cb) or a batch (items).
type proposal struct {
	ctx   any
	cb    func(uint64, error)
	items []batchItem
	timer env.Timer
}

func (p *proposal) fail(err error) {
	if p.cb != nil {
		p.cb(0, err)
	}
	for i, it := range p.items {
		it.cb(0, uint32(i), err)
	}
}

type groupReady struct {
	g  *group
	rd core.Ready
}

// RunNode restores a node from its storage and starts it: chosen values
// found on disk are executed again into the (fresh) state machines, then the
// node rejoins its groups.
func RunNode(opts Options) (*Node, error) {
	if err := opts.setDefaults(); err != nil {
		return nil, err
	}
	n := &Node{opts: opts, env: opts.Env, pending: map[pendingKey]*proposal{}}
	if opts.Env == (env.Env{}) {
		own, err := real.Open(real.Config{
			ID: opts.MyNode, ListenAddr: opts.ListenAddr, Peers: opts.Peers, ClusterID: opts.ClusterID,
			DataDir: opts.DataDir, Sync: opts.Sync == SyncAlways, Logger: opts.Logger,
		})
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrStorage, err)
		}
		n.own, n.env = own, own.Seams()
	}
	if err := n.restore(); err != nil {
		if n.own != nil {
			n.own.Close()
		}
		return nil, err
	}
	if n.own != nil {
		n.own.Serve(n.Receive)
	}
	n.env.Loop.Post(func() {
		n.process()
		n.tick = n.env.Clock.AfterFunc(opts.TickInterval, n.onTick)
	})
	return n, nil
}

// restore builds every group's core from storage.
func (n *Node) restore() error {
	opts := n.opts
	for gid := range uint64(opts.Groups) {
		recs, err := n.env.Storage.Load(gid)
		if err != nil {
			return fmt.Errorf("%w: load group %d: %w", ErrStorage, gid, err)
		}
		hs, entries := core.SplitRecords(recs)
		c, err := core.New(core.Config{
			ID: opts.MyNode, Peers: opts.Nodes, Group: gid, Window: opts.Window,
			MaxQueue: opts.MaxPending, Rand: n.env.Rand.IntN, Canary: opts.Canary,
		}, hs, entries)
		if err != nil {
			return fmt.Errorf("%w: group %d: %w", ErrStorage, gid, err)
		}
		n.groups = append(n.groups, &group{id: gid, core: c, sms: slices.Clone(opts.StateMachines)})
	}
	return nil
}

// MyNodeID returns this node's id.
func (n *Node) MyNodeID() uint64 { return n.opts.MyNode }

// Stats returns the node's counters. Call it on the node's loop (in the
// simulator) or accept a racy read.
func (n *Node) Stats() Stats {
	s := n.stats
	if n.own != nil {
		s.Fsyncs = n.own.Storage.Stats().Syncs
		s.SendDrops = n.own.Transport.Stats().QueueDrops
	}
	return s
}

// CoreStats returns the protocol counters of one group; same caveat as Stats.
func (n *Node) CoreStats(group uint64) core.Stats { return n.groups[group].core.Stats }

// ChosenUpto returns the end of the chosen prefix of a group; same caveat as
// Stats.
func (n *Node) ChosenUpto(group uint64) uint64 { return n.groups[group].core.ChosenUpto() }

// ProposeAsync proposes value to group and calls cb on the node's loop with
// the instance it was chosen at, after the proposing node executed it, or
// with an error (on the caller's goroutine if the node is already closed).
// It never blocks.
func (n *Node) ProposeAsync(group uint64, value []byte, smCtx *SMCtx, cb func(instance uint64, err error)) {
	if !n.post(func() { n.propose(group, value, smCtx, cb) }) {
		cb(0, ErrClosed)
	}
}

// post runs f on the node's loop; it reports false if the production
// loop has stopped, so f will never run.
func (n *Node) post(f func()) bool {
	if n.own != nil {
		return n.own.Loop.TryPost(f)
	}
	n.env.Loop.Post(f)
	return true
}

// Propose proposes value and waits until the proposing node executed it,
// returning its instance. If ctx ends first, the outcome is unknown.
func (n *Node) Propose(ctx context.Context, group uint64, value []byte, smCtx *SMCtx) (uint64, error) {
	type result struct {
		instance uint64
		err      error
	}
	ch := make(chan result, 1)
	n.ProposeAsync(group, value, smCtx, func(i uint64, err error) { ch <- result{i, err} })
	select {
	case r := <-ch:
		return r.instance, r.err
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// Close stops the node; pending proposals fail with ErrClosed. With the
// production environment it waits for that, then closes the network and
// flushes storage; with a caller's Env it only posts the stop.
func (n *Node) Close() error {
	if n.own == nil {
		n.env.Loop.Post(func() { n.stop(ErrClosed) })
		return nil
	}
	n.query(func() { n.stop(ErrClosed) })
	return n.own.Close()
}

// query runs f on the node's loop and waits for it. With a caller's Env
// (the simulator, whose loop is the caller's own goroutine) it runs f
// directly: such callers must call from the loop.
func (n *Node) query(f func()) {
	if n.own == nil {
		f()
		return
	}
	done := make(chan struct{})
	n.env.Loop.Post(func() {
		f()
		close(done)
	})
	select {
	case <-done:
	case <-n.own.Loop.Done():
	}
}

// NowInstanceID returns the next instance this node will execute in group:
// every instance below it is chosen and executed here.
func (n *Node) NowInstanceID(group uint64) (id uint64, err error) {
	if group >= uint64(len(n.groups)) {
		return 0, fmt.Errorf("%w: %d", ErrUnknownGroup, group)
	}
	n.query(func() { id = n.groups[group].core.ChosenUpto() + 1 })
	return id, nil
}

// MinChosenInstanceID returns the lowest instance whose value this node
// still holds. No log is cleaned yet, so it is 1 once anything is chosen.
func (n *Node) MinChosenInstanceID(group uint64) (uint64, error) {
	now, err := n.NowInstanceID(group)
	if err != nil || now == 1 {
		return 0, err
	}
	return 1, nil
}

// AddStateMachine registers sm in every group (or only in the listed
// ones). Register before proposing values for it: a node that executes a
// value whose SMID is unknown reports ErrNoStateMachine to its proposer.
func (n *Node) AddStateMachine(sm StateMachine, groups ...uint64) error {
	for _, g := range groups {
		if g >= uint64(len(n.groups)) {
			return fmt.Errorf("%w: %d", ErrUnknownGroup, g)
		}
	}
	n.query(func() {
		for _, g := range n.groups {
			if len(groups) == 0 || slices.Contains(groups, g.id) {
				g.sms = append(g.sms, sm)
			}
		}
	})
	return nil
}

func (n *Node) stop(err error) {
	if n.closed {
		return
	}
	n.closed = true
	if n.tick != nil {
		n.tick.Stop()
	}
	for _, g := range n.groups {
		n.flushBatch(g) // fails the unflushed values with ErrClosed
	}
	keys := make([]pendingKey, 0, len(n.pending))
	for k := range n.pending {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b pendingKey) int {
		if a.group != b.group {
			return int(a.group) - int(b.group)
		}
		return int(a.seq) - int(b.seq)
	})
	for _, k := range keys {
		p := n.pending[k]
		delete(n.pending, k)
		p.timer.Stop()
		p.fail(err)
	}
}

func (n *Node) propose(gid uint64, value []byte, smCtx *SMCtx, cb func(uint64, error)) {
	g, smid, ctx, err := n.admit(gid, value, smCtx)
	if err != nil {
		cb(0, err)
		return
	}
	seq, ok := g.core.Propose(smid, value)
	if !ok {
		cb(0, ErrOverloaded)
		return
	}
	n.track(gid, seq, &proposal{ctx: ctx, cb: cb})
}

// admit checks a proposal and resolves its state machine.
func (n *Node) admit(gid uint64, value []byte, smCtx *SMCtx) (g *group, smid uint32, ctx any, err error) {
	switch {
	case n.closed:
		return nil, 0, nil, ErrClosed
	case gid >= uint64(len(n.groups)):
		return nil, 0, nil, fmt.Errorf("%w: %d", ErrUnknownGroup, gid)
	case len(value) > n.opts.MaxValueSize:
		return nil, 0, nil, fmt.Errorf("%w: %d bytes, limit %d", ErrValueTooLarge, len(value), n.opts.MaxValueSize)
	}
	g = n.groups[gid]
	if smCtx != nil {
		smid, ctx = smCtx.SMID, smCtx.Ctx
	} else if len(g.sms) > 0 {
		smid = g.sms[0].SMID()
	}
	if g.sm(smid) == nil {
		return nil, 0, nil, fmt.Errorf("%w: %d", ErrNoStateMachine, smid)
	}
	return g, smid, ctx, nil
}

// track waits for a proposal core accepted, failing it after ProposeTimeout.
func (n *Node) track(gid, seq uint64, p *proposal) {
	n.stats.Proposals++
	key := pendingKey{gid, seq}
	p.timer = n.env.Clock.AfterFunc(n.opts.ProposeTimeout, func() {
		if n.pending[key] == p {
			delete(n.pending, key)
			n.stats.Timeouts++
			p.fail(ErrTimeout)
		}
	})
	n.pending[key] = p
	n.process()
}

func (g *group) sm(smid uint32) StateMachine {
	for _, sm := range g.sms {
		if sm.SMID() == smid {
			return sm
		}
	}
	return nil
}

// Receive hands the node a message from a peer. The environment calls it on
// the node's loop. Malformed messages are counted and dropped.
func (n *Node) Receive(data []byte) {
	if n.closed {
		return
	}
	m := &pb.Message{}
	if err := proto.Unmarshal(data, m); err != nil {
		n.stats.BadMessages++
		n.opts.Logger.Debug("dropping undecodable message", "err", err)
		return
	}
	if m.To == 0 {
		m.To = n.opts.MyNode // a broadcast, sent to each peer as the same bytes
	}
	if m.Group >= uint64(len(n.groups)) {
		n.stats.BadMessages++
		return
	}
	if err := n.groups[m.Group].core.Step(m); err != nil {
		n.stats.BadMessages++
		n.opts.Logger.Debug("dropping message", "err", err)
		return
	}
	n.process()
}

func (n *Node) onTick() {
	if n.closed {
		return
	}
	for _, g := range n.groups {
		g.core.Tick()
	}
	n.process()
	n.tick = n.env.Clock.AfterFunc(n.opts.TickInterval, n.onTick)
}

// process follows core's driver contract for every group: early messages
// go out at once; then each Ready's committed values are executed, its
// records written, and (once synced) its messages sent. One Write and one
// Sync cover all groups: group commit. While a sync is in flight, new
// output waits for the next.
func (n *Node) process() {
	if n.closed {
		return
	}
	for _, g := range n.groups {
		n.sendAll(g.core.Early())
		for _, e := range g.core.Committed() {
			n.execute(g, e)
		}
	}
	for !n.syncing && !n.closed {
		var rds []groupReady
		for _, g := range n.groups {
			if g.core.HasReady() {
				rds = append(rds, groupReady{g, g.core.Ready()})
			}
		}
		if len(rds) == 0 {
			return
		}
		if n.opts.Canary == core.CanaryEarlyReply {
			n.send(rds)
		}
		var recs []*pb.Record
		mustSync := false
		for _, r := range rds {
			for _, e := range r.rd.Committed {
				n.execute(r.g, e)
			}
			for _, e := range r.rd.Entries {
				recs = append(recs, &pb.Record{Group: r.g.id, Entry: e})
			}
			if r.rd.HardState != nil { // after the entries its watermark covers
				recs = append(recs, &pb.Record{Group: r.g.id, HardState: r.rd.HardState})
			}
			mustSync = mustSync || r.rd.MustSync
		}
		if len(recs) > 0 {
			if err := n.env.Storage.Write(recs); err != nil {
				n.fail(err)
				return
			}
		}
		if !mustSync {
			n.finish(rds)
			continue
		}
		n.syncing = true
		n.stats.Syncs++
		n.env.Storage.Sync(func(err error) {
			n.syncing = false
			if err != nil {
				n.fail(err)
				return
			}
			n.finish(rds)
			n.process()
		})
	}
}

func (n *Node) fail(err error) {
	n.opts.Logger.Error("storage failed; stopping node", "err", err)
	n.stop(fmt.Errorf("%w: %w", ErrStorage, err))
}

func (n *Node) send(rds []groupReady) {
	for _, r := range rds {
		n.sendAll(r.rd.Messages)
	}
}

// sendAll marshals and sends msgs. A broadcast is one message per peer
// sharing its entries; it is marshaled once, without the recipient ("to"
// is filled in on receipt), and every peer gets the same bytes, so large
// values are not encoded or copied once per peer.
func (n *Node) sendAll(msgs []*pb.Message) {
	for i := 0; i < len(msgs); {
		m := msgs[i]
		j := i + 1
		for j < len(msgs) && sameBroadcast(m, msgs[j]) {
			j++
		}
		to := m.To
		if j-i > 1 {
			m.To = 0
		}
		data, err := proto.Marshal(m)
		m.To = to
		if err != nil {
			panic(fmt.Sprintf("paxos: marshal own message: %v", err))
		}
		for _, mm := range msgs[i:j] {
			n.env.Transport.Send(mm.To, data)
		}
		i = j
	}
}

// sameBroadcast reports whether b is a copy of a for another recipient, as
// core.broadcast makes them: same type, ballot and payload slices.
func sameBroadcast(a, b *pb.Message) bool {
	return a.Type == b.Type && a.Ballot == b.Ballot && a.Instance == b.Instance && a.ChosenUpto == b.ChosenUpto &&
		a.Group == b.Group && a.From == b.From && a.ClusterId == b.ClusterId &&
		sameSlice(a.Entries, b.Entries) && sameSlice(a.Instances, b.Instances) && sameSlice(a.Values, b.Values)
}

func sameSlice[T any](a, b []T) bool {
	return len(a) == len(b) && (len(a) == 0 || &a[0] == &b[0])
}

// finish sends a persisted Ready's messages and advances its core.
func (n *Node) finish(rds []groupReady) {
	if n.closed {
		return
	}
	if n.opts.Canary != core.CanaryEarlyReply {
		n.send(rds)
	}
	for _, r := range rds {
		r.g.core.Advance()
	}
}

func (n *Node) execute(g *group, e *pb.Entry) {
	v := e.Value
	n.stats.Committed++
	if n.opts.OnCommit != nil {
		n.opts.OnCommit(g.id, e.Instance, v)
	}
	if v.Noop {
		return
	}
	var p *proposal
	if v.Node == n.opts.MyNode && v.Boot == g.core.Boot() {
		key := pendingKey{g.id, v.Seq}
		if p = n.pending[key]; p != nil {
			delete(n.pending, key)
			p.timer.Stop()
		}
	}
	if v.Batch {
		n.executeBatch(g, e.Instance, v.Data, p)
		return
	}
	var ctx any
	if p != nil {
		ctx = p.ctx
	}
	err := n.apply(g, e.Instance, v.Smid, v.Data, ctx)
	if p != nil {
		p.cb(e.Instance, err)
	}
}

// apply runs one value on the state machine its SMID names.
func (n *Node) apply(g *group, instance uint64, smid uint32, data []byte, ctx any) error {
	sm := g.sm(smid)
	if sm == nil {
		return fmt.Errorf("%w: %d", ErrNoStateMachine, smid)
	}
	if err := sm.Execute(g.id, instance, data, ctx); err != nil {
		return fmt.Errorf("%w: %w", ErrExecuteFailed, err)
	}
	return nil
}

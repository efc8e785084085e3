package paxos

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/paxoskit/paxos/core"
	pb "github.com/paxoskit/paxos/core/paxospb"
)

// Master is what a node knows about its group's master.
type Master struct {
	// Node is the master, 0 when this node knows of none (no master, or
	// none heard from within its lease).
	Node uint64
	// Version is the instance of the log at which Node became master. It
	// grows with every change of master, so it fences: a write tagged with
	// an older version came from an earlier master.
	Version uint64
}

// ReadMode chooses how a linearizable read is confirmed.
type ReadMode uint8

const (
	// ReadAuto reads by lease on the master while its lease holds, and by
	// read index everywhere else.
	ReadAuto ReadMode = iota
	// ReadLease reads only on the master under its lease (no message, but
	// safe only within Options.MaxClockDrift); elsewhere it fails with
	// ErrNotMaster.
	ReadLease
	// ReadIndex confirms with a majority round of the master, then waits
	// until this node executed up to the index: no clock assumption.
	ReadIndex
)

func (m ReadMode) String() string {
	switch m {
	case ReadAuto:
		return "auto"
	case ReadLease:
		return "lease"
	case ReadIndex:
		return "index"
	}
	return fmt.Sprintf("ReadMode(%d)", uint8(m))
}

// ReadInfo describes a linearizable read.
type ReadInfo struct {
	// Index is the instance the group's state machines had executed up to
	// when the read ran: every write that completed before the read began
	// is at or below it.
	Index   uint64
	ByLease bool // confirmed by the master's lease, not by a majority round
}

// ErrNoQuorum means this node cannot reach a majority of its group now:
// the proposal or read was never started (it cannot be chosen later), or,
// wrapped with ErrTimeout, the proposal was sent and its outcome is unknown.
var ErrNoQuorum = errors.New("paxos: no quorum reachable")

// ErrNotMaster means the call needs the master (a lease read, dropping or
// transferring mastership) and this node is not it. The error is a
// *NotMasterError naming the master when one is known.
var ErrNotMaster = errors.New("paxos: not the master")

// NotMasterError is ErrNotMaster with the master this node knows of.
type NotMasterError struct {
	Group  uint64
	Master Master // Node 0 when none is known
}

func (e *NotMasterError) Error() string {
	if e.Master.Node == 0 {
		return fmt.Sprintf("paxos: not the master of group %d (no master known)", e.Group)
	}
	return fmt.Sprintf("paxos: not the master of group %d (master is node %d, version %d)", e.Group, e.Master.Node, e.Master.Version)
}

// Unwrap makes errors.Is(err, ErrNotMaster) true.
func (e *NotMasterError) Unwrap() error { return ErrNotMaster }

// Master returns the group's master as this node knows it: itself while
// it holds the lease; elsewhere the leader it follows, once that leader's
// master record is executed here (PhxPaxos GetMasterWithVersion). Safe
// from any goroutine.
func (n *Node) Master(group uint64) (Master, error) {
	g, err := n.group(group)
	if err != nil {
		return Master{}, err
	}
	return Master{Node: g.status.master.Load(), Version: g.status.masterVersion.Load()}, nil
}

// IsMaster reports whether this node is the group's master with a valid
// lease (PhxPaxos IsIMMaster). Safe from any goroutine; the answer may be
// out of date by the time the caller acts on it: use Read for reads, and
// the Version as a fencing token for writes outside the group.
func (n *Node) IsMaster(group uint64) bool {
	g, err := n.group(group)
	if err != nil {
		return false
	}
	return g.status.isMaster.Load()
}

// masterState is a group's lease and reads, owned by the loop.
type masterState struct {
	lease   time.Duration            // the lease asked for as leader
	ballot  core.Ballot              // the leadership sent belongs to
	sent    map[uint64]time.Duration // heartbeat seq -> when it was sent
	until   time.Duration            // the lease runs until then on this node's clock; 0: none
	version uint64                   // master version of the lease
	known   Master                   // last published
	readSeq uint64
	reads   map[uint64]*read // by id: waiting for a read index
	ready   []*read          // confirmed: waiting for execution
	waiters []*transferWait
	// quorumLost is core's QuorumLost as last seen (its changes are logged).
	quorumLost bool
}

// read is a linearizable read in progress.
type read struct {
	id       uint64
	fn       func(ReadInfo, error)
	index    uint64
	byLease  bool
	retry    bool // refused: ask again at the next tick
	deadline time.Duration
}

type transferWait struct {
	to       uint64
	deadline time.Duration
	done     func(error)
}

// leaseMargin shortens a lease for clock drift: a follower's grant lasts
// lease on its clock, at least lease/(1+d) of true time; the master's lease
// must end before, within lease*(1-d)/(1+d) of its own clock.
func (n *Node) leaseFor(lease time.Duration) time.Duration {
	if n.opts.hooks.Canary == core.CanaryLeaseNoDrift {
		return lease + 2*n.opts.TickInterval
	}
	d := n.opts.MaxClockDrift
	return time.Duration(float64(lease) * (1 - d) / (1 + d))
}

// noteHeartbeat records when a heartbeat of this node's leadership left.
func (n *Node) noteHeartbeat(g *group, m *pb.Message) {
	ms := &g.master
	if b := g.core.Ballot(); ms.ballot != b {
		ms.ballot, ms.sent, ms.until = b, map[uint64]time.Duration{}, 0
	}
	if _, ok := ms.sent[m.Seq]; !ok {
		ms.sent[m.Seq] = n.env.Clock.Now()
	}
}

// isMaster reports whether this node holds group's lease now, with its
// master record executed.
func (n *Node) isMaster(g *group, now time.Duration) bool {
	ms := &g.master
	return ms.until > now && g.core.MasterReady() && g.executed >= g.core.MasterAt()
}

// updateMaster renews the lease from the heartbeat round a majority acked,
// publishes the master this node knows, and tells whoever listens.
func (n *Node) updateMaster(g *group) {
	ms := &g.master
	if lost := g.core.QuorumLost() && g.core.ConfKnown(); lost != ms.quorumLost {
		ms.quorumLost = lost
		if lost {
			n.warn("quorum", "group cut off from a majority: proposals and reads fail with ErrNoQuorum", "group", g.id, "state", g.core.QuorumInfo())
		} else {
			n.opts.Logger.Info("group reaches a majority again", "group", g.id)
		}
	}
	now := n.env.Clock.Now()
	until := time.Duration(0)
	if g.core.MasterReady() && g.executed >= g.core.MasterAt() && ms.ballot == g.core.Ballot() {
		if len(n.opts.Nodes) == 1 {
			until = now + n.leaseFor(ms.lease) // a majority of one: itself
		} else if seq := g.core.LeaseSeq(); seq > 0 {
			if t, ok := ms.sent[seq]; ok {
				until = max(ms.until, t+n.leaseFor(ms.lease))
			} else {
				until = ms.until
			}
			for s := range ms.sent {
				if s < seq {
					delete(ms.sent, s)
				}
			}
		}
		if n.opts.hooks.Canary == core.CanaryLeaseAfterQuorumLoss && ms.until > 0 {
			until = max(until, now+ms.lease) // renewed as long as it leads
		}
	}
	if until <= now {
		until = 0
	}
	version := g.core.MasterAt()
	if until != ms.until || until != 0 && version != ms.version {
		ms.until, ms.version = until, version
		if h := n.opts.hooks.OnLease; h != nil {
			h(g.id, until, version)
		}
	}
	var m Master
	switch {
	case until != 0:
		m = Master{Node: n.opts.MyNode, Version: version}
	case !g.core.IsLeader() && g.core.Leader() != 0 && g.core.LeaderVersion() != 0 && g.executed >= g.core.LeaderVersion():
		m = Master{Node: g.core.Leader(), Version: g.core.LeaderVersion()}
	}
	g.status.isMaster.Store(until != 0)
	g.status.master.Store(m.Node)
	g.status.masterVersion.Store(m.Version)
	if m != ms.known {
		ms.known = m
		n.stats.masterChanges.Add(1)
		if f := n.opts.OnMasterChange; f != nil {
			f(g.id, m)
		}
	}
	for i := 0; i < len(ms.waiters); i++ {
		if w := ms.waiters[i]; m.Node == w.to || now >= w.deadline {
			ms.waiters = slices.Delete(ms.waiters, i, i+1)
			i--
			if m.Node == w.to {
				w.done(nil)
			} else {
				w.done(fmt.Errorf("%w: node %d did not become master of group %d in time", ErrTimeout, w.to, g.id))
			}
		}
	}
}

// SetMasterLease changes the lease this node asks for while it is the
// group's master: at most Options.MasterLease (the lease a restarted node
// waits out), at least ten ticks.
func (n *Node) SetMasterLease(group uint64, d time.Duration) error {
	if _, err := n.group(group); err != nil {
		return err
	}
	if d < 10*n.opts.TickInterval || d > n.opts.MasterLease {
		return fmt.Errorf("%w: master lease %v outside [%v, %v]", ErrInvalidOptions, d, 10*n.opts.TickInterval, n.opts.MasterLease)
	}
	return n.onLoop(func() error {
		g := n.groups[group]
		g.master.lease = d
		g.core.SetLease(uint64(d / time.Microsecond))
		return nil
	})
}

// onLoop runs f on the node's loop and returns its error.
func (n *Node) onLoop(f func() error) error {
	ch := make(chan error, 1)
	if !n.env.Loop.Post(func() {
		if n.closed {
			ch <- ErrClosed
			return
		}
		ch <- f()
	}) {
		return ErrClosed
	}
	return <-ch
}

func (n *Node) notMaster(g *group) error {
	return &NotMasterError{Group: g.id, Master: g.master.known}
}

// DropMaster makes this node give up mastership of group (PhxPaxos
// DropMaster): it stops its lease at once and does not run for master
// again for two leases, so another node takes over once the lease it
// granted ran out on the others. It fails with ErrNotMaster if this node
// does not lead the group.
func (n *Node) DropMaster(group uint64) error {
	if _, err := n.group(group); err != nil {
		return err
	}
	return n.onLoop(func() error {
		g := n.groups[group]
		if !g.core.IsLeader() {
			return n.notMaster(g)
		}
		g.core.StepDown(2 * int(g.master.lease/n.opts.TickInterval))
		n.process()
		return nil
	})
}

// TransferMaster hands mastership of group to node to, a voting member:
// this node stops its lease at once and tells to to take over without
// waiting for the lease to run out. It returns once this node sees to as
// master, or with an error: ErrNotMaster if this node does not lead the
// group, ErrTimeout when ctx (or, without a deadline,
// Options.ProposeTimeout) ends first: to may still take over, or another
// node once the lease ran out.
func (n *Node) TransferMaster(ctx context.Context, group, to uint64) error {
	if _, err := n.group(group); err != nil {
		return err
	}
	if to == n.opts.MyNode || !slices.Contains(n.opts.Nodes, to) {
		return fmt.Errorf("%w: %w: cannot transfer to node %d (members %v, this is %d)", ErrInvalidOptions, ErrNotMember, to, n.opts.Nodes, n.opts.MyNode)
	}
	timeout := n.opts.ProposeTimeout
	if dl, ok := ctx.Deadline(); ok {
		timeout = max(time.Until(dl), time.Millisecond)
	}
	ch := make(chan error, 1)
	err := n.onLoop(func() error {
		g := n.groups[group]
		if !g.core.Transfer(to) {
			return n.notMaster(g)
		}
		g.master.waiters = append(g.master.waiters, &transferWait{to: to, deadline: n.env.Clock.Now() + timeout, done: func(err error) { ch <- err }})
		n.process()
		return nil
	})
	if err != nil {
		return err
	}
	select {
	case err := <-ch:
		return err
	case <-ctx.Done():
		return fmt.Errorf("%w: %w", ErrTimeout, ctx.Err())
	}
}

// ReadAsync runs fn on the node's loop once a read of group is
// linearizable: the group's state machines then hold every write that
// completed before ReadAsync was called, and nothing executes while fn
// runs. fn gets the read's details, or an error and no read: ErrNoQuorum
// (no majority reachable), ErrNotMaster (ReadLease off the master),
// ErrTimeout (no answer within Options.ProposeTimeout), ErrClosed,
// ErrUnknownGroup. fn must not block.
func (n *Node) ReadAsync(group uint64, mode ReadMode, fn func(ReadInfo, error)) {
	if !n.env.Loop.Post(func() { n.startRead(group, mode, fn, n.opts.ProposeTimeout) }) {
		fn(ReadInfo{}, ErrClosed)
	}
}

// Read is ReadAsync waiting for the read: fn (which may be nil) runs on
// the node's loop at the linearizable point, and Read returns once it ran,
// or with an error wrapping ErrTimeout when ctx ends first.
func (n *Node) Read(ctx context.Context, group uint64, mode ReadMode, fn func()) (ReadInfo, error) {
	if err := ctx.Err(); err != nil {
		return ReadInfo{}, fmt.Errorf("%w: %w", ErrTimeout, err)
	}
	timeout := n.opts.ProposeTimeout
	if dl, ok := ctx.Deadline(); ok {
		timeout = max(time.Until(dl), time.Millisecond)
	}
	type outcome struct {
		ri  ReadInfo
		err error
	}
	ch := make(chan outcome, 1)
	cb := func(ri ReadInfo, err error) {
		if err == nil && fn != nil {
			fn()
		}
		ch <- outcome{ri, err}
	}
	if !n.env.Loop.Post(func() { n.startRead(group, mode, cb, timeout) }) {
		return ReadInfo{}, ErrClosed
	}
	select {
	case o := <-ch:
		return o.ri, o.err
	case <-ctx.Done():
		return ReadInfo{}, fmt.Errorf("%w: %w", ErrTimeout, ctx.Err())
	}
}

// ReadIndex confirms this node's view of group with a majority round and
// returns once this node executed up to the confirmed index, which it
// returns (etcd's ReadIndex, dragonboat's ReadIndex): a read of the state
// machines after it sees every write that completed before the call.
func (n *Node) ReadIndex(ctx context.Context, group uint64) (uint64, error) {
	ri, err := n.Read(ctx, group, ReadIndex, nil)
	return ri.Index, err
}

func (n *Node) startRead(gid uint64, mode ReadMode, fn func(ReadInfo, error), timeout time.Duration) {
	if n.closed {
		fn(ReadInfo{}, ErrClosed)
		return
	}
	g, err := n.group(gid)
	if err != nil {
		fn(ReadInfo{}, err)
		return
	}
	if mode > ReadIndex {
		fn(ReadInfo{}, fmt.Errorf("%w: read mode %v", ErrInvalidOptions, mode))
		return
	}
	if g.core.QuorumLost() {
		n.stats.noQuorum.Add(1)
		fn(ReadInfo{}, fmt.Errorf("%w: group %d", ErrNoQuorum, gid))
		return
	}
	ms := &g.master
	now := n.env.Clock.Now()
	r := &read{fn: fn, deadline: now + timeout}
	if mode != ReadIndex && n.isMaster(g, now) {
		// Under the lease no other node can have a value chosen, and every
		// value an earlier master got chosen is at or below the master
		// record: this node's chosen prefix holds every completed write.
		r.index, r.byLease = g.core.ChosenUpto(), true
		ms.ready = append(ms.ready, r)
		n.serveReads(g)
		return
	}
	if mode == ReadLease {
		fn(ReadInfo{}, n.notMaster(g))
		return
	}
	// Unique across incarnations (the boot is): a late answer to a read
	// of an earlier incarnation must not confirm this one (seed 6327).
	ms.readSeq++
	r.id = g.core.Boot()<<32 | ms.readSeq&(1<<32-1)
	if ms.reads == nil {
		ms.reads = map[uint64]*read{}
	}
	ms.reads[r.id] = r
	g.core.ReadIndex(r.id)
	n.process()
}

// readStates takes the core's answers to read index requests.
func (n *Node) readStates(g *group) {
	ms := &g.master
	for _, rs := range g.core.ReadStates() {
		r := ms.reads[rs.ID]
		if r == nil {
			continue // answered already, or given up
		}
		if rs.Index == 0 {
			r.retry = true
			continue
		}
		delete(ms.reads, rs.ID)
		r.index = rs.Index
		ms.ready = append(ms.ready, r)
	}
	n.serveReads(g)
}

// serveReads runs the confirmed reads whose index this node executed.
func (n *Node) serveReads(g *group) {
	ms := &g.master
	if len(ms.ready) == 0 || g.ckpt.installing {
		return
	}
	keep := ms.ready[:0]
	for _, r := range ms.ready {
		if r.index > g.executed {
			keep = append(keep, r)
			continue
		}
		if r.byLease {
			n.stats.leaseReads.Add(1)
		} else {
			n.stats.indexReads.Add(1)
		}
		if h := n.opts.hooks.OnRead; h != nil {
			h(g.id, g.executed, r.byLease)
		}
		r.fn(ReadInfo{Index: g.executed, ByLease: r.byLease}, nil)
	}
	clear(ms.ready[len(keep):])
	ms.ready = keep
}

// tickReads retries refused read index requests and fails reads that ran
// out of time or of quorum, and proposals that can no longer reach one.
func (n *Node) tickReads(g *group) {
	ms := &g.master
	now := n.env.Clock.Now()
	lost := g.core.QuorumLost()
	for _, id := range slices.Sorted(maps.Keys(ms.reads)) {
		r := ms.reads[id]
		switch {
		case lost:
			delete(ms.reads, id)
			n.stats.noQuorum.Add(1)
			r.fn(ReadInfo{}, fmt.Errorf("%w: group %d", ErrNoQuorum, g.id))
		case now >= r.deadline:
			delete(ms.reads, id)
			r.fn(ReadInfo{}, fmt.Errorf("%w: read of group %d not confirmed in time", ErrTimeout, g.id))
		case r.retry:
			r.retry = false
			g.core.ReadIndex(id)
		}
	}
	keep := ms.ready[:0]
	for _, r := range ms.ready {
		if now >= r.deadline {
			r.fn(ReadInfo{}, fmt.Errorf("%w: group %d did not execute up to the read index %d in time", ErrTimeout, g.id, r.index))
			continue
		}
		keep = append(keep, r)
	}
	clear(ms.ready[len(keep):])
	ms.ready = keep
	if lost {
		n.failNoQuorum(g)
	}
}

// failNoQuorum ends the proposals of a group cut off from its majority:
// those still queued here are withdrawn (never chosen: ErrNoQuorum); those
// already sent may still be chosen (ErrTimeout with ErrNoQuorum).
func (n *Node) failNoQuorum(g *group) {
	for _, seq := range slices.Sorted(maps.Keys(g.pending)) {
		p := n.untrack(g, seq)
		n.stats.noQuorum.Add(1)
		if g.core.Cancel(seq) {
			p.fail(fmt.Errorf("%w: group %d", ErrNoQuorum, g.id))
		} else {
			n.stats.timeouts.Add(1)
			p.fail(fmt.Errorf("%w: %w: group %d lost its majority with the proposal in flight", ErrTimeout, ErrNoQuorum, g.id))
		}
	}
}

// failReads ends every read of a stopping node.
func (n *Node) failReads(g *group, err error) {
	ms := &g.master
	for _, id := range slices.Sorted(maps.Keys(ms.reads)) {
		ms.reads[id].fn(ReadInfo{}, err)
	}
	for _, r := range ms.ready {
		r.fn(ReadInfo{}, err)
	}
	ms.reads, ms.ready = nil, nil
	for _, w := range ms.waiters {
		w.done(err)
	}
	ms.waiters = nil
}

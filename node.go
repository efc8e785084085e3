package paxos

import (
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/paxoskit/paxos/core"
	pb "github.com/paxoskit/paxos/core/paxospb"
	"github.com/paxoskit/paxos/env"
)

// Node runs the groups of one cluster member. Its methods are safe for
// concurrent use; callbacks and Execute run on the node's loop and must not
// block or call Close.
type Node struct {
	opts   Options
	env    env.Env
	groups []*group

	// Owned by the loop.
	syncing bool
	closed  bool
	tick    env.Timer
	warned  map[string]time.Duration // last WARN per kind, for rate limiting

	stats     counters
	ident     *pb.Identity // the identity storage recorded (see checkIdentity)
	closeOnce sync.Once
	closeErr  error
}

type group struct {
	id       uint64
	core     *core.Core
	sms      []StateMachine
	batch    batcher
	pending  map[uint64]*proposal // by core sequence number
	status   groupStatus
	executed uint64 // every instance up to it is executed (or restored) here
	version  uint64 // the newest master record executed (or restored) here: fenced values need it
	// peersVersion is the configuration version (+1) whose addresses the
	// transport was given.
	peersVersion uint64
	ckpt         ckptState
	master       masterState
}

// RunNode starts a node on opts.Env. It checks the identity recorded in
// storage (recording it on first start), restores every group and executes
// the chosen values found on disk into the (fresh) state machines before it
// returns; then the node rejoins its groups and learns what it missed. On
// error the Env is closed. real.RunNode builds the production Env and calls
// it.
func RunNode(opts Options) (*Node, error) {
	n, err := runNode(opts)
	if err != nil && opts.Env.Close != nil {
		opts.Env.Close()
	}
	return n, err
}

func runNode(opts Options) (*Node, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if !opts.Env.Complete() {
		return nil, fmt.Errorf("%w: Env needs Loop, Clock, Transport, Storage and Rand (real.Open builds one)", ErrInvalidOptions)
	}
	n := &Node{opts: opts.withDefaults(), env: opts.Env, warned: map[string]time.Duration{}}
	fresh, err := n.checkIdentity()
	if err != nil {
		return nil, err
	}
	if err := n.restore(); err != nil {
		if !fresh && !slices.Equal(n.ident.Members, n.opts.Nodes) {
			// The member list could not be checked: refuse it as such.
			return nil, fmt.Errorf("%w (and restoring the groups to check it against their configurations failed: %w)", n.identityErr(n.ident, n.identity()), err)
		}
		return nil, err
	}
	if !fresh {
		if err := n.checkMembers(); err != nil {
			return nil, err
		}
	}
	n.env.Transport.Start(n.receive)
	if !n.env.Loop.Post(func() {
		n.process()
		n.tick = n.env.Clock.AfterFunc(n.opts.TickInterval, n.onTick)
	}) {
		return nil, ErrClosed
	}
	return n, nil
}

// identity is what this start claims to be.
func (n *Node) identity() *pb.Identity {
	return &pb.Identity{NodeId: n.opts.MyNode, ClusterId: n.opts.ClusterID, Members: n.opts.Nodes, Joined: n.opts.Join}
}

// checkIdentity refuses storage recorded for another node or cluster;
// storage without an identity gets this one, durably, before anything
// else is written (fresh). The recorded identity, not the flags, says
// what the groups' first configuration was (n.ident); whether the flags'
// member list fits the configuration the log decided is checked once the
// groups are restored (checkMembers).
func (n *Node) checkIdentity() (fresh bool, err error) {
	want := n.identity()
	have, err := n.env.Storage.Identity()
	if err != nil {
		return false, fmt.Errorf("%w: read identity: %w", ErrStorage, err)
	}
	if have == nil {
		if err := n.env.Storage.SetIdentity(want); err != nil {
			return false, fmt.Errorf("%w: record identity: %w", ErrStorage, err)
		}
		n.ident = want
		return true, nil
	}
	n.ident = have
	if n.opts.hooks.Canary == core.CanaryNoIdentityCheck {
		n.ident = want
	} else if have.NodeId != want.NodeId || have.ClusterId != want.ClusterId {
		return false, n.identityErr(have, want)
	}
	return false, nil
}

func (n *Node) identityErr(have, want *pb.Identity) error {
	return fmt.Errorf("%w: storage belongs to node %d of cluster %d with members %v; this start is node %d of cluster %d with members %v",
		ErrIdentityMismatch, have.NodeId, have.ClusterId, have.Members, want.NodeId, want.ClusterId, want.Members)
}

// checkMembers refuses a restart whose member list (Options.Nodes) is
// neither the one the node first started with nor, in some group, the
// newest configuration the log decided (its voters, or all its members):
// a typo in a peer list is caught even after membership changes, and an
// operator may name the current members. Nothing was written yet.
func (n *Node) checkMembers() error {
	if n.opts.hooks.Canary == core.CanaryNoIdentityCheck || slices.Equal(n.ident.Members, n.opts.Nodes) {
		return nil
	}
	for _, g := range n.groups {
		cf := g.core.Conf()
		if g.core.ConfKnown() && (slices.Equal(cf.Voters, n.opts.Nodes) || slices.Equal(cf.Members(), n.opts.Nodes)) {
			return nil
		}
	}
	return n.identityErr(n.ident, n.identity())
}

// restore builds every group's core from storage and executes the chosen
// prefix found there.
func (n *Node) restore() error {
	opts := n.opts
	for gid := range uint64(opts.Groups) {
		g := &group{id: gid, sms: slices.Clone(opts.StateMachines), pending: map[uint64]*proposal{}}
		g.ckpt.machines = checkpointers(g.sms)
		confs, err := n.restoreGroup(g)
		if err != nil {
			return fmt.Errorf("%w: %w", ErrStorage, err)
		}
		// The log is replayed from the checkpoint on, even where a durable
		// machine's own state is newer (its values are skipped): the
		// master records there set the version fenced values need.
		base := g.ckpt.last
		recs, err := n.env.Storage.Load(gid, base+1)
		if err != nil {
			return fmt.Errorf("%w: load group %d: %w", ErrStorage, gid, err)
		}
		st := core.SplitRecords(recs)
		st.Base, st.Confs, st.Version = base, confs, g.version
		memTail := opts.hooks.MemTail
		if memTail == 0 && opts.HoldCount > 0 {
			memTail = min(opts.HoldCount, defaultMemTail) // never hold more in memory than on disk
		}
		g.core, err = core.New(core.Config{
			ID: opts.MyNode, Peers: n.ident.Members, Join: n.ident.Joined, Group: gid, Window: opts.Window,
			MaxQueue: opts.MaxPending, MemTail: memTail, Rand: n.env.Rand.IntN, Canary: opts.hooks.Canary,
			TickMicros: uint64(opts.TickInterval / time.Microsecond), LeaseMicros: uint64(opts.MasterLease / time.Microsecond),
		}, st)
		if err != nil {
			return fmt.Errorf("%w: group %d: %w", ErrStorage, gid, err)
		}
		g.executed = base
		g.status.executed.Store(base)
		g.master.lease = opts.MasterLease
		n.groups = append(n.groups, g)
	}
	for _, g := range n.groups {
		for _, e := range g.core.Committed() {
			n.execute(g, e)
		}
		g.publish()
	}
	return nil
}

// defaultMemTail is how many executed instances a group keeps in memory
// for learners (fewer if HoldCount is smaller); older ones are read from
// storage.
const defaultMemTail = 1024

// MyNodeID returns this node's id.
func (n *Node) MyNodeID() uint64 { return n.opts.MyNode }

// Close stops the node: pending proposals fail with ErrClosed, later calls
// fail with ErrClosed, and the Env is released (with the production Env,
// Close returns once the loop has stopped and storage is flushed). Close is
// idempotent; it must not be called from the node's loop.
func (n *Node) Close() error {
	n.closeOnce.Do(func() {
		n.env.Loop.Post(func() { n.stop(ErrClosed) })
		if n.env.Close != nil {
			n.closeErr = n.env.Close()
		}
	})
	return n.closeErr
}

// stop fails everything pending with err and stops the node's timers; the
// node handles nothing afterwards.
func (n *Node) stop(err error) {
	if n.closed {
		return
	}
	n.closed = true
	if n.tick != nil {
		n.tick.Stop()
	}
	for _, g := range n.groups {
		for _, s := range g.ckpt.sends {
			n.endSend(g, s)
		}
		if r := g.ckpt.recv; r != nil {
			g.ckpt.recv, r.aborted = nil, true
			if !r.writing {
				n.discardRecv(r)
			}
		}
		n.flushBatch(g) // fails the unflushed values with ErrClosed
		n.failReads(g, err)
		for _, s := range slices.Sorted(maps.Keys(g.pending)) {
			n.untrack(g, s).fail(err)
		}
		g.publish()
	}
}

// warn logs at WARN, at most once per second per kind.
func (n *Node) warn(kind, msg string, args ...any) {
	now := n.env.Clock.Now()
	if last, ok := n.warned[kind]; ok && now-last < time.Second {
		return
	}
	n.warned[kind] = now
	n.opts.Logger.Warn(msg, args...)
}

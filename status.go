package paxos

import (
	"fmt"
	"sync/atomic"

	"github.com/paxoskit/paxos/env"
)

// Stats are a node's counters, totals since it started. Safe to read from
// any goroutine.
type Stats struct {
	Proposals     uint64 // proposals accepted for the log
	Timeouts      uint64 // proposals that ended with ErrTimeout
	Cancelled     uint64 // proposals whose context ended first
	Committed     uint64 // instances executed, no-ops included
	Syncs         uint64 // syncs the runtime asked storage for
	MsgsSent      uint64
	BytesSent     uint64
	MsgsReceived  uint64
	BytesReceived uint64
	BadMessages   uint64 // undecodable or invalid messages dropped
	UnknownGroups uint64 // messages for a group this node does not have

	Checkpoints      uint64 // checkpoints taken and committed
	CheckpointErrors uint64 // checkpoints that failed (the log is kept)
	Installs         uint64 // checkpoints received from a peer and installed
	SnapSends        uint64 // checkpoint transfers served
	SnapRecvs        uint64 // checkpoint transfers asked for
	SnapAborts       uint64 // transfers this node dropped (no progress, bad bytes)
	SnapBytesSent    uint64
	SnapBytesRecv    uint64

	MasterChanges uint64 // changes of the master this node knows of, all groups
	LeaseReads    uint64 // linearizable reads served under this node's lease
	IndexReads    uint64 // linearizable reads served after a read index round
	NoQuorum      uint64 // proposals and reads failed with ErrNoQuorum
	Resent        uint64 // proposals sent again: the master they went to was replaced without executing them
	Fenced        uint64 // chosen values skipped: sent to a master that was no longer in force (see core.Fenced)

	// Env is what the environment counted itself (fsyncs, dropped sends,
	// frames of other clusters or of non-members), when it counts.
	Env env.Counters
}

type counters struct {
	proposals, timeouts, cancelled, committed, syncs atomic.Uint64
	msgsSent, bytesSent, msgsRecv, bytesRecv         atomic.Uint64
	badMessages, unknownGroups                       atomic.Uint64
	checkpoints, checkpointErrors, installs          atomic.Uint64
	snapSends, snapRecvs, snapAborts                 atomic.Uint64
	snapBytesSent, snapBytesRecv                     atomic.Uint64
	masterChanges, leaseReads, indexReads, noQuorum  atomic.Uint64
	resent, fenced                                   atomic.Uint64
}

// Stats returns the node's counters.
func (n *Node) Stats() Stats {
	c := &n.stats
	s := Stats{
		Proposals: c.proposals.Load(), Timeouts: c.timeouts.Load(), Cancelled: c.cancelled.Load(),
		Committed: c.committed.Load(), Syncs: c.syncs.Load(),
		MsgsSent: c.msgsSent.Load(), BytesSent: c.bytesSent.Load(),
		MsgsReceived: c.msgsRecv.Load(), BytesReceived: c.bytesRecv.Load(),
		BadMessages: c.badMessages.Load(), UnknownGroups: c.unknownGroups.Load(),
		Checkpoints: c.checkpoints.Load(), CheckpointErrors: c.checkpointErrors.Load(), Installs: c.installs.Load(),
		SnapSends: c.snapSends.Load(), SnapRecvs: c.snapRecvs.Load(), SnapAborts: c.snapAborts.Load(),
		SnapBytesSent: c.snapBytesSent.Load(), SnapBytesRecv: c.snapBytesRecv.Load(),
		MasterChanges: c.masterChanges.Load(), LeaseReads: c.leaseReads.Load(), IndexReads: c.indexReads.Load(),
		NoQuorum: c.noQuorum.Load(), Resent: c.resent.Load(), Fenced: c.fenced.Load(),
	}
	if n.env.Counters != nil {
		s.Env = n.env.Counters()
	}
	return s
}

// GroupStatus is what a node knows about one group.
type GroupStatus struct {
	Leader        uint64 // the node believed to lead, 0 if none is known
	IsLeader      bool   // this node has won phase 1 and not lost it since
	BallotCounter uint64 // the counter of the highest ballot this node promised
	Chosen        uint64 // every instance up to this one is chosen and known here
	Executed      uint64 // every instance up to this one is executed here
	LogStart      uint64 // the lowest instance whose value this node's log may hold; below it, cleaned
	Checkpoint    uint64 // the instance of the newest checkpoint, 0 if none
	InMemory      int    // instances the group holds in memory
	MemoryBound   int    // what InMemory never exceeds (see core.Core.LogBound)
	Master        uint64 // the master this node knows of, 0 if none (see Node.Master)
	MasterVersion uint64 // its version
	IsMaster      bool   // this node holds the master lease
	Queued        int    // proposals waiting for an instance on this node
	Pending       int    // proposals of this node waiting for their outcome
}

// groupStatus is published by the loop after each handler.
type groupStatus struct {
	leader, ballot, chosen, executed atomic.Uint64
	logStart, checkpoint             atomic.Uint64
	master, masterVersion            atomic.Uint64
	isLeader, isMaster               atomic.Bool
	queued, pending, mem, memBound   atomic.Int64
	conf                             atomic.Pointer[Membership] // the newest configuration
}

// Status returns what this node knows about group; safe from any goroutine.
func (n *Node) Status(group uint64) (GroupStatus, error) {
	g, err := n.group(group)
	if err != nil {
		return GroupStatus{}, err
	}
	s := &g.status
	return GroupStatus{
		Leader: s.leader.Load(), IsLeader: s.isLeader.Load(), BallotCounter: s.ballot.Load(),
		Chosen: s.chosen.Load(), Executed: s.executed.Load(),
		LogStart: s.logStart.Load(), Checkpoint: s.checkpoint.Load(),
		Queued: int(s.queued.Load()), Pending: int(s.pending.Load()),
		Master: s.master.Load(), MasterVersion: s.masterVersion.Load(), IsMaster: s.isMaster.Load(),
		InMemory: int(s.mem.Load()), MemoryBound: int(s.memBound.Load()),
	}, nil
}

// publish copies a group's core state into its status, for readers on
// other goroutines.
func (g *group) publish() {
	c, s := g.core, &g.status
	s.leader.Store(c.Leader())
	s.isLeader.Store(c.IsLeader())
	s.ballot.Store(c.Promised().Counter)
	s.chosen.Store(c.ChosenUpto())
	s.logStart.Store(c.LogStart())
	s.checkpoint.Store(g.ckpt.last)
	s.queued.Store(int64(c.Pending()))
	s.mem.Store(int64(c.LogLen()))
	s.memBound.Store(int64(c.LogBound()))
	s.pending.Store(int64(len(g.pending)))
	g.publishConf()
}

// publishConf makes the group's newest configuration visible to
// Membership readers.
func (g *group) publishConf() {
	cf, known, s := g.core.Conf(), g.core.ConfKnown(), &g.status
	if m := s.conf.Load(); m == nil || m.Version != cf.Version || m.Known != known {
		m := membershipOf(cf, known)
		s.conf.Store(&m)
	}
}

// group returns the group with id gid.
func (n *Node) group(gid uint64) (*group, error) {
	if gid >= uint64(len(n.groups)) {
		return nil, fmt.Errorf("%w: %d (this node has %d)", ErrUnknownGroup, gid, len(n.groups))
	}
	return n.groups[gid], nil
}

// NowInstanceID returns the next instance this node will execute in group:
// every instance below it is chosen and executed here. Safe from any
// goroutine.
func (n *Node) NowInstanceID(group uint64) (uint64, error) {
	g, err := n.group(group)
	if err != nil {
		return 0, err
	}
	return g.status.executed.Load() + 1, nil
}

// MinChosenInstanceID returns the lowest instance whose chosen value this
// node's log still holds (the log below it was cleaned: a checkpoint covers
// it), 0 if it holds none yet.
func (n *Node) MinChosenInstanceID(group uint64) (uint64, error) {
	g, err := n.group(group)
	if err != nil {
		return 0, err
	}
	start, now := g.status.logStart.Load(), g.status.executed.Load()
	if start > now {
		return 0, nil
	}
	return start, nil
}

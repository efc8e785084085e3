package paxos

import (
	"context"
	"errors"
	"fmt"
	"time"
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

// Master returns the group's master as this node knows it: on the master
// itself while its lease holds, elsewhere the proposer of the latest
// master record this node executed, while it hears from that node within
// the lease (PhxPaxos GetMasterWithVersion). Safe from any goroutine.
func (n *Node) Master(group uint64) (Master, error) {
	g, err := n.group(group)
	if err != nil {
		return Master{}, err
	}
	return Master{Node: g.status.master.Load(), Version: g.status.masterVersion.Load()}, nil
}

// IsMaster reports whether this node is the group's master with a valid
// lease (PhxPaxos IsIMMaster). Safe from any goroutine; the answer may be
// out of date by the time the caller acts on it: use Read or the Version
// as a fencing token where that matters.
func (n *Node) IsMaster(group uint64) bool {
	g, err := n.group(group)
	if err != nil {
		return false
	}
	return g.status.isMaster.Load() && g.status.master.Load() == n.opts.MyNode
}

// SetMasterLease changes the lease this node asks for while it is the
// group's master: at most Options.MasterLease (the lease nodes wait out
// after a restart), at least 10 ticks.
func (n *Node) SetMasterLease(group uint64, d time.Duration) error {
	return errNotYet
}

// DropMaster makes this node give up mastership of group (PhxPaxos
// DropMaster): it stops renewing its lease and does not run for master
// again for two leases, so another node takes over once the lease ran
// out. It fails with ErrNotMaster if this node does not lead the group.
func (n *Node) DropMaster(group uint64) error {
	return errNotYet
}

// TransferMaster hands mastership of group to node to (a voting member):
// this node stops its lease at once and tells to to take over without
// waiting for the lease to run out. It returns once to is master, or with
// an error when ctx ends first (ErrTimeout) or this node does not lead the
// group (ErrNotMaster).
func (n *Node) TransferMaster(ctx context.Context, group, to uint64) error {
	return errNotYet
}

// ReadAsync runs fn on the node's loop once a read of group is
// linearizable: the group's state machines then hold every write that
// completed before ReadAsync was called, and nothing executes while fn
// runs. fn gets the read's details, or an error and no read: ErrNoQuorum
// (no majority reachable), ErrNotMaster (ReadLease off the master),
// ErrTimeout (no answer within Options.ProposeTimeout), ErrClosed. fn must
// not block.
func (n *Node) ReadAsync(group uint64, mode ReadMode, fn func(ReadInfo, error)) {
	fn(ReadInfo{}, errNotYet)
}

// Read is ReadAsync waiting for the read: fn (which may be nil) runs on
// the node's loop at the linearizable point, and Read returns once it ran,
// or with an error wrapping ErrTimeout when ctx ends first.
func (n *Node) Read(ctx context.Context, group uint64, mode ReadMode, fn func()) (ReadInfo, error) {
	return ReadInfo{}, errNotYet
}

// ReadIndex confirms this node's view of group with a majority round and
// returns once this node executed up to the confirmed index, which it
// returns (etcd's ReadIndex, dragonboat's ReadIndex): a read of the state
// machines after it sees every write that completed before the call.
func (n *Node) ReadIndex(ctx context.Context, group uint64) (uint64, error) {
	ri, err := n.Read(ctx, group, ReadIndex, nil)
	return ri.Index, err
}

var errNotYet = errors.New("paxos: not yet implemented")

// Package testhooks lets the simulator and the tests of this module observe
// and deliberately break a node, without those hooks appearing in the
// public Options.
package testhooks

import (
	"time"

	"github.com/paxoskit/paxos/core"
	pb "github.com/paxoskit/paxos/core/paxospb"
)

// Hooks are attached to a node's Options with Attach.
type Hooks struct {
	// OnCommit sees every chosen instance in order on this node, no-ops
	// included, before it is executed.
	OnCommit func(group, instance uint64, v *pb.Value)
	// Canary deliberately breaks the protocol.
	Canary core.Canary
	// MemTail overrides how many executed instances a core keeps in memory.
	MemTail int
	// OnRestore sees a group start from its checkpoint at instance,
	// OnCheckpoint a checkpoint committed, OnInstall a received checkpoint
	// installed (the group's machines now hold the state as of instance).
	OnRestore, OnCheckpoint, OnInstall func(group, instance uint64)
	// OnLease sees this node's belief about its master lease of group each
	// time it changes: it holds the lease, as master of the given version,
	// until its own clock (env.Clock.Now) reaches until; until 0 means it
	// holds none. A lease read is served only while the belief holds.
	OnLease func(group uint64, until time.Duration, version uint64)
	// OnRead sees every linearizable read this node serves, on the loop,
	// right before its function runs.
	OnRead func(group uint64, index uint64, byLease bool)
}

// Attach stores h in opts, which must be a *paxos.Options. The root package
// sets it in its init; it is a variable so this package need not import
// the root package.
var Attach func(opts any, h Hooks)

package paxos

import (
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/paxoskit/paxos/core"
	"github.com/paxoskit/paxos/env"
	"github.com/paxoskit/paxos/internal/testhooks"
)

// Options configures a Node. Zero fields take the documented defaults.
// The production environment (TCP, goleveldb) is built by package real:
// real.RunNode(opts, cfg) is the one-call way to run a node.
type Options struct {
	MyNode uint64   // this node's id, non-zero
	Nodes  []uint64 // every voting member, including MyNode; no duplicates (with Join: the members to learn from)
	// Join starts a node that its groups do not count as a member yet and
	// whose configuration it does not know: it votes when asked, proposes
	// nothing (ErrNotMember) and learns the configuration with the log
	// (from the group's first value, or a checkpoint it installs). Add it
	// with AddMember or AddFollower on a member. Nodes then lists the
	// members to learn from.
	Join      bool
	ClusterID uint64 // required, non-zero; recorded in storage on first start
	Groups    int    // independent Paxos groups, numbered from 0; default 1

	// StateMachines run in every group. A proposal with a nil SMCtx goes
	// to the first one.
	StateMachines []StateMachine

	// Env is the world the node runs in: real.Open builds the production
	// one, the simulator its own. The node owns it: Close releases it.
	Env env.Env

	TickInterval   time.Duration // default 10ms; protocol timeouts count ticks
	ProposeTimeout time.Duration // default 3s; the wait of a proposal whose context has no deadline
	Window         int           // instances in flight per group; default 128, at most core.ConfigDelay (256)
	MaxValueSize   int           // default 8 MiB
	MaxPending     int           // proposals waiting per group; default 4096

	// BatchPropose flushes a batch at BatchCount values (default 5),
	// BatchBytes bytes (default 512 KiB) or BatchDelay after its first
	// value (default 20ms), the PhxPaxos defaults.
	BatchCount int
	BatchBytes int
	BatchDelay time.Duration
	Logger     *slog.Logger // default slog.Default(); misconfiguration is logged at WARN

	// CheckpointInterval is how many instances a group executes between
	// two checkpoints (default 10,000), when its state machines are
	// Checkpointers. HoldCount is how many instances of log a group keeps
	// below its newest checkpoint (default 100,000): peers that lag by
	// less catch up from the log, others by checkpoint transfer. A
	// negative HoldCount never cleans the log.
	CheckpointInterval int
	HoldCount          int

	// MasterLease is how long a master's lease lasts (default 1s): while
	// it holds, no other node can become master, so the master serves
	// reads without a round of messages. After the master dies, a new one
	// is elected once its lease ran out on the followers' clocks. A
	// restarted node waits one MasterLease before it supports a new master.
	MasterLease time.Duration
	// MaxClockDrift bounds how far any node's clock rate may stray from
	// true time (default 0.01: 1%); the master's lease is shortened to
	// stay safe within it. Lease reads are linearizable only while every
	// clock keeps within it.
	MaxClockDrift float64
	// OnMasterChange, if set, is called on the node's loop whenever the
	// master this node knows of for a group changes (Node 0: none known).
	// It must not block.
	OnMasterChange func(group uint64, m Master)

	hooks testhooks.Hooks
}

func init() {
	testhooks.Attach = func(opts any, h testhooks.Hooks) { opts.(*Options).hooks = h }
}

// Defaults returns opts with every zero field set to its default.
func (o Options) withDefaults() Options {
	o.Nodes = slices.Clone(o.Nodes)
	slices.Sort(o.Nodes)
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
		o.Logger = slog.Default()
	}
	if o.CheckpointInterval == 0 {
		o.CheckpointInterval = 10_000
	}
	if o.HoldCount == 0 {
		o.HoldCount = 100_000
	}
	if o.MasterLease == 0 {
		o.MasterLease = time.Second
	}
	if o.MaxClockDrift == 0 {
		o.MaxClockDrift = 0.01
	}
	return o
}

// Validate checks opts without touching the environment: RunNode calls it
// first, and real.RunNode calls it before it opens storage or binds a port.
// Every problem is an error wrapping ErrInvalidOptions.
func (o Options) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrInvalidOptions}, args...)...)
	}
	nodes := slices.Sorted(slices.Values(o.Nodes))
	switch {
	case o.MyNode == 0:
		return bad("MyNode must be non-zero")
	case len(nodes) == 0:
		return bad("Nodes is empty")
	case slices.Contains(nodes, 0):
		return bad("node id 0 in Nodes %v", o.Nodes)
	case len(slices.Compact(slices.Clone(nodes))) != len(nodes):
		return bad("duplicate node id in Nodes %v", o.Nodes)
	case !o.Join && !slices.Contains(nodes, o.MyNode):
		return fmt.Errorf("%w: %w: MyNode %d not in Nodes %v", ErrInvalidOptions, ErrNotMember, o.MyNode, o.Nodes)
	case o.ClusterID == 0:
		return bad("ClusterID is required (non-zero): nodes of one cluster share it, and it is recorded in storage")
	case o.Groups < 0 || o.Groups > maxGroups:
		return bad("Groups %d outside [1, %d]", o.Groups, maxGroups)
	case o.Window < 0, o.MaxValueSize < 0, o.MaxPending < 0, o.BatchCount < 0, o.BatchBytes < 0:
		return bad("negative size (Window %d, MaxValueSize %d, MaxPending %d, BatchCount %d, BatchBytes %d)",
			o.Window, o.MaxValueSize, o.MaxPending, o.BatchCount, o.BatchBytes)
	case o.Window > core.ConfigDelay:
		return bad("Window %d above %d (core.ConfigDelay: a leader never runs further ahead of the chosen prefix, so that it knows each instance's configuration)", o.Window, core.ConfigDelay)
	case o.CheckpointInterval < 0:
		return bad("negative CheckpointInterval %d", o.CheckpointInterval)
	case o.MaxClockDrift < 0 || o.MaxClockDrift >= 0.5:
		return bad("MaxClockDrift %v outside [0, 0.5)", o.MaxClockDrift)
	case o.MasterLease < 0:
		return bad("negative MasterLease %v", o.MasterLease)
	case o.MasterLease > 0 && o.MasterLease < 10*max(o.TickInterval, 10*time.Millisecond):
		return bad("MasterLease %v shorter than ten ticks (heartbeats go every five)", o.MasterLease)
	case o.TickInterval < 0 || o.ProposeTimeout < 0 || o.BatchDelay < 0:
		return bad("negative duration (TickInterval %v, ProposeTimeout %v, BatchDelay %v)", o.TickInterval, o.ProposeTimeout, o.BatchDelay)
	}
	for i, sm := range o.StateMachines {
		if sm == nil {
			return bad("StateMachines[%d] is nil", i)
		}
		for _, other := range o.StateMachines[:i] {
			if other.SMID() == sm.SMID() {
				return bad("two state machines with SMID %d", sm.SMID())
			}
		}
	}
	return nil
}

// maxGroups bounds Options.Groups.
const maxGroups = 1 << 16

// Package env holds the seams between the node runtime and the world: how a
// node runs its handlers, reads time, talks to peers, stores records and
// draws random numbers. The simulator (package sim) and the production
// adapters (package real) implement them; the runtime in the root package
// uses nothing else to reach the outside, so the code the simulator runs is
// the code production runs.
package env

import (
	"io"
	"time"

	pb "github.com/paxoskit/paxos/core/paxospb"
)

// Loop runs a node's handlers one at a time, in the order they were posted.
type Loop interface {
	// Post schedules f to run on the node's loop after every handler
	// posted before it. It never blocks and never runs f before returning;
	// it may be called from any goroutine. Once the environment is closed
	// it returns false and f never runs.
	Post(f func()) bool
}

// Clock reads time and arms timers whose callbacks run on the node's loop.
type Clock interface {
	Now() time.Duration // time since an arbitrary, fixed origin
	// AfterFunc posts f to the node's loop once d has passed.
	AfterFunc(d time.Duration, f func()) Timer
}

// Timer is an armed callback.
type Timer interface {
	// Stop prevents the callback from being posted; it reports whether it
	// did. When it returns false the callback may already wait in the
	// loop's queue and still run: callbacks must check that they are
	// still wanted.
	Stop() bool
}

// Transport carries opaque messages between nodes, best effort: messages
// may be lost, duplicated or reordered.
type Transport interface {
	// Start begins delivery: every message from a peer is handed to recv on
	// the node's loop. Nothing is delivered before Start.
	Start(recv func(msg []byte))
	// Send must not block and must not modify msg: the runtime hands the
	// same bytes to several peers.
	Send(to uint64, msg []byte)
}

// PeerSetter is a Transport that reaches peers by address: the runtime
// tells it the address a group's configuration names for a member (a
// member added by a membership change, or one whose address changed).
type PeerSetter interface {
	SetPeer(id uint64, addr string)
}

// Storage is a node's durable log of records, shared by its groups, and
// the identity of the node that owns it.
//
// A record with CleanBelow set cleans the log: once it is durable, the
// entries of its group at instances below CleanBelow may be deleted (at
// the storage's pace: cleaning must not stall writes), and Load and Read
// never return them again, even if some are still on disk. The latest
// clean record of a group is durable like any other record.
type Storage interface {
	// Identity returns the identity recorded by SetIdentity, or nil for a
	// storage that has none yet.
	Identity() (*pb.Identity, error)
	// SetIdentity records id durably before it returns.
	SetIdentity(id *pb.Identity) error
	// Load returns the durable records of group in write order: its hard
	// states, its latest clean record, and the entry records of instances
	// at or above from (and at or above the clean mark). It runs before
	// the node starts, not on the loop.
	Load(group, from uint64) ([]*pb.Record, error)
	// Write appends records. They survive a crash only once a Sync that
	// started after the Write has completed.
	Write(recs []*pb.Record) error
	// Sync makes every record written so far durable and then calls done
	// on the node's loop.
	Sync(done func(error))
	// Read collects, off the loop, the latest entry of each instance of
	// group from instance from on, in instance order, and calls done with
	// them on the node's loop. It stops before the first instance it holds
	// no entry for (or that is below the clean mark), after maxEntries
	// entries, or once the values collected reach maxBytes. It sees every
	// record written before the call, synced or not.
	Read(group, from uint64, maxEntries, maxBytes int, done func([]*pb.Entry, error))
}

// Checkpoints stores the checkpoints of a node's groups: for each group,
// the newest committed checkpoint survives any crash, whole. Its methods
// may block on IO: the runtime calls them at start and from Worker jobs,
// never on the loop.
type Checkpoints interface {
	// Latest returns the instance of the group's newest committed
	// checkpoint, or 0 if it has none.
	Latest(group uint64) (uint64, error)
	// Create begins a checkpoint of group at instance. Nothing of it is
	// visible until Commit.
	Create(group, instance uint64) (CheckpointWriter, error)
	// Open reads the group's committed checkpoint at instance.
	Open(group, instance uint64) (io.ReadCloser, error)
}

// CheckpointWriter receives the bytes of one new checkpoint.
type CheckpointWriter interface {
	io.Writer
	// Commit makes the checkpoint durable and the group's newest in one
	// atomic step, then may remove the group's older checkpoints. A crash
	// before Commit returns leaves the group's previous newest checkpoint
	// in place; a crash after leaves this one.
	Commit() error
	// Abort discards the checkpoint; it is a no-op after Commit.
	Abort()
}

// Worker runs jobs off the node's loop: taking, sending and receiving
// checkpoints, whose IO must not stall the groups.
type Worker interface {
	// Go runs job off the loop and then posts done, with job's error, to
	// the node's loop. Jobs may run concurrently with each other and with
	// the loop; they must not touch loop-owned state. Once the environment
	// is closed neither job nor done may run.
	Go(job func() error, done func(error))
}

// Rand is the node's source of randomness.
type Rand interface {
	// IntN returns a uniformly random integer in [0, n).
	IntN(n int) int
}

// Counters are what an environment counts itself. Every field is a total
// since the environment was opened.
type Counters struct {
	Fsyncs         uint64 // storage syncs that reached the disk
	SendDrops      uint64 // outgoing messages dropped (queue full, unknown peer)
	BadFrames      uint64 // corrupt or oversized frames received
	ForeignFrames  uint64 // frames carrying another cluster id
	StrangerFrames uint64 // frames from a node that is not a member
}

// Env bundles what one node needs from the world. A node owns the Env it
// is given: Node.Close (and a RunNode that fails) calls Close.
type Env struct {
	Loop      Loop
	Clock     Clock
	Transport Transport
	Storage   Storage
	Rand      Rand
	// Checkpoints and Worker are needed only by nodes whose state
	// machines take checkpoints (paxos.Checkpointer); without them the
	// log is never cleaned.
	Checkpoints Checkpoints
	Worker      Worker

	// Close, if set, releases the environment: the handlers already posted
	// still run, later posts are refused, then transport and storage are
	// closed. It is called once, not from the loop.
	Close func() error
	// Counters, if set, reports the environment's own counters; it must be
	// safe to call from any goroutine.
	Counters func() Counters
}

// Complete reports whether every seam is set.
func (e *Env) Complete() bool {
	return e.Loop != nil && e.Clock != nil && e.Transport != nil && e.Storage != nil && e.Rand != nil
}

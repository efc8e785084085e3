// Package env holds the seams between the node runtime and the world: how a
// node runs its handlers, reads time, talks to peers, stores records and
// draws random numbers. The simulator (package sim) and the production
// adapters (package real) implement them; the runtime in the root package
// uses nothing else to reach the outside.
package env

import (
	"time"

	pb "github.com/paxoskit/paxos/core/paxospb"
)

// Loop runs a node's handlers one at a time, in the order it chooses.
type Loop interface {
	// Post schedules f to run on the node's loop. It never blocks and never
	// runs f before returning. It may be called from any goroutine.
	Post(f func())
}

// Clock reads time and arms timers whose callbacks run on the node's loop.
type Clock interface {
	Now() time.Duration // time since an arbitrary, fixed origin
	AfterFunc(d time.Duration, f func()) Timer
}

// Timer is an armed callback.
type Timer interface {
	// Stop prevents the callback from running; it reports whether it did.
	Stop() bool
}

// Transport carries opaque messages between nodes, best effort: messages
// may be lost, duplicated or reordered. Received messages are handed to the
// handler given to the environment's constructor, on the node's loop.
type Transport interface {
	// Send must not block and must not modify msg: the runtime hands the
	// same bytes to several peers.
	Send(to uint64, msg []byte)
}

// Storage is a node's durable log of records, shared by its groups.
type Storage interface {
	// Load returns the durable records of group in write order.
	Load(group uint64) ([]*pb.Record, error)
	// Write appends records. They survive a crash only once a Sync that
	// started after the Write has completed.
	Write(recs []*pb.Record) error
	// Sync makes every record written so far durable and then calls done
	// on the node's loop.
	Sync(done func(error))
}

// Rand is the node's source of randomness.
type Rand interface {
	// IntN returns a uniformly random integer in [0, n).
	IntN(n int) int
}

// Env bundles what one node needs from the world.
type Env struct {
	Loop      Loop
	Clock     Clock
	Transport Transport
	Storage   Storage
	Rand      Rand
}

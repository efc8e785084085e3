// Package paxos turns a deterministic state machine into a replicated one:
// every node of a group executes the same values in the same order, chosen
// by Multi-Paxos. It is modelled on WeChat's PhxPaxos and built
// simulation-first: the runtime in this package is the code a seeded
// simulator (package sim) drives through thousands of crash, loss and
// partition schedules.
//
// # Running a node
//
// The application implements StateMachine. A node runs on an Env, the
// seams of package env: a loop that runs the node's handlers one at a
// time, a clock, a transport, storage and randomness. real.RunNode builds
// the production Env (TCP, goleveldb with fsync, the wall clock) and starts
// the node in one call:
//
//	node, err := real.RunNode(paxos.Options{
//		MyNode:        1,
//		ClusterID:     0xC0FFEE,
//		StateMachines: []paxos.StateMachine{myMachine},
//	}, real.Config{
//		Peers:   map[uint64]string{1: "10.0.0.1:7001", 2: "10.0.0.2:7001", 3: "10.0.0.3:7001"},
//		DataDir: "/var/lib/myservice/paxos",
//	})
//	res, err := node.Propose(ctx, 0, []byte("inc"), nil) // res.Value is what Execute returned
//
// The first start records the node id, cluster id and member list in the
// data directory; a later start that names another is refused with
// ErrIdentityMismatch before anything is written or sent.
//
// # How the runtime drives the protocol
//
// Package core holds the protocol of one group as a pure value: messages,
// ticks and proposals go in (Step, Tick, Propose), and everything to do
// comes out (Early, Committed, Ready). The node runtime is core's driver.
// Every input becomes a handler on the node's loop: a message from the
// transport, a tick of the clock, a proposal, a finished sync. After each
// handler the driver, for every group:
//
//  1. sends the messages core lets leave at once (Early);
//  2. executes the chosen values (Committed) in instance order, handing each
//     proposer its result;
//  3. takes a Ready from every group that has one and writes all their
//     records in one storage Write, then one Sync for all groups (group
//     commit); while that sync is in flight, new output waits for the next;
//  4. once the sync is done, sends the Readies' messages (promises and
//     votes, which reveal the records just made durable) and calls Advance.
//
// Propose and the other blocking calls are thin wrappers over the
// asynchronous ones (ProposeAsync, BatchProposeAsync), whose callbacks run
// on the loop; the simulator's clients use the asynchronous forms.
//
// # Errors
//
// Errors are typed: test them with errors.Is (ErrTimeout means the outcome
// is unknown, ErrClosed, ErrInvalidOptions, ErrIdentityMismatch, ...).
// Nothing that arrives from the network or the disk panics the process.
package paxos

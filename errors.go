package paxos

import "errors"

// Errors returned by the Node API; test them with errors.Is.
var (
	// ErrTimeout means the proposal's outcome is unknown: it may still be
	// chosen and executed later, with a nil context.
	ErrTimeout = errors.New("paxos: proposal timed out, outcome unknown")
	// ErrValueTooLarge means the value exceeds Options.MaxValueSize.
	ErrValueTooLarge = errors.New("paxos: value too large")
	// ErrOverloaded means too many proposals are waiting; retry later.
	ErrOverloaded = errors.New("paxos: too many pending proposals")
	// ErrClosed means the node is closed.
	ErrClosed = errors.New("paxos: node closed")
	// ErrUnknownGroup means the group id is outside [0, Options.Groups).
	ErrUnknownGroup = errors.New("paxos: unknown group")
	// ErrNoStateMachine means no state machine has the value's SMID.
	ErrNoStateMachine = errors.New("paxos: no state machine for SMID")
	// ErrExecuteFailed wraps the error a state machine's Execute returned.
	ErrExecuteFailed = errors.New("paxos: execute failed")
	// ErrInvalidOptions means RunNode was given unusable Options.
	ErrInvalidOptions = errors.New("paxos: invalid options")
	// ErrNotMember means the node is not among the cluster's members.
	ErrNotMember = errors.New("paxos: node is not a member")
	// ErrStorage means the node's storage failed; the node has stopped.
	ErrStorage = errors.New("paxos: storage failed")
)

// ErrCheckpointInstalled comes wrapped with ErrTimeout: the group installed
// a checkpoint from a peer while the proposal was in flight, and the
// checkpoint may hold its value (it holds one of this node's proposals at
// least as recent), so whether it was chosen is unknown here.
var ErrCheckpointInstalled = errors.New("paxos: a checkpoint was installed while the proposal was in flight")

// ErrIdentityMismatch means the storage was recorded for another node id,
// cluster id or member list than this start names; the node refuses to
// start rather than vote with someone else's state.
var ErrIdentityMismatch = errors.New("paxos: identity mismatch")

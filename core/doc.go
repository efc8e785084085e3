// Package core is the Multi-Paxos state machine of one group: a value with
// methods, no goroutines, no clock, no IO. It is a pure function of the
// messages, ticks and proposals handed to it, and of the randomness source in
// its Config.
//
// Everything enters through Step (a message from a peer), Tick (one unit of
// logical time) and Propose (a new value). Everything leaves through Early
// and Ready, which the driver handles in this order:
//
//  1. Send what Early returns, whenever it likes (even while an earlier
//     Ready's sync is in flight): these messages reveal no acceptor state.
//  2. Take a Ready. Execute Ready.Committed, in order: chosen values in
//     strictly increasing instance order with no gaps, starting after the
//     last instance of the previous Ready. They were chosen by durable votes,
//     so they may be executed before this Ready's records are persisted;
//     Committed hands them out at any time, like Early.
//  3. Persist Ready.HardState and Ready.Entries; if Ready.MustSync, make them
//     durable (fsync) before going on.
//  4. Send Ready.Messages (promises, votes, prepares): they reveal the
//     records just persisted.
//  5. Call Advance. It counts this node's own votes, which had to wait for
//     their records, and may produce more output.
//
// A message whose To is 0 is a broadcast: send it to every member but this
// node (Members lists them). Encoding it once and handing the same bytes to
// each peer is the driver's choice; the receiver sets To to itself before
// Step.
//
// Step, Tick and Propose may be called while a Ready is being handled; their
// effects go into the next Ready. HasReady reports false until Advance.
//
// # The log's life cycle
//
// A core holds in memory the instances in flight and the last
// Config.MemTail executed ones. A learner that needs older values becomes a
// LogRead: the driver reads them from storage (off its loop) and hands
// them to ServeLog. Persist Ready.CleanBelow, when set, as a clean record
// after the hard state; the driver calls Clean only below a durable
// checkpoint. Below the clean mark a learner is answered with the mark
// (Message.log_start), and WantCheckpoint names a peer whose log no longer
// reaches this node: the driver fetches its checkpoint, calls Installing
// while it arrives (no votes on the instances it covers), restores it and
// calls Install. New takes the instance of the checkpoint the driver
// restored as State.Base.
//
// # Protocol
//
// Ballots are (counter, node) and never reused across
// restarts, because a proposer's own acceptor promises its ballot and that
// promise is durable before any prepare leaves. A promise covers every
// instance, so a proposer that won phase 1 runs only phase 2 for new values:
// one round trip and one fsync per value while uncontested. Phase 1 returns
// every accepted and chosen entry from the proposer's first unchosen
// instance; the new leader re-proposes the highest-ballot value of each open
// instance and fills holes with no-ops. Up to Config.Window instances are in
// flight at once. A value bound to an instance is never proposed again
// elsewhere until that instance is known chosen with a different value, so a
// value is chosen at most once. Followers forward proposals to the leader
// they heard from recently, and learn missed instances from peers.
package core

package core

import (
	"fmt"
	"slices"

	pb "github.com/paxoskit/paxos/core/paxospb"
)

// This file is the master of a group: leases granted by acceptors,
// heartbeat rounds that renew them and confirm read indexes, check-quorum,
// and the hand-over of leadership.
//
// A leader's heartbeats are numbered (seq) and carry the lease it asks
// for. An acceptor that acks one promises the leader's ballot (the ack
// leaves only once that promise is durable) and grants the leader its
// lease: for that many of its own ticks, plus one, it refuses every other
// proposer's prepare, starts none itself and acks no other leader. So
// while a majority's grants run, no other proposer can win phase 1, and
// none with a lower ballot can get a value chosen. The driver turns the
// highest seq acked by a majority (LeaseSeq) into a lease on its own
// clock, shortened for clock drift. A restarted acceptor, which may have
// granted a lease it forgot, holds the same way for one lease before it
// promises anyone. Time enters the core only as ticks and as the lease
// length in microseconds a heartbeat carries.

// ReadState answers a read index request (see ReadIndex).
type ReadState struct {
	ID uint64
	// Index is the confirmed read index: once the node executed up to it,
	// a read of its state machines is linearizable. 0 means refused (no
	// leader known, or the leader was not ready): retry.
	Index uint64
	// Leader is the leader that answered or, when refused, the one this
	// node knows of (0 if none).
	Leader uint64
}

// readReq is a read index request a leader confirms with a heartbeat round.
type readReq struct {
	from, id, index, seq uint64
}

// grant is the lease an acceptor granted: it supports only node (0: no
// one, after a restart) for ticks more ticks.
type grant struct {
	node   uint64
	ballot Ballot
	ticks  int
}

func (c *Core) leaseTicks(us uint64) int {
	tick := max(c.cfg.TickMicros, 1)
	return int((us+tick-1)/tick) + 1
}

// granted reports whether this acceptor's grant forbids supporting a
// proposer of ballot b: a grant to another node is running, and b was not
// handed over by the grantee (transfer, the ballot of the leader that
// handed over; nil if none).
func (c *Core) granted(b Ballot, transfer *pb.Ballot) bool {
	if c.hold > 0 {
		return true
	}
	g := c.grant
	if g.ticks <= 0 || g.node == b.Node && g.node != 0 {
		return false
	}
	return transfer == nil || g.node == 0 || ballotOf(transfer) != g.ballot
}

// mayPrepare reports whether this node may start phase 1 now: it votes
// in the newest configuration and holds off for no lease.
func (c *Core) mayPrepare() bool {
	return !c.granted(Ballot{Node: c.cfg.ID}, nil) && c.noLead == 0 && c.newestConf().IsVoter(c.cfg.ID)
}

// sendHeartbeat starts a heartbeat round: a new seq, the lease asked for,
// and this node's own grant to itself.
func (c *Core) sendHeartbeat() {
	c.hbSeq++
	c.quietTicks = 0
	c.readRound = false
	c.grant = grant{node: c.cfg.ID, ballot: c.ballot, ticks: c.leaseTicks(c.cfg.LeaseMicros)}
	c.broadcast(&pb.Message{Type: pb.MsgType_MSG_HEARTBEAT, Ballot: c.ballot.pb(), Seq: c.hbSeq, LeaseUs: c.cfg.LeaseMicros, Instance: c.masterAt}, false)
	c.checkReads()
}

func (c *Core) onHeartbeat(m *pb.Message) {
	b := ballotOf(m.Ballot)
	if b.Less(c.promised) {
		// Tell the leader to step down and come back with a higher
		// ballot. (Not followed: it may be a late copy from a leader long
		// gone.)
		c.reject(m)
		return
	}
	if c.hold > 0 {
		// Restarted within a lease: follow, but grant nothing yet.
		c.yield(b)
		c.followLeader(b)
		c.leaderVersion = m.Instance
		return
	}
	if c.granted(b, nil) {
		// Another leader's lease runs here: no ack, no promise. If that
		// leader is gone, the grant runs out and the next heartbeat is
		// acked.
		return
	}
	c.promise(b)
	c.yield(b)
	c.followLeader(b)
	c.leaderVersion = m.Instance
	if m.Seq == 0 {
		return
	}
	c.grant = grant{node: b.Node, ballot: b, ticks: c.leaseTicks(m.LeaseUs)}
	ack := &pb.Message{Type: pb.MsgType_MSG_HEARTBEAT_ACK, To: m.From, Ballot: m.Ballot, Seq: m.Seq}
	if c.maxIndex > c.chosenUpto {
		ack.Stray = c.maxIndex
	}
	for i := range c.bound {
		ack.Stray = max(ack.Stray, i)
	}
	c.send(ack)
}

func (c *Core) onHeartbeatAck(m *pb.Message) {
	if c.role != leading || ballotOf(m.Ballot) != c.ballot {
		return
	}
	c.acked[m.From] = max(c.acked[m.From], m.Seq)
	if m.Stray >= c.next && !c.tooFar(m.Stray) {
		// The peer holds a value at an instance this leader never
		// proposed at (left by an earlier leader, unseen by phase 1):
		// fill up to it so it gets decided.
		c.fillTo = max(c.fillTo, m.Stray)
		c.fillWindow()
	}
	c.checkReads()
}

// LeaseSeq returns the highest heartbeat seq of the current leadership
// that a majority (this node included) acked, 0 if none or not leading.
// Each acker granted the lease from when it got that heartbeat, so the
// driver's lease runs from when that heartbeat was sent.
func (c *Core) LeaseSeq() uint64 {
	if c.role != leading {
		return 0
	}
	// The highest seq a majority of every active configuration acked.
	var low uint64
	for k, cf := range c.activeConfs() {
		seqs := make([]uint64, 0, len(cf.Voters))
		for _, p := range cf.Voters {
			if p == c.cfg.ID {
				seqs = append(seqs, c.hbSeq)
			} else {
				seqs = append(seqs, c.acked[p])
			}
		}
		slices.Sort(seqs)
		need := len(seqs)/2 + 1
		if c.cfg.Canary == CanaryQuorumAll {
			need = len(seqs)
		}
		if s := seqs[len(seqs)-need]; k == 0 || s < low {
			low = s
		}
	}
	return low
}

// MasterAt returns the instance of this leader's master record (its
// version), 0 when not leading.
func (c *Core) MasterAt() uint64 {
	if c.role != leading {
		return 0
	}
	return c.masterAt
}

// MasterReady reports whether this node leads and its master record is
// chosen: every value chosen by an earlier leader is then at or below its
// chosen prefix, so its chosen prefix bounds every completed write.
func (c *Core) MasterReady() bool {
	return c.role == leading && c.chosenUpto >= c.masterAt
}

// LeaderVersion returns the master version (the instance of its master
// record) of the leader this node knows of, 0 if unknown: its own when
// leading, else the one the leader's heartbeats announce.
func (c *Core) LeaderVersion() uint64 {
	switch {
	case c.role == leading:
		return c.masterAt
	case c.leader != 0:
		return c.leaderVersion
	}
	return 0
}

// Ballot returns the ballot this node leads or prepares with.
func (c *Core) Ballot() Ballot { return c.ballot }

// SetLease changes the lease this node asks for as leader, in
// microseconds (at most Config.LeaseMicros is safe across restarts).
func (c *Core) SetLease(us uint64) { c.cfg.LeaseMicros = us }

// ReadIndex asks for a read index; the answer comes from ReadStates with
// id. On the leader it is its chosen prefix, confirmed by a heartbeat
// round acked by a majority; elsewhere the leader is asked.
func (c *Core) ReadIndex(id uint64) {
	c.readIndex(c.cfg.ID, id)
	c.flush()
}

func (c *Core) readIndex(from, id uint64) {
	switch {
	case c.role == leading && c.MasterReady():
		if slices.ContainsFunc(c.pendingReads, func(r readReq) bool { return r.from == from && r.id == id }) {
			return // a retry or a duplicate: the pending one answers it
		}
		r := readReq{from: from, id: id, index: c.chosenUpto, seq: c.hbSeq + 1}
		if c.cfg.Canary == CanaryReadIndexNoRound {
			r.seq = 0
		}
		c.pendingReads = append(c.pendingReads, r)
		c.readRound = true
		c.checkReads()
	case from == c.cfg.ID && c.role == follower && c.leader != 0 && c.leader != c.cfg.ID:
		c.send(&pb.Message{Type: pb.MsgType_MSG_READ_INDEX, To: c.leader, Seq: id})
	default:
		c.answerRead(from, ReadState{ID: id, Leader: c.Leader()})
	}
}

func (c *Core) answerRead(to uint64, rs ReadState) {
	if to == c.cfg.ID {
		c.readStates = append(c.readStates, rs)
		return
	}
	c.send(&pb.Message{Type: pb.MsgType_MSG_READ_INDEX_RESP, To: to, Seq: rs.ID, Instance: rs.Index, Ballot: c.leaderHint()})
}

// leaderHint is a ballot naming the leader this node knows of, nil if none.
func (c *Core) leaderHint() *pb.Ballot {
	switch {
	case c.role == leading:
		return c.ballot.pb()
	case c.leader != 0:
		return c.leaderBallot.pb()
	}
	return nil
}

func (c *Core) onReadIndexResp(m *pb.Message) {
	c.readStates = append(c.readStates, ReadState{ID: m.Seq, Index: m.Instance, Leader: ballotOf(m.Ballot).Node})
}

// checkReads answers the read index requests a majority confirmed.
func (c *Core) checkReads() {
	if len(c.pendingReads) == 0 {
		return
	}
	done := c.LeaseSeq()
	keep := c.pendingReads[:0]
	for _, r := range c.pendingReads {
		if r.seq <= done {
			c.answerRead(r.from, ReadState{ID: r.id, Index: r.index, Leader: c.cfg.ID})
		} else {
			keep = append(keep, r)
		}
	}
	clear(c.pendingReads[len(keep):])
	c.pendingReads = keep
}

// refuseReads answers every pending read index request with a refusal
// (this node no longer leads): the requesters retry.
func (c *Core) refuseReads() {
	for _, r := range c.pendingReads {
		c.answerRead(r.from, ReadState{ID: r.id})
	}
	c.pendingReads = nil
	c.readRound = false
}

// ReadStates hands out the answers to this node's read index requests.
func (c *Core) ReadStates() []ReadState {
	rs := c.readStates
	c.readStates = nil
	return rs
}

// StepDown makes a leader give up: it becomes a follower and starts no
// phase 1 for ticks ticks. Its grants elsewhere run out, then another node
// takes over.
func (c *Core) StepDown(ticks int) {
	if c.role != follower {
		c.becomeFollower(ticks)
	}
	c.noLead = ticks
	c.grant.ticks = 0 // its own grant to itself
	c.flush()
}

// Transfer hands leadership to node to: this leader steps down at once
// (its lease ends) and tells to to start phase 1 now; acceptors that
// granted this leader let that prepare through. It reports false if this
// node does not lead or to is not another member.
func (c *Core) Transfer(to uint64) bool {
	if c.role != leading || to == c.cfg.ID || !c.newestConf().IsVoter(to) {
		return false
	}
	b := c.ballot
	c.StepDown(c.cfg.ElectionTicks)
	c.send(&pb.Message{Type: pb.MsgType_MSG_TIMEOUT_NOW, To: to, Ballot: b.pb()})
	c.flush()
	return true
}

func (c *Core) onTimeoutNow(m *pb.Message) {
	b := ballotOf(m.Ballot)
	if c.role != follower || b.Less(c.promised) || c.grant.ticks > 0 && c.grant.node != b.Node {
		return
	}
	c.noLead, c.backoff = 0, 0
	c.startPrepare(m.Ballot)
}

// QuorumLost reports whether this node has been cut off from a majority
// for an election timeout: it follows no live leader (or leads without a
// majority's acks) and heard from fewer than a majority of members. A
// node in its first two election timeouts never reports it.
func (c *Core) QuorumLost() bool {
	if c.ticks < uint64(2*c.cfg.ElectionTicks) {
		return false
	}
	if c.role == leading {
		return c.roleTicks > c.ackWindow() && !c.recentAcks()
	}
	if c.leader != 0 || c.hold > 0 || c.grant.ticks > 0 || c.ticks-c.leaderless < uint64(c.cfg.ElectionTicks) {
		// A leader is heard, or a lease granted to a silent one is running
		// out (here, or on a peer that refused our prepare for it: noLead
		// keeps leaderless from starting), or that just happened and an
		// election is under way (the followers of a dead master did not
		// talk to each other before).
		return false
	}
	return !c.quorumAll(func(p uint64) bool {
		t, ok := c.heard[p]
		return p == c.cfg.ID || ok && c.ticks-t <= uint64(c.cfg.ElectionTicks)
	})
}

// QuorumInfo describes, for logs, what QuorumLost looked at.
func (c *Core) QuorumInfo() string {
	var heard []string
	for _, p := range c.members {
		if t, ok := c.heard[p]; ok && p != c.cfg.ID {
			heard = append(heard, fmt.Sprintf("%d:%d", p, c.ticks-t))
		}
	}
	return fmt.Sprintf("role=%v leader=%d hold=%d grant=%d(node %d) noLead=%d backoff=%d leaderless=%d ticks heard(ticks ago)=%v ballot=%v promised=%v",
		c.role, c.leader, c.hold, c.grant.ticks, c.grant.node, c.noLead, c.backoff, c.ticks-c.leaderless, heard, c.ballot, c.promised)
}

// recentAcks reports whether this leader and the peers that acked it
// (heartbeats, votes) within the lease are a majority of every active
// configuration.
func (c *Core) recentAcks() bool {
	window := uint64(c.ackWindow())
	return c.quorumAll(func(p uint64) bool {
		t, ok := c.ackTick[p]
		return p == c.cfg.ID || ok && c.ticks-t <= window
	})
}

// ackWindow is how long a leader goes without a majority's acks before it
// steps down: its lease, at least an election timeout.
func (c *Core) ackWindow() int {
	return max(c.leaseTicks(c.cfg.LeaseMicros), c.cfg.ElectionTicks)
}

// tickMaster runs the lease clocks: grants run out, a leader without a
// majority's acks for a lease steps down (check-quorum), and an idle
// follower with no leader starts phase 1, so a group always has a master.
func (c *Core) tickMaster() {
	c.ticks++
	if c.grant.ticks > 0 {
		c.grant.ticks--
	}
	if c.hold > 0 {
		c.hold--
	}
	if c.noLead > 0 {
		c.noLead--
	}
	if c.leader != 0 || c.hold > 0 || c.grant.ticks > 0 || c.noLead > 0 || c.role == leading {
		c.leaderless = c.ticks // not leaderless yet
	}
	switch c.role {
	case leading:
		if c.roleTicks > c.ackWindow() && !c.recentAcks() && c.cfg.Canary != CanaryLeaseAfterQuorumLoss {
			c.Stats.QuorumLosses++
			c.becomeFollower(c.cfg.Rand(c.cfg.ElectionTicks) + 1)
		}
	case follower:
		if c.leader == 0 && c.backoff == 0 && !c.behind && c.mayPrepare() {
			c.startPrepare(nil)
		}
	}
}

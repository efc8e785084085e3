package core

import (
	"maps"
	"slices"

	pb "github.com/paxoskit/paxos/core/paxospb"
)

func (c *Core) becomeFollower(backoff int) {
	if c.role == leading {
		c.Stats.StepDowns++
	}
	c.role = follower
	c.refuseReads()
	c.fillTo, c.confFill, c.recordDue = 0, 0, false
	clear(c.deferred)
	if c.leader == c.cfg.ID {
		c.leader = 0 // it no longer leads; Leader reports none until it hears one
	}
	c.roleTicks = 0
	c.backoff = backoff
	c.promises, c.p1 = nil, nil
	clear(c.inflight)
}

// startPrepare begins phase 1 with a ballot above every one seen. transfer
// is the ballot of the leader that handed over to this node, if any.
func (c *Core) startPrepare(transfer *pb.Ballot) {
	clear(c.deferred)
	c.recordDue = false
	c.ballot = Ballot{Counter: max(c.maxSeen, c.promised.Counter) + 1, Node: c.cfg.ID}
	c.maxSeen = c.ballot.Counter
	c.role = preparing
	c.roleTicks = 0
	c.promises = c.promises[:0]
	c.p1 = map[uint64]*pb.Entry{}
	c.p1Max = 0
	c.prepareFrom = c.chosenUpto + 1
	c.Stats.Prepares++
	c.broadcast(&pb.Message{Type: pb.MsgType_MSG_PREPARE, Ballot: c.ballot.pb(), Instance: c.prepareFrom, TransferFrom: transfer}, true)
}

func (c *Core) onPromise(m *pb.Message) {
	if c.role != preparing || ballotOf(m.Ballot) != c.ballot || slices.Contains(c.promises, m.From) {
		return
	}
	if m.Instance > c.prepareFrom {
		// The acceptor executed and dropped instances this node lacks:
		// catch up before leading.
		c.becomeFollower(c.cfg.Rand(c.cfg.ElectionTicks) + 1)
		c.send(&pb.Message{Type: pb.MsgType_MSG_LEARN_REQ, To: m.From, Instance: c.chosenUpto + 1})
		return
	}
	for _, e := range m.Entries {
		if e.Instance > c.prepareFrom-1+MaxLag {
			// Too far behind to lead: catch up from this peer first.
			c.becomeFollower(c.cfg.Rand(c.cfg.ElectionTicks) + 1)
			c.send(&pb.Message{Type: pb.MsgType_MSG_LEARN_REQ, To: m.From, Instance: c.chosenUpto + 1})
			return
		}
	}
	c.promises = append(c.promises, m.From)
	for _, e := range m.Entries {
		if e.Instance < c.prepareFrom {
			continue
		}
		c.p1Max = max(c.p1Max, e.Instance)
		if e.Chosen {
			c.learn(e.Instance, e.Value)
			if c.role != preparing {
				return // what it learned removed it from the group (leaveIfRemoved)
			}
			continue
		}
		if cur := c.p1[e.Instance]; cur == nil || ballotOf(cur.Ballot).Less(ballotOf(e.Ballot)) {
			c.p1[e.Instance] = e
		}
	}
	if c.quorumAll(in(c.promises)) {
		c.becomeLeader()
	}
}

// becomeLeader finishes phase 1: every open instance up to the highest one
// reported gets the highest-ballot value accepted there, or a no-op.
func (c *Core) becomeLeader() {
	c.role = leading
	c.roleTicks = 0
	c.leader = c.cfg.ID
	c.Stats.Promotions++
	c.next = max(c.p1Max, c.maxIndex, c.chosenUpto) + 1
	// Instances chosen meanwhile (up to chosenUpto) are settled: some may
	// already be dropped from memory, where no entry says so.
	for i := max(c.prepareFrom, c.chosenUpto+1); i < c.next; i++ {
		if e := c.log[i]; e != nil && e.Chosen {
			continue
		}
		var v *pb.Value
		if e := c.p1[i]; e != nil && c.cfg.Canary != CanaryNoAdopt {
			v = e.Value
		}
		if v == nil {
			v = &pb.Value{Node: c.cfg.ID, Boot: c.boot, Noop: true}
		}
		if i > c.chosenUpto+ConfigDelay && c.cfg.Canary != CanaryConfImmediate {
			// Its configuration is not known here yet: proposed once the
			// instances before it are chosen (fillWindow).
			c.deferred[i] = v
			continue
		}
		c.propose(i, v)
	}
	c.p1 = nil
	// The master record: once it is chosen, everything an earlier leader
	// got chosen is below it, and its instance is this master's version.
	c.masterAt = c.next
	c.next++
	// Past ConfigDelay beyond the chosen prefix (the instances recovered
	// reach its end) the record waits until what it recovered is chosen.
	c.recordDue = true
	clear(c.acked)
	clear(c.ackTick)
	for _, p := range c.promises {
		c.ackTick[p] = c.ticks
	}
	c.fillToConf()
	c.fillWindow()
	c.sendHeartbeat()
}

// propose sends phase 2a for instance i with the current ballot.
func (c *Core) propose(i uint64, v *pb.Value) {
	e := &pb.Entry{Instance: i, Ballot: c.ballot.pb(), Value: v}
	c.inflight[i] = &inflight{entry: e}
	c.outAccepts = append(c.outAccepts, e)
}

// fillWindow binds queued values to fresh instances while the window allows.
func (c *Core) fillWindow() {
	for c.role == leading && len(c.deferred) > 0 {
		i := slices.Min(slices.Collect(maps.Keys(c.deferred)))
		if i > c.chosenUpto+ConfigDelay {
			break
		}
		v := c.deferred[i]
		delete(c.deferred, i)
		if e := c.log[i]; i > c.chosenUpto && (e == nil || !e.Chosen) {
			c.propose(i, v)
		}
	}
	if c.recordDue && c.role == leading && len(c.deferred) == 0 && (c.masterAt <= c.chosenUpto+ConfigDelay || c.cfg.Canary == CanaryConfImmediate) {
		c.recordDue = false
		c.propose(c.masterAt, &pb.Value{Node: c.cfg.ID, Boot: c.boot, Noop: true, Master: true, Confs: ConfStatePB(c.activeConfs())})
	}
	for c.role == leading && len(c.inflight) < c.cfg.Window && len(c.queue) > 0 && c.mayPropose(c.next) {
		i := c.next
		c.next++
		if e := c.log[i]; i <= c.chosenUpto || e != nil && e.Chosen {
			continue
		}
		v := c.queue[0]
		c.queue = c.queue[1:]
		if c.staleFence(v) {
			// Forwarded to an earlier leadership of this node: its
			// proposer gives it up once our master record is executed.
			c.Stats.DroppedForwards++
			c.next--
			continue
		}
		c.fence(v, c.masterAt)
		c.bound[i] = v
		c.propose(i, v)
	}
	// No-ops up to where a new configuration governs go out at once, past
	// the window (at most ConfigDelay of them, in one ACCEPT): a change
	// takes effect one round trip after it is chosen, even with Window 1.
	for c.role == leading && (len(c.inflight) < c.cfg.Window || c.next <= c.confFill) && (len(c.queue) == 0 || c.next <= c.confFill) &&
		c.next <= max(c.fillTo, c.confFill) && c.mayPropose(c.next) {
		i := c.next
		c.next++
		if e := c.log[i]; i <= c.chosenUpto || e != nil && e.Chosen {
			continue
		}
		c.propose(i, &pb.Value{Node: c.cfg.ID, Boot: c.boot, Noop: true})
	}
}

func (c *Core) onAccepted(m *pb.Message) {
	if c.role != leading || ballotOf(m.Ballot) != c.ballot {
		return
	}
	for _, i := range m.Instances {
		f := c.inflight[i]
		if f == nil || slices.Contains(f.acks, m.From) {
			continue
		}
		f.acks = append(f.acks, m.From)
		if c.votesDecide(i, f.acks) {
			c.Stats.Chosen++
			c.learn(i, f.entry.Value)
			// Followers that voted hold the value: send only its ballot.
			v := f.entry.Value
			c.outChosen = append(c.outChosen, &pb.Entry{Instance: i, Ballot: f.entry.Ballot, Chosen: true, ByBallot: true,
				Value: &pb.Value{Node: v.Node, Boot: v.Boot, Seq: v.Seq, Noop: v.Noop}})
		}
	}
	c.fillWindow()
}

func (c *Core) onReject(m *pb.Message) {
	b := ballotOf(m.Ballot)
	if m.Seq == 1 && c.role == preparing && b.Node != c.cfg.ID && b.Less(c.ballot) {
		// Refused for a lease the acceptor granted b's leader: stay out of
		// elections until that grant ran out (the leader may be dead: it
		// is not followed).
		c.becomeFollower(1)
		c.noLead = max(c.noLead, c.leaseTicks(m.LeaseUs))
		return
	}
	if c.role != follower && c.ballot.Less(b) {
		c.Stats.Rejects++
		c.becomeFollower(c.cfg.Rand(c.cfg.ElectionTicks) + 1)
	}
}

// onForward takes proposals a follower handed over. They are addressed to
// one leadership (a ballot, and a master version: the fence): a copy that
// arrives late, after this node lost or restarted its leadership, is
// dropped, since the original may already be chosen and this node no
// longer knows it. Its proposer sends it again once the record of the
// master after the one it addressed is executed (see fence.go).
func (c *Core) onForward(m *pb.Message) {
	if c.role != leading || ballotOf(m.Ballot) != c.ballot && c.cfg.Canary != CanaryStaleForward {
		c.Stats.DroppedForwards++
		return
	}
	for _, v := range m.Values {
		if c.staleFence(v) {
			c.Stats.DroppedForwards++
			continue
		}
		if c.firstSight(v) && len(c.queue) < c.cfg.MaxQueue {
			c.queue = append(c.queue, v)
		}
	}
}

// dispatch moves queued proposals on: into the window when leading, to the
// leader when one is known, or into a new phase 1.
func (c *Core) dispatch() {
	if len(c.queue) == 0 {
		return
	}
	switch c.role {
	case leading:
		c.fillWindow()
	case follower:
		if c.leader != 0 && c.leader != c.cfg.ID {
			if c.leaderTicks > 2*c.cfg.HeartbeatTicks {
				// Two heartbeats missed: the leader may be dead, and what
				// is forwarded to a dead leader is lost with an unknown
				// outcome. Hold the values until it is heard again or
				// another leads.
				return
			}
			if c.leaderVersion == 0 || c.leaderVersion < c.version {
				// Until a heartbeat names the master version to fence them
				// with, one not older than the record executed here.
				return
			}
			for _, v := range c.queue {
				c.fence(v, c.leaderVersion)
			}
			c.Stats.Forwards++
			c.send(&pb.Message{Type: pb.MsgType_MSG_FORWARD, To: c.leader, Ballot: c.leaderBallot.pb(), Values: c.queue})
			c.queue = nil
		} else if c.backoff == 0 && !c.behind && c.mayPrepare() {
			c.startPrepare(nil)
		}
	}
}

func (c *Core) tickLeader() {
	// Heartbeats renew the lease, busy or not.
	if c.quietTicks++; c.quietTicks >= c.cfg.HeartbeatTicks {
		c.sendHeartbeat()
	}
	var resend map[uint64][]*pb.Entry
	for i := c.chosenUpto + 1; i < c.next; i++ {
		f := c.inflight[i]
		if f == nil {
			continue
		}
		if f.age++; f.age < c.cfg.RetryTicks {
			continue
		}
		f.age = 0
		for _, p := range c.confAt(i).Voters {
			if p != c.cfg.ID && !slices.Contains(f.acks, p) {
				if resend == nil {
					resend = map[uint64][]*pb.Entry{}
				}
				resend[p] = append(resend[p], f.entry)
			}
		}
	}
	for _, p := range c.members {
		if es := resend[p]; len(es) > 0 {
			c.send(&pb.Message{Type: pb.MsgType_MSG_ACCEPT, To: p, Ballot: c.ballot.pb(), Entries: es})
		}
	}
}

package core

import (
	"bytes"
	"slices"

	pb "github.com/paxoskit/paxos/core/paxospb"
)

// SameProposal reports whether a and b are the same proposal.
func SameProposal(a, b *pb.Value) bool {
	return a.Node == b.Node && a.Boot == b.Boot && a.Seq == b.Seq && a.Noop == b.Noop && a.Master == b.Master &&
		a.Smid == b.Smid && a.Batch == b.Batch && bytes.Equal(a.Data, b.Data)
}

// learn records that instance i is chosen with v.
func (c *Core) learn(i uint64, v *pb.Value) {
	if c.tooFar(i) {
		return // learned later, in order, by learn requests
	}
	if i <= c.memBase {
		// Long executed and dropped from memory: only what this node
		// proposed there is left to settle.
		c.settle(i, v)
		return
	}
	if old := c.log[i]; old != nil && old.Chosen {
		if !SameProposal(old.Value, v) {
			c.Stats.Conflicts++ // agreement is broken; the simulator's oracle reports it
		}
		return
	}
	if old := c.log[i]; old != nil && SameProposal(old.Value, v) {
		// The accepted record already holds the value; the chosen
		// watermark in the next HardState covers it on disk.
		c.log[i] = &pb.Entry{Instance: i, Ballot: old.Ballot, Value: old.Value, Chosen: true}
	} else {
		c.setLog(&pb.Entry{Instance: i, Value: v, Chosen: true})
	}
	c.Stats.Learned++
	c.settle(i, v)
	c.advanceChosen()
}

// settle ends what this node had in flight at instance i, now known
// chosen with v.
func (c *Core) settle(i uint64, v *pb.Value) {
	delete(c.inflight, i)
	if bv := c.bound[i]; bv != nil {
		delete(c.bound, i)
		if !SameProposal(bv, v) {
			// Instance i went to another value, so ours was not chosen
			// there and may be proposed again (under a fresh fence: it
			// was proposed nowhere else).
			if c.own(bv) {
				if c.sent[bv.Seq] != bv {
					return // given up already (Dead): it was sent again
				}
				delete(c.sent, bv.Seq)
				bv = &pb.Value{Node: bv.Node, Boot: bv.Boot, Seq: bv.Seq, Smid: bv.Smid, Data: bv.Data, Batch: bv.Batch, Config: bv.Config}
			}
			c.queue = append([]*pb.Value{bv}, c.queue...)
		}
	}
}

func (c *Core) advanceChosen() {
	for e := c.log[c.chosenUpto+1]; e != nil && e.Chosen; e = c.log[c.chosenUpto+1] {
		c.chosenUpto++
		c.behind = false
		switch v := e.Value; {
		case v.Master:
			c.version = c.chosenUpto
			if c.confUnknown && v.Confs != nil && c.chosenUpto == 1 {
				c.learnConfs(v.Confs)
			}
		case v.Config != nil && !v.Noop && !Fenced(c.version, v):
			c.chooseConf(c.chosenUpto, v)
		}
	}
	if from := c.activeConfs()[0].From; from != c.membersAt {
		c.membersAt = from
		c.setConfs(c.confs) // the active set moved: recompute who gets broadcasts
		c.leaveIfRemoved()
	}
}

// MaxLearnBytes is about how many bytes of values one learn response holds.
const MaxLearnBytes = 1 << 20

func (c *Core) onLearnReq(m *pb.Message) {
	from := max(m.Instance, 1)
	if from <= c.memBase && from <= c.chosenUpto {
		switch {
		case from < c.logStart:
			// Cleaned: the learner needs a checkpoint.
			c.send(&pb.Message{Type: pb.MsgType_MSG_LEARN_RESP, To: m.From, LogStart: c.logStart})
		case !c.reading[m.From]:
			c.reading[m.From] = true
			c.reads = append(c.reads, LogRead{To: m.From, From: from})
		}
		return
	}
	var entries []*pb.Entry
	size := 0
	for i := from; i <= c.chosenUpto && len(entries) < c.cfg.MaxLearnEntries && size < MaxLearnBytes; i++ {
		entries = append(entries, c.log[i])
		size += len(c.log[i].Value.Data)
	}
	c.send(&pb.Message{Type: pb.MsgType_MSG_LEARN_RESP, To: m.From, Entries: entries})
}

// tickLearner asks a peer for missing chosen values now and then, and starts
// phase 1 when a hole stays open with no leader to fill it.
func (c *Core) tickLearner() {
	c.learnTicks++
	if c.learnTicks >= c.cfg.LearnTicks {
		c.learnTicks = 0
		to := c.leader
		if to == 0 || to == c.cfg.ID {
			to = c.randomPeer()
		}
		if to != 0 {
			c.send(&pb.Message{Type: pb.MsgType_MSG_LEARN_REQ, To: to, Instance: c.chosenUpto + 1})
		}
	}
	if c.chosenUpto != c.lastUpto {
		c.lastUpto, c.stuckTicks = c.chosenUpto, 0
	} else if c.maxKnown > c.chosenUpto || len(c.bound) > 0 {
		c.stuckTicks++
	}
	// A hole no leader fills, or a value this node bound to an instance as
	// leader that nobody decides (it lost leadership to a node whose phase-1
	// quorum did not see that instance, and no new value reaches it): run
	// phase 1, which decides the instance either way.
	stuck := c.leader == 0 || len(c.bound) > 0
	if c.stuckTicks > 2*c.cfg.ElectionTicks && c.role == follower && stuck && c.backoff == 0 && !c.behind && c.mayPrepare() {
		c.stuckTicks = 0
		c.startPrepare(nil)
	}
}

func (c *Core) randomPeer() uint64 {
	peers := c.members
	if !slices.Contains(peers, c.cfg.ID) {
		peers = append(slices.Clone(peers), c.cfg.ID)
	}
	if len(peers) < 2 {
		return 0
	}
	k := c.cfg.Rand(len(peers) - 1)
	for _, p := range peers {
		if p == c.cfg.ID {
			continue
		}
		if k == 0 {
			return p
		}
		k--
	}
	return 0
}

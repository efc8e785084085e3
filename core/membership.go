package core

import (
	"fmt"
	"slices"

	pb "github.com/paxoskit/paxos/core/paxospb"
)

// Membership. A group's configuration (its voters and followers) changes
// through the group's own log: a value carrying a Membership, chosen at
// instance i, governs instances from i+ConfigDelay on (Lamport's α). So
// the configuration of instance j is fixed by the chosen log up to
// j-ConfigDelay, the same on every node, and a node that knows the chosen
// log up to chosenUpto knows the configuration of every instance up to
// chosenUpto+ConfigDelay. The rules that keep Paxos safe across changes:
//
//   - An instance j is decided by a majority of the voters of Conf(j) alone:
//     a leader counts the votes of those voters (onAccepted).
//   - A leader proposes j only if j <= chosenUpto+ConfigDelay (it knows
//     Conf(j)) and its phase 1 was promised by a majority of Conf(j). Phase
//     1 completes only with a majority of every configuration that governs
//     an instance from chosenUpto+1 on (activeConfs), and a leader that
//     learns of a new configuration whose voters did not promise runs phase
//     1 again with a new ballot.
//   - Each instance is thus plain Paxos with one fixed quorum system, so no
//     two majorities of different configurations decide one instance
//     differently: only Conf(j)'s majorities ever decide j.
//   - Leases, read index rounds and check-quorum count a majority of every
//     active configuration too: a master keeps its lease only while each
//     configuration a rival could use to get elected has a majority of
//     grants for it.
//
// A node that is not a voter of the newest configuration starts no phase
// 1, and a leader stops proposing at the first instance whose
// configuration leaves it out, and steps down once it gets there.

// ConfigDelay is how many instances after the instance that chose it a
// configuration takes effect (α). Leaders never have more than this many
// instances beyond the chosen prefix, so Window must not exceed it.
const ConfigDelay = 256

// Conf is a group's configuration and the instances it governs.
type Conf struct {
	From      uint64   // the first instance it governs
	Version   uint64   // the instance that chose it; 0 for the configuration the group started with
	Voters    []uint64 // sorted
	Followers []uint64 // sorted; they learn every value and never vote
	Addrs     map[uint64]string
}

// Members returns the voters and followers, sorted.
func (cf *Conf) Members() []uint64 {
	out := append(slices.Clone(cf.Voters), cf.Followers...)
	slices.Sort(out)
	return out
}

// IsVoter reports whether id votes in cf.
func (cf *Conf) IsVoter(id uint64) bool { return slices.Contains(cf.Voters, id) }

// pb returns cf as a Membership that names its version as expected.
func (cf *Conf) pb() *pb.Membership {
	m := &pb.Membership{Expect: cf.Version}
	for _, id := range cf.Members() {
		m.Members = append(m.Members, &pb.Member{Id: id, Addr: cf.Addrs[id], Follower: !cf.IsVoter(id)})
	}
	return m
}

// ConfFromPB builds the configuration a change proposes, chosen at
// instance version. It reports an error for a membership no group can
// run: no voter, a duplicate or zero id.
func ConfFromPB(m *pb.Membership, version uint64) (Conf, error) {
	cf := Conf{From: version + ConfigDelay, Version: version, Addrs: map[uint64]string{}}
	if version == 0 {
		cf.From = 1
	}
	seen := map[uint64]bool{}
	for _, mb := range m.GetMembers() {
		if mb == nil || mb.Id == 0 || seen[mb.Id] {
			return Conf{}, fmt.Errorf("%w: bad or duplicate member %v", ErrInvalidConfig, mb)
		}
		seen[mb.Id] = true
		if mb.Follower {
			cf.Followers = append(cf.Followers, mb.Id)
		} else {
			cf.Voters = append(cf.Voters, mb.Id)
		}
		if mb.Addr != "" {
			cf.Addrs[mb.Id] = mb.Addr
		}
	}
	if len(cf.Voters) == 0 {
		return Conf{}, fmt.Errorf("%w: a configuration without voters", ErrInvalidConfig)
	}
	slices.Sort(cf.Voters)
	slices.Sort(cf.Followers)
	return cf, nil
}

// confAt returns the configuration that governs instance i.
func (c *Core) confAt(i uint64) *Conf {
	k := len(c.confs) - 1
	for k > 0 && c.confs[k].From > i {
		k--
	}
	return &c.confs[k]
}

// activeConfs returns the configurations that govern an instance from
// chosenUpto+1 on: the one in force there and every later one known.
func (c *Core) activeConfs() []Conf {
	i := c.chosenUpto + 1
	k := len(c.confs) - 1
	for k > 0 && c.confs[k].From > i {
		k--
	}
	return c.confs[k:]
}

// newestConf returns the newest configuration chosen.
func (c *Core) newestConf() *Conf { return &c.confs[len(c.confs)-1] }

// majorityOf reports whether the voters has holds are a majority of voters.
func (c *Core) majorityOf(voters []uint64, has func(uint64) bool) bool {
	n := 0
	for _, v := range voters {
		if has(v) {
			n++
		}
	}
	need := len(voters)/2 + 1
	if c.cfg.Canary == CanaryQuorumAll {
		need = len(voters)
	}
	return n >= need
}

// quorumAll reports whether has holds for a majority of the voters of
// every active configuration.
func (c *Core) quorumAll(has func(uint64) bool) bool {
	for i := range c.activeConfs() {
		if !c.majorityOf(c.activeConfs()[i].Voters, has) {
			return false
		}
	}
	return true
}

// in returns a membership test for ids.
func in(ids []uint64) func(uint64) bool {
	return func(id uint64) bool { return slices.Contains(ids, id) }
}

// isMember reports whether id belongs to a configuration this node still
// keeps (messages from others are refused).
func (c *Core) isMember(id uint64) bool { return slices.Contains(c.known, id) }

// IsMember reports whether id belongs to a configuration this node keeps:
// the nodes whose messages it takes (a node behind takes them from members
// of configurations newer than those it knows to govern).
func (c *Core) IsMember(id uint64) bool { return c.isMember(id) }

// setConfs installs confs (sorted by From, the first governing the
// instance after the chosen prefix) and recomputes the member sets.
func (c *Core) setConfs(confs []Conf) {
	c.confs = confs
	c.known, c.members = nil, nil
	for i := range c.confs {
		c.known = append(c.known, c.confs[i].Members()...)
	}
	for _, cf := range c.activeConfs() {
		c.members = append(c.members, cf.Members()...)
	}
	if c.cfg.Canary == CanaryCountRemoved {
		c.members = append(c.members, c.known...) // removed nodes get accepts, and their votes count
	}
	slices.Sort(c.known)
	c.known = slices.Compact(c.known)
	slices.Sort(c.members)
	c.members = slices.Compact(c.members)
}

// chooseConf follows the chosen log past instance i, whose value v is a
// configuration change: it takes (from i+ConfigDelay on) if it names the
// newest configuration's version.
func (c *Core) chooseConf(i uint64, v *pb.Value) {
	if v.Config.GetExpect() != c.newestConf().Version {
		c.Stats.ConfRejects++
		return
	}
	cf, err := ConfFromPB(v.Config, i)
	if err != nil {
		c.Stats.ConfRejects++
		return
	}
	if c.cfg.Canary == CanaryConfImmediate {
		cf.From = i + 1 // the bug: in force before every proposer can know it
	}
	c.Stats.ConfChanges++
	c.setConfs(append(slices.Clone(c.confs), cf))
	if c.role == leading {
		// Its voters must have promised this ballot before the leader
		// proposes an instance it governs: if they did not, phase 1 again
		// (a leader it removes never will). And an idle group must get
		// there: fill the gap with no-ops.
		if cf.IsVoter(c.cfg.ID) && !c.majorityOf(cf.Voters, in(c.promises)) {
			c.startPrepare(nil)
			return
		}
		c.fillToConf()
	}
}

// fillToConf makes a leader fill the instances up to where the newest
// configuration governs with no-ops if no values come: an idle group gets
// there too.
func (c *Core) fillToConf() {
	if from := c.newestConf().From; from > c.chosenUpto+1 {
		c.confFill = max(c.confFill, from-1)
	}
}

// ChangeAccepted reports whether the configuration change chosen at
// instance i took effect (false: it named a stale version, or i is not a
// configuration change this core still knows of), and the configuration.
func (c *Core) ChangeAccepted(i uint64) (Conf, bool) {
	for _, cf := range c.confs {
		if cf.Version == i && i != 0 {
			return cf, true
		}
	}
	return Conf{}, false
}

// Conf returns the newest configuration chosen (it may not govern yet).
func (c *Core) Conf() Conf { return *c.newestConf() }

// ConfsAt returns the configurations a checkpoint at instance at must
// carry: those chosen at or before at that govern an instance after it.
func (c *Core) ConfsAt(at uint64) []Conf {
	var out []Conf
	for _, cf := range c.confs {
		if cf.Version <= at {
			out = append(out, cf)
		}
	}
	k := len(out) - 1
	for k > 0 && out[k].From > at+1 {
		k--
	}
	return out[k:]
}

// ProposeConf queues a configuration change: m names the whole new
// membership and the version it replaces.
func (c *Core) ProposeConf(m *pb.Membership) (seq uint64, ok bool) {
	return c.enqueue(&pb.Value{Config: m})
}

// pruneConfs forgets the configurations no instance still in memory needs.
func (c *Core) pruneConfs() {
	k := 0
	for k+1 < len(c.confs) && c.confs[k+1].From <= c.memBase+1 {
		k++
	}
	if k > 0 {
		c.setConfs(slices.Clone(c.confs[k:]))
	}
}

// votesDecide reports whether the nodes in acks decide instance i: they
// are a majority of the voters of its configuration.
func (c *Core) votesDecide(i uint64, acks []uint64) bool {
	voters := c.confAt(i).Voters
	if c.cfg.Canary == CanaryCountRemoved {
		voters = c.known // the bug: any member's vote counts
		n := 0
		for _, a := range acks {
			if slices.Contains(voters, a) {
				n++
			}
		}
		return n >= len(c.confAt(i).Voters)/2+1
	}
	return c.majorityOf(voters, in(acks))
}

// nonVoter reports whether this node knows it is no voter of instance i
// (its configuration is known: within ConfigDelay of the chosen prefix).
// It then stores what it accepts, to learn it cheaply, but sends no vote.
func (c *Core) nonVoter(i uint64) bool {
	if c.confUnknown || i > c.chosenUpto+ConfigDelay || c.cfg.Canary == CanaryCountRemoved {
		return false
	}
	return !c.confAt(i).IsVoter(c.cfg.ID)
}

// mayPropose reports whether a leader may bind instance i now: not too far
// past the chosen prefix, its configuration known (within ConfigDelay of
// the prefix), and this node a voter of it or of the newest configuration.
// (Safety needs only the first two: a proposer need not vote. A leader
// just added leads the instances before its configuration governs; one
// removed stops where its removal governs.)
func (c *Core) mayPropose(i uint64) bool {
	if c.tooFar(i) || i > c.chosenUpto+ConfigDelay && c.cfg.Canary != CanaryConfImmediate {
		return false
	}
	return c.confAt(i).IsVoter(c.cfg.ID) || c.newestConf().IsVoter(c.cfg.ID)
}

// leaveIfRemoved makes a leader that votes in no configuration from the
// next instance on step down (for good: it starts no phase 1 while it is
// no voter of the newest configuration).
func (c *Core) leaveIfRemoved() {
	if c.role == follower {
		return
	}
	for _, cf := range c.activeConfs() {
		if cf.IsVoter(c.cfg.ID) {
			return
		}
	}
	c.becomeFollower(c.cfg.ElectionTicks)
}

// ConfStatePB encodes confs for a checkpoint.
func ConfStatePB(confs []Conf) *pb.ConfState {
	st := &pb.ConfState{}
	for i := range confs {
		st.Confs = append(st.Confs, &pb.ConfEntry{From: confs[i].From, Version: confs[i].Version, Members: confs[i].pb().Members})
	}
	return st
}

// ConfsFromPB decodes the configurations of a checkpoint; it reports an
// error for a list no group could have had.
func ConfsFromPB(st *pb.ConfState) ([]Conf, error) {
	var out []Conf
	for _, e := range st.GetConfs() {
		cf, err := ConfFromPB(&pb.Membership{Members: e.Members}, e.Version)
		if err != nil {
			return nil, err
		}
		cf.From = e.From
		if len(out) > 0 && (cf.From <= out[len(out)-1].From || cf.Version <= out[len(out)-1].Version) {
			return nil, fmt.Errorf("%w: configurations out of order", ErrInvalidConfig)
		}
		out = append(out, cf)
	}
	return out, nil
}

// learnConfs ends a joined node's ignorance: the master record at instance
// 1, a fresh group's first value, names its first configuration. (A later
// record's list may miss changes chosen just before it: those are taken
// from a checkpoint instead.)
func (c *Core) learnConfs(st *pb.ConfState) {
	confs, err := ConfsFromPB(st)
	if err != nil || len(confs) == 0 {
		return
	}
	c.confUnknown = false
	c.setConfs(confs)
	c.membersAt = 0
}

// ConfKnown reports whether this node knows its group's configuration (a
// joined node does once it learned the first master record or installed
// a checkpoint).
func (c *Core) ConfKnown() bool { return !c.confUnknown }

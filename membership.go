package paxos

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/paxoskit/paxos/core"
	pb "github.com/paxoskit/paxos/core/paxospb"
	"github.com/paxoskit/paxos/env"
)

// Membership changes: a group's configuration (voters and followers)
// changes through the group's own log, by compare and set on its version,
// and a change governs the instances from core.ConfigDelay after the one
// that chose it (see core/membership.go for why that is safe).

// Member is one node of a group's configuration.
type Member struct {
	ID       uint64
	Addr     string // where the transport reaches it; "" for the address the node was started with
	Follower bool   // receives and executes every value, never votes
}

// Membership is a group's configuration.
type Membership struct {
	// Known is false on a node started with Options.Join that has not
	// learned its group's configuration yet (the rest is then empty).
	Known bool
	// Version is the instance of the change that made it (0 for the
	// configuration the group started with): the version a change names.
	Version uint64
	// From is the first instance it governs: Version + core.ConfigDelay.
	From    uint64
	Members []Member // sorted by ID
}

// Voters returns the ids of the voting members.
func (m Membership) Voters() []uint64 { return m.ids(false) }

// Followers returns the ids of the non-voting members.
func (m Membership) Followers() []uint64 { return m.ids(true) }

func (m Membership) ids(followers bool) []uint64 {
	var out []uint64
	for _, mb := range m.Members {
		if mb.Follower == followers {
			out = append(out, mb.ID)
		}
	}
	return out
}

// Has reports whether id is a member (voter or follower).
func (m Membership) Has(id uint64) bool {
	return slices.ContainsFunc(m.Members, func(mb Member) bool { return mb.ID == id })
}

var (
	// ErrConfigChanged means a membership change named a version that is
	// no longer the group's newest: another change came first. Read the
	// membership again and retry.
	ErrConfigChanged = errors.New("paxos: the group's configuration changed since the version named")
	// ErrInvalidMembership means a membership change asked for a
	// configuration no group can run (no voter, a duplicate or zero id), or
	// one that changes nothing.
	ErrInvalidMembership = errors.New("paxos: invalid membership")
)

func membershipOf(cf core.Conf, known bool) Membership {
	if !known {
		return Membership{}
	}
	m := Membership{Known: true, Version: cf.Version, From: cf.From}
	for _, id := range cf.Members() {
		m.Members = append(m.Members, Member{ID: id, Addr: cf.Addrs[id], Follower: !cf.IsVoter(id)})
	}
	return m
}

// Membership returns the newest configuration chosen in group (it governs
// from its From on). Safe from any goroutine.
func (n *Node) Membership(group uint64) (Membership, error) {
	g, err := n.group(group)
	if err != nil {
		return Membership{}, err
	}
	if m := g.status.conf.Load(); m != nil {
		return *m, nil
	}
	return Membership{}, ErrClosed
}

// ChangeMembership proposes members as group's whole configuration, in
// place of the one of version expect, and waits until the change is
// chosen and executed here. It returns the new configuration, or
// ErrConfigChanged if expect was not the newest version by then (nothing
// changed), ErrInvalidMembership, or a proposal's errors.
func (n *Node) ChangeMembership(ctx context.Context, group, expect uint64, members []Member) (Membership, error) {
	m, err := membershipPB(expect, members)
	if err != nil {
		return Membership{}, err
	}
	ch := make(chan outcome, 1)
	p := &proposal{cb: func(r Result, err error) { ch <- outcome{r, err} }}
	res, err := n.wait(ctx, p, ch, func(timeout time.Duration) { n.proposeConf(p, group, m, timeout) })
	if err != nil {
		return Membership{}, err
	}
	return res.Value.(Membership), nil
}

// ChangeMembershipAsync is ChangeMembership that calls cb on the node's
// loop with the outcome instead of waiting (Options.ProposeTimeout bounds
// it). It never blocks.
func (n *Node) ChangeMembershipAsync(group, expect uint64, members []Member, cb func(Membership, error)) {
	m, err := membershipPB(expect, members)
	if err != nil {
		cb(Membership{}, err)
		return
	}
	p := &proposal{cb: func(r Result, err error) {
		if err != nil {
			cb(Membership{}, err)
			return
		}
		cb(r.Value.(Membership), nil)
	}}
	if !n.env.Loop.Post(func() { n.proposeConf(p, group, m, n.opts.ProposeTimeout) }) {
		cb(Membership{}, ErrClosed)
	}
}

func membershipPB(expect uint64, members []Member) (*pb.Membership, error) {
	m := &pb.Membership{Expect: expect}
	for _, mb := range members {
		m.Members = append(m.Members, &pb.Member{Id: mb.ID, Addr: mb.Addr, Follower: mb.Follower})
	}
	if _, err := core.ConfFromPB(m, 1); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidMembership, err)
	}
	return m, nil
}

func (n *Node) proposeConf(p *proposal, gid uint64, m *pb.Membership, timeout time.Duration) {
	g, err := n.admitAny(gid)
	if err != nil {
		p.cb(Result{}, err)
		return
	}
	seq, ok := g.core.ProposeConf(m)
	if !ok {
		p.cb(Result{}, fmt.Errorf("%w: group %d queue full", ErrOverloaded, gid))
		return
	}
	n.track(g, seq, p, timeout)
}

// changeMembers reads group's configuration, applies edit to a copy of
// its members and proposes the result under its version.
func (n *Node) changeMembers(ctx context.Context, group uint64, edit func([]Member) ([]Member, error)) (Membership, error) {
	cur, err := n.Membership(group)
	if err != nil {
		return Membership{}, err
	}
	next, err := edit(slices.Clone(cur.Members))
	if err != nil {
		return Membership{}, fmt.Errorf("%w: %w", ErrInvalidMembership, err)
	}
	return n.ChangeMembership(ctx, group, cur.Version, next)
}

func indexOf(ms []Member, id uint64) int {
	return slices.IndexFunc(ms, func(m Member) bool { return m.ID == id })
}

// AddMember adds node id, reachable at addr, as a voter of group.
func (n *Node) AddMember(ctx context.Context, group, id uint64, addr string) (Membership, error) {
	return n.changeMembers(ctx, group, func(ms []Member) ([]Member, error) {
		if indexOf(ms, id) >= 0 {
			return nil, fmt.Errorf("node %d is a member already", id)
		}
		return append(ms, Member{ID: id, Addr: addr}), nil
	})
}

// AddFollower adds node id, reachable at addr, as a follower of group: it
// receives and executes every value and never votes.
func (n *Node) AddFollower(ctx context.Context, group, id uint64, addr string) (Membership, error) {
	return n.changeMembers(ctx, group, func(ms []Member) ([]Member, error) {
		if indexOf(ms, id) >= 0 {
			return nil, fmt.Errorf("node %d is a member already", id)
		}
		return append(ms, Member{ID: id, Addr: addr, Follower: true}), nil
	})
}

// RemoveMember removes node id (voter or follower) from group.
func (n *Node) RemoveMember(ctx context.Context, group, id uint64) (Membership, error) {
	return n.changeMembers(ctx, group, func(ms []Member) ([]Member, error) {
		i := indexOf(ms, id)
		if i < 0 {
			return nil, fmt.Errorf("node %d is not a member", id)
		}
		return slices.Delete(ms, i, i+1), nil
	})
}

// ChangeMember replaces member old by node id, reachable at addr, in one
// change (PhxPaxos's ChangeMember): id takes old's role.
func (n *Node) ChangeMember(ctx context.Context, group, old, id uint64, addr string) (Membership, error) {
	return n.changeMembers(ctx, group, func(ms []Member) ([]Member, error) {
		i := indexOf(ms, old)
		switch {
		case i < 0:
			return nil, fmt.Errorf("node %d is not a member", old)
		case indexOf(ms, id) >= 0:
			return nil, fmt.Errorf("node %d is a member already", id)
		}
		ms[i] = Member{ID: id, Addr: addr, Follower: ms[i].Follower}
		return ms, nil
	})
}

// MoveMember records that member id is now reachable at addr: an address
// change is a configuration change too (ids are stable, addresses not).
// Every member's transport learns the new address from it.
func (n *Node) MoveMember(ctx context.Context, group, id uint64, addr string) (Membership, error) {
	return n.changeMembers(ctx, group, func(ms []Member) ([]Member, error) {
		i := indexOf(ms, id)
		switch {
		case i < 0:
			return nil, fmt.Errorf("node %d is not a member", id)
		case addr == "" || ms[i].Addr == addr:
			return nil, fmt.Errorf("node %d: no new address (%q)", id, addr)
		}
		ms[i].Addr = addr
		return ms, nil
	})
}

// PromoteFollower makes follower id a voter of group.
func (n *Node) PromoteFollower(ctx context.Context, group, id uint64) (Membership, error) {
	return n.changeMembers(ctx, group, func(ms []Member) ([]Member, error) {
		i := indexOf(ms, id)
		if i < 0 || !ms[i].Follower {
			return nil, fmt.Errorf("node %d is not a follower", id)
		}
		ms[i].Follower = false
		return ms, nil
	})
}

// updatePeers hands the transport the addresses the group's newest
// configuration names (a member added with an address, or moved), once
// per configuration.
func (n *Node) updatePeers(g *group) {
	cf := g.core.Conf()
	if g.peersVersion == cf.Version+1 {
		return
	}
	g.peersVersion = cf.Version + 1
	ps, ok := n.env.Transport.(env.PeerSetter)
	if !ok {
		return
	}
	for _, id := range cf.Members() {
		if addr := cf.Addrs[id]; addr != "" && id != n.opts.MyNode {
			ps.SetPeer(id, addr)
		}
	}
}

// executeConf ends the configuration change chosen at instance for its
// proposer p (nil if not ours): the new configuration, or ErrConfigChanged.
func (n *Node) executeConf(g *group, instance uint64, p *proposal) {
	cf, ok := g.core.ChangeAccepted(instance)
	if ok {
		n.opts.Logger.Info("configuration changed", "group", g.id, "version", cf.Version, "from", cf.From, "voters", cf.Voters, "followers", cf.Followers)
	}
	if p == nil {
		return
	}
	if !ok {
		p.fail(fmt.Errorf("%w: group %d, change chosen at instance %d", ErrConfigChanged, g.id, instance))
		return
	}
	g.publishConf() // Membership shows it before the caller hears of it
	p.cb(Result{Instance: instance, Value: membershipOf(cf, true)}, nil)
}

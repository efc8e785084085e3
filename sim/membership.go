package sim

import (
	"slices"
	"time"

	"github.com/paxoskit/paxos"
	"github.com/paxoskit/paxos/core"
	pb "github.com/paxoskit/paxos/core/paxospb"
)

// Membership changes under the faults: clients ask random nodes to make a
// random majority-or-more of the nodes the voters of a random group
// (ConfRate per second); at heal every node is made a voter again, so
// liveness is checked in the final configuration. The oracle replays the
// configuration history from the chosen log (a change chosen at i, naming
// the newest version, governs from i+core.ConfigDelay on) and the checkers
// count majorities of the configurations it gives.

type oracleConf struct {
	from, version uint64
	voters        []uint64
}

func (r *run) initConfs() {
	var all []uint64
	for _, n := range r.nodes {
		if !r.spare(n.id) {
			all = append(all, n.id)
		}
	}
	r.confs = make([][]oracleConf, r.opts.Groups)
	for g := range r.confs {
		r.confs[g] = []oracleConf{{from: 1, voters: all}}
	}
}

// noteConf follows the chosen log: v, executed at instance i (not fenced),
// changes the configuration if it names the newest version and names a
// configuration a group can run.
func (r *run) noteConf(g, i uint64, v *pb.Value) {
	hist := r.confs[g]
	if v.Config.GetExpect() != hist[len(hist)-1].version {
		return
	}
	var voters []uint64
	seen, followers := map[uint64]bool{}, 0
	for _, m := range v.Config.Members {
		if m == nil || m.Id == 0 || seen[m.Id] {
			return
		}
		seen[m.Id] = true
		if m.Follower {
			followers++
		} else {
			voters = append(voters, m.Id)
		}
	}
	if len(voters) == 0 {
		return
	}
	r.stats.ConfFollowers += uint64(followers)
	slices.Sort(voters)
	r.confs[g] = append(hist, oracleConf{from: i + core.ConfigDelay, version: i, voters: voters})
	r.stats.ConfChanges++
	r.w.tracef("g%d configuration version %d voters %v from %d", g, i, voters, i+core.ConfigDelay)
}

// confAt returns the configuration the oracle says governs instance i.
func (r *run) confAt(g, i uint64) oracleConf {
	hist := r.confs[g]
	k := len(hist) - 1
	for k > 0 && hist[k].from > i {
		k--
	}
	return hist[k]
}

// quorumOK reports whether has holds for a majority of the voters of every
// configuration governing an instance after the oracle's chosen prefix.
func (r *run) quorumOK(g uint64, has func(uint64) bool) bool {
	prefix := uint64(len(r.digests[g]) - 1)
	hist := r.confs[g]
	k := len(hist) - 1
	for k > 0 && hist[k].from > prefix+1 {
		k--
	}
	for _, cf := range hist[k:] {
		if !majority(cf.voters, has) {
			return false
		}
	}
	return true
}

func majority(voters []uint64, has func(uint64) bool) bool {
	n := 0
	for _, v := range voters {
		if has(v) {
			n++
		}
	}
	return n >= len(voters)/2+1
}

// upNode returns a random node whose process runs (and that ok accepts,
// if given), nil if none.
func (r *run) upNode(ok ...func(*simNode) bool) *simNode {
	var up []*simNode
	for _, n := range r.nodes {
		if n.up && n.node != nil && (len(ok) == 0 || ok[0](n)) {
			up = append(up, n)
		}
	}
	if len(up) == 0 {
		return nil
	}
	return up[r.w.rng.IntN(len(up))]
}

// reconfigure asks a random node to make a random set of at least a
// majority of the nodes the voters of a random group.
func (r *run) reconfigure() {
	n := r.upNode()
	if n == nil {
		return
	}
	g := uint64(r.w.rng.IntN(r.opts.Groups))
	cur, err := n.node.Membership(g)
	if err != nil {
		return
	}
	k := len(r.nodes)/2 + 1 + r.w.rng.IntN(len(r.nodes)-len(r.nodes)/2)
	var members []paxos.Member
	for j, i := range r.w.rng.Perm(len(r.nodes)) {
		switch {
		case j < k:
			members = append(members, paxos.Member{ID: r.nodes[i].id})
		case r.opts.Followers && (j-k)%2 == 0:
			// Every other one of the rest follows: it learns and never
			// votes.
			members = append(members, paxos.Member{ID: r.nodes[i].id, Follower: true})
		}
	}
	r.stats.ConfTries++
	r.w.tracef("n%d g%d asks for voters %v (version %d)", n.id, g, members, cur.Version)
	n.node.ChangeMembershipAsync(g, cur.Version, members, func(m paxos.Membership, err error) {
		r.w.tracef("n%d g%d membership change: %v %v", n.id, g, m, err)
	})
}

// restoreVoters makes every node a voter of every group again, checking
// every 200 ms to the end of the run (a change asked for during the faults
// may be chosen after the heal).
func (r *run) restoreVoters() {
	var all []paxos.Member
	for _, n := range r.nodes {
		all = append(all, paxos.Member{ID: n.id})
	}
	for g := range r.opts.Groups {
		hist := r.confs[g]
		if len(hist[len(hist)-1].voters) == len(r.nodes) {
			continue
		}
		r.w.tracef("g%d restoring every node as a voter", g)
		// Asked of a voter of the newest configuration (a removed node
		// refuses, and may not know the newest version).
		voters := hist[len(hist)-1].voters
		if n := r.upNode(func(n *simNode) bool { return slices.Contains(voters, n.id) }); n != nil {
			if cur, err := n.node.Membership(uint64(g)); err == nil {
				n.node.ChangeMembershipAsync(uint64(g), cur.Version, all, func(m paxos.Membership, err error) {
					r.w.tracef("n%d g%d restore: %v %v", n.id, g, m, err)
				})
			}
		}
	}
	if r.w.now+200*time.Millisecond < r.end {
		r.w.after(200*time.Millisecond, r.restoreVoters)
	}
}

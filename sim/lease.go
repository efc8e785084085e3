package sim

import "time"

// The master checkers follow what each node believes about its master
// lease (testhooks.OnLease) against true simulated time:
//
//   - lease: at most one live node of a group holds a lease belief at any
//     true time: node up (a crash ends its incarnation's belief) and its
//     own clock short of the belief's end. Beliefs only start or move at
//     OnLease calls and end as clocks advance (clocks never go back), so
//     checking each new belief against the others at that moment is
//     enough. A read served by lease returns only from a node whose
//     belief held at some point since the read was invoked.
//   - lease-bound: a belief ends at most MasterLease*(1-d)/(1+d) on the
//     node's clock after the newest heartbeat a majority acked left: the
//     safety margin itself, checked on every belief rather than only when
//     the clocks and a change of master happen to expose its absence.
//   - master-version: a node's belief never goes back to an older
//     version, and a belief of another node than the group's previous
//     believer has a version above every earlier belief of the group.
//   - master: once healed, every group gets a master (some node holds a
//     belief) within the settle time.

// belief is a node incarnation's belief that it holds a group's lease.
type belief struct {
	inc     uint64
	until   time.Duration // on the node's clock; 0: none
	version uint64
	since   time.Duration // true time the belief (last) started
	ended   time.Duration // true time the node gave it up (until 0), 0 while not
}

// beliefEnd is the true time belief b of node n ends (or ended), as
// n's clock runs now.
func (r *run) beliefEnd(n *simNode, b belief) time.Duration {
	end := r.trueEnd(n, b.until)
	if b.ended != 0 {
		end = min(end, b.ended)
	}
	return end
}

// masterState is what the checkers know of one group's masters.
type masterState struct {
	beliefs    map[uint64]belief // per node
	nodeVer    map[uint64]uint64 // per node: highest version it believed
	last       uint64            // node of the latest belief
	maxVersion uint64
	any        bool // some belief was seen
	sinceHeal  bool // some belief held at or after healAt
}

func (r *run) master(g uint64) *masterState {
	ms := r.masters[g]
	if ms == nil {
		ms = &masterState{beliefs: map[uint64]belief{}, nodeVer: map[uint64]uint64{}}
		r.masters[g] = ms
	}
	return ms
}

// holds reports whether node n (its current incarnation) believes now that
// it holds the lease of group g, and the belief.
func (r *run) holds(n *simNode, g uint64) (belief, bool) {
	b, ok := r.master(g).beliefs[n.id]
	if !ok || !n.up || b.inc != n.inc || b.ended != 0 {
		return b, false
	}
	return b, n.clock.now(r.w.now) < b.until
}

// trueEnd is the true time at which n's clock reaches until, as its clock
// runs now.
func (r *run) trueEnd(n *simNode, until time.Duration) time.Duration {
	return r.w.now + n.clock.trueDelay(until-n.clock.now(r.w.now))
}

// onLease follows node n's lease belief of group g (testhooks.OnLease).
func (r *run) onLease(n *simNode, g uint64, until time.Duration, version uint64) {
	ms := r.master(g)
	now := n.clock.now(r.w.now)
	r.w.tracef("n%d g%d lease until %v (clock %v, true end %v) version %d", n.id, g, until, now, r.trueEnd(n, until), version)
	if until == 0 {
		if b, ok := ms.beliefs[n.id]; ok && b.ended == 0 {
			b.ended = r.w.now
			ms.beliefs[n.id] = b
		}
		return
	}
	if v, ok := ms.nodeVer[n.id]; ok && version < v {
		r.failCheck("master-version", "group %d: node %d believes it is master of version %d after believing version %d", g, n.id, version, v)
		return
	}
	if ms.any && ms.last != n.id && version <= ms.maxVersion {
		r.failCheck("master-version", "group %d: node %d believes it is master of version %d, but node %d believed in version %d before it",
			g, n.id, version, ms.last, ms.maxVersion)
		return
	}
	if !ms.any || version > ms.maxVersion {
		r.stats.MasterChanges++
	}
	ms.nodeVer[n.id] = max(ms.nodeVer[n.id], version)
	ms.maxVersion = max(ms.maxVersion, version)
	ms.last, ms.any = n.id, true
	ms.beliefs[n.id] = belief{inc: n.inc, until: until, version: version, since: r.w.now}
	if now >= until {
		return // over already
	}
	r.checkLeaseBound(n, g, until)
	if r.w.now >= r.healAt {
		ms.sinceHeal = true
	}
	for _, m := range r.nodes {
		if m == n {
			continue
		}
		if b, ok := r.holds(m, g); ok {
			r.failCheck("lease", "group %d: at true time %v node %d believes it holds the lease as master of version %d until %v on its clock (true %v), while node %d (since true %v) holds it as master of version %d until %v on its clock (true %v)",
				g, r.w.now, n.id, version, until, r.trueEnd(n, until), m.id, b.since, b.version, b.until, r.trueEnd(m, b.until))
			return
		}
	}
}

// checkLeaseBound checks the lease's arithmetic directly: a belief ends
// at most MasterLease*(1-d)/(1+d) (d the drift bound the node was told)
// on the node's clock after the newest heartbeat a majority acked left.
// Followers grant the lease from when they got that heartbeat, for
// MasterLease on their own clocks; the margin covers their clocks running
// fast and the master's slow. A belief past it needs drift beyond the
// bound, or luck, before the lease checker can see two masters at once.
func (r *run) checkLeaseBound(n *simNode, g uint64, until time.Duration) {
	if r.opts.endToEnd {
		return
	}
	h := r.round(n, g)
	sent, ok := r.leaseBasis(n, g, h)
	d := r.opts.maxClockDrift()
	lease := r.opts.MasterLease
	if lease == 0 {
		lease = time.Second // the library's default
	}
	limit := sent + time.Duration(float64(lease)*(1-d)/(1+d)) + time.Microsecond
	if !ok || until > limit {
		r.failCheck("lease-bound", "group %d: node %d believes it holds the lease until %v on its clock, past %v: %v (lease %v, drift bound %.3f) after the newest heartbeat a majority acked left at %v (found %v; acks %v)",
			g, n.id, until, limit, limit-sent, lease, d, sent, ok, h.acked)
	}
}

// endBeliefs ends the beliefs of a crashed incarnation.
func (r *run) endBeliefs(n *simNode) {
	for _, ms := range r.masters {
		delete(ms.beliefs, n.id)
	}
}

// onRead follows a linearizable read node n serves (testhooks.OnRead).
func (r *run) onRead(n *simNode, g, index uint64, byLease bool) {
	r.w.tracef("n%d g%d read index=%d lease=%v", n.id, g, index, byLease)
	if byLease {
		r.stats.LeaseReads++
	} else {
		r.stats.IndexReads++
	}
}

// checkLeaseRead runs when a client's read that node n served by lease
// returns: n (this incarnation) must have held the lease at some point
// since the read was invoked. (It may be served a little later, once the
// node executed up to the index it confirmed under the lease.)
func (r *run) checkLeaseRead(n *simNode, inc, g uint64, invoked time.Duration) {
	b, ok := r.master(g).beliefs[n.id]
	if !ok || b.inc != inc || !n.up || n.inc != inc {
		r.failCheck("lease", "group %d: node %d served a lease read invoked at true time %v without ever holding the lease", g, n.id, invoked)
		return
	}
	if end := r.beliefEnd(n, b); end < invoked || b.since > r.w.now {
		r.failCheck("lease", "group %d: node %d served a lease read invoked at true time %v, but its lease (version %d, since true %v) ended at true time %v (its clock now %v, belief until %v)",
			g, n.id, invoked, b.version, b.since, end, n.clock.now(r.w.now), b.until)
	}
}

// healMasters starts the master check at heal: a belief held now counts.
func (r *run) healMasters() {
	for g := range uint64(r.opts.Groups) {
		ms := r.master(g)
		for _, n := range r.nodes {
			if _, ok := r.holds(n, g); ok {
				ms.sinceHeal = true
			}
		}
	}
}

// checkMasters runs at liveFrom: every group had a master since the heal.
func (r *run) checkMasters() {
	for g := range uint64(r.opts.Groups) {
		if ms := r.master(g); !ms.sinceHeal {
			r.failCheck("master", "group %d had no master (no node held a lease) between the heal at %v and %v", g, r.healAt, r.liveFrom)
			return
		}
	}
}

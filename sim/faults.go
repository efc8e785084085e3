package sim

import (
	"time"

	"github.com/paxoskit/paxos/core"
	pb "github.com/paxoskit/paxos/core/paxospb"
)

// clock is one node's hardware clock: it runs at rate times true time and
// only ever jumps forward. The simulated (true) time stays what the
// checkers use.
type clock struct {
	rate   float64
	offset time.Duration
}

func (c *clock) now(truth time.Duration) time.Duration {
	return c.offset + time.Duration(float64(truth)*c.rate)
}

// trueDelay is how much true time passes while this clock advances by d.
func (c *clock) trueDelay(d time.Duration) time.Duration {
	return time.Duration(float64(d) / c.rate)
}

// setClocks gives every node its own clock rate within the drift bound
// (or beyond the bound the nodes are told, with DriftBeyondBound).
func (r *run) setClocks() {
	d := r.opts.ClockDrift
	if r.opts.DriftBeyondBound > 0 {
		d = r.opts.DriftBeyondBound
	}
	for _, n := range r.nodes {
		n.clock = clock{rate: 1}
		if d > 0 {
			u := r.w.rng.Float64()
			if r.opts.ClockEdges {
				u = float64(int(2 * u)) // 0 or 1
			}
			n.clock.rate = 1 + d*(2*u-1)
			r.stats.DriftingClocks++
		}
	}
}

// jumpClock moves a random node's clock forward.
func (r *run) jumpClock() {
	n := r.nodes[r.w.rng.IntN(len(r.nodes))]
	j := r.w.between(time.Millisecond, r.opts.MaxJump)
	n.clock.offset += j
	r.stats.ClockJumps++
	r.w.tracef("n%d clock jumps forward %v", n.id, j)
}

// leadership follows who leads each group, from the heartbeats and accepts
// nodes send, to count flapping leadership.
type leadership struct {
	last    uint64      // node of the current leadership, 0 if none seen
	ballot  core.Ballot // its ballot
	led     map[uint64]bool
	counter map[uint64]uint64 // prepare counter -> node that used it first
}

func (r *run) noteLeader(n *simNode, m *pb.Message) {
	l := r.leaders[m.Group]
	if l == nil {
		l = &leadership{led: map[uint64]bool{}, counter: map[uint64]uint64{}}
		r.leaders[m.Group] = l
	}
	switch m.Type {
	case pb.MsgType_MSG_PREPARE:
		c := m.Ballot.GetCounter()
		if first, ok := l.counter[c]; ok && first != n.id {
			r.stats.SameCounterPrepares++
			l.counter[c] = n.id // count each pair of proposers once
		} else if !ok {
			l.counter[c] = n.id
		}
		return
	case pb.MsgType_MSG_HEARTBEAT, pb.MsgType_MSG_ACCEPT:
	default:
		return
	}
	b := ballotOf(m.Ballot)
	if b == l.ballot {
		return
	}
	if l.led[n.id] && l.last != 0 && l.last != n.id {
		r.stats.ReLeads++
	}
	if until, ok := r.cutOff[n.id]; ok && r.w.now-until < 3*time.Second {
		r.stats.LedAfterCutOff++
		delete(r.cutOff, n.id)
	}
	l.last, l.ballot = n.id, b
	l.led[n.id] = true
}

// isolate cuts every link of n for d.
func (r *run) isolate(n *simNode, d time.Duration) {
	var links []link
	for _, o := range r.nodes {
		if o != n {
			links = append(links, link{n.id, o.id}, link{o.id, n.id})
		}
	}
	r.w.tracef("n%d isolated for %v", n.id, d)
	r.cut(links, d)
	r.w.after(d, func() { r.cutOff[n.id] = r.w.now })
}

// flap cuts the leader of group 0 off for a term; when it comes back, the
// leader that replaced it is cut off in turn, so the old leader, with a log
// a term behind, may lead again.
func (r *run) flap() {
	l := r.leaders[0]
	if l == nil || l.last == 0 {
		return
	}
	old := r.nodes[l.last-1]
	term := r.w.between(time.Second, 3*time.Second)
	r.stats.Flaps++
	r.isolate(old, term)
	r.w.after(term, func() {
		if nl := r.leaders[0]; nl != nil && nl.last != 0 && nl.last != old.id && r.w.now < r.healAt {
			r.isolate(r.nodes[nl.last-1], r.w.between(500*time.Millisecond, 1500*time.Millisecond))
		}
	})
}

// chooseMinority picks the nodes kept away through the liveness phase.
func (r *run) chooseMinority() {
	k := 1 + r.w.rng.IntN((len(r.nodes)-1)/2)
	for _, i := range r.w.rng.Perm(len(r.nodes))[:k] {
		r.minority[r.nodes[i].id] = r.w.chance(0.5) // true: crashed, false: cut off
	}
	r.stats.MinorityDown += uint64(k)
}

// serving reports whether clients may use n now: during liveness the
// minority is away.
func (r *run) serving(n *simNode) bool {
	if !n.up {
		return false
	}
	_, away := r.minority[n.id]
	return !away || r.w.now < r.healAt || r.w.now >= r.rejoin
}

// keepAway applies the minority at heal: crashed ones stay down, cut-off
// ones lose every link; both come back at r.rejoin and must converge.
func (r *run) keepAway() {
	for _, n := range r.nodes {
		crashed, away := r.minority[n.id]
		if !away {
			continue
		}
		if crashed {
			r.crash(n)
			r.w.tracef("n%d kept down through liveness", n.id)
			r.w.at(r.rejoin, func() { r.restart(n) })
			continue
		}
		r.isolate(n, r.rejoin-r.w.now)
	}
}

// longDown crashes a random node and restarts it well before the heal,
// after the others have moved on by many instances.
func (r *run) longDown() {
	n := r.nodes[r.w.rng.IntN(len(r.nodes))]
	if !n.up {
		return
	}
	r.stats.LongDowns++
	r.w.tracef("n%d long down", n.id)
	r.crash(n)
	r.w.at(r.w.between(r.healAt/2, r.healAt*4/5), func() { r.restart(n) })
}

// recrash crashes n again soon after a restart, before its first sync has
// completed when it is quick enough.
func (r *run) recrash(n *simNode) {
	inc := n.inc
	r.w.after(r.w.between(0, r.opts.SyncLatency), func() {
		if n.inc != inc || !n.up || r.w.now >= r.healAt {
			return
		}
		if !n.synced {
			r.stats.QuickRecrashes++
		}
		r.crash(n)
		r.w.after(r.w.between(time.Millisecond, r.opts.MaxDown), func() {
			if r.w.now < r.healAt {
				r.restart(n)
			}
		})
	})
}

// crashAfterPrepare sometimes crashes a proposer just after its prepare
// left, before or while it syncs: its next incarnation must pick a new
// ballot.
func (r *run) crashAfterPrepare(n *simNode) {
	if r.w.now < r.healAt && r.w.chance(r.opts.RecrashRate/3) {
		r.recrash(n)
	}
}

// pauseOne stops a random node's process for a while, as SIGSTOP (or a
// long GC pause, a VM migration) would: nothing of it runs, its clock goes
// on. A master paused past its lease must not serve a lease read when it
// resumes, and a new master may be elected meanwhile.
//
// A third of the pauses stall the whole host: the node is cut off too.
// Half the pauses hit a master (a node that holds a lease): its lease must
// run out on its own clock before another node's begins, and when it
// resumes, the reads and messages that waited must not find it believing
// it still leads.
func (r *run) pauseOne() {
	n := r.nodes[r.w.rng.IntN(len(r.nodes))]
	aimed := false
	if r.w.chance(0.5) {
		var masters []*simNode
		for _, m := range r.nodes {
			for g := range uint64(r.opts.Groups) {
				if _, ok := r.holds(m, g); ok {
					masters = append(masters, m)
					break
				}
			}
		}
		if len(masters) > 0 {
			n, aimed = masters[r.w.rng.IntN(len(masters))], true
		}
	}
	d := r.w.between(time.Millisecond, r.opts.MaxPause)
	if !n.up || n.paused || r.w.now+d >= r.healAt {
		return
	}
	n.paused = true
	r.stats.Pauses++
	if aimed {
		r.stats.MasterPauses++
	}
	r.w.tracef("n%d paused for %v", n.id, d)
	if r.w.chance(0.3) {
		// The whole host stalls (a VM migration, a swap storm): its network
		// is gone too, and what is sent to it meanwhile is lost.
		r.stats.Stalls++
		r.isolate(n, d)
	}
	inc := n.inc
	r.w.after(d, func() {
		if n.inc == inc && n.paused {
			r.resume(n)
		}
	})
}

// resume ends a pause: what waited runs now, in its original order, before
// anything posted later.
func (r *run) resume(n *simNode) {
	n.paused = false
	r.w.tracef("n%d resumes (%d handlers waited)", n.id, len(n.deferred))
	backlog := n.deferred
	n.deferred = nil
	for i, e := range backlog {
		if r.w.halted {
			return
		}
		if n.paused {
			// Paused again from within (cannot happen today): what is
			// left of the backlog still goes first.
			n.deferred = append(backlog[i:len(backlog):len(backlog)], n.deferred...)
			return
		}
		if e.env.alive() {
			r.w.events++
			e.fn()
		}
	}
}

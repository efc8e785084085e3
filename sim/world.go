// Package sim is a seeded, deterministic world for paxoskit nodes. It runs
// the real node runtime (package paxos) on one goroutine, implements every
// seam of package env, and decides the order of every event: message
// deliveries, timer firings, disk syncs, crashes and client requests. A seed
// therefore reproduces a run byte for byte.
package sim

import (
	"fmt"
	"io"
	"math/rand/v2"
	"time"
)

// event is one scheduled callback. Events run in time order; ties run in
// the order they were scheduled. If env is set, the event is a handler of
// that node incarnation and is skipped once it is gone.
type event struct {
	at  time.Duration
	seq uint64
	fn  func()
	env *nodeEnv
}

func (e *event) before(o *event) bool {
	return e.at < o.at || e.at == o.at && e.seq < o.seq
}

// eventQueue is a binary min-heap of events, by value: no allocation per
// event beyond its callback.
type eventQueue []event

func (q *eventQueue) push(e event) {
	*q = append(*q, e)
	h := *q
	for i := len(h) - 1; i > 0; {
		p := (i - 1) / 2
		if !h[i].before(&h[p]) {
			break
		}
		h[i], h[p] = h[p], h[i]
		i = p
	}
}

func (q *eventQueue) pop() event {
	h := *q
	top := h[0]
	last := len(h) - 1
	h[0] = h[last]
	h[last] = event{}
	h = h[:last]
	for i := 0; ; {
		l, m := 2*i+1, i
		if l < len(h) && h[l].before(&h[m]) {
			m = l
		}
		if r := l + 1; r < len(h) && h[r].before(&h[m]) {
			m = r
		}
		if m == i {
			break
		}
		h[i], h[m] = h[m], h[i]
		i = m
	}
	*q = h
	return top
}

// world is the scheduler, clock and randomness shared by everything in a run.
type world struct {
	now    time.Duration
	seq    uint64
	queue  eventQueue
	rng    *rand.Rand
	trace  io.Writer
	events uint64
	halted bool // a violation was found: nothing more runs
}

func newWorld(seed uint64, trace io.Writer) *world {
	return &world{rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), trace: trace}
}

func (w *world) at(t time.Duration, fn func()) {
	w.seq++
	w.queue.push(event{at: t, seq: w.seq, fn: fn})
}

// post schedules fn as a handler of node incarnation e, now.
func (w *world) post(e *nodeEnv, fn func()) {
	w.seq++
	w.queue.push(event{at: w.now, seq: w.seq, fn: fn, env: e})
}

func (w *world) after(d time.Duration, fn func()) { w.at(w.now+d, fn) }

// runUntil runs events up to and including time end.
func (w *world) runUntil(end time.Duration) {
	for len(w.queue) > 0 && w.queue[0].at <= end && !w.halted {
		e := w.queue.pop()
		w.now = e.at
		w.events++
		if e.env != nil {
			if !e.env.alive() {
				continue
			}
			if n := e.env.n; n.paused {
				// The process is stopped: the handler waits its turn.
				n.deferred = append(n.deferred, e)
				continue
			}
		}
		e.fn()
	}
	w.now = end
}

func (w *world) tracef(format string, args ...any) {
	if w.trace == nil {
		return
	}
	fmt.Fprintf(w.trace, "%10.6f ", w.now.Seconds())
	fmt.Fprintf(w.trace, format, args...)
	w.trace.Write([]byte{'\n'})
}

// chance returns true with probability p.
func (w *world) chance(p float64) bool { return p > 0 && w.rng.Float64() < p }

// between returns a duration uniformly drawn from [lo, hi].
func (w *world) between(lo, hi time.Duration) time.Duration {
	if hi <= lo {
		return lo
	}
	return lo + time.Duration(w.rng.Int64N(int64(hi-lo)+1))
}

// Package sim is a seeded, deterministic world for paxoskit nodes. It runs
// the real node runtime (package paxos) on one goroutine, implements every
// seam of package env, and decides the order of every event: message
// deliveries, timer firings, disk syncs, crashes and client requests. A seed
// therefore reproduces a run byte for byte.
package sim

import (
	"container/heap"
	"fmt"
	"io"
	"math/rand/v2"
	"time"
)

// event is one scheduled callback. Events run in time order; ties run in
// the order they were scheduled.
type event struct {
	at  time.Duration
	seq uint64
	fn  func()
}

type eventQueue []*event

func (q eventQueue) Len() int { return len(q) }
func (q eventQueue) Less(i, j int) bool {
	if q[i].at != q[j].at {
		return q[i].at < q[j].at
	}
	return q[i].seq < q[j].seq
}
func (q eventQueue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *eventQueue) Push(x any)   { *q = append(*q, x.(*event)) }
func (q *eventQueue) Pop() any {
	old := *q
	e := old[len(old)-1]
	old[len(old)-1] = nil
	*q = old[:len(old)-1]
	return e
}

// world is the scheduler, clock and randomness shared by everything in a run.
type world struct {
	now    time.Duration
	seq    uint64
	queue  eventQueue
	rng    *rand.Rand
	trace  io.Writer
	events uint64
}

func newWorld(seed uint64, trace io.Writer) *world {
	return &world{rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), trace: trace}
}

func (w *world) at(t time.Duration, fn func()) {
	w.seq++
	heap.Push(&w.queue, &event{at: t, seq: w.seq, fn: fn})
}

func (w *world) after(d time.Duration, fn func()) { w.at(w.now+d, fn) }

// runUntil runs events up to and including time end.
func (w *world) runUntil(end time.Duration) {
	for len(w.queue) > 0 && w.queue[0].at <= end {
		e := heap.Pop(&w.queue).(*event)
		w.now = e.at
		w.events++
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

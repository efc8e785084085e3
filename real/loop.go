// Package real implements the seams of package env for production: a
// goroutine per node draining its handler queue, the wall clock, TCP
// (real/transport) and goleveldb with fsync (real/storage).
package real

import (
	"math/rand/v2"
	"sync"
	"time"

	"github.com/paxoskit/paxos/env"
)

// Loop runs posted functions one at a time on its own goroutine.
type Loop struct {
	mu      sync.Mutex
	queue   []func()
	wake    chan struct{}
	stopped bool
	done    chan struct{}
}

// NewLoop starts a loop.
func NewLoop() *Loop {
	l := &Loop{wake: make(chan struct{}, 1), done: make(chan struct{})}
	go l.run()
	return l
}

// Post queues f; it never blocks. After Stop it reports false and f is
// dropped.
func (l *Loop) Post(f func()) bool {
	l.mu.Lock()
	if l.stopped {
		l.mu.Unlock()
		return false
	}
	l.queue = append(l.queue, f)
	l.mu.Unlock()
	select {
	case l.wake <- struct{}{}:
	default:
	}
	return true
}

func (l *Loop) run() {
	defer close(l.done)
	var batch []func()
	for {
		l.mu.Lock()
		batch, l.queue = l.queue, batch[:0]
		stopped := l.stopped
		l.mu.Unlock()
		for i, f := range batch {
			f()
			batch[i] = nil
		}
		if stopped {
			return
		}
		if len(batch) == 0 {
			<-l.wake
		}
	}
}

// Stop runs what is already queued, drops later posts and waits for the
// loop goroutine to end. It must not be called from the loop.
func (l *Loop) Stop() {
	l.mu.Lock()
	l.stopped = true
	l.mu.Unlock()
	select {
	case l.wake <- struct{}{}:
	default:
	}
	<-l.done
}

// Done is closed when the loop goroutine has ended.
func (l *Loop) Done() <-chan struct{} { return l.done }

// Clock is the wall clock; its timers post their callbacks to a Loop.
type Clock struct {
	loop  *Loop
	start time.Time
}

// NewClock returns a clock whose timers run on loop.
func NewClock(loop *Loop) *Clock { return &Clock{loop: loop, start: time.Now()} }

// Now returns the time since the clock was made (monotonic).
func (c *Clock) Now() time.Duration { return time.Since(c.start) }

// AfterFunc posts f to the loop after d. A Stop that returns false may still
// see f run (it may wait in the loop's queue); env.Timer says so.
func (c *Clock) AfterFunc(d time.Duration, f func()) env.Timer {
	return time.AfterFunc(d, func() { c.loop.Post(f) })
}

// Rand is a PRNG for one node's loop; it is not safe for concurrent use.
type Rand struct{ r *rand.Rand }

// NewRand returns a randomly seeded source.
func NewRand() *Rand { return &Rand{rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))} }

// IntN returns a uniform integer in [0, n).
func (r *Rand) IntN(n int) int { return r.r.IntN(n) }

package real

import (
	"sync/atomic"
	"testing"
	"time"
)

func TestLoopRunsInOrderAndStops(t *testing.T) {
	l := NewLoop()
	var got []int
	done := make(chan struct{})
	for i := range 100 {
		l.Post(func() { got = append(got, i) })
	}
	l.Post(func() { close(done) })
	<-done
	for i, v := range got {
		if v != i {
			t.Fatalf("ran %d at position %d", v, i)
		}
	}
	var ran atomic.Bool
	l.Post(func() { ran.Store(true) }) // queued before Stop: runs
	l.Stop()
	if !ran.Load() {
		t.Fatal("a function posted before Stop did not run")
	}
	if l.Post(func() { t.Error("ran after Stop") }) {
		t.Fatal("Post after Stop reported success")
	}
	select {
	case <-l.Done():
	case <-time.After(time.Second):
		t.Fatal("Done not closed after Stop")
	}
}

func TestClockTimersRunOnLoop(t *testing.T) {
	l := NewLoop()
	defer l.Stop()
	c := NewClock(l)
	fired := make(chan time.Duration, 1)
	c.AfterFunc(10*time.Millisecond, func() { fired <- c.Now() })
	stopped := c.AfterFunc(time.Hour, func() { t.Error("stopped timer fired") })
	if !stopped.Stop() {
		t.Fatal("Stop of a pending timer reported false")
	}
	select {
	case at := <-fired:
		if at < 10*time.Millisecond {
			t.Fatalf("timer fired at %v, before its 10ms", at)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("timer never fired")
	}
}

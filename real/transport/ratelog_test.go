package transport

import (
	"testing"
	"time"
)

func TestRateLog(t *testing.T) {
	clock := &fakeClock{}
	clock.advance(time.Hour) // not the zero time
	rl := newRateLog(10*time.Second, clock.now)
	check := func(what string, wantOK bool, wantSuppressed uint64) {
		t.Helper()
		if ok, n := rl.allow(); ok != wantOK || n != wantSuppressed {
			t.Fatalf("%s: allow() = %v, %d; want %v, %d", what, ok, n, wantOK, wantSuppressed)
		}
	}
	check("first call", true, 0)
	check("second call in the window", false, 0)
	clock.advance(9 * time.Second)
	check("third call in the window", false, 0)
	clock.advance(time.Second)
	check("first call after the window", true, 2)
	check("right after", false, 0)
	clock.advance(30 * time.Second)
	check("after a long quiet", true, 1)
	clock.advance(10 * time.Second)
	check("exactly one window later", true, 0)
}

func TestRateLogDefaultClock(t *testing.T) {
	rl := newRateLog(time.Hour, nil)
	if ok, _ := rl.allow(); !ok {
		t.Fatal("first call suppressed")
	}
	if ok, _ := rl.allow(); ok {
		t.Fatal("second call within an hour allowed")
	}
}

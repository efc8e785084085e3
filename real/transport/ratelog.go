package transport

import (
	"sync"
	"time"
)

// warnEvery is the minimum interval between two WARN lines of one kind
// (foreign, stranger or bad frames) of one transport.
const warnEvery = 10 * time.Second

// rateLog rate-limits one kind of log line: at most one line per interval,
// reporting how many occurrences were suppressed since the previous line.
// Its zero value is not usable; make one with newRateLog. It is safe for
// concurrent use.
type rateLog struct {
	every time.Duration
	now   func() time.Time // injectable for tests

	mu         sync.Mutex
	logged     bool      // a line was allowed at least once
	last       time.Time // when the last line was allowed
	suppressed uint64    // occurrences refused since last
}

func newRateLog(every time.Duration, now func() time.Time) *rateLog {
	if now == nil {
		now = time.Now
	}
	return &rateLog{every: every, now: now}
}

// allow records one occurrence. It reports whether a line may be logged for
// it now and, if so, how many occurrences were suppressed since the last
// logged line (the count then starts over).
func (r *rateLog) allow() (ok bool, suppressed uint64) {
	now := r.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.logged && now.Sub(r.last) < r.every {
		r.suppressed++
		return false, 0
	}
	r.logged = true
	r.last = now
	suppressed, r.suppressed = r.suppressed, 0
	return true, suppressed
}

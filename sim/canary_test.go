package sim

import (
	"testing"

	"github.com/paxoskit/paxos/core"
)

// TestCanaries proves the checkers have teeth: each deliberately broken
// protocol variant must fail a sweep within a bounded number of seeds.
func TestCanaries(t *testing.T) {
	const budget = 200
	for _, tc := range []struct {
		name   string
		canary core.Canary
	}{
		{"acceptor ignores its promise", core.CanaryIgnorePromise},
		{"leader does not adopt accepted values", core.CanaryNoAdopt},
		{"replies leave before their records are synced", core.CanaryEarlyReply},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for seed := uint64(1); seed <= budget; seed++ {
				opts := Derive(seed, 0, 0)
				opts.Canary = tc.canary
				if res := Run(opts, nil); res.Err != nil {
					t.Logf("caught at seed %d: %v", seed, firstLine(res.Err.Error()))
					return
				}
			}
			t.Fatalf("no seed in 1..%d caught the canary", budget)
		})
	}
}

func firstLine(s string) string {
	for i := range len(s) {
		if s[i] == '\n' {
			return s[:i]
		}
	}
	return s
}

package sim

import (
	"errors"
	"testing"

	"github.com/paxoskit/paxos/core"
)

// TestCanaries proves the checkers have teeth: each deliberately broken
// variant must be caught by the checker aimed at it within a bounded
// number of seeds. (`paxossim sweep --seeds 1000 --canary N` counts how
// many of 1,000 seeds catch each; the README lists the counts.)
func TestCanaries(t *testing.T) {
	for _, tc := range []struct {
		name   string
		canary core.Canary
		check  string // the checker that must catch it
		budget uint64
	}{
		{"acceptor ignores its promise", core.CanaryIgnorePromise, "promise", 100},
		{"leader does not adopt accepted values", core.CanaryNoAdopt, "phase1", 30},
		{"replies leave before their records are synced", core.CanaryEarlyReply, "durable-quorum", 30},
		{"leader counts its own vote before it is durable", core.CanaryEarlySelfVote, "durable-quorum", 30},
		{"prepare leaves before the proposer's promise is durable", core.CanaryEarlyPrepare, "ballot", 300},
		{"a value needs every vote", core.CanaryQuorumAll, "liveness", 60},
		{"leader takes forwards of an earlier ballot", core.CanaryStaleForward, "validity", 300},
		{"runtime ignores storage errors", core.CanaryIgnoreStorageError, "storage", 30},
		{"storage hands out corrupt records", core.CanaryUseCorrupt, "corruption", 30},
		{"runtime skips the identity check", core.CanaryNoIdentityCheck, "identity", 30},
		{"cleaner deletes past the checkpoint", core.CanaryCleanPastCheckpoint, "restore", 60},
		{"checkpoint claims an instance more than it holds", core.CanaryCheckpointAhead, "state", 60},
		{"install is not atomic", core.CanaryNonAtomicInstall, "restore", 400},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			others := map[string]int{}
			for seed := uint64(1); seed <= tc.budget; seed++ {
				opts := Derive(seed, 0, 0)
				opts.Canary = tc.canary
				res := Run(opts, nil)
				var v *Violation
				if errors.As(res.Err, &v) {
					if v.Check == tc.check {
						t.Logf("caught by %s at seed %d: %v", v.Check, seed, firstLine(v.Error()))
						return
					}
					others[v.Check]++
				}
			}
			t.Fatalf("no seed in 1..%d was caught by the %s checker (caught by others: %v)", tc.budget, tc.check, others)
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

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
		{"a value needs every vote", core.CanaryQuorumAll, "master", 30},
		{"leader takes forwards of an earlier ballot", core.CanaryStaleForward, "validity", 300},
		{"runtime ignores storage errors", core.CanaryIgnoreStorageError, "storage", 30},
		{"storage hands out corrupt records", core.CanaryUseCorrupt, "corruption", 30},
		{"runtime skips the identity check", core.CanaryNoIdentityCheck, "identity", 30},
		{"cleaner deletes past the checkpoint", core.CanaryCleanPastCheckpoint, "restore", 60},
		{"checkpoint claims an instance more than it holds", core.CanaryCheckpointAhead, "state", 60},
		{"install is not atomic", core.CanaryNonAtomicInstall, "restore", 400},
		{"master's lease has no clock drift margin", core.CanaryLeaseNoDrift, "lease-bound", 30},
		{"read index answered without a majority round", core.CanaryReadIndexNoRound, "read-round", 30},
		{"master keeps its lease after losing its quorum", core.CanaryLeaseAfterQuorumLoss, "lease-bound", 30},
		{"values sent to a replaced master still execute", core.CanaryNoFence, "state", 150},
		{"a configuration governs at once, not ConfigDelay later", core.CanaryConfImmediate, "lease-bound", 60},
		{"a leader counts the votes of non-voters", core.CanaryCountRemoved, "durable-quorum", 60},
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

// TestLeaseCanariesEndToEnd shows the lease checker, which compares the
// nodes' beliefs with true time, catches the lease canaries by itself:
// here the direct checkers (lease-bound, read-round) that catch them first
// are off. A lease without its drift margin overlaps the next one only
// when the old master is cut off alive, its clock is slow and the
// others' fast, and the next master is quick: about 1% of seeds.
func TestLeaseCanariesEndToEnd(t *testing.T) {
	for _, tc := range []struct {
		name   string
		canary core.Canary
		budget uint64
	}{
		{"master's lease has no clock drift margin", core.CanaryLeaseNoDrift, 500},
		{"master keeps its lease after losing its quorum", core.CanaryLeaseAfterQuorumLoss, 30},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			others := map[string]int{}
			for seed := uint64(1); seed <= tc.budget; seed++ {
				opts := Derive(seed, 0, 0)
				opts.Canary, opts.endToEnd = tc.canary, true
				res := Run(opts, nil)
				var v *Violation
				if errors.As(res.Err, &v) {
					if v.Check == "lease" {
						t.Logf("caught by %s at seed %d: %v", v.Check, seed, firstLine(v.Error()))
						return
					}
					others[v.Check]++
				}
			}
			t.Fatalf("no seed in 1..%d was caught by the lease checker (caught by others: %v)", tc.budget, others)
		})
	}
}

// TestDriftBeyondBoundCaught breaks the lease's one assumption: the clocks
// drift by up to 30% while the nodes are told 0.1%. The lease checker (or
// porcupine, for a stale lease read) must notice within a bounded number
// of seeds.
func TestDriftBeyondBoundCaught(t *testing.T) {
	t.Parallel()
	const budget = 100
	others := map[string]int{}
	for seed := uint64(1); seed <= budget; seed++ {
		opts := Derive(seed, 0, 0)
		opts.ClockDrift, opts.DriftBeyondBound = 0.001, 0.3
		res := Run(opts, nil)
		var v *Violation
		if errors.As(res.Err, &v) {
			if v.Check == "lease" || v.Check == "linearizability" {
				t.Logf("caught by %s at seed %d: %v", v.Check, seed, firstLine(v.Error()))
				return
			}
			others[v.Check]++
		}
	}
	t.Fatalf("no seed in 1..%d was caught by the lease or linearizability checker (caught by others: %v)", budget, others)
}

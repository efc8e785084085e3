package sim

import "testing"

// regressions are seeds that once found a real bug, with what they found.
// They run on every test, with the options they were found with.
var regressions = []struct {
	seed  uint64
	nodes int
	found string
}{
	{2, 0, "a duplicated FORWARD made the leader propose one value in two instances"},
	{776, 0, "a FORWARD delayed past the leader's restart was proposed again after it was chosen"},
	{1430, 3, "the simulator itself: a node closed just before healing was left down (heal skipped it)"},
	{408, 0, "a value bound to an instance by a leader deposed by a rejoining node (whose phase-1 quorum missed that instance) stayed undecided while the cluster was idle"},
	{986, 0, "the same stuck bound value, after a minority rejoined as the clients stopped"},
	{6327, 3, "a late answer to a read index request of an earlier incarnation confirmed a read of the restarted node (read ids now carry the boot)"},
	{638, 5, "a checkpoint whose data frame kind was flipped to end frame (D to E) was refused with the state machine's error, not ErrBadCheckpoint"},
	{202, 3, "a proposal given up after a master change and sent again came back from a deposed leader's queue, was stamped with a new fence and executed twice"},
	{7262, 3, "membership: candidates refused to lead over instances accepted past ConfigDelay beyond their chosen prefix, which only phase 1 could get chosen (a leader that knew more crashed): such values are now proposed as the prefix advances"},
	{132, 5, "membership: a node re-added after its removal dropped the checkpoint chunks of a member it knew only from an older configuration (transfers checked the active members, core the known ones): it never caught up"},
	{794, 3, "a read index request retried while the first copy was pending got a second answer from the first copy's round, older than the retry (pending requests are now deduplicated)"},
}

func TestSimRegressions(t *testing.T) {
	for _, rg := range regressions {
		opts := Derive(rg.seed, rg.nodes, 0)
		if res := Run(opts, nil); res.Err != nil {
			t.Errorf("seed %d (once: %s) fails again: %v", rg.seed, rg.found, res.Err)
		}
	}
}

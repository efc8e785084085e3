package core_test

import (
	"testing"

	"pgregory.net/rapid"
)

func TestZZStats(t *testing.T) {
	var prep, prom, q, runs, actions, maxInst, chosen, sumInst, execs, bagMax int
	hist := map[string]int{}
	rapid.Check(t, func(rt *rapid.T) {
		c := drawCluster(rt)
		c.randomPhase(rt, 50, 300)
		runs++
		for _, nd := range c.nodes {
			execs += int(nd.nextExec - 1)
		}
		for _, nd := range c.nodes {
			prep += int(nd.core.Stats.Prepares)
			prom += int(nd.core.Stats.Promotions)
			q += nd.core.Pending()
		}
		chosen += len(c.chosen)
		m := 0
		for i := range c.chosen {
			m = max(m, int(i))
		}
		sumInst += m
		maxInst = max(maxInst, m)
		bagMax = max(bagMax, len(c.bag))
		hist[map[bool]string{true: "some", false: "none"}[len(c.chosen) > 0]]++
		actions += c.actions
	})
	t.Logf("prep %d prom %d pending %d actions %d runs %d chosen %d avgMaxInst %.1f maxInst %d execs %d bagMax %d hist %v", prep, prom, q, actions, runs, chosen, float64(sumInst)/float64(runs), maxInst, execs, bagMax, hist)
}

package core_test

import (
	"testing"

	"pgregory.net/rapid"
)

func TestZZHist(t *testing.T) {
	h := map[string]int{}
	nh := map[int]int{}
	rapid.Check(t, func(rt *rapid.T) {
		for range 100 {
			h[rapid.SampledFrom(propActions).Draw(rt, "a")]++
			nh[rapid.IntRange(0, 2).Draw(rt, "n")]++
		}
	})
	t.Log(h, nh)
}

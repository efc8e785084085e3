package core_test

import (
	"fmt"
	"testing"

	"pgregory.net/rapid"
)

func TestZZTrace(t *testing.T) {
	n := 0
	rapid.Check(t, func(rt *rapid.T) {
		n++
		if n == 9 {
			propTrace = func(c *propCluster, a string) {
				s := ""
				for _, nd := range c.nodes {
					s += fmt.Sprintf(" [n%d L%d q%d cu%d p%d pr%v]", nd.id, nd.core.Leader(), nd.core.Pending(), nd.core.ChosenUpto(), nd.core.Stats.Prepares, nd.pending != nil)
				}
				t.Logf("bag %2d%s -> %s", len(c.bag), s, a)
			}
		} else {
			propTrace = nil
		}
		c := drawCluster(rt)
		c.randomPhase(rt, 50, 300)
	})
}

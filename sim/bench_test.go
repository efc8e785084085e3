package sim

import (
	"testing"
	"time"
)

// BenchmarkSeed measures whole simulated runs of one default seed: seeds per
// second and simulated seconds per wall second.
func BenchmarkSeed(b *testing.B) {
	opts := Derive(1, 3, 1)
	var sim time.Duration
	start := time.Now()
	for b.Loop() {
		res := Run(opts, nil)
		if res.Err != nil {
			b.Fatal(res.Err)
		}
		sim += res.Stats.SimTime
	}
	wall := time.Since(start)
	b.ReportMetric(float64(b.N)/wall.Seconds(), "seeds/s")
	b.ReportMetric(sim.Seconds()/wall.Seconds(), "sim-s/wall-s")
}

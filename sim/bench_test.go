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

// BenchmarkSweep measures the first 100 seeds with drawn options, what a
// sweep runs: seeds per second and simulated seconds per wall second.
func BenchmarkSweep(b *testing.B) {
	var sim time.Duration
	start := time.Now()
	n := 0
	for b.Loop() {
		for seed := uint64(1); seed <= 100; seed++ {
			res := Run(Derive(seed, 0, 0), nil)
			if res.Err != nil {
				b.Fatalf("seed %d: %v", seed, res.Err)
			}
			sim += res.Stats.SimTime
			n++
		}
	}
	wall := time.Since(start)
	b.ReportMetric(float64(n)/wall.Seconds(), "seeds/s")
	b.ReportMetric(sim.Seconds()/wall.Seconds(), "sim-s/wall-s")
}

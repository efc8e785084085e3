// Command paxossim runs the deterministic simulator: sweep many seeds in
// parallel, or replay one seed with its full event trace.
//
//	paxossim sweep --seeds 10000 [--start 1] [--nodes 3|5] [--groups G] [--canary N] [--drift-beyond F]
//	paxossim replay --seed 42 [--nodes K] [--groups G] [--canary N] [--drift-beyond F] [--trace] [--html out.html]
//
// --drift-beyond F lets the clocks drift by up to F while the nodes are
// told 0.001: the lease checker must catch it (tests of the checkers only).
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/paxoskit/paxos/core"
	"github.com/paxoskit/paxos/sim"
)

func main() {
	tuneGC()
	if len(os.Args) < 2 {
		usage()
	}
	var code int
	switch os.Args[1] {
	case "sweep":
		code = sweep(os.Args[2:], os.Stdout, os.Stderr)
	case "replay":
		code = replay(os.Args[2:], os.Stdout)
	default:
		usage()
	}
	os.Exit(code)
}

// tuneGC trades memory for speed: a run allocates a lot and keeps little,
// so collecting at 800% heap growth instead of 100% makes sweeps about a
// third faster on this project's 2-core machine. A memory limit keeps long
// runs in check, and GOGC in the environment still wins.
func tuneGC() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(800)
		debug.SetMemoryLimit(4 << 30)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: paxossim sweep --seeds N [--start S] [--nodes 3|5] [--groups G] [--workers W] [--canary N] [--drift-beyond F]")
	fmt.Fprintln(os.Stderr, "       paxossim replay --seed S [--nodes K] [--groups G] [--canary N] [--drift-beyond F] [--trace] [--html FILE]")
	os.Exit(2)
}

type common struct {
	nodes, groups, canary int
	driftBeyond           float64
}

func (c *common) register(fs *flag.FlagSet) {
	fs.IntVar(&c.nodes, "nodes", 0, "cluster size (3 or 5); 0 draws it from the seed")
	fs.IntVar(&c.groups, "groups", 0, "Paxos groups per node; 0 draws 1 or 2 from the seed")
	fs.IntVar(&c.canary, "canary", 0, "switch on a deliberately broken protocol variant (tests only)")
	fs.Float64Var(&c.driftBeyond, "drift-beyond", 0, "clocks drift by up to this much while nodes are told 0.001 (tests only: the lease checker must catch it)")
}

// check refuses flag values a run cannot use.
func (c *common) check() error {
	switch {
	case c.nodes != 0 && (c.nodes < 1 || c.nodes > 9):
		return fmt.Errorf("--nodes %d: want 1 to 9 (or 0 to draw 3 or 5)", c.nodes)
	case c.groups < 0 || c.groups > 64:
		return fmt.Errorf("--groups %d: want 1 to 64 (or 0 to draw 1 or 2)", c.groups)
	case c.canary < 0 || c.canary > int(core.CanaryLast):
		return fmt.Errorf("--canary %d: want 0 to %d", c.canary, core.CanaryLast)
	case c.driftBeyond < 0 || c.driftBeyond >= 1:
		return fmt.Errorf("--drift-beyond %v: want 0 to below 1", c.driftBeyond)
	}
	return nil
}

func (c *common) options(seed uint64) sim.Options {
	o := sim.Derive(seed, c.nodes, c.groups)
	o.Canary = core.Canary(c.canary)
	if c.driftBeyond > 0 {
		o.ClockDrift, o.DriftBeyondBound = 0.001, c.driftBeyond
	}
	return o
}

func (c *common) flags() string {
	s := ""
	if c.nodes != 0 {
		s += fmt.Sprintf(" --nodes %d", c.nodes)
	}
	if c.groups != 0 {
		s += fmt.Sprintf(" --groups %d", c.groups)
	}
	if c.canary != 0 {
		s += fmt.Sprintf(" --canary %d", c.canary)
	}
	if c.driftBeyond != 0 {
		s += fmt.Sprintf(" --drift-beyond %v", c.driftBeyond)
	}
	return s
}

func sweep(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("sweep", flag.ExitOnError)
	var c common
	c.register(fs)
	seeds := fs.Int("seeds", 1000, "how many seeds to run")
	start := fs.Uint64("start", 1, "first seed")
	workers := fs.Int("workers", runtime.NumCPU(), "parallel runs")
	fs.Parse(args)
	if err := c.check(); err != nil || *seeds < 1 || *workers < 1 {
		fmt.Fprintf(stderr, "paxossim sweep: %v (--seeds and --workers must be positive)\n", err)
		return 2
	}

	type failure struct {
		seed uint64
		err  error
	}
	var (
		next    atomic.Uint64
		done    atomic.Int64
		failed  atomic.Int64
		simTime atomic.Int64
		mu      sync.Mutex
		total   sim.Stats
		fails   []failure
		wg      sync.WaitGroup
	)
	next.Store(*start)
	end := *start + uint64(*seeds)
	began := time.Now()
	for range max(*workers, 1) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				seed := next.Add(1) - 1
				if seed >= end {
					return
				}
				res := sim.Run(c.options(seed), nil)
				simTime.Add(int64(res.Stats.SimTime))
				mu.Lock()
				total.Add(res.Stats)
				if res.Err != nil {
					failed.Add(1)
					fails = append(fails, failure{seed, res.Err})
				}
				mu.Unlock()
				done.Add(1)
			}
		}()
	}
	stop := make(chan struct{})
	tty := false
	if f, ok := stderr.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			tty = true
		}
	}
	interval := 10 * time.Second // a log gets a line now and then
	if tty {
		interval = time.Second // a terminal gets a live line
	}
	go func() {
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				el := time.Since(began).Seconds()
				line := fmt.Sprintf("%d/%d seeds, %d failed, %.0f seeds/s", done.Load(), *seeds, failed.Load(), float64(done.Load())/el)
				if tty {
					fmt.Fprintf(stderr, "\r%s   ", line)
				} else {
					fmt.Fprintln(stderr, line)
				}
			}
		}
	}()
	wg.Wait()
	close(stop)
	el := time.Since(began)
	if tty {
		fmt.Fprintf(stderr, "\r%60s\r", "")
	}
	byCheck := map[string]int{}
	for _, f := range fails {
		fmt.Fprintf(stdout, "FAIL seed %d: %v\n  replay: go run ./cmd/paxossim replay --seed %d%s --trace\n", f.seed, firstLine(f.err.Error()), f.seed, c.flags())
		check := "other"
		var v *sim.Violation
		if errors.As(f.err, &v) {
			check = v.Check
		}
		byCheck[check]++
	}
	if len(byCheck) > 0 {
		fmt.Fprint(stdout, "failures by check:")
		for _, k := range slices.Sorted(maps.Keys(byCheck)) {
			fmt.Fprintf(stdout, " %s=%d", k, byCheck[k])
		}
		fmt.Fprintln(stdout)
	}
	fmt.Fprintf(stdout, "%.1f seeds/s, %.0fx simulated time per wall time (%d workers, %v)\n",
		float64(*seeds)/el.Seconds(), float64(simTime.Load())/float64(el), *workers, el.Round(time.Millisecond))
	fmt.Fprintf(stdout, "totals: %s\n", total)
	fmt.Fprintf(stdout, "%d passed, %d failed\n", *seeds-int(failed.Load()), failed.Load())
	if failed.Load() > 0 {
		return 1
	}
	return 0
}

func replay(args []string, stdout io.Writer) int {
	fs := flag.NewFlagSet("replay", flag.ExitOnError)
	var c common
	c.register(fs)
	seed := fs.Uint64("seed", 0, "seed to replay")
	trace := fs.Bool("trace", false, "print every event")
	html := fs.String("html", "", "write the porcupine visualization of the history to this file")
	fs.Parse(args)
	if *seed == 0 {
		usage()
	}
	if err := c.check(); err != nil {
		fmt.Fprintf(os.Stderr, "paxossim replay: %v\n", err)
		return 2
	}
	out := bufio.NewWriter(stdout)
	defer out.Flush()
	opts := c.options(*seed)
	fmt.Fprintf(out, "options: %s\n", opts)
	var tw io.Writer
	if *trace {
		tw = out
	}
	res := sim.Run(opts, tw)
	fmt.Fprintf(out, "stats: %s\n", res.Stats)
	if *html != "" {
		if err := res.WriteHTML(*html); err != nil {
			fmt.Fprintf(out, "html: %v\n", err)
		} else {
			fmt.Fprintf(out, "history visualization written to %s\n", *html)
		}
	}
	if res.Err != nil {
		fmt.Fprintf(out, "FAIL seed %d: %v\n", *seed, res.Err)
		return 1
	}
	fmt.Fprintf(out, "PASS seed %d\n", *seed)
	return 0
}

func firstLine(s string) string {
	for i := range len(s) {
		if s[i] == '\n' {
			return s[:i]
		}
	}
	return s
}

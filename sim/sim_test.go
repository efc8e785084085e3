package sim

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

var (
	flagSeed  = flag.Uint64("seed", 0, "run only this seed")
	flagSeeds = flag.Int("seeds", 300, "number of seeds in the sweep")
	flagStart = flag.Uint64("start", 1, "first seed of the sweep")
	flagNodes = flag.Int("nodes", 0, "cluster size, 0 draws 3 or 5 per seed")
	flagTrace = flag.Bool("simtrace", false, "print the event trace of -seed")
)

func runSeed(t *testing.T, seed uint64) *Result {
	t.Helper()
	var trace *bytes.Buffer
	if *flagTrace {
		trace = &bytes.Buffer{}
	}
	opts := Derive(seed, *flagNodes, 0)
	var res *Result
	if trace != nil {
		res = Run(opts, trace)
		os.Stdout.Write(trace.Bytes())
	} else {
		res = Run(opts, nil)
	}
	if res.Err != nil {
		html := filepath.Join(os.TempDir(), fmt.Sprintf("paxossim-%d.html", seed))
		if err := res.WriteHTML(html); err == nil {
			t.Logf("history visualization: %s", html)
		}
		t.Errorf("seed %d failed: %v\noptions: %s\nreplay: go run ./cmd/paxossim replay --seed %d --nodes %d --trace",
			seed, res.Err, opts, seed, opts.Nodes)
	}
	return res
}

// TestSim sweeps seeds (or runs -seed) and checks every invariant of each run.
func TestSim(t *testing.T) {
	if *flagSeed != 0 {
		runSeed(t, *flagSeed)
		return
	}
	n := *flagSeeds
	if testing.Short() {
		n = min(n, 30)
	}
	var total Stats
	for s := *flagStart; s < *flagStart+uint64(n); s++ {
		res := runSeed(t, s)
		total.Add(res.Stats)
		if t.Failed() {
			return
		}
	}
	t.Logf("%d seeds: %s", n, total.String())
	if total.Commits == 0 || total.OpsOK == 0 {
		t.Fatalf("sweep committed nothing: %+v", total)
	}
}

// TestDeterminism runs seeds twice with full traces: the traces must match
// byte for byte, and must differ between seeds.
func TestDeterminism(t *testing.T) {
	var first []byte
	for _, seed := range []uint64{3, 11, 29} {
		opts := Derive(seed, 0, 0)
		var a, b bytes.Buffer
		ra, rb := Run(opts, &a), Run(opts, &b)
		if a.Len() < 1000 {
			t.Fatalf("seed %d: trace of %d bytes is too short to mean anything", seed, a.Len())
		}
		if !bytes.Equal(a.Bytes(), b.Bytes()) {
			t.Fatalf("seed %d: two runs traced differently (%d vs %d bytes)", seed, a.Len(), b.Len())
		}
		if ra.Stats != rb.Stats {
			t.Fatalf("seed %d: stats differ: %+v vs %+v", seed, ra.Stats, rb.Stats)
		}
		if first != nil && bytes.Equal(first, a.Bytes()) {
			t.Fatalf("seed %d traced exactly like another seed", seed)
		}
		first = a.Bytes()
	}
}

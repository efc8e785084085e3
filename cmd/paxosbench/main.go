// Command paxosbench measures paxoskit on real TCP and goleveldb: three
// nodes in one process on loopback, fsync on, fresh data directories; C
// client goroutines each propose S-byte values on node 1 in a closed loop.
//
//	paxosbench --clients 100 --size 100 --duration 10s
//	paxosbench --clients 16 --reads 0.9 --read-mode lease   # 90% linearizable reads
//
// With --reads F each operation is, with probability F, a linearizable
// read (Node.Read with a nil function: the read is confirmed, nothing is
// looked up) instead of a proposal. --read-node chooses where reads go:
// "master" (default) the group's master when the run starts, the one node
// where --read-mode lease succeeds; "same" the node the client writes
// through, node 1; "random" a node drawn per read. A lease read off the
// master fails with ErrNotMaster, counted as an error.
//
// It prints one RESULT line, the same shape as for the peer libraries;
// with --reads above 0 it adds the reads' and the writes' throughput and
// latencies, each on its own.
package main

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/paxoskit/paxos"
	"github.com/paxoskit/paxos/real"
)

// sink is a state machine that only counts.
type sink struct{ n atomic.Uint64 }

func (s *sink) SMID() uint32 { return 1 }
func (s *sink) Execute(group, instance uint64, value []byte, ctx any) (any, error) {
	s.n.Add(1)
	return nil, nil
}

func main() {
	clients := flag.Int("clients", 16, "concurrent proposers on node 1")
	size := flag.Int("size", 100, "value size in bytes")
	duration := flag.Duration("duration", 10*time.Second, "measured time")
	warmup := flag.Duration("warmup", 2*time.Second, "unmeasured time before")
	groups := flag.Int("groups", 1, "Paxos groups; client i proposes to group i mod groups")
	batch := flag.Bool("batch", false, "use BatchPropose")
	window := flag.Int("window", 0, "instances in flight per group (0: library default)")
	nosync := flag.Bool("nosync", false, "skip fsync (not comparable with the published numbers)")
	dir := flag.String("dir", "", "data directory (default: a fresh temporary one)")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of the measured time to this file")
	procs := flag.Int("procs", 0, "GOMAXPROCS (0: Go's default, one per core)")
	reads := flag.Float64("reads", 0, "fraction (0..1) of operations that are linearizable reads instead of proposals")
	readMode := flag.String("read-mode", "auto", "how reads are confirmed: auto, lease or index")
	readNode := flag.String("read-node", "master", `where reads go: "master" (the group's master when the run starts), "same" (node 1, where the client writes) or "random" (any node, per read)`)
	flag.Parse()
	mode, ok := readModes[*readMode]
	switch {
	case flag.NArg() > 0:
		usageError("unexpected argument %q", flag.Arg(0))
	case !(*reads >= 0 && *reads <= 1):
		usageError("--reads must be between 0 and 1, got %v", *reads)
	case !ok:
		usageError("--read-mode must be auto, lease or index, got %q", *readMode)
	case *readNode != "same" && *readNode != "master" && *readNode != "random":
		usageError(`--read-node must be "same", "master" or "random", got %q`, *readNode)
	case *clients < 1 || *size < 0 || *groups < 1 || *duration <= 0 || *warmup < 0:
		usageError("--clients and --groups must be at least 1, --size and --warmup not negative, --duration positive")
	}
	if *procs > 0 {
		// Three nodes' fsyncs block threads that hold Go's Ps; more Ps
		// than cores keep the loops running meanwhile.
		runtime.GOMAXPROCS(*procs)
	}
	profile = *cpuprofile
	w := workload{reads: *reads, mode: mode, readNode: *readNode}
	if err := run(*clients, *size, *duration, *warmup, *groups, *batch, *window, *nosync, *dir, w); err != nil {
		fmt.Fprintln(os.Stderr, "paxosbench:", err)
		os.Exit(1)
	}
}

// usageError prints a flag mistake and exits 2, as the flag package does.
func usageError(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "paxosbench: "+format+"\n", args...)
	flag.Usage()
	os.Exit(2)
}

// readModes maps --read-mode to the library's modes.
var readModes = map[string]paxos.ReadMode{"auto": paxos.ReadAuto, "lease": paxos.ReadLease, "index": paxos.ReadIndex}

// workload is the read side of a run.
type workload struct {
	reads    float64 // fraction of operations that are reads
	mode     paxos.ReadMode
	readNode string // same, master or random
}

// stat is one operation kind's results over the measured time.
type stat struct {
	lat  []time.Duration
	errs uint64
}

func (st *stat) pct(p float64) time.Duration {
	if len(st.lat) == 0 {
		return 0
	}
	return st.lat[min(len(st.lat)-1, int(p*float64(len(st.lat))))]
}

func run(clients, size int, duration, warmup time.Duration, groups int, batch bool, window int, nosync bool, dir string, wl workload) error {
	if dir == "" {
		d, err := os.MkdirTemp("", "paxosbench-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		dir = d
	}
	peers := map[uint64]string{}
	for id := uint64(1); id <= 3; id++ {
		peers[id] = fmt.Sprintf("127.0.0.1:%d", 17000+int(id)+os.Getpid()%1000*3)
	}
	var nodes []*paxos.Node
	defer func() {
		for _, n := range nodes {
			n.Close()
		}
	}()
	for id := uint64(1); id <= 3; id++ {
		n, err := real.RunNode(paxos.Options{
			MyNode: id, ClusterID: 0xbe7c, Groups: groups, Window: window,
			StateMachines: []paxos.StateMachine{&sink{}}, MaxValueSize: size + 1024,
		}, real.Config{Peers: peers, DataDir: fmt.Sprintf("%s/node%d", dir, id), NoSync: nosync})
		if err != nil {
			return err
		}
		nodes = append(nodes, n)
	}
	leader := nodes[0]
	// Reads need a master (a lease, or one to confirm a read index with).
	masters := make([]*paxos.Node, groups)
	deadline := time.Now().Add(10 * time.Second)
	for g := range uint64(groups) {
		for masters[g] == nil {
			for _, n := range nodes {
				if n.IsMaster(g) {
					masters[g] = n
				}
			}
			if masters[g] == nil {
				if time.Now().After(deadline) {
					return fmt.Errorf("group %d has no master after 10 s", g)
				}
				time.Sleep(10 * time.Millisecond)
			}
		}
	}
	value := make([]byte, size)
	for i := range value {
		value[i] = byte('a' + i%26)
	}
	var (
		measuring atomic.Bool
		stop      atomic.Bool
		mu        sync.Mutex
		lat       []time.Duration // every operation
		rd, wr    stat            // reads, writes
		errs      atomic.Uint64
		readErr   atomic.Value // the last read error, for the report
		wg        sync.WaitGroup
	)
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			g := uint64(c % groups)
			rng := rand.New(rand.NewPCG(uint64(c), 0xbe7c))
			var mine, reads, writes []time.Duration
			var readErrs, writeErrs uint64
			for !stop.Load() {
				isRead := wl.reads > 0 && rng.Float64() < wl.reads
				t0 := time.Now()
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				var err error
				switch {
				case isRead:
					n := leader
					switch wl.readNode {
					case "master":
						n = masters[g]
					case "random":
						n = nodes[rng.IntN(len(nodes))]
					}
					_, err = n.Read(ctx, g, wl.mode, nil)
				case batch:
					_, err = leader.BatchPropose(ctx, g, value, nil)
				default:
					_, err = leader.Propose(ctx, g, value, nil)
				}
				cancel()
				d := time.Since(t0)
				if err != nil {
					errs.Add(1)
					if isRead {
						readErr.Store(err.Error())
					}
					if measuring.Load() {
						if isRead {
							readErrs++
						} else {
							writeErrs++
						}
					}
					continue
				}
				if measuring.Load() {
					mine = append(mine, d)
					if isRead {
						reads = append(reads, d)
					} else {
						writes = append(writes, d)
					}
				}
			}
			mu.Lock()
			lat = append(lat, mine...)
			rd.lat, rd.errs = append(rd.lat, reads...), rd.errs+readErrs
			wr.lat, wr.errs = append(wr.lat, writes...), wr.errs+writeErrs
			mu.Unlock()
		}()
	}
	time.Sleep(warmup)
	if profile != "" {
		f, err := os.Create(profile)
		if err != nil {
			return err
		}
		defer f.Close()
		pprof.StartCPUProfile(f)
	}
	fsync0 := fsyncs(nodes)
	cpu0 := cpuTime()
	t0 := time.Now()
	measuring.Store(true)
	time.Sleep(duration)
	measuring.Store(false)
	elapsed := time.Since(t0)
	if profile != "" {
		pprof.StopCPUProfile()
	}
	cpu := cpuTime() - cpu0
	fs := fsyncs(nodes) - fsync0
	stop.Store(true)
	wg.Wait()
	if os.Getenv("PAXOSBENCH_DEBUG") != "" {
		for i, n := range nodes {
			fmt.Fprintf(os.Stderr, "node %d: %+v %+v\n", i+1, n.Stats(), must(n.Status(0)))
		}
	}

	slices.Sort(lat)
	slices.Sort(rd.lat)
	slices.Sort(wr.lat)
	pct := func(p float64) time.Duration {
		if len(lat) == 0 {
			return 0
		}
		return lat[min(len(lat)-1, int(p*float64(len(lat))))]
	}
	ops := float64(len(lat)) / elapsed.Seconds()
	mode := "propose"
	if batch {
		mode = "batch"
	}
	// ops/s and the latencies cover every operation, MB/s the values
	// written.
	fmt.Printf("RESULT lib=paxoskit clients=%d size=%d groups=%d ops/s=%.0f MB/s=%.2f p50=%v p99=%v p99.9=%v cpu=%.2fcores fsyncs/s=%.0f mode=%s procs=%d errors=%d\n",
		clients, size, groups, ops, float64(len(wr.lat))/elapsed.Seconds()*float64(size)/1e6, pct(0.50).Round(time.Microsecond),
		pct(0.99).Round(time.Microsecond), pct(0.999).Round(time.Microsecond),
		cpu.Seconds()/elapsed.Seconds(), float64(fs)/elapsed.Seconds(), mode, runtime.GOMAXPROCS(0), errs.Load())
	if wl.reads > 0 {
		var ms []string
		for g, m := range masters {
			ms = append(ms, fmt.Sprintf("%d:%d", g, m.MyNodeID()))
		}
		r := func(st *stat) string {
			return fmt.Sprintf("ops/s=%.0f p50=%v p99=%v p99.9=%v errors=%d", float64(len(st.lat))/elapsed.Seconds(),
				st.pct(0.50).Round(time.Microsecond), st.pct(0.99).Round(time.Microsecond), st.pct(0.999).Round(time.Microsecond), st.errs)
		}
		fmt.Printf("RESULT reads=%.2f read-mode=%v read-node=%s masters(group:node)=%s\n", wl.reads, wl.mode, wl.readNode, strings.Join(ms, ","))
		fmt.Printf("RESULT   reads  %s\n", r(&rd))
		fmt.Printf("RESULT   writes %s\n", r(&wr))
		var lease, index uint64
		for _, n := range nodes {
			st := n.Stats()
			lease, index = lease+st.LeaseReads, index+st.IndexReads
		}
		fmt.Printf("RESULT   reads served by lease %d, by read index %d (all nodes, warmup included)\n", lease, index)
		if e, ok := readErr.Load().(string); ok {
			fmt.Printf("RESULT   last read error: %s\n", e)
		}
	}
	return nil
}

var profile string

func fsyncs(nodes []*paxos.Node) uint64 {
	var s uint64
	for _, n := range nodes {
		s += n.Stats().Env.Fsyncs
	}
	return s
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

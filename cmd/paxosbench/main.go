// Command paxosbench measures paxoskit on real TCP and goleveldb: three
// nodes in one process on loopback, fsync on, fresh data directories; C
// client goroutines each propose S-byte values on node 1 in a closed loop.
//
//	paxosbench --clients 100 --size 100 --duration 10s
//
// It prints one RESULT line, the same shape as for the peer libraries.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
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
	flag.Parse()
	if *procs > 0 {
		// Three nodes' fsyncs block threads that hold Go's Ps; more Ps
		// than cores keep the loops running meanwhile.
		runtime.GOMAXPROCS(*procs)
	}
	profile = *cpuprofile
	if err := run(*clients, *size, *duration, *warmup, *groups, *batch, *window, *nosync, *dir); err != nil {
		fmt.Fprintln(os.Stderr, "paxosbench:", err)
		os.Exit(1)
	}
}

func run(clients, size int, duration, warmup time.Duration, groups int, batch bool, window int, nosync bool, dir string) error {
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
	value := make([]byte, size)
	for i := range value {
		value[i] = byte('a' + i%26)
	}
	var (
		measuring atomic.Bool
		stop      atomic.Bool
		mu        sync.Mutex
		lat       []time.Duration
		errs      atomic.Uint64
		wg        sync.WaitGroup
	)
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			g := uint64(c % groups)
			var mine []time.Duration
			for !stop.Load() {
				t0 := time.Now()
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				var err error
				if batch {
					_, err = leader.BatchPropose(ctx, g, value, nil)
				} else {
					_, err = leader.Propose(ctx, g, value, nil)
				}
				cancel()
				if err != nil {
					errs.Add(1)
					continue
				}
				if measuring.Load() {
					mine = append(mine, time.Since(t0))
				}
			}
			mu.Lock()
			lat = append(lat, mine...)
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
	fmt.Printf("RESULT lib=paxoskit clients=%d size=%d groups=%d ops/s=%.0f MB/s=%.2f p50=%v p99=%v p99.9=%v cpu=%.2fcores fsyncs/s=%.0f mode=%s procs=%d errors=%d\n",
		clients, size, groups, ops, ops*float64(size)/1e6, pct(0.50).Round(time.Microsecond),
		pct(0.99).Round(time.Microsecond), pct(0.999).Round(time.Microsecond),
		cpu.Seconds()/elapsed.Seconds(), float64(fs)/elapsed.Seconds(), mode, runtime.GOMAXPROCS(0), errs.Load())
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

// Command hashicorp runs paxosbench's workload on hashicorp/raft (v1.8.0
// with raft-boltdb, default config), so the two can be measured side by side
// on one machine at one time: three nodes in one process on loopback TCP,
// fsync on, C goroutines calling Apply on the leader in a closed loop. It is
// a module of its own so paxoskit does not depend on raft.
//
//	cd cmd/paxosbench/hashicorp && go run . --clients 100 --size 100
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb"
)

type fsm struct{}

func (fsm) Apply(*raft.Log) any                 { return nil }
func (fsm) Snapshot() (raft.FSMSnapshot, error) { return nil, fmt.Errorf("no snapshots") }
func (fsm) Restore(io.ReadCloser) error         { return nil }

func main() {
	clients := flag.Int("clients", 1, "")
	size := flag.Int("size", 100, "")
	dur := flag.Duration("duration", 5*time.Second, "")
	flag.Parse()
	dir, _ := os.MkdirTemp("", "hraft")
	defer os.RemoveAll(dir)
	var rafts []*raft.Raft
	var servers []raft.Server
	var trans []*raft.NetworkTransport
	for i := 0; i < 3; i++ {
		t, err := raft.NewTCPTransport("127.0.0.1:0", nil, 3, 10*time.Second, io.Discard)
		if err != nil {
			panic(err)
		}
		trans = append(trans, t)
		servers = append(servers, raft.Server{ID: raft.ServerID(fmt.Sprint(i)), Address: t.LocalAddr()})
	}
	for i := 0; i < 3; i++ {
		c := raft.DefaultConfig()
		c.LocalID = raft.ServerID(fmt.Sprint(i))
		c.LogOutput = io.Discard
		store, err := raftboltdb.NewBoltStore(fmt.Sprintf("%s/%d.db", dir, i))
		if err != nil {
			panic(err)
		}
		snaps := raft.NewInmemSnapshotStore()
		r, err := raft.NewRaft(c, fsm{}, store, store, snaps, trans[i])
		if err != nil {
			panic(err)
		}
		if i == 0 {
			r.BootstrapCluster(raft.Configuration{Servers: servers})
		}
		rafts = append(rafts, r)
	}
	var leader *raft.Raft
	for leader == nil {
		time.Sleep(100 * time.Millisecond)
		for _, r := range rafts {
			if r.State() == raft.Leader {
				leader = r
			}
		}
	}
	val := make([]byte, *size)
	var stop, measuring atomic.Bool
	var mu sync.Mutex
	var lat []time.Duration
	var wg sync.WaitGroup
	for c := 0; c < *clients; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []time.Duration
			for !stop.Load() {
				t0 := time.Now()
				if err := leader.Apply(val, 10*time.Second).Error(); err != nil {
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
	time.Sleep(time.Second)
	measuring.Store(true)
	t0 := time.Now()
	time.Sleep(*dur)
	measuring.Store(false)
	el := time.Since(t0)
	stop.Store(true)
	wg.Wait()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	fmt.Printf("RESULT lib=hashicorp-raft clients=%d size=%d ops/s=%.0f MB/s=%.2f p50=%v\n", *clients, *size,
		float64(len(lat))/el.Seconds(), float64(len(lat)**size)/el.Seconds()/1e6, lat[len(lat)/2])
	os.Exit(0)
}

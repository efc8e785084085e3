package paxos_test

import (
	"bytes"
	"container/heap"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/paxoskit/paxos"
	"github.com/paxoskit/paxos/core"
	pb "github.com/paxoskit/paxos/core/paxospb"
	"github.com/paxoskit/paxos/env"
	"github.com/paxoskit/paxos/internal/testhooks"
)

// ---------------------------------------------------------------------------
// A minimal deterministic harness: one goroutine, virtual time, an event
// queue ordered by (time, insertion). Every node's loop, timers, network and
// disk are events in that queue.

const (
	netDelay  = time.Millisecond
	syncDelay = 2 * time.Millisecond
)

type event struct {
	at  time.Duration
	seq uint64
	f   func()
}

type eventQ []*event

func (q eventQ) Len() int { return len(q) }
func (q eventQ) Less(i, j int) bool {
	return q[i].at < q[j].at || q[i].at == q[j].at && q[i].seq < q[j].seq
}
func (q eventQ) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *eventQ) Push(x any)   { *q = append(*q, x.(*event)) }
func (q *eventQ) Pop() any {
	old := *q
	e := old[len(old)-1]
	*q = old[:len(old)-1]
	return e
}

type cluster struct {
	t     *testing.T
	mu    sync.Mutex // guards q, seq and writes of now: Post may come from another goroutine
	q     eventQ
	seq   uint64
	now   time.Duration
	rng   *rand.Rand
	ids   []uint64
	nodes map[uint64]*hnode
	drop  map[[2]uint64]bool // {from, to} links that lose every message

	groups int
	smids  []uint32               // state machines of every node, in registration order
	tweak  func(o *paxos.Options) // optional per-test options
}

// hnode is one member across incarnations; recs is its disk.
type hnode struct {
	c        *cluster
	id       uint64
	inc      uint64
	up       bool
	node     *paxos.Node
	env      *nodeEnv
	recs     [][]byte // marshaled records, append-only
	identity *pb.Identity
	durable  int      // recs[:durable] survive a crash
	sms      []*recSM // fresh per incarnation
	commits  map[uint64][]uint64
	ckpts    map[uint64]hckpt  // per group: the newest committed checkpoint
	addrs    map[uint64]string // what the runtime told its transport (env.PeerSetter)
}

type hckpt struct {
	at   uint64
	data []byte
}

func newCluster(t *testing.T, n, groups int, smids []uint32, tweak func(*paxos.Options)) *cluster {
	t.Helper()
	c := &cluster{t: t, rng: rand.New(rand.NewPCG(1, 2)), nodes: map[uint64]*hnode{},
		drop: map[[2]uint64]bool{}, groups: groups, smids: smids, tweak: tweak}
	for i := range n {
		c.ids = append(c.ids, uint64(i+1))
	}
	for _, id := range c.ids {
		c.nodes[id] = &hnode{c: c, id: id}
	}
	for _, id := range c.ids {
		c.start(id)
	}
	return c
}

func (c *cluster) after(d time.Duration, f func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seq++
	heap.Push(&c.q, &event{at: c.now + d, seq: c.seq, f: f})
}

// step runs the next event; it reports false if there is none.
func (c *cluster) step() bool {
	c.mu.Lock()
	if len(c.q) == 0 {
		c.mu.Unlock()
		return false
	}
	e := heap.Pop(&c.q).(*event)
	c.now = e.at
	c.mu.Unlock()
	e.f()
	return true
}

// run advances virtual time by d.
func (c *cluster) run(d time.Duration) {
	end := c.now + d
	for {
		c.mu.Lock()
		next := len(c.q) > 0 && c.q[0].at <= end
		c.mu.Unlock()
		if !next || !c.step() {
			break
		}
	}
	c.mu.Lock()
	c.now = end
	c.mu.Unlock()
}

// runUntil runs events until cond holds, failing after limit of virtual time.
func (c *cluster) runUntil(what string, limit time.Duration, cond func() bool) {
	c.t.Helper()
	end := c.now + limit
	for !cond() {
		if c.now > end || !c.step() {
			c.t.Fatalf("t=%v: gave up waiting for %s", c.now, what)
		}
	}
}

func (c *cluster) start(id uint64) {
	h := c.nodes[id]
	h.inc++
	h.up = true
	h.sms = nil
	var sms []paxos.StateMachine
	for _, smid := range c.smids {
		sm := &recSM{smid: smid}
		h.sms = append(h.sms, sm)
		sms = append(sms, sm)
	}
	h.commits = map[uint64][]uint64{}
	h.env = &nodeEnv{h: h, inc: h.inc}
	o := paxos.Options{MyNode: id, Nodes: c.ids, ClusterID: 1, Groups: c.groups, StateMachines: sms, Env: h.env.all()}
	testhooks.Attach(&o, testhooks.Hooks{OnCommit: func(g, i uint64, _ *pb.Value) { h.commits[g] = append(h.commits[g], i) }})
	if c.tweak != nil {
		c.tweak(&o)
	}
	n, err := paxos.RunNode(o)
	if err != nil {
		c.t.Fatalf("RunNode(%d): %v", id, err)
	}
	h.node = n
}

// crash drops the node and every record that a Sync has not covered.
func (c *cluster) crash(id uint64) {
	h := c.nodes[id]
	h.up, h.node, h.env = false, nil, nil
	h.recs = h.recs[:h.durable]
}

func (c *cluster) isolate(id uint64, cut bool) {
	for _, o := range c.ids {
		if o != id {
			c.drop[[2]uint64{id, o}] = cut
			c.drop[[2]uint64{o, id}] = cut
		}
	}
}

// nodeEnv implements env's seams for one incarnation of a node.
type nodeEnv struct {
	h      *hnode
	inc    uint64
	closed atomic.Bool
	recv   func([]byte)
}

func (e *nodeEnv) all() env.Env {
	return env.Env{Loop: e, Clock: e, Transport: e, Storage: e, Rand: e, Checkpoints: e, Worker: e, Close: func() error {
		e.closed.Store(true)
		return nil
	}}
}

// The checkpoint store: a commit is atomic and durable at once.

func (e *nodeEnv) Latest(group uint64) (uint64, error) { return e.h.ckpts[group].at, nil }

func (e *nodeEnv) Create(group, instance uint64) (env.CheckpointWriter, error) {
	return &hckptWriter{h: e.h, group: group, at: instance}, nil
}

func (e *nodeEnv) Open(group, instance uint64) (io.ReadCloser, error) {
	c := e.h.ckpts[group]
	if c.at != instance {
		return nil, fmt.Errorf("no checkpoint %d of group %d", instance, group)
	}
	return readerAtCloser{bytes.NewReader(c.data)}, nil
}

type readerAtCloser struct{ *bytes.Reader }

func (readerAtCloser) Close() error { return nil }

type hckptWriter struct {
	h         *hnode
	group, at uint64
	buf       bytes.Buffer
}

func (w *hckptWriter) Write(p []byte) (int, error) { return w.buf.Write(p) }
func (w *hckptWriter) Abort()                      {}
func (w *hckptWriter) Commit() error {
	if w.h.ckpts == nil {
		w.h.ckpts = map[uint64]hckpt{}
	}
	if w.at > w.h.ckpts[w.group].at {
		w.h.ckpts[w.group] = hckpt{w.at, w.buf.Bytes()}
	}
	return nil
}

// Go runs a job a little later on the harness's goroutine.
func (e *nodeEnv) Go(job func() error, done func(error)) {
	e.h.c.after(syncDelay, func() {
		if e.alive() {
			err := job()
			e.Post(func() { done(err) })
		}
	})
}

func (e *nodeEnv) alive() bool { return e.h.up && e.h.inc == e.inc }

func (e *nodeEnv) Post(f func()) bool {
	if e.closed.Load() {
		return false
	}
	e.h.c.after(0, func() {
		if e.alive() {
			f()
		}
	})
	return true
}

func (e *nodeEnv) Start(recv func([]byte)) { e.recv = recv }

// SetPeer records the address the runtime gave the transport.
func (e *nodeEnv) SetPeer(id uint64, addr string) {
	if e.h.addrs == nil {
		e.h.addrs = map[uint64]string{}
	}
	e.h.addrs[id] = addr
}

func (e *nodeEnv) Identity() (*pb.Identity, error) { return e.h.identity, nil }

func (e *nodeEnv) SetIdentity(id *pb.Identity) error {
	e.h.identity = id
	return nil
}

func (e *nodeEnv) Now() time.Duration { return e.h.c.now }

type timer struct{ stopped, fired bool }

func (t *timer) Stop() bool {
	was := !t.stopped && !t.fired
	t.stopped = true
	return was
}

func (e *nodeEnv) AfterFunc(d time.Duration, f func()) env.Timer {
	t := &timer{}
	e.h.c.after(d, func() {
		if !t.stopped && e.alive() {
			t.fired = true
			e.Post(f) // a fired timer's callback waits in the loop's queue
		}
	})
	return t
}

func (e *nodeEnv) Send(to uint64, msg []byte) {
	c := e.h.c
	if c.drop[[2]uint64{e.h.id, to}] {
		return
	}
	data := slices.Clone(msg)
	c.after(netDelay, func() {
		if dst := c.nodes[to]; dst != nil && dst.up && !dst.env.closed.Load() {
			dst.env.recv(data)
		}
	})
}

func (e *nodeEnv) Load(group, from uint64) ([]*pb.Record, error) {
	var all, out []*pb.Record
	mark := uint64(0)
	for _, b := range e.h.recs {
		r := &pb.Record{}
		if err := proto.Unmarshal(b, r); err != nil {
			return nil, err
		}
		if r.Group == group {
			all = append(all, r)
			mark = max(mark, r.CleanBelow)
		}
	}
	for _, r := range all {
		if r.Entry == nil || r.Entry.Instance >= max(from, mark) {
			out = append(out, r)
		}
	}
	return out, nil
}

func (e *nodeEnv) Read(group, from uint64, maxEntries, maxBytes int, done func([]*pb.Entry, error)) {
	recs, err := e.Load(group, from)
	latest := map[uint64]*pb.Entry{}
	for _, r := range recs {
		if r.Entry != nil {
			latest[r.Entry.Instance] = r.Entry
		}
	}
	var out []*pb.Entry
	for i := from; latest[i] != nil && len(out) < maxEntries; i++ {
		out = append(out, latest[i])
	}
	e.h.c.after(syncDelay, func() {
		if e.alive() {
			e.Post(func() { done(out, err) })
		}
	})
}

func (e *nodeEnv) Write(recs []*pb.Record) error {
	for _, r := range recs {
		b, err := proto.Marshal(r)
		if err != nil {
			return err
		}
		e.h.recs = append(e.h.recs, b)
	}
	return nil
}

func (e *nodeEnv) Sync(done func(error)) {
	upto := len(e.h.recs)
	e.h.c.after(syncDelay, func() {
		if e.alive() {
			e.h.durable = max(e.h.durable, upto)
			done(nil)
		}
	})
}

func (e *nodeEnv) IntN(n int) int { return e.h.c.rng.IntN(n) }

// recSM records what it executed; values starting with "fail" make it fail.
type recSM struct {
	smid  uint32
	execs []execRec
}

type execRec struct {
	group, instance uint64
	value           string
	ctx             any
}

var errRejected = errors.New("recSM: value rejected")

func (s *recSM) SMID() uint32 { return s.smid }

// Execute returns "smid:value" as the result.
func (s *recSM) Execute(group, instance uint64, value []byte, ctx any) (any, error) {
	s.execs = append(s.execs, execRec{group, instance, string(value), ctx})
	if strings.HasPrefix(string(value), "fail") {
		return nil, errRejected
	}
	return fmt.Sprintf("%d:%s", s.smid, value), nil
}

func (h *hnode) sm(smid uint32) *recSM {
	for _, s := range h.sms {
		if s.smid == smid {
			return s
		}
	}
	return nil
}

// noCtx strips the contexts so executions can be compared across nodes.
func noCtx(es []execRec) []execRec {
	out := make([]execRec, len(es))
	for i, e := range es {
		out[i] = execRec{e.group, e.instance, e.value, nil}
	}
	return out
}

type result struct {
	done  bool
	calls int
	inst  uint64
	value any
	err   error
	at    time.Duration
}

func (c *cluster) propose(id, group uint64, value string, sc *paxos.SMCtx) *result {
	r := &result{}
	c.nodes[id].node.ProposeAsync(group, []byte(value), sc, func(res paxos.Result, err error) {
		r.done, r.inst, r.value, r.err, r.at = true, res.Instance, res.Value, err, c.now
		r.calls++
	})
	return r
}

func (c *cluster) wait(rs ...*result) {
	c.t.Helper()
	c.runUntil("proposal results", 10*time.Second, func() bool {
		for _, r := range rs {
			if !r.done {
				return false
			}
		}
		return true
	})
}

func (c *cluster) mustPropose(id, group uint64, value string, sc *paxos.SMCtx) uint64 {
	c.t.Helper()
	r := c.propose(id, group, value, sc)
	c.wait(r)
	if r.err != nil || r.inst == 0 {
		c.t.Fatalf("propose %q at node %d: instance %d, err %v", value, id, r.inst, r.err)
	}
	return r.inst
}

// waitExecuted waits until every up node's state machine smid executed n values.
func (c *cluster) waitExecuted(smid uint32, n int, ids ...uint64) {
	c.t.Helper()
	c.runUntil(fmt.Sprintf("%d executions of SM %d on %v", n, smid, ids), 10*time.Second, func() bool {
		for _, id := range ids {
			if len(c.nodes[id].sm(smid).execs) < n {
				return false
			}
		}
		return true
	})
}

// ---------------------------------------------------------------------------

func TestStateMachinesRoutedBySMID(t *testing.T) {
	// SMID 2 is registered first, so a nil SMCtx must go to it.
	c := newCluster(t, 3, 1, []uint32{2, 1}, nil)
	type prop struct {
		node  uint64
		value string
		sc    *paxos.SMCtx
	}
	props := []prop{
		{1, "a-sm1", &paxos.SMCtx{SMID: 1, Ctx: "ctx-a"}},
		{2, "b-sm2", &paxos.SMCtx{SMID: 2, Ctx: "ctx-b"}},
		{3, "c-sm1", &paxos.SMCtx{SMID: 1, Ctx: 42}},
		{1, "d-nil", nil},
		{2, "e-sm2", &paxos.SMCtx{SMID: 2}},
	}
	inst := map[string]uint64{}
	for _, p := range props {
		inst[p.value] = c.mustPropose(p.node, 0, p.value, p.sc)
	}
	// A concurrent burst from every node, alternating SMIDs.
	var rs []*result
	for i := range 12 {
		id := c.ids[i%3]
		smid := uint32(1 + i%2)
		v := fmt.Sprintf("burst-%d-sm%d", i, smid)
		props = append(props, prop{id, v, &paxos.SMCtx{SMID: smid, Ctx: v}})
		rs = append(rs, c.propose(id, 0, v, props[len(props)-1].sc))
	}
	c.wait(rs...)
	for i, r := range rs {
		if r.err != nil {
			t.Fatalf("burst proposal %d: %v", i, r.err)
		}
		inst[props[5+i].value] = r.inst
	}
	want := map[uint32]int{1: 8, 2: 9}
	c.waitExecuted(1, want[1], c.ids...)
	c.waitExecuted(2, want[2], c.ids...)
	c.run(100 * time.Millisecond)

	smOf := func(p prop) uint32 {
		if p.sc == nil {
			return 2
		}
		return p.sc.SMID
	}
	byValue := map[string]prop{}
	for _, p := range props {
		byValue[p.value] = p
	}
	for _, smid := range []uint32{1, 2} {
		ref := noCtx(c.nodes[1].sm(smid).execs)
		if len(ref) != want[smid] {
			t.Fatalf("SM %d on node 1 executed %d values, want %d", smid, len(ref), want[smid])
		}
		for _, id := range c.ids {
			execs := c.nodes[id].sm(smid).execs
			if got := noCtx(execs); !slices.Equal(got, ref) {
				t.Errorf("SM %d: node %d executed %v, node 1 executed %v", smid, id, got, ref)
			}
			for k, e := range execs {
				p, ok := byValue[e.value]
				switch {
				case !ok:
					t.Errorf("node %d SM %d executed unknown value %q", id, smid, e.value)
					continue
				case smOf(p) != smid:
					t.Errorf("node %d: value %q for SM %d executed by SM %d", id, e.value, smOf(p), smid)
				case e.instance != inst[e.value]:
					t.Errorf("node %d: %q at instance %d, proposer was told %d", id, e.value, e.instance, inst[e.value])
				case k > 0 && e.instance <= execs[k-1].instance:
					t.Errorf("node %d SM %d: instances not increasing: %v", id, smid, execs)
				}
				var wantCtx any
				if p.node == id && p.sc != nil {
					wantCtx = p.sc.Ctx
				}
				if e.ctx != wantCtx {
					t.Errorf("node %d: %q executed with ctx %v, want %v", id, e.value, e.ctx, wantCtx)
				}
			}
		}
	}
}

func TestMultiGroup(t *testing.T) {
	const groups = 3
	c := newCluster(t, 3, groups, []uint32{1}, nil)
	want := map[uint64][]string{}
	for g := range uint64(groups) {
		v := fmt.Sprintf("g%d-first", g)
		// Instance 1 holds the first master's record.
		if i := c.mustPropose(1, g, v, nil); i != 2 {
			t.Errorf("first value of group %d chosen at instance %d, want 2", g, i)
		}
		want[g] = append(want[g], v)
	}
	var rs []*result
	for k := range 5 {
		for g := range uint64(groups) {
			v := fmt.Sprintf("g%d-v%d", g, k)
			want[g] = append(want[g], v)
			rs = append(rs, c.propose(c.ids[(k+int(g))%3], g, v, &paxos.SMCtx{SMID: 1}))
		}
	}
	c.wait(rs...)
	for _, r := range rs {
		if r.err != nil {
			t.Fatalf("proposal failed: %v", r.err)
		}
	}
	c.waitExecuted(1, groups*6, c.ids...)
	c.run(100 * time.Millisecond)

	for g := range uint64(groups) {
		var ref []execRec
		for _, id := range c.ids {
			h := c.nodes[id]
			var got []execRec
			var values []string
			for _, e := range h.sm(1).execs {
				if e.group == g {
					got = append(got, execRec{e.group, e.instance, e.value, nil})
					values = append(values, e.value)
				} else if !strings.HasPrefix(e.value, fmt.Sprintf("g%d-", e.group)) {
					t.Errorf("node %d: value %q executed in group %d", id, e.value, e.group)
				}
			}
			if got[0].instance != 2 {
				t.Errorf("node %d group %d: first instance %d, want 2", id, g, got[0].instance)
			}
			sorted := slices.Sorted(slices.Values(values))
			if w := slices.Sorted(slices.Values(want[g])); !slices.Equal(sorted, w) {
				t.Errorf("node %d group %d executed %v, want %v", id, g, values, want[g])
			}
			// Every chosen instance (no-ops included) is seen once, in order, from 1.
			for k, i := range h.commits[g] {
				if i != uint64(k+1) {
					t.Errorf("node %d group %d: commits %v are not 1..n", id, g, h.commits[g])
					break
				}
			}
			if ref == nil {
				ref = got
			} else if !slices.Equal(got, ref) {
				t.Errorf("group %d: node %d executed %v, node 1 %v", g, id, got, ref)
			}
		}
	}

	r := c.propose(2, groups, "nowhere", nil)
	c.wait(r)
	if !errors.Is(r.err, paxos.ErrUnknownGroup) {
		t.Errorf("propose to group %d: err %v, want ErrUnknownGroup", groups, r.err)
	}
}

func TestRestartReplaysAndCatchesUp(t *testing.T) {
	c := newCluster(t, 3, 1, []uint32{1}, nil)
	for k := range 5 {
		c.mustPropose(1, 0, fmt.Sprintf("before-%d", k), nil)
	}
	c.waitExecuted(1, 5, c.ids...)
	old := c.nodes[3].sm(1)

	c.crash(3)
	c.run(time.Second) // let a leader among 1 and 2 settle if 3 led
	for k := range 5 {
		c.mustPropose(2, 0, fmt.Sprintf("during-%d", k), nil)
	}
	c.waitExecuted(1, 10, 1, 2)
	ref := noCtx(c.nodes[1].sm(1).execs)
	if len(ref) != 10 || !slices.Equal(ref, noCtx(c.nodes[2].sm(1).execs)) {
		t.Fatalf("nodes 1 and 2 disagree or lack values: %v vs %v", ref, c.nodes[2].sm(1).execs)
	}

	// The chosen prefix node 3 has on disk is what it must replay on its own.
	h3 := c.nodes[3]
	chosen, noop := map[uint64]bool{}, map[uint64]bool{}
	for _, b := range h3.recs {
		r := &pb.Record{}
		if err := proto.Unmarshal(b, r); err != nil {
			t.Fatal(err)
		}
		if r.Entry != nil && r.Entry.Chosen {
			chosen[r.Entry.Instance] = true
		}
		if r.Entry != nil {
			noop[r.Entry.Instance] = r.Entry.Value.GetNoop()
		}
		if r.HardState != nil { // the chosen watermark covers accepted records
			for i := uint64(1); i <= r.HardState.ChosenUpto; i++ {
				chosen[i] = true
			}
		}
	}
	prefix, values := 0, 0 // instances, and values among them (the others are master records)
	for chosen[uint64(prefix+1)] {
		prefix++
		if !noop[uint64(prefix)] {
			values++
		}
	}
	if prefix == 0 {
		t.Fatalf("node 3 has no durable chosen values; the test needs some")
	}

	c.isolate(3, true)
	c.start(3)
	c.run(200 * time.Millisecond)
	fresh := h3.sm(1)
	if fresh == old {
		t.Fatal("restart reused the old state machine")
	}
	if got := noCtx(fresh.execs); !slices.Equal(got, ref[:values]) {
		t.Fatalf("isolated restart replayed %v, want the durable prefix %v", got, ref[:values])
	}

	c.isolate(3, false)
	c.waitExecuted(1, 10, 3)
	c.run(100 * time.Millisecond)
	if got := noCtx(fresh.execs); !slices.Equal(got, ref) {
		t.Fatalf("node 3 executed %v after catching up, want %v", got, ref)
	}
	for _, e := range fresh.execs {
		if e.ctx != nil {
			t.Errorf("replayed %q with ctx %v", e.value, e.ctx)
		}
	}

	i := c.mustPropose(3, 0, "after", &paxos.SMCtx{SMID: 1, Ctx: "mine"})
	c.waitExecuted(1, 11, c.ids...)
	for _, id := range c.ids {
		last := c.nodes[id].sm(1).execs[10]
		if last.value != "after" || last.instance != i {
			t.Errorf("node %d: 11th execution %+v, want %q at %d", id, last, "after", i)
		}
	}
	if last := fresh.execs[10]; last.ctx != "mine" {
		t.Errorf("restarted proposer got ctx %v, want %q", last.ctx, "mine")
	}
}

func TestErrors(t *testing.T) {
	t.Run("ValueTooLarge", func(t *testing.T) {
		c := newCluster(t, 3, 1, []uint32{1}, func(o *paxos.Options) { o.MaxValueSize = 16 })
		r := c.propose(1, 0, strings.Repeat("x", 17), nil)
		c.wait(r)
		if !errors.Is(r.err, paxos.ErrValueTooLarge) {
			t.Errorf("17 bytes with limit 16: err %v, want ErrValueTooLarge", r.err)
		}
		c.mustPropose(1, 0, strings.Repeat("x", 16), nil)
	})

	t.Run("NoStateMachine", func(t *testing.T) {
		c := newCluster(t, 3, 1, []uint32{1}, nil)
		r := c.propose(1, 0, "v", &paxos.SMCtx{SMID: 7})
		c.wait(r)
		if !errors.Is(r.err, paxos.ErrNoStateMachine) {
			t.Errorf("SMID 7: err %v, want ErrNoStateMachine", r.err)
		}
	})

	t.Run("Timeout", func(t *testing.T) {
		const timeout = 500 * time.Millisecond
		c := newCluster(t, 3, 1, []uint32{1}, func(o *paxos.Options) { o.ProposeTimeout = timeout })
		c.isolate(3, true)
		start := c.now
		r := c.propose(3, 0, "lost", nil)
		c.wait(r)
		if !errors.Is(r.err, paxos.ErrTimeout) {
			t.Fatalf("isolated proposal: err %v, want ErrTimeout", r.err)
		}
		if r.at-start != timeout {
			t.Errorf("timed out after %v, want %v", r.at-start, timeout)
		}
		if s := c.nodes[3].node.Stats(); s.Timeouts != 1 {
			t.Errorf("Stats().Timeouts = %d, want 1", s.Timeouts)
		}
		c.mustPropose(1, 0, "majority still works", nil)
		c.run(time.Second)
		if r.calls != 1 {
			t.Errorf("callback ran %d times", r.calls)
		}
	})

	t.Run("Overloaded", func(t *testing.T) {
		c := newCluster(t, 3, 1, []uint32{1}, func(o *paxos.Options) { o.MaxPending = 2 })
		c.isolate(3, true)
		rs := []*result{c.propose(3, 0, "a", nil), c.propose(3, 0, "b", nil), c.propose(3, 0, "c", nil)}
		c.run(10 * time.Millisecond)
		if !rs[2].done || !errors.Is(rs[2].err, paxos.ErrOverloaded) {
			t.Errorf("third proposal with MaxPending 2: done %v err %v, want ErrOverloaded", rs[2].done, rs[2].err)
		}
		if rs[0].done || rs[1].done {
			t.Errorf("queued proposals finished early: %+v %+v", rs[0], rs[1])
		}
	})

	t.Run("Closed", func(t *testing.T) {
		c := newCluster(t, 3, 1, []uint32{1}, func(o *paxos.Options) { o.ProposeTimeout = time.Second })
		c.isolate(3, true)
		pending := c.propose(3, 0, "pending", nil)
		c.run(50 * time.Millisecond)
		if pending.done {
			t.Fatalf("isolated proposal finished: %+v", pending)
		}
		c.nodes[3].node.Close()
		c.run(10 * time.Millisecond)
		if !errors.Is(pending.err, paxos.ErrClosed) {
			t.Errorf("pending proposal after Close: err %v, want ErrClosed", pending.err)
		}
		later := c.propose(3, 0, "later", nil)
		c.wait(later)
		if !errors.Is(later.err, paxos.ErrClosed) {
			t.Errorf("proposal after Close: err %v, want ErrClosed", later.err)
		}
		c.run(2 * time.Second) // past the proposal timeout
		if pending.calls != 1 {
			t.Errorf("pending callback ran %d times", pending.calls)
		}
	})

	t.Run("InvalidOptions", func(t *testing.T) {
		c := newCluster(t, 3, 1, []uint32{1}, nil)
		e := c.nodes[1].env.all()
		ok := paxos.Options{MyNode: 1, Nodes: []uint64{1, 2, 3}, ClusterID: 1, Env: e}
		for name, tweak := range map[string]func(o *paxos.Options){
			"MyNode not a member": func(o *paxos.Options) { o.MyNode = 9 },
			"MyNode zero":         func(o *paxos.Options) { o.MyNode = 0 },
			"incomplete Env":      func(o *paxos.Options) { o.Env = env.Env{Loop: e.Loop, Clock: e.Clock} },
			"duplicate member":    func(o *paxos.Options) { o.Nodes = []uint64{1, 2, 2} },
			"member zero":         func(o *paxos.Options) { o.Nodes = []uint64{0, 1, 2} },
			"no cluster id":       func(o *paxos.Options) { o.ClusterID = 0 },
			"negative groups":     func(o *paxos.Options) { o.Groups = -1 },
			"negative window":     func(o *paxos.Options) { o.Window = -1 },
			"window too large":    func(o *paxos.Options) { o.Window = core.ConfigDelay + 1 },
			"negative pending":    func(o *paxos.Options) { o.MaxPending = -3 },
			"negative timeout":    func(o *paxos.Options) { o.ProposeTimeout = -time.Second },
			"nil state machine":   func(o *paxos.Options) { o.StateMachines = []paxos.StateMachine{nil} },
			"same SMID twice":     func(o *paxos.Options) { o.StateMachines = []paxos.StateMachine{&recSM{smid: 4}, &recSM{smid: 4}} },
		} {
			o := ok
			tweak(&o)
			// Validate leaves Env to RunNode: real.RunNode validates before it has one.
			if err := o.Validate(); name != "incomplete Env" && !errors.Is(err, paxos.ErrInvalidOptions) {
				t.Errorf("%s: Validate() = %v, want ErrInvalidOptions", name, err)
			}
			if n, err := paxos.RunNode(o); !errors.Is(err, paxos.ErrInvalidOptions) || n != nil {
				t.Errorf("%s: RunNode: node %v err %v, want ErrInvalidOptions", name, n, err)
			}
		}
		if err := ok.Validate(); err != nil {
			t.Errorf("valid options refused: %v", err)
		}
	})

	t.Run("BadMessages", func(t *testing.T) {
		c := newCluster(t, 3, 1, []uint32{1}, nil)
		n := c.nodes[1].node
		otherGroup, _ := proto.Marshal(&pb.Message{Type: pb.MsgType_MSG_CHOSEN, From: 2, To: 1, Group: 5})
		stranger, _ := proto.Marshal(&pb.Message{Type: pb.MsgType_MSG_LEARN_REQ, From: 99, To: 1, Group: 0})
		bad := [][]byte{{0xff, 0xff, 0xff, 0xff}, {0x0a}, stranger}
		c.run(time.Millisecond)
		for _, b := range append(bad, otherGroup) {
			c.nodes[1].env.recv(b) // as the transport hands them over, on the loop
		}
		if s := n.Stats(); s.BadMessages != uint64(len(bad)) || s.UnknownGroups != 1 || s.MsgsReceived < 4 {
			t.Errorf("Stats() = %+v, want BadMessages %d, UnknownGroups 1", s, len(bad))
		}
		c.mustPropose(1, 0, "still fine", nil)
	})

	t.Run("UnknownGroupStatus", func(t *testing.T) {
		c := newCluster(t, 3, 2, []uint32{1}, nil)
		if _, err := c.nodes[1].node.Status(2); !errors.Is(err, paxos.ErrUnknownGroup) {
			t.Errorf("Status(2) of a 2-group node: %v, want ErrUnknownGroup", err)
		}
		if _, err := c.nodes[1].node.NowInstanceID(7); !errors.Is(err, paxos.ErrUnknownGroup) {
			t.Errorf("NowInstanceID(7): %v, want ErrUnknownGroup", err)
		}
		if err := c.nodes[1].node.AddStateMachine(&recSM{smid: 9}, 5); !errors.Is(err, paxos.ErrUnknownGroup) {
			t.Errorf("AddStateMachine to group 5: %v, want ErrUnknownGroup", err)
		}
	})
}

// TestIdentity restarts a node on its storage with another member list,
// cluster id or node id: each start is refused with ErrIdentityMismatch
// naming both identities, and nothing is written or sent.
func TestIdentity(t *testing.T) {
	c := newCluster(t, 3, 1, []uint32{1}, nil)
	c.mustPropose(1, 0, "before", nil)
	h := c.nodes[3]
	c.crash(3)
	h.up, h.inc = true, h.inc+1 // a process on node 3's disk, not yet a node
	recs := len(h.recs)
	for name, tweak := range map[string]func(o *paxos.Options){
		"a cluster of one":   func(o *paxos.Options) { o.Nodes = []uint64{3} },
		"another cluster id": func(o *paxos.Options) { o.ClusterID = 2 },
		"another node's id":  func(o *paxos.Options) { o.MyNode = 1 },
		"an added member":    func(o *paxos.Options) { o.Nodes = []uint64{1, 2, 3, 4} },
	} {
		h.env = &nodeEnv{h: h, inc: h.inc}
		o := paxos.Options{MyNode: 3, Nodes: c.ids, ClusterID: 1, StateMachines: []paxos.StateMachine{&recSM{smid: 1}}, Env: h.env.all()}
		tweak(&o)
		n, err := paxos.RunNode(o)
		if !errors.Is(err, paxos.ErrIdentityMismatch) || n != nil {
			t.Fatalf("%s: RunNode = %v, %v; want ErrIdentityMismatch", name, n, err)
		}
		if !strings.Contains(err.Error(), "node 3 of cluster 1 with members [1 2 3]") {
			t.Errorf("%s: error does not name the stored identity: %v", name, err)
		}
		if len(h.recs) != recs || h.env.recv != nil || !h.env.closed.Load() {
			t.Errorf("%s: refused start wrote %d records, started transport %v, closed env %v", name, len(h.recs)-recs, h.env.recv != nil, h.env.closed.Load())
		}
	}
	h.up = false
	c.start(3) // the right identity starts
	c.mustPropose(3, 0, "after", nil)
	c.waitExecuted(1, 2, c.ids...)
}

// TestContextGovernsPropose: a context deadline longer than ProposeTimeout
// is honoured, and cancelling gives the pending slot back at once.
func TestContextGovernsPropose(t *testing.T) {
	c := newCluster(t, 3, 1, []uint32{1}, func(o *paxos.Options) { o.ProposeTimeout = 100 * time.Millisecond })
	c.isolate(3, true)
	n := c.nodes[3].node
	ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
	done := make(chan error, 1)
	go func() {
		_, err := n.Propose(ctx, 0, []byte("long wait"), nil)
		done <- err
	}()
	for deadline := time.Now().Add(10 * time.Second); ; runtime.Gosched() {
		if st, _ := n.Status(0); st.Pending == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the proposal never became pending")
		}
		c.run(time.Millisecond)
	}
	// Beyond its timeout, short of the two election timeouts after which
	// an isolated node fails proposals with ErrNoQuorum.
	c.run(250 * time.Millisecond)
	select {
	case err := <-done:
		t.Fatalf("Propose returned %v before its context ended", err)
	default:
	}
	cancel()
	err := <-done
	if !errors.Is(err, context.Canceled) || !errors.Is(err, paxos.ErrTimeout) {
		t.Fatalf("cancelled Propose: %v, want context.Canceled and ErrTimeout", err)
	}
	c.runUntil("the slot to be given back", time.Second, func() bool {
		st, _ := n.Status(0)
		return st.Pending == 0 && n.Stats().Cancelled == 1
	})
	// An ended context never proposes.
	if _, err := n.Propose(ctx, 0, []byte("never"), nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("Propose with an ended context: %v", err)
	}
}

// TestResult: what Execute returns reaches the proposer, for Propose and
// for every value of a batch.
func TestResult(t *testing.T) {
	c := newCluster(t, 3, 1, []uint32{1, 2}, nil)
	r := c.propose(2, 0, "hello", &paxos.SMCtx{SMID: 2})
	c.wait(r)
	if r.err != nil || r.value != "2:hello" {
		t.Fatalf("result %v err %v, want 2:hello", r.value, r.err)
	}
	var got []paxos.Result
	for i := range 3 {
		c.nodes[1].node.BatchProposeAsync(0, []byte(fmt.Sprint("b", i)), nil, func(res paxos.Result, err error) {
			if err != nil {
				t.Errorf("batch value %d: %v", i, err)
			}
			got = append(got, res)
		})
	}
	c.runUntil("the batch", 5*time.Second, func() bool { return len(got) == 3 })
	for i, res := range got {
		if res.Value != fmt.Sprintf("1:b%d", i) || res.Index != uint32(i) || res.Instance != got[0].Instance {
			t.Errorf("batch result %d: %+v", i, res)
		}
	}
}

func TestExecuteError(t *testing.T) {
	c := newCluster(t, 3, 1, []uint32{1}, nil)
	r := c.propose(2, 0, "fail-me", nil)
	c.wait(r)
	if !errors.Is(r.err, paxos.ErrExecuteFailed) || !errors.Is(r.err, errRejected) {
		t.Fatalf("err %v, want ErrExecuteFailed wrapping the SM's error", r.err)
	}
	if r.inst == 0 {
		t.Errorf("failed execution reported instance 0")
	}
	i1 := c.mustPropose(2, 0, "ok-1", nil)
	i2 := c.mustPropose(1, 0, "ok-2", nil)
	c.waitExecuted(1, 3, c.ids...)
	want := []execRec{{0, r.inst, "fail-me", nil}, {0, i1, "ok-1", nil}, {0, i2, "ok-2", nil}}
	for _, id := range c.ids {
		if got := noCtx(c.nodes[id].sm(1).execs); !slices.Equal(got, want) {
			t.Errorf("node %d executed %v, want %v", id, got, want)
		}
	}
}

func TestBlockingPropose(t *testing.T) {
	c := newCluster(t, 3, 1, []uint32{1}, nil)
	n := c.nodes[1].node

	// An ended context returns at once and proposes nothing.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := n.Propose(ctx, 0, []byte("abandoned"), nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("canceled Propose: err %v", err)
	}
	c.mustPropose(2, 0, "first", nil)

	// A blocking Propose on another goroutine while this one pumps events.
	type res struct {
		inst uint64
		err  error
	}
	done := make(chan res, 1)
	go func() {
		r, err := n.Propose(context.Background(), 0, []byte("blocking"), nil)
		done <- res{r.Instance, err}
	}()
	end := c.now + time.Minute
	for {
		select {
		case r := <-done:
			if r.err != nil || r.inst != 3 {
				t.Fatalf("blocking Propose: instance %d err %v, want 3", r.inst, r.err)
			}
			return
		default:
		}
		if c.now > end || !c.step() {
			t.Fatal("blocking Propose never returned")
		}
		runtime.Gosched()
	}
}

// durableSM keeps its own "durable" state across restarts of its node, as
// a machine backed by its own database would (PhxPaxos's
// GetCheckpointInstanceID).
type durableSM struct {
	execs   []uint64
	durable uint64
}

func (d *durableSM) SMID() uint32 { return 1 }
func (d *durableSM) Execute(group, instance uint64, value []byte, ctx any) (any, error) {
	d.execs = append(d.execs, instance)
	d.durable = instance
	return nil, nil
}
func (d *durableSM) DurableInstance(group uint64) uint64 { return d.durable }

// TestDurableStateMachine: a restarted node executes, for a machine that
// keeps its own durable state, only the values above DurableInstance:
// nothing twice, nothing skipped.
func TestDurableStateMachine(t *testing.T) {
	sms := map[uint64]*durableSM{1: {}, 2: {}, 3: {}}
	c := newCluster(t, 3, 1, []uint32{1}, func(o *paxos.Options) {
		o.StateMachines = []paxos.StateMachine{sms[o.MyNode]}
	})
	for k := range 5 {
		c.mustPropose(1, 0, fmt.Sprintf("v%d", k), nil)
	}
	c.run(time.Second)
	if len(sms[3].execs) < 5 {
		t.Fatalf("node 3 executed %v", sms[3].execs)
	}
	c.crash(3)
	c.start(3)
	for k := range 5 {
		c.mustPropose(1, 0, fmt.Sprintf("w%d", k), nil)
	}
	c.run(time.Second)
	want := sms[1].execs
	if len(want) < 10 {
		t.Fatalf("node 1 executed %v", want)
	}
	if got := sms[3].execs; !slices.Equal(got, want) {
		t.Fatalf("node 3 executed %v across its restart, want each of %v once", got, want)
	}
}

// sumSM is a Checkpointer: its state is the sum of the values' lengths.
type sumSM struct{ sum uint64 }

func (s *sumSM) SMID() uint32 { return 1 }
func (s *sumSM) Execute(group, instance uint64, value []byte, ctx any) (any, error) {
	s.sum += uint64(len(value))
	return s.sum, nil
}
func (s *sumSM) PrepareCheckpoint(group, instance uint64) (any, error) { return s.sum, nil }
func (s *sumSM) SaveCheckpoint(group uint64, view any, w io.Writer) error {
	_, err := fmt.Fprint(w, view)
	return err
}
func (s *sumSM) RestoreCheckpoint(group, instance uint64, r io.Reader) error {
	_, err := fmt.Fscan(r, &s.sum)
	return err
}

// laggingSM is a Checkpointer that also keeps its own durable state, which
// lags: it covers only half of what it executed.
type laggingSM struct {
	sumSM
	executed uint64
}

func (s *laggingSM) SMID() uint32 { return 2 }
func (s *laggingSM) Execute(group, instance uint64, value []byte, ctx any) (any, error) {
	s.executed = instance
	return s.sumSM.Execute(group, instance, value, ctx)
}
func (s *laggingSM) DurableInstance(group uint64) uint64 { return s.executed / 2 }

// TestCheckpointsCleanBelowEveryMachine: with checkpoints every 5
// instances and 2 held, a group cleans its log, but never above what its
// slowest machine's durable state covers (the minimum over the machines,
// PhxPaxos #122); and a node kept away past the cleaned log comes back by
// a checkpoint transfer, with the same state, without a restart.
func TestCheckpointsCleanBelowEveryMachine(t *testing.T) {
	type machines struct {
		sum *sumSM
		lag *laggingSM
	}
	sms := map[uint64]machines{}
	c := newCluster(t, 3, 1, nil, func(o *paxos.Options) {
		m := machines{&sumSM{}, &laggingSM{}}
		sms[o.MyNode] = m
		o.StateMachines = []paxos.StateMachine{m.sum, m.lag}
		o.CheckpointInterval, o.HoldCount = 5, 2
	})
	c.isolate(3, true)
	for k := range 40 {
		c.mustPropose(1, 0, fmt.Sprintf("v%d", k), &paxos.SMCtx{SMID: uint32(1 + k%2)})
	}
	c.run(time.Second)
	st, err := c.nodes[1].node.Status(0)
	if err != nil {
		t.Fatal(err)
	}
	durable := sms[1].lag.DurableInstance(0)
	if st.Checkpoint == 0 || st.LogStart <= 1 || st.LogStart > durable+1-2 {
		t.Fatalf("node 1: checkpoint %d, log start %d; the lagging machine covers %d, 2 held", st.Checkpoint, st.LogStart, durable)
	}
	min, err := c.nodes[1].node.MinChosenInstanceID(0)
	if err != nil || min != st.LogStart {
		t.Errorf("MinChosenInstanceID %d (%v), want the log start %d", min, err, st.LogStart)
	}

	c.isolate(3, false)
	c.run(3 * time.Second)
	if got := c.nodes[3].node.Stats().Installs; got == 0 {
		t.Fatalf("node 3 caught up without installing a checkpoint")
	}
	for _, id := range c.ids {
		if s, want := sms[id].sum.sum+sms[id].lag.sum, sms[1].sum.sum+sms[1].lag.sum; s != want {
			t.Errorf("node %d: state %d, node 1 has %d", id, s, want)
		}
	}
}

// TestBadSnapshotMessages feeds a node checkpoint-transfer messages that
// are invalid or unwanted: from a stranger, without a transfer id, with
// oversized data, chunks nobody asked for, bad CRCs, random offsets and
// instances, stray acknowledgements. None may panic, install anything or
// stop the node.
func TestBadSnapshotMessages(t *testing.T) {
	sms := map[uint64]*sumSM{}
	c := newCluster(t, 3, 1, nil, func(o *paxos.Options) {
		sms[o.MyNode] = &sumSM{}
		o.StateMachines = []paxos.StateMachine{sms[o.MyNode]}
		o.CheckpointInterval, o.HoldCount = 5, 2
	})
	for k := range 12 {
		c.mustPropose(1, 0, fmt.Sprintf("v%d", k), nil)
	}
	c.run(100 * time.Millisecond)
	n := c.nodes[1].node
	before := n.Stats()
	send := func(m *pb.Message) {
		b, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		c.nodes[1].env.recv(b)
	}
	chunk, ack, req := pb.MsgType_MSG_SNAP_CHUNK, pb.MsgType_MSG_SNAP_ACK, pb.MsgType_MSG_SNAP_REQ
	invalid := []*pb.Message{
		{Type: req, From: 99, To: 1, Transfer: 1, Instance: 1},                             // a stranger
		{Type: chunk, From: 2, To: 1, Instance: 5, Data: []byte("x")},                      // no transfer id
		{Type: chunk, From: 2, To: 1, Transfer: 3, Instance: 5, Data: make([]byte, 1<<20)}, // oversized
		{Type: ack, From: 1, To: 1, Transfer: 3},                                           // from itself
	}
	for _, m := range invalid {
		send(m)
	}
	if got := n.Stats().BadMessages - before.BadMessages; got != uint64(len(invalid)) {
		t.Errorf("%d bad messages counted, want %d", got, len(invalid))
	}
	rng := rand.New(rand.NewPCG(7, 7))
	types := []pb.MsgType{chunk, ack, req}
	for range 2000 {
		data := make([]byte, rng.IntN(64))
		for i := range data {
			data[i] = byte(rng.IntN(256))
		}
		m := &pb.Message{Type: types[rng.IntN(3)], From: 2 + uint64(rng.IntN(2)), To: 1,
			Transfer: 1 + uint64(rng.IntN(4)), Instance: uint64(rng.IntN(1 << 20)), Offset: uint64(rng.IntN(128)),
			Data: data, Crc: rng.Uint32(), Last: rng.IntN(2) == 0}
		send(m)
		c.run(time.Millisecond)
	}
	c.run(time.Second)
	if s := n.Stats(); s.Installs != 0 || s.SnapRecvs != 0 {
		t.Errorf("random transfer messages made the node fetch or install a checkpoint: %+v", s)
	}
	c.mustPropose(1, 0, "still fine", nil)
	c.run(100 * time.Millisecond)
	for _, id := range c.ids {
		if sms[id].sum != sms[1].sum {
			t.Errorf("node %d state %d, node 1 has %d", id, sms[id].sum, sms[1].sum)
		}
	}
}

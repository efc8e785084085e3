package core_test

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	"pgregory.net/rapid"

	"github.com/paxoskit/paxos/core"
	pb "github.com/paxoskit/paxos/core/paxospb"
)

// The property tests below drive 3 to 5 Cores directly, with a tiny harness
// in place of the node runtime and the simulator: every node has a fake
// disk, and one global bag holds the messages in flight. rapid draws what
// happens next: a message is delivered (in any order), dropped or
// duplicated, a node ticks, proposes, syncs its disk, or crashes and
// restarts from what it made durable. Readies are handled per the contract
// in doc.go: records first (some MustSync Readies wait for a later sync
// action, holding back their messages, Committed entries and Advance), and
// the core's Early messages leave at once, even while a sync is pending.

func init() {
	// A failing property prints the seed that replays it
	// (-rapid.seed=...); do not leave fail files in the source tree.
	// -rapid.nofailfile=false on the command line still writes them.
	if f := flag.Lookup("rapid.nofailfile"); f != nil {
		f.Value.Set("true")
	}
}

// propID identifies a proposal across restarts.
type propID struct{ node, boot, seq uint64 }

type propNode struct {
	id    uint64
	core  *core.Core
	boots uint64 // incarnations so far; seeds this incarnation's Rand

	durable []*pb.Record // synced: survives a crash
	written []*pb.Record // written but not synced: lost on a crash
	// pending is a Ready whose records must be synced before its messages
	// leave and its Committed entries run; Advance waits for it too.
	pending *core.Ready

	nextExec uint64          // next instance Committed must hand out
	executed map[string]bool // data executed by this incarnation
}

type propCluster struct {
	t      *rapid.T
	seed   uint64
	window int
	peers  []uint64
	nodes  []*propNode
	bag    []*pb.Message // in flight, in send order

	lazy    bool // some MustSync Readies wait for an explicit sync action
	memTail int  // core.Config.MemTail: small values send learners to storage

	proposed map[string]propID    // data -> the proposal that carries it
	chosen   map[uint64]*pb.Value // instance -> value, as first seen chosen
	at       map[propID]uint64    // non-noop proposal -> its instance
	nextVal  int
}

func newPropCluster(t *rapid.T, n int, window int, seed uint64) *propCluster {
	c := &propCluster{
		t: t, seed: seed, window: window, lazy: true,
		// Half the cases keep only a few executed instances in memory.
		memTail:  rapid.SampledFrom([]int{0, 1, 3}).Draw(t, "memTail"),
		proposed: map[string]propID{},
		chosen:   map[uint64]*pb.Value{},
		at:       map[propID]uint64{},
	}
	for i := 1; i <= n; i++ {
		c.peers = append(c.peers, uint64(i))
	}
	for _, id := range c.peers {
		nd := &propNode{id: id}
		c.nodes = append(c.nodes, nd)
		c.start(nd)
	}
	return c
}

func (c *propCluster) config(nd *propNode) core.Config {
	// A small deterministic PRNG per incarnation, derived from the drawn
	// seed, so a failing case replays exactly.
	r := rand.New(rand.NewPCG(c.seed, nd.id<<32|nd.boots))
	return core.Config{
		ID:             nd.id,
		Peers:          slices.Clone(c.peers),
		Group:          0,
		Window:         c.window,
		HeartbeatTicks: 2,
		ElectionTicks:  5,
		RetryTicks:     5,
		LearnTicks:     4,
		MemTail:        c.memTail,
		Rand:           r.IntN,
	}
}

// start (re)builds nd's Core from its durable records only.
func (c *propCluster) start(nd *propNode) {
	var hs *pb.HardState
	var entries []*pb.Entry
	for _, r := range nd.durable {
		if r.HardState != nil {
			hs = r.HardState
		}
		if r.Entry != nil {
			entries = append(entries, r.Entry)
		}
	}
	nd.boots++
	cr, err := core.New(c.config(nd), core.State{HardState: hs, Entries: entries})
	if err != nil {
		c.t.Fatalf("node %d: restore from %d durable records: %v", nd.id, len(nd.durable), err)
	}
	nd.core = cr
	nd.written, nd.pending = nil, nil
	nd.nextExec = 1
	nd.executed = map[string]bool{}
	c.process(nd)
}

// process sends nd's early messages, which need no durable record, and
// handles its Readies per the contract until it has none or one waits for a
// sync.
func (c *propCluster) process(nd *propNode) {
	c.sendEarly(nd)
	c.serveReads(nd)
	for nd.pending == nil && nd.core.HasReady() {
		rd := nd.core.Ready()
		if rd.HardState != nil {
			nd.written = append(nd.written, &pb.Record{HardState: rd.HardState})
		}
		for _, e := range rd.Entries {
			nd.written = append(nd.written, &pb.Record{Entry: e})
		}
		if rd.MustSync {
			if c.lazy && rapid.IntRange(0, 3).Draw(c.t, "defer sync") == 3 {
				nd.pending = &rd
				return
			}
			c.syncDisk(nd)
		}
		// Without MustSync the records stay written but unsynced: a crash
		// before the next sync loses them, as a real disk may.
		c.release(nd, rd)
	}
}

// serveReads answers the core's storage reads from what nd has written
// (synced or not), as env.Storage.Read does: the latest entry of each
// instance, contiguous from the first one asked for.
func (c *propCluster) serveReads(nd *propNode) {
	for {
		reads := nd.core.LogReads()
		if len(reads) == 0 {
			return
		}
		for _, r := range reads {
			latest := map[uint64]*pb.Entry{}
			for _, recs := range [][]*pb.Record{nd.durable, nd.written} {
				for _, rec := range recs {
					if rec.Entry != nil {
						latest[rec.Entry.Instance] = rec.Entry
					}
				}
			}
			var out []*pb.Entry
			for i := r.From; latest[i] != nil && len(out) < 64; i++ {
				out = append(out, latest[i])
			}
			nd.core.ServeLog(r.To, r.From, out)
			c.sendEarly(nd)
		}
	}
}

// sendEarly puts nd's early messages in flight at once, even while one of
// its Readies waits for a sync.
func (c *propCluster) sendEarly(nd *propNode) {
	for _, m := range nd.core.Early() {
		c.send(nd, m)
	}
}

// send puts m in flight; a broadcast (To == 0) becomes one copy per other
// member, as the driver contract says.
func (c *propCluster) send(nd *propNode, m *pb.Message) {
	if m.From != nd.id || m.To == nd.id || m.To > uint64(len(c.nodes)) {
		c.t.Fatalf("node %d sent a misaddressed message: %v", nd.id, m)
	}
	if m.To != 0 {
		c.bag = append(c.bag, proto.Clone(m).(*pb.Message))
		return
	}
	for _, p := range nd.core.Members() {
		if p != nd.id {
			mm := proto.Clone(m).(*pb.Message)
			mm.To = p
			c.bag = append(c.bag, mm)
		}
	}
}

func (c *propCluster) syncDisk(nd *propNode) {
	nd.durable = append(nd.durable, nd.written...)
	nd.written = nil
}

// release sends rd's messages, executes its Committed entries and advances.
// Messages the core produces meanwhile wait for the next process.
func (c *propCluster) release(nd *propNode, rd core.Ready) {
	// A chosen record counts once the node acts on it. Before, it may
	// rest on the node's own vote that is not durable yet (the accepts went
	// out early), and a crash takes both back.
	for _, e := range rd.Entries {
		if e.Chosen {
			c.noteChosen(nd, "persisted", e.Instance, e.Value)
		}
	}
	for _, m := range rd.Messages {
		c.send(nd, m)
	}
	for _, e := range rd.Committed {
		c.execute(nd, e)
	}
	nd.core.Advance()
}

func (c *propCluster) execute(nd *propNode, e *pb.Entry) {
	if e.Instance != nd.nextExec {
		c.t.Fatalf("node %d (boot %d) executed instance %d, want %d: gap or repeat", nd.id, nd.boots, e.Instance, nd.nextExec)
	}
	nd.nextExec++
	c.noteChosen(nd, "executed", e.Instance, e.Value)
	v := e.Value
	if v.Noop {
		return
	}
	id := propID{v.Node, v.Boot, v.Seq}
	want, ok := c.proposed[string(v.Data)]
	if !ok {
		c.t.Fatalf("validity: node %d executed instance %d with %q, which nobody proposed", nd.id, e.Instance, v.Data)
	}
	if want != id {
		c.t.Fatalf("validity: node %d executed %q at instance %d as proposal %v, but it was proposed as %v", nd.id, v.Data, e.Instance, id, want)
	}
	if i, ok := c.at[id]; ok && i != e.Instance {
		c.t.Fatalf("proposal %v (%q) committed at instances %d and %d", id, v.Data, i, e.Instance)
	}
	c.at[id] = e.Instance
	nd.executed[string(v.Data)] = true
}

// noteChosen checks agreement for a value nd holds as chosen at instance i.
func (c *propCluster) noteChosen(nd *propNode, how string, i uint64, v *pb.Value) {
	if v == nil {
		c.t.Fatalf("node %d %s instance %d with no value", nd.id, how, i)
	}
	if prev, ok := c.chosen[i]; ok {
		if !core.SameProposal(prev, v) {
			c.t.Fatalf("agreement: node %d %s instance %d as %v, but %v was chosen there", nd.id, how, i, v, prev)
		}
		return
	}
	c.chosen[i] = v
}

func (c *propCluster) node(t *rapid.T) *propNode {
	return c.nodes[rapid.IntRange(0, len(c.nodes)-1).Draw(t, "node")]
}

func (c *propCluster) msgIndex(t *rapid.T) int {
	return rapid.IntRange(0, len(c.bag)-1).Draw(t, "msg")
}

func (c *propCluster) deliver(i int) {
	m := c.bag[i]
	c.bag = slices.Delete(c.bag, i, i+1)
	nd := c.nodes[m.To-1]
	if err := nd.core.Step(m); err != nil {
		c.t.Fatalf("node %d rejected a message of node %d: %v\n%v", nd.id, m.From, err, m)
	}
	c.process(nd)
}

func (c *propCluster) propose(nd *propNode) {
	c.nextVal++
	data := fmt.Sprintf("n%d-v%d", nd.id, c.nextVal)
	seq, ok := nd.core.Propose(0, []byte(data))
	if !ok {
		c.t.Logf("node %d: queue full, %q not proposed", nd.id, data)
		return
	}
	c.proposed[data] = propID{nd.id, nd.core.Boot(), seq}
	c.process(nd)
}

func (c *propCluster) tick(nd *propNode) {
	nd.core.Tick()
	c.process(nd)
}

// sync makes nd's written records durable and releases a waiting Ready.
func (c *propCluster) sync(nd *propNode) {
	c.syncDisk(nd)
	if rd := nd.pending; rd != nil {
		nd.pending = nil
		c.release(nd, *rd)
	}
	c.process(nd)
}

// crash loses nd's unsynced records and unreleased messages, then restarts
// it from its durable records. Messages already sent stay in flight.
func (c *propCluster) crash(nd *propNode) {
	c.start(nd)
}

// propActions lists the actions with their weights. Delivery dominates so
// that messages mostly arrive within a few ticks, as on a working network;
// listing it first also makes rapid shrink toward it.
var propActions = weighted(
	"deliver", 60,
	"tick", 4,
	"tick all", 4,
	"propose", 3,
	"sync", 4,
	"drop", 1,
	"duplicate", 1,
	"crash", 1,
)

// propIdleActions are those that make sense with no message in flight.
var propIdleActions = slices.DeleteFunc(slices.Clone(propActions), func(a string) bool {
	return a == "deliver" || a == "drop" || a == "duplicate"
})

func weighted(kv ...any) []string {
	var out []string
	for i := 0; i < len(kv); i += 2 {
		for range kv[i+1].(int) {
			out = append(out, kv[i].(string))
		}
	}
	return out
}

// randomPhase runs a drawn number of random actions.
func (c *propCluster) randomPhase(t *rapid.T, minActions, maxActions int) {
	n := rapid.IntRange(minActions, maxActions).Draw(t, "actions")
	for range n {
		actions := propActions
		if len(c.bag) == 0 {
			actions = propIdleActions
		}
		a := rapid.SampledFrom(actions).Draw(t, "action")
		switch a {
		case "deliver", "drop", "duplicate":
			i := c.msgIndex(t)
			switch a {
			case "deliver":
				c.deliver(i)
			case "drop":
				c.bag = slices.Delete(c.bag, i, i+1)
			case "duplicate":
				c.bag = append(c.bag, proto.Clone(c.bag[i]).(*pb.Message))
			}
		case "tick":
			c.tick(c.node(t))
		case "tick all":
			for _, nd := range c.nodes {
				c.tick(nd)
			}
		case "propose":
			c.propose(c.node(t))
		case "sync":
			// A disk finishes its sync soon: prefer a node that waits.
			var waiting []*propNode
			for _, nd := range c.nodes {
				if nd.pending != nil {
					waiting = append(waiting, nd)
				}
			}
			if len(waiting) == 0 {
				c.sync(c.node(t))
			} else {
				c.sync(waiting[rapid.IntRange(0, len(waiting)-1).Draw(t, "waiting node")])
			}
		case "crash":
			c.crash(c.node(t))
		}
		c.check()
	}
}

// check runs after every action. Agreement, validity, gap-free execution
// and at-most-once commitment are checked as entries are persisted and
// executed; here, each node must have executed exactly its chosen prefix
// once its Readies are all handled.
func (c *propCluster) check() {
	for _, nd := range c.nodes {
		done, upto := nd.nextExec-1, nd.core.ChosenUpto()
		if done > upto || nd.pending == nil && !nd.core.HasReady() && done != upto {
			c.t.Fatalf("node %d executed up to %d with chosen prefix %d (Ready waiting: %v)", nd.id, done, upto, nd.pending != nil)
		}
	}
}

// forEachShape runs prop as a rapid property on every cluster size from 3
// to 5 nodes and every window of 1, 2 and 4; rapid draws the rest,
// including the seed of the cores' randomness.
func forEachShape(t *testing.T, prop func(t *rapid.T, c *propCluster)) {
	for n := 3; n <= 5; n++ {
		for _, window := range []int{1, 2, 4} {
			t.Run(fmt.Sprintf("nodes=%d/window=%d", n, window), func(t *testing.T) {
				rapid.Check(t, func(t *rapid.T) {
					seed := rapid.Uint64().Draw(t, "seed")
					prop(t, newPropCluster(t, n, window, seed))
				})
			})
		}
	}
}

// TestPropertySafety checks agreement, validity, gap-free execution and
// at-most-once commitment of every proposal after every random action.
func TestPropertySafety(t *testing.T) {
	forEachShape(t, func(t *rapid.T, c *propCluster) {
		c.randomPhase(t, 50, 300)
	})
}

// TestPropertyLiveness runs a random phase, then heals the cluster (no more
// drops, crashes or deferred syncs; every node ticks once per round and the
// messages in flight are delivered in FIFO order), proposes one more value
// and requires that every node executes it and that all nodes end with the
// same committed prefix.
//
// The core may drop a proposal by design: a follower forwards it to the
// leader it heard from, and a leader that lost or restarted its leadership
// meanwhile drops the forward (see onForward); the node runtime's client
// then times out. The harness plays that client: if the proposing node has
// not executed its value within proposeTimeout rounds, it proposes a fresh
// one. At least one of these values must be executed everywhere.
func TestPropertyLiveness(t *testing.T) {
	forEachShape(t, func(t *rapid.T, c *propCluster) {
		c.randomPhase(t, 50, 200)

		c.lazy = false
		for _, nd := range c.nodes {
			c.sync(nd)
		}
		at := c.node(t)
		var attempts []string
		proposeAgain := func() {
			c.propose(at)
			attempts = append(attempts, fmt.Sprintf("n%d-v%d", at.id, c.nextVal))
		}
		proposeAgain()

		const rounds, proposeTimeout = 3000, 40
		for r := 1; r <= rounds; r++ {
			for _, nd := range c.nodes {
				c.tick(nd)
			}
			// Deliver in FIFO order what is in flight now; replies go out
			// in the next round.
			for range len(c.bag) {
				c.deliver(0)
			}
			if c.settled(attempts) {
				return
			}
			if r%proposeTimeout == 0 && !slices.ContainsFunc(attempts, func(d string) bool { return at.executed[d] }) {
				proposeAgain()
			}
		}
		var state []string
		for _, nd := range c.nodes {
			state = append(state, fmt.Sprintf("node %d: executed up to %d, chosenUpto %d, leader %d, pending %d",
				nd.id, nd.nextExec-1, nd.core.ChosenUpto(), nd.core.Leader(), nd.core.Pending()))
		}
		t.Fatalf("after healing and %d rounds, none of %q proposed at node %d is executed everywhere, or prefixes differ:\n%s",
			rounds, attempts, at.id, strings.Join(state, "\n"))
	})
}

// settled reports whether every node executed one of the attempts and all
// nodes executed the same prefix.
func (c *propCluster) settled(attempts []string) bool {
	for _, d := range attempts {
		if c.executedEverywhere(d) {
			for _, nd := range c.nodes {
				if nd.nextExec != c.nodes[0].nextExec {
					return false
				}
			}
			return true
		}
	}
	return false
}

func (c *propCluster) executedEverywhere(data string) bool {
	for _, nd := range c.nodes {
		if !nd.executed[data] {
			return false
		}
	}
	return true
}

package core_test

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/paxoskit/paxos/core"
	pb "github.com/paxoskit/paxos/core/paxospb"
)

// Transcript tests: every core/testdata/*.txt is a script of commands, each
// followed by the output it must produce, in the style of etcd-io/raft's
// interaction tests (without their datadriven dependency):
//
//	# a comment
//	command key=value ...
//	----
//	expected output, one line per item
//	(a blank line ends the block)
//
// The harness drives several Cores by hand, like the node runtime would but
// one explicit step at a time, so a script can stop between any two steps of
// the driver contract (doc.go) and show what the cores hold there. Output is
// compared exactly; `go test ./core/ -run Transcript -rewrite` writes the
// actual output into the files instead (review the diff).
//
// Commands (node=N names a node; where it is optional, leaving it out means
// every live node, in id order):
//
//	cluster nodes=3 [window=W election=E heartbeat=H retry=R learn=L lease=T]
//	    fresh cores 1..n of group 0; each one's first Ready (its boot record)
//	    is persisted, synced and advanced. Every Rand call returns 0, so each
//	    random backoff is 1 tick and a random peer is the lowest other id.
//	    A tick is 10000us and the lease T ticks (default 1): a grant, and a
//	    restarted node's hold, last T+1 ticks.
//	propose node=N value=V   Propose(0, V): prints seq=S or "queue full"
//	tick [node=N] [n=K]      K ticks (default 1)
//	ready node=N             take a Ready and print it; it stays in progress
//	persist node=N [sync=true]
//	                         write the Ready's records (unsynced); with sync,
//	                         make every written record durable
//	advance node=N           send the Ready's messages, execute its
//	                         Committed entries, call Advance
//	early node=N             put Early() into the network
//	committed node=N         execute Committed()
//	process [node=N]         early, then ready/persist sync=true/advance
//	                         until the node has nothing left
//	stabilize [quiet=true]   process every node and deliver everything in
//	                         flight, until nothing moves (no ticks); quiet
//	                         prints only executed values, violations and
//	                         Step errors
//	deliver|drop|dup|hold [from=F] [to=T] [type=ACCEPT] [n=K]
//	                         the first K (default all) in-flight messages
//	                         that match, in FIFO order: step them into the
//	                         receiver, discard them, append a copy of each,
//	                         or set them aside (delayed: stabilize and
//	                         deliver do not see them)
//	release                  put the held messages back, at the end
//	block [from=F] [to=T] [type=T1,T2]
//	                         from now on, drop the matching messages as they
//	                         enter the network (a lossy link); type takes a
//	                         list here and in deliver, drop, dup and hold
//	unblock                  remove every block
//	crash node=N             the core is lost with its unsynced records and
//	                         in-progress Ready; messages to it are dropped
//	restart node=N           core.New from the durable records; the core
//	                         holds for one lease (see cluster) before it
//	                         supports any proposer
//	state [node=N]           role, leader, promise, prefix, queue, executed
//	                         values and non-zero Stats, from exported accessors
//	master [node=N]          the master accessors: Ballot, MasterAt,
//	                         MasterReady, LeaderVersion, LeaseSeq, QuorumLost
//	readindex node=N id=I    ReadIndex(I)
//	readstates node=N        print ReadStates(): id, index (0: refused),
//	                         leader
//	transfer node=N to=T     Transfer(T): prints "refused" if it reports false
//	stepdown node=N [ticks=K]
//	                         StepDown(K)
//	disk node=N              the durable and unsynced records
//	network                  the messages in flight, then the held ones
//
// A command with nothing to say prints "ok". A script that misuses the
// harness (unknown command or argument, a node that is down, advance before
// the Ready's records are written, or synced when MustSync) fails the test
// at its line instead.
//
// Messages print as `1->2 ACCEPT b=1.1 entries=[3:b1.1 "x"] up=2`
// (b= ballot counter.node, i= instance, up= the sender's chosen prefix,
// of= the refused type of a REJECT; heartbeats and their acks show seq=,
// lease= the lease asked for, stray= the highest instance the acker holds
// an accepted value at, and a prepare started by a transfer shows
// transfer_from= the old leader's ballot; read index messages show seq=
// the read id and i= the index); `1->*` is a broadcast as the core
// emits it, which enters the network as one copy per other member. Messages
// to self never leave the core. Entries print as instance:ballot value, with
// `chosen` for chosen records and `chosen-by-ballot` for a chosen notice
// without data; values as "data", noop, or master(N) for node N's master
// record (a no-op marked master). A message delivered to a crashed
// node is lost. Executing a value checks that it follows the node's last
// executed instance, agrees with what other nodes executed there and is not
// a proposal the node executed at another instance; a violation prints a
// GAP, AGREEMENT VIOLATED or DUPLICATE line.

var rewriteTranscripts = flag.Bool("rewrite", false, "rewrite core/testdata/*.txt with the actual output")

func TestTranscripts(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "*.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no transcripts in testdata")
	}
	for _, path := range files {
		t.Run(strings.TrimSuffix(filepath.Base(path), ".txt"), func(t *testing.T) {
			runTranscript(t, path)
		})
	}
}

// trBlock is one command of a transcript with the lines before it.
type trBlock struct {
	pre  []string // comments and blank lines
	line int      // of the command, from 1
	cmd  string
	want []string
}

type trScript struct {
	blocks []trBlock
	tail   []string // comments after the last command
}

func parseTranscript(path, text string) (*trScript, error) {
	lines := strings.Split(text, "\n")
	if n := len(lines); n > 0 && lines[n-1] == "" {
		lines = lines[:n-1]
	}
	s := &trScript{}
	var pre []string
	for i := 0; i < len(lines); {
		l := lines[i]
		if strings.TrimSpace(l) == "" || strings.HasPrefix(l, "#") {
			pre = append(pre, l)
			i++
			continue
		}
		b := trBlock{pre: pre, line: i + 1, cmd: l}
		pre = nil
		i++
		if i >= len(lines) || lines[i] != "----" {
			return nil, fmt.Errorf("%s:%d: command %q not followed by ----", path, b.line, l)
		}
		for i++; i < len(lines) && lines[i] != ""; i++ {
			b.want = append(b.want, lines[i])
		}
		i++ // the blank line that ends the block
		s.blocks = append(s.blocks, b)
	}
	s.tail = pre
	return s, nil
}

func (s *trScript) String() string {
	var b strings.Builder
	for _, bl := range s.blocks {
		for _, l := range bl.pre {
			b.WriteString(l + "\n")
		}
		b.WriteString(bl.cmd + "\n----\n")
		for _, l := range bl.want {
			b.WriteString(l + "\n")
		}
		b.WriteString("\n")
	}
	for _, l := range s.tail {
		b.WriteString(l + "\n")
	}
	return b.String()
}

func runTranscript(t *testing.T, path string) {
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s, err := parseTranscript(path, string(data))
	if err != nil {
		t.Fatal(err)
	}
	h := &trHarness{t: t}
	for i := range s.blocks {
		bl := &s.blocks[i]
		h.where = fmt.Sprintf("%s:%d", path, bl.line)
		got := h.run(bl.cmd)
		if len(got) == 0 {
			got = []string{"ok"}
		}
		if *rewriteTranscripts {
			bl.want = got
			continue
		}
		if !slices.Equal(got, bl.want) {
			t.Fatalf("%s: %s\ngot:\n%s\nwant:\n%s", h.where, bl.cmd, strings.Join(got, "\n"), strings.Join(bl.want, "\n"))
		}
	}
	if *rewriteTranscripts {
		if err := os.WriteFile(path, []byte(s.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// trNode is one node: its core, its disk and the Ready it is handling.
type trNode struct {
	id      uint64
	core    *core.Core // nil while crashed
	durable []*pb.Record
	written []*pb.Record // written, not synced: lost on a crash
	rd      *core.Ready  // taken and not advanced yet
	wrote   bool         // rd's records are written
	exec    []*pb.Entry  // executed by this incarnation, in order
}

type trHarness struct {
	t     *testing.T
	where string
	cfg   core.Config
	nodes []*trNode
	net   []*pb.Message // in flight, FIFO
	held  []*pb.Message // delayed: out of the network until release
	// blocks drop the messages they match as they enter the network.
	blocks []trFilter
	// chosen holds the first value executed at each instance anywhere.
	chosen map[uint64]*pb.Value
}

func (h *trHarness) fatalf(format string, args ...any) {
	h.t.Helper()
	h.t.Fatalf("%s: %s", h.where, fmt.Sprintf(format, args...))
}

// trArgs are a command's key=value arguments; every one must be used.
type trArgs struct {
	h    *trHarness
	kv   map[string]string
	used map[string]bool
}

func (a *trArgs) str(k, def string) string {
	a.used[k] = true
	if v, ok := a.kv[k]; ok {
		return v
	}
	return def
}

func (a *trArgs) has(k string) bool {
	_, ok := a.kv[k]
	return ok
}

func (a *trArgs) int(k string, def int) int {
	v := a.str(k, "")
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		a.h.fatalf("%s=%q: want a count", k, v)
	}
	return n
}

func (a *trArgs) bool(k string) bool {
	v := a.str(k, "false")
	b, err := strconv.ParseBool(v)
	if err != nil {
		a.h.fatalf("%s=%q: want true or false", k, v)
	}
	return b
}

// node returns the live node named by node=; with all, nil means every one.
func (a *trArgs) node(all bool) *trNode {
	if all && !a.has("node") {
		a.used["node"] = true
		return nil
	}
	nd := a.anyNode()
	if nd.core == nil {
		a.h.fatalf("node %d is down", nd.id)
	}
	return nd
}

func (a *trArgs) anyNode() *trNode {
	id := a.int("node", 0)
	if id < 1 || id > len(a.h.nodes) {
		a.h.fatalf("no node=%d", id)
	}
	return a.h.nodes[id-1]
}

func (h *trHarness) run(cmd string) []string {
	f := strings.Fields(cmd)
	a := &trArgs{h: h, kv: map[string]string{}, used: map[string]bool{}}
	for _, kv := range f[1:] {
		k, v, ok := strings.Cut(kv, "=")
		if _, dup := a.kv[k]; !ok || dup {
			h.fatalf("argument %q is not a new key=value", kv)
		}
		a.kv[k] = v
	}
	if f[0] != "cluster" && h.nodes == nil {
		h.fatalf("%s before cluster", f[0])
	}
	var out []string
	switch f[0] {
	case "cluster":
		out = h.cluster(a)
	case "propose":
		nd := a.node(false)
		v := a.str("value", "")
		if v == "" {
			h.fatalf("propose needs value=")
		}
		seq, ok := nd.core.Propose(0, []byte(v))
		if ok {
			out = append(out, fmt.Sprintf("seq=%d", seq))
		} else {
			out = append(out, "queue full")
		}
	case "tick":
		n := a.int("n", 1)
		for _, nd := range h.pick(a.node(true)) {
			for range n {
				nd.core.Tick()
			}
		}
	case "ready":
		out = h.ready(a.node(false))
	case "persist":
		out = h.persist(a.node(false), a.bool("sync"))
	case "advance":
		out = h.advance(a.node(false))
	case "early":
		nd := a.node(false)
		out = h.early(nd)
		if len(out) == 0 {
			out = []string{"no early messages"}
		}
	case "committed":
		nd := a.node(false)
		out = h.execute(nd, nd.core.Committed())
		if len(out) == 0 {
			out = []string{"nothing new"}
		}
	case "process":
		for _, nd := range h.pick(a.node(true)) {
			out = append(out, h.process(nd, !a.has("node"))...)
		}
	case "stabilize":
		out = h.stabilize()
		if a.bool("quiet") {
			// Only what was executed, and anything that went wrong.
			out = slices.DeleteFunc(out, func(l string) bool {
				_, rest, _ := strings.Cut(l, ": ")
				return !strings.HasPrefix(rest, "exec ") && !strings.HasPrefix(rest, "  ") && !strings.HasPrefix(l, "  error: ")
			})
		}
	case "deliver", "drop", "dup", "hold":
		out = h.network(f[0], a)
	case "block":
		h.blocks = append(h.blocks, h.filter(a))
	case "unblock":
		h.blocks = nil
	case "release":
		for _, m := range h.held {
			out = append(out, "released "+trMsg(m))
		}
		h.net = append(h.net, h.held...)
		h.held = nil
		if len(out) == 0 {
			out = []string{"nothing held"}
		}
	case "crash":
		nd := a.node(false)
		out = append(out, fmt.Sprintf("node %d down: lost %d unsynced records, kept %d durable", nd.id, len(nd.written), len(nd.durable)))
		nd.core, nd.rd, nd.written, nd.exec = nil, nil, nil, nil
	case "restart":
		nd := a.anyNode()
		if nd.core != nil {
			h.fatalf("node %d is up; crash it first", nd.id)
		}
		h.start(nd)
		out = append(out, fmt.Sprintf("node %d up: boot=%d promised=%s chosenUpto=%d", nd.id, nd.core.Boot(), trBallot(nd.core.Promised()), nd.core.ChosenUpto()))
	case "state":
		var nodes []*trNode
		if a.has("node") {
			nodes = []*trNode{a.anyNode()}
		} else {
			a.used["node"] = true
			nodes = h.nodes
		}
		for _, nd := range nodes {
			out = append(out, h.state(nd)...)
		}
	case "readindex":
		nd := a.node(false)
		id := a.int("id", 0)
		if id == 0 {
			h.fatalf("readindex needs id=")
		}
		nd.core.ReadIndex(uint64(id))
	case "readstates":
		nd := a.node(false)
		for _, rs := range nd.core.ReadStates() {
			out = append(out, fmt.Sprintf("read id=%d index=%d leader=%d", rs.ID, rs.Index, rs.Leader))
		}
		if len(out) == 0 {
			out = []string{"none"}
		}
	case "transfer":
		nd := a.node(false)
		if !nd.core.Transfer(uint64(a.int("to", 0))) {
			out = []string{"refused"}
		}
	case "stepdown":
		nd := a.node(false)
		nd.core.StepDown(a.int("ticks", 0))
	case "master":
		for _, nd := range h.pick(a.node(true)) {
			out = append(out, h.master(nd))
		}
	case "disk":
		nd := a.anyNode()
		for _, r := range nd.durable {
			out = append(out, "durable "+trRecord(r))
		}
		for _, r := range nd.written {
			out = append(out, "unsynced "+trRecord(r))
		}
		if len(out) == 0 {
			out = []string{"empty"}
		}
	case "network":
		for _, m := range h.net {
			out = append(out, trMsg(m))
		}
		for _, m := range h.held {
			out = append(out, "held "+trMsg(m))
		}
		if len(out) == 0 {
			out = []string{"empty"}
		}
	default:
		h.fatalf("unknown command %q", f[0])
	}
	for k := range a.kv {
		if !a.used[k] {
			h.fatalf("%s takes no argument %q", f[0], k)
		}
	}
	return out
}

// pick returns nd, or every live node when nd is nil.
func (h *trHarness) pick(nd *trNode) []*trNode {
	if nd != nil {
		return []*trNode{nd}
	}
	var out []*trNode
	for _, n := range h.nodes {
		if n.core != nil {
			out = append(out, n)
		}
	}
	return out
}

func (h *trHarness) cluster(a *trArgs) []string {
	n := a.int("nodes", 3)
	if n < 1 {
		h.fatalf("cluster needs nodes >= 1")
	}
	h.cfg = core.Config{
		Window:         a.int("window", 0),
		ElectionTicks:  a.int("election", 0),
		HeartbeatTicks: a.int("heartbeat", 0),
		RetryTicks:     a.int("retry", 0),
		LearnTicks:     a.int("learn", 0),
		// A grant (and a restarted node's hold) lasts the lease plus one
		// tick: by default 1+1 ticks, so scenarios about other things need
		// few ticks to get past them.
		TickMicros:  10_000,
		LeaseMicros: uint64(a.int("lease", 1)) * 10_000,
		// Deterministic and short: every backoff is one tick.
		Rand: func(int) int { return 0 },
	}
	if h.cfg.LeaseMicros == 0 {
		h.fatalf("cluster needs lease >= 1")
	}
	for i := 1; i <= n; i++ {
		h.cfg.Peers = append(h.cfg.Peers, uint64(i))
	}
	h.nodes, h.net, h.held, h.blocks, h.chosen = nil, nil, nil, nil, map[uint64]*pb.Value{}
	for _, id := range h.cfg.Peers {
		nd := &trNode{id: id}
		h.nodes = append(h.nodes, nd)
		h.start(nd)
		for _, l := range h.process(nd, false) {
			if !strings.HasPrefix(l, "hardstate ") && l != "mustSync" {
				h.fatalf("node %d's first Ready is more than its boot record: %q", id, l)
			}
		}
	}
	return []string{fmt.Sprintf("nodes 1..%d up, boot records durable", n)}
}

func (h *trHarness) start(nd *trNode) {
	cfg := h.cfg
	cfg.ID = nd.id
	cfg.Peers = slices.Clone(h.cfg.Peers)
	c, err := core.New(cfg, core.SplitRecords(nd.durable))
	if err != nil {
		h.fatalf("node %d: New from %d durable records: %v", nd.id, len(nd.durable), err)
	}
	nd.core = c
	nd.rd, nd.written, nd.exec, nd.wrote = nil, nil, nil, false
}

func (h *trHarness) ready(nd *trNode) []string {
	if nd.rd != nil {
		h.fatalf("node %d already handles a Ready", nd.id)
	}
	if !nd.core.HasReady() {
		return []string{"no ready"}
	}
	rd := nd.core.Ready()
	nd.rd, nd.wrote = &rd, false
	return trReady(rd)
}

func (h *trHarness) persist(nd *trNode, sync bool) []string {
	n := 0
	if rd := nd.rd; rd != nil && !nd.wrote {
		if rd.HardState != nil {
			nd.written = append(nd.written, &pb.Record{HardState: rd.HardState})
			n++
		}
		for _, e := range rd.Entries {
			nd.written = append(nd.written, &pb.Record{Entry: e})
			n++
		}
		nd.wrote = true
	} else if !sync {
		h.fatalf("node %d has no Ready to persist", nd.id)
	}
	if sync {
		nd.durable = append(nd.durable, nd.written...)
		nd.written = nil
	}
	var did []string
	if n > 0 {
		did = append(did, fmt.Sprintf("wrote %d record%s", n, map[bool]string{true: "s"}[n > 1]))
	}
	if sync {
		did = append(did, "synced")
	}
	if len(did) == 0 {
		did = append(did, "nothing to write")
	}
	return []string{fmt.Sprintf("%s; durable=%d unsynced=%d", strings.Join(did, ", "), len(nd.durable), len(nd.written))}
}

func (h *trHarness) advance(nd *trNode) []string {
	rd := nd.rd
	if rd == nil {
		h.fatalf("node %d has no Ready to advance", nd.id)
	}
	hasRecords := rd.HardState != nil || len(rd.Entries) > 0
	if hasRecords && !nd.wrote {
		h.fatalf("node %d: advance before its Ready's records are persisted", nd.id)
	}
	if rd.MustSync && len(nd.written) > 0 {
		h.fatalf("node %d: advance before a MustSync Ready is synced", nd.id)
	}
	for _, m := range rd.Messages {
		h.send(nd, m)
	}
	out := h.execute(nd, rd.Committed)
	nd.rd = nil
	nd.core.Advance()
	return out
}

func (h *trHarness) early(nd *trNode) []string {
	var out []string
	for _, m := range nd.core.Early() {
		out = append(out, trMsg(m))
		h.send(nd, m)
	}
	return out
}

// process handles nd fully, as a runtime with a synchronous disk would.
// With named, its lines start with the node's id.
func (h *trHarness) process(nd *trNode, named bool) []string {
	var out []string
	prefix := ""
	if named {
		prefix = fmt.Sprintf("%d: ", nd.id)
	}
	for {
		for _, l := range h.early(nd) {
			out = append(out, prefix+"early "+l)
		}
		if nd.rd == nil && !nd.core.HasReady() {
			return out
		}
		if nd.rd == nil {
			for _, l := range h.ready(nd) {
				if !strings.HasPrefix(l, "committed ") { // exec lines follow
					out = append(out, prefix+l)
				}
			}
		}
		h.persist(nd, true)
		for _, l := range h.advance(nd) {
			out = append(out, prefix+l)
		}
	}
}

func (h *trHarness) stabilize() []string {
	var out []string
	for round := 0; ; round++ {
		if round > 100 {
			h.fatalf("stabilize: still busy after 100 rounds")
		}
		for _, nd := range h.pick(nil) {
			out = append(out, h.process(nd, true)...)
		}
		if len(h.net) == 0 {
			return out
		}
		for _, m := range h.take(len(h.net)) {
			out = append(out, h.deliver(m)...)
		}
	}
}

// send puts m into the network, one copy per other member if a broadcast.
func (h *trHarness) send(nd *trNode, m *pb.Message) {
	if m.From != nd.id || m.To == nd.id {
		h.fatalf("node %d sent a misaddressed message %s", nd.id, trMsg(m))
	}
	var copies []*pb.Message
	if m.To != 0 {
		copies = append(copies, proto.Clone(m).(*pb.Message))
	} else {
		for _, p := range nd.core.Members() {
			if p != nd.id {
				c := proto.Clone(m).(*pb.Message)
				c.To = p
				copies = append(copies, c)
			}
		}
	}
	for _, c := range copies {
		if !slices.ContainsFunc(h.blocks, func(f trFilter) bool { return f.match(c) }) {
			h.net = append(h.net, c)
		}
	}
}

// take removes the first n messages in flight.
func (h *trHarness) take(n int) []*pb.Message {
	ms := slices.Clone(h.net[:n])
	h.net = slices.Delete(h.net, 0, n)
	return ms
}

func (h *trHarness) deliver(m *pb.Message) []string {
	out := []string{trMsg(m)}
	nd := h.nodes[m.To-1]
	if nd.core == nil {
		return append(out, fmt.Sprintf("  lost: node %d is down", nd.id))
	}
	if err := nd.core.Step(m); err != nil {
		out = append(out, "  error: "+err.Error())
	}
	return out
}

// trFilter selects messages: zero fields match anything; types is a
// comma-separated list of type names without MSG_.
type trFilter struct {
	from, to uint64
	types    []string
}

func (h *trHarness) filter(a *trArgs) trFilter {
	f := trFilter{from: uint64(a.int("from", 0)), to: uint64(a.int("to", 0))}
	if typ := a.str("type", ""); typ != "" {
		for _, t := range strings.Split(typ, ",") {
			if _, ok := pb.MsgType_value["MSG_"+t]; !ok {
				h.fatalf("no message type %q", t)
			}
			f.types = append(f.types, "MSG_"+t)
		}
	}
	return f
}

func (f trFilter) match(m *pb.Message) bool {
	return (f.from == 0 || m.From == f.from) && (f.to == 0 || m.To == f.to) &&
		(f.types == nil || slices.Contains(f.types, m.Type.String()))
}

func (h *trHarness) network(op string, a *trArgs) []string {
	f, n := h.filter(a), a.int("n", 0)
	var hit, rest []*pb.Message
	for _, m := range h.net {
		if (n == 0 || len(hit) < n) && f.match(m) {
			hit = append(hit, m)
		} else {
			rest = append(rest, m)
		}
	}
	if len(hit) == 0 {
		return []string{"no message matches"}
	}
	var out []string
	switch op {
	case "deliver":
		h.net = rest
		for _, m := range hit {
			out = append(out, h.deliver(m)...)
		}
	case "drop":
		h.net = rest
		for _, m := range hit {
			out = append(out, "dropped "+trMsg(m))
		}
	case "hold":
		h.net = rest
		h.held = append(h.held, hit...)
		for _, m := range hit {
			out = append(out, "held "+trMsg(m))
		}
	case "dup":
		for _, m := range hit {
			h.net = append(h.net, proto.Clone(m).(*pb.Message))
			out = append(out, "duplicated "+trMsg(m))
		}
	}
	return out
}

// execute runs committed entries on nd's state machine, checking that they
// come in order, agree with every other node and run each proposal once.
func (h *trHarness) execute(nd *trNode, es []*pb.Entry) []string {
	var out []string
	for _, e := range es {
		out = append(out, fmt.Sprintf("exec %d %s", e.Instance, trValue(e.Value)))
		if want := uint64(len(nd.exec)) + 1; e.Instance != want {
			out = append(out, fmt.Sprintf("  GAP: node %d executed instance %d, want %d", nd.id, e.Instance, want))
		}
		if prev := h.chosen[e.Instance]; prev == nil {
			h.chosen[e.Instance] = e.Value
		} else if !core.SameProposal(prev, e.Value) {
			out = append(out, fmt.Sprintf("  AGREEMENT VIOLATED: instance %d chosen as %s elsewhere", e.Instance, trValue(prev)))
		}
		for _, x := range nd.exec {
			v := x.Value
			if !v.Noop && !e.Value.Noop && v.Node == e.Value.Node && v.Boot == e.Value.Boot && v.Seq == e.Value.Seq {
				out = append(out, fmt.Sprintf("  DUPLICATE: the proposal executed at instance %d too", x.Instance))
			}
		}
		nd.exec = append(nd.exec, e)
	}
	return out
}

func (h *trHarness) state(nd *trNode) []string {
	c := nd.core
	if c == nil {
		return []string{fmt.Sprintf("node %d: down", nd.id)}
	}
	role := "follower"
	if c.IsLeader() {
		role = "leader"
	}
	out := []string{fmt.Sprintf("node %d: %s leader=%d promised=%s boot=%d chosenUpto=%d pending=%d",
		nd.id, role, c.Leader(), trBallot(c.Promised()), c.Boot(), c.ChosenUpto(), c.Pending())}
	var ex []string
	for _, e := range nd.exec {
		ex = append(ex, fmt.Sprintf("%d:%s", e.Instance, trValue(e.Value)))
	}
	if len(ex) > 0 {
		out = append(out, "  executed "+strings.Join(ex, " "))
	}
	var st []string
	v := reflect.ValueOf(c.Stats)
	for i := range v.NumField() {
		if n := v.Field(i).Uint(); n != 0 {
			name := v.Type().Field(i).Name
			st = append(st, fmt.Sprintf("%s%s=%d", strings.ToLower(name[:1]), name[1:], n))
		}
	}
	if len(st) > 0 {
		out = append(out, "  stats "+strings.Join(st, " "))
	}
	return out
}

// master prints nd's master state: the ballot it leads or prepares with,
// its master record's instance and whether it is chosen, the master
// version it knows of, the heartbeat seq a majority acked, and whether it
// reports itself cut off from a majority.
func (h *trHarness) master(nd *trNode) string {
	c := nd.core
	return fmt.Sprintf("node %d: ballot=%s masterAt=%d ready=%v leaderVersion=%d leaseSeq=%d quorumLost=%v",
		nd.id, trBallot(c.Ballot()), c.MasterAt(), c.MasterReady(), c.LeaderVersion(), c.LeaseSeq(), c.QuorumLost())
}

func trBallot(b core.Ballot) string { return fmt.Sprintf("%d.%d", b.Counter, b.Node) }

func trPBBallot(b *pb.Ballot) string {
	if b == nil {
		return "0.0"
	}
	return fmt.Sprintf("%d.%d", b.Counter, b.Node)
}

func trValue(v *pb.Value) string {
	switch {
	case v == nil:
		return "nil"
	case v.Master:
		return fmt.Sprintf("master(%d)", v.Node)
	case v.Noop:
		return "noop"
	case v.Batch:
		return fmt.Sprintf("batch%q", v.Data)
	case v.Smid != 0:
		return fmt.Sprintf("sm%d:%q", v.Smid, v.Data)
	}
	return strconv.Quote(string(v.Data))
}

func trEntry(e *pb.Entry) string {
	s := fmt.Sprintf("%d:", e.Instance)
	if e.Ballot != nil {
		s += "b" + trPBBallot(e.Ballot) + " "
	}
	switch {
	case e.ByBallot:
		return s + "chosen-by-ballot"
	case e.Chosen:
		return s + "chosen " + trValue(e.Value)
	}
	return s + trValue(e.Value)
}

func trHardState(hs *pb.HardState) string {
	return fmt.Sprintf("hardstate promised=%s boot=%d chosenUpto=%d", trPBBallot(hs.Promised), hs.Boot, hs.ChosenUpto)
}

func trRecord(r *pb.Record) string {
	if r.HardState != nil {
		return trHardState(r.HardState)
	}
	return "entry " + trEntry(r.Entry)
}

func trReady(rd core.Ready) []string {
	var out []string
	if rd.HardState != nil {
		out = append(out, trHardState(rd.HardState))
	}
	for _, e := range rd.Entries {
		out = append(out, "entry "+trEntry(e))
	}
	if rd.MustSync {
		out = append(out, "mustSync")
	}
	for _, m := range rd.Messages {
		out = append(out, "msg "+trMsg(m))
	}
	for _, e := range rd.Committed {
		out = append(out, fmt.Sprintf("committed %d %s", e.Instance, trValue(e.Value)))
	}
	return out
}

func trMsg(m *pb.Message) string {
	var b strings.Builder
	to := "*"
	if m.To != 0 {
		to = strconv.FormatUint(m.To, 10)
	}
	fmt.Fprintf(&b, "%d->%s %s", m.From, to, strings.TrimPrefix(m.Type.String(), "MSG_"))
	if m.Ballot != nil {
		b.WriteString(" b=" + trPBBallot(m.Ballot))
	}
	if m.Type == pb.MsgType_MSG_REJECT {
		fmt.Fprintf(&b, " of=%s", strings.TrimPrefix(pb.MsgType(m.Instance).String(), "MSG_"))
	} else if m.Instance != 0 {
		fmt.Fprintf(&b, " i=%d", m.Instance)
	}
	if len(m.Entries) > 0 {
		var es []string
		for _, e := range m.Entries {
			es = append(es, trEntry(e))
		}
		b.WriteString(" entries=[" + strings.Join(es, ", ") + "]")
	}
	if len(m.Instances) > 0 {
		b.WriteString(" instances=" + strings.ReplaceAll(fmt.Sprint(m.Instances), " ", ","))
	}
	if len(m.Values) > 0 {
		var vs []string
		for _, v := range m.Values {
			vs = append(vs, trValue(v))
		}
		b.WriteString(" values=[" + strings.Join(vs, ", ") + "]")
	}
	if m.Seq != 0 {
		fmt.Fprintf(&b, " seq=%d", m.Seq)
	}
	if m.LeaseUs != 0 {
		fmt.Fprintf(&b, " lease=%dus", m.LeaseUs)
	}
	if m.Stray != 0 {
		fmt.Fprintf(&b, " stray=%d", m.Stray)
	}
	if m.TransferFrom != nil {
		b.WriteString(" transfer_from=" + trPBBallot(m.TransferFrom))
	}
	if m.ChosenUpto != 0 {
		fmt.Fprintf(&b, " up=%d", m.ChosenUpto)
	}
	return b.String()
}

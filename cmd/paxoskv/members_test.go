package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/paxoskit/paxos"
	"github.com/paxoskit/paxos/cmd/internal/cli"
	"github.com/paxoskit/paxos/internal/kvsm"
	"github.com/paxoskit/paxos/linearizability"
	"github.com/paxoskit/paxos/real"
)

// TestReplaceDeadNode runs three paxoskv processes under a steady load of
// four clients, kills node 3 with SIGKILL for good, starts node 4 with
// --join (it serves nothing, 503, until added), adds it with POST /members
// on node 1 and removes node 3 on node 2, with the load going on, node 4
// serving its share once added. Then porcupine must accept the history,
// node 4 must hold the same data as nodes 1 and 2, and every node's GET
// /members must show voters {1, 2, 4} in every group. Then node 5 joins
// as a follower (add-follower, sent to node 4): it must catch up, and once
// killed with SIGKILL the voters must go on writing.
func TestReplaceDeadNode(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs processes")
	}
	dir, bin := buildPaxoskv(t)
	ports, err := cli.FreePorts(10)
	if err != nil {
		t.Fatal(err)
	}
	paxosAddr := func(id int) string { return fmt.Sprintf("127.0.0.1:%d", ports[id-1]) }
	peersOf := func(ids ...int) string {
		var ps []string
		for _, id := range ids {
			ps = append(ps, fmt.Sprintf("%d=%s", id, paxosAddr(id)))
		}
		return strings.Join(ps, ",")
	}
	var procs []*proc // by id - 1, once started
	defer func() { stopProcs(t, dir, procs) }()
	// start runs node id with --peers naming peers (and --join if join).
	start := func(id int, join bool, peers ...int) *proc {
		p := newProc(t, dir, id, ports[4+id], "--peers", peersOf(peers...), "--groups", "2", "--timeout", "2s")
		if join {
			p.args = append(p.args, "--join")
		}
		p.start(t, bin)
		procs = append(procs, p)
		return p
	}
	n1, n2, n3 := start(1, false, 1, 2, 3), start(2, false, 1, 2, 3), start(3, false, 1, 2, 3)
	hc := &http.Client{Timeout: 3 * time.Second}
	admin := &http.Client{Timeout: 20 * time.Second} // a change waits up to --timeout per group
	for _, p := range []*proc{n1, n2, n3} {
		waitReady(t, hc, p.http)
	}

	// The load: four clients, each request to one of targets.
	rec := linearizability.NewRecorder()
	keys := []string{"a", "b", "c", "d", "e", "f", "g", "h"}
	var (
		targets  atomic.Pointer[[]*proc]
		stop     atomic.Bool
		wg       sync.WaitGroup
		mu       sync.Mutex
		failures = map[string]int{} // failed requests by kind and reason
		served   = map[int]int{}    // successful requests by node
	)
	targets.Store(&[]*proc{n1, n2, n3})
	for c := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(c), 11))
			versions := map[string]uint64{}
			for i := 0; !stop.Load(); i++ {
				ts := *targets.Load()
				p := ts[rng.IntN(len(ts))]
				op, mode := randomOp(rng, c, i, keys, versions)
				res, err := recordOp(hc, rec, c, p, op, mode)
				if err != nil {
					mu.Lock()
					failures[fmt.Sprintf("%v on node %d: %.70s", op.Kind, p.id, err)]++
					mu.Unlock()
					continue
				}
				versions[op.Key] = res.Version
				mu.Lock()
				served[p.id]++
				mu.Unlock()
			}
		}()
	}
	defer func() { // on a t.Fatal before the end, stop the clients
		stop.Store(true)
		wg.Wait()
	}()

	time.Sleep(2 * time.Second)
	targets.Store(&[]*proc{n1, n2})
	n3.kill()
	t.Logf("killed node 3 with SIGKILL, for good")
	time.Sleep(time.Second)

	// Node 4 joins: it learns from nodes 1 and 2 and serves nothing until
	// added.
	n4 := start(4, true, 4, 1, 2)
	waitStatus(t, hc, n4.http)
	for _, g := range getMembers(t, hc, n4.http).Groups {
		if g.Known || g.Member {
			t.Fatalf("node 4 before its addition: group %d %+v, want known and member false", g.Group, g)
		}
	}
	for _, op := range []kvsm.Op{{Kind: kvsm.Get, Key: "a"}, {Kind: kvsm.Put, Key: "a", Value: "x"}} {
		_, err := do(hc, n4.http, op)
		if he := (*httpError)(nil); !errors.As(err, &he) || he.status != http.StatusServiceUnavailable || !strings.Contains(he.msg, paxos.ErrNotMember.Error()) {
			t.Fatalf("%v on node 4 before its addition: %v, want 503 %q", op.Kind, err, paxos.ErrNotMember)
		}
	}
	if ans := staleRead(hc, n4.http, "a"); !strings.HasPrefix(ans, "503 ") {
		t.Fatalf("stale read on node 4 before its addition: %s, want 503", ans)
	}

	mustChange(t, admin, n1.http, memberChange{Op: "add", ID: 4, Addr: paxosAddr(4)}, func(g groupMembers) bool {
		return slices.Equal(g.Voters, []uint64{1, 2, 3, 4})
	})
	t.Logf("added node 4")
	waitReady(t, hc, n4.http)
	targets.Store(&[]*proc{n1, n2, n4})
	mustChange(t, admin, n2.http, memberChange{Op: "remove", ID: 3}, func(g groupMembers) bool {
		return slices.Equal(g.Voters, []uint64{1, 2, 4})
	})
	t.Logf("removed node 3")
	mu.Lock()
	servedBefore := served[4]
	mu.Unlock()
	time.Sleep(2 * time.Second)
	stop.Store(true)
	wg.Wait()

	mu.Lock()
	t.Logf("%d ops recorded; successful requests by node: %v", rec.Len(), served)
	for _, f := range slices.Sorted(maps.Keys(failures)) {
		t.Logf("failed %d times: %s", failures[f], f)
	}
	if served[4] == servedBefore || served[1] == 0 || served[2] == 0 {
		t.Errorf("node 4 served %d requests after node 3's removal, none more than before: %v", served[4]-servedBefore, served)
	}
	mu.Unlock()
	v := rec.Check(30 * time.Second)
	if !v.OK() {
		html := filepath.Join(os.TempDir(), "paxoskv-members.html")
		rec.WriteHTML(html, v)
		t.Fatalf("history of %d ops (%d unknown) not linearizable: %v (see %s)", v.Ops, v.Unknown, v.Result, html)
	}
	t.Logf("porcupine: %d ops, %d unknown, linearizable", v.Ops, v.Unknown)

	voters := []*proc{n1, n2, n4}
	finalWrites(t, hc, n1, keys, "final")
	converge(t, hc, voters, keys, "final")
	for _, p := range voters {
		for _, g := range getMembers(t, hc, p.http).Groups {
			if !g.Known || !g.Member || g.Version == 0 || !slices.Equal(g.Voters, []uint64{1, 2, 4}) || len(g.Followers) != 0 {
				t.Fatalf("GET /members on node %d: group %d %+v, want voters [1 2 4] and no follower", p.id, g.Group, g)
			}
		}
		for _, g := range nodeStatus(t, hc, p.http).Groups {
			if !g.Member || !slices.Equal(g.Voters, []uint64{1, 2, 4}) || g.ConfigVersion == 0 {
				t.Fatalf("/status of node %d: group %d %+v, want a member of voters [1 2 4]", p.id, g.Group, g)
			}
		}
	}
	for _, g := range getMembers(t, hc, n1.http).Groups {
		if i := slices.IndexFunc(g.Members, func(m memberJSON) bool { return m.ID == 4 }); g.Members[i].Addr != paxosAddr(4) {
			t.Fatalf("group %d names node 4 at %q, want %s", g.Group, g.Members[i].Addr, paxosAddr(4))
		}
	}

	// Node 5 joins as a follower, through node 4, which did not exist
	// when the cluster started.
	n5 := start(5, true, 5, 1, 2, 4)
	waitStatus(t, hc, n5.http)
	mustChange(t, admin, n4.http, memberChange{Op: "add-follower", ID: 5, Addr: paxosAddr(5)}, func(g groupMembers) bool {
		return slices.Equal(g.Followers, []uint64{5}) && slices.Equal(g.Voters, []uint64{1, 2, 4})
	})
	t.Logf("added node 5 as a follower")
	finalWrites(t, hc, n2, keys, "final2")
	converge(t, hc, []*proc{n1, n2, n4, n5}, keys, "final2")
	for _, g := range getMembers(t, hc, n5.http).Groups {
		if !g.Known || !g.Member || !slices.Equal(g.Followers, []uint64{5}) {
			t.Fatalf("GET /members on node 5: group %d %+v, want follower 5", g.Group, g)
		}
	}
	// A follower takes writes (the library forwards them) and serves
	// linearizable reads.
	if res, err := do(hc, n5.http, kvsm.Op{Kind: kvsm.Put, Key: "via5", Value: "f"}); err != nil || res.Version != 1 {
		t.Fatalf("PUT on follower 5: %+v, %v", res, err)
	}
	if res, err := doRead(hc, n5.http, kvsm.Op{Kind: kvsm.Get, Key: "via5"}, "index"); err != nil || res.Value != "f" {
		t.Fatalf("GET ?read=index on follower 5: %+v, %v", res, err)
	}

	// Its loss changes nothing for the voters.
	n5.kill()
	t.Logf("killed follower 5 with SIGKILL")
	for i, p := range voters {
		key := fmt.Sprintf("after5-%d", i)
		// Within --timeout (2 s): the voters never wait for the follower.
		if res, err := do(hc, p.http, kvsm.Op{Kind: kvsm.Put, Key: key, Value: "v"}); err != nil || res.Version != 1 {
			t.Fatalf("PUT %s on node %d with follower 5 down: %+v, %v", key, p.id, res, err)
		}
		for _, q := range voters {
			if res, err := do(hc, q.http, kvsm.Op{Kind: kvsm.Get, Key: key}); err != nil || res.Value != "v" {
				t.Fatalf("GET %s on node %d: %+v, %v", key, q.id, res, err)
			}
		}
	}
	// A dead follower is removed like any member.
	mustChange(t, admin, n1.http, memberChange{Op: "remove", ID: 5}, func(g groupMembers) bool {
		return len(g.Followers) == 0 && slices.Equal(g.Voters, []uint64{1, 2, 4})
	})
	if _, err := do(hc, n4.http, kvsm.Op{Kind: kvsm.Put, Key: "end", Value: "v"}); err != nil {
		t.Fatalf("PUT after removing follower 5: %v", err)
	}
}

// mustChange sends change with POST /members to addr until every group of
// addr's GET /members satisfies done: a 503, 504 or 409 is retried (the
// groups that made the change then refuse it with 400), any other failure
// is fatal.
func mustChange(t *testing.T, hc *http.Client, addr string, change memberChange, done func(groupMembers) bool) {
	t.Helper()
	body, _ := json.Marshal(change)
	deadline := time.Now().Add(30 * time.Second)
	for attempt := 1; ; attempt++ {
		resp, err := hc.Post("http://"+addr+"/members", "application/json", strings.NewReader(string(body)))
		var out changeReply
		status := 0
		if err == nil {
			status = resp.StatusCode
			err = json.NewDecoder(resp.Body).Decode(&out)
			resp.Body.Close()
		}
		all := err == nil && len(out.Groups) > 0
		for _, g := range out.Groups {
			all = all && done(g.groupMembers)
		}
		switch {
		case status == http.StatusOK && all:
			return
		case status == http.StatusOK:
			t.Fatalf("POST /members %s on %s: 200 but %+v", body, addr, out.Groups)
		case err == nil && status != http.StatusServiceUnavailable && status != http.StatusGatewayTimeout &&
			status != http.StatusConflict && (status != http.StatusBadRequest || attempt == 1):
			t.Fatalf("POST /members %s on %s: status %d: %s: %+v", body, addr, status, out.Error, out.Groups)
		}
		t.Logf("POST /members %s on %s, attempt %d: status %d, %v %s", body, addr, attempt, status, err, out.Error)
		ok := true
		for _, g := range getMembers(t, hc, addr).Groups {
			ok = ok && done(g)
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("POST /members %s on %s: not done after 30 s", body, addr)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// getMembers fetches GET /members of the node at addr.
func getMembers(t *testing.T, hc *http.Client, addr string) membersReply {
	t.Helper()
	var out membersReply
	getJSON(t, hc, addr, "/members", &out)
	return out
}

// waitStatus waits until the node at addr answers GET /status.
func waitStatus(t *testing.T, hc *http.Client, addr string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := hc.Get("http://" + addr + "/status")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("node at %s never answered /status: %v", addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// finalWrites writes value to every key through p.
func finalWrites(t *testing.T, hc *http.Client, p *proc, keys []string, value string) {
	t.Helper()
	for _, key := range keys {
		if _, err := do(hc, p.http, kvsm.Op{Kind: kvsm.Put, Key: key, Value: value}); err != nil {
			t.Fatalf("final put %s on node %d: %v", key, p.id, err)
		}
	}
}

// converge waits until every node of procs holds value for every key in
// its local copy, at the same version as the first.
func converge(t *testing.T, hc *http.Client, procs []*proc, keys []string, value string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		same, diff := true, ""
		for _, key := range keys {
			first := staleRead(hc, procs[0].http, key)
			if !strings.HasPrefix(first, "200 ") || !strings.HasSuffix(first, fmt.Sprintf(" %q", value)) {
				same, diff = false, fmt.Sprintf("key %s: node %d has %s", key, procs[0].id, first)
			}
			for _, p := range procs[1:] {
				if got := staleRead(hc, p.http, key); got != first {
					same, diff = false, fmt.Sprintf("key %s: node %d has %s, node %d has %s", key, procs[0].id, first, p.id, got)
				}
			}
		}
		if same {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("nodes did not converge: %s", diff)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestMembersAdmin checks GET and POST /members on a one-node cluster:
// the configuration's shape, bad input refused with 400 before anything
// is proposed, changes the library refuses (400 per group), and changes
// a one-voter cluster can make (followers need no vote).
func TestMembersAdmin(t *testing.T) {
	x := newTestServer(t, 2)
	members := func() []any {
		t.Helper()
		resp, body := x.do(t, "GET", "/members", nil)
		m := jsonBody(t, resp, body, http.StatusOK)
		if m["node_id"] != 1.0 {
			t.Fatalf("GET /members: %s", body)
		}
		gs, _ := m["groups"].([]any)
		if len(gs) != 2 {
			t.Fatalf("GET /members: %d groups, want 2: %s", len(gs), body)
		}
		return gs
	}
	for i, g := range members() {
		g := g.(map[string]any)
		want := fmt.Sprintf(`map[followers:[] from:1 group:%d known:true member:true members:[map[addr: follower:false id:1]] version:0 voters:[1]]`, i)
		if got := fmt.Sprint(g); got != want {
			t.Fatalf("GET /members group %d: %s, want %s", i, got, want)
		}
	}

	before := x.s.node.Stats().Proposals
	for _, body := range []string{
		``, `not json`, `[]`, `null`, `{"op":"add","id":4,"addr":"127.0.0.1:7004"} {}`, `{"op":"add","id":4,"addr":"127.0.0.1:7004"`,
		`{"op":"add","id":4,"addr":"127.0.0.1:7004","bogus":1}`, `{"op":"add","id":-1,"addr":"127.0.0.1:7004"}`,
		`{"op":"add","id":"4","addr":"127.0.0.1:7004"}`, `{"op":"add","id":1.5,"addr":"127.0.0.1:7004"}`,
		`{"op":"frobnicate","id":4}`, `{"op":"ADD","id":4,"addr":"127.0.0.1:7004"}`, `{"id":4}`,
		`{"op":"remove"}`, `{"op":"remove","id":0}`, `{"op":"promote"}`, `{"op":"add","addr":"127.0.0.1:7004"}`,
		`{"op":"add","id":4}`, `{"op":"add-follower","id":4}`, `{"op":"add","id":4,"addr":"nope"}`,
		`{"op":"add","id":4,"addr":":7004"}`, `{"op":"add","id":4,"addr":"h:0"}`, `{"op":"add","id":4,"addr":"h:70000"}`,
		`{"op":"add","id":4,"addr":"h:x"}`, `{"op":"remove","id":4,"addr":"h:1"}`, `{"op":"add","id":4,"addr":"h:1","old":1}`,
		`{"op":"replace","id":4,"addr":"h:1"}`, `{"op":"replace","old":4,"id":4,"addr":"h:1"}`, `{"op":"replace","old":1,"id":4}`,
		`{"op":"promote","id":2,"old":1}`,
	} {
		resp, b := x.do(t, "POST", "/members", strings.NewReader(body))
		msg := jsonError(t, resp, b, http.StatusBadRequest)
		checkMasterHeader(t, resp)
		t.Logf("%-60s -> %s", body, msg)
	}
	resp, b := x.do(t, "POST", "/members?force=1", strings.NewReader(`{"op":"remove","id":2}`))
	jsonError(t, resp, b, http.StatusBadRequest)
	resp, b = x.do(t, "POST", "/members", strings.NewReader(`{"op":"add","id":4,"addr":"`+strings.Repeat("h", maxChangeBody)+`:1"}`))
	jsonError(t, resp, b, http.StatusRequestEntityTooLarge)
	resp, b = x.do(t, "PUT", "/members", strings.NewReader(`{"op":"remove","id":2}`))
	jsonError(t, resp, b, http.StatusMethodNotAllowed)
	if got := resp.Header.Get("Allow"); got != "GET, HEAD, POST" {
		t.Fatalf("PUT /members: Allow %q", got)
	}
	if after := x.s.node.Stats().Proposals; after != before {
		t.Fatalf("bad requests proposed %d times", after-before)
	}

	// Refused by the library: 400 in every group, which report their
	// configuration.
	for _, body := range []string{
		`{"op":"add","id":1,"addr":"127.0.0.1:7001"}`, `{"op":"add-follower","id":1,"addr":"127.0.0.1:7001"}`,
		`{"op":"remove","id":9}`, `{"op":"remove","id":1}`, `{"op":"promote","id":1}`, `{"op":"promote","id":9}`,
		`{"op":"replace","old":9,"id":4,"addr":"127.0.0.1:7004"}`, `{"op":"move","id":9,"addr":"127.0.0.1:7009"}`,
	} {
		resp, b := x.do(t, "POST", "/members", strings.NewReader(body))
		if msg := jsonError(t, resp, b, http.StatusBadRequest); !strings.HasPrefix(msg, "group 0: "+paxos.ErrInvalidMembership.Error()) {
			t.Fatalf("POST /members %s: error %q", body, msg)
		}
		out := decodeChange(t, b)
		for i, g := range out.Groups {
			if g.Group != uint64(i) || g.Status != http.StatusBadRequest || g.Error == "" || g.Version != 0 || !slices.Equal(g.Voters, []uint64{1}) {
				t.Fatalf("POST /members %s: group %d %+v", body, i, g)
			}
		}
	}
	if after := x.s.node.Stats().Proposals; after != before {
		t.Fatalf("refused changes proposed %d times", after-before)
	}

	// Changes one voter can make: followers never vote.
	var version uint64
	for _, c := range []struct {
		body      string
		followers []uint64
		addr      string
	}{
		{`{"op":"add-follower","id":2,"addr":"127.0.0.1:7002"}`, []uint64{2}, "127.0.0.1:7002"},
		{`{"op":"replace","old":2,"id":3,"addr":"127.0.0.1:7003"}`, []uint64{3}, "127.0.0.1:7003"},
		{`{"op":"add-follower","id":3,"addr":"127.0.0.1:7003"}`, nil, ""}, // a member already
		{`{"op":"remove","id":3}`, []uint64{}, ""},
	} {
		resp, b := x.do(t, "POST", "/members", strings.NewReader(c.body))
		if c.followers == nil {
			jsonError(t, resp, b, http.StatusBadRequest)
			continue
		}
		jsonBody(t, resp, b, http.StatusOK)
		out := decodeChange(t, b)
		if len(out.Groups) != 2 || out.Error != "" {
			t.Fatalf("POST /members %s: %s", c.body, b)
		}
		for i, g := range out.Groups {
			if g.Group != uint64(i) || g.Status != http.StatusOK || g.Version <= version || g.From != g.Version+256 ||
				!slices.Equal(g.Voters, []uint64{1}) || !slices.Equal(g.Followers, c.followers) {
				t.Fatalf("POST /members %s: group %d %+v", c.body, i, g)
			}
			if c.addr != "" && g.Members[1].Addr != c.addr {
				t.Fatalf("POST /members %s: group %d members %+v", c.body, i, g.Members)
			}
		}
		version = min(out.Groups[0].Version, out.Groups[1].Version)
		for i, g := range members() {
			g := g.(map[string]any)
			if g["version"] != float64(out.Groups[i].Version) || fmt.Sprint(g["followers"]) != fmt.Sprint(c.followers) {
				t.Fatalf("GET /members after %s: group %d %v", c.body, i, g)
			}
		}
	}
	// /status shows the configuration; the node still serves.
	resp, b = x.do(t, "PUT", "/kv/k", strings.NewReader("v"))
	jsonBody(t, resp, b, http.StatusOK)
	if got, _ := x.getValue(t, "/kv/k"); string(got) != "v" {
		t.Fatalf("GET after the changes: %q", got)
	}
	st := nodeStatusOf(t, x)
	for _, g := range st.Groups {
		if !g.Member || g.ConfigVersion == 0 || !slices.Equal(g.Voters, []uint64{1}) || g.Followers == nil || len(g.Followers) != 0 {
			t.Fatalf("/status group %d: %+v", g.Group, g)
		}
	}
}

func decodeChange(t *testing.T, b []byte) changeReply {
	t.Helper()
	var out changeReply
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatalf("POST /members answer %s: %v", b, err)
	}
	return out
}

func nodeStatusOf(t *testing.T, x *testServer) statusReply {
	t.Helper()
	resp, b := x.do(t, "GET", "/status", nil)
	jsonBody(t, resp, b, http.StatusOK)
	var st statusReply
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatal(err)
	}
	return st
}

// TestJoinerServesNothing starts a node with --join whose member is not
// running: /status and GET /members work (not a member, configuration
// unknown), every /kv request and every change is a 503 naming
// ErrNotMember, and bad input is still a 400.
func TestJoinerServesNothing(t *testing.T) {
	ports, err := cli.FreePorts(2)
	if err != nil {
		t.Fatal(err)
	}
	sm := kvsm.New()
	node, err := runNode(paxos.Options{
		MyNode: 4, Join: true, ClusterID: 42, Groups: 2,
		StateMachines: []paxos.StateMachine{sm}, MaxValueSize: maxProposal,
	}, real.Config{Peers: map[uint64]string{
		4: fmt.Sprintf("127.0.0.1:%d", ports[0]),
		1: fmt.Sprintf("127.0.0.1:%d", ports[1]), // nobody there
	}, DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	s := &server{node: node, sm: sm, groups: 2, timeout: time.Second}
	ts := httptest.NewServer(s.handler())
	t.Cleanup(func() {
		ts.Close()
		node.Close()
	})
	x := &testServer{s: s, ts: ts}

	st := nodeStatusOf(t, x)
	if st.NodeID != 4 || len(st.Groups) != 2 {
		t.Fatalf("/status of the joiner: %+v", st)
	}
	for _, g := range st.Groups {
		if g.Member || len(g.Voters) != 0 {
			t.Fatalf("/status of the joiner: group %d %+v", g.Group, g)
		}
	}
	resp, b := x.do(t, "GET", "/members", nil)
	jsonBody(t, resp, b, http.StatusOK)
	var ms membersReply
	if err := json.Unmarshal(b, &ms); err != nil {
		t.Fatal(err)
	}
	for _, g := range ms.Groups {
		if g.Known || g.Member || len(g.Voters) != 0 || len(g.Followers) != 0 || len(g.Members) != 0 {
			t.Fatalf("GET /members of the joiner: group %d %+v", g.Group, g)
		}
	}
	for _, c := range []struct{ method, path string }{
		{"GET", "/kv/k"}, {"GET", "/kv/k?stale=1"}, {"GET", "/kv/k?read=index"}, {"GET", "/kv/k?read=propose"},
		{"PUT", "/kv/k"}, {"PUT", "/kv/k?version=0"}, {"DELETE", "/kv/k"},
	} {
		t0 := time.Now()
		resp, b := x.do(t, c.method, c.path, strings.NewReader("v"))
		if msg := jsonError(t, resp, b, http.StatusServiceUnavailable); !strings.Contains(msg, paxos.ErrNotMember.Error()) || !strings.Contains(msg, "POST /members") {
			t.Fatalf("%s %s on the joiner: %q", c.method, c.path, msg)
		}
		if took := time.Since(t0); took > 500*time.Millisecond {
			t.Fatalf("%s %s on the joiner took %v", c.method, c.path, took)
		}
	}
	resp, b = x.do(t, "POST", "/members", strings.NewReader(`{"op":"add","id":4,"addr":"127.0.0.1:7004"}`))
	if msg := jsonError(t, resp, b, http.StatusServiceUnavailable); !strings.Contains(msg, paxos.ErrNotMember.Error()) {
		t.Fatalf("POST /members on the joiner: %q", msg)
	}
	for _, g := range decodeChange(t, b).Groups {
		if g.Status != http.StatusServiceUnavailable {
			t.Fatalf("POST /members on the joiner: group %d %+v", g.Group, g)
		}
	}
	resp, b = x.do(t, "POST", "/members", strings.NewReader(`{"op":"add","id":4}`))
	jsonError(t, resp, b, http.StatusBadRequest)
	if p := node.Stats().Proposals; p != 0 {
		t.Fatalf("the joiner proposed %d times", p)
	}
}

func TestMembershipStatusMapping(t *testing.T) {
	for err, want := range map[error]int{
		fmt.Errorf("%w: node 4 is a member already", paxos.ErrInvalidMembership):       http.StatusBadRequest,
		fmt.Errorf("%w: group 0, change chosen at instance 9", paxos.ErrConfigChanged): http.StatusConflict,
		fmt.Errorf("%w: removed from group 0", paxos.ErrNotMember):                     http.StatusServiceUnavailable,
		fmt.Errorf("%w: group 1", paxos.ErrNoQuorum):                                   http.StatusServiceUnavailable,
		&paxos.NotMasterError{Master: paxos.Master{Node: 2}}:                           http.StatusServiceUnavailable,
		fmt.Errorf("%w: %w", paxos.ErrTimeout, paxos.ErrNoQuorum):                      http.StatusGatewayTimeout,
		paxos.ErrTimeout: http.StatusGatewayTimeout,
	} {
		if got := statusOf(err); got != want {
			t.Errorf("statusOf(%v) = %d, want %d", err, got, want)
		}
	}
}

func TestServeJoinFlags(t *testing.T) {
	args := func(peers string) []string {
		return []string{"--id", "4", "--http", "127.0.0.1:8004", "--peers", peers, "--data", t.TempDir(), "--join"}
	}
	c, err := parseServe(args("4=127.0.0.1:7004,1=127.0.0.1:7001,2=127.0.0.1:7002"), io.Discard)
	if err != nil || !c.join || len(c.peers) != 3 {
		t.Fatalf("parseServe(--join) = %+v, %v", c, err)
	}
	for _, peers := range []string{"4=127.0.0.1:7004", "1=127.0.0.1:7001,2=127.0.0.1:7002"} {
		var fe *cli.FlagError
		if _, err := parseServe(args(peers), io.Discard); !errors.As(err, &fe) {
			t.Fatalf("parseServe(--join --peers %s) = %v, want a flag error", peers, err)
		}
	}
	if c, err := parseServe(args("4=127.0.0.1:7004,1=127.0.0.1:7001")[:8], io.Discard); err != nil || c.join {
		t.Fatalf("parseServe without --join = %+v, %v", c, err)
	}
}

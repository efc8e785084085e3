package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/paxoskit/paxos/cmd/internal/cli"
)

// TestMasterCluster runs three paxoskv processes with a short lease,
// --http-peers and --redirect, and checks what the master brings to the
// HTTP API: /status agrees on a master; a linearizable GET returns the
// value a PUT wrote in every ?read= mode, on the master and on a follower,
// where read=lease is a 503 naming the master; every answer carries
// X-Paxoskv-Master; a write on a follower is redirected to the master.
// Then two of the three processes are killed: on the survivor, PUTs and
// linearizable GETs must fail with 503 (no quorum) well within the
// default 5 s request timeout.
func TestMasterCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs processes")
	}
	dir, bin := buildPaxoskv(t)
	ports, err := cli.FreePorts(6)
	if err != nil {
		t.Fatal(err)
	}
	var peers, httpPeers []string
	for i := range 3 {
		peers = append(peers, fmt.Sprintf("%d=127.0.0.1:%d", i+1, ports[i]))
		httpPeers = append(httpPeers, fmt.Sprintf("%d=127.0.0.1:%d", i+1, ports[3+i]))
	}
	procs := make([]*proc, 3)
	for i := range procs {
		p := newProc(t, dir, i+1, ports[3+i], "--peers", strings.Join(peers, ","), "--master-lease", "500ms",
			"--http-peers", strings.Join(httpPeers, ","), "--redirect")
		p.start(t, bin)
		procs[i] = p
	}
	defer stopProcs(t, dir, procs)
	hc := &http.Client{
		Timeout:       10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	for _, p := range procs {
		waitReady(t, hc, p.http)
	}

	// Every node names the same master, which knows it is.
	var master *proc
	deadline := time.Now().Add(10 * time.Second)
	for master == nil {
		if time.Now().After(deadline) {
			t.Fatalf("the nodes did not agree on a master within 10 s")
		}
		time.Sleep(50 * time.Millisecond)
		var sts []statusReply
		for _, p := range procs {
			sts = append(sts, getStatus(t, hc, p.http))
		}
		m := sts[0].Groups[0].Master
		agree := m != 0
		for _, st := range sts {
			g := st.Groups[0]
			agree = agree && g.Master == m && g.MasterVersion == sts[0].Groups[0].MasterVersion && g.IsMaster == (st.NodeID == m)
		}
		if agree {
			master = procs[m-1]
		}
	}
	var followers []*proc
	for _, p := range procs {
		if p != master {
			followers = append(followers, p)
		}
	}
	t.Logf("master: node %d", master.id)

	ans := call(t, hc, "PUT", master.http, "/kv/greeting", "hello")
	ans.want(t, http.StatusOK)
	if ans.master != master.id {
		t.Fatalf("PUT on the master: %s names %d, want %d", masterHeader, ans.master, master.id)
	}
	for _, p := range procs {
		for _, mode := range []string{"", "auto", "lease", "index", "propose"} {
			path := "/kv/greeting"
			if mode != "" {
				path += "?read=" + mode
			}
			ans := call(t, hc, "GET", p.http, path, "")
			if ans.master != master.id {
				t.Fatalf("GET %s on node %d: %s names %d, want %d", path, p.id, masterHeader, ans.master, master.id)
			}
			if mode == "lease" && p != master {
				// Off the master a lease read is refused, naming the master.
				ans.want(t, http.StatusServiceUnavailable)
				if m, _ := ans.json["master"].(float64); int(m) != master.id {
					t.Fatalf("GET %s on follower %d: body %s does not name master %d", path, p.id, ans.body, master.id)
				}
				continue
			}
			ans.want(t, http.StatusOK)
			if ans.body != "hello" || ans.resp.Header.Get(versionHeader) != "1" {
				t.Fatalf("GET %s on node %d = %q version %s, want \"hello\" version 1", path, p.id, ans.body, ans.resp.Header.Get(versionHeader))
			}
		}
	}

	// Writes on a follower are redirected to the master, query included.
	f := followers[0]
	for _, c := range []struct{ method, path string }{{"PUT", "/kv/greeting?version=1"}, {"DELETE", "/kv/greeting"}} {
		ans := call(t, hc, c.method, f.http, c.path, "bye")
		ans.want(t, http.StatusTemporaryRedirect)
		if loc, want := ans.resp.Header.Get("Location"), "http://"+master.http+c.path; loc != want {
			t.Fatalf("%s %s on follower %d: Location %q, want %q", c.method, c.path, f.id, loc, want)
		}
	}
	ans = call(t, hc, "PUT", master.http, "/kv/greeting?version=1", "bye")
	ans.want(t, http.StatusOK)
	// A read is not redirected: a follower serves it.
	ans = call(t, hc, "GET", f.http, "/kv/greeting", "")
	ans.want(t, http.StatusOK)
	if ans.body != "bye" {
		t.Fatalf("GET on follower %d after the compare-and-set: %q, want \"bye\"", f.id, ans.body)
	}

	// Two of three down: the survivor fails fast with 503. Until it
	// notices, it may still redirect to the dead master (307), and a PUT
	// in flight when it learns it lost its majority answers 504 (outcome
	// unknown); none may wait for the timeout.
	survivor := followers[1]
	master.kill()
	followers[0].kill()
	t.Logf("killed nodes %d and %d; node %d survives", master.id, followers[0].id, survivor.id)
	const fast = 2 * time.Second
	deadline = time.Now().Add(10 * time.Second)
	for i := 0; ; i++ {
		ans := call(t, hc, "PUT", survivor.http, fmt.Sprintf("/kv/lost%d", i), "x")
		switch code := ans.resp.StatusCode; {
		case ans.took >= fast, code != http.StatusServiceUnavailable && code != http.StatusGatewayTimeout && code != http.StatusTemporaryRedirect:
			t.Fatalf("PUT on the survivor: status %d after %v, want 503, 504 or 307 within %v; body %s", code, ans.took, fast, ans.body)
		case code == http.StatusTemporaryRedirect:
			time.Sleep(20 * time.Millisecond)
		}
		if ans.resp.StatusCode == http.StatusServiceUnavailable {
			t.Logf("survivor: first 503 on PUT %d, %v", i, ans.took)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the survivor never answered a PUT with 503; last: %d %s", ans.resp.StatusCode, ans.body)
		}
	}
	for _, path := range []string{"/kv/greeting", "/kv/greeting?read=index", "/kv/greeting?read=lease", "/kv/greeting?read=propose"} {
		ans := call(t, hc, "GET", survivor.http, path, "")
		ans.want(t, http.StatusServiceUnavailable)
		if ans.took >= fast {
			t.Fatalf("GET %s on the survivor took %v, want < %v", path, ans.took, fast)
		}
		if ans.master != 0 {
			t.Fatalf("GET %s on the survivor: %s names %d, want 0 (none known)", path, masterHeader, ans.master)
		}
	}
	ans = call(t, hc, "PUT", survivor.http, "/kv/greeting", "z")
	ans.want(t, http.StatusServiceUnavailable)
	if ans.took >= fast || !strings.Contains(ans.json["error"].(string), "quorum") {
		t.Fatalf("PUT on the survivor: %v, %s; want a fast no-quorum error", ans.took, ans.body)
	}
	if st := getStatus(t, hc, survivor.http); st.Stats.NoQuorum == 0 || st.Groups[0].IsMaster {
		t.Fatalf("survivor status: %+v", st)
	}
}

// answer is one HTTP exchange of TestMasterCluster.
type answer struct {
	resp   *http.Response
	body   string
	json   map[string]any // the body decoded, when JSON
	master int            // the X-Paxoskv-Master header
	took   time.Duration
}

// want checks the status, and that an error answer is JSON with "error".
func (a answer) want(t *testing.T, status int) {
	t.Helper()
	r := a.resp.Request
	if a.resp.StatusCode != status {
		t.Fatalf("%s %s: status %d, want %d; body %s", r.Method, r.URL, a.resp.StatusCode, status, a.body)
	}
	if status >= 400 {
		if msg, _ := a.json["error"].(string); msg == "" {
			t.Fatalf("%s %s: status %d without a JSON error: %s", r.Method, r.URL, status, a.body)
		}
	}
}

// call sends one request to addr and reads the answer.
func call(t *testing.T, hc *http.Client, method, addr, path, body string) answer {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+addr+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, req.URL, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading the body: %v", method, req.URL, err)
	}
	a := answer{resp: resp, body: string(b), took: time.Since(t0)}
	if resp.Header.Get("Content-Type") == "application/json" {
		if err := json.Unmarshal(b, &a.json); err != nil {
			t.Fatalf("%s %s: bad JSON %q: %v", method, req.URL, b, err)
		}
	}
	if _, err := fmt.Sscan(resp.Header.Get(masterHeader), &a.master); err != nil {
		t.Fatalf("%s %s: %s header %q", method, req.URL, masterHeader, resp.Header.Get(masterHeader))
	}
	return a
}

// getStatus fetches and decodes GET /status.
func getStatus(t *testing.T, hc *http.Client, addr string) statusReply {
	t.Helper()
	a := call(t, hc, "GET", addr, "/status", "")
	a.want(t, http.StatusOK)
	var st statusReply
	if err := json.Unmarshal([]byte(a.body), &st); err != nil || len(st.Groups) == 0 {
		t.Fatalf("/status of %s: %v: %s", addr, err, a.body)
	}
	return st
}

package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/paxoskit/paxos"
	"github.com/paxoskit/paxos/cmd/internal/cli"
	"github.com/paxoskit/paxos/internal/kvsm"
	"github.com/paxoskit/paxos/real"
)

// TestMain lets a test run the paxoskv command itself: with
// PAXOSKV_RUN_MAIN=1 the test binary is paxoskv, its arguments those of
// the command.
func TestMain(m *testing.M) {
	if os.Getenv("PAXOSKV_RUN_MAIN") == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// runMain runs the test binary as paxoskv with args.
func runMain(args ...string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), "PAXOSKV_RUN_MAIN=1")
	return cmd
}

// testServer is one single-node paxoskv cluster behind an httptest server.
type testServer struct {
	s  *server
	ts *httptest.Server
}

func newTestServer(t *testing.T, groups int) *testServer {
	t.Helper()
	ports, err := cli.FreePorts(1)
	if err != nil {
		t.Fatal(err)
	}
	sm := kvsm.New()
	node, err := real.RunNode(paxos.Options{
		MyNode:        1,
		ClusterID:     42,
		Groups:        groups,
		StateMachines: []paxos.StateMachine{sm},
		MaxValueSize:  maxProposal,
	}, real.Config{Peers: map[uint64]string{1: fmt.Sprintf("127.0.0.1:%d", ports[0])}, DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	s := &server{node: node, sm: sm, groups: groups, timeout: 5 * time.Second}
	ts := httptest.NewServer(s.handler())
	t.Cleanup(func() {
		ts.Close()
		node.Close()
	})
	x := &testServer{s: s, ts: ts}
	// Wait until the node answers a linearizable read.
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, _ := x.do(t, "GET", "/kv/ready", nil)
		if resp.StatusCode == http.StatusNotFound {
			return x
		}
		if time.Now().After(deadline) {
			t.Fatalf("node never served a read: last status %d", resp.StatusCode)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// do sends one request and returns the response with its body read.
func (x *testServer) do(t *testing.T, method, path string, body io.Reader) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, x.ts.URL+path, body)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := x.ts.Client().Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", method, path, err)
	}
	return resp, b
}

// jsonBody checks that resp is JSON with the given status and decodes it.
func jsonBody(t *testing.T, resp *http.Response, body []byte, status int) map[string]any {
	t.Helper()
	if resp.StatusCode != status {
		t.Fatalf("%s %s: status %d, want %d; body %s", resp.Request.Method, resp.Request.URL.Path, resp.StatusCode, status, body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("%s %s: Content-Type %q, want application/json; body %q", resp.Request.Method, resp.Request.URL.Path, ct, body)
	}
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatalf("body %q is not a JSON object: %v", body, err)
	}
	return m
}

// jsonError checks that the answer is a JSON error with status and returns
// its message.
func jsonError(t *testing.T, resp *http.Response, body []byte, status int) string {
	t.Helper()
	m := jsonBody(t, resp, body, status)
	msg, _ := m["error"].(string)
	if msg == "" {
		t.Fatalf("status %d body %s has no \"error\" string", status, body)
	}
	return msg
}

// getValue does a GET and checks it found a value; it returns the raw body
// and the version header.
func (x *testServer) getValue(t *testing.T, path string) ([]byte, uint64) {
	t.Helper()
	resp, body := x.do(t, "GET", path, nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: status %d, body %s", path, resp.StatusCode, body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/octet-stream" {
		t.Fatalf("GET %s: Content-Type %q, want application/octet-stream", path, ct)
	}
	v, err := strconv.ParseUint(resp.Header.Get(versionHeader), 10, 64)
	if err != nil {
		t.Fatalf("GET %s: %s header %q: %v", path, versionHeader, resp.Header.Get(versionHeader), err)
	}
	return body, v
}

func TestOpEncodingKeepsBytes(t *testing.T) {
	all := make([]byte, 256)
	for i := range all {
		all[i] = byte(i)
	}
	for _, v := range []string{"\xff\xfe\x00\x01", string(all), "\xc3\x28", ""} {
		op := kvsm.Op{Kind: kvsm.CAS, Key: "k\xff", Value: v, Version: 3}
		got, err := kvsm.Decode(op.Encode())
		if err != nil || got != op {
			t.Fatalf("Decode(Encode(%+v)) = %+v, %v", op, got, err)
		}
	}
}

func TestBinaryValueRoundTrip(t *testing.T) {
	x := newTestServer(t, 2)
	all := make([]byte, 256)
	for i := range all {
		all[i] = byte(255 - i)
	}
	for i, want := range [][]byte{[]byte("\xff\xfe\x00\x01"), all, {}} {
		path := fmt.Sprintf("/kv/bin%d", i)
		resp, body := x.do(t, "PUT", path, bytes.NewReader(want))
		if m := jsonBody(t, resp, body, http.StatusOK); m["version"] != 1.0 {
			t.Fatalf("PUT %s: body %s, want version 1", path, body)
		}
		for _, q := range []string{"", "?stale=1"} {
			got, ver := x.getValue(t, path+q)
			if !bytes.Equal(got, want) || ver != 1 {
				t.Fatalf("GET %s%s = %q version %d, want %q version 1", path, q, got, ver, want)
			}
		}
	}
}

func TestNotFoundHasVersion(t *testing.T) {
	x := newTestServer(t, 1)
	x.do(t, "PUT", "/kv/gone", strings.NewReader("v"))
	resp, body := x.do(t, "DELETE", "/kv/gone", nil)
	if m := jsonBody(t, resp, body, http.StatusOK); m["found"] != true || m["version"] != 2.0 {
		t.Fatalf("DELETE: %s, want found true, version 2", body)
	}
	resp, body = x.do(t, "GET", "/kv/gone", nil)
	if msg := jsonError(t, resp, body, http.StatusNotFound); msg != "not found" {
		t.Fatalf("GET deleted key: error %q", msg)
	}
	if h := resp.Header.Get(versionHeader); h != "2" {
		t.Fatalf("GET deleted key: %s = %q, want 2", versionHeader, h)
	}
}

func TestUnknownPathIsJSON404(t *testing.T) {
	x := newTestServer(t, 1)
	for _, p := range []string{"/nope", "/", "/kv", "/statusx"} {
		resp, body := x.do(t, "GET", p, nil)
		jsonError(t, resp, body, http.StatusNotFound)
	}
}

func TestWrongMethodIsJSON405(t *testing.T) {
	x := newTestServer(t, 1)
	for _, c := range []struct{ method, path, allow string }{
		{"POST", "/kv/x", "GET, HEAD, PUT, DELETE"},
		{"PATCH", "/kv/", "GET, HEAD, PUT, DELETE"},
		{"POST", "/status", "GET, HEAD"},
	} {
		resp, body := x.do(t, c.method, c.path, strings.NewReader("v"))
		jsonError(t, resp, body, http.StatusMethodNotAllowed)
		if got := resp.Header.Get("Allow"); got != c.allow {
			t.Fatalf("%s %s: Allow %q, want %q", c.method, c.path, got, c.allow)
		}
	}
	// POST must not have written anything.
	resp, body := x.do(t, "GET", "/kv/x", nil)
	jsonError(t, resp, body, http.StatusNotFound)
}

func TestKeyValidation(t *testing.T) {
	x := newTestServer(t, 1)
	for _, m := range []string{"PUT", "GET", "DELETE"} {
		resp, body := x.do(t, m, "/kv/", strings.NewReader("v"))
		if msg := jsonError(t, resp, body, http.StatusBadRequest); msg != "empty key" {
			t.Fatalf("%s /kv/: error %q", m, msg)
		}
	}
	long := strings.Repeat("k", maxKey+1)
	resp, body := x.do(t, "PUT", "/kv/"+long, strings.NewReader("v"))
	if msg := jsonError(t, resp, body, http.StatusBadRequest); !strings.Contains(msg, strconv.Itoa(maxKey)) {
		t.Fatalf("long key: error %q does not name the limit %d", msg, maxKey)
	}
	// The longest key with the largest value fits the node's MaxValueSize.
	big := bytes.Repeat([]byte{0xab}, maxValue)
	resp, body = x.do(t, "PUT", "/kv/"+long[1:], bytes.NewReader(big))
	jsonBody(t, resp, body, http.StatusOK)
	if got, _ := x.getValue(t, "/kv/"+long[1:]); !bytes.Equal(got, big) {
		t.Fatalf("GET of the largest value: %d bytes back", len(got))
	}
	// Keys are taken literally: no path cleaning, no redirect.
	for _, k := range []string{"a//b", "a/./b", "a/../b", "a/", "/"} {
		resp, body = x.do(t, "PUT", "/kv/"+k, strings.NewReader(k))
		jsonBody(t, resp, body, http.StatusOK)
		if e := x.s.sm.Lookup(x.s.groupOf(k), k); !e.Exists || e.Value != k {
			t.Fatalf("PUT /kv/%s: state machine has %+v for key %q", k, e, k)
		}
		if got, _ := x.getValue(t, "/kv/"+k); string(got) != k {
			t.Fatalf("GET /kv/%s = %q", k, got)
		}
	}
	// Keys may hold any bytes, escaped in the path.
	resp, body = x.do(t, "PUT", "/kv/a%20b%2Fc%FF", strings.NewReader("v"))
	jsonBody(t, resp, body, http.StatusOK)
	if e := x.s.sm.Lookup(x.s.groupOf("a b/c\xff"), "a b/c\xff"); !e.Exists || e.Value != "v" {
		t.Fatalf("escaped key: state machine has %+v", e)
	}
}

func TestStaleFlagIsBoolean(t *testing.T) {
	x := newTestServer(t, 1)
	resp, body := x.do(t, "PUT", "/kv/s", strings.NewReader("v"))
	jsonBody(t, resp, body, http.StatusOK)
	for _, c := range []struct {
		q     string
		stale bool
	}{{"", false}, {"?stale=0", false}, {"?stale=false", false}, {"?stale=f", false},
		{"?stale=1", true}, {"?stale=true", true}, {"?stale=T", true}, {"?stale=0&read=index", false}} {
		before := x.s.node.Stats()
		got, ver := x.getValue(t, "/kv/s"+c.q)
		after := x.s.node.Stats()
		if string(got) != "v" || ver != 1 {
			t.Fatalf("GET%s = %q@%d", c.q, got, ver)
		}
		if after.Proposals != before.Proposals {
			t.Fatalf("GET%s proposed: proposals %d -> %d", c.q, before.Proposals, after.Proposals)
		}
		if linearizable := reads(after) > reads(before); linearizable == c.stale {
			t.Fatalf("GET%s: linearizable reads %d -> %d; want stale=%v", c.q, reads(before), reads(after), c.stale)
		}
	}
	for _, q := range []string{"?stale=", "?stale", "?stale=yes", "?stale=1&stale=0", "?stael=1", "?stale=1&read=index"} {
		resp, body := x.do(t, "GET", "/kv/s"+q, nil)
		jsonError(t, resp, body, http.StatusBadRequest)
	}
}

// reads counts a node's linearizable reads served without a write.
func reads(s paxos.Stats) uint64 { return s.LeaseReads + s.IndexReads }

// TestReadModes checks that a linearizable GET in each ?read= mode a
// one-node cluster serves returns what the PUT wrote, that only
// read=propose goes through Paxos, and that every answer names the master
// (ReadLease is covered by TestMasterCluster: a one-node cluster has no
// lease).
func TestReadModes(t *testing.T) {
	x := newTestServer(t, 2)
	resp, body := x.do(t, "PUT", "/kv/m", strings.NewReader("\xffv"))
	jsonBody(t, resp, body, http.StatusOK)
	checkMasterHeader(t, resp)
	for _, q := range []string{"", "?read=auto", "?read=index", "?read=propose"} {
		before := x.s.node.Stats()
		got, ver := x.getValue(t, "/kv/m"+q)
		after := x.s.node.Stats()
		if string(got) != "\xffv" || ver != 1 {
			t.Fatalf("GET /kv/m%s = %q@%d, want \"\\xffv\"@1", q, got, ver)
		}
		if proposed := after.Proposals > before.Proposals; proposed != (q == "?read=propose") {
			t.Fatalf("GET /kv/m%s: proposals %d -> %d", q, before.Proposals, after.Proposals)
		}
		if read := reads(after) > reads(before); read == (q == "?read=propose") {
			t.Fatalf("GET /kv/m%s: linearizable reads %d -> %d", q, reads(before), reads(after))
		}
		resp, body := x.do(t, "GET", "/kv/missing"+q, nil)
		jsonError(t, resp, body, http.StatusNotFound)
		checkMasterHeader(t, resp)
	}
	for _, p := range []string{"/status", "/nope"} {
		resp, _ := x.do(t, "GET", p, nil)
		checkMasterHeader(t, resp)
	}
}

// checkMasterHeader checks that resp names a master, a node id or 0.
func checkMasterHeader(t *testing.T, resp *http.Response) uint64 {
	t.Helper()
	h := resp.Header.Get(masterHeader)
	m, err := strconv.ParseUint(h, 10, 64)
	if err != nil {
		t.Fatalf("%s %s: %s header %q: %v", resp.Request.Method, resp.Request.URL, masterHeader, h, err)
	}
	return m
}

func TestBadReadMode(t *testing.T) {
	x := newTestServer(t, 1)
	for _, q := range []string{"?read=", "?read", "?read=Lease", "?read=stale", "?read=auto&read=index", "?stale=true&read=auto"} {
		resp, body := x.do(t, "GET", "/kv/k"+q, nil)
		msg := jsonError(t, resp, body, http.StatusBadRequest)
		checkMasterHeader(t, resp)
		if !strings.Contains(msg, "read") {
			t.Fatalf("GET /kv/k%s: error %q does not name the read parameter", q, msg)
		}
	}
	resp, body := x.do(t, "PUT", "/kv/k?read=index", strings.NewReader("v"))
	jsonError(t, resp, body, http.StatusBadRequest) // reads only
}

func TestVersionParam(t *testing.T) {
	x := newTestServer(t, 1)
	for _, q := range []string{"?version=", "?version", "?version=abc", "?version=-1", "?versoin=0", "?version=0&version=0"} {
		resp, body := x.do(t, "PUT", "/kv/c"+q, strings.NewReader("v"))
		jsonError(t, resp, body, http.StatusBadRequest)
	}
	resp, body := x.do(t, "GET", "/kv/c", nil)
	jsonError(t, resp, body, http.StatusNotFound) // nothing was written
	if h := resp.Header.Get(versionHeader); h != "0" {
		t.Fatalf("version of an unwritten key %q", h)
	}

	resp, body = x.do(t, "PUT", "/kv/c?version=0", strings.NewReader("\xff1"))
	if m := jsonBody(t, resp, body, http.StatusOK); m["version"] != 1.0 {
		t.Fatalf("CAS from 0: %s", body)
	}
	resp, body = x.do(t, "PUT", "/kv/c?version=0", strings.NewReader("2"))
	m := jsonBody(t, resp, body, http.StatusConflict)
	if m["error"] != "version mismatch" || m["version"] != 1.0 || m["found"] != true {
		t.Fatalf("CAS mismatch: %s", body)
	}
	if v, err := base64.StdEncoding.DecodeString(fmt.Sprint(m["value_base64"])); err != nil || string(v) != "\xff1" {
		t.Fatalf("CAS mismatch value_base64 %v: %q, %v", m["value_base64"], v, err)
	}
	resp, body = x.do(t, "DELETE", "/kv/c?version=1", nil)
	jsonError(t, resp, body, http.StatusBadRequest) // DELETE takes no parameters
}

func TestValueTooLarge(t *testing.T) {
	x := newTestServer(t, 1)
	limit := strconv.Itoa(maxValue)
	resp, body := x.do(t, "PUT", "/kv/big", bytes.NewReader(make([]byte, maxValue+1)))
	msg := jsonError(t, resp, body, http.StatusRequestEntityTooLarge)
	if want := fmt.Sprintf("value too large: %d bytes, limit %d bytes", maxValue+1, maxValue); msg != want {
		t.Fatalf("413 error %q, want %q", msg, want)
	}
	// Without a Content-Length (chunked) the limit is still named.
	resp, body = x.do(t, "PUT", "/kv/big", io.MultiReader(bytes.NewReader(make([]byte, maxValue)), strings.NewReader("xx")))
	if resp.Request.ContentLength != -1 && resp.Request.ContentLength != 0 {
		t.Fatalf("request was not chunked: Content-Length %d", resp.Request.ContentLength)
	}
	if msg := jsonError(t, resp, body, http.StatusRequestEntityTooLarge); !strings.Contains(msg, "limit "+limit+" bytes") {
		t.Fatalf("chunked 413 error %q does not name the limit", msg)
	}
	resp, body = x.do(t, "GET", "/kv/big", nil)
	jsonError(t, resp, body, http.StatusNotFound)
}

func TestStatus(t *testing.T) {
	x := newTestServer(t, 3)
	resp, body := x.do(t, "PUT", "/kv/k", strings.NewReader("v"))
	jsonBody(t, resp, body, http.StatusOK)
	resp, body = x.do(t, "GET", "/status", nil)
	m := jsonBody(t, resp, body, http.StatusOK)
	if m["node_id"] != 1.0 {
		t.Fatalf("/status node_id: %s", body)
	}
	groups, _ := m["groups"].([]any)
	if len(groups) != 3 {
		t.Fatalf("/status: %d groups, want 3: %s", len(groups), body)
	}
	g := groups[x.s.groupOf("k")].(map[string]any)
	for _, f := range []string{"group", "leader", "is_leader", "ballot_counter", "chosen", "executed", "queued", "pending",
		"master", "master_version", "is_master"} {
		if _, ok := g[f]; !ok {
			t.Fatalf("/status group lacks %q: %s", f, body)
		}
	}
	if g["group"] != float64(x.s.groupOf("k")) || g["leader"] != 1.0 || g["is_leader"] != true || g["executed"].(float64) < 1 {
		t.Fatalf("/status group of key k after a write: %v", g)
	}
	stats, _ := m["stats"].(map[string]any)
	if p, _ := stats["proposals"].(float64); p < 1 { // the PUT
		t.Fatalf("/status stats: %s", body)
	}
	if _, ok := stats["env"].(map[string]any)["fsyncs"]; !ok {
		t.Fatalf("/status stats.env lacks fsyncs: %s", body)
	}
	for _, f := range []string{"master_changes", "lease_reads", "index_reads", "no_quorum"} {
		if _, ok := stats[f].(float64); !ok {
			t.Fatalf("/status stats lacks %q: %s", f, body)
		}
	}
}

// TestClientGone runs requests whose context already ended: the Propose
// error wraps ErrTimeout and context.Canceled, and must become a 504.
func TestClientGone(t *testing.T) {
	x := newTestServer(t, 1)
	err := fmt.Errorf("%w: %w", paxos.ErrTimeout, context.Canceled)
	if got := statusOf(err); got != http.StatusGatewayTimeout {
		t.Fatalf("statusOf(%v) = %d", err, got)
	}
	h := x.s.handler()
	for _, method := range []string{"GET", "PUT", "DELETE"} {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		req := httptest.NewRequestWithContext(ctx, method, "/kv/gone", strings.NewReader("v"))
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		resp := rec.Result()
		resp.Request = req
		jsonError(t, resp, rec.Body.Bytes(), http.StatusGatewayTimeout)
	}
}

func TestStatusMapping(t *testing.T) {
	for err, want := range map[error]int{
		paxos.ErrTimeout:                                     http.StatusGatewayTimeout,
		context.DeadlineExceeded:                             http.StatusGatewayTimeout,
		fmt.Errorf("x: %w", paxos.ErrValueTooLarge):          http.StatusRequestEntityTooLarge,
		fmt.Errorf("%w: bad kind", kvsm.ErrBadOp):            http.StatusBadRequest,
		fmt.Errorf("%w: queue full", paxos.ErrOverloaded):    http.StatusServiceUnavailable,
		paxos.ErrClosed:                                      http.StatusServiceUnavailable,
		fmt.Errorf("%w: group 0", paxos.ErrNoQuorum):         http.StatusServiceUnavailable,
		&paxos.NotMasterError{Master: paxos.Master{Node: 2}}: http.StatusServiceUnavailable,
		// Sent, then the majority was lost: the outcome is unknown.
		fmt.Errorf("%w: %w", paxos.ErrTimeout, paxos.ErrNoQuorum): http.StatusGatewayTimeout,
		errors.New("other"): http.StatusServiceUnavailable,
	} {
		if got := statusOf(err); got != want {
			t.Errorf("statusOf(%v) = %d, want %d", err, got, want)
		}
	}
}

func TestServeFlags(t *testing.T) {
	base := []string{"--id", "1", "--listen", "127.0.0.1:7001", "--http", "127.0.0.1:8001",
		"--peers", "1=127.0.0.1:7001", "--data", t.TempDir()}
	if c, err := parseServe(base, io.Discard); err != nil || c.groups != 1 || c.timeout != 5*time.Second || c.clusterID != clusterID {
		t.Fatalf("parseServe(good flags) = %+v, %v", c, err)
	}
	for _, extra := range [][]string{
		{"--groups", "0"}, {"--groups", "-1"}, {"--timeout", "0s"}, {"--timeout", "-1s"},
		{"--cluster-id", "0"}, {"--id", "2"}, {"--http", "8001"}, {"--peers", "x"}, {"--bogus"}, {"positional"},
		{"--master-lease", "-1s"}, {"--master-lease", "10ms"}, {"--master-lease", "x"},
		{"--redirect"}, {"--http-peers", "x"}, {"--http-peers", "2=127.0.0.1:8002"}, {"--http-peers", "1=8001"},
		{"--http-peers", "1=127.0.0.1:8001,1=127.0.0.1:8001"},
	} {
		_, err := parseServe(append(cloneArgs(base), extra...), io.Discard)
		var fe *cli.FlagError
		if !errors.As(err, &fe) {
			t.Fatalf("parseServe with %v: %v, want a flag error", extra, err)
		}
	}
	c, err := parseServe(append(cloneArgs(base), "--master-lease", "300ms", "--http-peers", "1=127.0.0.1:8001", "--redirect"), io.Discard)
	if err != nil || c.masterLease != 300*time.Millisecond || !c.redirect || c.httpPeers[1] != "127.0.0.1:8001" {
		t.Fatalf("parseServe(lease, http peers, redirect) = %+v, %v", c, err)
	}
	if _, err := parseServe([]string{"--groups", "2"}, io.Discard); err == nil {
		t.Fatalf("parseServe without the required flags succeeded")
	}
	// --listen is optional: the node listens on its address in --peers.
	noListen := []string{"--id", "1", "--http", "127.0.0.1:8001", "--peers", "1=127.0.0.1:7001", "--data", t.TempDir()}
	if c, err := parseServe(noListen, io.Discard); err != nil || c.listen != "" || c.peers[1] != "127.0.0.1:7001" {
		t.Fatalf("parseServe without --listen = %+v, %v", c, err)
	}
}

func cloneArgs(s []string) []string { return append([]string(nil), s...) }

// TestServeExitStatus runs paxoskv serve: flag errors exit 2 before
// anything starts, a node that refuses to start exits 1 with "paxoskv: "
// and never reports ready.
func TestServeExitStatus(t *testing.T) {
	ports, err := cli.FreePorts(2)
	if err != nil {
		t.Fatal(err)
	}
	data := t.TempDir()
	paxosAddr, httpAddr := fmt.Sprintf("127.0.0.1:%d", ports[0]), fmt.Sprintf("127.0.0.1:%d", ports[1])
	args := func(extra ...string) []string {
		return append([]string{"serve", "--id", "1", "--listen", paxosAddr, "--http", httpAddr,
			"--peers", "1=" + paxosAddr, "--data", data}, extra...)
	}
	run := func(args []string) (int, string, string) {
		cmd := runMain(args...)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) {
			t.Fatalf("run %v: %v", args, err)
		}
		return cmd.ProcessState.ExitCode(), stdout.String(), stderr.String()
	}

	code, stdout, stderr := run(args("--groups", "0"))
	if code != 2 || !strings.Contains(stderr, "--groups must be at least 1") || strings.Contains(stdout, "ready") {
		t.Fatalf("--groups 0: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	code, _, stderr = run(args("--timeout", "0s"))
	if code != 2 || !strings.Contains(stderr, "--timeout") {
		t.Fatalf("--timeout 0s: exit %d, stderr %q", code, stderr)
	}
	code, _, stderr = run(args("--master-lease", "-1s"))
	if code != 2 || !strings.Contains(stderr, "--master-lease") {
		t.Fatalf("--master-lease -1s: exit %d, stderr %q", code, stderr)
	}
	code, _, stderr = run(args("--redirect"))
	if code != 2 || !strings.Contains(stderr, "--http-peers") {
		t.Fatalf("--redirect without --http-peers: exit %d, stderr %q", code, stderr)
	}

	// Record the data directory as cluster 7's, then start it as cluster 8's.
	stop, err := startNode(nodeConfig{id: 1, listen: paxosAddr, http: httpAddr, peers: map[uint64]string{1: paxosAddr}, data: data, groups: 1, timeout: time.Second, clusterID: 7})
	if err != nil {
		t.Fatal(err)
	}
	stop()
	code, stdout, stderr = run(args("--cluster-id", "8"))
	if code != 1 || !strings.HasPrefix(stderr, "paxoskv: ") || !strings.Contains(stderr, paxos.ErrIdentityMismatch.Error()) || strings.Contains(stdout, "ready") {
		t.Fatalf("identity mismatch: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	code, stdout, stderr = run(args("--listen", "127.0.0.1:1")) // port differs from --peers
	if code != 1 || !strings.HasPrefix(stderr, "paxoskv: ") || !strings.Contains(stderr, paxos.ErrInvalidOptions.Error()) || strings.Contains(stdout, "ready") {
		t.Fatalf("invalid options: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
}

// TestStartNodeFailureOpensNoHTTP checks that a node refused at start
// leaves the HTTP address alone.
func TestStartNodeFailureOpensNoHTTP(t *testing.T) {
	ports, err := cli.FreePorts(2)
	if err != nil {
		t.Fatal(err)
	}
	paxosAddr, httpAddr := fmt.Sprintf("127.0.0.1:%d", ports[0]), fmt.Sprintf("127.0.0.1:%d", ports[1])
	data := t.TempDir()
	c := nodeConfig{id: 1, listen: paxosAddr, http: httpAddr, peers: map[uint64]string{1: paxosAddr}, data: data, groups: 1, timeout: time.Second, clusterID: 7}
	stop, err := startNode(c)
	if err != nil {
		t.Fatal(err)
	}
	stop()
	// Hold the HTTP address: a startNode that got as far as listening
	// would fail with "address in use" instead of the identity error.
	ln, err := net.Listen("tcp", httpAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c.clusterID = 8
	if _, err := startNode(c); !errors.Is(err, paxos.ErrIdentityMismatch) {
		t.Fatalf("startNode on another cluster's data: %v, want ErrIdentityMismatch", err)
	}
	c.clusterID, c.groups = 7, 0
	if _, err := startNode(c); !errors.Is(err, paxos.ErrInvalidOptions) {
		t.Fatalf("startNode with 0 groups: %v, want ErrInvalidOptions", err)
	}
}

// TestDemoRemovesTempDir runs paxoskv demo, stops it with SIGTERM and
// checks that the temporary data directory it created is gone, while a
// --dir given by the user stays.
func TestDemoRemovesTempDir(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a 3-node cluster in a child process")
	}
	for _, own := range []bool{false, true} {
		tmp := t.TempDir()
		args := []string{"demo"}
		if own {
			args = append(args, "--dir", filepath.Join(tmp, "mine"))
		}
		cmd := runMain(args...)
		cmd.Env = append(cmd.Env, "TMPDIR="+tmp)
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		var out strings.Builder
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			out.WriteString(sc.Text() + "\n")
			if strings.Contains(sc.Text(), "Ctrl-C stops the cluster") {
				break
			}
		}
		entries, _ := os.ReadDir(tmp)
		if len(entries) != 1 {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("demo (own dir %v) running: %d entries in %s, want 1; output %s; stderr %s", own, len(entries), tmp, out.String(), stderr.String())
		}
		cmd.Process.Signal(syscall.SIGTERM)
		rest, _ := io.ReadAll(stdout)
		out.Write(rest)
		if err := cmd.Wait(); err != nil {
			t.Fatalf("demo exit: %v; output %s; stderr %s", err, out.String(), stderr.String())
		}
		entries, _ = os.ReadDir(tmp)
		if own && (len(entries) != 1 || entries[0].Name() != "mine") {
			t.Fatalf("demo removed the user's --dir: entries %v", entries)
		}
		if !own && len(entries) != 0 {
			t.Fatalf("demo left its temporary directory: %v; output %s", entries, out.String())
		}
	}
}

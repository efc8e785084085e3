package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/paxoskit/paxos"
	"github.com/paxoskit/paxos/cmd/internal/cli"
	"github.com/paxoskit/paxos/internal/kvsm"
	"github.com/paxoskit/paxos/linearizability"
)

// proc is one paxoskv server process.
type proc struct {
	id   int
	args []string
	http string
	cmd  *exec.Cmd
	log  *os.File
}

// newProc makes the process of node id, its HTTP API on httpPort, with
// its log in dir/node<id>.log and its data in dir/data<id>; args follow
// serve's --id, --http and --data.
func newProc(t *testing.T, dir string, id, httpPort int, args ...string) *proc {
	t.Helper()
	logf, err := os.Create(filepath.Join(dir, fmt.Sprintf("node%d.log", id)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { logf.Close() })
	p := &proc{id: id, http: fmt.Sprintf("127.0.0.1:%d", httpPort), log: logf}
	p.args = append([]string{"serve", "--id", fmt.Sprint(id), "--http", p.http, "--data", filepath.Join(dir, fmt.Sprintf("data%d", id))}, args...)
	return p
}

func (p *proc) start(t *testing.T, bin string) {
	t.Helper()
	p.cmd = exec.Command(bin, p.args...)
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start node %d: %v", p.id, err)
	}
}

func (p *proc) kill() {
	p.cmd.Process.Signal(syscall.SIGKILL)
	p.cmd.Wait()
}

// TestKillNine runs three paxoskv processes, kills one with SIGKILL in the
// middle of a concurrent workload (GETs in every ?read= mode) and restarts
// it. Writes must go on with
// two nodes, the restarted node must catch up, every node must end with the
// same data, and porcupine must accept the client history.
func TestKillNine(t *testing.T) { killNine(t, nil, false) }

// TestCatchUpByCheckpoint is TestKillNine with checkpoints every 50
// instances and 20 instances of log held: node 3 misses far more than
// that while it is down, so it must come back by checkpoint transfer (its
// /status counts the install) rather than by the log, which the others
// cleaned.
func TestCatchUpByCheckpoint(t *testing.T) {
	killNine(t, []string{"--checkpoint-interval", "50", "--hold-count", "20"}, true)
}

func killNine(t *testing.T, extra []string, wantInstall bool) {
	if testing.Short() {
		t.Skip("builds and runs processes")
	}
	dir, bin := buildPaxoskv(t)
	ports, err := cli.FreePorts(6)
	if err != nil {
		t.Fatal(err)
	}
	var peers []string
	for i := range 3 {
		peers = append(peers, fmt.Sprintf("%d=127.0.0.1:%d", i+1, ports[i]))
	}
	procs := make([]*proc, 3)
	for i := range procs {
		p := newProc(t, dir, i+1, ports[3+i], "--listen", fmt.Sprintf("127.0.0.1:%d", ports[i]), "--peers", strings.Join(peers, ","),
			"--groups", "2", "--timeout", "2s")
		p.args = append(p.args, extra...)
		p.start(t, bin)
		procs[i] = p
	}
	defer stopProcs(t, dir, procs)
	hc := &http.Client{Timeout: 3 * time.Second}
	for _, p := range procs {
		waitReady(t, hc, p.http)
	}

	rec := linearizability.NewRecorder()
	keys := []string{"a", "b", "c", "d", "e", "f", "g", "h"}
	var (
		stop      atomic.Bool
		node3Down atomic.Bool
		okWhile   atomic.Int64 // successful writes while node 3 was down
		wg        sync.WaitGroup
		failMu    sync.Mutex
		failures  = map[string]int{} // failed requests by kind and reason
	)
	for c := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(c), 7))
			versions := map[string]uint64{}
			for i := 0; !stop.Load(); i++ {
				p := procs[rng.IntN(3)]
				if p.id == 3 && node3Down.Load() {
					continue // known down: the request would not reach a server
				}
				op, mode := randomOp(rng, c, i, keys, versions)
				res, err := recordOp(hc, rec, c, p, op, mode)
				if err != nil {
					failMu.Lock()
					failures[fmt.Sprintf("%v on node %d: %.60s", op.Kind, p.id, err)]++
					failMu.Unlock()
					continue
				}
				versions[op.Key] = res.Version
				if op.Kind != kvsm.Get && node3Down.Load() {
					okWhile.Add(1)
				}
			}
		}()
	}
	time.Sleep(2 * time.Second)
	node3Down.Store(true)
	last := nodeStatus(t, hc, procs[2].http)
	procs[2].kill()
	for _, g := range last.Groups {
		t.Logf("node 3 just before its kill: group %d executed %d, chosen %d, checkpoint %d, master %d (version %d)", g.Group, g.Executed, g.Chosen, g.Checkpoint, g.Master, g.MasterVersion)
	}
	t.Logf("killed node 3 with SIGKILL")
	time.Sleep(2 * time.Second)
	if wantInstall {
		// Node 3 executed at most what the others know chosen once each
		// group has a master among them (a new master ran phase 1 and
		// executed its master record above what node 3 left). Keep node
		// 3 down until they cleaned their logs past that: only a
		// checkpoint can bring it back then.
		var reached []uint64
		deadline := time.Now().Add(30 * time.Second)
		for reached == nil {
			sts := []statusReply{nodeStatus(t, hc, procs[0].http), nodeStatus(t, hc, procs[1].http)}
			mastered := true
			for i := range sts[0].Groups {
				mastered = mastered && (sts[0].Groups[i].IsMaster || sts[1].Groups[i].IsMaster)
			}
			if mastered {
				for i := range sts[0].Groups {
					reached = append(reached, max(sts[0].Groups[i].Chosen, sts[1].Groups[i].Chosen))
				}
			} else if time.Now().After(deadline) {
				t.Fatalf("no master among nodes 1 and 2 in every group 30 s after node 3's kill")
			}
			time.Sleep(20 * time.Millisecond)
		}
		for cleaned := false; !cleaned; {
			cleaned = true
			for _, p := range procs[:2] {
				for i, g := range nodeStatus(t, hc, p.http).Groups {
					cleaned = cleaned && g.LogStart > reached[i]+1
				}
			}
			if !cleaned && time.Now().After(deadline) {
				t.Fatalf("the others did not clean their logs past %v, where node 3 may have stopped, within 30 s", reached)
			}
			time.Sleep(50 * time.Millisecond)
		}
		t.Logf("node 3 stopped at or below %v; the others' logs start above", reached)
	}
	procs[2].start(t, bin)
	waitReady(t, hc, procs[2].http)
	if wantInstall {
		for _, g := range nodeStatus(t, hc, procs[2].http).Groups {
			t.Logf("node 3 restarted: group %d executed %d, checkpoint %d, log_start %d", g.Group, g.Executed, g.Checkpoint, g.LogStart)
		}
	}
	node3Down.Store(false)
	t.Logf("restarted node 3")
	time.Sleep(2 * time.Second)
	stop.Store(true)
	wg.Wait()

	if okWhile.Load() == 0 {
		t.Fatalf("no write succeeded while node 3 was down")
	}
	t.Logf("%d writes succeeded with node 3 down; %d ops recorded", okWhile.Load(), rec.Len())
	for _, f := range slices.Sorted(maps.Keys(failures)) {
		t.Logf("failed %d times: %s", failures[f], f)
	}

	// A last write per key through node 1; then every node must serve the
	// same state from its local copy once it has caught up.
	for _, key := range keys {
		if _, err := do(hc, procs[0].http, kvsm.Op{Kind: kvsm.Put, Key: key, Value: "final"}); err != nil {
			t.Fatalf("final put %s: %v", key, err)
		}
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		same, diff := true, ""
		for _, key := range keys {
			var first string
			for i, p := range procs {
				got := staleRead(hc, p.http, key)
				if i == 0 {
					first = got
				} else if got != first {
					same, diff = false, fmt.Sprintf("key %s: node 1 has %s, node %d has %s", key, first, i+1, got)
				}
			}
			if !strings.HasPrefix(first, "200 ") || !strings.HasSuffix(first, ` "final"`) {
				same, diff = false, fmt.Sprintf("key %s: node 1 has %s", key, first)
			}
		}
		if same {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("nodes did not converge: %s", diff)
		}
		time.Sleep(100 * time.Millisecond)
	}

	if wantInstall {
		st := nodeStatus(t, hc, procs[2].http)
		if st.Stats.Installs == 0 || st.Stats.SnapBytesRecv == 0 {
			t.Fatalf("node 3 caught up without installing a checkpoint: %+v %+v", st.Stats, st.Groups)
		}
		for _, g := range st.Groups {
			if g.LogStart <= 1 {
				t.Errorf("group %d of node 3 never cleaned its log: %+v", g.Group, g)
			}
		}
		t.Logf("node 3 installed %d checkpoints (%d bytes received)", st.Stats.Installs, st.Stats.SnapBytesRecv)
	}

	v := rec.Check(30 * time.Second)
	if !v.OK() {
		html := filepath.Join(os.TempDir(), "paxoskv-kill.html")
		rec.WriteHTML(html, v)
		t.Fatalf("history of %d ops (%d unknown) not linearizable: %v (see %s)", v.Ops, v.Unknown, v.Result, html)
	}
	t.Logf("porcupine: %d ops, %d unknown, linearizable", v.Ops, v.Unknown)
}

// randomOp draws client c's i-th operation on one of keys: a put of a
// binary value, a get in a random read mode (every way to read
// linearizably; read=lease off the master is refused, 503, no effect), a
// compare-and-set on the version the client last saw, or a delete.
func randomOp(rng *rand.Rand, c, i int, keys []string, versions map[string]uint64) (kvsm.Op, string) {
	key := keys[rng.IntN(len(keys))]
	op := kvsm.Op{Key: key}
	switch rng.IntN(4) {
	case 0:
		op.Kind, op.Value = kvsm.Put, fmt.Sprintf("c%d-%d\xff\x00", c, i) // binary: values are bytes
	case 1:
		op.Kind = kvsm.Get
	case 2:
		op.Kind, op.Value, op.Version = kvsm.CAS, fmt.Sprintf("c%d-%d", c, i), versions[key]
	default:
		op.Kind = kvsm.Delete
	}
	mode := ""
	if op.Kind == kvsm.Get {
		mode = []string{"", "index", "lease", "propose"}[rng.IntN(4)]
	}
	return op, mode
}

// recordOp sends client c's op (a get in mode) to p and records it in rec:
// its result, or, when it failed, that it never ran or that its outcome is
// unknown.
func recordOp(hc *http.Client, rec *linearizability.Recorder, c int, p *proc, op kvsm.Op, mode string) (kvsm.Result, error) {
	id := rec.Invoke(c, op, time.Now().UnixNano())
	res, err := doRead(hc, p.http, op, mode)
	if err != nil {
		if neverRan(op, err) {
			rec.Absent(id)
		} else {
			rec.Unknown(id)
		}
		return res, err
	}
	rec.Return(id, res, time.Now().UnixNano())
	return res, nil
}

// nodeStatus fetches GET /status of the node at addr.
func nodeStatus(t *testing.T, hc *http.Client, addr string) statusReply {
	t.Helper()
	var st statusReply
	getJSON(t, hc, addr, "/status", &st)
	return st
}

// getJSON fetches GET path of the node at addr and decodes its JSON
// answer into out.
func getJSON(t *testing.T, hc *http.Client, addr, path string, out any) {
	t.Helper()
	resp, err := hc.Get("http://" + addr + path)
	if err == nil {
		if resp.StatusCode != http.StatusOK {
			err = fmt.Errorf("status %d", resp.StatusCode)
		} else {
			err = json.NewDecoder(resp.Body).Decode(out)
		}
		resp.Body.Close()
	}
	if err != nil {
		t.Fatalf("GET %s of %s: %v", path, addr, err)
	}
}

func waitReady(t *testing.T, hc *http.Client, addr string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := do(hc, addr, kvsm.Op{Kind: kvsm.Get, Key: "ready"}); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("node at %s never served a linearizable read", addr)
}

// httpError is an answer of paxoskv other than a result of op.
type httpError struct {
	status int
	msg    string
}

func (e *httpError) Error() string { return fmt.Sprintf("status %d: %s", e.status, e.msg) }

// neverRan reports whether op, which failed with err, is known to have
// had no effect: a read never has one, and a write refused with
// ErrNoQuorum or ErrNotMember (503) was never started (wrapped in a
// timeout, a 504, it may have been).
func neverRan(op kvsm.Op, err error) bool {
	var he *httpError
	return op.Kind == kvsm.Get ||
		errors.As(err, &he) && he.status == http.StatusServiceUnavailable &&
			(strings.Contains(he.msg, paxos.ErrNoQuorum.Error()) || strings.Contains(he.msg, paxos.ErrNotMember.Error()))
}

// do runs op over HTTP and turns the answer into a kvsm.Result; an error
// means the outcome is unknown.
func do(hc *http.Client, addr string, op kvsm.Op) (kvsm.Result, error) {
	return doRead(hc, addr, op, "")
}

// doRead is do with ?read=mode on a GET, unless mode is "".
func doRead(hc *http.Client, addr string, op kvsm.Op, mode string) (kvsm.Result, error) {
	url := "http://" + addr + "/kv/" + op.Key
	method := map[kvsm.Kind]string{kvsm.Put: "PUT", kvsm.CAS: "PUT", kvsm.Get: "GET", kvsm.Delete: "DELETE"}[op.Kind]
	switch {
	case op.Kind == kvsm.CAS:
		url += fmt.Sprintf("?version=%d", op.Version)
	case op.Kind == kvsm.Get && mode != "":
		url += "?read=" + mode
	}
	req, err := http.NewRequestWithContext(context.Background(), method, url, strings.NewReader(op.Value))
	if err != nil {
		return kvsm.Result{}, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return kvsm.Result{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return kvsm.Result{}, err
	}
	if resp.StatusCode == http.StatusOK && op.Kind == kvsm.Get {
		// The value is the raw body; its version is in a header.
		ver, err := strconv.ParseUint(resp.Header.Get(versionHeader), 10, 64)
		if err != nil {
			return kvsm.Result{}, fmt.Errorf("GET 200 with bad %s header %q", versionHeader, resp.Header.Get(versionHeader))
		}
		return kvsm.Result{OK: true, Found: true, Value: string(body), Version: ver}, nil
	}
	var out struct {
		ValueBase64 *string `json:"value_base64"`
		Version     uint64  `json:"version"`
		Found       bool    `json:"found"`
		Error       string  `json:"error"`
	}
	if err := json.Unmarshal(body, &out); err != nil {
		return kvsm.Result{}, &httpError{resp.StatusCode, string(body)}
	}
	res := kvsm.Result{OK: true, Version: out.Version}
	switch {
	case resp.StatusCode == http.StatusOK && op.Kind == kvsm.Delete:
		res.Found = out.Found
	case resp.StatusCode == http.StatusOK:
	case resp.StatusCode == http.StatusNotFound && op.Kind == kvsm.Get:
	case resp.StatusCode == http.StatusConflict && op.Kind == kvsm.CAS:
		res.OK, res.Found = false, out.Found
		if out.ValueBase64 != nil {
			v, err := base64.StdEncoding.DecodeString(*out.ValueBase64)
			if err != nil {
				return kvsm.Result{}, fmt.Errorf("409 with bad value_base64: %v", err)
			}
			res.Value = string(v)
		}
	default:
		return kvsm.Result{}, &httpError{resp.StatusCode, out.Error}
	}
	return res, nil
}

// staleRead returns a node's local state of key as "STATUS VERSION BODY".
func staleRead(hc *http.Client, addr, key string) string {
	resp, err := hc.Get("http://" + addr + "/kv/" + key + "?stale=1")
	if err != nil {
		return "error: " + err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return fmt.Sprintf("%d %s %q", resp.StatusCode, resp.Header.Get(versionHeader), b)
}

// buildPaxoskv builds the paxoskv binary into a new temporary directory,
// which it returns with the binary's path.
func buildPaxoskv(t *testing.T) (dir, bin string) {
	t.Helper()
	dir = t.TempDir()
	bin = filepath.Join(dir, "paxoskv")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	return dir, bin
}

// stopProcs kills the processes and, if the test failed, logs their output
// (node N's in dir/nodeN.log).
func stopProcs(t *testing.T, dir string, procs []*proc) {
	for _, p := range procs {
		p.kill()
	}
	if t.Failed() {
		for i := range procs {
			b, _ := os.ReadFile(filepath.Join(dir, fmt.Sprintf("node%d.log", i+1)))
			t.Logf("node %d log:\n%s", i+1, b)
		}
	}
}

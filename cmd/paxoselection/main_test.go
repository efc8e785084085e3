package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/paxoskit/paxos"
	"github.com/paxoskit/paxos/cmd/internal/cli"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// binary builds paxoselection once for the tests of this package.
func binary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs processes")
	}
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "paxoselection-test-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "paxoselection")
		if out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binPath != "" {
		os.RemoveAll(filepath.Dir(binPath))
	}
	os.Exit(code)
}

func TestMasterLineRoundTrip(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 6e6, time.UTC)
	for _, c := range []struct {
		me   uint64
		m    paxos.Master
		want string
	}{
		{1, paxos.Master{Node: 2, Version: 7}, "03:04:05.006 node 1: master is node 2, version 7"},
		{2, paxos.Master{Node: 2, Version: 7}, "03:04:05.006 node 2: master is node 2, version 7: I am master"},
		{3, paxos.Master{}, "03:04:05.006 node 3: no master"},
	} {
		line := masterLine(now, c.me, c.m)
		if line != c.want {
			t.Fatalf("masterLine(%d, %+v) = %q, want %q", c.me, c.m, line, c.want)
		}
		node, master, version, ok := parseMasterLine(line)
		if !ok || node != c.me || master != c.m.Node || version != c.m.Version {
			t.Fatalf("parseMasterLine(%q) = %d, %d, %d, %v", line, node, master, version, ok)
		}
	}
	for _, line := range []string{"", "x", "03:04:05.006 node 1: up at 127.0.0.1:1, lease 1s; waiting for a master", "03:04:05.006 node 1: no masters"} {
		if _, _, _, ok := parseMasterLine(line); ok {
			t.Fatalf("parseMasterLine(%q) accepted it", line)
		}
	}
}

// proc is one paxoselection process of a test, its master lines parsed.
type proc struct {
	id   uint64
	args []string
	cmd  *exec.Cmd
	done chan struct{}
	out  bytes.Buffer // all its output, for a failure
}

// cluster runs paxoselection processes and gathers their master lines.
type cluster struct {
	t      *testing.T
	bin    string
	nodes  []*proc
	mu     sync.Mutex
	events chan event
}

func (c *cluster) start(n *proc) {
	c.t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		c.t.Fatal(err)
	}
	n.cmd = exec.Command(c.bin, n.args...)
	n.cmd.Stdout, n.cmd.Stderr = w, w
	err = n.cmd.Start()
	w.Close()
	if err != nil {
		c.t.Fatal(err)
	}
	n.done = make(chan struct{})
	go func() {
		defer close(n.done)
		defer n.cmd.Wait()
		defer r.Close()
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			c.mu.Lock()
			n.out.WriteString(sc.Text() + "\n")
			c.mu.Unlock()
			if id, master, version, ok := parseMasterLine(sc.Text()); ok {
				c.events <- event{id, master, version, time.Now()}
			}
		}
	}()
}

func (n *proc) kill() {
	if n.cmd != nil {
		n.cmd.Process.Signal(syscall.SIGKILL)
		<-n.done
		n.cmd = nil
	}
}

// next returns the next master line of a node for which ok holds, failing
// the test after limit.
func (c *cluster) next(limit time.Duration, ok func(event) bool) event {
	c.t.Helper()
	timer := time.NewTimer(limit)
	defer timer.Stop()
	for {
		select {
		case e := <-c.events:
			if ok(e) {
				return e
			}
		case <-timer.C:
			c.t.Fatalf("no expected master line within %v", limit)
		}
	}
}

// TestFailover runs three nodes with a 500 ms lease, waits until all
// three know the same master, kills it with SIGKILL and checks that a
// survivor becomes master within three leases with a higher version, that
// the other survivor follows it, and that the killed node, started again,
// learns it.
func TestFailover(t *testing.T) {
	bin := binary(t)
	const lease = 500 * time.Millisecond
	dir := t.TempDir()
	ports := freeTestPorts(t, 3)
	var peers []string
	for i, p := range ports {
		peers = append(peers, fmt.Sprintf("%d=127.0.0.1:%d", i+1, p))
	}
	c := &cluster{t: t, bin: bin, events: make(chan event, 1024)}
	for i := range 3 {
		id := uint64(i + 1)
		n := &proc{id: id, args: []string{"--id", fmt.Sprint(id), "--peers", strings.Join(peers, ","),
			"--data", filepath.Join(dir, fmt.Sprint(id)), "--lease", lease.String()}}
		c.nodes = append(c.nodes, n)
		c.start(n)
	}
	defer func() {
		for _, n := range c.nodes {
			n.kill()
		}
		if t.Failed() {
			c.mu.Lock()
			defer c.mu.Unlock()
			for _, n := range c.nodes {
				t.Logf("node %d output:\n%s", n.id, n.out.String())
			}
		}
	}()

	// All three name the same master, which says "I am master".
	known := map[uint64]event{}
	c.next(20*time.Second, func(e event) bool {
		known[e.node] = e
		if len(known) < 3 {
			return false
		}
		m := known[1]
		for _, k := range known {
			if k.master == 0 || k.master != m.master || k.version != m.version {
				return false
			}
		}
		return true
	})
	old := known[1]
	if old.version == 0 {
		t.Fatalf("master %d with version 0", old.master)
	}
	victim := c.nodes[old.master-1]
	victim.kill()
	killed := time.Now()
	t.Logf("killed master %d (version %d)", old.master, old.version)
	took := c.next(3*lease, func(e event) bool {
		return e.node != victim.id && e.master == e.node && e.master != victim.id
	})
	if took.version <= old.version {
		t.Fatalf("new master %d has version %d, not above the old master's %d", took.master, took.version, old.version)
	}
	t.Logf("node %d master (version %d) %v after the kill; lease %v", took.master, took.version, took.at.Sub(killed), lease)
	// The other survivor follows it.
	c.next(3*lease, func(e event) bool {
		return e.node != victim.id && e.node != took.master && e.master == took.master && e.version == took.version
	})
	// The killed node, started again, learns it (or a later master).
	c.start(victim)
	e := c.next(10*lease, func(e event) bool { return e.node == victim.id && e.master != 0 })
	if e.version < took.version {
		t.Fatalf("restarted node %d knows master %d version %d, older than %d", victim.id, e.master, e.version, took.version)
	}
}

// TestDemo runs paxoselection demo and checks that it reports a takeover,
// exits 0 and removes its temporary directory.
func TestDemo(t *testing.T) {
	bin := binary(t)
	tmp := t.TempDir()
	cmd := exec.Command(bin, "demo", "--lease", "300ms")
	cmd.Env = append(os.Environ(), "TMPDIR="+tmp)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("demo: %v\n%s", err, out.String())
		}
	case <-time.After(60 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatalf("demo did not end within 60 s:\n%s", out.String())
	}
	s := out.String()
	for _, want := range []string{"I am master", "killing it with SIGKILL", "took over", "demo: removed"} {
		if !strings.Contains(s, want) {
			t.Fatalf("demo output lacks %q:\n%s", want, s)
		}
	}
	if entries, _ := os.ReadDir(tmp); len(entries) != 0 {
		t.Fatalf("demo left %v in its temporary directory", entries)
	}
}

// TestExitStatus checks that flag errors exit 2 with a message and a node
// that cannot start exits 1.
func TestExitStatus(t *testing.T) {
	bin := binary(t)
	ports := freeTestPorts(t, 1)
	addr := fmt.Sprintf("127.0.0.1:%d", ports[0])
	data := t.TempDir()
	run := func(args ...string) (int, string) {
		cmd := exec.Command(bin, args...)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) {
			t.Fatalf("run %v: %v", args, err)
		}
		return cmd.ProcessState.ExitCode(), out.String()
	}
	good := []string{"--id", "1", "--peers", "1=" + addr, "--data", data}
	for _, c := range []struct {
		args []string
		want string
	}{
		{nil, "needs --id"},
		{[]string{"--id", "1", "--peers", "1=" + addr}, "needs --id"},
		{append(good, "--lease", "10ms"), "--lease"},
		{append(good, "--lease", "x"), "lease"},
		{append(good, "--cluster-id", "0"), "--cluster-id"},
		{[]string{"--id", "2", "--peers", "1=" + addr, "--data", data}, "not in --peers"},
		{[]string{"--id", "1", "--peers", "x", "--data", data}, "--peers"},
		{append(good, "--bogus"), "bogus"},
		{append(good, "extra"), "unexpected argument"},
		{[]string{"demo", "--lease", "1ms"}, "--lease"},
		{[]string{"demo", "extra"}, "unexpected argument"},
	} {
		code, out := run(c.args...)
		if code != 2 || !strings.Contains(out, c.want) {
			t.Errorf("%v: exit %d, output %q; want 2 and %q", c.args, code, out, c.want)
		}
	}
	// The port is taken: the node cannot start.
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	code, out := run(good...)
	if code != 1 || !strings.HasPrefix(out, "paxoselection: ") {
		t.Fatalf("port in use: exit %d, output %q; want 1 and \"paxoselection: ...\"", code, out)
	}
}

func freeTestPorts(t *testing.T, n int) []int {
	t.Helper()
	ports, err := cli.FreePorts(n)
	if err != nil {
		t.Fatal(err)
	}
	return ports
}

// Command paxossoak measures the log's life cycle (checkpoints, log
// cleaning, checkpoint transfer; see "The log's life cycle" in README.md)
// on three real processes of the sample server cmd/paxoskv, on loopback,
// with fsync on and fresh data directories.
//
//	go run ./cmd/paxossoak                                  # 1,000,000 PUTs, then restart and catch-up
//	go run ./cmd/paxossoak --values 200000 --keys 100000 --catchup 0 --sample 2000
//	go run ./cmd/paxossoak --values 20000 --read-ratio 0.5 --read-mode index   # under a minute
//	go run ./cmd/paxossoak --values 20000 --read-ratio 0.5 --kill-master
//
// It builds paxoskv (or takes --bin), starts three `paxoskv serve`
// processes and runs three phases (four with --kill-master), each ending
// when its counts are done:
//
//   - load: --values PUTs of --size bytes over --keys keys (each key is
//     overwritten again and again, so the state stays bounded and only the
//     log would grow), from --clients concurrent keep-alive HTTP clients.
//     Every --sample PUTs it prints one line.
//   - restart: kill -9 node 2 and start it again on its data directory;
//     prints how long until it answers HTTP (RunNode restored its newest
//     checkpoint and replayed the log after it), a linearizable GET, and
//     until it executed as far as the others.
//   - catchup (--catchup N, 0 skips; default 10% of --values): kill -9
//     node 3, write N more values (once the others have a master, when
//     node 3 was it), start node 3 again while the writers go on, and
//     measure how long it takes to catch up, whether it did so by
//     checkpoint transfer (and at what rate) and what the writers saw
//     meanwhile.
//   - kill-master (--kill-master): with the clients sending to the two
//     other nodes, kill -9 the node /status reports as master of group 0,
//     and report how long until a PUT sent after the kill succeeds, how
//     the requests meanwhile ended (ok, 503: refused, nothing done; 504:
//     timed out, outcome unknown; no HTTP answer) and when /status showed
//     the new master; then start the killed node again.
//
// With --read-ratio F each client request is, with probability F, a GET
// of a key written earlier instead of a PUT (the phases still count PUTs),
// in the --read-mode: auto, lease or index (paxoskv's ?read=, reads
// without a Paxos write), propose (?read=propose: the read goes through
// Paxos as a write would, the path before lease and read index reads) or
// stale (?stale=true: a local read). GETs get their own columns and
// summary lines: ops/s, p50, p99. Lease reads succeed only on the master:
// give --target master (and --groups 1).
//
// Finally every node must hold the same value for --verify keys (stale,
// local reads once all nodes executed the same log).
//
// # Reading the output
//
// The first lines give the machine and every flag, so the output describes
// its own measurement. A sample line of the load (and catchup) phase reads:
//
//	phase         time      PUTs  ops/s  p50ms  p99ms   maxms errs ldr ckpt 1 2 3  RSS MiB 1 2 3 disk MiB 1 2 3 log_start 1 2 3 | checkpoint 1 2 3
//	load         4.3s     20000   4511   12.8   46.7    65.9    0   1 +1 +1 +1     99  79  79   35  31  33 1 1 1 | 10000 10000 10000
//
// time is the time since the phase began and PUTs the phase's PUTs done
// so far; ops/s and the latencies (of every PUT that ended in the
// interval, failed ones included) cover the interval since the previous
// line; errs counts its failed PUTs; ldr is
// the leader of group 0 as node 1 (or the first node up) sees it. The
// ckpt column tells, per node, whether a checkpoint was taken in the
// interval: +N when its stats.checkpoints grew by N (committed), w when
// only a checkpoint being written (a *.tmp file in its checkpoint store)
// was seen, - when neither. RSS is each process's VmRSS; disk is the size
// of the files of each data directory (goleveldb plus checkpoints);
// log_start and checkpoint come from /status (with several groups, the
// lowest over the groups). A node that is down shows "down" or "?". With
// --read-ratio the line ends with the interval's GETs: GET/s, p50, p99
// and how many failed.
//
// The load summary gives RSS and disk at the first sample, the middle one
// and the last: with a bounded state, both should level off rather than
// grow with the values written. It also pools the latencies of the
// intervals with a checkpoint (on any node) and of those without, which
// shows whether proposals keep flowing while a checkpoint is written. With
// the defaults (a line every 5% of the PUTs, a checkpoint every 10,000
// instances) every interval holds one; give a --sample well below the
// checkpoint interval to compare.
//
// The restart lines give the checkpoint node 2 restarts from and how many
// instances of log it replays, then the times from its process start. The
// catchup phase prints, after the sample lines of the PUTs written while
// node 3 is down, one line a second from node 3's restart: its progress
// and the writers' ops/s and latencies in that second. Its summary gives
// the times from node 3's process start until it executed what the others
// had chosen at that start and until it caught up with the writers (it
// executed what they had chosen 20 ms earlier), the checkpoint bytes it
// received and the rate (the 20 ms polls bound its precision), and the
// writers while node 3 was down, in the interval just before it came back
// and while it caught up.
//
// paxossoak exits 1 with a message starting "paxossoak: FAIL" when a node
// dies, when more than 1% of a phase's PUTs (or GETs) fail (the
// kill-master phase excepted), when a catch-up does not finish within
// --catchup-timeout, writes do not recover within 30 s of the master's
// kill, or the nodes end with different data. It
// kills its paxoskv processes on every exit, Ctrl-C included; on a failure
// it keeps the directory (node logs are DIR/nodeN.log).
package main

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"math"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/paxoskit/paxos/cmd/internal/cli"
)

// config is the command line.
type config struct {
	bin, dir       string
	groups         int
	ckptInterval   int
	holdCount      int
	ckptSet        bool // --checkpoint-interval given: passed to paxoskv
	holdSet        bool // --hold-count given: passed to paxoskv
	timeout        time.Duration
	values         int64
	size           int
	keys           int64
	clients        int
	sample         int64
	catchup        int64
	target         string
	verify         int
	catchupTimeout time.Duration
	readRatio      float64 // fraction of requests that are GETs
	readMode       string  // auto, lease, index, propose or stale
	killMaster     bool
}

func main() {
	var c config
	fs := flag.NewFlagSet("paxossoak", flag.ExitOnError)
	fs.StringVar(&c.bin, "bin", "", "paxoskv binary to run (default: go build it into the run's directory)")
	fs.StringVar(&c.dir, "dir", "", "directory for the data directories and node logs, kept on exit (default: a new temporary one, removed on success)")
	fs.IntVar(&c.groups, "groups", 1, "Paxos groups of paxoskv")
	fs.IntVar(&c.ckptInterval, "checkpoint-interval", 0, "paxoskv --checkpoint-interval (default: not passed, the library's 10,000)")
	fs.IntVar(&c.holdCount, "hold-count", 0, "paxoskv --hold-count (default: not passed, the library's 100,000; -1 never cleans)")
	fs.DurationVar(&c.timeout, "timeout", 5*time.Second, "paxoskv per-request --timeout")
	fs.Int64Var(&c.values, "values", 1_000_000, "PUTs of the load phase")
	fs.IntVar(&c.size, "size", 1024, "value size in bytes")
	fs.Int64Var(&c.keys, "keys", 10_000, "distinct keys; PUT number i writes key i mod keys")
	fs.IntVar(&c.clients, "clients", 64, "concurrent HTTP clients")
	fs.Int64Var(&c.sample, "sample", 0, "print a line every this many PUTs (default: 5% of the phase's PUTs)")
	fs.Int64Var(&c.catchup, "catchup", -1, "PUTs written while node 3 is down (0: skip the catchup phase; default 10% of --values)")
	fs.StringVar(&c.target, "target", "1", `where the clients send their requests: "1" sends all to node 1 (measured faster here than spreading them), "all" spreads them over the nodes that are up (followers forward writes to the leader), "master" sends all to the master of group 0 at the start of each phase`)
	fs.Float64Var(&c.readRatio, "read-ratio", 0, "fraction (0 <= F < 1) of requests that are GETs of keys written earlier instead of PUTs")
	fs.StringVar(&c.readMode, "read-mode", "auto", "how the GETs read: auto, lease, index (without a Paxos write), propose (through Paxos, the old path) or stale (local)")
	fs.BoolVar(&c.killMaster, "kill-master", false, "add a phase that kills -9 the master under load and measures the failover")
	fs.IntVar(&c.verify, "verify", 1000, "keys compared across the nodes at the end")
	fs.DurationVar(&c.catchupTimeout, "catchup-timeout", 5*time.Minute, "fail when node 3 has not caught up this long after its restart")
	fs.Parse(os.Args[1:])
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "paxossoak: unexpected argument %q\n", fs.Arg(0))
		os.Exit(2)
	}
	fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "checkpoint-interval":
			c.ckptSet = true
		case "hold-count":
			c.holdSet = true
		}
	})
	if msg := c.check(); msg != "" {
		fmt.Fprintln(os.Stderr, "paxossoak:", msg)
		os.Exit(2)
	}
	catchupDefault := c.catchup < 0
	if catchupDefault {
		c.catchup = c.values / 10
	}

	// The top lines: the machine and the exact flags.
	fmt.Printf("paxossoak: machine: %d CPUs (runtime.NumCPU), %s/%s, %s, MemTotal %s\n",
		runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, runtime.Version(), memTotal())
	fmt.Printf("paxossoak: command: paxossoak %s\n", strings.Join(os.Args[1:], " "))
	var flags []string
	fs.VisitAll(func(f *flag.Flag) {
		v := f.Value.String()
		switch {
		case f.Name == "checkpoint-interval" && !c.ckptSet, f.Name == "hold-count" && !c.holdSet:
			v = "(not passed: library default)"
		case f.Name == "sample" && c.sample == 0:
			v = "(5% of each phase)"
		case f.Name == "catchup" && catchupDefault:
			v = fmt.Sprintf("%d (10%% of --values)", c.catchup)
		}
		flags = append(flags, fmt.Sprintf("--%s=%s", f.Name, v))
	})
	fmt.Printf("paxossoak: flags: %s\n", strings.Join(flags, " "))

	if err := run(c); err != nil {
		fmt.Printf("paxossoak: FAIL: %v\n", err)
		if !sameFile(os.Stdout, os.Stderr) {
			fmt.Fprintf(os.Stderr, "paxossoak: FAIL: %v\n", err)
		}
		os.Exit(1)
	}
}

// sameFile reports whether a and b are the same file (stdout and stderr
// redirected to one file), so that the verdict is printed once.
func sameFile(a, b *os.File) bool {
	fa, err1 := a.Stat()
	fb, err2 := b.Stat()
	return err1 == nil && err2 == nil && os.SameFile(fa, fb)
}

// check returns what is wrong with the flags, or "".
func (c *config) check() string {
	switch {
	case c.groups < 1:
		return "--groups must be at least 1"
	case c.values < 1:
		return "--values must be at least 1"
	case c.size < 1 || c.size > 1<<20:
		return "--size must be between 1 and 1048576"
	case c.keys < 1:
		return "--keys must be at least 1"
	case c.clients < 1:
		return "--clients must be at least 1"
	case c.sample < 0 || c.catchup < -1 || c.verify < 0:
		return "--sample, --catchup and --verify must not be negative"
	case c.target != "all" && c.target != "1" && c.target != "master":
		return `--target must be "all", "1" or "master"`
	case !(c.readRatio >= 0 && c.readRatio < 1):
		return "--read-ratio must be at least 0 and below 1 (the phases count PUTs)"
	case readQuery[c.readMode] == "":
		return "--read-mode must be auto, lease, index, propose or stale"
	case c.timeout <= 0 || c.catchupTimeout <= 0:
		return "--timeout and --catchup-timeout must be positive"
	}
	return ""
}

// readQuery is the query string of a GET in each --read-mode.
var readQuery = map[string]string{
	"auto": "?read=auto", "lease": "?read=lease", "index": "?read=index", "propose": "?read=propose", "stale": "?stale=true",
}

// sampleEvery returns the PUTs between two sample lines of a phase of n.
func (c *config) sampleEvery(n int64) int64 {
	if c.sample > 0 {
		return c.sample
	}
	return max(n/20, 1)
}

// memTotal returns MemTotal of /proc/meminfo, or "?".
func memTotal() string {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return "?"
	}
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, "MemTotal:"); ok {
			f := strings.Fields(rest)
			if len(f) == 0 {
				break
			}
			if kb, err := strconv.ParseInt(f[0], 10, 64); err == nil {
				return fmt.Sprintf("%.1f GiB", float64(kb)/(1<<20))
			}
		}
	}
	return "?"
}

// soak is one run.
type soak struct {
	cfg   config
	ctx   context.Context // cancelled with the cause of a failure
	fail  context.CancelCauseFunc
	dir   string
	bin   string
	procs []*proc
	hc    *http.Client // the writers'
	ctl   *http.Client // status and reads
	rec   *recorder
	next  atomic.Int64 // number of the next PUT, over all phases
	limit atomic.Int64 // PUTs numbered from limit on are not started
	wg    sync.WaitGroup
	trace atomic.Pointer[tracer] // set during the kill-master phase
}

func run(c config) (err error) {
	ctx, fail := context.WithCancelCause(context.Background())
	defer fail(nil)
	s := &soak{cfg: c, ctx: ctx, fail: fail, rec: newRecorder()}
	s.hc = &http.Client{
		Timeout: c.timeout + 5*time.Second,
		Transport: &http.Transport{
			MaxIdleConns:        2 * c.clients,
			MaxIdleConnsPerHost: c.clients,
			IdleConnTimeout:     time.Minute,
			DisableCompression:  true,
		},
	}
	s.ctl = &http.Client{Timeout: c.timeout + 2*time.Second}

	// Directory: removed on success unless given; kept on a failure.
	s.dir = c.dir
	if s.dir == "" {
		d, err := os.MkdirTemp("", "paxossoak-")
		if err != nil {
			return err
		}
		s.dir = d
		defer func() {
			if err != nil {
				fmt.Printf("paxossoak: kept %s (node logs: node1.log, node2.log, node3.log)\n", d)
				return
			}
			os.RemoveAll(d)
		}()
	} else if err := os.MkdirAll(s.dir, 0o755); err != nil {
		return err
	}
	s.dir, _ = filepath.Abs(s.dir)
	if err := s.newProcs(); err != nil {
		return err
	}

	// Ctrl-C or SIGTERM: fail the run, whose deferred calls kill the
	// nodes; a second signal kills them and exits at once.
	sigc := make(chan os.Signal, 2)
	signal.Notify(sigc, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigc)
	go func() {
		sig, ok := <-sigc
		if !ok {
			return
		}
		fail(fmt.Errorf("interrupted (%v)", sig))
		if _, ok := <-sigc; ok {
			s.killAll()
			os.Exit(130)
		}
	}()
	defer s.killAll() // runs before the directory is removed

	if err := s.setup(); err != nil {
		return err
	}
	go s.watchCheckpoints()
	begin := time.Now()
	if err := s.loadPhase(); err != nil {
		return err
	}
	if err := s.restartPhase(); err != nil {
		return err
	}
	if c.catchup > 0 {
		if err := s.catchupPhase(); err != nil {
			return err
		}
	}
	if c.killMaster {
		if err := s.killMasterPhase(); err != nil {
			return err
		}
	}
	if err := s.verify(); err != nil {
		return err
	}
	s.printFinal()
	fmt.Printf("paxossoak: PASS in %s\n", time.Since(begin).Round(time.Second))
	return nil
}

// failure returns the run's failure once its context is done.
func (s *soak) failure() error {
	if err := context.Cause(s.ctx); err != nil {
		return err
	}
	return s.ctx.Err()
}

// ---- processes ----

// proc is one paxoskv server process, started again on the same
// directory after a kill.
type proc struct {
	id      int
	bin     string
	args    []string
	http    string
	data    string
	logPath string

	mu      sync.Mutex
	cmd     *exec.Cmd
	killed  bool          // the current process is being killed by us
	done    chan struct{} // closed when the current process has exited
	writing atomic.Bool   // a checkpoint being written was seen since the last sample
}

// start starts the process and returns when it did; fail is called if it
// exits without being killed.
func (p *proc) start(fail func(error)) (time.Time, error) {
	logf, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return time.Time{}, err
	}
	defer logf.Close() // the child has its own descriptor
	cmd := exec.Command(p.bin, p.args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own process group, so a Ctrl-C reaches only paxossoak, which
	// kills it; and killed with paxossoak if that dies without cleaning up.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		return time.Time{}, fmt.Errorf("start node %d: %w", p.id, err)
	}
	done := make(chan struct{})
	p.mu.Lock()
	p.cmd, p.killed, p.done = cmd, false, done
	p.mu.Unlock()
	go func() {
		werr := cmd.Wait()
		p.mu.Lock()
		killed := p.killed
		p.mu.Unlock()
		close(done)
		if !killed {
			fail(fmt.Errorf("node %d (pid %d) died: %v; last lines of %s:\n%s",
				p.id, cmd.Process.Pid, werr, p.logPath, tail(p.logPath, 20)))
		}
	}()
	return t0, nil
}

// kill sends SIGKILL to the current process, if running, and waits for it.
func (p *proc) kill() {
	p.mu.Lock()
	if p.cmd == nil || p.killed {
		p.mu.Unlock()
		return
	}
	p.killed = true
	p.cmd.Process.Signal(syscall.SIGKILL)
	done := p.done
	p.mu.Unlock()
	<-done
}

// pid returns the running process's id, 0 when it is not running.
func (p *proc) pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || p.killed {
		return 0
	}
	select {
	case <-p.done:
		return 0
	default:
		return p.cmd.Process.Pid
	}
}

func (s *soak) killAll() {
	for _, p := range s.procs {
		p.kill()
	}
}

// newProcs picks the ports and the command lines of the three nodes.
func (s *soak) newProcs() error {
	ports, err := cli.FreePorts(6)
	if err != nil {
		return err
	}
	var peers []string
	for i := range 3 {
		peers = append(peers, fmt.Sprintf("%d=127.0.0.1:%d", i+1, ports[i]))
	}
	for i := range 3 {
		id := i + 1
		p := &proc{
			id:      id,
			http:    fmt.Sprintf("127.0.0.1:%d", ports[3+i]),
			data:    filepath.Join(s.dir, fmt.Sprintf("node%d", id)),
			logPath: filepath.Join(s.dir, fmt.Sprintf("node%d.log", id)),
		}
		if _, err := os.Stat(p.data); err == nil {
			return fmt.Errorf("%s exists: the nodes need fresh data directories (give another --dir)", p.data)
		}
		p.args = []string{"serve", "--id", strconv.Itoa(id), "--listen", fmt.Sprintf("127.0.0.1:%d", ports[i]),
			"--http", p.http, "--peers", strings.Join(peers, ","), "--data", p.data,
			"--groups", strconv.Itoa(s.cfg.groups), "--timeout", s.cfg.timeout.String()}
		if s.cfg.ckptSet {
			p.args = append(p.args, "--checkpoint-interval", strconv.Itoa(s.cfg.ckptInterval))
		}
		if s.cfg.holdSet {
			p.args = append(p.args, "--hold-count", strconv.Itoa(s.cfg.holdCount))
		}
		s.procs = append(s.procs, p)
	}
	return nil
}

// setup builds paxoskv if needed, starts the three nodes and waits until
// each serves a linearizable read.
func (s *soak) setup() error {
	s.bin = s.cfg.bin
	if s.bin == "" {
		s.bin = filepath.Join(s.dir, "paxoskv")
		t0 := time.Now()
		cmd := exec.CommandContext(s.ctx, "go", "build", "-o", s.bin, "github.com/paxoskit/paxos/cmd/paxoskv")
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go build paxoskv (run inside the module, or give --bin): %v\n%s", err, out)
		}
		fmt.Printf("paxossoak: built %s in %s from %s\n", s.bin, time.Since(t0).Round(time.Millisecond), source())
	} else if abs, err := filepath.Abs(s.bin); err == nil {
		s.bin = abs
	}
	fmt.Printf("paxossoak: dir %s; node 1: %s %s\n", s.dir, s.bin, strings.Join(s.procs[0].args, " "))
	for _, p := range s.procs {
		p.bin = s.bin
		if _, err := p.start(s.fail); err != nil {
			return err
		}
	}
	for _, p := range s.procs {
		if err := s.waitServing(p, 30*time.Second); err != nil {
			return err
		}
	}
	return nil
}

// source describes the working tree paxoskv was built from: its git
// commit and how many tracked files differ from it (best effort).
func source() string {
	head, err := exec.Command("git", "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return "an unknown commit (git rev-parse failed)"
	}
	st, _ := exec.Command("git", "status", "--porcelain", "--untracked-files=no").Output()
	return fmt.Sprintf("commit %s plus %d modified tracked files", bytes.TrimSpace(head), bytes.Count(st, []byte("\n")))
}

// waitServing waits until p answers a linearizable GET.
func (s *soak) waitServing(p *proc, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		if _, err := s.get(p, keyName(0), false); err == nil {
			return nil
		} else if time.Now().After(deadline) {
			return fmt.Errorf("node %d never served a linearizable GET within %s: %v", p.id, limit, err)
		}
		if err := s.sleep(20 * time.Millisecond); err != nil {
			return err
		}
	}
}

// sleep waits d, or returns the run's failure.
func (s *soak) sleep(d time.Duration) error {
	select {
	case <-s.ctx.Done():
		return s.failure()
	case <-time.After(d):
		return nil
	}
}

// watchCheckpoints marks, every 50 ms, the nodes that are writing a
// checkpoint, until the run ends.
func (s *soak) watchCheckpoints() {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
		}
		for _, p := range s.procs {
			if writingCheckpoint(p.data) {
				p.writing.Store(true)
			}
		}
	}
}

// ---- HTTP ----

// status is the part of paxoskv's GET /status that paxossoak reads.
type status struct {
	NodeID uint64 `json:"node_id"`
	Groups []struct {
		Group         uint64 `json:"group"`
		Leader        uint64 `json:"leader"`
		Chosen        uint64 `json:"chosen"`
		Executed      uint64 `json:"executed"`
		LogStart      uint64 `json:"log_start"`
		Checkpoint    uint64 `json:"checkpoint"`
		Master        uint64 `json:"master"`
		MasterVersion uint64 `json:"master_version"`
		IsMaster      bool   `json:"is_master"`
	} `json:"groups"`
	Stats struct {
		Checkpoints   uint64 `json:"checkpoints"`
		Installs      uint64 `json:"installs"`
		SnapSends     uint64 `json:"snapshot_sends"`
		SnapRecvs     uint64 `json:"snapshot_receives"`
		SnapBytesRecv uint64 `json:"snapshot_bytes_received"`
	} `json:"stats"`
}

// logStart and checkpoint return the lowest log_start and checkpoint
// over the groups.
func (st *status) logStart() uint64 {
	m := uint64(math.MaxUint64)
	for _, g := range st.Groups {
		m = min(m, g.LogStart)
	}
	return m % math.MaxUint64 // no groups: 0
}

func (st *status) checkpoint() uint64 {
	m := uint64(math.MaxUint64)
	for _, g := range st.Groups {
		m = min(m, g.Checkpoint)
	}
	return m % math.MaxUint64
}

// kept returns the instances of log the groups hold, chosen ones from
// log_start on.
func (st *status) kept() (n uint64) {
	for _, g := range st.Groups {
		if g.Chosen >= g.LogStart {
			n += g.Chosen - g.LogStart + 1
		}
	}
	return n
}

// executedSum and chosenSum add up the groups' instances, for progress.
func (st *status) executedSum() (n uint64) {
	for _, g := range st.Groups {
		n += g.Executed
	}
	return n
}

func (st *status) chosenSum() (n uint64) {
	for _, g := range st.Groups {
		n += g.Chosen
	}
	return n
}

// highest returns, per group, the highest chosen (or executed, with
// executed) instance over sts.
func highest(sts []*status, executed bool) []uint64 {
	var out []uint64
	for _, st := range sts {
		for i, g := range st.Groups {
			if i >= len(out) {
				out = append(out, 0)
			}
			v := g.Chosen
			if executed {
				v = g.Executed
			}
			out[i] = max(out[i], v)
		}
	}
	return out
}

// reached reports whether st executed at least want[g] in every group g.
func (st *status) reached(want []uint64) bool {
	if len(st.Groups) < len(want) {
		return false
	}
	for i, w := range want {
		if st.Groups[i].Executed < w {
			return false
		}
	}
	return true
}

func sum(xs []uint64) (n uint64) {
	for _, x := range xs {
		n += x
	}
	return n
}

// statuses fetches the status of every node of ps.
func (s *soak) statuses(ps []*proc) ([]*status, error) {
	var out []*status
	for _, p := range ps {
		st, err := s.status(p)
		if err != nil {
			return nil, err
		}
		out = append(out, st)
	}
	return out, nil
}

// status fetches GET /status of p.
func (s *soak) status(p *proc) (*status, error) {
	req, err := http.NewRequestWithContext(s.ctx, http.MethodGet, "http://"+p.http+"/status", nil)
	if err != nil {
		return nil, err
	}
	resp, err := s.ctl.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("node %d /status: %d %s", p.id, resp.StatusCode, bytes.TrimSpace(body))
	}
	st := new(status)
	if err := json.Unmarshal(body, st); err != nil {
		return nil, fmt.Errorf("node %d /status: %v", p.id, err)
	}
	return st, nil
}

// get reads key on p, linearizable or stale (local), and returns
// "STATUS VERSION SHA256-OF-VALUE"; a 404 is an answer, not an error.
func (s *soak) get(p *proc, key string, stale bool) (string, error) {
	url := "http://" + p.http + "/kv/" + key
	if stale {
		url += "?stale=true"
	}
	req, err := http.NewRequestWithContext(s.ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := s.ctl.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	switch resp.StatusCode {
	case http.StatusOK:
		return fmt.Sprintf("200 v%s %x", resp.Header.Get("X-Paxoskv-Version"), sha256.Sum256(body)), nil
	case http.StatusNotFound:
		return "404 v" + resp.Header.Get("X-Paxoskv-Version"), nil
	}
	return "", fmt.Errorf("GET %s on node %d: %d %s", key, p.id, resp.StatusCode, bytes.TrimSpace(body))
}

// statusError is an HTTP answer other than the one wanted.
type statusError struct {
	method, key string
	code        int
	body        string
}

func (e *statusError) Error() string {
	return fmt.Sprintf("%s %s: %d %s", e.method, e.key, e.code, e.body)
}

// outcome classifies a request's end: "ok", its HTTP status, or "no
// answer" (connection refused or reset, client timeout).
func outcome(err error) string {
	var se *statusError
	switch {
	case err == nil:
		return "ok"
	case errors.As(err, &se):
		return strconv.Itoa(se.code)
	}
	return "no answer"
}

// put writes value under key through addr.
func (s *soak) put(addr, key string, value []byte) error {
	return s.do(http.MethodPut, "http://"+addr+"/kv/"+key, key, bytes.NewReader(value), http.StatusOK)
}

// loadGet reads key through addr in the --read-mode; a 404 (a key not
// written yet) is an answer like a 200.
func (s *soak) loadGet(addr, key string) error {
	return s.do(http.MethodGet, "http://"+addr+"/kv/"+key+readQuery[s.cfg.readMode], key, nil, http.StatusOK, http.StatusNotFound)
}

// do sends one request of the clients and reads the answer.
func (s *soak) do(method, url, key string, body io.Reader, ok ...int) error {
	req, err := http.NewRequestWithContext(s.ctx, method, url, body)
	if err != nil {
		return err
	}
	resp, err := s.hc.Do(req)
	if err != nil {
		return err
	}
	b, err := io.ReadAll(resp.Body) // all of it, so the connection is reused
	resp.Body.Close()
	if err != nil {
		return err
	}
	if !slices.Contains(ok, resp.StatusCode) {
		return &statusError{method, key, resp.StatusCode, string(bytes.TrimSpace(b))}
	}
	return nil
}

func keyName(i int64) string { return fmt.Sprintf("k%07d", i) }

// ---- load generator ----

// startLoad starts the writers: PUTs numbered from the current next on,
// n of them (n < 0: until stopLoad), sent to targets (worker w to
// targets[w mod len]). Values are random bytes (goleveldb compresses, so
// a constant filler would understate the disk) starting with the PUT's
// number.
func (s *soak) startLoad(n int64, targets []*proc) {
	if n < 0 {
		s.limit.Store(math.MaxInt64)
	} else {
		s.limit.Store(s.next.Load() + n)
	}
	for w := range s.cfg.clients {
		addr := targets[w%len(targets)].http
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), uint64(time.Now().UnixNano())))
			for s.ctx.Err() == nil {
				if s.cfg.readRatio > 0 && rng.Float64() < s.cfg.readRatio {
					next := s.next.Load()
					if next >= s.limit.Load() {
						return
					}
					key := keyName(rng.Int64N(max(min(next, s.cfg.keys), 1)))
					t0 := time.Now()
					err := s.loadGet(addr, key)
					s.rec.addGet(time.Since(t0), err)
					s.traced(true, t0, err)
					continue
				}
				i := s.next.Add(1) - 1
				if i >= s.limit.Load() {
					return
				}
				v := make([]byte, s.cfg.size)
				for j := 0; j < len(v); j += 8 {
					x := rng.Uint64()
					for k := j; k < min(j+8, len(v)); k++ {
						v[k], x = byte(x), x>>8
					}
				}
				copy(v, strconv.AppendInt(nil, i, 10))
				t0 := time.Now()
				err := s.put(addr, keyName(i%s.cfg.keys), v)
				s.rec.add(time.Since(t0), err)
				s.traced(false, t0, err)
			}
		}()
	}
}

// stopLoad stops the writers and waits for their PUTs in flight.
func (s *soak) stopLoad() {
	s.limit.Store(0)
	s.wg.Wait()
}

// targets returns the nodes the clients use, leaving out down: with
// --target master, the master of group 0 now.
func (s *soak) targets(down *proc) ([]*proc, error) {
	switch s.cfg.target {
	case "1":
		return s.procs[:1], nil
	case "master":
		m, _, err := s.findMaster(targetsExcept(s.procs, down), 10*time.Second)
		if err != nil {
			return nil, err
		}
		return []*proc{m}, nil
	}
	return targetsExcept(s.procs, down), nil
}

// findMaster waits until one of ps reports in /status that it is the
// master of group 0, and returns it and its master version.
func (s *soak) findMaster(ps []*proc, limit time.Duration) (*proc, uint64, error) {
	deadline := time.Now().Add(limit)
	for {
		for _, p := range ps {
			if st, err := s.status(p); err == nil && len(st.Groups) > 0 && st.Groups[0].IsMaster {
				return p, st.Groups[0].MasterVersion, nil
			}
		}
		if time.Now().After(deadline) {
			return nil, 0, fmt.Errorf("no node of %s reported itself master of group 0 within %s", targetNames(ps), limit)
		}
		if err := s.sleep(10 * time.Millisecond); err != nil {
			return nil, 0, err
		}
	}
}

// waitMasters waits until every group has a master among ps.
func (s *soak) waitMasters(ps []*proc, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		sts, err := s.statuses(ps)
		if err != nil {
			return err
		}
		missing := 0
		for g := range s.cfg.groups {
			found := false
			for _, st := range sts {
				found = found || g < len(st.Groups) && st.Groups[g].IsMaster
			}
			if !found {
				missing++
			}
		}
		if missing == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d groups have no master among %s after %s", missing, targetNames(ps), limit)
		}
		if err := s.sleep(10 * time.Millisecond); err != nil {
			return err
		}
	}
}

// checkErrors fails when more than 1% of the phase's PUTs, or of its GETs,
// failed (looked at once 1,000 ended, or at the end of the phase).
func (s *soak) checkErrors(phase string, end bool) error {
	done, errs, last := s.rec.counts()
	if (done >= 1000 || end) && errs*100 > done {
		return fmt.Errorf("%s: %d of %d PUTs failed (more than 1%%); last error: %s", phase, errs, done, last)
	}
	gets, gErrs, last := s.rec.getCounts()
	if (gets >= 1000 || end) && gErrs*100 > gets {
		return fmt.Errorf("%s: %d of %d GETs (--read-mode %s) failed (more than 1%%); last error: %s", phase, gErrs, gets, s.cfg.readMode, last)
	}
	return nil
}

// ---- samples ----

// nodeSample is one node at one sample.
type nodeSample struct {
	st           *status // nil: down or not answering
	rss          int64   // -1: down
	disk, ckDisk int64
	writing      bool // a checkpoint being written was seen in the interval
}

type sample struct {
	at    time.Time
	done  int64 // PUTs of the phase at this sample
	nodes []nodeSample
	pids  []int
}

// takeSample reads every node: /status first (closest to the window's
// end), then RSS and disk.
func (s *soak) takeSample() sample {
	sm := sample{at: time.Now(), nodes: make([]nodeSample, len(s.procs)), pids: make([]int, len(s.procs))}
	for i, p := range s.procs {
		sm.pids[i] = p.pid()
		if sm.pids[i] != 0 {
			sm.nodes[i].st, _ = s.status(p)
		}
	}
	for i, p := range s.procs {
		n := &sm.nodes[i]
		n.rss = -1
		if sm.pids[i] != 0 {
			n.rss = rss(sm.pids[i])
		}
		n.disk, n.ckDisk = diskUse(p.data)
		n.writing = p.writing.Swap(false)
	}
	return sm
}

// ckptDelta returns the checkpoints node i committed between prev and cur,
// -1 when unknown.
func ckptDelta(prev, cur sample, i int) int64 {
	a, b := prev.nodes[i].st, cur.nodes[i].st
	if b == nil {
		return -1
	}
	if a == nil || prev.pids[i] != cur.pids[i] {
		return int64(b.Stats.Checkpoints) // a new process counts from 0
	}
	return int64(b.Stats.Checkpoints) - int64(a.Stats.Checkpoints)
}

const rowHeader = "phase         time      PUTs  ops/s  p50ms  p99ms   maxms errs ldr ckpt 1 2 3  RSS MiB 1 2 3 disk MiB 1 2 3 log_start 1 2 3 | checkpoint 1 2 3"

// getHeader ends rowHeader with --read-ratio: the GETs of the interval.
const getHeader = " | GET/s  p50ms  p99ms errs"

// header returns the sample lines' header.
func (s *soak) header() string {
	if s.cfg.readRatio > 0 {
		return rowHeader + getHeader
	}
	return rowHeader
}

// printRow prints a sample line and reports whether a checkpoint was
// committed or being written on any node during the window.
func printRow(phase string, begin time.Time, w window, prev, cur sample, gets bool) (withCkpt bool) {
	l := sorted(w.lats)
	var ck, rs, dk, ls, cp []string
	leader := "?"
	for i, n := range cur.nodes {
		d := ckptDelta(prev, cur, i)
		switch {
		case d > 0:
			ck = append(ck, fmt.Sprintf("+%d", d))
			withCkpt = true
		case n.writing:
			ck = append(ck, "w")
			withCkpt = true
		case d < 0:
			ck = append(ck, "?")
		default:
			ck = append(ck, "-")
		}
		rs = append(rs, fmt.Sprintf("%4s", mib(n.rss)))
		dk = append(dk, fmt.Sprintf("%4s", mib(n.disk)))
		if n.st == nil {
			ls, cp = append(ls, "down"), append(cp, "down")
			continue
		}
		if leader == "?" && len(n.st.Groups) > 0 {
			leader = strconv.FormatUint(n.st.Groups[0].Leader, 10)
		}
		ls = append(ls, strconv.FormatUint(n.st.logStart(), 10))
		cp = append(cp, strconv.FormatUint(n.st.checkpoint(), 10))
	}
	getCols := ""
	if gets {
		g := sorted(w.gLats)
		getCols = fmt.Sprintf(" | %5.0f %6s %6s %4d", w.getsPerSec(), ms(g.pct(50)), ms(g.pct(99)), w.gErrs)
	}
	fmt.Printf("%-9s %6.1fs %9d %6.0f %6s %6s %7s %4d %3s %-10s %s %s %s | %s%s\n",
		phase, w.end.Sub(begin).Seconds(), w.doneAt, w.opsPerSec(), ms(l.pct(50)), ms(l.pct(99)), ms(l.max()), w.errs, leader,
		strings.Join(ck, " "), strings.Join(rs, ""), strings.Join(dk, ""), strings.Join(ls, " "), strings.Join(cp, " "), getCols)
	return withCkpt
}

// sampled is what a counted phase collected.
type sampled struct {
	samples     []sample
	all         window
	with, wout  window // pooled windows with and without a checkpoint
	nWith, nOut int
	last        window
}

// samplesUntil prints a line for each window the recorder cuts until the
// phase has done n PUTs, starting from the sample prev.
func (s *soak) samplesUntil(phase string, n int64, prev sample, out *sampled) error {
	begin := prev.at
	for {
		select {
		case <-s.ctx.Done():
			return s.failure()
		case w := <-s.rec.cuts:
			cur := s.takeSample()
			cur.done = w.doneAt
			if printRow(phase, begin, w, prev, cur, s.cfg.readRatio > 0) {
				out.with.merge(w)
				out.nWith++
			} else {
				out.wout.merge(w)
				out.nOut++
			}
			out.all.merge(w)
			out.samples = append(out.samples, cur)
			out.last = w
			prev = cur
			if err := s.checkErrors(phase, w.doneAt >= n); err != nil {
				return err
			}
			if w.doneAt >= n {
				return nil
			}
		}
	}
}

// ---- phases ----

// loadPhase writes --values PUTs and prints a line every --sample.
func (s *soak) loadPhase() error {
	n := s.cfg.values
	every := s.cfg.sampleEvery(n)
	targets, err := s.targets(nil)
	if err != nil {
		return err
	}
	fmt.Printf("\n== load: %d PUTs of %d bytes over %d keys, %d clients to %s%s; a line every %d PUTs\n",
		n, s.cfg.size, s.cfg.keys, s.cfg.clients, targetNames(targets), s.getsNote(), every)
	fmt.Println(s.header())
	s.rec.reset(every, n)
	prev := s.takeSample()
	s.startLoad(n, targets)
	var out sampled
	err = s.samplesUntil("load", n, prev, &out)
	s.stopLoad()
	if err != nil {
		return err
	}
	all := sorted(out.all.lats)
	fmt.Printf("load: %d PUTs in %.1f s = %.0f ops/s, %d failed; p50 %s ms, p99 %s ms, max %s ms\n",
		out.all.ops, out.all.dur.Seconds(), out.all.opsPerSec(), out.all.errs,
		ms(all.pct(50)), ms(all.pct(99)), ms(all.max()))
	if s.cfg.readRatio > 0 {
		g := sorted(out.all.gLats)
		fmt.Printf("load: %d GETs (--read-mode %s) in %.1f s = %.0f ops/s, %d failed; p50 %s ms, p99 %s ms, max %s ms\n",
			out.all.gets, s.cfg.readMode, out.all.dur.Seconds(), out.all.getsPerSec(), out.all.gErrs,
			ms(g.pct(50)), ms(g.pct(99)), ms(g.max()))
	}
	for _, c := range []struct {
		name string
		w    window
		n    int
	}{{"with a checkpoint (committed or being written, any node)", out.with, out.nWith}, {"without a checkpoint", out.wout, out.nOut}} {
		l := sorted(c.w.lats)
		if c.n == 0 {
			fmt.Printf("load: %3d intervals %s\n", 0, c.name)
			continue
		}
		fmt.Printf("load: %3d intervals %-56s %8d PUTs, %5.0f ops/s, p50 %s ms, p99 %s ms, max %s ms\n",
			c.n, c.name+":", c.w.ops, c.w.opsPerSec(), ms(l.pct(50)), ms(l.pct(99)), ms(l.max()))
	}
	if len(out.samples) > 0 {
		first, mid, last := out.samples[0], out.samples[len(out.samples)/2], out.samples[len(out.samples)-1]
		fmt.Printf("load: per node at the first sample, the middle one and the last (after %d, %d and %d PUTs):\n",
			first.done, mid.done, last.done)
		for i := range s.procs {
			f, m, l := first.nodes[i], mid.nodes[i], last.nodes[i]
			kept := "?"
			if l.st != nil {
				kept = strconv.FormatUint(l.st.kept(), 10)
			}
			fmt.Printf("load:   node %d  RSS %4s %4s %4s MiB   disk %4s %4s %4s MiB (checkpoints %s %s %s MiB)   log kept at the end %s instances\n",
				i+1, mib(f.rss), mib(m.rss), mib(l.rss), mib(f.disk), mib(m.disk), mib(l.disk),
				mib(f.ckDisk), mib(m.ckDisk), mib(l.ckDisk), kept)
		}
	}
	return nil
}

// restartPhase kills node 2 and measures its restart.
func (s *soak) restartPhase() error {
	p := s.procs[1]
	fmt.Printf("\n== restart: kill -9 node 2, start it again on %s\n", p.data)
	before, err := s.status(p)
	if err != nil {
		return err
	}
	rssBefore := rss(p.pid())
	p.kill()
	fmt.Printf("restart: node 2 killed at executed %d, newest checkpoint %d, log_start %d, RSS %s MiB, %d checkpoints taken by this process\n",
		before.executedSum(), before.checkpoint(), before.logStart(), mib(rssBefore), before.Stats.Checkpoints)
	var replay uint64
	for _, g := range before.Groups {
		replay += g.Executed - g.Checkpoint
	}
	fmt.Printf("restart: a restart restores checkpoint %d and replays %d instances of log\n", before.checkpoint(), replay)
	t0, err := p.start(s.fail)
	if err != nil {
		return err
	}
	var tHTTP, tGet, tExec time.Duration
	deadline := t0.Add(5 * time.Minute)
	for tExec == 0 {
		if time.Now().After(deadline) {
			return fmt.Errorf("restart: node 2 not caught up 5 minutes after its start (http %v, get %v)", tHTTP, tGet)
		}
		switch {
		case tHTTP == 0:
			if _, err := s.status(p); err == nil {
				tHTTP = time.Since(t0)
			}
		case tGet == 0:
			if _, err := s.get(p, keyName(0), false); err == nil {
				tGet = time.Since(t0)
			}
		default:
			sts, err := s.statuses(targetsExcept(s.procs, p))
			if err != nil {
				return err
			}
			if st, err := s.status(p); err == nil && st.reached(highest(sts, true)) {
				tExec = time.Since(t0)
			}
		}
		if err := s.sleep(5 * time.Millisecond); err != nil {
			return err
		}
	}
	after, err := s.status(p)
	if err != nil {
		return err
	}
	fmt.Printf("restart: from process start: HTTP up (checkpoint restored, log replayed) %s, linearizable GET answered %s, executed as far as the others %s\n",
		tHTTP.Round(time.Millisecond), tGet.Round(time.Millisecond), tExec.Round(time.Millisecond))
	fmt.Printf("restart: node 2 now: executed %d, checkpoint %d, log_start %d, RSS %s MiB\n",
		after.executedSum(), after.checkpoint(), after.logStart(), mib(rss(p.pid())))
	return nil
}

// catchupPhase kills node 3, writes --catchup values, starts node 3 again
// with the writers still going and measures its catch-up.
func (s *soak) catchupPhase() error {
	n := s.cfg.catchup
	every := s.cfg.sampleEvery(n)
	p := s.procs[2]
	fmt.Printf("\n== catchup: kill -9 node 3, %d PUTs%s, start node 3 with the writers going on\n", n, s.getsNote())
	base := map[*proc]*status{}
	for _, o := range s.procs {
		st, err := s.status(o)
		if err != nil {
			return err
		}
		base[o] = st
	}
	p.kill()
	fmt.Printf("catchup: node 3 killed at executed %d (checkpoint %d)\n", base[p].executedSum(), base[p].checkpoint())
	// Until the others elect a new master, they refuse writes (503): the
	// kill-master phase measures that, this one the catch-up.
	var mastered []string
	for _, g := range base[p].Groups {
		if g.IsMaster {
			mastered = append(mastered, strconv.FormatUint(g.Group, 10))
		}
	}
	if len(mastered) > 0 {
		t0 := time.Now()
		if err := s.waitMasters(targetsExcept(s.procs, p), 30*time.Second); err != nil {
			return err
		}
		fmt.Printf("catchup: node 3 was master of group %s; the others had a new master %s after the kill\n",
			strings.Join(mastered, ","), time.Since(t0).Round(time.Millisecond))
	}
	targets, err := s.targets(p) // after the kill: node 3 may have been the master
	if err != nil {
		return err
	}
	fmt.Printf("catchup: clients to %s\n", targetNames(targets))
	fmt.Println(s.header())
	s.rec.reset(every, n)
	prev := s.takeSample()
	s.startLoad(-1, targets)
	defer s.stopLoad()
	var out sampled
	if err := s.samplesUntil("catchup", n, prev, &out); err != nil {
		return err
	}
	s.rec.setEvery(0)
	before := out.last

	// Where the others stand when node 3 comes back.
	others, err := s.statuses(targetsExcept(s.procs, p))
	if err != nil {
		return err
	}
	chosenAtStart := highest(others, false)
	var snapSendsBase uint64
	how := "is within their log: it can catch up by the log, unless they clean past it before it asks"
	for _, o := range targetsExcept(s.procs, p) {
		snapSendsBase += base[o].Stats.SnapSends
	}
	for _, st := range others {
		for i, g := range st.Groups {
			if i < len(base[p].Groups) && base[p].Groups[i].Executed+1 < g.LogStart {
				how = "is behind their log: it needs a checkpoint"
			}
		}
	}
	fmt.Printf("catchup: the others chose %d, their log starts at %d and %d; node 3 at %d %s\n",
		sum(chosenAtStart), others[0].logStart(), others[1].logStart(), base[p].executedSum(), how)
	s.rec.cut() // drop the PUTs between the last line and the restart
	t0, err := p.start(s.fail)
	if err != nil {
		return err
	}
	fmt.Println("catchup: node 3 started; one line a second until it executed what the others had chosen")
	var (
		tHTTP, tReach, tLive, tFirstBytes, tInstall time.Duration
		during                                      window
		prevChosen                                  []uint64 // the others' chosen, one poll earlier
		last                                        *status
		lastPrint                                   = time.Now()
	)
	deadline := t0.Add(s.cfg.catchupTimeout)
	for tLive == 0 {
		if err := s.sleep(20 * time.Millisecond); err != nil {
			return err
		}
		var sts []*status
		for _, o := range targetsExcept(s.procs, p) {
			if st, err := s.status(o); err == nil {
				sts = append(sts, st)
			}
		}
		chosen := highest(sts, false)
		st, err := s.status(p)
		now := time.Since(t0)
		if err == nil {
			last = st
			if tHTTP == 0 {
				tHTTP = now
			}
			if tFirstBytes == 0 && st.Stats.SnapBytesRecv > 0 {
				tFirstBytes = now
			}
			if tInstall == 0 && st.Stats.Installs > 0 {
				tInstall = now
			}
			if tReach == 0 && st.reached(chosenAtStart) {
				tReach = now
			}
			if prevChosen != nil && st.reached(prevChosen) {
				tLive = now
			}
		}
		prevChosen = chosen
		if time.Since(lastPrint) >= time.Second || tLive != 0 {
			lastPrint = time.Now()
			w := s.rec.cut()
			during.merge(w)
			l := sorted(w.lats)
			n3 := "down"
			if last != nil {
				n3 = fmt.Sprintf("executed %d of %d chosen, installs %d, received %s MiB", last.executedSum(), sum(chosen),
					last.Stats.Installs, mib(int64(last.Stats.SnapBytesRecv)))
			}
			fmt.Printf("catchup  +%5.1fs  node 3: %-62s | writers %5.0f ops/s p50 %s p99 %s max %s ms, %d failed\n",
				now.Seconds(), n3, w.opsPerSec(), ms(l.pct(50)), ms(l.pct(99)), ms(l.max()), w.errs)
			if err := s.checkErrors("catchup", false); err != nil {
				return err
			}
		}
		if tLive == 0 && time.Now().After(deadline) {
			return fmt.Errorf("catchup: node 3 did not catch up within %s of its start (status: %s)", s.cfg.catchupTimeout, describe(last))
		}
	}
	done, _, _ := s.rec.counts()
	s.stopLoad()
	if err := s.checkErrors("catchup", true); err != nil {
		return err
	}
	var sends uint64
	for _, o := range targetsExcept(s.procs, p) {
		if st, err := s.status(o); err == nil {
			sends += st.Stats.SnapSends
		}
	}
	fmt.Printf("catchup: node 3, from process start: HTTP up %s, executed what was chosen at its start (%d) %s, caught up with the writers %s\n",
		tHTTP.Round(time.Millisecond), sum(chosenAtStart), tReach.Round(time.Millisecond), tLive.Round(time.Millisecond))
	st := last
	if st.Stats.Installs > 0 {
		b := float64(st.Stats.SnapBytesRecv)
		rate := "n/a"
		if span := tInstall - tFirstBytes; span > 0 {
			rate = fmt.Sprintf("%.1f MB/s", b/span.Seconds()/1e6)
		}
		fmt.Printf("catchup: installed %d checkpoint(s) (transfers asked %d, served by the others %d): %d bytes received (%.1f MB); first bytes seen %s, install seen %s after start (20 ms polls): %s between the two, %.1f MB/s from process start\n",
			st.Stats.Installs, st.Stats.SnapRecvs, sends-snapSendsBase, st.Stats.SnapBytesRecv, b/1e6,
			tFirstBytes.Round(time.Millisecond), tInstall.Round(time.Millisecond), rate, b/tInstall.Seconds()/1e6)
	} else {
		fmt.Printf("catchup: no checkpoint installed (%d bytes of checkpoint received): node 3 caught up by the log\n", st.Stats.SnapBytesRecv)
	}
	fmt.Printf("catchup: node 3 now: executed %d, checkpoint %d, log_start %d, RSS %s MiB\n",
		st.executedSum(), st.checkpoint(), st.logStart(), mib(rss(p.pid())))
	for _, c := range []struct {
		name string
		w    window
	}{
		{fmt.Sprintf("while node 3 was down (all %d PUTs)", out.all.ops), out.all},
		{fmt.Sprintf("just before node 3 came back (last %d PUTs)", before.ops), before},
		{fmt.Sprintf("while node 3 caught up (%d PUTs)", during.ops), during},
	} {
		l := sorted(c.w.lats)
		fmt.Printf("catchup: writers %-46s %5.0f ops/s, p50 %s ms, p99 %s ms, max %s ms, %d failed\n",
			c.name+":", c.w.opsPerSec(), ms(l.pct(50)), ms(l.pct(99)), ms(l.max()), c.w.errs)
	}
	fmt.Printf("catchup: %d PUTs in the phase\n", done)
	return nil
}

// verify waits until every node executed the same log, then compares the
// local (stale) reads of --verify keys across the nodes.
func (s *soak) verify() error {
	fmt.Printf("\n== verify: %d keys on every node\n", s.cfg.verify)
	deadline := time.Now().Add(time.Minute)
	for {
		var sts []*status
		for _, p := range s.procs {
			st, err := s.status(p)
			if err != nil {
				return err
			}
			sts = append(sts, st)
		}
		same := true
		for _, st := range sts[1:] {
			for g := range st.Groups {
				a, b := sts[0].Groups[g], st.Groups[g]
				if a.Executed != b.Executed || a.Executed != a.Chosen || b.Executed != b.Chosen {
					same = false
				}
			}
		}
		if same {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("verify: the nodes did not converge within a minute: %s / %s / %s", describe(sts[0]), describe(sts[1]), describe(sts[2]))
		}
		if err := s.sleep(50 * time.Millisecond); err != nil {
			return err
		}
	}
	n := min(int64(s.cfg.verify), s.cfg.keys)
	found, diffs := 0, 0
	for i := range n {
		key := keyName(i * s.cfg.keys / max(n, 1))
		var first string
		for j, p := range s.procs {
			got, err := s.get(p, key, true)
			if err != nil {
				return err
			}
			if j == 0 {
				first = got
				if strings.HasPrefix(got, "200") {
					found++
				}
			} else if got != first {
				diffs++
				if diffs <= 5 {
					fmt.Printf("verify: key %s: node 1 has %s, node %d has %s\n", key, first, p.id, got)
				}
			}
		}
	}
	if diffs > 0 {
		return fmt.Errorf("verify: %d of %d keys differ between the nodes", diffs, n)
	}
	fmt.Printf("verify: %d keys (%d with a value) identical on the 3 nodes (status, version, SHA-256 of the value)\n", n, found)
	return nil
}

// printFinal prints where each node ended.
func (s *soak) printFinal() {
	fmt.Println("\n== final")
	for _, p := range s.procs {
		st, err := s.status(p)
		if err != nil {
			fmt.Printf("final: node %d: %v\n", p.id, err)
			continue
		}
		disk, ck := diskUse(p.data)
		fmt.Printf("final: node %d: %s; RSS %s MiB, disk %s MiB (checkpoints %s MiB)\n",
			p.id, describe(st), mib(rss(p.pid())), mib(disk), mib(ck))
	}
}

// describe summarizes a status in one line.
func describe(st *status) string {
	if st == nil {
		return "no status"
	}
	return fmt.Sprintf("chosen %d executed %d log_start %d checkpoint %d; checkpoints %d installs %d transfers asked %d served %d, %d bytes received",
		st.chosenSum(), st.executedSum(), st.logStart(), st.checkpoint(), st.Stats.Checkpoints, st.Stats.Installs,
		st.Stats.SnapRecvs, st.Stats.SnapSends, st.Stats.SnapBytesRecv)
}

func targetsExcept(ps []*proc, skip *proc) []*proc {
	var out []*proc
	for _, p := range ps {
		if p != skip {
			out = append(out, p)
		}
	}
	return out
}

func targetNames(ps []*proc) string {
	var names []string
	for _, p := range ps {
		names = append(names, strconv.Itoa(p.id))
	}
	return "node " + strings.Join(names, ",")
}

// getsNote describes the GETs of the clients, "" without --read-ratio.
func (s *soak) getsNote() string {
	if s.cfg.readRatio == 0 {
		return ""
	}
	return fmt.Sprintf(", each request a GET (%s) with probability %.2f", readQuery[s.cfg.readMode], s.cfg.readRatio)
}

// ---- kill-master ----

// opTrace is one request of the kill-master phase.
type opTrace struct {
	get        bool
	start, end time.Time
	outcome    string // see outcome
	body       string // the error an HTTP error answer carried
}

// tracer collects the requests of the kill-master phase.
type tracer struct {
	mu  sync.Mutex
	ops []opTrace
}

// traced records a request in the tracer, when one is set.
func (s *soak) traced(get bool, start time.Time, err error) {
	tr := s.trace.Load()
	if tr == nil {
		return
	}
	op := opTrace{get: get, start: start, end: time.Now(), outcome: outcome(err)}
	if se := (*statusError)(nil); errors.As(err, &se) {
		op.body = strings.TrimSpace(se.body)
	}
	tr.mu.Lock()
	tr.ops = append(tr.ops, op)
	tr.mu.Unlock()
}

// snapshot returns the requests recorded so far.
func (tr *tracer) snapshot() []opTrace {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return slices.Clone(tr.ops)
}

// firstOK returns the end of the first request of the kind (GET or PUT)
// sent at or after t that succeeded, and false if none has yet.
func firstOK(ops []opTrace, get bool, t time.Time) (time.Time, bool) {
	var first time.Time
	for _, op := range ops {
		if op.get == get && op.outcome == "ok" && !op.start.Before(t) && (first.IsZero() || op.end.Before(first)) {
			first = op.end
		}
	}
	return first, !first.IsZero()
}

// killMasterPhase kills -9 the master of group 0 with the clients sending
// to the two other nodes, and measures the failover as they see it: when
// a request sent after the kill succeeds again and how the requests that
// ended meanwhile ended. Then it starts the killed node again.
func (s *soak) killMasterPhase() error {
	m, version, err := s.findMaster(s.procs, 10*time.Second)
	if err != nil {
		return err
	}
	survivors := targetsExcept(s.procs, m)
	fmt.Printf("\n== kill-master: node %d is master of group 0 (version %d); clients to %s%s; kill -9 node %d after 1 s\n",
		m.id, version, targetNames(survivors), s.getsNote(), m.id)
	tr := &tracer{}
	s.trace.Store(tr)
	defer s.trace.Store(nil)
	s.rec.reset(0, 0)
	s.startLoad(-1, survivors)
	defer s.stopLoad()
	if err := s.sleep(time.Second); err != nil {
		return err
	}
	before := s.rec.cut()
	m.kill()
	killed := time.Now()

	// Until a PUT (and a GET) sent after the kill succeeded, and /status
	// names a new master; then one more second of load.
	var (
		putOK, getOK time.Time
		newMaster    *proc
		newVersion   uint64
		masterAt     time.Duration
		deadline     = killed.Add(30 * time.Second)
	)
	for {
		ops := tr.snapshot()
		if putOK.IsZero() {
			putOK, _ = firstOK(ops, false, killed)
		}
		if getOK.IsZero() && s.cfg.readRatio > 0 {
			getOK, _ = firstOK(ops, true, killed)
		}
		if newMaster == nil {
			for _, p := range survivors {
				if st, err := s.status(p); err == nil && len(st.Groups) > 0 && st.Groups[0].IsMaster {
					newMaster, newVersion, masterAt = p, st.Groups[0].MasterVersion, time.Since(killed)
				}
			}
		}
		if !putOK.IsZero() && (s.cfg.readRatio == 0 || !getOK.IsZero()) && newMaster != nil {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("kill-master: 30 s after the kill: first PUT ok %v, first GET ok %v, new master %v",
				!putOK.IsZero(), !getOK.IsZero(), newMaster != nil)
		}
		if err := s.sleep(10 * time.Millisecond); err != nil {
			return err
		}
	}
	if err := s.sleep(time.Second); err != nil {
		return err
	}
	after := s.rec.cut()
	s.stopLoad()
	s.trace.Store(nil)
	ops := tr.snapshot()

	fmt.Printf("kill-master: /status of node %d showed it master (version %d, was %d) %s after the kill\n",
		newMaster.id, newVersion, version, masterAt.Round(time.Millisecond))
	for _, kind := range []struct {
		get  bool
		name string
		ok   time.Time
	}{{false, "PUT", putOK}, {true, "GET", getOK}} {
		if kind.get && s.cfg.readRatio == 0 {
			continue
		}
		// The last success before the kill, and how the requests that
		// ended from the kill to the first success after it ended.
		var lastOK time.Time
		counts, bodies := map[string]int{}, map[string]int{}
		for _, op := range ops {
			if op.get != kind.get {
				continue
			}
			if op.outcome == "ok" && !op.end.After(killed) && op.end.After(lastOK) {
				lastOK = op.end
			}
			if op.end.After(killed) && !op.end.After(kind.ok) {
				counts[op.outcome]++
				if op.body != "" {
					bodies[op.outcome+" "+op.body]++
				}
			}
		}
		var parts []string
		for _, o := range []string{"ok", "503", "504", "no answer"} {
			parts = append(parts, fmt.Sprintf("%s %d", o, counts[o]))
			delete(counts, o)
		}
		for _, o := range slices.Sorted(maps.Keys(counts)) {
			parts = append(parts, fmt.Sprintf("%s %d", o, counts[o]))
		}
		fmt.Printf("kill-master: %ss succeed again %s after the kill (the first one sent after it ended then); %s without a success (from the last one before the kill)\n",
			kind.name, kind.ok.Sub(killed).Round(time.Millisecond), kind.ok.Sub(lastOK).Round(time.Millisecond))
		fmt.Printf("kill-master: %ss that ended from the kill to then: %s (503: refused, not done; 504: timed out, outcome unknown)\n",
			kind.name, strings.Join(parts, ", "))
		for _, b := range slices.SortedFunc(maps.Keys(bodies), func(a, b string) int { return cmp.Compare(bodies[b], bodies[a]) }) {
			fmt.Printf("kill-master:   %d× %s\n", bodies[b], b)
		}
	}
	for _, c := range []struct {
		name string
		w    window
	}{{"in the second before the kill", before}, {"from the kill to one second after recovery", after}} {
		l, g := sorted(c.w.lats), sorted(c.w.gLats)
		fmt.Printf("kill-master: %-44s PUTs %5.0f ops/s p50 %s p99 %s ms, %d failed", c.name+":", c.w.opsPerSec(), ms(l.pct(50)), ms(l.pct(99)), c.w.errs)
		if s.cfg.readRatio > 0 {
			fmt.Printf("; GETs %5.0f ops/s p50 %s p99 %s ms, %d failed", c.w.getsPerSec(), ms(g.pct(50)), ms(g.pct(99)), c.w.gErrs)
		}
		fmt.Println()
	}

	t0, err := m.start(s.fail)
	if err != nil {
		return err
	}
	if err := s.waitServing(m, 30*time.Second); err != nil {
		return err
	}
	fmt.Printf("kill-master: node %d started again, serving a linearizable GET %s after its start\n", m.id, time.Since(t0).Round(time.Millisecond))
	return nil
}

package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/paxoskit/paxos/cmd/internal/cli"
)

// event is a master line one of the demo's nodes printed.
type event struct {
	node, master, version uint64
	at                    time.Time // when the demo read it
}

// parseMasterLine parses a line masterLine wrote: master 0 for "no
// master".
func parseMasterLine(line string) (node, master, version uint64, ok bool) {
	_, rest, found := strings.Cut(line, " ") // the time stamp
	if !found {
		return 0, 0, 0, false
	}
	if _, err := fmt.Sscanf(rest, "node %d: master is node %d, version %d", &node, &master, &version); err == nil {
		return node, master, version, true
	}
	if _, err := fmt.Sscanf(rest, "node %d: no master", &node); err == nil && strings.HasSuffix(rest, ": no master") {
		return node, 0, 0, true
	}
	return 0, 0, 0, false
}

// child is one node process of the demo.
type child struct {
	id   uint64
	args []string
	cmd  *exec.Cmd
	done chan struct{} // closed once the process exited and its output was read
}

// demoRun is a running demo: its nodes and where their output goes.
type demoRun struct {
	self   string
	mu     sync.Mutex // serializes writes to out
	out    io.Writer
	events chan event
	kids   []*child
}

func (d *demoRun) printf(format string, args ...any) {
	d.mu.Lock()
	defer d.mu.Unlock()
	fmt.Fprintf(d.out, format, args...)
}

// start starts c and copies its output, each line prefixed with its node,
// parsing the master lines into events.
func (d *demoRun) start(c *child) error {
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	cmd := exec.Command(d.self, c.args...)
	cmd.Stdout, cmd.Stderr = w, w
	// Its own process group, so that a Ctrl-C reaches only the demo,
	// which kills it; and killed with the demo if that dies first.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	err = cmd.Start()
	w.Close()
	if err != nil {
		r.Close()
		return fmt.Errorf("start node %d: %w", c.id, err)
	}
	c.cmd, c.done = cmd, make(chan struct{})
	go func() {
		defer close(c.done)
		defer cmd.Wait()
		defer r.Close()
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			line := sc.Text()
			d.printf("[node %d] %s\n", c.id, line)
			if node, master, version, ok := parseMasterLine(line); ok {
				select {
				case d.events <- event{node, master, version, time.Now()}:
				default: // nobody is waiting for so many: drop
				}
			}
		}
	}()
	return nil
}

// kill kills c with SIGKILL, if running, and waits for it.
func (c *child) kill() {
	if c.cmd == nil {
		return
	}
	c.cmd.Process.Signal(syscall.SIGKILL)
	<-c.done
	c.cmd = nil
}

// demo starts three nodes of this program on loopback ports, with data in
// a new temporary directory, prints their output prefixed with their id,
// kills the first master with SIGKILL and shows the next one taking over.
// With --forever it then starts the killed node again and kills the next
// master, until Ctrl-C. It removes the directory on every return.
func demo(args []string, stdout io.Writer) (err error) {
	fs := flag.NewFlagSet("paxoselection demo", flag.ContinueOnError)
	lease := fs.Duration("lease", time.Second, "master lease of the nodes")
	forever := fs.Bool("forever", false, "start the killed node again and kill the next master, until Ctrl-C")
	if err := cli.Parse(fs, args); err != nil {
		return err
	}
	if *lease < minLease {
		return cli.Errorf("--lease must be at least %v, got %v", minLease, *lease)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sig)

	self, err := os.Executable()
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "paxoselection-demo-")
	if err != nil {
		return err
	}
	d := &demoRun{self: self, out: stdout, events: make(chan event, 1024)}
	defer func() {
		for _, c := range d.kids {
			c.kill()
		}
		if rerr := os.RemoveAll(dir); rerr != nil {
			if err == nil {
				err = fmt.Errorf("removing %s: %w", dir, rerr)
			}
			return
		}
		d.printf("demo: removed %s\n", dir)
	}()
	ports, err := cli.FreePorts(3)
	if err != nil {
		return err
	}
	var peers []string
	for i, p := range ports {
		peers = append(peers, fmt.Sprintf("%d=127.0.0.1:%d", i+1, p))
	}
	for i := range 3 {
		id := uint64(i + 1)
		d.kids = append(d.kids, &child{id: id, args: []string{"--id", fmt.Sprint(id), "--peers", strings.Join(peers, ","),
			"--data", filepath.Join(dir, fmt.Sprintf("node%d", id)), "--lease", lease.String()}})
	}
	d.printf("demo: 3 nodes, lease %v, data in %s; peers %s\n", *lease, dir, strings.Join(peers, ","))
	for _, c := range d.kids {
		if err := d.start(c); err != nil {
			return err
		}
	}

	// latest is the last master line of each running node.
	latest := map[uint64]event{}
	// next waits for the next line naming a master (or none) and records
	// it; false on Ctrl-C.
	next := func(deadline time.Time) (event, bool, error) {
		select {
		case <-sig:
			return event{}, false, nil
		case <-time.After(time.Until(deadline)):
			return event{}, false, fmt.Errorf("no new master by %s", stamp(deadline))
		case e := <-d.events:
			latest[e.node] = e
			return e, true, nil
		}
	}
	// drain records the lines read so far.
	drain := func() {
		for {
			select {
			case e := <-d.events:
				latest[e.node] = e
			default:
				return
			}
		}
	}
	limit := 10**lease + 10*time.Second
	for round := 1; ; round++ {
		// The master: a running node whose last line is "I am master".
		var m event
		deadline := time.Now().Add(limit)
		drain()
		for m.master == 0 {
			for _, e := range latest {
				if e.master == e.node && e.version > m.version {
					m = e
				}
			}
			if m.master == 0 {
				if _, ok, err := next(deadline); !ok {
					return err
				}
			}
		}
		time.Sleep(*lease / 2) // let the followers print it too
		d.printf("demo: node %d is master (version %d); killing it with SIGKILL\n", m.master, m.version)
		victim := d.kids[m.master-1]
		victim.kill() // returns once all its lines were read
		killed := time.Now()
		drain()
		delete(latest, victim.id)
		// The first line of a survivor naming a newer master.
		var n event
		for n.master == 0 || n.master == victim.id || n.version <= m.version {
			var ok bool
			var err error
			if n, ok, err = next(killed.Add(limit)); !ok {
				return err
			}
		}
		d.printf("demo: node %d took over (version %d, was %d) %v after the kill; the lease is %v\n",
			n.master, n.version, m.version, n.at.Sub(killed).Round(time.Millisecond), *lease)
		if !*forever {
			time.Sleep(*lease / 2) // let the other survivor print it too
			return nil
		}
		d.printf("demo: starting node %d again (round %d done; Ctrl-C stops)\n", victim.id, round)
		if err := d.start(victim); err != nil {
			return err
		}
		select {
		case <-sig:
			return nil
		case <-time.After(3 * *lease):
		}
	}
}

package main

import (
	"bufio"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// window is what the clients did over one interval: every PUT that ended
// in it, its latency (failed PUTs included: a writer waited for them too)
// and how many failed; the same for the GETs (--read-ratio).
type window struct {
	start, end  time.Time
	dur         time.Duration // end - start, or the sum of the merged windows'
	ops, errs   int64
	lats        []time.Duration
	gets, gErrs int64
	gLats       []time.Duration
	doneAt      int64 // PUTs of the phase ended when the window closed
}

func (w window) opsPerSec() float64 {
	if w.dur <= 0 {
		return 0
	}
	return float64(w.ops) / w.dur.Seconds()
}

func (w window) getsPerSec() float64 {
	if w.dur <= 0 {
		return 0
	}
	return float64(w.gets) / w.dur.Seconds()
}

// merge adds o to w: w then covers both (which need not be contiguous).
func (w *window) merge(o window) {
	if w.start.IsZero() || (!o.start.IsZero() && o.start.Before(w.start)) {
		w.start = o.start
	}
	if o.end.After(w.end) {
		w.end = o.end
	}
	w.dur += o.dur
	w.ops += o.ops
	w.errs += o.errs
	w.lats = append(w.lats, o.lats...)
	w.gets += o.gets
	w.gErrs += o.gErrs
	w.gLats = append(w.gLats, o.gLats...)
	w.doneAt = max(w.doneAt, o.doneAt)
}

// latencies is a sorted copy of a window's latencies with percentiles.
type latencies []time.Duration

func sorted(lats []time.Duration) latencies {
	s := slices.Clone(lats)
	slices.Sort(s)
	return s
}

// pct returns the p-th percentile (0 < p <= 100), nearest rank; 0 when
// there are no samples.
func (l latencies) pct(p float64) time.Duration {
	if len(l) == 0 {
		return 0
	}
	i := int(float64(len(l))*p/100+0.999999) - 1
	return l[min(max(i, 0), len(l)-1)]
}

func (l latencies) max() time.Duration {
	if len(l) == 0 {
		return 0
	}
	return l[len(l)-1]
}

// ms formats a duration in milliseconds with one decimal.
func ms(d time.Duration) string { return strconv.FormatFloat(float64(d)/1e6, 'f', 1, 64) }

// mib formats bytes in MiB, no decimals.
func mib(b int64) string {
	if b < 0 {
		return "?"
	}
	return strconv.FormatInt((b+1<<19)>>20, 10)
}

// recorder collects the writers' results into windows. With every > 0 it
// closes a window each time the phase's count of PUTs reaches a multiple
// of every, or mark, and sends it on cuts; cut closes one on demand.
type recorder struct {
	mu      sync.Mutex
	win     window
	done    int64 // PUTs of the phase that ended
	errs    int64 // of which failed
	gets    int64 // GETs of the phase that ended
	gErrs   int64 // of which failed
	every   int64
	mark    int64
	lastErr string
	lastGet string // the last failed GET's error
	cuts    chan window
}

func newRecorder() *recorder { return &recorder{cuts: make(chan window, 4096)} }

// reset starts a phase: counts from zero, a new window, a window every
// `every` PUTs (0: on demand only) and one when mark PUTs ended.
func (r *recorder) reset(every, mark int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.done, r.errs, r.every, r.mark, r.lastErr = 0, 0, every, mark, ""
	r.gets, r.gErrs, r.lastGet = 0, 0, ""
	r.win = window{start: time.Now()}
}

// setEvery changes when windows are cut, without resetting the counts.
func (r *recorder) setEvery(every int64) {
	r.mu.Lock()
	r.every = every
	r.mu.Unlock()
}

func (r *recorder) add(d time.Duration, err error) {
	r.mu.Lock()
	r.done++
	r.win.ops++
	r.win.lats = append(r.win.lats, d)
	if err != nil {
		r.errs++
		r.win.errs++
		r.lastErr = err.Error()
	}
	var w window
	cut := r.every > 0 && (r.done%r.every == 0 || r.done == r.mark)
	if cut {
		w = r.cutLocked()
	}
	r.mu.Unlock()
	if cut {
		r.cuts <- w
	}
}

// addGet records a GET; GETs never cut a window.
func (r *recorder) addGet(d time.Duration, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.gets++
	r.win.gets++
	r.win.gLats = append(r.win.gLats, d)
	if err != nil {
		r.gErrs++
		r.win.gErrs++
		r.lastGet = err.Error()
	}
}

// cut closes the current window and returns it.
func (r *recorder) cut() window {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cutLocked()
}

func (r *recorder) cutLocked() window {
	now := time.Now()
	w := r.win
	w.end, w.dur, w.doneAt = now, now.Sub(w.start), r.done
	r.win = window{start: now, lats: make([]time.Duration, 0, cap(w.lats)), gLats: make([]time.Duration, 0, cap(w.gLats))}
	return w
}

// counts returns the phase's PUTs ended and failed so far, and the last
// failure's message.
func (r *recorder) counts() (done, errs int64, lastErr string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.done, r.errs, r.lastErr
}

// getCounts is counts for the GETs.
func (r *recorder) getCounts() (done, errs int64, lastErr string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.gets, r.gErrs, r.lastGet
}

// rss returns a process's resident set size in bytes (VmRSS of
// /proc/PID/status), -1 when it cannot be read.
func rss(pid int) int64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return -1
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:")
		if !ok {
			continue
		}
		fields := strings.Fields(rest) // "123456 kB"
		if len(fields) == 2 && fields[1] == "kB" {
			if kb, err := strconv.ParseInt(fields[0], 10, 64); err == nil {
				return kb << 10
			}
		}
	}
	return -1
}

// diskUse sums the sizes of the regular files under dir, and separately
// those under dir/checkpoints. Files removed during the walk are skipped.
func diskUse(dir string) (total, ckpts int64) {
	ckptDir := filepath.Join(dir, "checkpoints")
	filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return nil
		}
		total += info.Size()
		if strings.HasPrefix(path, ckptDir+string(filepath.Separator)) {
			ckpts += info.Size()
		}
		return nil
	})
	return total, ckpts
}

// writingCheckpoint reports whether a checkpoint is being written in the
// data directory dir: the store writes DIR/checkpoints/g<group>/*.tmp and
// renames it when done.
func writingCheckpoint(dir string) bool {
	m, _ := filepath.Glob(filepath.Join(dir, "checkpoints", "g*", "*.tmp"))
	return len(m) > 0
}

// tail returns the last n lines of a file, for a dead node's log.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "(" + err.Error() + ")"
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "    " + strings.Join(lines, "\n    ")
}

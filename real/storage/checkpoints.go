package storage

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/paxoskit/paxos/env"
)

// Checkpoints is the production implementation of env.Checkpoints: one
// file per checkpoint, in a directory per group:
//
//	dir/g<group>/<instance as 20 decimal digits>.ckpt
//
// A checkpoint is written to a temporary file (*.tmp) in its group's
// directory and committed by renaming it to its final name: a crash before
// the rename leaves only a .tmp file, which Latest ignores and
// OpenCheckpoints removes. A group's newest checkpoint is its committed one
// of the highest instance; Commit removes the older ones.
//
// Checkpoints is safe for concurrent use: its methods touch only files, and
// each writer its own temporary file. Open of an old checkpoint while a
// newer one is committed keeps working, as removing an open file does on
// Linux.
type Checkpoints struct {
	dir  string
	sync bool
	log  *slog.Logger
}

var _ env.Checkpoints = (*Checkpoints)(nil)

const (
	ckptExt = ".ckpt"
	tmpExt  = ".tmp"
)

// OpenCheckpoints opens (creating if needed) the checkpoint store in dir.
// With sync, Commit fsyncs each checkpoint and the directory entries that
// make it visible; without, a machine crash may lose checkpoints (tests
// and benchmarks only). It removes the temporary files of checkpoints that
// a crash interrupted. logger may be nil.
func OpenCheckpoints(dir string, sync bool, logger *slog.Logger) (*Checkpoints, error) {
	if dir == "" {
		return nil, errors.New("storage: open checkpoints: empty directory")
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	c := &Checkpoints{dir: dir, sync: sync, log: logger}
	if err := c.mkdir(dir); err != nil {
		return nil, fmt.Errorf("storage: open checkpoints: %w", err)
	}
	groups, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("storage: open checkpoints: %w", err)
	}
	for _, g := range groups {
		if _, ok := parseGroupDir(g.Name()); !ok || !g.IsDir() {
			continue
		}
		gdir := filepath.Join(dir, g.Name())
		files, err := os.ReadDir(gdir)
		if err != nil {
			return nil, fmt.Errorf("storage: open checkpoints: %w", err)
		}
		for _, f := range files {
			if !strings.HasSuffix(f.Name(), tmpExt) || f.IsDir() {
				continue
			}
			path := filepath.Join(gdir, f.Name())
			if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return nil, fmt.Errorf("storage: open checkpoints: remove interrupted checkpoint: %w", err)
			}
			logger.Info("storage: removed interrupted checkpoint", "path", path)
		}
	}
	return c, nil
}

// mkdir creates dir if missing and, with sync, fsyncs its parent so that
// it survives a crash.
func (c *Checkpoints) mkdir(dir string) error {
	if err := os.Mkdir(dir, 0o755); err != nil {
		if errors.Is(err, fs.ErrExist) {
			if fi, serr := os.Stat(dir); serr == nil && !fi.IsDir() {
				return fmt.Errorf("%s is not a directory", dir)
			}
			return nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
	}
	if c.sync {
		if err := syncDir(filepath.Dir(dir)); err != nil {
			return fmt.Errorf("fsync %s: %w", filepath.Dir(dir), err)
		}
	}
	return nil
}

func (c *Checkpoints) groupDir(group uint64) string {
	return filepath.Join(c.dir, "g"+strconv.FormatUint(group, 10))
}

func ckptName(instance uint64) string { return fmt.Sprintf("%020d%s", instance, ckptExt) }

// parseCkptName returns the instance of a committed checkpoint's file name.
func parseCkptName(name string) (uint64, bool) {
	digits, ok := strings.CutSuffix(name, ckptExt)
	if !ok || len(digits) != 20 || strings.TrimLeft(digits, "0123456789") != "" {
		return 0, false
	}
	n, err := strconv.ParseUint(digits, 10, 64)
	return n, err == nil && n > 0
}

func parseGroupDir(name string) (uint64, bool) {
	digits, ok := strings.CutPrefix(name, "g")
	if !ok || digits == "" || strings.TrimLeft(digits, "0123456789") != "" {
		return 0, false
	}
	n, err := strconv.ParseUint(digits, 10, 64)
	return n, err == nil
}

// committed returns the instances of the group's committed checkpoints, in
// no particular order; files that are not checkpoints are ignored.
func (c *Checkpoints) committed(group uint64) ([]uint64, error) {
	files, err := os.ReadDir(c.groupDir(group))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []uint64
	for _, f := range files {
		if inst, ok := parseCkptName(f.Name()); ok && f.Type().IsRegular() {
			out = append(out, inst)
		}
	}
	return out, nil
}

// Latest returns the instance of the group's newest committed checkpoint,
// or 0 if it has none.
func (c *Checkpoints) Latest(group uint64) (uint64, error) {
	insts, err := c.committed(group)
	if err != nil {
		return 0, fmt.Errorf("storage: latest checkpoint of group %d: %w", group, err)
	}
	var latest uint64
	for _, inst := range insts {
		latest = max(latest, inst)
	}
	return latest, nil
}

// Open opens the group's committed checkpoint at instance for reading.
func (c *Checkpoints) Open(group, instance uint64) (io.ReadCloser, error) {
	if instance == 0 {
		return nil, fmt.Errorf("storage: open checkpoint of group %d: instance 0", group)
	}
	f, err := os.Open(filepath.Join(c.groupDir(group), ckptName(instance)))
	if err != nil {
		return nil, fmt.Errorf("storage: open checkpoint of group %d at instance %d: %w", group, instance, err)
	}
	return f, nil
}

// Create begins a checkpoint of group at instance (> 0): its bytes go to a
// temporary file until Commit.
func (c *Checkpoints) Create(group, instance uint64) (env.CheckpointWriter, error) {
	if instance == 0 {
		return nil, fmt.Errorf("storage: create checkpoint of group %d: instance 0", group)
	}
	gdir := c.groupDir(group)
	if err := c.mkdir(gdir); err != nil {
		return nil, fmt.Errorf("storage: create checkpoint of group %d at instance %d: %w", group, instance, err)
	}
	f, err := os.CreateTemp(gdir, fmt.Sprintf("%020d.*%s", instance, tmpExt))
	if err != nil {
		return nil, fmt.Errorf("storage: create checkpoint of group %d at instance %d: %w", group, instance, err)
	}
	return &checkpointWriter{c: c, group: group, instance: instance, f: f, final: filepath.Join(gdir, ckptName(instance))}, nil
}

// checkpointWriter writes one checkpoint. It is meant for one goroutine.
type checkpointWriter struct {
	c               *Checkpoints
	group, instance uint64
	f               *os.File // nil once committed or aborted
	final           string
	err             error // first write error: Commit returns it
}

// Write appends p to the checkpoint.
func (w *checkpointWriter) Write(p []byte) (int, error) {
	if w.f == nil {
		return 0, fmt.Errorf("storage: write checkpoint %s: already committed or aborted", w.final)
	}
	n, err := w.f.Write(p)
	if err != nil {
		err = fmt.Errorf("storage: write checkpoint: %w", err)
		if w.err == nil {
			w.err = err
		}
	}
	return n, err
}

// Commit makes the checkpoint durable (with sync) and visible under its
// final name in one rename, then removes the group's checkpoints of lower
// instances. On failure the temporary file is removed and the group's
// previous checkpoints are left as they were.
func (w *checkpointWriter) Commit() error {
	if w.f == nil {
		return fmt.Errorf("storage: commit checkpoint %s: already committed or aborted", w.final)
	}
	if err := w.commit(); err != nil {
		w.Abort()
		return fmt.Errorf("storage: commit checkpoint of group %d at instance %d: %w", w.group, w.instance, err)
	}
	w.c.removeOlder(w.group, w.instance)
	return nil
}

func (w *checkpointWriter) commit() error {
	if w.err != nil {
		return w.err
	}
	if w.c.sync {
		if err := w.f.Sync(); err != nil {
			return err
		}
	}
	if err := w.f.Close(); err != nil {
		return err
	}
	if err := os.Rename(w.f.Name(), w.final); err != nil {
		return err
	}
	w.f = nil
	if w.c.sync {
		// Renamed, the checkpoint is visible, but a crash could still
		// lose the rename: if it cannot be made durable, take it back
		// so that Commit's error leaves the previous checkpoints as
		// they were.
		if err := syncDir(filepath.Dir(w.final)); err != nil {
			os.Remove(w.final)
			return fmt.Errorf("fsync %s: %w", filepath.Dir(w.final), err)
		}
	}
	return nil
}

// Abort discards the checkpoint: it closes and removes the temporary file.
// It is a no-op after Commit or Abort.
func (w *checkpointWriter) Abort() {
	if w.f == nil {
		return
	}
	name := w.f.Name()
	w.f.Close()
	w.f = nil
	if err := os.Remove(name); err != nil && !errors.Is(err, fs.ErrNotExist) {
		w.c.log.Warn("storage: cannot remove aborted checkpoint", "path", name, "err", err)
	}
}

// removeOlder removes the group's committed checkpoints below instance.
// They are no longer needed, so a failure is only logged.
func (c *Checkpoints) removeOlder(group, instance uint64) {
	insts, err := c.committed(group)
	if err != nil {
		c.log.Warn("storage: cannot list old checkpoints", "dir", c.groupDir(group), "err", err)
		return
	}
	for _, inst := range insts {
		if inst >= instance {
			continue
		}
		path := filepath.Join(c.groupDir(group), ckptName(inst))
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			c.log.Warn("storage: cannot remove old checkpoint", "path", path, "err", err)
		}
	}
}

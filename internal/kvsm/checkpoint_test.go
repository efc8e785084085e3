package kvsm

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"runtime"
	"sync"
	"testing"
	"testing/iotest"

	"pgregory.net/rapid"
)

// Machine has the methods of paxos.Checkpointer (kvsm does not import the
// root package, so the interface is spelled out).
var _ interface {
	SMID() uint32
	Execute(group, instance uint64, value []byte, ctx any) (result any, err error)
	PrepareCheckpoint(group, instance uint64) (view any, err error)
	SaveCheckpoint(group uint64, view any, w io.Writer) error
	RestoreCheckpoint(group, instance uint64, r io.Reader) error
} = (*Machine)(nil)

// tb is what the helpers need of *testing.T, *testing.B and *rapid.T.
type tb interface {
	Helper()
	Fatalf(format string, args ...any)
}

// digestOf computes StateDigest from scratch.
func digestOf(kv map[string]Entry) uint64 {
	var d uint64
	for k, e := range kv {
		d += entryHash(k, e)
	}
	return d
}

// machineWith returns a Machine whose group holds exactly kv, built
// without checkpoints, as a reference for Digest and for checkpoint bytes.
func machineWith(gid uint64, kv map[string]Entry) *Machine {
	m := New()
	m.groups[gid] = &group{base: maps.Clone(kv), digest: digestOf(kv)}
	return m
}

func prepare(t tb, m *Machine, group, instance uint64) any {
	t.Helper()
	v, err := m.PrepareCheckpoint(group, instance)
	if err != nil {
		t.Fatalf("PrepareCheckpoint(%d, %d): %v", group, instance, err)
	}
	return v
}

func save(t tb, m *Machine, group uint64, view any) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := m.SaveCheckpoint(group, view, &buf); err != nil {
		t.Fatalf("SaveCheckpoint(%d): %v", group, err)
	}
	return buf.Bytes()
}

// restored restores data into a fresh Machine.
func restored(t tb, group, instance uint64, data []byte) *Machine {
	t.Helper()
	m := New()
	if err := m.RestoreCheckpoint(group, instance, bytes.NewReader(data)); err != nil {
		t.Fatalf("RestoreCheckpoint(%d, %d): %v", group, instance, err)
	}
	return m
}

// checkState checks every read path of m's group against want.
func checkState(t tb, m *Machine, group uint64, want map[string]Entry) {
	t.Helper()
	if got := m.Snapshot(group); !maps.Equal(got, want) {
		t.Fatalf("group %d: snapshot = %v, want %v", group, got, want)
	}
	if got, want := m.StateDigest(group), digestOf(want); got != want {
		t.Fatalf("group %d: StateDigest = %#x, want %#x", group, got, want)
	}
	if got, want := m.Digest(group), machineWith(group, want).Digest(group); got != want {
		t.Fatalf("group %d: Digest = %#x, want %#x", group, got, want)
	}
	for k, e := range want {
		if got := m.Lookup(group, k); got != e {
			t.Fatalf("group %d: Lookup(%q) = %+v, want %+v", group, k, got, e)
		}
	}
}

// savedCkpt is a checkpoint saved during a test, with the state it holds.
type savedCkpt struct {
	group, instance uint64
	data            []byte
	state           map[string]Entry
}

// TestCheckpointRapid runs random sequences of writes, prepares, saves and
// restores on two groups against a map model: the machine's state always
// matches the model, and every checkpoint restores (into a fresh machine)
// exactly the state at its prepare, whatever ran between prepare and save.
func TestCheckpointRapid(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		m := New()
		groups := []uint64{1, 2}
		model := map[uint64]map[string]Entry{1: {}, 2: {}}
		instance := map[uint64]uint64{}
		type pendingView struct {
			view     any
			instance uint64
			state    map[string]Entry
		}
		views := map[uint64]*pendingView{}
		var saved []savedCkpt
		genGroup := rapid.SampledFrom(groups)
		genKey := rapid.OneOf(rapid.StringMatching(`k[0-9]`), rapid.String())
		genOp := rapid.Custom(func(t *rapid.T) Op {
			return Op{
				Kind:    rapid.SampledFrom([]Kind{Put, Put, Delete, CAS, Get}).Draw(t, "kind"),
				Key:     genKey.Draw(t, "key"),
				Value:   rapid.StringMatching(`[a-z]{0,3}`).Draw(t, "value"),
				Version: rapid.Uint64Range(0, 4).Draw(t, "version"),
			}
		})

		t.Repeat(map[string]func(*rapid.T){
			"execute": func(t *rapid.T) {
				g := genGroup.Draw(t, "group")
				for range rapid.IntRange(1, 8).Draw(t, "n") {
					op := genOp.Draw(t, "op")
					instance[g]++
					out, _ := m.Execute(g, instance[g], op.Encode(), nil)
					cur := model[g][op.Key]
					next, want := Step(cur, op)
					if next != cur {
						model[g][op.Key] = next
					}
					if out.(Result) != want {
						t.Fatalf("%v: result %+v, want %+v", op, out, want)
					}
				}
			},
			"prepare": func(t *rapid.T) {
				g := genGroup.Draw(t, "group")
				v, err := m.PrepareCheckpoint(g, instance[g])
				if err != nil {
					t.Fatalf("prepare: %v", err)
				}
				if old := views[g]; old != nil {
					if err := m.SaveCheckpoint(g, old.view, io.Discard); !errors.Is(err, ErrBadView) {
						t.Fatalf("saving a superseded view: %v, want ErrBadView", err)
					}
				}
				views[g] = &pendingView{view: v, instance: instance[g], state: maps.Clone(model[g])}
			},
			"save": func(t *rapid.T) {
				g := genGroup.Draw(t, "group")
				pv := views[g]
				if pv == nil {
					t.Skip("no view")
				}
				delete(views, g)
				data := save(t, m, g, pv.view)
				if err := m.SaveCheckpoint(g, pv.view, io.Discard); !errors.Is(err, ErrBadView) {
					t.Fatalf("saving a view twice: %v, want ErrBadView", err)
				}
				r := restored(t, g, pv.instance, data)
				checkState(t, r, g, pv.state)
				if st := r.Stats(g); st != (Stats{LastInstance: pv.instance}) {
					t.Fatalf("stats after restore = %+v", st)
				}
				if again := save(t, r, g, prepare(t, r, g, pv.instance)); !bytes.Equal(again, data) {
					t.Fatal("restore then save changed the bytes")
				}
				ref := machineWith(g, pv.state)
				if again := save(t, ref, g, prepare(t, ref, g, pv.instance)); !bytes.Equal(again, data) {
					t.Fatal("checkpoint bytes depend on history")
				}
				saved = append(saved, savedCkpt{g, pv.instance, data, pv.state})
			},
			"restore": func(t *rapid.T) {
				if len(saved) == 0 {
					t.Skip("nothing saved")
				}
				c := rapid.SampledFrom(saved).Draw(t, "checkpoint")
				if err := m.RestoreCheckpoint(c.group, c.instance, bytes.NewReader(c.data)); err != nil {
					t.Fatalf("restore: %v", err)
				}
				model[c.group] = maps.Clone(c.state)
				instance[c.group] = c.instance
				// A view prepared before the restore still saves the
				// state it was prepared on.
				if pv := views[c.group]; pv != nil {
					delete(views, c.group)
					checkState(t, restored(t, c.group, pv.instance, save(t, m, c.group, pv.view)), c.group, pv.state)
				}
			},
			"": func(t *rapid.T) {
				for _, g := range groups {
					checkState(t, m, g, model[g])
				}
			},
		})
	})
}

func TestCheckpointViewUnaffectedByLaterWrites(t *testing.T) {
	m := New()
	for i := range 1000 {
		m.Execute(0, uint64(i+1), Op{Kind: Put, Key: fmt.Sprint("k", i), Value: fmt.Sprint("v", i)}.Encode(), nil)
	}
	m.Apply(0, Op{Kind: Delete, Key: "k7"})
	want := m.Snapshot(0)
	wantDigest := m.StateDigest(0)
	v := prepare(t, m, 0, 1000)

	// Overwrite, delete, CAS and create keys, in this and another group.
	for i := range 1500 {
		k := fmt.Sprint("k", i)
		switch i % 4 {
		case 0:
			m.Apply(0, Op{Kind: Put, Key: k, Value: "new"})
		case 1:
			m.Apply(0, Op{Kind: Delete, Key: k})
		case 2:
			m.Apply(0, Op{Kind: CAS, Key: k, Value: "cas", Version: 1})
		case 3:
			m.Apply(1, Op{Kind: Put, Key: k, Value: "other group"})
		}
	}
	after := m.Snapshot(0)
	if maps.Equal(after, want) {
		t.Fatal("writes did not change the state")
	}
	r := restored(t, 0, 1000, save(t, m, 0, v))
	checkState(t, r, 0, want)
	if r.StateDigest(0) != wantDigest {
		t.Fatal("StateDigest of the restored state differs from the one at prepare")
	}
	// The machine's own state is intact, and folds back once released.
	checkState(t, m, 0, after)
	for i := range 1000 {
		m.Apply(0, Op{Kind: Get, Key: fmt.Sprint("k", i)})
	}
	if g := m.groups[0]; g.overlay != nil || g.drain != nil {
		t.Fatalf("overlay of %d keys not folded after 1000 applies", len(g.overlay))
	}
	checkState(t, m, 0, after)
}

// TestCheckpointConcurrentSave plays the runtime: one goroutine (the
// node's loop) executes and prepares, another saves each view while
// execution goes on, and checks the saved state is the one at the prepare.
// The loop prepares without waiting for the previous save, so a prepare
// may be refused (the save is running) or supersede the previous view
// (its save had not started). Run with -race.
func TestCheckpointConcurrentSave(t *testing.T) {
	const group = 5
	m := New()
	model := map[string]Entry{}
	rng := rand.New(rand.NewPCG(1, 2))
	type job struct {
		view     any
		instance uint64
		want     map[string]Entry
	}
	jobs := make(chan job)
	var wg sync.WaitGroup
	var saves, busy, superseded int
	var saveErr error
	wg.Go(func() {
		for j := range jobs {
			if saveErr != nil {
				continue
			}
			var buf bytes.Buffer
			if err := m.SaveCheckpoint(group, j.view, &buf); errors.Is(err, ErrBadView) {
				// The loop prepared again before this save started.
				superseded++
				continue
			} else if err != nil {
				saveErr = err
				continue
			}
			r := New()
			if err := r.RestoreCheckpoint(group, j.instance, &buf); err != nil {
				saveErr = err
				continue
			}
			if got := r.Snapshot(group); !maps.Equal(got, j.want) {
				saveErr = fmt.Errorf("checkpoint at %d: restored %d keys, want %d (or different entries)", j.instance, len(got), len(j.want))
				continue
			}
			if r.StateDigest(group) != digestOf(j.want) {
				saveErr = fmt.Errorf("checkpoint at %d: StateDigest differs", j.instance)
			}
		}
	})
	sending := false
	var pending job
	for inst := uint64(1); inst <= 30000; inst++ {
		op := Op{Kind: Put, Key: fmt.Sprint("k", rng.IntN(5000)), Value: fmt.Sprint(inst)}
		if rng.IntN(4) == 0 {
			op.Kind = Delete
		}
		m.Execute(group, inst, op.Encode(), nil)
		model[op.Key], _ = Step(model[op.Key], op)
		if rng.IntN(50) == 0 {
			m.Lookup(group, op.Key)
			m.StateDigest(group)
		}
		if inst%997 == 0 && !sending {
			v, err := m.PrepareCheckpoint(group, inst)
			if errors.Is(err, ErrCheckpointBusy) {
				busy++
				continue
			}
			if err != nil {
				t.Fatal(err)
			}
			pending, sending = job{v, inst, maps.Clone(model)}, true
		}
		if sending {
			select {
			case jobs <- pending:
				sending = false
				saves++
			default:
			}
		}
	}
	if sending {
		jobs <- pending
		saves++
	}
	close(jobs)
	wg.Wait()
	if saveErr != nil {
		t.Fatal(saveErr)
	}
	checkState(t, m, group, model)
	t.Logf("%d views sent to save (%d superseded before their save started), %d prepares refused as busy", saves, superseded, busy)
	if superseded == saves {
		t.Fatal("no checkpoint was saved")
	}
}

func TestPrepareCheckpointBusyAndSupersede(t *testing.T) {
	m := New()
	m.Apply(0, Op{Kind: Put, Key: "a", Value: "1"})
	v1 := prepare(t, m, 0, 1)
	m.Apply(0, Op{Kind: Put, Key: "a", Value: "2"})
	// A second prepare supersedes a view whose save has not started.
	v2 := prepare(t, m, 0, 2)
	if err := m.SaveCheckpoint(0, v1, io.Discard); !errors.Is(err, ErrBadView) {
		t.Fatalf("save of superseded view: %v", err)
	}

	// While a save is in progress, a prepare is refused.
	w := &blockingWriter{started: make(chan struct{}), release: make(chan struct{})}
	done := make(chan error)
	go func() { done <- m.SaveCheckpoint(0, v2, w) }()
	<-w.started
	if _, err := m.PrepareCheckpoint(0, 3); !errors.Is(err, ErrCheckpointBusy) {
		t.Fatalf("prepare during save: %v, want ErrCheckpointBusy", err)
	}
	if _, err := m.PrepareCheckpoint(1, 3); err != nil {
		t.Fatalf("prepare of another group during save: %v", err)
	}
	if err := m.SaveCheckpoint(0, v2, io.Discard); !errors.Is(err, ErrBadView) {
		t.Fatalf("second save of a view being saved: %v", err)
	}
	close(w.release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	r := restored(t, 0, 2, w.buf.Bytes())
	checkState(t, r, 0, map[string]Entry{"a": {Value: "2", Exists: true, Version: 2}})
	prepare(t, m, 0, 3) // released

	// Views of another group, machine, or type are refused.
	v := prepare(t, m, 0, 3)
	for name, try := range map[string]func() error{
		"group":   func() error { return m.SaveCheckpoint(1, v, io.Discard) },
		"machine": func() error { return New().SaveCheckpoint(0, v, io.Discard) },
		"type":    func() error { return m.SaveCheckpoint(0, "view", io.Discard) },
		"nil":     func() error { return m.SaveCheckpoint(0, nil, io.Discard) },
		"nilptr":  func() error { return m.SaveCheckpoint(0, (*checkpointView)(nil), io.Discard) },
	} {
		if err := try(); !errors.Is(err, ErrBadView) {
			t.Errorf("wrong %s: %v, want ErrBadView", name, err)
		}
	}
	if err := m.SaveCheckpoint(0, v, io.Discard); err != nil {
		t.Fatal(err)
	}
}

type blockingWriter struct {
	buf     bytes.Buffer
	started chan struct{}
	release chan struct{}
	once    sync.Once
}

func (w *blockingWriter) Write(p []byte) (int, error) {
	w.once.Do(func() {
		close(w.started)
		<-w.release
	})
	return w.buf.Write(p)
}

func TestSaveCheckpointWriterError(t *testing.T) {
	m := New()
	for i := range 100 {
		m.Apply(0, Op{Kind: Put, Key: fmt.Sprint(i), Value: string(make([]byte, 1000))})
	}
	v := prepare(t, m, 0, 9)
	m.Apply(0, Op{Kind: Put, Key: "later", Value: "x"})
	boom := errors.New("boom")
	if err := m.SaveCheckpoint(0, v, &failingWriter{n: 10000, err: boom}); !errors.Is(err, boom) {
		t.Fatalf("save with failing writer: %v, want %v", err, boom)
	}
	// The view was released: the next prepare works and sees the write.
	v = prepare(t, m, 0, 10)
	r := restored(t, 0, 10, save(t, m, 0, v))
	checkState(t, r, 0, m.Snapshot(0))
}

type failingWriter struct {
	n   int
	err error
}

func (w *failingWriter) Write(p []byte) (int, error) {
	if len(p) > w.n {
		n := w.n
		w.n = 0
		return n, w.err
	}
	w.n -= len(p)
	return len(p), nil
}

// TestCheckpointLayout pins the stream format.
func TestCheckpointLayout(t *testing.T) {
	m := New()
	m.Apply(3, Op{Kind: Put, Key: "b", Value: "xy"})
	m.Apply(3, Op{Kind: Delete, Key: "a"})
	got := save(t, m, 3, prepare(t, m, 3, 300))
	want := []byte("kvsm-ckp")
	want = append(want, 1, 3, 0xac, 0x02, 2) // version, group, instance 300, 2 keys
	want = append(want, 1, 'a', 0, 0, 1)     // "a": deleted, "", version 1
	want = append(want, 1, 'b', 1, 2, 'x', 'y', 1)
	want = append(want, "kvsm-end"...)
	want = append(want, 2)
	want = append(want, make([]byte, 8)...)
	d := m.StateDigest(3)
	for i := range 8 {
		want[len(want)-1-i] = byte(d >> (8 * i))
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("checkpoint =\n%q\nwant\n%q", got, want)
	}
	// An empty group has a checkpoint too.
	empty := save(t, m, 4, prepare(t, m, 4, 0))
	checkState(t, restored(t, 4, 0, empty), 4, map[string]Entry{})
}

func sampleCheckpoint(t testing.TB) []byte {
	m := New()
	m.Apply(3, Op{Kind: Put, Key: "alpha", Value: "1"})
	m.Apply(3, Op{Kind: Put, Key: "beta", Value: string(make([]byte, 300))})
	m.Apply(3, Op{Kind: Delete, Key: "beta"})
	m.Apply(3, Op{Kind: Put, Key: "", Value: "empty key"})
	m.Apply(3, Op{Kind: Delete, Key: "gamma"})
	m.Apply(3, Op{Kind: Put, Key: "\xff", Value: "\x00"})
	return save(t, m, 3, prepare(t, m, 3, 42))
}

func TestRestoreCheckpointRejectsBadInput(t *testing.T) {
	good := sampleCheckpoint(t)
	m := New()
	m.Execute(3, 7, Op{Kind: Put, Key: "keep", Value: "me"}.Encode(), nil)
	before := m.Snapshot(3)
	try := func(name string, data []byte, group, instance uint64) {
		t.Helper()
		err := m.RestoreCheckpoint(group, instance, bytes.NewReader(data))
		if !errors.Is(err, ErrBadCheckpoint) {
			t.Fatalf("%s: err = %v, want ErrBadCheckpoint", name, err)
		}
		checkState(t, m, 3, before)
		if st := m.Stats(3); st != (Stats{Executed: 1, LastInstance: 7}) {
			t.Fatalf("%s: failed restore changed stats: %+v", name, st)
		}
	}
	for n := range len(good) {
		try(fmt.Sprintf("truncated to %d bytes", n), good[:n], 3, 42)
	}
	for i := range good {
		for _, x := range []byte{0x01, 0x80, 0xff} {
			bad := bytes.Clone(good)
			bad[i] ^= x
			try(fmt.Sprintf("byte %d ^ %#x", i, x), bad, 3, 42)
		}
	}
	try("wrong group", good, 4, 42)
	try("wrong instance", good, 3, 41)
	try("trailing byte", append(bytes.Clone(good), 0), 3, 42)
	try("twice", append(bytes.Clone(good), good...), 3, 42)
	try("empty", nil, 3, 42)

	hdr := func(count uint64) []byte {
		b := []byte("kvsm-ckp\x01\x03\x2a")
		return appendUvarint(b, count)
	}
	try("non-minimal varint", append([]byte("kvsm-ckp\x81\x00"), good[9:]...), 3, 42)
	try("format version 2", append([]byte("kvsm-ckp\x02"), good[9:]...), 3, 42)
	try("varint overflow", append(hdr(1), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f), 3, 42)
	try("exists flag 2", append(hdr(1), 1, 'a', 2, 0, 1), 3, 42)
	try("deleted with value", append(hdr(1), 1, 'a', 0, 1, 'v', 1), 3, 42)
	try("duplicate key", append(hdr(2), 1, 'a', 1, 0, 1, 1, 'a', 1, 0, 1), 3, 42)
	try("unsorted keys", append(hdr(2), 1, 'b', 1, 0, 1, 1, 'a', 1, 0, 1), 3, 42)

	// Huge lengths and counts fail without allocating what they claim.
	var ms0, ms1 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	try("huge count", append(hdr(1<<62), 1, 'a', 1, 0, 1), 3, 42)
	try("huge key", appendUvarint(hdr(1), maxFieldLen), 3, 42)
	try("huger key", appendUvarint(hdr(1), 1<<62), 3, 42)
	try("huge value", appendUvarint(append(hdr(1), 1, 'a', 1), maxFieldLen), 3, 42)
	runtime.ReadMemStats(&ms1)
	if alloc := ms1.TotalAlloc - ms0.TotalAlloc; alloc > 8<<20 {
		t.Fatalf("bad lengths allocated %d bytes", alloc)
	}

	// A read error is returned as is, not as a bad checkpoint.
	boom := errors.New("boom")
	err := m.RestoreCheckpoint(3, 42, io.MultiReader(bytes.NewReader(good[:20]), iotest.ErrReader(boom)))
	if !errors.Is(err, boom) || errors.Is(err, ErrBadCheckpoint) {
		t.Fatalf("read error: %v", err)
	}
	checkState(t, m, 3, before)

	// And the good one restores, over the existing state.
	if err := m.RestoreCheckpoint(3, 42, iotest.OneByteReader(bytes.NewReader(good))); err != nil {
		t.Fatal(err)
	}
	if st := m.Stats(3); st != (Stats{Executed: 1, LastInstance: 42}) {
		t.Fatalf("stats after restore = %+v", st)
	}
	if _, ok := m.Snapshot(3)["keep"]; ok {
		t.Fatal("restore merged into the old state instead of replacing it")
	}
}

func appendUvarint(b []byte, v uint64) []byte {
	for v >= 0x80 {
		b = append(b, byte(v)|0x80)
		v >>= 7
	}
	return append(b, byte(v))
}

func FuzzRestoreCheckpoint(f *testing.F) {
	good := sampleCheckpoint(f)
	f.Add(good)
	f.Add(good[:len(good)/2])
	f.Add(good[:len(good)-1])
	f.Add(append(bytes.Clone(good), 0))
	f.Add([]byte{})
	f.Add([]byte("kvsm-ckp\x01\x03\x2a\x00kvsm-end\x00\x00\x00\x00\x00\x00\x00\x00\x00"))
	f.Add([]byte("kvsm-ckp\x01\x03\x2a\xff\xff\xff\xff\x0f\xff\xff\xff\xff\x0f"))
	f.Fuzz(func(t *testing.T, data []byte) {
		m := New()
		m.Apply(3, Op{Kind: Put, Key: "old", Value: "state"})
		before := m.Snapshot(3)
		err := m.RestoreCheckpoint(3, 42, bytes.NewReader(data))
		if err != nil {
			if !errors.Is(err, ErrBadCheckpoint) {
				t.Fatalf("error does not wrap ErrBadCheckpoint: %v", err)
			}
			checkState(t, m, 3, before)
			return
		}
		// Accepted input is canonical: saving gives the same bytes back.
		if again := save(t, m, 3, prepare(t, m, 3, 42)); !bytes.Equal(again, data) {
			t.Fatalf("accepted %q but saves %q", data, again)
		}
		checkState(t, m, 3, m.Snapshot(3))
	})
}

func TestStateDigestIndependentOfHistory(t *testing.T) {
	a, b := New(), New()
	if a.StateDigest(0) != 0 {
		t.Fatal("empty StateDigest is not 0")
	}
	// a: two keys written in one order; b: in another, with different
	// intermediate values and a checkpoint in the middle.
	a.Apply(0, Op{Kind: Put, Key: "x", Value: "1"})
	a.Apply(0, Op{Kind: Put, Key: "x", Value: "2"})
	a.Apply(0, Op{Kind: Put, Key: "y", Value: "3"})
	a.Apply(0, Op{Kind: Delete, Key: "z"})

	b.Apply(0, Op{Kind: Delete, Key: "z"})
	b.Apply(0, Op{Kind: Put, Key: "y", Value: "3"})
	v := prepare(t, b, 0, 2)
	b.Apply(0, Op{Kind: Put, Key: "x", Value: "other"})
	b.Apply(0, Op{Kind: CAS, Key: "x", Value: "2", Version: 1})
	if a.StateDigest(0) != b.StateDigest(0) || a.Digest(0) != b.Digest(0) {
		t.Fatal("equal states, different digests")
	}
	save(t, b, 0, v)
	b.Apply(0, Op{Kind: Get, Key: "x"})
	if a.StateDigest(0) != b.StateDigest(0) {
		t.Fatal("equal states, different digests after release")
	}
	// Through a restore.
	c := restored(t, 0, 4, save(t, a, 0, prepare(t, a, 0, 4)))
	if c.StateDigest(0) != a.StateDigest(0) {
		t.Fatal("restore changed StateDigest")
	}
	// Different states differ: version, value, exists, key, group.
	d := a.StateDigest(0)
	for _, op := range []Op{
		{Kind: Put, Key: "x", Value: "2"}, // same value, new version
		{Kind: Delete, Key: "y"},
		{Kind: Put, Key: "w"},
	} {
		e := restored(t, 0, 4, save(t, a, 0, prepare(t, a, 0, 4)))
		e.Apply(0, op)
		if e.StateDigest(0) == d {
			t.Fatalf("%v does not change StateDigest", op)
		}
	}
	// Field boundaries matter.
	x, y := New(), New()
	x.Apply(0, Op{Kind: Put, Key: "ab", Value: ""})
	y.Apply(0, Op{Kind: Put, Key: "a", Value: "b"})
	if x.StateDigest(0) == y.StateDigest(0) {
		t.Fatal("StateDigest is ambiguous across field boundaries")
	}
	// Writing back the same state restores the digest.
	z := New()
	z.Apply(0, Op{Kind: Put, Key: "k", Value: "1"})
	z.Apply(1, Op{Kind: Put, Key: "k", Value: "1"})
	if z.StateDigest(0) != z.StateDigest(1) || z.StateDigest(0) != digestOf(z.Snapshot(0)) {
		t.Fatal("StateDigest differs for equal groups")
	}
}

const benchKeys = 1_000_000

func benchMachine(b *testing.B, n int) *Machine {
	b.Helper()
	m := New()
	for i := range n {
		m.Apply(0, Op{Kind: Put, Key: fmt.Sprintf("key%07d", i), Value: "value"})
	}
	return m
}

// BenchmarkPrepareCheckpoint measures PrepareCheckpoint on groups of a
// thousand and a million keys: alone (each prepare supersedes the previous,
// unsaved view), and with one write between prepares (which the next
// prepare folds back into the frozen map).
func BenchmarkPrepareCheckpoint(b *testing.B) {
	for _, n := range []int{1000, benchKeys} {
		for _, write := range []bool{false, true} {
			b.Run(fmt.Sprintf("keys=%d/write=%v", n, write), func(b *testing.B) {
				m := benchMachine(b, n)
				op := Op{Kind: Put, Key: "key0000042", Value: "new"}
				i := uint64(0)
				for b.Loop() {
					if _, err := m.PrepareCheckpoint(0, i); err != nil {
						b.Fatal(err)
					}
					if write {
						m.Apply(0, op)
					}
					i++
				}
			})
		}
	}
}

// BenchmarkSaveCheckpoint measures a full save of a million keys, and the
// restore of what it wrote.
func BenchmarkSaveCheckpoint(b *testing.B) {
	m := benchMachine(b, benchKeys)
	var buf bytes.Buffer
	for b.Loop() {
		buf.Reset()
		v, err := m.PrepareCheckpoint(0, 1)
		if err != nil {
			b.Fatal(err)
		}
		if err := m.SaveCheckpoint(0, v, &buf); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(buf.Len()), "bytes")
}

func BenchmarkRestoreCheckpoint(b *testing.B) {
	m := benchMachine(b, benchKeys)
	data := save(b, m, 0, prepare(b, m, 0, 1))
	r := New()
	for b.Loop() {
		if err := r.RestoreCheckpoint(0, 1, bytes.NewReader(data)); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkApply measures a write on a 100k-key group, with no view and
// with a view outstanding (writes then go to the overlay).
func BenchmarkApply(b *testing.B) {
	for _, held := range []bool{false, true} {
		b.Run(fmt.Sprintf("view=%v", held), func(b *testing.B) {
			m := benchMachine(b, 100_000)
			if held {
				prepare(b, m, 0, 1)
			}
			i := 0
			for b.Loop() {
				m.Apply(0, Op{Kind: Put, Key: fmt.Sprintf("key%07d", i%200_000), Value: "value"})
				i++
			}
		})
	}
}

package kvsm

import (
	"errors"
	"maps"
	"testing"
)

func TestPutGet(t *testing.T) {
	m := New()
	if got, want := m.Apply(0, Op{Kind: Get, Key: "a"}), (Result{OK: true}); got != want {
		t.Fatalf("get missing = %+v, want %+v", got, want)
	}
	if got, want := m.Apply(0, Op{Kind: Put, Key: "a", Value: "1"}), (Result{OK: true, Version: 1}); got != want {
		t.Fatalf("put = %+v, want %+v", got, want)
	}
	if got, want := m.Apply(0, Op{Kind: Put, Key: "a", Value: "2"}), (Result{OK: true, Version: 2}); got != want {
		t.Fatalf("second put = %+v, want %+v", got, want)
	}
	want := Result{OK: true, Found: true, Value: "2", Version: 2}
	if got := m.Apply(0, Op{Kind: Get, Key: "a"}); got != want {
		t.Fatalf("get = %+v, want %+v", got, want)
	}
	if snap := m.Snapshot(0); len(snap) != 1 || snap["a"] != (Entry{Value: "2", Exists: true, Version: 2}) {
		t.Fatalf("snapshot = %+v", snap)
	}
}

func TestGetMissingCreatesNoEntry(t *testing.T) {
	m := New()
	empty := m.Digest(0)
	m.Apply(0, Op{Kind: Get, Key: "x"})
	m.Apply(0, Op{Kind: CAS, Key: "x", Value: "v", Version: 5}) // fails
	if snap := m.Snapshot(0); len(snap) != 0 {
		t.Fatalf("snapshot after reads = %+v, want empty", snap)
	}
	if m.Digest(0) != empty {
		t.Fatal("digest changed after read-only ops")
	}
}

func TestDeleteVersionSurvives(t *testing.T) {
	m := New()
	m.Apply(0, Op{Kind: Put, Key: "a", Value: "1"})
	if got, want := m.Apply(0, Op{Kind: Delete, Key: "a"}), (Result{OK: true, Found: true, Version: 2}); got != want {
		t.Fatalf("delete = %+v, want %+v", got, want)
	}
	if got, want := m.Apply(0, Op{Kind: Get, Key: "a"}), (Result{OK: true, Found: false, Version: 2}); got != want {
		t.Fatalf("get after delete = %+v, want %+v", got, want)
	}
	if got, want := m.Apply(0, Op{Kind: Delete, Key: "a"}), (Result{OK: true, Found: false, Version: 3}); got != want {
		t.Fatalf("second delete = %+v, want %+v", got, want)
	}
	if got, want := m.Apply(0, Op{Kind: Put, Key: "a", Value: "x"}), (Result{OK: true, Version: 4}); got != want {
		t.Fatalf("put after delete = %+v, want %+v", got, want)
	}
	// Deleting a never-written key still counts as a write.
	if got, want := m.Apply(0, Op{Kind: Delete, Key: "b"}), (Result{OK: true, Version: 1}); got != want {
		t.Fatalf("delete missing = %+v, want %+v", got, want)
	}
	want := map[string]Entry{
		"a": {Value: "x", Exists: true, Version: 4},
		"b": {Exists: false, Version: 1},
	}
	if snap := m.Snapshot(0); !maps.Equal(snap, want) {
		t.Fatalf("snapshot = %+v, want %+v", snap, want)
	}
}

func TestCAS(t *testing.T) {
	m := New()
	// Version 0 means "never written": CAS creates the key.
	if got, want := m.Apply(0, Op{Kind: CAS, Key: "a", Value: "1", Version: 0}), (Result{OK: true, Version: 1}); got != want {
		t.Fatalf("cas create = %+v, want %+v", got, want)
	}
	if got, want := m.Apply(0, Op{Kind: CAS, Key: "a", Value: "2", Version: 1}), (Result{OK: true, Version: 2}); got != want {
		t.Fatalf("cas match = %+v, want %+v", got, want)
	}
	// Mismatch: state unchanged, result describes the current state.
	want := Result{OK: false, Found: true, Value: "2", Version: 2}
	if got := m.Apply(0, Op{Kind: CAS, Key: "a", Value: "3", Version: 1}); got != want {
		t.Fatalf("cas mismatch = %+v, want %+v", got, want)
	}
	if got := m.Apply(0, Op{Kind: Get, Key: "a"}); got.Value != "2" || got.Version != 2 {
		t.Fatalf("get after failed cas = %+v", got)
	}
	// CAS against a deleted key uses the surviving version.
	m.Apply(0, Op{Kind: Delete, Key: "a"}) // version 3
	want = Result{OK: false, Found: false, Version: 3}
	if got := m.Apply(0, Op{Kind: CAS, Key: "a", Value: "z", Version: 0}); got != want {
		t.Fatalf("cas stale after delete = %+v, want %+v", got, want)
	}
	if got, want := m.Apply(0, Op{Kind: CAS, Key: "a", Value: "z", Version: 3}), (Result{OK: true, Version: 4}); got != want {
		t.Fatalf("cas after delete = %+v, want %+v", got, want)
	}
}

func TestInvalidKind(t *testing.T) {
	m := New()
	res := m.Apply(0, Op{Kind: 0, Key: "a"})
	if !errors.Is(res.Err, ErrBadOp) || res.OK {
		t.Fatalf("invalid kind result = %+v", res)
	}
	if len(m.Snapshot(0)) != 0 {
		t.Fatal("invalid op changed state")
	}
}

func TestGroupIsolation(t *testing.T) {
	m := New()
	m.Apply(1, Op{Kind: Put, Key: "k", Value: "one"})
	m.Apply(2, Op{Kind: Put, Key: "k", Value: "two"})
	m.Apply(2, Op{Kind: Put, Key: "k", Value: "two'"})
	if got := m.Apply(1, Op{Kind: Get, Key: "k"}); got.Value != "one" || got.Version != 1 {
		t.Fatalf("group 1 get = %+v", got)
	}
	if got := m.Apply(2, Op{Kind: Get, Key: "k"}); got.Value != "two'" || got.Version != 2 {
		t.Fatalf("group 2 get = %+v", got)
	}
	if got := m.Apply(3, Op{Kind: Get, Key: "k"}); got.Found || got.Version != 0 {
		t.Fatalf("group 3 get = %+v", got)
	}
	if m.Digest(1) == m.Digest(2) {
		t.Fatal("different groups have equal digests")
	}
}

func TestExecute(t *testing.T) {
	m := New()
	if m.SMID() != SMID || SMID != 1 {
		t.Fatalf("SMID = %d", m.SMID())
	}
	exec := func(instance uint64, value []byte) Result {
		t.Helper()
		out, err := m.Execute(7, instance, value, nil)
		if err != nil {
			t.Fatalf("execute at %d returned %v, want nil", instance, err)
		}
		return out.(Result)
	}
	if res := exec(10, Op{Kind: Put, Key: "k", Value: "v"}.Encode()); res != (Result{OK: true, Version: 1}) {
		t.Fatalf("execute put result = %+v", res)
	}
	exec(11, Op{Kind: Put, Key: "k", Value: "w"}.Encode())
	exec(12, Op{Kind: Put, Key: "k", Value: "x"}.Encode())
	if res := exec(13, Op{Kind: Get, Key: "k"}.Encode()); res.Value != "x" || res.Version != 3 {
		t.Fatalf("get result = %+v", res)
	}
	// A malformed value is a no-op that reports ErrBadOp in its result only.
	before := m.Digest(7)
	if res := exec(14, []byte{0xff, 1, 2}); !errors.Is(res.Err, ErrBadOp) || res.OK {
		t.Fatalf("bad op result = %+v", res)
	}
	if m.Digest(7) != before {
		t.Fatal("bad op changed state")
	}
	if got, want := m.Stats(7), (Stats{Executed: 5, LastInstance: 14}); got != want {
		t.Fatalf("stats = %+v, want %+v", got, want)
	}
	if got := m.Stats(8); got != (Stats{}) {
		t.Fatalf("stats of idle group = %+v", got)
	}
	if got := m.Snapshot(7)["k"]; got != (Entry{Value: "x", Exists: true, Version: 3}) {
		t.Fatalf("entry = %+v", got)
	}
}

func TestDigestDeterministic(t *testing.T) {
	ops := []Op{
		{Kind: Put, Key: "a", Value: "1"},
		{Kind: Put, Key: "b", Value: "2"},
		{Kind: Delete, Key: "c"},
		{Kind: Put, Key: "d", Value: "4"},
	}
	m1, m2 := New(), New()
	for _, op := range ops {
		m1.Apply(0, op)
	}
	// Same per-key histories applied in a different key order.
	for i := len(ops) - 1; i >= 0; i-- {
		m2.Apply(0, ops[i])
	}
	if m1.Digest(0) != m2.Digest(0) {
		t.Fatal("equal states have different digests")
	}
	m2.Apply(0, Op{Kind: Put, Key: "a", Value: "1"}) // same value, new version
	if m1.Digest(0) == m2.Digest(0) {
		t.Fatal("digest ignores version")
	}
	// Field boundaries matter: key "ab"/value "" differs from key "a"/value "b".
	x, y := New(), New()
	x.Apply(0, Op{Kind: Put, Key: "ab", Value: ""})
	y.Apply(0, Op{Kind: Put, Key: "a", Value: "b"})
	if x.Digest(0) == y.Digest(0) {
		t.Fatal("digest is ambiguous across field boundaries")
	}
}

func TestSnapshotIsCopy(t *testing.T) {
	m := New()
	m.Apply(0, Op{Kind: Put, Key: "a", Value: "1"})
	snap := m.Snapshot(0)
	snap["a"] = Entry{Value: "mutated"}
	snap["b"] = Entry{}
	if got := m.Snapshot(0); len(got) != 1 || got["a"].Value != "1" {
		t.Fatalf("snapshot aliased machine state: %+v", got)
	}
	if m.Snapshot(99) == nil {
		t.Fatal("snapshot of unknown group is nil")
	}
}

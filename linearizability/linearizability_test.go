package linearizability

import (
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/anishathalye/porcupine"

	"github.com/paxoskit/paxos/internal/kvsm"
)

func put(k, v string) kvsm.Op { return kvsm.Op{Kind: kvsm.Put, Key: k, Value: v} }
func get(k string) kvsm.Op    { return kvsm.Op{Kind: kvsm.Get, Key: k} }
func del(k string) kvsm.Op    { return kvsm.Op{Kind: kvsm.Delete, Key: k} }
func cas(k string, ver uint64, v string) kvsm.Op {
	return kvsm.Op{Kind: kvsm.CAS, Key: k, Value: v, Version: ver}
}

func written(ver uint64) kvsm.Result { return kvsm.Result{OK: true, Version: ver} }
func read(v string, ver uint64) kvsm.Result {
	return kvsm.Result{OK: true, Found: true, Value: v, Version: ver}
}

// do records a completed operation.
func do(r *Recorder, client int, op kvsm.Op, call, ret int64, res kvsm.Result) {
	r.Return(r.Invoke(client, op, call), res, ret)
}

func mustBe(t *testing.T, r *Recorder, want porcupine.CheckResult) Verdict {
	t.Helper()
	v := r.Check(0)
	if v.Result != want {
		t.Fatalf("check = %v, want %v; history:\n%s", v.Result, want, dump(r))
	}
	if v.OK() != (want == porcupine.Ok) || v.TimedOut() {
		t.Fatalf("verdict OK()=%v TimedOut()=%v for %v", v.OK(), v.TimedOut(), v.Result)
	}
	return v
}

func dump(r *Recorder) string {
	var b strings.Builder
	for _, op := range r.Operations() {
		b.WriteString(describeOperation(op.Input, op.Output))
		b.WriteString("\n")
	}
	return b.String()
}

func TestSequentialHistoryPasses(t *testing.T) {
	r := NewRecorder()
	do(r, 0, get("a"), 0, 5, kvsm.Result{OK: true})
	do(r, 0, put("a", "1"), 10, 20, written(1))
	do(r, 1, get("a"), 30, 40, read("1", 1))
	do(r, 1, del("a"), 50, 60, kvsm.Result{OK: true, Found: true, Version: 2})
	do(r, 0, get("a"), 70, 80, kvsm.Result{OK: true, Version: 2})
	do(r, 0, put("a", "2"), 90, 100, written(3))
	do(r, 1, put("b", "x"), 90, 100, written(1))
	v := mustBe(t, r, porcupine.Ok)
	if v.Ops != 7 || v.Unknown != 0 || r.Len() != 7 {
		t.Fatalf("verdict counts = %d ops, %d unknown; Len = %d", v.Ops, v.Unknown, r.Len())
	}
}

func TestStaleReadFails(t *testing.T) {
	r := NewRecorder()
	do(r, 0, put("a", "1"), 0, 10, written(1))
	do(r, 0, put("a", "2"), 20, 30, written(2))
	do(r, 1, get("a"), 40, 50, read("1", 1)) // put 2 completed before this began
	mustBe(t, r, porcupine.Illegal)
}

func TestConcurrentReadMayBeStale(t *testing.T) {
	r := NewRecorder()
	do(r, 0, put("a", "1"), 0, 10, written(1))
	do(r, 0, put("a", "2"), 20, 50, written(2))
	do(r, 1, get("a"), 30, 40, read("1", 1)) // overlaps put 2
	mustBe(t, r, porcupine.Ok)
}

func TestWrongVersionFails(t *testing.T) {
	r := NewRecorder()
	do(r, 0, put("a", "1"), 0, 10, written(1))
	do(r, 0, put("a", "1"), 20, 30, written(1)) // second write must be version 2
	mustBe(t, r, porcupine.Illegal)
}

func TestUnknownPutThatHappened(t *testing.T) {
	r := NewRecorder()
	do(r, 0, put("a", "1"), 0, 10, written(1))
	r.Unknown(r.Invoke(1, put("a", "2"), 20))
	do(r, 2, get("a"), 100, 110, read("2", 2))
	v := mustBe(t, r, porcupine.Ok)
	if v.Unknown != 1 {
		t.Fatalf("Unknown = %d, want 1", v.Unknown)
	}
}

func TestUnknownPutThatNeverHappened(t *testing.T) {
	r := NewRecorder()
	do(r, 0, put("a", "1"), 0, 10, written(1))
	r.Unknown(r.Invoke(1, put("a", "lost"), 20))
	do(r, 2, get("a"), 100, 110, read("1", 1))
	do(r, 2, put("a", "3"), 120, 130, written(2))
	do(r, 2, get("a"), 140, 150, read("3", 2))
	mustBe(t, r, porcupine.Ok)
}

func TestPendingOpsAreUnknown(t *testing.T) {
	r := NewRecorder()
	r.Invoke(0, put("a", "1"), 0) // never returned
	do(r, 1, get("a"), 10, 20, read("1", 1))
	v := mustBe(t, r, porcupine.Ok)
	if v.Unknown != 1 {
		t.Fatalf("Unknown = %d, want 1", v.Unknown)
	}
	ops := r.Operations()
	if ops[0].Return != math.MaxInt64 || !ops[0].Output.(Output).Unknown {
		t.Fatalf("pending op = %+v, want open-ended unknown", ops[0])
	}
}

func TestErrResultIsUnknown(t *testing.T) {
	r := NewRecorder()
	id := r.Invoke(0, put("a", "1"), 0)
	r.Return(id, kvsm.Result{Err: errors.New("timeout")}, 10)
	r.Return(id, written(1), 20) // ignored: outcome already recorded
	do(r, 1, get("a"), 30, 40, kvsm.Result{OK: true})
	do(r, 1, get("a"), 50, 60, read("1", 1))
	ops := r.Operations()
	if out := ops[0].Output.(Output); !out.Unknown || ops[0].Return != math.MaxInt64 {
		t.Fatalf("op with Err = %+v, want unknown", ops[0])
	}
	mustBe(t, r, porcupine.Ok)

	// A known-looking output that carries an error is also unknown.
	ok, next := KVModel.Step(kvsm.Entry{}, put("a", "1"), Output{Result: kvsm.Result{Err: kvsm.ErrBadOp}})
	if !ok || next != (kvsm.Entry{Value: "1", Exists: true, Version: 1}) {
		t.Fatalf("step with Err output = %v, %+v", ok, next)
	}
}

func TestUnknownCannotExplainEverything(t *testing.T) {
	r := NewRecorder()
	r.Unknown(r.Invoke(0, put("a", "1"), 0))
	do(r, 1, get("a"), 10, 20, read("never-written", 1))
	mustBe(t, r, porcupine.Illegal)

	// An unknown put cannot take effect before it was invoked.
	r = NewRecorder()
	do(r, 1, get("a"), 0, 10, read("1", 1))
	r.Unknown(r.Invoke(0, put("a", "1"), 20))
	mustBe(t, r, porcupine.Illegal)
}

func TestCASHistory(t *testing.T) {
	r := NewRecorder()
	do(r, 0, put("a", "init"), 0, 10, written(1))
	// Two racing CAS from version 1: exactly one may win.
	do(r, 0, cas("a", 1, "x"), 20, 40, written(2))
	do(r, 1, cas("a", 1, "y"), 25, 45, kvsm.Result{OK: false, Found: true, Value: "x", Version: 2})
	do(r, 1, cas("a", 2, "z"), 50, 60, written(3))
	do(r, 0, get("a"), 70, 80, read("z", 3))
	mustBe(t, r, porcupine.Ok)

	r = NewRecorder()
	do(r, 0, put("a", "init"), 0, 10, written(1))
	do(r, 0, cas("a", 1, "x"), 20, 40, written(2))
	do(r, 1, cas("a", 1, "y"), 25, 45, written(2)) // both cannot succeed
	mustBe(t, r, porcupine.Illegal)

	// A failed CAS must report the state it observed.
	r = NewRecorder()
	do(r, 0, put("a", "init"), 0, 10, written(1))
	do(r, 0, cas("a", 7, "x"), 20, 30, kvsm.Result{OK: false, Found: true, Value: "wrong", Version: 1})
	mustBe(t, r, porcupine.Illegal)

	// An unknown CAS that won is visible later.
	r = NewRecorder()
	do(r, 0, put("a", "init"), 0, 10, written(1))
	r.Unknown(r.Invoke(1, cas("a", 1, "x"), 20))
	do(r, 0, cas("a", 1, "y"), 30, 40, kvsm.Result{OK: false, Found: true, Value: "x", Version: 2})
	mustBe(t, r, porcupine.Ok)
}

func TestPartitionsAreIndependent(t *testing.T) {
	r := NewRecorder()
	do(r, 0, put("a", "1"), 0, 10, written(1))
	do(r, 1, put("b", "1"), 0, 10, written(1))
	do(r, 0, get("b"), 20, 30, read("1", 1))
	do(r, 1, get("a"), 20, 30, read("1", 1))
	mustBe(t, r, porcupine.Ok)

	do(r, 0, put("b", "2"), 40, 50, written(2))
	do(r, 1, get("b"), 60, 70, read("1", 1)) // stale on b only
	mustBe(t, r, porcupine.Illegal)
	if parts := KVModel.Partition(r.Operations()); len(parts) != 2 {
		t.Fatalf("partitions = %d, want 2", len(parts))
	}
}

func TestPartitionEvents(t *testing.T) {
	events := []porcupine.Event{
		{Kind: porcupine.CallEvent, Value: put("a", "1"), Id: 0},
		{Kind: porcupine.CallEvent, Value: get("b"), Id: 1},
		{Kind: porcupine.ReturnEvent, Value: Output{Result: written(1)}, Id: 0},
		{Kind: porcupine.ReturnEvent, Value: Output{Result: kvsm.Result{OK: true}}, Id: 1},
		{Kind: porcupine.CallEvent, Value: get("a"), Id: 2},
		{Kind: porcupine.ReturnEvent, Value: Output{Result: read("1", 1)}, Id: 2},
	}
	parts := KVModel.PartitionEvent(events)
	if len(parts) != 2 || len(parts[0]) != 4 || len(parts[1]) != 2 {
		t.Fatalf("partitions = %+v", parts)
	}
	if !porcupine.CheckEvents(KVModel, events) {
		t.Fatal("event history not linearizable")
	}
}

func TestStepRejectsBadTypes(t *testing.T) {
	if ok, _ := KVModel.Step(kvsm.Entry{}, "not an op", Output{}); ok {
		t.Fatal("step accepted bad input")
	}
	if ok, _ := KVModel.Step(kvsm.Entry{}, get("a"), kvsm.Result{OK: true}); ok {
		t.Fatal("step accepted bad output")
	}
	if ok, _ := KVModel.Step(kvsm.Entry{}, kvsm.Op{Kind: 0}, Output{Result: kvsm.Result{OK: true}}); ok {
		t.Fatal("step accepted known outcome for invalid op")
	}
}

func TestDescribe(t *testing.T) {
	cases := []struct {
		in   kvsm.Op
		out  Output
		want string
	}{
		{put("k1", "v3"), Output{Result: written(5)}, `put(k1,"v3") -> @5`},
		{get("k1"), Output{Result: read("v3", 5)}, `get(k1) -> "v3"@5`},
		{get("k1"), Output{Result: kvsm.Result{OK: true, Version: 2}}, `get(k1) -> <absent>@2`},
		{del("k1"), Output{Result: kvsm.Result{OK: true, Found: true, Version: 6}}, `delete(k1) -> found@6`},
		{cas("k1", 4, "v9"), Output{Result: written(5)}, `cas(k1,@4,"v9") -> ok@5`},
		{cas("k1", 4, "v9"), Output{Result: read("x", 7)}.fail(), `cas(k1,@4,"v9") -> fail "x"@7`},
		{put("k1", "v3"), Output{Unknown: true}, `put(k1,"v3") -> ?`},
	}
	for _, c := range cases {
		if got := KVModel.DescribeOperation(c.in, c.out); got != c.want {
			t.Errorf("DescribeOperation = %s, want %s", got, c.want)
		}
	}
	if got := KVModel.DescribeState(kvsm.Entry{Value: "v", Exists: true, Version: 3}); got != `"v"@3` {
		t.Errorf("DescribeState = %s", got)
	}
}

func (o Output) fail() Output { o.Result.OK = false; return o }

func TestWriteHTML(t *testing.T) {
	r := NewRecorder()
	do(r, 0, put("a", "1"), 0, 10, written(1))
	do(r, 0, put("a", "2"), 20, 30, written(2))
	r.Unknown(r.Invoke(2, put("a", "3"), 25))
	do(r, 1, get("a"), 40, 50, read("1", 1))
	v := mustBe(t, r, porcupine.Illegal)
	path := filepath.Join(t.TempDir(), "history.html")
	if err := r.WriteHTML(path, v); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) == 0 || !strings.Contains(string(b), "<html") {
		t.Fatalf("visualization is empty or not HTML (%d bytes)", len(b))
	}
	if err := r.WriteHTML(filepath.Join(t.TempDir(), "missing", "x.html"), v); err == nil {
		t.Fatal("WriteHTML to a missing directory succeeded")
	}
}

func TestRecorderIgnoresBadIDs(t *testing.T) {
	r := NewRecorder()
	r.Return(-1, written(1), 0)
	r.Return(3, written(1), 0)
	r.Unknown(7)
	id := r.Invoke(0, put("a", "1"), 100)
	r.Return(id, written(1), 50) // before the call: clamped
	r.Unknown(id)                // already returned: ignored
	ops := r.Operations()
	if len(ops) != 1 || ops[0].Return != 100 || ops[0].Output.(Output).Unknown {
		t.Fatalf("operations = %+v", ops)
	}
}

func TestRecorderConcurrentUse(t *testing.T) {
	r := NewRecorder()
	var wg sync.WaitGroup
	var mu sync.Mutex // serializes the virtual clock and the store
	var now int64
	m := kvsm.New()
	for c := range 4 {
		wg.Go(func() {
			for i := range 50 {
				op := put("k", "v")
				if i%2 == 1 {
					op = get("k")
				}
				mu.Lock()
				now++
				id := r.Invoke(c, op, now)
				res := m.Apply(0, op)
				now++
				r.Return(id, res, now)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if r.Len() != 200 {
		t.Fatalf("Len = %d, want 200", r.Len())
	}
	mustBe(t, r, porcupine.Ok)
}

func TestEffectedBy(t *testing.T) {
	// A put whose client never heard, known to have taken effect by 20:
	// a read after 20 must see it.
	r := NewRecorder()
	do(r, 0, put("a", "1"), 0, 5, written(1))
	r.EffectedBy(r.Invoke(1, put("a", "2"), 10), written(2), 20)
	do(r, 2, get("a"), 30, 40, read("1", 1))
	mustBe(t, r, porcupine.Illegal)

	// Before its bound it may or may not have taken effect.
	r = NewRecorder()
	do(r, 0, put("a", "1"), 0, 5, written(1))
	r.EffectedBy(r.Invoke(1, put("a", "2"), 10), written(2), 50)
	do(r, 2, get("a"), 30, 40, read("1", 1))
	do(r, 2, get("a"), 60, 70, read("2", 2))
	v := mustBe(t, r, porcupine.Ok)
	if v.Unknown != 1 {
		t.Fatalf("Unknown = %d, want 1", v.Unknown)
	}

	// A bound before the call is clamped to it; a returned op is kept.
	r = NewRecorder()
	id := r.Invoke(0, put("a", "1"), 10)
	r.EffectedBy(id, written(1), 3)
	if ops := r.Operations(); ops[0].Return != 10 {
		t.Fatalf("return = %d, want the call time 10", ops[0].Return)
	}
	id = r.Invoke(0, put("a", "2"), 20)
	r.Return(id, written(2), 30)
	r.EffectedBy(id, written(7), 25)
	if ops := r.Operations(); ops[1].Return != 30 || ops[1].Output.(Output).Result != written(2) {
		t.Fatalf("returned op changed: %+v", ops[1])
	}
}

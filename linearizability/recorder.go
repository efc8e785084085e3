package linearizability

import (
	"math"
	"sync"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/paxoskit/paxos/internal/kvsm"
)

// opState is the lifecycle stage of a recorded operation.
type opState uint8

const (
	pending  opState = iota // invoked, no outcome yet
	returned                // known outcome
	unknown                 // outcome explicitly unknown
	absent                  // known never to have taken effect: left out
	effected                // took effect with a known result, at an unknown time
)

type record struct {
	client int
	op     kvsm.Op
	call   int64
	ret    int64
	res    kvsm.Result
	state  opState
	bound  bool // effected with a known latest time (ret)
}

// Recorder accumulates a concurrent history of kvsm operations. It is safe
// for concurrent use. Times are int64 and only their order matters: virtual
// nanoseconds in the simulator, wall-clock nanoseconds for real clients.
// They must come from a single clock that never goes backwards.
type Recorder struct {
	mu  sync.Mutex
	ops []record
}

// NewRecorder returns an empty Recorder.
func NewRecorder() *Recorder { return &Recorder{} }

// Invoke records that client issued op at time now and returns the id used
// to report its outcome. client should be a small non-negative integer; it
// only selects the row in the visualization and plays no part in checking.
func (r *Recorder) Invoke(client int, op kvsm.Op, now int64) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ops = append(r.ops, record{client: client, op: op, call: now, state: pending})
	return len(r.ops) - 1
}

// Return records that operation id completed at time now with the known
// outcome res. A res with a non-nil Err is not a known outcome and is
// recorded as [Recorder.Unknown]. A now earlier than the operation's call
// time is clamped to it. Unknown ids and operations that already have an
// outcome are ignored.
func (r *Recorder) Return(id int, res kvsm.Result, now int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if id < 0 || id >= len(r.ops) || r.ops[id].state != pending {
		return
	}
	rec := &r.ops[id]
	if res.Err != nil {
		rec.res = res
		rec.state = unknown
		return
	}
	rec.res = res
	rec.ret = max(now, rec.call)
	rec.state = returned
}

// Unknown records that the outcome of operation id is unknown: it may or
// may not have taken effect, at any time after its call. The operation
// stays open-ended (see [KVModel]). Unknown ids and operations that already
// have an outcome are ignored. Operations that are still pending when the
// history is read are treated the same way.
func (r *Recorder) Unknown(id int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if id < 0 || id >= len(r.ops) || r.ops[id].state != pending {
		return
	}
	r.ops[id].state = unknown
}

// Absent records that operation id, pending or of unknown outcome, is
// known never to have taken effect (the simulator knows every value that
// was chosen). Such an operation is left out of the history, which is
// what linearizability allows for an operation that never took effect;
// it saves the checker from trying every place an open-ended operation
// could go. Operations with a known outcome are not changed.
func (r *Recorder) Absent(id int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if id < 0 || id >= len(r.ops) || r.ops[id].state == returned {
		return
	}
	r.ops[id].state = absent
}

// Effected records that operation id, pending or of unknown outcome, took
// effect with result res at some time after its call (the simulator
// replays the chosen log, so it knows the result even when the client
// never heard it). The operation stays open-ended in time but its output
// is checked, which both strengthens the check and prunes the search.
func (r *Recorder) Effected(id int, res kvsm.Result) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if id < 0 || id >= len(r.ops) || r.ops[id].state == returned {
		return
	}
	r.ops[id].res = res
	r.ops[id].state = effected
}

// EffectedBy is [Recorder.Effected] with a bound: the operation took
// effect with result res at or before time by (the simulator knows when
// its value was first executed anywhere, which is after it took effect).
// Its interval ends at by (at least its call time) instead of staying
// open, which prunes porcupine's search without making any linearizable
// history fail.
func (r *Recorder) EffectedBy(id int, res kvsm.Result, by int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if id < 0 || id >= len(r.ops) || r.ops[id].state == returned {
		return
	}
	rec := &r.ops[id]
	rec.res, rec.state, rec.bound, rec.ret = res, effected, true, max(by, rec.call)
}

// Len returns the number of operations invoked so far.
func (r *Recorder) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.ops)
}

// Operations returns the history as Porcupine operations, in invocation
// order, with Input of type kvsm.Op and Output of type [Output]. Operations
// with an unknown outcome, including those still pending, have
// Output.Unknown set and Return = math.MaxInt64. Metadata holds the
// operation id returned by Invoke.
func (r *Recorder) Operations() []porcupine.Operation {
	ops, _ := r.snapshot()
	return ops
}

func (r *Recorder) snapshot() (ops []porcupine.Operation, unknowns int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	ops = make([]porcupine.Operation, 0, len(r.ops))
	for i, rec := range r.ops {
		if rec.state == absent {
			continue
		}
		op := porcupine.Operation{
			ClientId: rec.client,
			Input:    rec.op,
			Call:     rec.call,
			Metadata: i,
		}
		switch rec.state {
		case returned:
			op.Output = Output{Result: rec.res}
			op.Return = rec.ret
		case effected:
			op.Output = Output{Result: rec.res}
			op.Return = math.MaxInt64
			if rec.bound {
				op.Return = rec.ret
			}
			unknowns++
		default:
			op.Output = Output{Result: rec.res, Unknown: true}
			op.Return = math.MaxInt64
			unknowns++
		}
		ops = append(ops, op)
	}
	return ops, unknowns
}

// Verdict is the outcome of [Recorder.Check].
type Verdict struct {
	Result  porcupine.CheckResult       // Ok, Illegal, or Unknown (timed out)
	Info    porcupine.LinearizationInfo // for visualization; see WriteHTML
	Ops     int                         // operations checked
	Unknown int                         // of which with unknown outcome
}

// OK reports whether the history was proven linearizable. A timed-out
// check is not OK.
func (v Verdict) OK() bool { return v.Result == porcupine.Ok }

// TimedOut reports whether the check gave up before reaching a verdict.
func (v Verdict) TimedOut() bool { return v.Result == porcupine.Unknown }

// Check checks the history recorded so far for linearizability under
// [KVModel]. A timeout of 0 means no limit; otherwise the result may be
// porcupine.Unknown (see [Verdict.TimedOut]). The recorder may keep
// recording concurrently; Check sees a consistent snapshot.
func (r *Recorder) Check(timeout time.Duration) Verdict {
	ops, unknowns := r.snapshot()
	res, info := porcupine.CheckOperationsVerbose(KVModel, ops, timeout)
	return Verdict{Result: res, Info: info, Ops: len(ops), Unknown: unknowns}
}

// WriteHTML writes Porcupine's interactive HTML visualization of v (which
// must come from [Recorder.Check]) to the file at path, creating or
// truncating it.
func (r *Recorder) WriteHTML(path string, v Verdict) error {
	return porcupine.VisualizePath(KVModel, v.Info, path)
}

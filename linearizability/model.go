// Package linearizability checks histories of [kvsm] operations for
// linearizability with Porcupine.
//
// Clients record each operation with a [Recorder]: [Recorder.Invoke] when
// the operation is issued, then exactly one of [Recorder.Return] (the
// outcome is known) or [Recorder.Unknown] (the outcome is unknown, e.g. a
// timeout). [Recorder.Check] then runs Porcupine with [KVModel].
//
// The model partitions the history by key, so a history spanning several
// Paxos groups must use keys that are unique across groups (for example by
// prefixing the group id).
package linearizability

import (
	"fmt"
	"hash/fnv"

	"github.com/anishathalye/porcupine"

	"github.com/paxoskit/paxos/internal/kvsm"
)

// Operation inputs are kvsm.Op values; outputs are Output values.

// Output is the recorded outcome of an operation.
type Output struct {
	// Result is the outcome reported to the client; ignored if Unknown.
	Result kvsm.Result
	// Unknown reports that the client does not know whether the
	// operation took effect. An Output whose Result.Err is non-nil is
	// treated as unknown as well.
	Unknown bool
}

// known reports whether o carries a definite outcome.
func (o Output) known() bool { return !o.Unknown && o.Result.Err == nil }

// KVModel is the Porcupine model of a [kvsm] key-value store. Operation
// inputs must be kvsm.Op and outputs Output; the per-partition (per-key)
// state is a kvsm.Entry, starting from the zero Entry. Step rejects inputs
// or outputs of any other type, so such histories are reported Illegal.
//
// Unknown outcomes. An operation whose outcome is unknown may or may not
// have taken effect. The model's Step always accepts such an operation and
// returns the state the operation would produce if applied (kvsm.Step).
// That alone covers "took effect": Porcupine may linearize the operation at
// any point after its call. "Never took effect" is covered by recording the
// operation as open-ended, with Return = math.MaxInt64 (as etcd's robustness
// tests do, and as [Recorder.Operations] does): the operation is then
// concurrent with everything invoked after it, so Porcupine may linearize it
// after every other operation on its key, where its effect is unobservable.
// Unknown reads never change state, and an unknown CAS whose version does
// not match applies as a no-op, exactly like kvsm.
//
// Known outcomes must match kvsm.Step from the current state: for Get,
// Found, Value and Version; for Put, OK and Version; for Delete, OK, Found
// and Version; for CAS, OK and Version, plus Found and Value on failure.
var KVModel = porcupine.Model{
	Partition:         partition,
	PartitionEvent:    partitionEvents,
	Init:              func() any { return kvsm.Entry{} },
	Step:              step,
	Equal:             func(a, b any) bool { return a == b },
	Hash:              hashState,
	DescribeOperation: describeOperation,
	DescribeState:     describeState,
}

func partition(history []porcupine.Operation) [][]porcupine.Operation {
	index := make(map[string]int)
	var parts [][]porcupine.Operation
	for _, op := range history {
		k := keyOf(op.Input)
		i, ok := index[k]
		if !ok {
			i = len(parts)
			index[k] = i
			parts = append(parts, nil)
		}
		parts[i] = append(parts[i], op)
	}
	return parts
}

func partitionEvents(history []porcupine.Event) [][]porcupine.Event {
	// Return events carry outputs, not keys: map them by event id.
	keyByID := make(map[int]string)
	index := make(map[string]int)
	var parts [][]porcupine.Event
	for _, ev := range history {
		var k string
		if ev.Kind == porcupine.CallEvent {
			k = keyOf(ev.Value)
			keyByID[ev.Id] = k
		} else {
			k = keyByID[ev.Id]
		}
		i, ok := index[k]
		if !ok {
			i = len(parts)
			index[k] = i
			parts = append(parts, nil)
		}
		parts[i] = append(parts[i], ev)
	}
	return parts
}

// keyOf returns the key of an operation input; inputs of the wrong type
// all land in one partition, where step rejects them.
func keyOf(input any) string {
	if op, ok := input.(kvsm.Op); ok {
		return op.Key
	}
	return ""
}

func step(state, input, output any) (bool, any) {
	e, ok1 := state.(kvsm.Entry)
	op, ok2 := input.(kvsm.Op)
	out, ok3 := output.(Output)
	if !ok1 || !ok2 || !ok3 {
		return false, state
	}
	next, want := kvsm.Step(e, op)
	if !out.known() {
		return true, next
	}
	if want.Err != nil {
		// An invalid op cannot have a successful known outcome.
		return false, state
	}
	return matches(op.Kind, out.Result, want), next
}

// matches reports whether got agrees with the expected result want on the
// fields that are meaningful for kind.
func matches(kind kvsm.Kind, got, want kvsm.Result) bool {
	if got.OK != want.OK || got.Version != want.Version {
		return false
	}
	switch kind {
	case kvsm.Get:
		return got.Found == want.Found && got.Value == want.Value
	case kvsm.Delete:
		return got.Found == want.Found
	case kvsm.CAS:
		return want.OK || (got.Found == want.Found && got.Value == want.Value)
	default: // kvsm.Put
		return true
	}
}

func hashState(state any) uint64 {
	e, ok := state.(kvsm.Entry)
	if !ok {
		return 0
	}
	h := fnv.New64a()
	fmt.Fprintf(h, "%t|%d|%s", e.Exists, e.Version, e.Value)
	return h.Sum64()
}

// describeOperation renders an operation for the visualization, e.g.
// `put(k1,"v3") -> @5`, `get(k1) -> "v3"@5`, `cas(k1,@4,"v9") -> ok@5` or
// `put(k1,"v3") -> ?` for an unknown outcome.
func describeOperation(input, output any) string {
	op, ok := input.(kvsm.Op)
	if !ok {
		return fmt.Sprintf("<bad input %v>", input)
	}
	out, ok := output.(Output)
	if !ok {
		return fmt.Sprintf("%v -> <bad output %v>", op, output)
	}
	if !out.known() {
		if out.Result.Err != nil {
			return fmt.Sprintf("%v -> ? (%v)", op, out.Result.Err)
		}
		return fmt.Sprintf("%v -> ?", op)
	}
	r := out.Result
	switch op.Kind {
	case kvsm.Put:
		return fmt.Sprintf("%v -> @%d", op, r.Version)
	case kvsm.Get:
		return fmt.Sprintf("%v -> %s", op, describeValue(r.Found, r.Value, r.Version))
	case kvsm.Delete:
		if r.Found {
			return fmt.Sprintf("%v -> found@%d", op, r.Version)
		}
		return fmt.Sprintf("%v -> absent@%d", op, r.Version)
	case kvsm.CAS:
		if r.OK {
			return fmt.Sprintf("%v -> ok@%d", op, r.Version)
		}
		return fmt.Sprintf("%v -> fail %s", op, describeValue(r.Found, r.Value, r.Version))
	default:
		return fmt.Sprintf("%v -> %+v", op, r)
	}
}

// describeState renders a per-key state, e.g. `"v3"@5` or `<absent>@6`.
func describeState(state any) string {
	e, ok := state.(kvsm.Entry)
	if !ok {
		return fmt.Sprintf("<bad state %v>", state)
	}
	return describeValue(e.Exists, e.Value, e.Version)
}

func describeValue(exists bool, value string, version uint64) string {
	if !exists {
		return fmt.Sprintf("<absent>@%d", version)
	}
	return fmt.Sprintf("%q@%d", value, version)
}

package kvsm

import (
	"encoding/binary"
	"hash/fnv"
	"slices"
	"sync"
)

// SMID is the state machine id under which a [Machine] registers with a
// Paxos node; values for this machine are routed by it.
const SMID uint32 = 1

// Entry is the state of one key.
type Entry struct {
	Value   string // current value; "" when !Exists
	Exists  bool   // whether the key currently holds a value
	Version uint64 // number of writes ever applied to the key
}

// Result is the outcome of applying one [Op].
//
// Field meaning by kind:
//   - Put: OK=true, Version=new version.
//   - Get: OK=true, Found=key exists, Value=current value, Version=current version.
//   - Delete: OK=true, Found=key existed before, Version=new version.
//   - CAS success: OK=true, Version=new version.
//   - CAS failure: OK=false, Found/Value/Version describe the current state.
//
// Err is non-nil (wrapping [ErrBadOp]) only for values that could not be
// decoded or ops with an invalid kind; all other fields are then zero.
type Result struct {
	OK      bool
	Found   bool
	Value   string
	Version uint64
	Err     error
}

// Step is the pure transition function of the state machine: it returns the
// key's state after applying op to e, and the op's result. op.Key is not
// consulted; e must be the state of that key (the zero Entry for a key that
// was never written). For an invalid op.Kind, Step returns e unchanged and a
// Result with Err set to [ErrBadOp].
func Step(e Entry, op Op) (Entry, Result) {
	switch op.Kind {
	case Put:
		e = Entry{Value: op.Value, Exists: true, Version: e.Version + 1}
		return e, Result{OK: true, Version: e.Version}
	case Get:
		return e, Result{OK: true, Found: e.Exists, Value: e.Value, Version: e.Version}
	case Delete:
		found := e.Exists
		e = Entry{Version: e.Version + 1}
		return e, Result{OK: true, Found: found, Version: e.Version}
	case CAS:
		if e.Version != op.Version {
			return e, Result{OK: false, Found: e.Exists, Value: e.Value, Version: e.Version}
		}
		e = Entry{Value: op.Value, Exists: true, Version: e.Version + 1}
		return e, Result{OK: true, Version: e.Version}
	default:
		return e, Result{Err: ErrBadOp}
	}
}

// Stats describes the execution progress of one group.
type Stats struct {
	// Executed counts values passed to Execute for the group, including
	// undecodable ones (which are deterministic no-ops).
	Executed uint64
	// LastInstance is the instance of the most recent Execute call for the
	// group; meaningful only when Executed > 0.
	LastInstance uint64
}

// Machine is a key-value state machine holding independent state for each
// Paxos group. The zero value is not usable; create one with [New].
// A Machine is safe for concurrent use.
type Machine struct {
	mu     sync.Mutex
	groups map[uint64]map[string]*entry
	stats  map[uint64]*Stats
}

// entry is the mutable per-key state stored in a Machine.
type entry struct {
	Entry
}

// New returns an empty Machine.
func New() *Machine {
	return &Machine{
		groups: make(map[uint64]map[string]*entry),
		stats:  make(map[uint64]*Stats),
	}
}

// SMID returns [SMID].
func (m *Machine) SMID() uint32 { return SMID }

// Execute applies the encoded op in value to the state of group, as chosen
// at the given Paxos instance, and returns its Result.
//
// A value that does not decode is a deterministic no-op: the state is left
// unchanged and the result is Result{Err: ErrBadOp}, while the error return
// stays nil, so that every replica skips it identically instead of
// stalling. The error return is always nil.
func (m *Machine) Execute(group, instance uint64, value []byte, _ any) (any, error) {
	res := Result{Err: ErrBadOp}
	op, err := Decode(value)

	m.mu.Lock()
	if err == nil {
		res = m.applyLocked(group, op)
	}
	st := m.stats[group]
	if st == nil {
		st = &Stats{}
		m.stats[group] = st
	}
	st.Executed++
	st.LastInstance = instance
	m.mu.Unlock()
	return res, nil
}

// Apply applies op to the state of group and returns its result, exactly as
// [Machine.Execute] would for op's encoding, but without updating [Stats].
// An op with an invalid kind leaves the state unchanged and returns a Result
// whose Err is [ErrBadOp].
func (m *Machine) Apply(group uint64, op Op) Result {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.applyLocked(group, op)
}

func (m *Machine) applyLocked(group uint64, op Op) Result {
	kv := m.groups[group]
	var cur Entry
	if e := kv[op.Key]; e != nil {
		cur = e.Entry
	}
	next, res := Step(cur, op)
	if next == cur {
		// Reads, failed CAS and bad ops do not change state; avoid
		// creating entries for keys that were never written.
		return res
	}
	if kv == nil {
		kv = make(map[string]*entry)
		m.groups[group] = kv
	}
	if e := kv[op.Key]; e != nil {
		e.Entry = next
	} else {
		kv[op.Key] = &entry{Entry: next}
	}
	return res
}

// Stats returns the execution statistics of group (zero if the group has
// never executed anything).
func (m *Machine) Stats(group uint64) Stats {
	m.mu.Lock()
	defer m.mu.Unlock()
	if st := m.stats[group]; st != nil {
		return *st
	}
	return Stats{}
}

// Snapshot returns a copy of the state of group: every key that was ever
// written, including deleted keys (Exists=false), whose versions are part of
// the state. The returned map is never nil and is owned by the caller.
func (m *Machine) Snapshot(group uint64) map[string]Entry {
	m.mu.Lock()
	defer m.mu.Unlock()
	kv := m.groups[group]
	out := make(map[string]Entry, len(kv))
	for k, e := range kv {
		out[k] = e.Entry
	}
	return out
}

// Digest returns a 64-bit FNV-1a hash of the state of group (the same
// content as [Machine.Snapshot]), computed over keys in sorted order so it
// does not depend on map iteration order. Replicas with equal state have
// equal digests; an empty group hashes to a fixed value.
func (m *Machine) Digest(group uint64) uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	kv := m.groups[group]
	keys := make([]string, 0, len(kv))
	for k := range kv {
		keys = append(keys, k)
	}
	slices.Sort(keys)

	h := fnv.New64a()
	var buf []byte
	for _, k := range keys {
		e := kv[k]
		buf = buf[:0]
		buf = binary.AppendUvarint(buf, uint64(len(k)))
		buf = append(buf, k...)
		if e.Exists {
			buf = append(buf, 1)
		} else {
			buf = append(buf, 0)
		}
		buf = binary.AppendUvarint(buf, uint64(len(e.Value)))
		buf = append(buf, e.Value...)
		buf = binary.AppendUvarint(buf, e.Version)
		h.Write(buf) // hash.Hash.Write never returns an error
	}
	return h.Sum64()
}

// Lookup returns the local state of one key, for reads that accept
// staleness (they bypass Paxos).
func (m *Machine) Lookup(group uint64, key string) Entry {
	m.mu.Lock()
	defer m.mu.Unlock()
	if e := m.groups[group][key]; e != nil {
		return e.Entry
	}
	return Entry{}
}

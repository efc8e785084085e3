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
	// undecodable ones (which are deterministic no-ops). It counts only
	// values this Machine executed: [Machine.RestoreCheckpoint] leaves it
	// unchanged, although the restored state covers instances this Machine
	// never executed.
	Executed uint64
	// LastInstance is the instance of the most recent Execute call for the
	// group, or the instance of the most recent successful
	// [Machine.RestoreCheckpoint], whichever came last; meaningful only when
	// Executed > 0 or a checkpoint was restored.
	LastInstance uint64
}

// Machine is a key-value state machine holding independent state for each
// Paxos group. The zero value is not usable; create one with [New].
// A Machine is safe for concurrent use.
//
// A Machine is a checkpointer (see [Machine.PrepareCheckpoint]): each
// group's state is kept copy-on-write, so a consistent view of it can be
// taken in O(1) and streamed while Execute goes on.
type Machine struct {
	mu     sync.Mutex
	groups map[uint64]*group
}

// group is the state of one Paxos group.
//
// The state is base with overlay on top: a key's entry is its overlay
// entry if it has one, else its base entry. While a checkpoint view holds
// base (view != nil), base is frozen, shared with the view and never
// written: writes go to overlay. Once the view is released, writes go to
// base again (removing the key from overlay), and each apply also folds a
// few overlay entries into base (drainPerApply) until overlay is empty;
// [Machine.PrepareCheckpoint] folds whatever is left. Entries are values,
// never mutated in place, so a frozen map stays exactly as the view saw it.
type group struct {
	base    map[string]Entry // never nil
	overlay map[string]Entry // changes made while base was frozen; nil when empty
	// drain holds every key of overlay (and possibly keys since removed
	// from it), in the order they entered it; folding pops from its end.
	drain  []string
	view   *checkpointView // the view that holds base, until it is released
	digest uint64          // StateDigest: sum of entryHash over all keys
	stats  Stats
}

// drainPerApply is how many overlay keys each apply folds into base once
// no view holds base: overlay empties within len(overlay)/drainPerApply
// applies, so folding costs O(1) per apply instead of a pause.
const drainPerApply = 4

// New returns an empty Machine.
func New() *Machine {
	return &Machine{groups: make(map[uint64]*group)}
}

// groupLocked returns the state of group id, creating it if needed.
func (m *Machine) groupLocked(id uint64) *group {
	g := m.groups[id]
	if g == nil {
		g = &group{base: make(map[string]Entry)}
		m.groups[id] = g
	}
	return g
}

// get returns the entry of key k and whether k was ever written.
func (g *group) get(k string) (Entry, bool) {
	if e, ok := g.overlay[k]; ok {
		return e, true
	}
	e, ok := g.base[k]
	return e, ok
}

// set replaces the entry of key k, which was old (had reports whether k
// existed), with e, keeping digest up to date.
func (g *group) set(k string, old Entry, had bool, e Entry) {
	if had {
		g.digest -= entryHash(k, old)
	}
	g.digest += entryHash(k, e)
	if g.view != nil {
		if _, ok := g.overlay[k]; !ok {
			if g.overlay == nil {
				g.overlay = make(map[string]Entry)
			}
			g.drain = append(g.drain, k)
		}
		g.overlay[k] = e
		return
	}
	if g.overlay != nil {
		delete(g.overlay, k)
	}
	g.base[k] = e
}

// foldSome moves up to n overlay entries into base; base must not be held
// by a view. With n < 0 it folds them all.
func (g *group) foldSome(n int) {
	for ; n != 0 && len(g.drain) > 0; n-- {
		last := len(g.drain) - 1
		k := g.drain[last]
		g.drain[last] = ""
		g.drain = g.drain[:last]
		if e, ok := g.overlay[k]; ok {
			g.base[k] = e
			delete(g.overlay, k)
		}
	}
	if len(g.drain) == 0 {
		g.overlay, g.drain = nil, nil
	}
}

// each calls f for every key of the group's state, in no particular order.
func (g *group) each(f func(string, Entry)) {
	for k, e := range g.base {
		if _, ok := g.overlay[k]; !ok {
			f(k, e)
		}
	}
	for k, e := range g.overlay {
		f(k, e)
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
	g := m.groupLocked(group)
	if err == nil {
		res = m.applyLocked(group, op)
	}
	g.stats.Executed++
	g.stats.LastInstance = instance
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

func (m *Machine) applyLocked(id uint64, op Op) Result {
	g := m.groups[id]
	var cur Entry
	var had bool
	if g != nil {
		if g.view == nil && g.overlay != nil {
			g.foldSome(drainPerApply)
		}
		cur, had = g.get(op.Key)
	}
	next, res := Step(cur, op)
	if next == cur {
		// Reads, failed CAS and bad ops do not change state; avoid
		// creating entries for keys that were never written.
		return res
	}
	if g == nil {
		g = m.groupLocked(id)
	}
	g.set(op.Key, cur, had, next)
	return res
}

// Stats returns the execution statistics of group (zero if the group has
// never executed anything).
func (m *Machine) Stats(group uint64) Stats {
	m.mu.Lock()
	defer m.mu.Unlock()
	if g := m.groups[group]; g != nil {
		return g.stats
	}
	return Stats{}
}

// Snapshot returns a copy of the state of group: every key that was ever
// written, including deleted keys (Exists=false), whose versions are part of
// the state. The returned map is never nil and is owned by the caller.
func (m *Machine) Snapshot(group uint64) map[string]Entry {
	m.mu.Lock()
	defer m.mu.Unlock()
	g := m.groups[group]
	if g == nil {
		return make(map[string]Entry)
	}
	out := make(map[string]Entry, len(g.base)+len(g.overlay))
	g.each(func(k string, e Entry) { out[k] = e })
	return out
}

// Digest returns a 64-bit FNV-1a hash of the state of group (the same
// content as [Machine.Snapshot]), computed over keys in sorted order so it
// does not depend on map iteration order. Replicas with equal state have
// equal digests; an empty group hashes to a fixed value. It takes
// O(n log n) for n keys; [Machine.StateDigest] is O(1).
func (m *Machine) Digest(group uint64) uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	g := m.groups[group]
	h := fnv.New64a()
	if g == nil {
		return h.Sum64()
	}
	keys := make([]string, 0, len(g.base)+len(g.overlay))
	g.each(func(k string, _ Entry) { keys = append(keys, k) })
	slices.Sort(keys)

	var buf []byte
	for _, k := range keys {
		e, _ := g.get(k)
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

// StateDigest returns a 64-bit digest of the state of group (the same
// content as [Machine.Snapshot]) in O(1): the sum, modulo 2^64, over every
// key of a 64-bit hash of the key and its entry (value, exists flag and
// version), kept up to date on each write. It depends only on the state,
// not on how it was reached (order of writes, checkpoints, restores), so
// replicas with equal state have equal StateDigests. An empty group's
// StateDigest is 0. It is not the same number as [Machine.Digest].
func (m *Machine) StateDigest(group uint64) uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	if g := m.groups[group]; g != nil {
		return g.digest
	}
	return 0
}

// Lookup returns the local state of one key, for reads that accept
// staleness (they bypass Paxos).
func (m *Machine) Lookup(group uint64, key string) Entry {
	m.mu.Lock()
	defer m.mu.Unlock()
	if g := m.groups[group]; g != nil {
		e, _ := g.get(key)
		return e
	}
	return Entry{}
}

// entryHash is the hash of one key's state that [Machine.StateDigest] sums:
// FNV-1a over the same length-prefixed encoding [Machine.Digest] uses,
// followed by a 64-bit finalizer so that the sum mixes well.
func entryHash(k string, e Entry) uint64 {
	h := fnvString(fnvOffset, k)
	exists := uint64(0)
	if e.Exists {
		exists = 1
	}
	h = (h ^ exists) * fnvPrime
	h = fnvString(h, e.Value)
	h = fnvUvarint(h, e.Version)
	// fmix64 from MurmurHash3.
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	h *= 0xc4ceb53fe1a85e39
	h ^= h >> 33
	return h
}

const (
	fnvOffset = 14695981039346656037
	fnvPrime  = 1099511628211
)

// fnvUvarint adds the uvarint encoding of v to the FNV-1a hash h.
func fnvUvarint(h, v uint64) uint64 {
	for v >= 0x80 {
		h = (h ^ (v&0x7f | 0x80)) * fnvPrime
		v >>= 7
	}
	return (h ^ v) * fnvPrime
}

// fnvString adds the uvarint length of s and s to the FNV-1a hash h.
func fnvString(h uint64, s string) uint64 {
	h = fnvUvarint(h, uint64(len(s)))
	for i := 0; i < len(s); i++ {
		h = (h ^ uint64(s[i])) * fnvPrime
	}
	return h
}

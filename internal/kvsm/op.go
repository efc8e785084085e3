// Package kvsm is a deterministic, replicated key-value state machine.
//
// Operations ([Op]) are encoded into Paxos values with [Op.Encode] and applied
// on every replica by [Machine.Execute], in instance order. Because the
// transition function ([Step]) is a pure function of the previous state and
// the operation, all replicas that execute the same sequence of values reach
// the same state, which [Machine.Snapshot] and [Machine.Digest] expose for
// comparison.
//
// Every key carries a version that counts all writes to the key (Put, Delete,
// and successful CAS). Versions start at 0, never decrease and survive
// deletion, so a CAS with an expected version can never be confused by a
// delete-and-recreate of the same key.
//
// A [Machine] is also a checkpointer: [Machine.PrepareCheckpoint] takes an
// O(1) copy-on-write view of a group's state, [Machine.SaveCheckpoint]
// streams it while execution goes on, and [Machine.RestoreCheckpoint]
// installs a saved one. [Machine.StateDigest] is a digest of a group's
// state kept up to date in O(1) per write.
package kvsm

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// ErrBadOp reports an operation that cannot be decoded or has an invalid
// [Kind]. Errors returned by [Decode] wrap it; test with errors.Is.
var ErrBadOp = errors.New("kvsm: malformed op")

// Kind identifies the type of an operation. The zero value is invalid.
type Kind uint8

// Operation kinds.
const (
	// Put sets the key's value, creating the key if needed.
	Put Kind = iota + 1
	// Get reads the key's value and version; it does not change state.
	Get
	// Delete removes the key's value; the key's version is still advanced.
	Delete
	// CAS sets the key's value if the key's current version equals
	// Op.Version (version 0 means "never written").
	CAS
)

// Valid reports whether k is one of the defined kinds.
func (k Kind) Valid() bool { return k >= Put && k <= CAS }

// String returns the lower-case name of k, or "kind(N)" for invalid kinds.
func (k Kind) String() string {
	switch k {
	case Put:
		return "put"
	case Get:
		return "get"
	case Delete:
		return "delete"
	case CAS:
		return "cas"
	default:
		return fmt.Sprintf("kind(%d)", uint8(k))
	}
}

// Op is a single key-value operation.
type Op struct {
	Kind  Kind
	Key   string
	Value string // new value for Put and CAS; ignored otherwise
	// Version is the expected current version for CAS; ignored otherwise.
	Version uint64
}

// String returns a short human-readable form of o, e.g. `put(k,"v")`.
func (o Op) String() string {
	switch o.Kind {
	case Put:
		return fmt.Sprintf("put(%s,%q)", o.Key, o.Value)
	case Get:
		return fmt.Sprintf("get(%s)", o.Key)
	case Delete:
		return fmt.Sprintf("delete(%s)", o.Key)
	case CAS:
		return fmt.Sprintf("cas(%s,@%d,%q)", o.Key, o.Version, o.Value)
	default:
		return fmt.Sprintf("%v(%s)", o.Kind, o.Key)
	}
}

// Encode returns the binary encoding of o:
//
//	kind (1 byte) | uvarint len(key) | key | uvarint len(value) | value | uvarint version
//
// All fields are encoded regardless of kind, so Decode(o.Encode()) == o for
// every o with a valid Kind. Encode does not validate o; encoding an op with
// an invalid Kind yields bytes that [Decode] rejects.
func (o Op) Encode() []byte {
	n := 1 + 3*binary.MaxVarintLen64 + len(o.Key) + len(o.Value)
	b := make([]byte, 0, n)
	b = append(b, byte(o.Kind))
	b = binary.AppendUvarint(b, uint64(len(o.Key)))
	b = append(b, o.Key...)
	b = binary.AppendUvarint(b, uint64(len(o.Value)))
	b = append(b, o.Value...)
	b = binary.AppendUvarint(b, o.Version)
	return b
}

// Decode parses an encoding produced by [Op.Encode]. The encoding is strict:
// the kind must be valid, varints must be minimally encoded and there must
// be no trailing bytes, so every accepted input is exactly Encode of the
// returned Op. On malformed input Decode returns an error wrapping
// [ErrBadOp]; it never panics and never allocates more than len(b) bytes
// for the key and value.
func Decode(b []byte) (Op, error) {
	if len(b) == 0 {
		return Op{}, fmt.Errorf("%w: empty input", ErrBadOp)
	}
	op := Op{Kind: Kind(b[0])}
	if !op.Kind.Valid() {
		return Op{}, fmt.Errorf("%w: invalid kind %d", ErrBadOp, b[0])
	}
	rest := b[1:]
	var err error
	if op.Key, rest, err = decodeString(rest, "key"); err != nil {
		return Op{}, err
	}
	if op.Value, rest, err = decodeString(rest, "value"); err != nil {
		return Op{}, err
	}
	if op.Version, rest, err = decodeUvarint(rest, "version"); err != nil {
		return Op{}, err
	}
	if len(rest) != 0 {
		return Op{}, fmt.Errorf("%w: %d trailing bytes", ErrBadOp, len(rest))
	}
	return op, nil
}

// decodeUvarint reads one minimally encoded uvarint from b.
func decodeUvarint(b []byte, field string) (uint64, []byte, error) {
	v, n := binary.Uvarint(b)
	switch {
	case n == 0:
		return 0, nil, fmt.Errorf("%w: truncated %s", ErrBadOp, field)
	case n < 0:
		return 0, nil, fmt.Errorf("%w: %s overflows uint64", ErrBadOp, field)
	case n != uvarintLen(v):
		return 0, nil, fmt.Errorf("%w: non-minimal varint for %s", ErrBadOp, field)
	}
	return v, b[n:], nil
}

// decodeString reads a uvarint length followed by that many bytes.
func decodeString(b []byte, field string) (string, []byte, error) {
	n, rest, err := decodeUvarint(b, field+" length")
	if err != nil {
		return "", nil, err
	}
	if n > uint64(len(rest)) {
		return "", nil, fmt.Errorf("%w: %s length %d exceeds remaining %d bytes",
			ErrBadOp, field, n, len(rest))
	}
	return string(rest[:n]), rest[n:], nil
}

// uvarintLen returns the number of bytes in the minimal encoding of v.
func uvarintLen(v uint64) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}

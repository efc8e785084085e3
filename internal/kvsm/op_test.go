package kvsm

import (
	"bytes"
	"errors"
	"testing"
)

func TestEncodeDecodeRoundTrip(t *testing.T) {
	ops := []Op{
		{Kind: Put, Key: "k", Value: "v"},
		{Kind: Get, Key: "k"},
		{Kind: Delete, Key: ""},
		{Kind: CAS, Key: "key", Value: string(make([]byte, 300)), Version: 1<<64 - 1},
		{Kind: Put, Key: "\x00\xff", Value: "", Version: 7},
	}
	for _, op := range ops {
		b := op.Encode()
		got, err := Decode(b)
		if err != nil {
			t.Fatalf("Decode(Encode(%v)): %v", op, err)
		}
		if got != op {
			t.Fatalf("round trip: got %+v, want %+v", got, op)
		}
	}
}

func TestEncodeLayout(t *testing.T) {
	got := Op{Kind: CAS, Key: "ab", Value: "c", Version: 300}.Encode()
	want := []byte{byte(CAS), 2, 'a', 'b', 1, 'c', 0xac, 0x02}
	if !bytes.Equal(got, want) {
		t.Fatalf("Encode = %x, want %x", got, want)
	}
}

func TestDecodeRejectsMalformed(t *testing.T) {
	valid := Op{Kind: Put, Key: "k", Value: "v", Version: 1}.Encode()
	cases := map[string][]byte{
		"nil":             nil,
		"kind zero":       {0, 0, 0, 0},
		"kind too large":  {byte(CAS) + 1, 0, 0, 0},
		"kind only":       {byte(Get)},
		"key too long":    {byte(Get), 5, 'a'},
		"value truncated": {byte(Put), 1, 'k', 3, 'v'},
		"no version":      {byte(Put), 1, 'k', 1, 'v'},
		"trailing":        append(append([]byte{}, valid...), 0),
		"non-minimal":     {byte(Get), 0x80, 0x00, 0, 0},
		"huge length":     {byte(Get), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01},
		"overflow":        {byte(Get), 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01},
	}
	for name, b := range cases {
		t.Run(name, func(t *testing.T) {
			op, err := Decode(b)
			if !errors.Is(err, ErrBadOp) {
				t.Fatalf("Decode(%x) = %+v, %v; want ErrBadOp", b, op, err)
			}
			if op != (Op{}) {
				t.Fatalf("Decode returned non-zero op %+v on error", op)
			}
		})
	}
	// Every strict prefix of a valid encoding is malformed.
	for i := range valid {
		if _, err := Decode(valid[:i]); !errors.Is(err, ErrBadOp) {
			t.Fatalf("Decode(prefix %d) err = %v, want ErrBadOp", i, err)
		}
	}
}

func FuzzDecode(f *testing.F) {
	f.Add([]byte{})
	f.Add(Op{Kind: Put, Key: "k", Value: "v"}.Encode())
	f.Add(Op{Kind: Get, Key: "key"}.Encode())
	f.Add(Op{Kind: Delete, Key: "x", Version: 3}.Encode())
	f.Add(Op{Kind: CAS, Key: "k", Value: "new", Version: 1 << 40}.Encode())
	f.Add([]byte{byte(Get), 0x80, 0x00, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		op, err := Decode(b)
		if err != nil {
			if !errors.Is(err, ErrBadOp) {
				t.Fatalf("Decode error %v does not wrap ErrBadOp", err)
			}
			// Interpret the input as fields of an op and check the
			// round trip for it instead.
			if len(b) == 0 {
				return
			}
			mid := 1 + (len(b)-1)/2
			op = Op{Kind: Kind(b[0]%4 + 1), Key: string(b[1:mid]), Value: string(b[mid:]), Version: uint64(len(b)) << 57}
			got, err := Decode(op.Encode())
			if err != nil || got != op {
				t.Fatalf("Decode(Encode(%+v)) = %+v, %v", op, got, err)
			}
			return
		}
		// The encoding is canonical: accepted inputs re-encode identically.
		if enc := op.Encode(); !bytes.Equal(enc, b) {
			t.Fatalf("Encode(Decode(%x)) = %x", b, enc)
		}
	})
}

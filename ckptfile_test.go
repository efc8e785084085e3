package paxos

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"testing"
)

// memSM is a Checkpointer whose state is a byte string.
type memSM struct {
	id    uint32
	state []byte
}

func (m *memSM) SMID() uint32 { return m.id }
func (m *memSM) Execute(group, instance uint64, value []byte, ctx any) (any, error) {
	m.state = append(m.state, value...)
	return nil, nil
}
func (m *memSM) PrepareCheckpoint(group, instance uint64) (any, error) {
	return bytes.Clone(m.state), nil
}
func (m *memSM) SaveCheckpoint(group uint64, view any, w io.Writer) error {
	_, err := w.Write(view.([]byte))
	return err
}
func (m *memSM) RestoreCheckpoint(group, instance uint64, r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	m.state = b
	return nil
}

func checkpointOf(t *testing.T, sms []Checkpointer) []byte {
	t.Helper()
	var views []any
	for _, sm := range sms {
		v, err := sm.PrepareCheckpoint(3, 77)
		if err != nil {
			t.Fatal(err)
		}
		views = append(views, v)
	}
	var buf bytes.Buffer
	if err := writeCheckpoint(&buf, 3, 77, testMeta, sms, views); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func restoreInto(data []byte, group, instance uint64, sms []Checkpointer) error {
	meta, err := readCheckpoint(bytes.NewReader(data), group, instance, sms, func(sm Checkpointer, r io.Reader) error {
		return sm.RestoreCheckpoint(group, instance, r)
	})
	if err == nil && fmt.Sprint(meta) != fmt.Sprint(testMeta) {
		return fmt.Errorf("checkpoint meta %v, want %v", meta, testMeta)
	}
	return err
}

var testMeta = ckptMeta{marks: []propMark{{1, 2, 3}, {2, 1, 9}}, version: 41}

// TestCheckpointFile round-trips a checkpoint of two machines, one larger
// than a frame, and checks the streaming check agrees with the reader.
func TestCheckpointFile(t *testing.T) {
	big := bytes.Repeat([]byte("0123456789"), ckptFrameSize/5) // two frames and a bit
	src := []Checkpointer{&memSM{id: 1, state: big}, &memSM{id: 2, state: []byte("small")}}
	data := checkpointOf(t, src)

	dst := []Checkpointer{&memSM{id: 1, state: []byte("old")}, &memSM{id: 2}}
	if err := restoreInto(data, 3, 77, dst); err != nil {
		t.Fatalf("restore: %v", err)
	}
	for i := range src {
		if got, want := dst[i].(*memSM).state, src[i].(*memSM).state; !bytes.Equal(got, want) {
			t.Errorf("machine %d restored %d bytes, want %d", i+1, len(got), len(want))
		}
	}
	var k ckptCheck
	for off := 0; off < len(data); off += 1000 {
		k.feed(data[off:min(off+1000, len(data))])
	}
	if !k.ok(3, 77) {
		t.Errorf("the streaming check rejects a whole checkpoint")
	}
	if k.ok(3, 78) || k.ok(2, 77) {
		t.Errorf("the streaming check accepts a checkpoint of another group or instance")
	}
}

// TestCheckpointFileDamage: every truncation and a flipped bit anywhere
// fail the read with ErrBadCheckpoint and the streaming check, never a
// panic; a checkpoint of another group, instance or machine set is refused.
func TestCheckpointFileDamage(t *testing.T) {
	src := []Checkpointer{&memSM{id: 1, state: []byte("alpha")}, &memSM{id: 2, state: []byte("beta")}}
	data := checkpointOf(t, src)
	fresh := func() []Checkpointer { return []Checkpointer{&memSM{id: 1}, &memSM{id: 2}} }
	for n := 0; n < len(data); n++ {
		if err := restoreInto(data[:n], 3, 77, fresh()); !errors.Is(err, ErrBadCheckpoint) {
			t.Fatalf("truncated to %d of %d bytes: %v, want ErrBadCheckpoint", n, len(data), err)
		}
		var k ckptCheck
		k.feed(data[:n])
		if k.ok(3, 77) {
			t.Fatalf("the streaming check accepts %d of %d bytes", n, len(data))
		}
	}
	for i := range data {
		for bit := range 8 {
			bad := bytes.Clone(data)
			bad[i] ^= 1 << bit
			var k ckptCheck
			k.feed(bad)
			if k.ok(3, 77) {
				t.Fatalf("the streaming check accepts a flipped bit %d of byte %d", bit, i)
			}
			if err := restoreInto(bad, 3, 77, fresh()); err == nil {
				t.Fatalf("restore accepts a flipped bit %d of byte %d", bit, i)
			}
		}
	}
	for _, tc := range []struct {
		group, instance uint64
		sms             []Checkpointer
	}{
		{4, 77, fresh()},
		{3, 78, fresh()},
		{3, 77, []Checkpointer{&memSM{id: 1}}},
		{3, 77, []Checkpointer{&memSM{id: 2}, &memSM{id: 1}}},
	} {
		if err := restoreInto(data, tc.group, tc.instance, tc.sms); !errors.Is(err, ErrBadCheckpoint) {
			t.Errorf("group %d instance %d machines %d: %v, want ErrBadCheckpoint", tc.group, tc.instance, len(tc.sms), err)
		}
	}
}

// A machine's restore error is reported with its SMID.
func TestCheckpointRestoreError(t *testing.T) {
	data := checkpointOf(t, []Checkpointer{&memSM{id: 9, state: []byte("x")}})
	_, err := readCheckpoint(bytes.NewReader(data), 3, 77, []Checkpointer{&memSM{id: 9}}, func(Checkpointer, io.Reader) error {
		return fmt.Errorf("disk full")
	})
	if err == nil || !bytes.Contains([]byte(err.Error()), []byte("state machine 9: disk full")) {
		t.Fatalf("got %v", err)
	}
}

// strictSM fails its restore when it gets fewer bytes than it expects, as
// a machine that parses its checkpoint would.
type strictSM struct {
	memSM
	want int
}

func (m *strictSM) RestoreCheckpoint(group, instance uint64, r io.Reader) error {
	if err := m.memSM.RestoreCheckpoint(group, instance, r); err != nil {
		return err
	}
	if len(m.state) < m.want {
		return fmt.Errorf("truncated: %d bytes of %d", len(m.state), m.want)
	}
	return nil
}

// TestCheckpointKindFlip: a frame's checksum does not cover its kind, so a
// data frame flipped to an end frame ('D' to 'E', one bit) reaches the
// machine as a short stream; the restore must still fail with
// ErrBadCheckpoint, not only with the machine's error (sim seed 638/5).
func TestCheckpointKindFlip(t *testing.T) {
	big := bytes.Repeat([]byte("0123456789"), ckptFrameSize/5)
	data := checkpointOf(t, []Checkpointer{&memSM{id: 1, state: big}, &memSM{id: 2, state: []byte("small")}})
	off := len(ckptMagic) + (ckptHeader + 28) + (ckptHeader + 60) + ckptHeader // magic, header, marks and (empty) configurations frames
	if data[off] != 'D' {
		t.Fatalf("byte %d is %q, want the first data frame", off, data[off])
	}
	data[off] = 'E'
	err := restoreInto(data, 3, 77, []Checkpointer{&strictSM{memSM{id: 1}, len(big)}, &memSM{id: 2}})
	if !errors.Is(err, ErrBadCheckpoint) {
		t.Fatalf("restore of a checkpoint with a data frame turned end frame: %v, want ErrBadCheckpoint", err)
	}
}

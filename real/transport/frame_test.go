package transport

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"testing"
)

func TestFrameRoundTrip(t *testing.T) {
	var hdr [headerSize]byte
	for _, n := range []int{0, 1, 100, allocChunk - 1, allocChunk, allocChunk + 1, 3*allocChunk + 7} {
		payload := make([]byte, n)
		for i := range payload {
			payload[i] = byte(i*7 + n)
		}
		enc := appendFrame(nil, 0xC1, 42, payload)
		if len(enc) != headerSize+n {
			t.Fatalf("n=%d: encoded %d bytes", n, len(enc))
		}
		if got := binary.LittleEndian.Uint32(enc); got != uint32(n) {
			t.Fatalf("n=%d: length field %d", n, got)
		}
		r := bytes.NewReader(enc)
		f, err := readFrame(r, hdr[:], 4*allocChunk)
		if err != nil {
			t.Fatalf("n=%d: %v", n, err)
		}
		if f.cluster != 0xC1 || f.sender != 42 || !bytes.Equal(f.payload, payload) {
			t.Fatalf("n=%d: decoded cluster=%d sender=%d len=%d", n, f.cluster, f.sender, len(f.payload))
		}
		if _, err := readFrame(r, hdr[:], 4*allocChunk); err != io.EOF {
			t.Fatalf("n=%d: after last frame: %v, want io.EOF", n, err)
		}
		// Every truncation is an unexpected EOF, never a frame or a bad frame.
		for _, cut := range []int{1, headerSize - 1, headerSize, headerSize + n/2} {
			if cut >= len(enc) {
				continue
			}
			_, err := readFrame(bytes.NewReader(enc[:cut]), hdr[:], 4*allocChunk)
			if err != io.ErrUnexpectedEOF {
				t.Fatalf("n=%d cut=%d: %v, want io.ErrUnexpectedEOF", n, cut, err)
			}
		}
	}
}

func TestFrameRejects(t *testing.T) {
	var hdr [headerSize]byte
	good := appendFrame(nil, 1, 2, []byte("hello, world"))
	cases := map[string][]byte{}

	for i := 4; i < len(good); i++ { // every byte covered by the CRC, and the CRC
		b := bytes.Clone(good)
		b[i] ^= 0x20
		cases[fmt.Sprintf("flip byte %d", i)] = b
	}
	over := bytes.Clone(good)
	binary.LittleEndian.PutUint32(over, 1000)
	cases["oversize"] = over
	cases["zero sender"] = appendFrame(nil, 1, 0, []byte("x"))
	cases["garbage"] = []byte("this is not a frame, just some garbage bytes")

	for name, in := range cases {
		_, err := readFrame(bytes.NewReader(in), hdr[:], 100)
		if !errors.Is(err, ErrBadFrame) {
			t.Errorf("%s: err = %v, want ErrBadFrame", name, err)
		}
	}
}

func FuzzReadFrame(f *testing.F) {
	f.Add(appendFrame(nil, 1, 2, []byte("payload")))
	f.Add(appendFrame(appendFrame(nil, 1, 2, nil), 3, 4, []byte{0, 1, 2}))
	f.Add(appendFrame(nil, 1, 0, []byte("zero sender")))
	f.Add([]byte("garbage garbage garbage garbage"))
	f.Add([]byte{})
	f.Add(make([]byte, headerSize))
	const maxFrame = 1 << 16
	f.Fuzz(func(t *testing.T, data []byte) {
		var hdr [headerSize]byte
		r := bytes.NewReader(data)
		for {
			off := len(data) - r.Len()
			fr, err := readFrame(r, hdr[:], maxFrame)
			if err != nil {
				if !errors.Is(err, ErrBadFrame) && err != io.EOF && err != io.ErrUnexpectedEOF {
					t.Fatalf("unexpected error kind: %v", err)
				}
				return
			}
			if fr.sender == 0 || len(fr.payload) > maxFrame {
				t.Fatalf("accepted invalid frame: sender=%d len=%d", fr.sender, len(fr.payload))
			}
			// A decoded frame re-encodes to exactly the bytes it came from.
			enc := appendFrame(nil, fr.cluster, fr.sender, fr.payload)
			if !bytes.Equal(enc, data[off:off+len(enc)]) {
				t.Fatalf("re-encoding differs at offset %d", off)
			}
		}
	})
}

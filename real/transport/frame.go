package transport

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
)

// headerSize is the size of a frame header in bytes:
// length u32 | crc u32 | cluster id u64 | sender id u64, little endian.
const headerSize = 24

// allocChunk bounds the first allocation for a payload. Larger payloads grow
// by doubling as their bytes arrive, so a header that claims a huge length
// and then stalls cannot make the reader allocate much more than it was sent.
const allocChunk = 1 << 20

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// frame is one decoded frame.
type frame struct {
	cluster uint64
	sender  uint64
	payload []byte
}

// putHeader fills hdr for a frame carrying payload.
func putHeader(hdr *[headerSize]byte, cluster, sender uint64, payload []byte) {
	binary.LittleEndian.PutUint32(hdr[0:4], uint32(len(payload)))
	binary.LittleEndian.PutUint64(hdr[8:16], cluster)
	binary.LittleEndian.PutUint64(hdr[16:24], sender)
	crc := crc32.Update(0, castagnoli, hdr[8:])
	crc = crc32.Update(crc, castagnoli, payload)
	binary.LittleEndian.PutUint32(hdr[4:8], crc)
}

// appendFrame appends the encoding of one frame to dst.
func appendFrame(dst []byte, cluster, sender uint64, payload []byte) []byte {
	var hdr [headerSize]byte
	putHeader(&hdr, cluster, sender, payload)
	dst = append(dst, hdr[:]...)
	return append(dst, payload...)
}

// readFrame reads one frame from r. hdr is scratch space of at least
// headerSize bytes. It returns io.EOF if r ends cleanly before a frame,
// io.ErrUnexpectedEOF (or r's error) if it ends inside one, and an error
// wrapping ErrBadFrame if the frame is malformed: length over maxFrame, zero
// sender or CRC mismatch. The payload is freshly allocated. The cluster id is
// returned, not checked.
func readFrame(r io.Reader, hdr []byte, maxFrame int) (frame, error) {
	hdr = hdr[:headerSize]
	if _, err := io.ReadFull(r, hdr); err != nil {
		return frame{}, err
	}
	n := binary.LittleEndian.Uint32(hdr[0:4])
	if maxFrame < 0 || uint64(n) > uint64(maxFrame) {
		return frame{}, fmt.Errorf("%w: payload length %d exceeds max %d", ErrBadFrame, n, maxFrame)
	}
	f := frame{
		cluster: binary.LittleEndian.Uint64(hdr[8:16]),
		sender:  binary.LittleEndian.Uint64(hdr[16:24]),
	}
	if f.sender == 0 {
		return frame{}, fmt.Errorf("%w: zero sender id", ErrBadFrame)
	}
	want := binary.LittleEndian.Uint32(hdr[4:8])
	crc := crc32.Update(0, castagnoli, hdr[8:])
	payload, err := readPayload(r, int(n))
	if err != nil {
		return frame{}, err
	}
	if crc = crc32.Update(crc, castagnoli, payload); crc != want {
		return frame{}, fmt.Errorf("%w: crc mismatch (got %#08x, header says %#08x)", ErrBadFrame, crc, want)
	}
	f.payload = payload
	return f, nil
}

// readPayload reads exactly n bytes into a fresh slice.
func readPayload(r io.Reader, n int) ([]byte, error) {
	if n <= allocChunk {
		p := make([]byte, n)
		if _, err := io.ReadFull(r, p); err != nil {
			return nil, noEOF(err)
		}
		return p, nil
	}
	p := make([]byte, allocChunk)
	off := 0
	for {
		if _, err := io.ReadFull(r, p[off:]); err != nil {
			return nil, noEOF(err)
		}
		off = len(p)
		if off == n {
			return p, nil
		}
		np := make([]byte, min(n, 2*off))
		copy(np, p)
		p = np
	}
}

// noEOF turns io.EOF inside a frame into io.ErrUnexpectedEOF.
func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

package transport

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

const testCluster = 0xC0FFEE

type rmsg struct {
	from uint64
	data []byte
}

// inbox collects received messages.
type inbox struct {
	mu   sync.Mutex
	msgs []rmsg
}

func (b *inbox) recv(from uint64, msg []byte) {
	b.mu.Lock()
	b.msgs = append(b.msgs, rmsg{from, msg})
	b.mu.Unlock()
}

func (b *inbox) snapshot() []rmsg {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]rmsg(nil), b.msgs...)
}

func (b *inbox) len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.msgs)
}

// has reports whether some received message equals data.
func (b *inbox) has(data []byte) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, m := range b.msgs {
		if bytes.Equal(m.data, data) {
			return true
		}
	}
	return false
}

func eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// debugLogger logs to stderr; set TRANSPORT_DEBUG=1 to use it.
func debugLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// newNode makes and starts a transport; it is closed when the test ends.
func newNode(t testing.TB, cfg Config) (*Transport, *inbox) {
	t.Helper()
	if cfg.ListenAddr == "" {
		cfg.ListenAddr = "127.0.0.1:0"
	}
	if cfg.ClusterID == 0 {
		cfg.ClusterID = testCluster
	}
	if cfg.Logger == nil && os.Getenv("TRANSPORT_DEBUG") != "" {
		cfg.Logger = debugLogger()
	}
	tr, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	box := &inbox{}
	tr.Start(box.recv)
	t.Cleanup(func() { tr.Close() })
	return tr, box
}

// known returns a Config.Peers that makes ids members, so that their frames
// are accepted. The address is a placeholder: the tests never send to them.
func known(ids ...uint64) map[uint64]string {
	m := make(map[uint64]string, len(ids))
	for _, id := range ids {
		m[id] = "127.0.0.1:1"
	}
	return m
}

// goroutineBaseline returns a function that fails the test unless the
// goroutine count drops back to the baseline.
func goroutineBaseline(t *testing.T) func() {
	base := runtime.NumGoroutine()
	return func() {
		t.Helper()
		deadline := time.Now().Add(3 * time.Second)
		for {
			n := runtime.NumGoroutine()
			if n <= base {
				return
			}
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				buf = buf[:runtime.Stack(buf, true)]
				t.Fatalf("goroutines: %d, baseline %d\n%s", n, base, buf)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
}

// rawConn dials addr and writes data as an outside client would.
func rawConn(t *testing.T, addr string, data []byte) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := c.Write(data); err != nil {
		t.Fatal(err)
	}
	return c
}

// closedByPeer reports whether the remote end closes c within a while.
func closedByPeer(c net.Conn) bool {
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var b [64]byte
	for {
		_, err := c.Read(b[:])
		if err == nil {
			continue
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return false
		}
		return true // EOF or connection reset
	}
}

func TestThreeNodesAllDirections(t *testing.T) {
	checkLeaks := goroutineBaseline(t)
	const n = 3
	const perPair = 200
	var trs [n + 1]*Transport
	var boxes [n + 1]*inbox
	for id := uint64(1); id <= n; id++ {
		trs[id], boxes[id] = newNode(t, Config{ID: id})
	}
	for id := uint64(1); id <= n; id++ {
		for other := uint64(1); other <= n; other++ {
			trs[id].SetPeer(other, trs[other].Addr().String()) // own id is ignored
		}
	}
	payload := func(from, to uint64, seq int) []byte {
		b := fmt.Appendf(nil, "%d->%d #%d ", from, to, seq)
		for i := range seq % 50 {
			b = append(b, byte(i*31+seq))
		}
		return b
	}
	for seq := range perPair {
		for from := uint64(1); from <= n; from++ {
			for to := uint64(1); to <= n; to++ {
				if from != to {
					trs[from].Send(to, payload(from, to, seq))
				}
			}
		}
	}
	for id := uint64(1); id <= n; id++ {
		eventually(t, 10*time.Second, fmt.Sprintf("node %d to receive", id), func() bool {
			return boxes[id].len() >= (n-1)*perPair
		})
	}
	for to := uint64(1); to <= n; to++ {
		msgs := boxes[to].snapshot()
		if len(msgs) != (n-1)*perPair {
			t.Fatalf("node %d got %d messages, want %d", to, len(msgs), (n-1)*perPair)
		}
		next := map[uint64]int{}
		for _, m := range msgs {
			want := payload(m.from, to, next[m.from])
			if !bytes.Equal(m.data, want) {
				t.Fatalf("node %d: from %d got %q, want %q", to, m.from, m.data, want)
			}
			next[m.from]++
		}
	}
	for id := uint64(1); id <= n; id++ {
		st := trs[id].Stats()
		if st.Sent != (n-1)*perPair || st.Received != (n-1)*perPair || st.QueueDrops != 0 || st.BadFrames != 0 {
			t.Errorf("node %d stats %+v", id, st)
		}
		if st.ConnsAccepted != n-1 {
			t.Errorf("node %d accepted %d conns, want %d (one per peer)", id, st.ConnsAccepted, n-1)
		}
	}
	for id := uint64(1); id <= n; id++ {
		if err := trs[id].Close(); err != nil {
			t.Fatal(err)
		}
	}
	checkLeaks()
}

func TestBurstFIFO(t *testing.T) {
	const count = 10000
	a, _ := newNode(t, Config{ID: 1, QueueSize: 2 * count})
	b, box := newNode(t, Config{ID: 2, Peers: known(1)})
	a.SetPeer(2, b.Addr().String())
	for i := range count {
		msg := make([]byte, 8+i%17)
		binary.LittleEndian.PutUint64(msg, uint64(i))
		for j := 8; j < len(msg); j++ {
			msg[j] = byte(i + j)
		}
		a.Send(2, msg)
	}
	eventually(t, 10*time.Second, "burst", func() bool { return box.len() >= count })
	msgs := box.snapshot()
	if len(msgs) != count {
		t.Fatalf("got %d messages, want %d", len(msgs), count)
	}
	for i, m := range msgs {
		if m.from != 1 || len(m.data) != 8+i%17 || binary.LittleEndian.Uint64(m.data) != uint64(i) {
			t.Fatalf("message %d: from %d len %d seq %d", i, m.from, len(m.data), binary.LittleEndian.Uint64(m.data))
		}
		for j := 8; j < len(m.data); j++ {
			if m.data[j] != byte(i+j) {
				t.Fatalf("message %d corrupted at byte %d", i, j)
			}
		}
	}
	if st := a.Stats(); st.Sent != count || st.QueueDrops != 0 || st.Dials != 1 {
		t.Errorf("sender stats %+v", st)
	}
}

func TestLargeMessage(t *testing.T) {
	a, _ := newNode(t, Config{ID: 1})
	b, box := newNode(t, Config{ID: 2, Peers: known(1)})
	a.SetPeer(2, b.Addr().String())
	big := make([]byte, 8<<20)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range big {
		big[i] = byte(rng.Uint32())
	}
	want := bytes.Clone(big)
	a.Send(2, []byte("before"))
	a.Send(2, big)
	a.Send(2, []byte("after"))
	eventually(t, 10*time.Second, "large message", func() bool { return box.len() >= 3 })
	msgs := box.snapshot()
	if string(msgs[0].data) != "before" || string(msgs[2].data) != "after" {
		t.Fatalf("neighbours of the large message: %q, %q", msgs[0].data, msgs[2].data)
	}
	if !bytes.Equal(msgs[1].data, want) {
		t.Fatalf("large message corrupted (len %d)", len(msgs[1].data))
	}
}

func TestOversizeAndUnknownPeerDropped(t *testing.T) {
	a, _ := newNode(t, Config{ID: 1, MaxFrame: 1000})
	b, box := newNode(t, Config{ID: 2, MaxFrame: 1000, Peers: known(1)})
	a.SetPeer(2, b.Addr().String())
	a.Send(2, make([]byte, 1001)) // too large: dropped at the sender
	a.Send(3, []byte("nobody"))   // unknown peer
	a.Send(1, []byte("self"))     // self is not a peer
	a.Send(2, make([]byte, 1000))
	eventually(t, 5*time.Second, "max-size message", func() bool { return box.len() == 1 })
	if st := a.Stats(); st.QueueDrops != 3 || st.Sent != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// reservePort returns a loopback address nobody listens on (for now).
func reservePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func TestSenderBeforeReceiver(t *testing.T) {
	addr := reservePort(t)
	a, _ := newNode(t, Config{ID: 1, Peers: map[uint64]string{2: addr}})
	a.Send(2, []byte("early"))
	eventually(t, 5*time.Second, "failed dials", func() bool { return a.Stats().DialErrors >= 2 })

	b, box := newNode(t, Config{ID: 2, ListenAddr: addr, Peers: known(1)})
	var later [][]byte
	for i := range 50 {
		msg := fmt.Appendf(nil, "later %d", i)
		later = append(later, msg)
		a.Send(2, msg)
	}
	eventually(t, 5*time.Second, "messages after the peer came up", func() bool {
		for _, m := range later {
			if !box.has(m) {
				return false
			}
		}
		return true
	})
	if st := a.Stats(); st.Dials < 3 || st.DialErrors < 2 || st.Dials != st.DialErrors+1 {
		t.Errorf("dial stats %+v", st)
	}
	_ = b
}

// TestUnreachablePeerGetsNoBacklog: what waits for a peer that cannot be
// dialed is dropped at each failed dial, so a peer that comes back gets
// what is sent from then on, not a backlog of stale messages.
func TestUnreachablePeerGetsNoBacklog(t *testing.T) {
	addr := reservePort(t)
	a, _ := newNode(t, Config{ID: 1, Peers: map[uint64]string{2: addr}})
	var stale [][]byte
	for i := range 100 {
		msg := fmt.Appendf(nil, "stale %d", i)
		stale = append(stale, msg)
		a.Send(2, msg)
	}
	eventually(t, 5*time.Second, "the stale messages dropped", func() bool {
		st := a.Stats()
		return st.DialErrors >= 2 && st.QueueDrops >= 99
	})
	_, box := newNode(t, Config{ID: 2, ListenAddr: addr, Peers: known(1)})
	fresh := []byte("fresh")
	a.Send(2, fresh)
	eventually(t, 5*time.Second, "the fresh message", func() bool { return box.has(fresh) })
	n := 0
	for _, m := range stale {
		if box.has(m) {
			n++
		}
	}
	if n > 1 { // the one the sender held while dialing may go through
		t.Fatalf("the peer got %d stale messages queued while it was unreachable", n)
	}
}

func TestSetPeerMovesConnection(t *testing.T) {
	a, _ := newNode(t, Config{ID: 1})
	b1, box1 := newNode(t, Config{ID: 2, Peers: known(1)})
	b2, box2 := newNode(t, Config{ID: 2, Peers: known(1)})
	a.SetPeer(2, b1.Addr().String())
	a.Send(2, []byte("to old"))
	eventually(t, 5*time.Second, "old address", func() bool { return box1.has([]byte("to old")) })

	a.SetPeer(2, b2.Addr().String())
	for i := range 20 {
		a.Send(2, fmt.Appendf(nil, "to new %d", i))
	}
	eventually(t, 5*time.Second, "new address", func() bool { return box2.len() == 20 })
	if n := box1.len(); n != 1 {
		t.Fatalf("old address got %d messages after the move", n)
	}
}

func TestPeerRestart(t *testing.T) {
	a, _ := newNode(t, Config{ID: 1})
	b, box := newNode(t, Config{ID: 2, Peers: known(1)})
	addr := b.Addr().String()
	a.SetPeer(2, addr)
	a.Send(2, []byte("first life"))
	eventually(t, 5*time.Second, "first life", func() bool { return box.has([]byte("first life")) })
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}

	b2, box2 := newNode(t, Config{ID: 2, ListenAddr: addr, Peers: known(1)})
	// The first message after the restart may be lost on the old connection
	// (best effort); keep sending until one gets through.
	eventually(t, 5*time.Second, "second life", func() bool {
		a.Send(2, []byte("probe"))
		time.Sleep(10 * time.Millisecond)
		return box2.has([]byte("probe"))
	})
	for i := range 100 {
		a.Send(2, fmt.Appendf(nil, "after %d", i))
	}
	eventually(t, 5*time.Second, "messages after restart", func() bool {
		for i := range 100 {
			if !box2.has(fmt.Appendf(nil, "after %d", i)) {
				return false
			}
		}
		return true
	})
	if st := a.Stats(); st.Dials < 2 {
		t.Errorf("expected a redial: %+v", st)
	}
	_ = b2
}

func TestForeignCluster(t *testing.T) {
	a, _ := newNode(t, Config{ID: 1, ClusterID: 111})
	b, box := newNode(t, Config{ID: 2, ClusterID: 222, Peers: known(1, 9)})
	a.SetPeer(2, b.Addr().String())
	a.Send(2, []byte("wrong cluster"))
	eventually(t, 5*time.Second, "foreign frame", func() bool { return b.Stats().ForeignFrames >= 1 })

	c := rawConn(t, b.Addr().String(), appendFrame(nil, 333, 9, []byte("raw foreign")))
	if !closedByPeer(c) {
		t.Fatal("connection carrying a foreign frame was not closed")
	}
	if n := box.len(); n != 0 {
		t.Fatalf("received %d foreign messages", n)
	}
	if st := b.Stats(); st.ForeignFrames < 2 || st.BadFrames != 0 || st.Received != 0 {
		t.Fatalf("stats %+v", st)
	}
	// A correct frame on a fresh raw connection is delivered.
	rawConn(t, b.Addr().String(), appendFrame(nil, 222, 9, []byte("raw ok")))
	eventually(t, 5*time.Second, "raw frame", func() bool { return box.has([]byte("raw ok")) })
	if m := box.snapshot()[0]; m.from != 9 {
		t.Fatalf("from = %d, want 9", m.from)
	}
}

func TestBadFrames(t *testing.T) {
	const maxFrame = 1 << 20
	b, box := newNode(t, Config{ID: 2, MaxFrame: maxFrame, Peers: known(1, 5)})
	a, _ := newNode(t, Config{ID: 1, MaxFrame: maxFrame})
	a.SetPeer(2, b.Addr().String())

	good := appendFrame(nil, testCluster, 5, []byte("a perfectly fine payload"))
	corrupt := bytes.Clone(good)
	corrupt[len(corrupt)-3] ^= 1
	badCRC := bytes.Clone(good)
	badCRC[5] ^= 0x80
	oversize := bytes.Clone(good[:headerSize])
	binary.LittleEndian.PutUint32(oversize, maxFrame+1)
	huge := bytes.Clone(good[:headerSize])
	binary.LittleEndian.PutUint32(huge, 0xFFFFFFFF)
	rng := rand.New(rand.NewPCG(3, 4))
	noise := make([]byte, 4096)
	for i := range noise {
		noise[i] = byte(rng.Uint32())
	}
	binary.LittleEndian.PutUint32(noise, 100) // plausible length, random rest

	cases := []struct {
		name string
		data []byte
	}{
		{"flipped payload byte", corrupt},
		{"flipped crc byte", badCRC},
		{"good then corrupt", append(bytes.Clone(good), corrupt...)},
		{"oversize length", oversize},
		{"max u32 length", huge},
		{"zero sender", appendFrame(nil, testCluster, 0, []byte("anonymous"))},
		{"ascii garbage", []byte("GET / HTTP/1.1\r\nHost: example.com\r\n\r\n")},
		{"random noise", noise},
	}
	for i, tc := range cases {
		c := rawConn(t, b.Addr().String(), tc.data)
		if !closedByPeer(c) {
			t.Fatalf("%s: connection not closed", tc.name)
		}
		if got := b.Stats().BadFrames; got != uint64(i+1) {
			t.Fatalf("%s: BadFrames = %d, want %d", tc.name, got, i+1)
		}
	}
	// Truncated frames are a connection ending, not a bad frame.
	c := rawConn(t, b.Addr().String(), good[:len(good)-1])
	c.Close()
	// Only the good frame of "good then corrupt" was delivered.
	eventually(t, 5*time.Second, "good raw frame", func() bool { return box.len() >= 1 })
	if msgs := box.snapshot(); len(msgs) != 1 || msgs[0].from != 5 || string(msgs[0].data) != "a perfectly fine payload" {
		t.Fatalf("delivered %+v", msgs)
	}
	// The transport still works for good connections.
	a.Send(2, []byte("still works"))
	eventually(t, 5*time.Second, "good traffic", func() bool { return box.has([]byte("still works")) })
	if got := b.Stats().BadFrames; got != uint64(len(cases)) {
		t.Fatalf("BadFrames = %d, want %d", got, len(cases))
	}
}

// blackhole accepts connections and never reads from them.
func blackhole(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	return ln.Addr().String()
}

func TestDeadPeerDoesNotBlockOthers(t *testing.T) {
	dead := blackhole(t)
	a, _ := newNode(t, Config{ID: 1, QueueSize: 64})
	b, box := newNode(t, Config{ID: 2, Peers: known(1)})
	a.SetPeer(2, b.Addr().String())
	a.SetPeer(3, dead)

	// Flood the dead peer until its socket buffers and queue are full.
	big := make([]byte, 1<<20)
	start := time.Now()
	eventually(t, 10*time.Second, "queue drops for the dead peer", func() bool {
		for range 64 {
			a.Send(3, big)
		}
		return a.Stats().QueueDrops > 0
	})
	for range 1000 {
		a.Send(3, big) // never blocks
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("sending to a dead peer took %v", d)
	}
	drops := a.Stats().QueueDrops
	if drops < 1000 {
		t.Fatalf("QueueDrops = %d, want >= 1000", drops)
	}

	// The healthy peer gets each message promptly.
	start = time.Now()
	for i := range 20 {
		msg := fmt.Appendf(nil, "ping %d", i)
		a.Send(2, msg)
		eventually(t, 2*time.Second, string(msg), func() bool { return box.has(msg) })
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("20 round trips to the healthy peer took %v", d)
	}
	if got := a.Stats().QueueDrops; got != drops {
		t.Fatalf("healthy peer lost messages: QueueDrops %d -> %d", drops, got)
	}
	start = time.Now()
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("Close with a write blocked on a dead peer took %v", d)
	}
}

func TestCloseLifecycle(t *testing.T) {
	checkLeaks := goroutineBaseline(t)

	// Closed before Start, with a peer that is still dialing.
	t1, err := New(Config{ID: 1, ListenAddr: "127.0.0.1:0", Peers: map[uint64]string{2: reservePort(t)}})
	if err != nil {
		t.Fatal(err)
	}
	t1.Send(2, []byte("x"))
	time.Sleep(20 * time.Millisecond)
	if err := t1.Close(); err != nil {
		t.Fatal(err)
	}
	t1.Start(func(uint64, []byte) { t.Error("recv after Close") })

	// A connected pair, closed concurrently and repeatedly.
	a, err := New(Config{ID: 1, ListenAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	b, err := New(Config{ID: 2, ListenAddr: "127.0.0.1:0", Peers: map[uint64]string{1: a.Addr().String()}})
	if err != nil {
		t.Fatal(err)
	}
	a.SetPeer(2, b.Addr().String())
	got := make(chan struct{}, 100)
	a.Start(func(uint64, []byte) { got <- struct{}{} })
	b.Start(func(uint64, []byte) {})
	b.Send(1, []byte("hi"))
	select {
	case <-got:
	case <-time.After(5 * time.Second):
		t.Fatal("no delivery")
	}
	a.Send(2, []byte("hi")) // a has an outbound conn too
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			if err := a.Close(); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	drops := a.Stats().QueueDrops
	a.Send(2, []byte("after close"))
	a.Send(99, nil)
	a.SetPeer(3, "127.0.0.1:1")
	if got := a.Stats().QueueDrops; got != drops+2 {
		t.Fatalf("QueueDrops after Close: %d, want %d", got, drops+2)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	checkLeaks()
}

func TestNewValidation(t *testing.T) {
	bad := []Config{
		{ID: 0, ListenAddr: "127.0.0.1:0"},
		{ID: 1},
		{ID: 1, ListenAddr: "127.0.0.1:0", MaxFrame: -1},
		{ID: 1, ListenAddr: "127.0.0.1:0", QueueSize: -1},
		{ID: 1, ListenAddr: "127.0.0.1:0", Peers: map[uint64]string{0: "127.0.0.1:1"}},
		{ID: 1, ListenAddr: "127.0.0.1:0", Peers: map[uint64]string{2: "no port"}},
		{ID: 1, ListenAddr: "not an address"},
	}
	for _, cfg := range bad {
		if tr, err := New(cfg); err == nil {
			tr.Close()
			t.Errorf("New(%+v) succeeded", cfg)
		}
	}
	tr, err := New(Config{ID: 1, ListenAddr: "127.0.0.1:0", Peers: map[uint64]string{1: "ignored"}})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	if tr.cfg.MaxFrame != defaultMaxFrame || tr.cfg.QueueSize != defaultQueueSize {
		t.Fatalf("defaults not applied: %+v", tr.cfg)
	}
	if len(*tr.peers.Load()) != 0 {
		t.Fatal("own id became a peer")
	}
}

func TestIPv6(t *testing.T) {
	ln, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	ln.Close()
	a, boxA := newNode(t, Config{ID: 1, ListenAddr: "[::1]:0"})
	b, boxB := newNode(t, Config{ID: 2, ListenAddr: "[::1]:0"})
	a.SetPeer(2, b.Addr().String())
	b.SetPeer(1, a.Addr().String())
	a.Send(2, []byte("over v6"))
	b.Send(1, []byte("back over v6"))
	eventually(t, 5*time.Second, "IPv6 delivery", func() bool {
		return boxB.has([]byte("over v6")) && boxA.has([]byte("back over v6"))
	})
}

func BenchmarkSendRecv(b *testing.B) {
	const window = 4096
	sem := make(chan struct{}, window)
	tx, _ := newNode(b, Config{ID: 1})
	rx, err := New(Config{ID: 2, ListenAddr: "127.0.0.1:0", ClusterID: testCluster, Peers: known(1)})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { rx.Close() })
	rx.Start(func(uint64, []byte) { <-sem })
	tx.SetPeer(2, rx.Addr().String())
	msg := make([]byte, 100)

	sem <- struct{}{} // connect before timing
	tx.Send(2, msg)
	for range window {
		sem <- struct{}{}
	}
	for range window {
		<-sem
	}

	b.SetBytes(int64(len(msg)))
	b.ResetTimer()
	start := time.Now()
	for range b.N {
		sem <- struct{}{}
		tx.Send(2, msg)
	}
	for range window { // wait until everything arrived
		sem <- struct{}{}
	}
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "msgs/s")
	if d := tx.Stats().QueueDrops; d != 0 {
		b.Fatalf("%d drops", d)
	}
}

// logBuffer is an io.Writer for a slog handler, safe for concurrent use.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// lines returns the logged lines that contain every one of substrs.
func (b *logBuffer) lines(substrs ...string) []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
next:
	for _, l := range strings.Split(b.buf.String(), "\n") {
		for _, s := range substrs {
			if !strings.Contains(l, s) {
				continue next
			}
		}
		out = append(out, l)
	}
	return out
}

// fakeClock is a settable time source, safe for concurrent use.
type fakeClock struct{ ns atomic.Int64 }

func (c *fakeClock) now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) advance(d time.Duration) { c.ns.Add(int64(d)) }

// newLoggedNode makes a transport logging at the default (INFO) level into
// the returned buffer, with its WARN rate limits on clock, and starts it.
func newLoggedNode(t *testing.T, cfg Config, clock *fakeClock) (*Transport, *inbox, *logBuffer) {
	t.Helper()
	logs := &logBuffer{}
	cfg.Logger = slog.New(slog.NewTextHandler(logs, nil))
	cfg.ListenAddr = "127.0.0.1:0"
	tr, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close() })
	// Before Start, so the reader goroutines see them.
	tr.badWarn = newRateLog(warnEvery, clock.now)
	tr.foreignWarn = newRateLog(warnEvery, clock.now)
	tr.strangerWarn = newRateLog(warnEvery, clock.now)
	box := &inbox{}
	tr.Start(box.recv)
	return tr, box, logs
}

func TestStrangerFrames(t *testing.T) {
	clock := &fakeClock{}
	b, box, logs := newLoggedNode(t, Config{ID: 2, ClusterID: testCluster, Peers: known(1)}, clock)

	// A raw frame from node 7, which is not a member: refused.
	c := rawConn(t, b.Addr().String(), appendFrame(nil, testCluster, 7, []byte("from a stranger")))
	if !closedByPeer(c) {
		t.Fatal("connection carrying a stranger's frame was not closed")
	}
	if st := b.Stats(); st.StrangerFrames != 1 || st.Received != 0 || st.ForeignFrames != 0 || st.BadFrames != 0 {
		t.Fatalf("stats %+v", st)
	}
	// A good frame first is delivered; the stranger's after it is not.
	c = rawConn(t, b.Addr().String(), append(
		appendFrame(nil, testCluster, 1, []byte("from a member")),
		appendFrame(nil, testCluster, 8, []byte("from another stranger"))...))
	if !closedByPeer(c) {
		t.Fatal("connection carrying a stranger's frame after a good one was not closed")
	}
	// A real transport that is not a member (node 3 knows node 2, not the
	// other way round).
	s, _ := newNode(t, Config{ID: 3, Peers: map[uint64]string{2: b.Addr().String()}})
	s.Send(2, []byte("from node 3"))
	eventually(t, 5*time.Second, "node 3's frame refused", func() bool { return b.Stats().StrangerFrames >= 3 })
	if st := b.Stats(); st.StrangerFrames != 3 || st.Received != 1 {
		t.Fatalf("stats %+v", st)
	}
	if msgs := box.snapshot(); len(msgs) != 1 || msgs[0].from != 1 || string(msgs[0].data) != "from a member" {
		t.Fatalf("delivered %+v", msgs)
	}
	warns := logs.lines("level=WARN", "not a member")
	if len(warns) != 1 {
		t.Fatalf("%d WARN lines for 3 stranger frames in one window, want 1:\n%s", len(warns), strings.Join(warns, "\n"))
	}
	t.Logf("WARN line: %s", warns[0])
	for _, want := range []string{"sender=7", `expected_one_of="[1 2]"`, "remote=127.0.0.1:", "suppressed=0"} {
		if !strings.Contains(warns[0], want) {
			t.Errorf("WARN line %q does not mention %q", warns[0], want)
		}
	}

	// Frames carrying this node's own id are accepted; and once a sender
	// is made a peer, its frames are too.
	rawConn(t, b.Addr().String(), appendFrame(nil, testCluster, 2, []byte("from myself")))
	b.SetPeer(7, "127.0.0.1:1")
	rawConn(t, b.Addr().String(), appendFrame(nil, testCluster, 7, []byte("from a new member")))
	eventually(t, 5*time.Second, "frames from self and a new member", func() bool {
		return box.has([]byte("from myself")) && box.has([]byte("from a new member"))
	})
	if st := b.Stats(); st.StrangerFrames != 3 {
		t.Fatalf("StrangerFrames = %d after the sender became a member, want 3", st.StrangerFrames)
	}
}

func TestForeignClusterWarnRateLimited(t *testing.T) {
	clock := &fakeClock{}
	b, box, logs := newLoggedNode(t, Config{ID: 2, ClusterID: 222, Peers: known(9)}, clock)
	const n = 5
	for i := range n {
		c := rawConn(t, b.Addr().String(), appendFrame(nil, 333, 9, []byte("foreign")))
		if !closedByPeer(c) {
			t.Fatalf("frame %d: connection not closed", i)
		}
	}
	if st := b.Stats(); st.ForeignFrames != n || st.Received != 0 || st.StrangerFrames != 0 {
		t.Fatalf("stats %+v", st)
	}
	if box.len() != 0 {
		t.Fatal("foreign frame delivered")
	}
	warns := logs.lines("level=WARN")
	if len(warns) != 1 {
		t.Fatalf("%d WARN lines for %d foreign frames in one window, want 1:\n%s", len(warns), n, strings.Join(warns, "\n"))
	}
	t.Logf("WARN line: %s", warns[0])
	for _, want := range []string{"another cluster", "cluster=333", "expected_cluster=222", "remote=127.0.0.1:", "suppressed=0"} {
		if !strings.Contains(warns[0], want) {
			t.Errorf("WARN line %q does not mention %q", warns[0], want)
		}
	}

	// After the window, the next one is logged with the suppressed count.
	clock.advance(warnEvery)
	c := rawConn(t, b.Addr().String(), appendFrame(nil, 444, 9, []byte("foreign")))
	if !closedByPeer(c) {
		t.Fatal("connection not closed")
	}
	warns = logs.lines("level=WARN")
	if len(warns) != 2 {
		t.Fatalf("%d WARN lines after the window, want 2:\n%s", len(warns), strings.Join(warns, "\n"))
	}
	for _, want := range []string{"cluster=444", "expected_cluster=222", fmt.Sprintf("suppressed=%d", n-1)} {
		if !strings.Contains(warns[1], want) {
			t.Errorf("WARN line %q does not mention %q", warns[1], want)
		}
	}
}

func TestBadFrameWarn(t *testing.T) {
	clock := &fakeClock{}
	b, _, logs := newLoggedNode(t, Config{ID: 2, ClusterID: testCluster, Peers: known(5)}, clock)
	for range 3 {
		c := rawConn(t, b.Addr().String(), []byte("GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"))
		if !closedByPeer(c) {
			t.Fatal("connection not closed")
		}
	}
	if got := b.Stats().BadFrames; got != 3 {
		t.Fatalf("BadFrames = %d, want 3", got)
	}
	warns := logs.lines("level=WARN")
	if len(warns) != 1 || !strings.Contains(warns[0], "bad frame") || !strings.Contains(warns[0], "remote=127.0.0.1:") {
		t.Fatalf("WARN lines for 3 bad frames in one window, want 1 naming the remote:\n%s", strings.Join(warns, "\n"))
	}
	t.Logf("WARN line: %s", warns[0])
}

// Package transport is the production TCP transport between cluster nodes.
//
// Messages are opaque byte slices. Delivery is best effort: the Paxos layer
// above tolerates loss, duplication and reordering, so Send never blocks and
// drops messages when a peer's queue is full or the peer is unknown.
//
// # Connections
//
// Connections are one-directional. For every peer a node keeps one goroutine
// that owns one outbound TCP connection and a bounded send queue. The
// connection is dialed lazily on the first message, and after a failure it
// is redialed with exponential backoff (50ms doubling to 2s, jittered).
// While the peer is unreachable, every failed dial drops what waits in its
// queue: the Paxos layer resends what still matters (accepts, learn
// requests), and a peer back after an outage does not get a backlog of
// stale messages (a restarted node once caught up from thousands of queued
// chosen notices instead of the checkpoint its peers' cleaned logs called
// for). Frames are written through a buffered writer that
// is flushed only when the queue is momentarily empty, so bursts cost few
// system calls. A write error (or the peer closing the connection) drops the
// connection and the frames buffered in it; the next message redials. A
// connection whose writes make no progress for 15s counts as failed. A slow
// or dead peer only fills its own queue: sends to other peers are unaffected.
//
// Inbound, every accepted connection gets a reader goroutine that decodes
// frames and hands each payload to the receive callback, in connection order.
// Node A's frames to node B travel on A's outbound connection, accepted by B;
// B's frames to A on a second connection in the other direction.
//
// # Frame format
//
// Every message is one frame: a 24-byte header followed by the payload. All
// integers are little endian.
//
//	offset size field
//	0      4    payload length in bytes (at most Config.MaxFrame)
//	4      4    CRC-32 (Castagnoli) of bytes 8..24 of the header followed by the payload
//	8      8    cluster id
//	16     8    sender node id (non-zero)
//	24     n    payload
//
// A reader that sees a length over its MaxFrame, a zero sender or a CRC
// mismatch counts a bad frame (Stats.BadFrames) and closes the connection; a
// frame with another cluster id is counted as foreign (Stats.ForeignFrames)
// and also closes the connection. So does a frame of the right cluster whose
// sender is not a member: neither one of the current peers (Config.Peers as
// updated by SetPeer) nor this node's own id. It is counted as a stranger
// frame (Stats.StrangerFrames) and not delivered.
//
// All three point at a misconfiguration (a node of another cluster, or not
// yet added here, or not speaking this protocol), so they are logged at
// WARN, naming the remote address, the cluster id or sender seen and the
// expected value. To keep a misconfigured node from flooding the log, each
// kind is logged at most once per 10 seconds per transport; the line says
// how many frames of that kind were suppressed since the previous one (they
// are logged at DEBUG).
package transport

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math"
	"math/rand/v2"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

const (
	defaultMaxFrame  = 64 << 20
	defaultQueueSize = 8192

	writeBufSize = 256 << 10
	readBufSize  = 256 << 10

	backoffMin = 50 * time.Millisecond
	backoffMax = 2 * time.Second

	dialTimeout = 3 * time.Second
	// writeTimeout bounds how long one write of at most writeChunk bytes may
	// block before the connection is considered dead and redialed.
	writeTimeout = 15 * time.Second
	writeChunk   = 1 << 20
)

var (
	// ErrClosed is reported for work cut short because the transport was
	// closed.
	ErrClosed = errors.New("transport: closed")
	// ErrBadFrame is wrapped by the errors describing malformed frames.
	ErrBadFrame = errors.New("transport: bad frame")
)

// Config configures a Transport.
type Config struct {
	ID         uint64            // this node, non-zero
	ListenAddr string            // "host:port"; IPv4 or IPv6 ("[::1]:0"); port 0 picks a free port
	Peers      map[uint64]string // node id -> address; an entry for ID itself is ignored; frames from other senders are dropped (counted)
	ClusterID  uint64            // frames carrying another cluster id are dropped (counted)
	MaxFrame   int               // max payload bytes; default 64 MiB
	QueueSize  int               // per-peer send queue, in messages; default 8192
	Logger     *slog.Logger      // default discards
}

// Stats are the transport's counters, all monotonic.
type Stats struct {
	Sent           uint64 // frames written to an outbound connection's buffer
	Received       uint64 // frames handed to the receive callback
	QueueDrops     uint64 // messages dropped by Send: full queue, unknown peer, too large, or closed
	BadFrames      uint64 // inbound connections closed on a malformed frame
	ForeignFrames  uint64 // inbound connections closed on a frame of another cluster
	StrangerFrames uint64 // inbound connections closed on a frame from a sender that is neither a peer nor this node
	Dials          uint64 // outbound dial attempts
	DialErrors     uint64 // failed outbound dial attempts
	ConnsAccepted  uint64 // inbound connections accepted
}

// Transport is a TCP transport between the nodes of one cluster. Its methods
// are safe for concurrent use.
type Transport struct {
	cfg Config
	log *slog.Logger
	ln  net.Listener

	ctx    context.Context // cancelled by Close; aborts dials
	cancel context.CancelFunc
	done   chan struct{} // closed by Close

	closed atomic.Bool
	peers  atomic.Pointer[map[uint64]*peer] // copy on write, under mu

	mu      sync.Mutex // guards the fields below, peers updates and closed transitions
	started bool
	recv    func(from uint64, msg []byte)
	inbound map[net.Conn]struct{}

	wg        sync.WaitGroup
	closeOnce sync.Once

	sent, received, queueDrops               atomic.Uint64
	badFrames, foreignFrames, strangerFrames atomic.Uint64
	dials, dialErrors, connsAccepted         atomic.Uint64
	badWarn, foreignWarn, strangerWarn       *rateLog // rate limits of the WARN lines
}

// New validates cfg and starts listening on cfg.ListenAddr, so Addr is known
// at once. Connections are accepted only after Start.
func New(cfg Config) (*Transport, error) {
	if cfg.ID == 0 {
		return nil, errors.New("transport: Config.ID must be non-zero")
	}
	if cfg.ListenAddr == "" {
		return nil, errors.New("transport: Config.ListenAddr is empty")
	}
	switch {
	case cfg.MaxFrame < 0:
		return nil, fmt.Errorf("transport: Config.MaxFrame %d is negative", cfg.MaxFrame)
	case cfg.MaxFrame == 0:
		cfg.MaxFrame = defaultMaxFrame
	case uint64(cfg.MaxFrame) > math.MaxUint32:
		return nil, fmt.Errorf("transport: Config.MaxFrame %d exceeds %d", cfg.MaxFrame, uint64(math.MaxUint32))
	}
	switch {
	case cfg.QueueSize < 0:
		return nil, fmt.Errorf("transport: Config.QueueSize %d is negative", cfg.QueueSize)
	case cfg.QueueSize == 0:
		cfg.QueueSize = defaultQueueSize
	}
	for id, addr := range cfg.Peers {
		if id == 0 {
			return nil, errors.New("transport: Config.Peers has node id 0")
		}
		if id == cfg.ID {
			continue
		}
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return nil, fmt.Errorf("transport: peer %d address %q: %w", id, addr, err)
		}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	ln, err := net.Listen("tcp", cfg.ListenAddr)
	if err != nil {
		return nil, fmt.Errorf("transport: listen: %w", err)
	}
	peersCfg := cfg.Peers
	cfg.Peers = nil
	t := &Transport{
		cfg:     cfg,
		log:     cfg.Logger.With("node", cfg.ID),
		ln:      ln,
		done:    make(chan struct{}),
		inbound: make(map[net.Conn]struct{}),

		badWarn:      newRateLog(warnEvery, time.Now),
		foreignWarn:  newRateLog(warnEvery, time.Now),
		strangerWarn: newRateLog(warnEvery, time.Now),
	}
	t.ctx, t.cancel = context.WithCancel(context.Background())
	empty := map[uint64]*peer{}
	t.peers.Store(&empty)
	for id, addr := range peersCfg {
		t.SetPeer(id, addr)
	}
	return t, nil
}

// Addr returns the listening address.
func (t *Transport) Addr() net.Addr { return t.ln.Addr() }

// SetPeer adds a peer or changes its address. After a change, the current
// connection to the old address is dropped and later sends dial the new one.
// Frames from a newly added peer are accepted from the call on. Ids 0 and the
// transport's own id are ignored, as are calls after Close.
func (t *Transport) SetPeer(id uint64, addr string) {
	if id == 0 || id == t.cfg.ID {
		t.log.Debug("transport: SetPeer ignored", "peer", id, "addr", addr)
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed.Load() {
		return
	}
	old := *t.peers.Load()
	if p, ok := old[id]; ok {
		if *p.addr.Load() == addr {
			return
		}
		p.addr.Store(&addr)
		select {
		case p.kick <- struct{}{}:
		default:
		}
		p.abortConn()
		t.log.Debug("transport: peer address changed", "peer", id, "addr", addr)
		return
	}
	p := &peer{
		t:    t,
		id:   id,
		q:    make(chan []byte, t.cfg.QueueSize),
		kick: make(chan struct{}, 1),
	}
	p.addr.Store(&addr)
	m := maps.Clone(old)
	m[id] = p
	t.peers.Store(&m)
	t.wg.Add(1)
	go p.run()
}

// Start starts accepting connections. recv is called from reader goroutines,
// once per message, in per-connection order, and never after Close returns
// (Close waits for calls in progress, so recv must not block indefinitely; a
// slow recv only slows that connection's sender). msg is owned by recv. Only
// the first call has an effect; calls after Close do nothing.
func (t *Transport) Start(recv func(from uint64, msg []byte)) {
	if recv == nil {
		recv = func(uint64, []byte) {}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.started || t.closed.Load() {
		return
	}
	t.started = true
	t.recv = recv
	t.wg.Add(1)
	go t.acceptLoop()
}

// Send queues msg for peer to. It never blocks. The transport owns msg
// afterwards and does not modify it. The message is dropped (and counted in
// QueueDrops) if the peer is unknown, its queue is full, msg is longer than
// MaxFrame, or the transport is closed.
func (t *Transport) Send(to uint64, msg []byte) {
	if t.closed.Load() {
		t.queueDrops.Add(1)
		return
	}
	p := (*t.peers.Load())[to]
	if p == nil {
		t.queueDrops.Add(1)
		t.log.Debug("transport: send to unknown peer dropped", "peer", to)
		return
	}
	if len(msg) > t.cfg.MaxFrame {
		t.queueDrops.Add(1)
		t.log.Debug("transport: oversize message dropped", "peer", to, "len", len(msg))
		return
	}
	select {
	case p.q <- msg:
	default:
		t.queueDrops.Add(1)
	}
}

// Stats returns a snapshot of the counters.
func (t *Transport) Stats() Stats {
	return Stats{
		Sent:           t.sent.Load(),
		Received:       t.received.Load(),
		QueueDrops:     t.queueDrops.Load(),
		BadFrames:      t.badFrames.Load(),
		ForeignFrames:  t.foreignFrames.Load(),
		StrangerFrames: t.strangerFrames.Load(),
		Dials:          t.dials.Load(),
		DialErrors:     t.dialErrors.Load(),
		ConnsAccepted:  t.connsAccepted.Load(),
	}
}

// Close stops the listener and every goroutine, closes all connections and
// waits for them. Queued messages are discarded. It is idempotent; calls
// after the first return nil.
func (t *Transport) Close() error {
	var err error
	t.closeOnce.Do(func() {
		t.mu.Lock()
		t.closed.Store(true)
		t.mu.Unlock()
		t.cancel()
		close(t.done)
		err = t.ln.Close()

		t.mu.Lock()
		for c := range t.inbound {
			c.Close()
		}
		peers := *t.peers.Load()
		t.mu.Unlock()
		for _, p := range peers {
			p.abortConn()
		}
		t.wg.Wait()
	})
	return err
}

// ---- inbound ----

func (t *Transport) acceptLoop() {
	defer t.wg.Done()
	var delay time.Duration
	for {
		c, err := t.ln.Accept()
		if err != nil {
			if t.closed.Load() || errors.Is(err, net.ErrClosed) {
				return
			}
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			t.log.Warn("transport: accept failed", "err", err, "retry_in", delay)
			select {
			case <-t.done:
				return
			case <-time.After(delay):
			}
			continue
		}
		delay = 0
		t.connsAccepted.Add(1)
		t.mu.Lock()
		if t.closed.Load() {
			t.mu.Unlock()
			c.Close()
			return
		}
		t.inbound[c] = struct{}{}
		t.wg.Add(1)
		t.mu.Unlock()
		go t.serve(c)
	}
}

// serve reads frames from one accepted connection until it fails.
func (t *Transport) serve(c net.Conn) {
	defer t.wg.Done()
	defer func() {
		t.mu.Lock()
		delete(t.inbound, c)
		t.mu.Unlock()
		c.Close()
	}()
	br := bufio.NewReaderSize(c, readBufSize)
	var hdr [headerSize]byte
	for !t.closed.Load() {
		f, err := readFrame(br, hdr[:], t.cfg.MaxFrame)
		if err != nil {
			switch {
			case errors.Is(err, ErrBadFrame):
				t.badFrames.Add(1)
				t.warn(t.badWarn, "transport: bad frame, closing connection",
					"remote", c.RemoteAddr().String(), "err", err, "max_frame", t.cfg.MaxFrame)
			case err == io.EOF || t.closed.Load():
			default:
				t.log.Debug("transport: inbound connection ended", "remote", c.RemoteAddr().String(), "err", err)
			}
			return
		}
		if f.cluster != t.cfg.ClusterID {
			t.foreignFrames.Add(1)
			t.warn(t.foreignWarn, "transport: frame from another cluster, closing connection",
				"remote", c.RemoteAddr().String(), "cluster", f.cluster, "expected_cluster", t.cfg.ClusterID,
				"sender", f.sender)
			return
		}
		if f.sender != t.cfg.ID && (*t.peers.Load())[f.sender] == nil {
			t.strangerFrames.Add(1)
			t.warn(t.strangerWarn, "transport: frame from a sender that is not a member, closing connection",
				"remote", c.RemoteAddr().String(), "sender", f.sender, "expected_one_of", t.members(),
				"cluster", f.cluster)
			return
		}
		t.received.Add(1)
		t.recv(f.sender, f.payload)
	}
}

// warn logs msg at WARN unless rl suppresses it, adding the number of
// suppressed occurrences; suppressed ones are logged at DEBUG.
func (t *Transport) warn(rl *rateLog, msg string, args ...any) {
	ok, suppressed := rl.allow()
	if !ok {
		t.log.Debug(msg, args...)
		return
	}
	t.log.Warn(msg, append(args, "suppressed", suppressed)...)
}

// members returns the node ids frames are accepted from: this node and its
// peers, sorted.
func (t *Transport) members() []uint64 {
	peers := *t.peers.Load()
	ids := make([]uint64, 0, len(peers)+1)
	ids = append(ids, t.cfg.ID)
	for id := range peers {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// ---- outbound ----

// peer is the outbound side towards one node: a queue drained by run, which
// owns the connection.
type peer struct {
	t    *Transport
	id   uint64
	addr atomic.Pointer[string]
	q    chan []byte
	kick chan struct{} // address changed: cut a backoff short

	mu   sync.Mutex
	conn net.Conn // current connection, so Close and SetPeer can abort it
}

// outConn is one outbound connection.
type outConn struct {
	c    net.Conn
	addr string
	dead chan struct{} // closed when the peer closes its end (or on any read)
}

func (oc *outConn) isDead() bool {
	select {
	case <-oc.dead:
		return true
	default:
		return false
	}
}

// abortConn closes the current connection, making a blocked write fail.
func (p *peer) abortConn() {
	p.mu.Lock()
	if p.conn != nil {
		p.conn.Close()
	}
	p.mu.Unlock()
}

func (p *peer) run() {
	t := p.t
	defer t.wg.Done()
	var (
		oc      *outConn
		bw      *bufio.Writer
		backoff time.Duration
		hdr     [headerSize]byte
	)
	defer func() {
		if oc != nil {
			p.dropConn(oc)
		}
	}()
	for {
		var msg []byte
		select {
		case <-t.done:
			return
		case msg = <-p.q:
		}
		for oc == nil || oc.isDead() || *p.addr.Load() != oc.addr {
			if oc != nil {
				p.dropConn(oc)
				oc = nil
			}
			var err error
			if oc, err = p.dial(&backoff); err != nil {
				t.log.Debug("transport: peer sender stopped", "peer", p.id, "err", err)
				return
			}
			if bw == nil {
				bw = bufio.NewWriterSize(deadlineWriter{oc.c}, writeBufSize)
			} else {
				bw.Reset(deadlineWriter{oc.c})
			}
		}
		if err := p.writeBatch(bw, &hdr, msg); err != nil {
			if !t.closed.Load() {
				t.log.Debug("transport: write failed, dropping connection", "peer", p.id, "addr", oc.addr, "err", err)
			}
			p.dropConn(oc)
			oc = nil
		}
	}
}

// writeBatch writes msg and whatever else is queued, then flushes.
func (p *peer) writeBatch(bw *bufio.Writer, hdr *[headerSize]byte, msg []byte) error {
	t := p.t
	for {
		putHeader(hdr, t.cfg.ClusterID, t.cfg.ID, msg)
		if _, err := bw.Write(hdr[:]); err != nil {
			return err
		}
		if _, err := bw.Write(msg); err != nil {
			return err
		}
		t.sent.Add(1)
		select {
		case msg = <-p.q:
			continue
		default:
		}
		return bw.Flush()
	}
}

// dial connects to the peer's current address, retrying with backoff. It
// fails only with ErrClosed, once the transport is closed.
func (p *peer) dial(backoff *time.Duration) (*outConn, error) {
	t := p.t
	for {
		if t.closed.Load() {
			return nil, ErrClosed
		}
		addr := *p.addr.Load()
		t.dials.Add(1)
		d := net.Dialer{Timeout: dialTimeout}
		c, err := d.DialContext(t.ctx, "tcp", addr)
		if err == nil {
			oc := &outConn{c: c, addr: addr, dead: make(chan struct{})}
			p.mu.Lock()
			if t.closed.Load() {
				p.mu.Unlock()
				c.Close()
				return nil, ErrClosed
			}
			p.conn = c
			// The watcher holds a wg slot; this goroutine holds one too, so
			// the Add cannot race with Close's Wait reaching zero.
			t.wg.Add(1)
			p.mu.Unlock()
			go p.watch(oc)
			*backoff = 0
			t.log.Debug("transport: connected", "peer", p.id, "addr", addr)
			return oc, nil
		}
		t.dialErrors.Add(1)
		if t.closed.Load() {
			return nil, ErrClosed
		}
		p.discardQueue()
		*backoff = min(max(2**backoff, backoffMin), backoffMax)
		sleep := *backoff/2 + rand.N(*backoff/2+1)
		t.log.Debug("transport: dial failed", "peer", p.id, "addr", addr, "err", err, "retry_in", sleep)
		timer := time.NewTimer(sleep)
		select {
		case <-t.done:
			timer.Stop()
			return nil, ErrClosed
		case <-p.kick:
			timer.Stop()
			*backoff = 0
		case <-timer.C:
		}
	}
}

// discardQueue drops every message waiting for the (unreachable) peer.
func (p *peer) discardQueue() {
	for {
		select {
		case <-p.q:
			p.t.queueDrops.Add(1)
		default:
			return
		}
	}
}

// watch notices the peer closing the connection. Nothing is ever sent on an
// outbound connection towards us, so any read result ends it.
func (p *peer) watch(oc *outConn) {
	defer p.t.wg.Done()
	var b [1]byte
	oc.c.Read(b[:])
	close(oc.dead)
	oc.c.Close()
}

// dropConn closes oc and forgets it.
func (p *peer) dropConn(oc *outConn) {
	p.mu.Lock()
	if p.conn == oc.c {
		p.conn = nil
	}
	p.mu.Unlock()
	oc.c.Close()
}

// deadlineWriter writes in chunks, each under a fresh write deadline, so a
// peer that stops reading is detected without limiting large frames.
type deadlineWriter struct{ c net.Conn }

func (w deadlineWriter) Write(b []byte) (int, error) {
	n := 0
	for n < len(b) {
		end := min(len(b), n+writeChunk)
		if err := w.c.SetWriteDeadline(time.Now().Add(writeTimeout)); err != nil {
			return n, err
		}
		m, err := w.c.Write(b[n:end])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/paxoskit/paxos"
	"github.com/paxoskit/paxos/internal/kvsm"
)

const (
	// maxValue is the largest value a PUT may store, in bytes.
	maxValue = 1 << 20
	// maxKey is the longest key, in bytes (after URL unescaping).
	maxKey = 1024
	// maxProposal is the node's MaxValueSize: an encoded op with the
	// longest key and the largest value fits (kind, three varints).
	maxProposal = maxValue + maxKey + 64
)

// versionHeader carries a key's version on GET answers.
const versionHeader = "X-Paxoskv-Version"

// masterHeader names, on every answer, the master of the request's group
// (group 0 for paths without a key) as this node knows it: 0 when unknown.
const masterHeader = "X-Paxoskv-Master"

// server is the HTTP front of one paxoskv node.
type server struct {
	node    *paxos.Node
	sm      *kvsm.Machine
	groups  int
	timeout time.Duration
	// httpPeers holds the nodes' HTTP addresses (--http-peers), nil when
	// not given; with redirect, writes on a follower get a 307 to the
	// master's.
	httpPeers map[uint64]string
	redirect  bool
}

// handler routes the API. Keys are taken literally from the path after
// /kv/ (URL-unescaped): /kv/... is routed here rather than by a ServeMux,
// which would redirect paths holding "//", "." or ".." segments and so
// change the key (or turn a PUT into a GET in clients that follow
// redirects). Every other path goes to a ServeMux whose catch-alls answer
// JSON errors instead of the mux's plain text.
func (s *server) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /status", s.status)
	mux.HandleFunc("/status", methodNotAllowed("GET, HEAD"))
	mux.HandleFunc("GET /members", s.members)
	mux.HandleFunc("POST /members", s.changeMembers)
	mux.HandleFunc("/members", methodNotAllowed("GET, HEAD, POST"))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no such endpoint: %s %s", r.Method, r.URL.Path))
	})
	kvNotAllowed := methodNotAllowed("GET, HEAD, PUT, DELETE")
	return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		k, ok := strings.CutPrefix(r.URL.Path, "/kv/")
		w := &masterWriter{ResponseWriter: rw, s: s}
		if !ok {
			mux.ServeHTTP(w, r)
			return
		}
		w.group = s.groupOf(k)
		r.SetPathValue("key", k)
		switch r.Method {
		case http.MethodGet, http.MethodHead:
			s.get(w, r)
		case http.MethodPut:
			s.put(w, r)
		case http.MethodDelete:
			s.del(w, r)
		default:
			kvNotAllowed(w, r)
		}
	})
}

// masterWriter sets masterHeader when the answer's header is written, so
// that it names the master as the node knows it once the request ran.
type masterWriter struct {
	http.ResponseWriter
	s     *server
	group uint64
	wrote bool
}

func (w *masterWriter) WriteHeader(code int) {
	if !w.wrote {
		w.wrote = true
		var master uint64
		if m, err := w.s.node.Master(w.group); err == nil {
			master = m.Node
		}
		w.Header().Set(masterHeader, strconv.FormatUint(master, 10))
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *masterWriter) Write(b []byte) (int, error) {
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *masterWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func methodNotAllowed(allow string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Allow", allow)
		writeError(w, http.StatusMethodNotAllowed, fmt.Sprintf("method %s not allowed on %s (allowed: %s)", r.Method, r.URL.Path, allow))
	}
}

// groupOf maps a key to its Paxos group.
func (s *server) groupOf(key string) uint64 {
	h := fnv.New32a()
	h.Write([]byte(key))
	return uint64(h.Sum32()) % uint64(s.groups)
}

// key returns the request's key, or writes a 400 and returns false.
func key(w http.ResponseWriter, r *http.Request) (string, bool) {
	k := r.PathValue("key")
	switch {
	case k == "":
		writeError(w, http.StatusBadRequest, "empty key")
		return "", false
	case len(k) > maxKey:
		writeError(w, http.StatusBadRequest, fmt.Sprintf("key too long: %d bytes, limit %d bytes", len(k), maxKey))
		return "", false
	}
	return k, true
}

// query parses the request's query string and returns each allowed
// parameter's single value, keyed by the names that were given. An unknown, repeated or unparsable parameter is a 400, written
// here; then ok is false.
func query(w http.ResponseWriter, r *http.Request, allowed ...string) (vals map[string]string, ok bool) {
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad query string: "+err.Error())
		return nil, false
	}
	vals = map[string]string{}
	for name, vs := range q {
		switch {
		case !slices.Contains(allowed, name):
			writeError(w, http.StatusBadRequest, fmt.Sprintf("unknown query parameter %q for %s", name, r.Method))
			return nil, false
		case len(vs) != 1:
			writeError(w, http.StatusBadRequest, fmt.Sprintf("query parameter %q given %d times", name, len(vs)))
			return nil, false
		}
		vals[name] = vs[0]
	}
	return vals, true
}

func (s *server) put(w http.ResponseWriter, r *http.Request) {
	k, ok := key(w, r)
	if !ok {
		return
	}
	q, ok := query(w, r, "version")
	if !ok {
		return
	}
	if !s.member(w, s.groupOf(k)) || s.redirected(w, r, k) {
		return
	}
	op := kvsm.Op{Kind: kvsm.Put, Key: k}
	if version, given := q["version"]; given {
		if version == "" {
			writeError(w, http.StatusBadRequest, "version is empty: give ?version=N for a compare-and-set, or no version parameter")
			return
		}
		v, err := strconv.ParseUint(version, 10, 64)
		if err != nil {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("version must be an unsigned integer, got %q", version))
			return
		}
		op.Kind, op.Version = kvsm.CAS, v
	}
	if r.ContentLength > maxValue {
		writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("value too large: %d bytes, limit %d bytes", r.ContentLength, maxValue))
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxValue+1))
	if err != nil {
		writeError(w, http.StatusBadRequest, "reading body: "+err.Error())
		return
	}
	if len(body) > maxValue {
		writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("value too large: more than %d bytes, limit %d bytes", maxValue, maxValue))
		return
	}
	op.Value = string(body)
	res, ok := s.run(w, r, op)
	if !ok {
		return
	}
	if op.Kind == kvsm.CAS && !res.OK {
		out := map[string]any{"error": "version mismatch", "version": res.Version, "found": res.Found}
		if res.Found {
			out["value_base64"] = base64.StdEncoding.EncodeToString([]byte(res.Value))
		}
		writeJSON(w, http.StatusConflict, out)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"version": res.Version})
}

func (s *server) get(w http.ResponseWriter, r *http.Request) {
	k, ok := key(w, r)
	if !ok {
		return
	}
	q, ok := query(w, r, "stale", "read")
	if !ok {
		return
	}
	stale := false
	if flag, given := q["stale"]; given {
		b, err := strconv.ParseBool(flag)
		if err != nil {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("stale must be a boolean (1, t, true, 0, f, false), got %q", flag))
			return
		}
		stale = b
	}
	mode := "auto"
	if m, given := q["read"]; given {
		if _, known := readModes[m]; !known && m != readPropose {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("read must be auto, lease, index or propose, got %q", m))
			return
		}
		if stale {
			writeError(w, http.StatusBadRequest, "stale=true is a local read: it takes no read mode")
			return
		}
		mode = m
	}
	if !s.member(w, s.groupOf(k)) {
		return
	}
	var res kvsm.Result
	switch {
	case stale:
		e := s.sm.Lookup(s.groupOf(k), k)
		res = kvsm.Result{OK: true, Found: e.Exists, Value: e.Value, Version: e.Version}
	case mode == readPropose:
		if res, ok = s.run(w, r, kvsm.Op{Kind: kvsm.Get, Key: k}); !ok {
			return
		}
	default:
		if res, ok = s.read(w, r, k, readModes[mode]); !ok {
			return
		}
	}
	w.Header().Set(versionHeader, strconv.FormatUint(res.Version, 10))
	if !res.Found {
		writeJSON(w, http.StatusNotFound, map[string]any{"error": "not found", "version": res.Version})
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Content-Length", strconv.Itoa(len(res.Value)))
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	io.WriteString(w, res.Value)
}

func (s *server) del(w http.ResponseWriter, r *http.Request) {
	k, ok := key(w, r)
	if !ok {
		return
	}
	if _, ok := query(w, r); !ok {
		return
	}
	if !s.member(w, s.groupOf(k)) || s.redirected(w, r, k) {
		return
	}
	res, ok := s.run(w, r, kvsm.Op{Kind: kvsm.Delete, Key: k})
	if ok {
		writeJSON(w, http.StatusOK, map[string]any{"found": res.Found, "version": res.Version})
	}
}

// groupStatus is paxos.GroupStatus with JSON names.
type groupStatus struct {
	Group         uint64 `json:"group"`
	Leader        uint64 `json:"leader"`
	IsLeader      bool   `json:"is_leader"`
	BallotCounter uint64 `json:"ballot_counter"`
	Chosen        uint64 `json:"chosen"`
	Executed      uint64 `json:"executed"`
	LogStart      uint64 `json:"log_start"`  // lowest instance still in the log
	Checkpoint    uint64 `json:"checkpoint"` // newest checkpoint's instance
	InMemory      int    `json:"in_memory"`  // instances held in memory
	MemoryBound   int    `json:"memory_bound"`
	Queued        int    `json:"queued"`
	Pending       int    `json:"pending"`
	Master        uint64 `json:"master"`         // 0: none known
	MasterVersion uint64 `json:"master_version"` // the instance at which it became master
	IsMaster      bool   `json:"is_master"`      // this node holds the lease
	// The group's newest configuration as this node knows it (see GET
	// /members) and whether this node is in it.
	ConfigVersion uint64   `json:"config_version"`
	Voters        []uint64 `json:"voters"`
	Followers     []uint64 `json:"followers"`
	Member        bool     `json:"member"`
}

// nodeStats is paxos.Stats with JSON names.
type nodeStats struct {
	Proposals     uint64   `json:"proposals"`
	Timeouts      uint64   `json:"timeouts"`
	Cancelled     uint64   `json:"cancelled"`
	Committed     uint64   `json:"committed"`
	Syncs         uint64   `json:"syncs"`
	MsgsSent      uint64   `json:"msgs_sent"`
	BytesSent     uint64   `json:"bytes_sent"`
	MsgsReceived  uint64   `json:"msgs_received"`
	BytesReceived uint64   `json:"bytes_received"`
	BadMessages   uint64   `json:"bad_messages"`
	UnknownGroups uint64   `json:"unknown_groups"`
	Checkpoints   uint64   `json:"checkpoints"`
	CkptErrors    uint64   `json:"checkpoint_errors"`
	Installs      uint64   `json:"installs"`
	SnapSends     uint64   `json:"snapshot_sends"`
	SnapRecvs     uint64   `json:"snapshot_receives"`
	SnapAborts    uint64   `json:"snapshot_aborts"`
	SnapBytesSent uint64   `json:"snapshot_bytes_sent"`
	SnapBytesRecv uint64   `json:"snapshot_bytes_received"`
	MasterChanges uint64   `json:"master_changes"`
	LeaseReads    uint64   `json:"lease_reads"`
	IndexReads    uint64   `json:"index_reads"`
	NoQuorum      uint64   `json:"no_quorum"`
	Env           envStats `json:"env"`
}

// envStats is env.Counters with JSON names.
type envStats struct {
	Fsyncs         uint64 `json:"fsyncs"`
	SendDrops      uint64 `json:"send_drops"`
	BadFrames      uint64 `json:"bad_frames"`
	ForeignFrames  uint64 `json:"foreign_frames"`
	StrangerFrames uint64 `json:"stranger_frames"`
}

// statusReply is the body of GET /status.
type statusReply struct {
	NodeID uint64        `json:"node_id"`
	Groups []groupStatus `json:"groups"`
	Stats  nodeStats     `json:"stats"`
}

func (s *server) status(w http.ResponseWriter, r *http.Request) {
	if _, ok := query(w, r); !ok {
		return
	}
	out := statusReply{NodeID: s.node.MyNodeID(), Groups: make([]groupStatus, 0, s.groups)}
	for g := range uint64(s.groups) {
		st, err := s.node.Status(g)
		if err != nil {
			writeError(w, statusOf(err), err.Error())
			return
		}
		m, err := s.node.Membership(g)
		if err != nil {
			writeError(w, statusOf(err), err.Error())
			return
		}
		out.Groups = append(out.Groups, groupStatus{
			Group: g, Leader: st.Leader, IsLeader: st.IsLeader, BallotCounter: st.BallotCounter,
			Chosen: st.Chosen, Executed: st.Executed, LogStart: st.LogStart, Checkpoint: st.Checkpoint,
			InMemory: st.InMemory, MemoryBound: st.MemoryBound,
			Queued: st.Queued, Pending: st.Pending,
			Master: st.Master, MasterVersion: st.MasterVersion, IsMaster: st.IsMaster,
			ConfigVersion: m.Version, Voters: nonNil(m.Voters()), Followers: nonNil(m.Followers()),
			Member: m.Has(s.node.MyNodeID()),
		})
	}
	st := s.node.Stats()
	out.Stats = nodeStats{
		Proposals: st.Proposals, Timeouts: st.Timeouts, Cancelled: st.Cancelled,
		Committed: st.Committed, Syncs: st.Syncs,
		MsgsSent: st.MsgsSent, BytesSent: st.BytesSent,
		MsgsReceived: st.MsgsReceived, BytesReceived: st.BytesReceived,
		BadMessages: st.BadMessages, UnknownGroups: st.UnknownGroups,
		Checkpoints: st.Checkpoints, CkptErrors: st.CheckpointErrors, Installs: st.Installs,
		SnapSends: st.SnapSends, SnapRecvs: st.SnapRecvs, SnapAborts: st.SnapAborts,
		SnapBytesSent: st.SnapBytesSent, SnapBytesRecv: st.SnapBytesRecv,
		MasterChanges: st.MasterChanges, LeaseReads: st.LeaseReads, IndexReads: st.IndexReads, NoQuorum: st.NoQuorum,
		Env: envStats{
			Fsyncs: st.Env.Fsyncs, SendDrops: st.Env.SendDrops, BadFrames: st.Env.BadFrames,
			ForeignFrames: st.Env.ForeignFrames, StrangerFrames: st.Env.StrangerFrames,
		},
	}
	writeJSON(w, http.StatusOK, out)
}

// readPropose is ?read=propose: the GET goes through Paxos as a write
// would (the path before reads without a write, kept to compare).
const readPropose = "propose"

// readModes maps the other values of ?read= to the library's modes.
var readModes = map[string]paxos.ReadMode{"auto": paxos.ReadAuto, "lease": paxos.ReadLease, "index": paxos.ReadIndex}

// read looks key up at a linearizable point of its group, confirmed by
// mode without a Paxos write; on failure it has written the HTTP error and
// returns false.
func (s *server) read(w http.ResponseWriter, r *http.Request, key string, mode paxos.ReadMode) (kvsm.Result, bool) {
	ctx, cancel := context.WithTimeout(r.Context(), s.timeout)
	defer cancel()
	g := s.groupOf(key)
	var e kvsm.Entry
	// fn runs on the node's loop, before Read returns and only on success.
	if _, err := s.node.Read(ctx, g, mode, func() { e = s.sm.Lookup(g, key) }); err != nil {
		writeFailure(w, err)
		return kvsm.Result{}, false
	}
	return kvsm.Result{OK: true, Found: e.Exists, Value: e.Value, Version: e.Version}, true
}

// redirected answers a write on a follower with a 307 to the master's HTTP
// address when --redirect is on and the master and its address are known,
// and reports whether it did. Otherwise the write runs here: the library
// forwards it to the leader.
func (s *server) redirected(w http.ResponseWriter, r *http.Request, key string) bool {
	if !s.redirect {
		return false
	}
	m, err := s.node.Master(s.groupOf(key))
	if err != nil || m.Node == 0 || m.Node == s.node.MyNodeID() {
		return false
	}
	addr, ok := s.httpPeers[m.Node]
	if !ok {
		return false
	}
	loc := "http://" + addr + r.URL.RequestURI()
	w.Header().Set("Location", loc)
	writeJSON(w, http.StatusTemporaryRedirect, map[string]any{"master": m.Node, "location": loc})
	return true
}

// run proposes op and waits for its result; on failure it has written the
// HTTP error and returns false.
func (s *server) run(w http.ResponseWriter, r *http.Request, op kvsm.Op) (kvsm.Result, bool) {
	ctx, cancel := context.WithTimeout(r.Context(), s.timeout)
	defer cancel()
	out, err := s.node.Propose(ctx, s.groupOf(op.Key), op.Encode(), &paxos.SMCtx{SMID: kvsm.SMID})
	if err != nil {
		msg := err.Error()
		if errors.Is(err, paxos.ErrValueTooLarge) {
			msg = fmt.Sprintf("%s (value limit %d bytes)", msg, maxValue)
		}
		// When the client went away (context.Canceled) nobody reads
		// this answer; writing it is harmless.
		writeError(w, statusOf(err), msg)
		return kvsm.Result{}, false
	}
	res, ok := out.Value.(kvsm.Result)
	if !ok {
		writeError(w, http.StatusInternalServerError, fmt.Sprintf("state machine returned %T, want kvsm.Result", out.Value))
		return kvsm.Result{}, false
	}
	if res.Err != nil {
		writeError(w, statusOf(res.Err), res.Err.Error())
		return kvsm.Result{}, false
	}
	return res, true
}

// writeFailure writes the answer to a failed Propose or Read: statusOf's
// status with {"error": ...}, and for ErrNotMaster the master this node
// knows of ("master", 0 when none, and "master_version"), so that the
// client can go there.
func writeFailure(w http.ResponseWriter, err error) {
	var nm *paxos.NotMasterError
	if errors.As(err, &nm) && !errors.Is(err, paxos.ErrTimeout) {
		writeJSON(w, statusOf(err), map[string]any{"error": err.Error(), "master": nm.Master.Node, "master_version": nm.Master.Version})
		return
	}
	writeError(w, statusOf(err), err.Error())
}

// statusOf maps a Propose, Read, membership change or state machine error
// to an HTTP status. A timeout comes first: wrapped with ErrNoQuorum it
// means the write was sent and its outcome is unknown (504), where
// ErrNoQuorum alone means nothing was started (503).
func statusOf(err error) int {
	switch {
	case errors.Is(err, paxos.ErrTimeout), errors.Is(err, context.DeadlineExceeded):
		return http.StatusGatewayTimeout
	case errors.Is(err, paxos.ErrNoQuorum), errors.Is(err, paxos.ErrNotMaster), errors.Is(err, paxos.ErrNotMember):
		return http.StatusServiceUnavailable
	case errors.Is(err, paxos.ErrInvalidMembership):
		return http.StatusBadRequest
	case errors.Is(err, paxos.ErrConfigChanged):
		return http.StatusConflict
	case errors.Is(err, paxos.ErrValueTooLarge):
		return http.StatusRequestEntityTooLarge
	case errors.Is(err, kvsm.ErrBadOp):
		return http.StatusBadRequest
	case errors.Is(err, paxos.ErrOverloaded), errors.Is(err, paxos.ErrClosed):
		return http.StatusServiceUnavailable
	default:
		return http.StatusServiceUnavailable
	}
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]any{"error": msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Del("Content-Length")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

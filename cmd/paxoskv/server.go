package main

import (
	"context"
	"encoding/json"
	"errors"
	"hash/fnv"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/paxoskit/paxos"
	"github.com/paxoskit/paxos/internal/kvsm"
)

// server is the HTTP front of one paxoskv node.
type server struct {
	node    *paxos.Node
	sm      *kvsm.Machine
	groups  int
	timeout time.Duration
}

func (s *server) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("PUT /kv/{key...}", s.put)
	mux.HandleFunc("GET /kv/{key...}", s.get)
	mux.HandleFunc("DELETE /kv/{key...}", s.del)
	return mux
}

// groupOf maps a key to its Paxos group.
func (s *server) groupOf(key string) uint64 {
	h := fnv.New32a()
	h.Write([]byte(key))
	return uint64(h.Sum32()) % uint64(s.groups)
}

func (s *server) put(w http.ResponseWriter, r *http.Request) {
	key := r.PathValue("key")
	body, err := io.ReadAll(io.LimitReader(r.Body, maxValue+1))
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if len(body) > maxValue {
		writeError(w, http.StatusRequestEntityTooLarge, "value too large")
		return
	}
	op := kvsm.Op{Kind: kvsm.Put, Key: key, Value: string(body)}
	if v := r.URL.Query().Get("version"); v != "" {
		op.Kind = kvsm.CAS
		if op.Version, err = strconv.ParseUint(v, 10, 64); err != nil {
			writeError(w, http.StatusBadRequest, "version must be an unsigned integer")
			return
		}
	}
	res, ok := s.run(w, r, op)
	if !ok {
		return
	}
	if op.Kind == kvsm.CAS && !res.OK {
		writeJSON(w, http.StatusConflict, map[string]any{"error": "version mismatch", "version": res.Version, "found": res.Found, "value": res.Value})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"version": res.Version})
}

func (s *server) get(w http.ResponseWriter, r *http.Request) {
	key := r.PathValue("key")
	var res kvsm.Result
	if r.URL.Query().Get("stale") != "" {
		e := s.sm.Lookup(s.groupOf(key), key)
		res = kvsm.Result{OK: true, Found: e.Exists, Value: e.Value, Version: e.Version}
	} else {
		var ok bool
		if res, ok = s.run(w, r, kvsm.Op{Kind: kvsm.Get, Key: key}); !ok {
			return
		}
	}
	if !res.Found {
		writeJSON(w, http.StatusNotFound, map[string]any{"error": "not found", "version": res.Version})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"value": res.Value, "version": res.Version})
}

func (s *server) del(w http.ResponseWriter, r *http.Request) {
	res, ok := s.run(w, r, kvsm.Op{Kind: kvsm.Delete, Key: r.PathValue("key")})
	if ok {
		writeJSON(w, http.StatusOK, map[string]any{"found": res.Found, "version": res.Version})
	}
}

// run proposes op and waits for its result; on failure it has written the
// HTTP error and returns false.
func (s *server) run(w http.ResponseWriter, r *http.Request, op kvsm.Op) (kvsm.Result, bool) {
	ctx, cancel := context.WithTimeout(r.Context(), s.timeout)
	defer cancel()
	var res kvsm.Result
	_, err := s.node.Propose(ctx, s.groupOf(op.Key), op.Encode(), &paxos.SMCtx{SMID: kvsm.SMID, Ctx: &res})
	if err == nil && res.Err != nil {
		err = res.Err
	}
	if err != nil {
		writeError(w, statusOf(err), err.Error())
		return res, false
	}
	return res, true
}

func statusOf(err error) int {
	switch {
	case errors.Is(err, paxos.ErrTimeout), errors.Is(err, context.DeadlineExceeded):
		return http.StatusGatewayTimeout
	case errors.Is(err, paxos.ErrValueTooLarge):
		return http.StatusRequestEntityTooLarge
	case errors.Is(err, kvsm.ErrBadOp):
		return http.StatusBadRequest
	default:
		return http.StatusServiceUnavailable
	}
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]any{"error": msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

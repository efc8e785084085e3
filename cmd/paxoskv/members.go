package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/paxoskit/paxos"
)

// Membership administration: GET /members shows every group's newest
// configuration as this node knows it; POST /members applies one change to
// every group in turn (each group has a configuration of its own, changed
// through its own log) and reports per group.

// maxChangeBody bounds the body of POST /members.
const maxChangeBody = 64 << 10

// memberJSON is paxos.Member with JSON names.
type memberJSON struct {
	ID uint64 `json:"id"`
	// Addr is the Paxos address the configuration names: "" for a node
	// the cluster started with, reached at its address in --peers.
	Addr     string `json:"addr"`
	Follower bool   `json:"follower"`
}

// groupMembers is one group's configuration as this node knows it.
type groupMembers struct {
	Group uint64 `json:"group"`
	// Version is the instance of the change that made the configuration
	// (0: the one the group started with); From, the first instance it
	// governs.
	Version uint64 `json:"version"`
	From    uint64 `json:"from"`
	// Known is false on a node started with --join that has not learned
	// the group's configuration yet: then the rest lists the members it
	// learns from (--peers), as followers, and no voter.
	Known     bool         `json:"known"`
	Member    bool         `json:"member"` // this node is in the configuration
	Members   []memberJSON `json:"members"`
	Voters    []uint64     `json:"voters"`
	Followers []uint64     `json:"followers"`
}

// membersReply is the body of GET /members.
type membersReply struct {
	NodeID uint64         `json:"node_id"`
	Groups []groupMembers `json:"groups"`
}

func (s *server) groupMembers(g uint64, m paxos.Membership) groupMembers {
	out := groupMembers{
		Group: g, Version: m.Version, From: m.From,
		Known:     m.Known,
		Member:    m.Has(s.node.MyNodeID()),
		Members:   make([]memberJSON, 0, len(m.Members)),
		Voters:    nonNil(m.Voters()),
		Followers: nonNil(m.Followers()),
	}
	for _, mb := range m.Members {
		out.Members = append(out.Members, memberJSON{ID: mb.ID, Addr: mb.Addr, Follower: mb.Follower})
	}
	return out
}

func nonNil(ids []uint64) []uint64 {
	if ids == nil {
		return []uint64{}
	}
	return ids
}

func (s *server) members(w http.ResponseWriter, r *http.Request) {
	if _, ok := query(w, r); !ok {
		return
	}
	out := membersReply{NodeID: s.node.MyNodeID(), Groups: make([]groupMembers, 0, s.groups)}
	for g := range uint64(s.groups) {
		m, err := s.node.Membership(g)
		if err != nil {
			writeError(w, statusOf(err), err.Error())
			return
		}
		out.Groups = append(out.Groups, s.groupMembers(g, m))
	}
	writeJSON(w, http.StatusOK, out)
}

// memberChange is the body of POST /members.
type memberChange struct {
	Op   string `json:"op"`             // add, add-follower, remove, replace, promote
	ID   uint64 `json:"id"`             // the node added, removed, promoted, or put in old's place
	Addr string `json:"addr,omitempty"` // id's Paxos address (add, add-follower, replace)
	Old  uint64 `json:"old,omitempty"`  // the member replaced (replace)
}

// changeOps are the ops of POST /members and the fields each takes
// besides id.
var changeOps = map[string]struct{ addr, old bool }{
	"add":          {addr: true},
	"add-follower": {addr: true},
	"remove":       {},
	"promote":      {},
	"replace":      {addr: true, old: true},
	"move":         {addr: true},
}

// parseChange decodes and checks a POST /members body; its errors are the
// client's (400).
func parseChange(body io.Reader) (memberChange, error) {
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	var c memberChange
	if err := dec.Decode(&c); err != nil {
		return c, fmt.Errorf("bad JSON body: %w (want {\"op\": \"add\"|\"add-follower\"|\"remove\"|\"replace\"|\"promote\"|\"move\", \"id\": N, \"addr\": \"HOST:PORT\", \"old\": N})", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return c, errors.New("bad JSON body: more than one JSON value")
	}
	want, known := changeOps[c.Op]
	switch {
	case !known:
		return c, fmt.Errorf("unknown op %q: want add, add-follower, remove, replace, promote or move", c.Op)
	case c.ID == 0:
		return c, fmt.Errorf("op %s needs \"id\", a node id above 0", c.Op)
	case want.addr && c.Addr == "":
		return c, fmt.Errorf("op %s needs \"addr\", node %d's Paxos address HOST:PORT: the members reach it there", c.Op, c.ID)
	case !want.addr && c.Addr != "":
		return c, fmt.Errorf("op %s takes no \"addr\"", c.Op)
	case want.old && c.Old == 0:
		return c, fmt.Errorf("op %s needs \"old\", the id of the member replaced", c.Op)
	case !want.old && c.Old != 0:
		return c, fmt.Errorf("op %s takes no \"old\"", c.Op)
	case want.old && c.Old == c.ID:
		return c, fmt.Errorf("op %s: \"old\" and \"id\" are both %d", c.Op, c.ID)
	}
	if c.Addr != "" {
		host, port, err := net.SplitHostPort(c.Addr)
		if err != nil {
			return c, fmt.Errorf("addr %q: %v", c.Addr, err)
		}
		if p, err := strconv.ParseUint(port, 10, 16); host == "" || err != nil || p == 0 {
			return c, fmt.Errorf("addr %q: want HOST:PORT with a host and a port in 1-65535", c.Addr)
		}
	}
	return c, nil
}

// changeResult is the outcome of a change in one group: the group's
// configuration after it, as this node knows it (after a failure too),
// with the change's status and error.
type changeResult struct {
	groupMembers
	Status int    `json:"status"`
	Error  string `json:"error,omitempty"`
}

// changeReply is the body of POST /members.
type changeReply struct {
	memberChange
	Error  string         `json:"error,omitempty"` // the first group's failure
	Groups []changeResult `json:"groups"`
}

// changeMembers applies the change in the body to every group in turn,
// through any member (the library sends it to the master). It answers 200
// when every group made it, else the status of the first group that did
// not, and "error" names that group; "groups" holds every group's outcome.
// A group that fails does not stop the others: sending the same change
// again after a partial failure finishes it (the groups that made it
// refuse it then with 400, "a member already" or "not a member").
func (s *server) changeMembers(w http.ResponseWriter, r *http.Request) {
	if _, ok := query(w, r); !ok {
		return
	}
	c, err := parseChange(http.MaxBytesReader(w, r.Body, maxChangeBody))
	if err != nil {
		status := http.StatusBadRequest
		if mbe := (*http.MaxBytesError)(nil); errors.As(err, &mbe) {
			status = http.StatusRequestEntityTooLarge
		}
		writeError(w, status, err.Error())
		return
	}
	out := changeReply{memberChange: c, Groups: make([]changeResult, 0, s.groups)}
	status := http.StatusOK
	for g := range uint64(s.groups) {
		res := changeResult{Status: http.StatusOK}
		m, err := s.change(r.Context(), g, c)
		if err != nil {
			res.Status, res.Error = statusOf(err), err.Error()
			if status == http.StatusOK {
				status, out.Error = res.Status, fmt.Sprintf("group %d: %s", g, err)
			}
			// Report what this node knows now.
			if m, err = s.node.Membership(g); err != nil {
				m = paxos.Membership{}
			}
		}
		res.groupMembers = s.groupMembers(g, m)
		out.Groups = append(out.Groups, res)
	}
	writeJSON(w, status, out)
}

// change applies c to group g and waits for it, at most s.timeout.
func (s *server) change(ctx context.Context, g uint64, c memberChange) (paxos.Membership, error) {
	if m, err := s.node.Membership(g); err != nil {
		return paxos.Membership{}, err
	} else if me := s.node.MyNodeID(); !m.Has(me) {
		return paxos.Membership{}, notMember(me, g, m, "send the change to a member")
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	var m paxos.Membership
	var err error
	switch c.Op {
	case "add":
		m, err = s.node.AddMember(ctx, g, c.ID, c.Addr)
	case "add-follower":
		m, err = s.node.AddFollower(ctx, g, c.ID, c.Addr)
	case "remove":
		m, err = s.node.RemoveMember(ctx, g, c.ID)
	case "replace":
		m, err = s.node.ChangeMember(ctx, g, c.Old, c.ID, c.Addr)
	case "promote":
		m, err = s.node.PromoteFollower(ctx, g, c.ID)
	case "move":
		m, err = s.node.MoveMember(ctx, g, c.ID, c.Addr)
	default:
		err = fmt.Errorf("%w: unknown op %q", paxos.ErrInvalidMembership, c.Op)
	}
	if err == nil {
		s.awaitMembership(ctx, g, m.Version)
	}
	return m, err
}

// awaitMembership waits, for a while at most, until Membership(g) shows
// version or a newer one. A change returns once it executed here, but the
// node publishes what Membership reads only after the loop's handler ends,
// a moment later: without the wait, a GET /members right after a POST
// could show the configuration before it, and a change right after
// another would name the old version and fail with ErrConfigChanged.
func (s *server) awaitMembership(ctx context.Context, g, version uint64) {
	deadline := time.Now().Add(time.Second)
	for ctx.Err() == nil && time.Now().Before(deadline) {
		if m, err := s.node.Membership(g); err != nil || m.Version >= version {
			return
		}
		time.Sleep(time.Millisecond)
	}
}

// notMember is the error of a request this node cannot serve in group g,
// whose newest configuration it knows as m, because it is not in it.
func notMember(me, g uint64, m paxos.Membership, hint string) error {
	if len(m.Voters()) == 0 {
		return fmt.Errorf("%w: node %d joined (--join) and has not learned group %d's configuration yet; %s",
			paxos.ErrNotMember, me, g, hint)
	}
	return fmt.Errorf("%w: node %d is not in group %d's configuration (version %d: voters %v, followers %v); %s",
		paxos.ErrNotMember, me, g, m.Version, m.Voters(), nonNil(m.Followers()), hint)
}

// member reports whether this node is in group g's newest configuration
// (a voter or a follower); if not, it has written a 503: a node started
// with --join serves nothing until a member added it and it learned that,
// and a removed node serves nothing, not even stale reads of what it
// executed before its removal.
func (s *server) member(w http.ResponseWriter, g uint64) bool {
	m, err := s.node.Membership(g)
	if err == nil && m.Has(s.node.MyNodeID()) {
		return true
	}
	if err == nil {
		err = notMember(s.node.MyNodeID(), g, m, "add it with POST /members on a member")
	}
	writeError(w, statusOf(err), err.Error())
	return false
}

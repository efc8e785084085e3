package sim

import (
	"time"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	pb "github.com/paxoskit/paxos/core/paxospb"
)

type link struct{ from, to uint64 }

// send applies the network's faults to one message (m is its decoded
// form, for the checkers and the trace) and schedules what is left of it.
func (r *run) send(from, to uint64, msg []byte, m *pb.Message) {
	r.stats.Sent++
	if r.blocked[link{from, to}] > 0 {
		r.stats.PartitionDrops++
		r.traceMsg("drop(partition)", from, to, m)
		return
	}
	if r.w.chance(r.net.drop) {
		r.stats.Dropped++
		r.traceMsg("drop", from, to, m)
		return
	}
	copies := 1
	if r.w.chance(r.net.dup) {
		r.stats.Duplicated++
		copies = 2
	}
	late := r.net.late
	if m.Type == pb.MsgType_MSG_FORWARD {
		// A forward that arrives after its leader restarted and leads
		// again is the rarest path there is (seed 776): aim at it.
		late = min(20*late, 0.5)
	}
	if r.w.chance(late) {
		// A copy redelivered seconds later, longer than a leadership term.
		r.stats.LateDeliveries++
		r.w.after(r.w.between(2*time.Second, 6*time.Second), func() { r.deliver(from, to, msg, m) })
	}
	for range copies {
		d := r.w.between(r.opts.MinDelay, r.opts.MaxDelay)
		if r.w.chance(r.net.reorder) {
			r.stats.Delayed++
			d += r.w.between(0, r.opts.LongDelay)
		}
		r.w.after(d, func() { r.deliver(from, to, msg, m) })
	}
}

func (r *run) deliver(from, to uint64, msg []byte, m *pb.Message) {
	n := r.nodes[to-1]
	if !n.up || n.env.closed || r.blocked[link{from, to}] > 0 {
		r.stats.PartitionDrops++
		return
	}
	// A paused process finds the message in its socket when it resumes.
	e := n.env
	e.onLoop(func() {
		if e.closed {
			r.stats.PartitionDrops++
			return
		}
		r.stats.Delivered++
		r.traceMsg("recv", from, to, m)
		r.noteDelivered(n, m)
		r.noteRoundDelivered(n, m)
		e.recv(msg)
	})
}

func (r *run) traceMsg(what string, from, to uint64, m *pb.Message) {
	if r.w.trace == nil {
		return
	}
	r.w.tracef("%s %d->%d g%d %v b=%d.%d i=%d n=%d up=%d", what, from, to, m.Group,
		m.Type, m.GetBallot().GetCounter(), m.GetBallot().GetNode(), m.Instance,
		len(m.Entries)+len(m.Instances)+len(m.Values), m.ChosenUpto)
}

// partition cuts links for a while: either the cluster splits in two, or
// one direction of one link fails.
func (r *run) partition() {
	var links []link
	if r.w.chance(0.5) {
		side := make([]bool, len(r.nodes))
		cut := 1 + r.w.rng.IntN(len(r.nodes)-1)
		for _, i := range r.w.rng.Perm(len(r.nodes))[:cut] {
			side[i] = true
		}
		for i, a := range r.nodes {
			for j, b := range r.nodes {
				if side[i] != side[j] {
					links = append(links, link{a.id, b.id})
				}
			}
		}
	} else {
		p := r.w.rng.Perm(len(r.nodes))
		links = append(links, link{r.nodes[p[0]].id, r.nodes[p[1]].id})
	}
	r.stats.Partitions++
	r.w.tracef("partition %v", links)
	r.cut(links, r.w.between(r.opts.MaxDelay, 3*r.opts.MaxDown/2+100*r.opts.MaxDelay))
}

// cut blocks links for d. A heal in between repairs every link at once;
// the cut's own repair then has nothing left to undo.
func (r *run) cut(links []link, d time.Duration) {
	for _, l := range links {
		r.blocked[l]++
	}
	epoch := r.netEpoch
	r.w.after(d, func() {
		if r.netEpoch != epoch {
			return
		}
		for _, l := range links {
			if r.blocked[l] > 0 {
				r.blocked[l]--
			}
		}
		r.w.tracef("repaired %v", links)
	})
}

// decode returns what the checkers need of a message: all of it for the
// types they look into (and for every message when tracing), only its type
// for the others (chosen values, learn traffic, forwards, rejects), which
// saves decoding the largest messages twice. nil if it does not decode.
func (r *run) decode(msg []byte) *pb.Message {
	t := peekType(msg)
	switch t {
	case pb.MsgType_MSG_PREPARE, pb.MsgType_MSG_PROMISE, pb.MsgType_MSG_ACCEPT,
		pb.MsgType_MSG_ACCEPTED, pb.MsgType_MSG_HEARTBEAT, pb.MsgType_MSG_HEARTBEAT_ACK,
		pb.MsgType_MSG_READ_INDEX, pb.MsgType_MSG_READ_INDEX_RESP:
	default:
		if r.w.trace == nil && t != pb.MsgType_MSG_UNKNOWN {
			return &pb.Message{Type: t}
		}
	}
	m := &pb.Message{}
	if proto.Unmarshal(msg, m) != nil {
		return nil
	}
	return m
}

// peekType reads a message's type, its field 1, which the encoder writes
// first; MSG_UNKNOWN if it is not there.
func peekType(msg []byte) pb.MsgType {
	num, typ, n := protowire.ConsumeTag(msg)
	if n < 0 || num != 1 || typ != protowire.VarintType {
		return pb.MsgType_MSG_UNKNOWN
	}
	v, m := protowire.ConsumeVarint(msg[n:])
	if m < 0 {
		return pb.MsgType_MSG_UNKNOWN
	}
	return pb.MsgType(v)
}

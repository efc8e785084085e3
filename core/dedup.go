package core

import pb "github.com/paxoskit/paxos/core/paxospb"

// dedupWindow is how far below the newest sequence number a forwarded
// proposal may arrive and still be accepted.
const dedupWindow = 4096

type origin struct{ node, boot uint64 }

// seenWindow remembers which recent sequence numbers of one origin arrived.
type seenWindow struct {
	high uint64
	seen map[uint64]struct{}
}

// firstSight reports whether a forwarded value is new here. The network may
// duplicate a forward; proposing the copy too would choose the value twice.
func (c *Core) firstSight(v *pb.Value) bool {
	o := origin{v.Node, v.Boot}
	w := c.fwdSeen[o]
	if w == nil {
		w = &seenWindow{seen: map[uint64]struct{}{}}
		c.fwdSeen[o] = w
	}
	if v.Seq+dedupWindow <= w.high {
		return false // too old to tell; dropping is safe, the proposer times out
	}
	if _, dup := w.seen[v.Seq]; dup {
		return false
	}
	w.seen[v.Seq] = struct{}{}
	if v.Seq > w.high {
		w.high = v.Seq
		if len(w.seen) > 2*dedupWindow {
			for s := range w.seen {
				if s+dedupWindow <= w.high {
					delete(w.seen, s)
				}
			}
		}
	}
	return true
}

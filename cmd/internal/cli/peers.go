// Package cli holds flag parsing and small helpers shared by the sample
// commands.
package cli

import (
	"fmt"
	"net"
	"sort"
	"strconv"
	"strings"
)

// ParsePeers parses "1=host:port,2=host:port" into node id -> address.
func ParsePeers(s string) (map[uint64]string, error) {
	peers := map[uint64]string{}
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		id, addr, ok := strings.Cut(part, "=")
		if !ok {
			return nil, fmt.Errorf("peer %q: want ID=HOST:PORT", part)
		}
		n, err := strconv.ParseUint(id, 10, 64)
		if err != nil || n == 0 {
			return nil, fmt.Errorf("peer %q: node id must be a positive integer", part)
		}
		if _, dup := peers[n]; dup {
			return nil, fmt.Errorf("peer id %d given twice", n)
		}
		peers[n] = addr
	}
	if len(peers) == 0 {
		return nil, fmt.Errorf("no peers")
	}
	return peers, nil
}

// FormatPeers is the inverse of ParsePeers, in id order.
func FormatPeers(peers map[uint64]string) string {
	ids := make([]uint64, 0, len(peers))
	for id := range peers {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	parts := make([]string, len(ids))
	for i, id := range ids {
		parts[i] = fmt.Sprintf("%d=%s", id, peers[id])
	}
	return strings.Join(parts, ",")
}

// FreePorts reserves n loopback ports by binding and releasing them.
func FreePorts(n int) ([]int, error) {
	var ports []int
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		defer ln.Close()
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

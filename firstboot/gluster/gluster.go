// Package gluster forms and keeps the replicated GlusterFS volume `data` on every node: the trusted pool, the
// volume and its options, a node's place in the pool across reimages and recoveries, and the /var/data
// mount. It observes glusterd through its CLI, decides in pure plans, and acts; glusterd's files it changes
// behind glusterd's back are in package glusterd.
package gluster

import (
	"net/netip"
	"path/filepath"
	"slices"
	"strings"

	"github.com/kiln-project/kiln/firstboot/member"
	"github.com/kiln-project/kiln/firstboot/state"
)

// The volume, its bricks and its mount (docs/design.md: /var/data on every node, bricks on the state partition).
const (
	VolumeName = "data"
	BrickPath  = "/var/lib/kiln/bricks/data/brick"
	MountPoint = "/var/data"
	// MountUnit is the unit name systemd derives from MountPoint; UnitPath is where the agent writes it
	// (/run: regenerated every boot, nothing to clean up on a read-only root).
	MountUnit = "var-data.mount"
	UnitPath  = "/run/systemd/system/var-data.mount"
)

// FullHealOwedFile marks a prepared brick that still needs its full heal; it sits beside the brick so
// it goes with it (a new brick disk starts without it and is prepared again).
var FullHealOwedFile = filepath.Join(filepath.Dir(BrickPath), "full-heal-owed")

// Options are the volume options kiln sets; docs/cluster-services.md gives the reasons. auth.allow names the
// member addresses of state.PeerAddrs: every member that has not departed, alive or not, and every recorded
// address, so a node that has just booted (after a power cut, say) and sees no peer yet does not narrow it to
// itself, which would lock every other client out of its brick.
func Options(peers []netip.Addr) map[string]string {
	allow := []string{"127.0.0.1"}
	for _, a := range peers {
		allow = append(allow, a.String())
	}
	return map[string]string{
		// Client quorum: writes need 2 of 3 bricks, so a partitioned minority cannot diverge (split-brain).
		"cluster.quorum-type": "auto",
		// Server quorum: glusterd stops its bricks when it sees less than the ratio (set on "all") of the pool.
		"cluster.server-quorum-type": "server",
		// 5 s instead of 42 s: I/O on the survivors stalls this long after a node dies uncleanly.
		"network.ping-timeout": "5",
		// Only members (and local mounts) may talk to the bricks.
		"auth.allow": strings.Join(allow, ","),
	}
}

// SSLAllow is the volume option listing the certificate names (node ids) whose clients the bricks accept.
const SSLAllow = "auth.ssl-allow"

// TLSOptions are the volume options of a cluster with a storage CA: TLS on the I/O path of every client and
// brick, and SSLAllow naming the node ids let in. The list is what the volume has (cur) plus self and every
// member that has not departed, minus the departed: a member's certificate is let in as long as its address
// is (state.PeerAddrs), and a node that has just booted and sees no peer yet never narrows the list to
// itself, which would lock every other client out of the bricks.
func TLSOptions(cur string, members []member.Member, self member.Member) map[string]string {
	ids := map[string]bool{}
	for _, id := range strings.Split(cur, ",") {
		if id = strings.TrimSpace(id); id != "" {
			ids[id] = true
		}
	}
	for _, m := range members {
		if m.ID != "" {
			ids[m.ID] = !m.Departed
		}
	}
	if self.ID != "" {
		ids[self.ID] = true
	}
	var allow []string
	for id, ok := range ids {
		if ok {
			allow = append(allow, id)
		}
	}
	slices.Sort(allow)
	return map[string]string{"client.ssl": "on", "server.ssl": "on", SSLAllow: strings.Join(allow, ",")}
}

// Option is one volume option.
type Option struct{ Key, Value string }

// ClusterOptions are set on the pseudo-volume "all".
var ClusterOptions = map[string]string{"cluster.server-quorum-ratio": "51%"}

func aliveMembers(s *state.State) []member.Member {
	var out []member.Member
	seenSelf := false
	for _, m := range s.Members {
		if m.ID == s.Self.ID {
			seenSelf = true
			out = append(out, s.Self) // self is alive by definition
			continue
		}
		if m.Alive && m.Addr.IsValid() {
			out = append(out, m)
		}
	}
	if !seenSelf && s.Self.ID != "" {
		out = append(out, s.Self)
	}
	slices.SortFunc(out, func(a, b member.Member) int { return strings.Compare(a.ID, b.ID) })
	return out
}

func findPeer(peers []Peer, addr netip.Addr) *Peer {
	for i, p := range peers {
		if slices.Contains(p.Names(), addr.String()) {
			return &peers[i]
		}
	}
	return nil
}

func findPeerName(peers []Peer, host string) *Peer {
	for i, p := range peers {
		if slices.Contains(p.Names(), host) {
			return &peers[i]
		}
	}
	return nil
}

func addrs(members []member.Member) []netip.Addr {
	var out []netip.Addr
	for _, m := range members {
		if m.Addr.IsValid() {
			out = append(out, m.Addr.Unmap())
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return slices.Compact(out)
}

func sortedKeys(m map[string]string) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

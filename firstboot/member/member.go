// Package member holds the cluster membership as the agent sees it: plain data shared by every reconciler.
package member

import (
	"net/netip"
	"time"
)

// Member is one node of the cluster.
type Member struct {
	// ID is the node's stable id (from SMBIOS UUID or MAC), lower-case hex; the sort key for rank and election.
	ID string `json:"id"`
	// Hostname is the node's (identity.Get): kiln-<first 8 hex of sha256(ID)>, or the instance id on EC2.
	Hostname string `json:"hostname"`
	// Addr is the node's address on the cluster interface.
	Addr netip.Addr `json:"addr"`
	// Alive reports whether failure detection currently sees the node.
	Alive bool `json:"alive"`
	// DownSince is when failure detection last saw the node go (zero while it is alive, and for a member
	// this agent has not seen since it started). recover uses it to refuse removing a member seen recently.
	DownSince time.Time `json:"down_since,omitzero"`
	// Departed: the member has been gone (DownSince) for the cluster's replaceAfter or longer, as this agent
	// saw it. Its address loses the trust membership gave it (firewall, auth.allow, VRRP peers: state.PeerAddrs)
	// until discovery, authenticated by the cluster key, sees it alive again.
	Departed bool `json:"departed,omitempty"`
	// SwarmNode is the swarm node ID the member last reported for itself (gossiped metadata): "" unknown
	// (not reported yet), NoSwarmNode when its dockerd is in no swarm. A swarm entry with the member's
	// hostname but another ID is a stale leftover (the member was reimaged), never the member itself.
	SwarmNode string `json:"swarm_node,omitempty"`
	// GlusterEpoch is the formation epoch the member's glusterd state belongs to, as it last reported
	// (gossiped metadata): "" unknown, FreshGluster for a glusterd in no pool, else the epoch in decimal. The
	// gluster coordinator probes only fresh members and members of the record's epoch: probing a glusterd
	// still holding a pool from before a `recover` leaves a second entry for its address in the recovered
	// pool, and every add-brick fails while it is there.
	GlusterEpoch string `json:"gluster_epoch,omitempty"`
	// StorageTLS: the member's glusterd speaks TLS (gossiped metadata). In a cluster with a storage CA the
	// gluster coordinator probes only such members: a probe of a glusterd still in plaintext fails.
	StorageTLS bool `json:"storage_tls,omitempty"`
	// NoBrick: the member never holds a gluster brick (gossiped metadata); it mounts the volume like every
	// member. A node with /var in RAM says so: a brick there would be gone at its next reboot.
	NoBrick bool `json:"no_brick,omitempty"`
	// StateInRAM: the member keeps nothing across a reboot (/var on tmpfs; gossiped metadata), so it casts no
	// vote in the election: a vote it forgot could elect a second initialiser.
	StateInRAM bool `json:"state_in_ram,omitempty"`
}

// LostFor is how long a member must have been gone before `kiln-firstboot recover` may remove it for good: a
// node cut off by a flapping link or a rebooting switch is back within minutes, and the survivor of a
// partition must not throw it (and perhaps a healthy majority behind it) away.
const LostFor = 5 * time.Minute

// FreshGluster is GlusterEpoch for a member whose glusterd has no peer: probing it cannot merge two pools.
const FreshGluster = "fresh"

// NoSwarmNode is SwarmNode for a member that observed itself in no swarm (inactive): unlike "", it is a
// statement, so a leftover swarm entry with its hostname can be recognised as stale.
const NoSwarmNode = "-"

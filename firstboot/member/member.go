// Package member holds the cluster membership as the agent sees it: plain data shared by every reconciler.
package member

import "net/netip"

// Member is one node of the cluster.
type Member struct {
	// ID is the node's stable id (from SMBIOS UUID or MAC), lower-case hex; the sort key for rank and election.
	ID string `json:"id"`
	// Hostname is derived from ID (identity.HostnameFor: kiln-<first 8 hex of sha256(ID)>).
	Hostname string `json:"hostname"`
	// Addr is the node's address on the cluster interface.
	Addr netip.Addr `json:"addr"`
	// Alive reports whether failure detection currently sees the node.
	Alive bool `json:"alive"`
	// SwarmNode is the swarm node ID the member last reported for itself (gossiped metadata): "" unknown
	// (not reported yet), NoSwarmNode when its dockerd is in no swarm. A swarm entry with the member's
	// hostname but another ID is a stale leftover (the member was reimaged), never the member itself.
	SwarmNode string `json:"swarmNode,omitempty"`
}

// NoSwarmNode is SwarmNode for a member that observed itself in no swarm (inactive): unlike "", it is a
// statement, so a leftover swarm entry with its hostname can be recognised as stale.
const NoSwarmNode = "-"

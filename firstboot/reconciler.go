// Package firstboot is the node agent: it runs reconcilers that turn the cluster config and the observed
// membership into a formed cluster (swarm, gluster, VIP, firewall), and keeps them converged.
package firstboot

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"time"

	"github.com/kiln-project/kiln/firstboot/member"
)

// Reconciler converges one part of the node towards what the cluster state asks for.
// Reconcile observes, compares with the desired state, and acts; it must be idempotent and safe to
// interrupt at any point (a crash mid-way and a re-run must converge). It reports whether it changed anything.
type Reconciler interface {
	Name() string
	Reconcile(ctx context.Context, s *State) (changed bool, err error)
}

// State is the agent's view of the world, rebuilt every pass by the agent loop before reconcilers run.
type State struct {
	// Self is this node.
	Self member.Member
	// Members are all known members, self included, sorted by ID. Alive tells who failure detection sees now.
	Members []member.Member
	// Expected is the cluster's expected size (config cluster.size).
	Expected int
	// ClusterName and VIP come from the cluster config.
	ClusterName string
	VIP         netip.Prefix
	// Interface is the cluster interface name; Subnet its IPv4 network.
	Interface string
	Subnet    netip.Prefix
	// Formation is the agreed formation record once one exists: who initialised, and the swarm join
	// material (only ever carried over the encrypted membership channel).
	Formation *Formation
	// Initialiser reports whether this node won the right to initialise (election granted by a majority).
	Initialiser bool
	// Status collects what reconcilers report, for `kiln-firstboot status`.
	Status map[string]string
	// Pending is output: a reconciler that is not done but not failing either (waiting for the swarm, for
	// a volume another node creates) names what it waits for, so the node does not report ready meanwhile.
	// (A gluster reconciler waiting for its volume once returned no error and no change, and the node
	// reported ready minutes before /var/data was mounted.)
	Pending map[string]string
	// ReplaceAfter is how long a member must be gone before an alive newcomer may take its place
	// (config cluster.replaceAfter).
	ReplaceAfter time.Duration
	// LocalEpoch is the formation epoch this node was last ready in (persisted by the agent). When the
	// record's Epoch is higher, the cluster was recovered (`kiln-firstboot recover --force-new-cluster`)
	// while this node was away: its old swarm and gluster state must not fight the new cluster.
	LocalEpoch int

	// Announce is output: set by the swarm reconciler on a node that is an active swarm manager, it is the
	// formation record this node can vouch for right now (swarm id, current join tokens, reachable manager
	// addresses; Initialiser copied from Formation, or this node after it ran swarm init). nil when this node
	// cannot vouch for one. The agent broadcasts it when it differs from Formation (e.g. right after init, or
	// when the manager set changed), so joiners never depend on one fixed seed.
	Announce *Formation
	// SwarmActive is output: set by the swarm reconciler when this node is verified as a ready swarm member
	// (the gluster reconciler waits for it before probing peers, so storage forms after the swarm).
	SwarmActive bool
	// SwarmNode is output: this node's swarm node ID as the swarm reconciler observed it this pass
	// (member.NoSwarmNode when inactive, "" when dockerd did not answer). The agent gossips it, so managers
	// can tell this node's live entry from a stale one left by a previous install on the same machine.
	SwarmNode string
	// GlusterEpoch is output: the epoch this node's glusterd state belongs to, as the gluster reconciler
	// observed it this pass ("" when glusterd did not answer). The agent gossips it (member.GlusterEpoch).
	GlusterEpoch string
}

// Wait records that reconciler name is not done and what it waits for (State.Pending); the same text goes to
// its status line.
func (s *State) Wait(name, what string) {
	if s.Pending == nil {
		s.Pending = map[string]string{}
	}
	if s.Status == nil {
		s.Status = map[string]string{}
	}
	s.Pending[name], s.Status[name] = what, what
}

// Formation is what the initialiser announces once the swarm exists.
type Formation struct {
	// SwarmID is the swarm cluster id; a node that sees a different one never joins it.
	SwarmID string `json:"swarmID"`
	// Initialiser is the node id that ran swarm init.
	Initialiser string `json:"initialiser"`
	// ManagerToken and WorkerToken are the swarm join tokens (secret).
	ManagerToken string `json:"managerToken"`
	WorkerToken  string `json:"workerToken"`
	// ManagerAddrs are addresses of reachable managers (host:2377).
	ManagerAddrs []string `json:"managerAddrs"`
	// Managers is how many manager entries the swarm's node list holds, reachable or not (raft members). A
	// joiner becomes a manager only while this is below the cluster's manager seats, so a dead manager is
	// removed before its successor is added (adding first would raise the quorum with a dead member inside).
	Managers int `json:"managers,omitempty"`
	// GlusterPeers maps a node address to the glusterd UUID the trusted pool knows it by. A reimaged node
	// (same machine and address, empty /var) adopts its old UUID from here before its glusterd joins, so
	// the pool takes it back in place instead of rejecting a stranger with a known address.
	GlusterPeers map[string]string `json:"glusterPeers,omitempty"`
	// Epoch counts forced recoveries of this cluster (0 until the first). Nodes from an older epoch start
	// over (swarm leave, fresh glusterd) instead of bringing back the old majority's state.
	Epoch int `json:"epoch,omitempty"`
}

// RecordedAddrs are the member addresses the formation record holds (the gluster pool and the swarm managers),
// sorted and unique. Right after a boot discovery sees no peer yet, but the record, kept under /var/lib/kiln,
// still names them: rules rendered from membership (firewall, auth.allow, VRRP peers) add these so they never
// shut out the members a node is about to find again. A removed member leaves the record, and so these.
func (s *State) RecordedAddrs() []netip.Addr {
	if s.Formation == nil {
		return nil
	}
	var out []netip.Addr
	add := func(host string) {
		if a, err := netip.ParseAddr(host); err == nil {
			out = append(out, a.Unmap())
		}
	}
	for a := range s.Formation.GlusterPeers {
		add(a)
	}
	for _, hp := range s.Formation.ManagerAddrs {
		if host, _, err := net.SplitHostPort(hp); err == nil {
			add(host)
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return slices.Compact(out)
}

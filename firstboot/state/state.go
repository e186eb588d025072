// Package state is the contract between the node agent and its reconcilers: what a pass gives every
// reconciler to read (Inputs, the membership), what each reconciler may write (its own typed output and its
// report line), and the order a pass runs them in (Pass). The agent owns the loop; reconcilers import only
// this package, never the agent.
package state

import (
	"context"
	"maps"
	"net"
	"net/netip"
	"slices"
	"time"

	"github.com/kiln-project/kiln/firstboot/glustertls"
	"github.com/kiln-project/kiln/firstboot/member"
)

// Reconciler converges one part of the node towards what the State asks for. Reconcile observes, compares
// with the desired state and acts; it must be idempotent and safe to interrupt at any point (a crash
// mid-way and a re-run converge). It reports whether it changed anything. It reads Inputs and Observed,
// writes only its own output field and its Report line, and keeps nothing across passes that it cannot
// lose: whatever a restarted agent must know again is persisted or re-observable.
type Reconciler interface {
	Name() string
	Reconcile(ctx context.Context, s *State) (changed bool, err error)
}

// State is one pass's view of the world. The agent builds it afresh before each pass from its config,
// election and persisted formation record (Inputs, which reconcilers never change: they get copies), and
// refreshes Observed before each reconciler. Outputs start zero every pass.
type State struct {
	Inputs
	Observed

	// Swarm is written by the swarm reconciler only.
	Swarm SwarmOutput
	// Gluster is written by the gluster reconciler only.
	Gluster GlusterOutput
	// Report collects every reconciler's status line and what it waits for.
	Report
}

// Inputs are what the agent knows before a pass starts: the cluster config, the election's outcome, the
// adopted formation record and this node's persisted epoch.
type Inputs struct {
	// Expected is the cluster's expected size (config cluster.size).
	Expected int
	// ClusterName and VIP come from the cluster config.
	ClusterName string
	VIP         netip.Prefix
	// Interface is the cluster interface name; Subnet its IPv4 network.
	Interface string
	Subnet    netip.Prefix
	// ReplaceAfter is how long a member must be gone before an alive newcomer may take its place
	// (config cluster.replaceAfter).
	ReplaceAfter time.Duration
	// Formation is the agreed formation record once one exists: who initialised, and the swarm join
	// material (only ever carried over the encrypted membership channel). nil before formation.
	Formation *Formation
	// Initialiser reports whether this node won the right to initialise (election granted by a majority).
	Initialiser bool
	// NoBrick says why this node holds no gluster brick ("" when it may hold one); the agent publishes the same
	// fact as member.NoBrick, which is what placement reads for every member.
	NoBrick string
	// LocalEpoch is the formation epoch this node was last ready in (persisted by the agent). When the
	// record's Epoch is higher, the cluster was recovered (`kiln-firstboot recover --force-new-cluster`)
	// while this node was away: its old swarm and gluster state must not fight the new cluster.
	LocalEpoch int
}

// Observed is the membership as discovery sees it. The agent refreshes it before each reconciler, not once
// per pass: a reconciler can take minutes on a loaded node, and right after a boot the pass starts seeing
// only this node; VRRP peers rendered from that stale view would let keepalived claim the VIP beside its
// holder.
type Observed struct {
	// Self is this node.
	Self member.Member
	// Members are all known members, self included, sorted by ID. Alive tells who failure detection sees now.
	Members []member.Member
}

// SwarmOutput is what the swarm reconciler learned this pass, for the agent and for the reconcilers after it.
type SwarmOutput struct {
	// Active is set when this node is verified as a ready swarm member. Gluster waits for it (see Pass).
	Active bool
	// Node is this node's swarm node ID as observed this pass (member.NoSwarmNode when inactive, "" when
	// dockerd did not answer). The agent gossips it, so managers can tell this node's live entry from a stale
	// one left by a previous install on the same machine.
	Node string
	// Leader is set when this node is the swarm's raft leader in the node list it verified this pass: the one
	// manager that deploys stacks, so managers never race on one service's version.
	Leader bool
	// Announce is set on a node that is an active swarm manager: the formation record this node can vouch for
	// right now (swarm id, current join tokens, reachable manager addresses; Initialiser copied from
	// Formation, or this node after it ran swarm init). nil when this node cannot vouch for one. The agent
	// broadcasts it when it differs from Formation (right after init, or when the manager set changed), so
	// joiners never depend on one fixed seed.
	Announce *Formation
}

// GlusterOutput is what the gluster reconciler learned this pass.
type GlusterOutput struct {
	// Epoch is the epoch this node's glusterd state belongs to ("" when glusterd did not answer). The agent
	// gossips it (member.GlusterEpoch).
	Epoch string
	// PoolUUIDs maps member addresses to the glusterd UUIDs the trusted pool knows them by, as the
	// coordinator observed it (nil when not observed). The agent puts it into the formation record it
	// announces (Formation.GlusterPeers), so a reimaged node can take its old UUID back.
	PoolUUIDs map[string]string
	// TLS is set once this node's glusterd runs with storage TLS (the record's StorageCA). The agent gossips it
	// (member.StorageTLS); it stays on for the install.
	TLS bool
}

// Report is what reconcilers say about themselves, for `kiln-firstboot status` and the node's phase.
type Report struct {
	// Status holds each reconciler's one-line report by name.
	Status map[string]string
	// Pending names, per reconciler, what it waits for: not done but not failing either (waiting for the
	// swarm, for a volume another node creates). A node with anything pending does not report ready, since a
	// reconciler that waits returns no error and no change.
	Pending map[string]string
}

// Set records reconciler name's status line.
func (r *Report) Set(name, line string) {
	if r.Status == nil {
		r.Status = map[string]string{}
	}
	r.Status[name] = line
}

// Wait records that reconciler name is not done and what it waits for; the same text is its status line.
func (r *Report) Wait(name, what string) {
	if r.Pending == nil {
		r.Pending = map[string]string{}
	}
	r.Pending[name] = what
	r.Set(name, what)
}

// Formation is what the initialiser announces once the swarm exists, and every member adopts and keeps
// (persisted under /var/lib/kiln).
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
	// RaftMembers is how many entries are raft members (have a manager status), reachable or not: what raft's
	// quorum counts. Entries of joins that never registered hold a seat (Managers) but no raft vote.
	RaftMembers int `json:"raftMembers,omitempty"`
	// GlusterPeers maps a node address to the glusterd UUID the trusted pool knows it by. A reimaged node
	// (same machine and address, empty /var) adopts its old UUID from here before its glusterd joins, so
	// the pool takes it back in place instead of rejecting a stranger with a known address.
	GlusterPeers map[string]string `json:"glusterPeers,omitempty"`
	// Epoch counts forced recoveries of this cluster (0 until the first). Nodes from an older epoch start
	// over (swarm leave, fresh glusterd) instead of bringing back the old majority's state.
	Epoch int `json:"epoch,omitempty"`
	// StorageCA is the cluster's storage CA (certificate and key), made by the initialiser when it creates the
	// record and never changed afterwards, recoveries included: every node issues its own gluster certificate
	// from it. nil in a cluster formed by an agent from before storage TLS; that cluster's storage stays
	// plaintext (docs/security.md).
	StorageCA *glustertls.CA `json:"storageCA,omitempty"`
}

// Clone returns a deep copy, so a reconciler that changes its Formation never changes the agent's record.
func (f *Formation) Clone() *Formation {
	if f == nil {
		return nil
	}
	c := *f
	c.ManagerAddrs = slices.Clone(f.ManagerAddrs)
	c.GlusterPeers = maps.Clone(f.GlusterPeers)
	if f.StorageCA != nil {
		ca := *f.StorageCA
		c.StorageCA = &ca
	}
	return &c
}

// PeerAddrs are the addresses that rules rendered from membership let in as members (the firewall's member
// sets, gluster's auth.allow, keepalived's unicast peers), sorted and unique: this node's, every member's that
// has not departed (member.Departed: gone for replaceAfter or longer), and the formation record's
// (RecordedAddrs) unless a departed member had it. A departed member is replaced in the swarm and the volume,
// and a device that later gets its address from DHCP must not inherit its trust; if it comes back, discovery
// (authenticated by the cluster key) sees it alive and its address is let in again. An address an alive
// member holds stays whoever else had it.
func (s *State) PeerAddrs() []netip.Addr {
	var out, departed []netip.Addr
	if s.Self.Addr.IsValid() {
		out = append(out, s.Self.Addr.Unmap())
	}
	for _, m := range s.Members {
		switch {
		case !m.Addr.IsValid():
		case m.Departed:
			departed = append(departed, m.Addr.Unmap())
		default:
			out = append(out, m.Addr.Unmap())
		}
	}
	for _, a := range s.RecordedAddrs() {
		if !slices.Contains(departed, a) {
			out = append(out, a)
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return slices.Compact(out)
}

// RecordedAddrs are the member addresses the formation record holds (the gluster pool and the swarm managers),
// sorted and unique. Right after a boot discovery sees no peer yet, but the record, kept under /var/lib/kiln,
// still names them: rules rendered from membership (firewall, auth.allow, VRRP peers) add these so they never
// shut out the members a node is about to find again. A removed member leaves the record, and so these.
func (in *Inputs) RecordedAddrs() []netip.Addr {
	if in.Formation == nil {
		return nil
	}
	var out []netip.Addr
	add := func(host string) {
		if a, err := netip.ParseAddr(host); err == nil {
			out = append(out, a.Unmap())
		}
	}
	for a := range in.Formation.GlusterPeers {
		add(a)
	}
	for _, hp := range in.Formation.ManagerAddrs {
		if host, _, err := net.SplitHostPort(hp); err == nil {
			add(host)
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return slices.Compact(out)
}

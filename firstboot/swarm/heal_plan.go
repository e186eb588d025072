package swarm

import (
	"cmp"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/docker/docker/api/types/swarm"

	"github.com/kiln-project/kiln/firstboot/member"
)

// Seats is how many managers a cluster of the expected size keeps: the expected size capped at MaxManagers,
// rounded down to an odd number (4 managers tolerate one failure, like 3, with more raft traffic; 2 tolerate
// none, like 1, and lose quorum with either). Members beyond the seats are workers.
func Seats(expected int) int {
	n := min(max(expected, 1), MaxManagers)
	if n%2 == 0 {
		n--
	}
	return n
}

// JoinRole is the role a node joins with: a manager only when its rank (among all known members) is within
// the seats and the formation says a seat is free. A node joining while every seat is taken — a reimaged
// node whose stale entry still holds its seat, a newcomer while the dead member it replaces is still in
// raft — joins as a worker; the leader promotes it once the old entry is gone. So raft never grows beyond
// the seats with a dead member inside (moby#34722; etcd's "remove first, then add").
//
// formationManagers is the formation record's manager count; 0 means unknown (a record from before the
// count existed) and leaves the decision to rank alone.
func JoinRole(self string, members []member.Member, expected, formationManagers int) swarm.NodeRole {
	if Role(self, members, expected) != swarm.NodeRoleManager {
		return swarm.NodeRoleWorker
	}
	if formationManagers > 0 && formationManagers >= Seats(expected) {
		return swarm.NodeRoleWorker
	}
	return swarm.NodeRoleManager
}

// CleanupKind is one corrective step on another node's swarm entry.
type CleanupKind string

const (
	// Demote turns a manager entry into a worker (swarm removes it from raft); removal must wait for that.
	Demote CleanupKind = "demote"
	// Remove deletes a worker entry (`node rm --force`).
	Remove CleanupKind = "remove"
)

// Cleanup is one step with the reason that is logged and shown in status.
type Cleanup struct {
	Kind     CleanupKind
	Node     swarm.Node
	Hostname string
	Reason   string
	// Departed: the entry's machine is gone for good (no alive member has its hostname), so once its entry is
	// removed the join tokens it knew are rotated: a lost or stolen machine must not be able to join again.
	Departed bool
}

func (c Cleanup) String() string {
	return fmt.Sprintf("%s %s (hostname %s): %s", c.Kind, c.Node.ID, c.Hostname, c.Reason)
}

// CleanupInput is what the leader observed.
type CleanupInput struct {
	Self    string // the leader's own node ID: never touched
	Nodes   []swarm.Node
	Members []member.Member
	// DownSince is when the leader first saw each node Down, or, for an entry that never registered, not
	// Ready (timed); in memory: a restarted agent starts the grace period again, which only delays a
	// replacement.
	DownSince    map[string]time.Time
	Now          time.Time
	ReplaceAfter time.Duration
	Expected     int
}

// PlanCleanup is the pure decision behind self-healing of the node list, run on the leader:
//
//   - stale entry: its hostname belongs to an alive member that reports another swarm node ID (or none),
//     and the entry is Down and, for a manager, unreachable: the member was reimaged and this entry is its
//     previous install. It goes at once.
//   - gone for good: Down for ReplaceAfter and no alive member has its hostname. A worker entry goes; a
//     manager entry only when an alive member waits as a Ready worker for the seat (remove first, then the
//     leader promotes the newcomer): removing it without a successor gains nothing.
//
// A manager is first demoted (swarm then takes it out of raft), and removed in a later pass once it has no
// manager status left. At most one demotion per pass, and never one that would leave the reachable managers
// without a majority of the remaining raft members. Members whose swarm node is unknown ("") are never
// judged: a node that just booted has not reported yet.
func PlanCleanup(in CleanupInput) []Cleanup {
	alive := map[string]member.Member{}
	claimed := map[string]bool{} // swarm node IDs alive members report as their own
	for _, m := range in.Members {
		if m.Alive && m.Hostname != "" {
			alive[m.Hostname] = m
		}
		if m.Alive && m.SwarmNode != "" && m.SwarmNode != member.NoSwarmNode {
			claimed[m.SwarmNode] = true
		}
	}
	managers, reachable := 0, 0
	for _, n := range in.Nodes {
		if n.ManagerStatus != nil {
			managers++
			if n.ManagerStatus.Reachability == swarm.ReachabilityReachable {
				reachable++
			}
		}
	}
	waiting := len(candidates(in.Nodes, in.Members)) > 0
	var out []Cleanup
	demoted := false
	for _, n := range in.Nodes {
		if n.ID == in.Self || n.Status.State == swarm.NodeStateReady {
			continue
		}
		host := n.Description.Hostname
		var reason string
		departed := false
		if m, ok := alive[host]; ok {
			if m.SwarmNode == "" || m.SwarmNode == n.ID {
				continue // the member itself (rebooting), or not reported yet
			}
			if n.Status.State != swarm.NodeStateDown || (n.ManagerStatus != nil && n.ManagerStatus.Reachability == swarm.ReachabilityReachable) {
				// Gossip can lag the swarm: the initialiser, busy right after `swarm init`, may still advertise
				// "no swarm node" when a joiner becomes leader and sees its entry in state unknown; removing
				// every entry that is not Ready would then remove the swarm's founder. A reimaged machine's old
				// dockerd is gone for good, so its entry goes Down and unreachable: wait for that.
				continue
			}
			if since, ok := in.DownSince[n.ID]; m.SwarmNode == member.NoSwarmNode && (!ok || in.Now.Sub(since) < reimageGrace) {
				// "In no swarm" can be stale too: a loaded joiner whose join completed after its call timed out,
				// its entry Down between heartbeats, reports its swarm node only once it observes it.
				continue
			}
			reason = fmt.Sprintf("stale entry: member %s with this hostname is alive as swarm node %s (reimaged)", m.ID, m.SwarmNode)
		} else if host == "" && claimed[n.ID] {
			// An entry that never registered, but an alive member reports it as its own swarm node: its join
			// is slow (a loaded machine), not failed. Removed, it would leave that node believing it is an
			// active worker of a swarm that no longer knows it ("node not found" on every session), and
			// waiting for a promotion that cannot come.
			continue
		} else if host == "" {
			// A join that never completed: swarm created the entry (and, for a manager join, its seat in the
			// spec) when it issued the certificate, but the node never registered, so the entry has no
			// description. Left to the "gone for good" rule below, it would hold its seat for ReplaceAfter (for
			// good while it stays Unknown), while the node it was meant for, back as a worker after its
			// manager join timed out, waits with no seat free to be promoted to.
			// Nothing runs there and nothing is known of it; once it has been not Ready (Down, or Unknown: an
			// entry that never registered need not ever go Down) for failedJoinGrace it goes.
			since, ok := in.DownSince[n.ID]
			if !ok || in.Now.Sub(since) < failedJoinGrace ||
				(n.ManagerStatus != nil && n.ManagerStatus.Reachability == swarm.ReachabilityReachable) {
				continue
			}
			host = "(none: never registered)"
			reason = fmt.Sprintf("failed join: the entry never registered and is %s since %s", n.Status.State, since.UTC().Format(time.RFC3339))
		} else {
			since, ok := in.DownSince[n.ID]
			if n.Status.State != swarm.NodeStateDown || !ok || in.Now.Sub(since) < in.ReplaceAfter {
				continue
			}
			if isManager(n) && !waiting {
				continue // keep the seat until a successor is there
			}
			reason = fmt.Sprintf("gone for good: down since %s (more than %s)", since.UTC().Format(time.RFC3339), in.ReplaceAfter)
			departed = true
		}
		switch {
		case n.Spec.Role == swarm.NodeRoleManager:
			wasReachable := 0
			if n.ManagerStatus != nil && n.ManagerStatus.Reachability == swarm.ReachabilityReachable {
				wasReachable = 1
			}
			if demoted || reachable-wasReachable <= (managers-1)/2 {
				continue
			}
			demoted = true
			out = append(out, Cleanup{Kind: Demote, Node: n, Hostname: host, Reason: reason, Departed: departed})
		case n.ManagerStatus != nil:
			// Demoted, still leaving raft: remove in a later pass.
		default:
			out = append(out, Cleanup{Kind: Remove, Node: n, Hostname: host, Reason: reason, Departed: departed})
		}
	}
	return out
}

// reimageGrace is how long an entry must be Down before it counts as a reimaged machine's leftover while the
// member of its hostname reports no swarm node. A reimaged machine boots for longer than that after its old
// dockerd went; a gossip that lags a completed join catches up within it.
const reimageGrace = 30 * time.Second

// failedJoinGrace is how long an entry that never registered must be not Ready before it is removed: longer than
// a slow node takes from its certificate to its first session (seconds; a minute on a loaded emulated guest).
const failedJoinGrace = 2 * time.Minute

// timed reports whether the leader keeps a "since" for the entry (CleanupInput.DownSince): it is Down, or it
// never registered (no description) and is not Ready, since such an entry can stay Unknown for good.
func timed(n swarm.Node) bool {
	return n.Status.State == swarm.NodeStateDown || (n.Description.Hostname == "" && n.Status.State != swarm.NodeStateReady)
}

func isManager(n swarm.Node) bool {
	return n.Spec.Role == swarm.NodeRoleManager || n.ManagerStatus != nil
}

type candidate struct {
	node   swarm.Node
	member member.Member
}

// candidates are the Ready worker entries of alive members, lowest member ID first.
func candidates(nodes []swarm.Node, members []member.Member) []candidate {
	var out []candidate
	for _, n := range nodes {
		if n.Spec.Role != swarm.NodeRoleWorker || n.Status.State != swarm.NodeStateReady {
			continue
		}
		m, ok := memberOf(members, n)
		if !ok || !m.Alive {
			continue
		}
		out = append(out, candidate{n, m})
	}
	slices.SortFunc(out, func(a, b candidate) int { return strings.Compare(a.member.ID, b.member.ID) })
	return out
}

// memberOf finds the member a node entry belongs to: by the swarm node ID the member reports, else by address.
func memberOf(members []member.Member, n swarm.Node) (member.Member, bool) {
	for _, m := range members {
		if m.SwarmNode == n.ID {
			return m, true
		}
	}
	a, err := netip.ParseAddr(n.Status.Addr)
	if err != nil {
		return member.Member{}, false
	}
	for _, m := range members {
		if m.Addr == a.Unmap() {
			return m, true
		}
	}
	return member.Member{}, false
}

// StillbornSeat finds the one raft seat that keeps a two-seat swarm without a leader although no machine holds
// it: remote (this manager's Info.RemoteManagers) is this node (self) and one other, and the alive member at
// the other's address reports no swarm node, or another one than that seat's. A manager join that never
// completed leaves exactly this once the joiner gives up (PlanLocal leaves a join pending for pendingMax) or
// is reimaged: raft counts the seat, so the leader needs both for a quorum, while the machine behind it holds
// no raft state at all. This node then holds the swarm's only copy, and `swarm init --force-new-cluster`
// here loses nothing and forks nothing. With more seats another live member may hold entries this node
// lacks: only the operator's recover may force a new cluster there.
func StillbornSeat(self string, remote []swarm.Peer, members []member.Member) (swarm.Peer, bool) {
	if len(remote) != 2 {
		return swarm.Peer{}, false
	}
	other := remote[0]
	if other.NodeID == self {
		other = remote[1]
	} else if remote[1].NodeID != self {
		return swarm.Peer{}, false
	}
	addr, ok := peerAddr(other)
	if !ok {
		return swarm.Peer{}, false
	}
	for _, m := range members {
		if m.Addr == addr {
			// "" is a member whose dockerd did not answer: no proof either way.
			return other, m.Alive && m.SwarmNode != "" && m.SwarmNode != other.NodeID
		}
	}
	return swarm.Peer{}, false
}

// peerAddr is the address of a manager in Info.RemoteManagers ("host:port").
func peerAddr(p swarm.Peer) (netip.Addr, bool) {
	host, _, err := net.SplitHostPort(p.Addr)
	if err != nil {
		host = p.Addr
	}
	a, err := netip.ParseAddr(host)
	return a.Unmap(), err == nil
}

// stillbornGrace is how long a seat must look stillborn before this node takes the swarm over alone. A joiner
// gossips its swarm node at the end of its pass, and a pass that waits for its join can take minutes on a
// loaded machine, so for that long it may still report no swarm node while its join goes on.
const stillbornGrace = 5 * time.Minute

// QuorumReport describes a manager that has lost raft quorum, from what it can still see without a leader:
// the managers it knows (Info.RemoteManagers) and which of their addresses belong to no alive member.
func QuorumReport(remote []swarm.Peer, members []member.Member, since time.Time) string {
	alive := map[netip.Addr]bool{}
	for _, m := range members {
		if m.Alive {
			alive[m.Addr] = true
		}
	}
	gone := 0
	for _, p := range remote {
		if a, ok := peerAddr(p); !ok || !alive[a] {
			gone++
		}
	}
	if len(remote)-gone > len(remote)/2 {
		// A majority is alive: raft is electing, or the managers are too slow to answer (a loaded machine).
		// Recovering here would fork a cluster that heals by itself, so the report must not suggest it.
		return fmt.Sprintf("no leader since %s, though %d of %d managers are alive members: waiting for raft to elect one",
			since.UTC().Format(time.RFC3339), len(remote)-gone, len(remote))
	}
	var down []string
	for _, m := range members {
		if !m.Alive {
			down = append(down, cmp.Or(m.Hostname, m.ID))
		}
	}
	slices.Sort(down)
	return fmt.Sprintf("no quorum: %d of %d managers unreachable since %s; if they are lost for good, run `kiln-firstboot recover --force-new-cluster --lost %s` on one survivor (it waits until they are gone %s)",
		gone, len(remote), since.UTC().Format(time.RFC3339), strings.Join(down, ","), member.LostFor)
}

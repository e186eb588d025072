package swarm

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/docker/docker/api/types/swarm"

	"github.com/kiln-project/kiln/firstboot/member"
	"github.com/kiln-project/kiln/firstboot/state"
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
	for _, m := range in.Members {
		if m.Alive && m.Hostname != "" {
			alive[m.Hostname] = m
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
			reason = fmt.Sprintf("stale entry: member %s with this hostname is alive as swarm node %s (reimaged)", m.ID, m.SwarmNode)
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
			out = append(out, Cleanup{Kind: Demote, Node: n, Hostname: host, Reason: reason})
		case n.ManagerStatus != nil:
			// Demoted, still leaving raft: remove in a later pass.
		default:
			out = append(out, Cleanup{Kind: Remove, Node: n, Hostname: host, Reason: reason})
		}
	}
	return out
}

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
		host := p.Addr
		if h, _, ok := strings.Cut(p.Addr, ":"); ok {
			host = h
		}
		if a, err := netip.ParseAddr(host); err != nil || !alive[a.Unmap()] {
			gone++
		}
	}
	if len(remote)-gone > len(remote)/2 {
		// A majority is alive: raft is electing, or the managers are too slow to answer (a loaded machine).
		// Recovering here would fork a cluster that heals by itself, so the report must not suggest it.
		return fmt.Sprintf("no leader since %s, though %d of %d managers are alive members: waiting for raft to elect one",
			since.UTC().Format(time.RFC3339), len(remote)-gone, len(remote))
	}
	return fmt.Sprintf("no quorum: %d of %d managers unreachable since %s; if they are lost for good, run `kiln-firstboot recover --force-new-cluster` on one survivor",
		gone, len(remote), since.UTC().Format(time.RFC3339))
}

// heal runs PlanCleanup on the leader and carries it out, logging every step with its reason.
func (r *Reconciler) heal(ctx context.Context, s *state.State, self string, nodes []swarm.Node) (bool, error) {
	if !isLeader(nodes, self) {
		return false, nil
	}
	now := r.now()
	seen := map[string]bool{}
	for _, n := range nodes {
		if timed(n) {
			seen[n.ID] = true
			if _, ok := r.downSince[n.ID]; !ok {
				r.downSince[n.ID] = now
			}
		}
	}
	for id := range r.downSince {
		if !seen[id] {
			delete(r.downSince, id)
		}
	}
	replaceAfter := s.ReplaceAfter
	if replaceAfter == 0 {
		replaceAfter = 10 * time.Minute
	}
	plan := PlanCleanup(CleanupInput{Self: self, Nodes: nodes, Members: s.Members, DownSince: r.downSince,
		Now: now, ReplaceAfter: replaceAfter, Expected: s.Expected})
	changed := false
	for _, c := range plan {
		var err error
		switch c.Kind {
		case Demote:
			spec := c.Node.Spec
			spec.Role = swarm.NodeRoleWorker
			err = r.cli.NodeUpdate(ctx, c.Node.ID, c.Node.Version, spec)
			if err != nil && strings.Contains(err.Error(), "can't find manager in raft memberlist") {
				// A manager join that failed half-way (on a loaded node, the leader can time out
				// dialling the joiner) leaves an entry with the manager role that never entered raft: it
				// cannot be demoted, and swarm lets it be removed as it is.
				r.log.Info("swarm: entry never joined raft; removing it instead of demoting", "node", c.Node.ID, "hostname", c.Hostname)
				c.Kind = Remove
				err = r.cli.NodeRemove(ctx, c.Node.ID, swarm.NodeRemoveOptions{Force: true})
			}
		case Remove:
			err = r.cli.NodeRemove(ctx, c.Node.ID, swarm.NodeRemoveOptions{Force: true})
		}
		if err != nil {
			return changed, fmt.Errorf("swarm: %s: %w", c, err)
		}
		changed = true
		r.log.Info("swarm: "+string(c.Kind)+"d node", "node", c.Node.ID, "hostname", c.Hostname,
			"addr", c.Node.Status.Addr, "state", c.Node.Status.State, "reason", c.Reason)
		r.lastHeal = fmt.Sprintf("%s at %s", c, now.UTC().Format(time.RFC3339))
	}
	return changed, nil
}

func isLeader(nodes []swarm.Node, self string) bool {
	for _, n := range nodes {
		if n.ID == self && n.ManagerStatus != nil && n.ManagerStatus.Leader {
			return true
		}
	}
	return false
}

// degraded names what the node list shows as not healthy: Down entries and unreachable managers.
func degraded(nodes []swarm.Node) string {
	var down, unreach []string
	for _, n := range nodes {
		name := n.Description.Hostname
		if name == "" {
			name = n.ID
		}
		if n.Status.State != swarm.NodeStateReady {
			down = append(down, name+" "+string(n.Status.State))
		} else if n.ManagerStatus != nil && n.ManagerStatus.Reachability != swarm.ReachabilityReachable {
			unreach = append(unreach, name)
		}
	}
	var parts []string
	if len(down) > 0 {
		parts = append(parts, "not ready: "+strings.Join(down, ", "))
	}
	if len(unreach) > 0 {
		parts = append(parts, "unreachable managers: "+strings.Join(unreach, ", "))
	}
	return strings.Join(parts, "; ")
}

// checkQuorum asks the control plane for the node list with a short deadline; a manager whose raft has no
// leader answers with an error (docker 20.10: "The swarm does not have a leader…") or not at all. It
// reports that precisely instead of letting the pass wait out the ready timeout.
func (r *Reconciler) checkQuorum(ctx context.Context, s *state.State, info swarm.Info) error {
	var err error
	if info.Error != "" && NoQuorum(errors.New(info.Error)) {
		err = errors.New(info.Error) // docker info already tried and failed to list the nodes
	}
	qctx, cancel := context.WithTimeout(ctx, quorumProbeTimeout)
	if err == nil {
		_, err = r.cli.NodeList(qctx, swarm.NodeListOptions{})
	}
	cancel()
	if err == nil || ctx.Err() != nil {
		r.noQuorumSince = time.Time{}
		return nil
	}
	if !NoQuorum(err) && !errors.Is(qctx.Err(), context.DeadlineExceeded) {
		return nil // some other failure: the ready wait below reports it
	}
	if r.noQuorumSince.IsZero() {
		r.noQuorumSince = r.now()
	}
	rep := QuorumReport(info.RemoteManagers, s.Members, r.noQuorumSince)
	s.Set("swarm", rep)
	return fmt.Errorf("swarm: %s: %w", rep, err)
}

// quorumProbeTimeout bounds the quorum probe: a manager with a leader lists nodes in milliseconds.
const quorumProbeTimeout = 10 * time.Second

// NoQuorum reports whether err is a manager's "no raft leader" answer.
func NoQuorum(err error) bool {
	if err == nil {
		return false
	}
	m := strings.ToLower(err.Error())
	return strings.Contains(m, "does not have a leader") || strings.Contains(m, "no elected cluster leader") ||
		strings.Contains(m, "lost quorum")
}

// staleEpoch reports whether this node's swarm state predates a forced recovery it did not take part in:
// the formation's epoch is newer than the one this node was last ready in, the node is in some swarm, the
// recovered formation does not list it as a manager, and it cannot show itself healthy in the recovered
// swarm (Ready in a manager's node list beside the epoch's initialiser, or a worker that knows a recovered
// manager).
//
// "Beside the initialiser": `swarm init --force-new-cluster` keeps the swarm ID, so two lost managers that
// come back together still hold a majority of the old raft and elect a leader in it, with the same swarm
// ID and each of them Ready. Only the recovering node (the epoch's initialiser, NewEpoch) tells the
// recovered raft from that fork: it is Ready in the one and Down in the other. Without this check the fork's
// leader would announce its managers under the new epoch, every node would take that record, and the
// cluster would stay split: one survivor alone, two nodes in the old raft.
func (r *Reconciler) staleEpoch(ctx context.Context, s *state.State, info swarm.Info) bool {
	f := s.Formation
	if f == nil || f.Epoch <= s.LocalEpoch || info.LocalNodeState == swarm.LocalNodeStateInactive {
		return false
	}
	self := s.Self.Addr.String()
	for _, a := range f.ManagerAddrs {
		if h, _, _ := strings.Cut(a, ":"); h == self {
			return false
		}
	}
	if info.LocalNodeState == swarm.LocalNodeStateActive && !info.ControlAvailable {
		for _, p := range info.RemoteManagers {
			if slices.Contains(f.ManagerAddrs, p.Addr) {
				return false
			}
		}
	}
	if info.ControlAvailable {
		qctx, cancel := context.WithTimeout(ctx, quorumProbeTimeout)
		nodes, err := r.cli.NodeList(qctx, swarm.NodeListOptions{})
		cancel()
		if err == nil && readyNode(nodes, info.NodeID) && readyNode(nodes, initialiserNode(s)) {
			return false
		}
	}
	return true
}

// readyNode reports whether nodes hold node id, Ready ("" never is).
func readyNode(nodes []swarm.Node, id string) bool {
	return id != "" && slices.ContainsFunc(nodes, func(n swarm.Node) bool {
		return n.ID == id && n.Status.State == swarm.NodeStateReady
	})
}

// initialiserNode is the swarm node ID the formation's initialiser gossips for itself ("" when unknown).
func initialiserNode(s *state.State) string {
	for _, m := range s.Members {
		if m.ID == s.Formation.Initialiser && m.SwarmNode != member.NoSwarmNode {
			return m.SwarmNode
		}
	}
	return ""
}

// ForceNewCluster is the swarm half of `kiln-firstboot recover --force-new-cluster`: on a manager whose swarm
// has no leader, `swarm init --force-new-cluster` makes this node the only raft member (swarm ID, services,
// secrets and tokens are kept); then every other node entry is demoted and removed, since they would
// otherwise hold manager seats forever. It refuses while the swarm has a leader. It returns this node's
// manager address (host:2377).
func ForceNewCluster(ctx context.Context, cli DockerAPI, addr netip.Addr, log *slog.Logger) (string, error) {
	i, err := cli.Info(ctx)
	if err != nil {
		return "", fmt.Errorf("swarm: recover: docker info: %w", err)
	}
	sw := i.Swarm
	if sw.LocalNodeState != swarm.LocalNodeStateActive || !sw.ControlAvailable {
		return "", fmt.Errorf("swarm: recover: this node is not an active manager (state %s)", sw.LocalNodeState)
	}
	qctx, cancel := context.WithTimeout(ctx, quorumProbeTimeout)
	_, qerr := cli.NodeList(qctx, swarm.NodeListOptions{})
	cancel()
	if qerr == nil {
		return "", errors.New("swarm: recover: the swarm has a leader (quorum holds); refusing to force a new cluster")
	}
	listen := net.JoinHostPort(addr.String(), strconv.Itoa(Port))
	log.Warn("swarm: init --force-new-cluster", "advertise", addr, "reason", "operator: recover --force-new-cluster", "swarm_error", qerr)
	if _, err := cli.SwarmInit(ctx, swarm.InitRequest{ListenAddr: listen, AdvertiseAddr: addr.String(), DataPathAddr: addr.String(), ForceNewCluster: true}); err != nil {
		return "", fmt.Errorf("swarm: init --force-new-cluster: %w", err)
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		nodes, err := cli.NodeList(ctx, swarm.NodeListOptions{})
		left := 0
		for _, n := range nodes {
			if n.ID == sw.NodeID {
				continue
			}
			left++
			var aerr error
			// After --force-new-cluster the old managers are no raft members any more: a demotion fails
			// ("can't find manager in raft memberlist") while a forced removal is allowed. A node still in
			// raft (should not happen) is demoted first.
			aerr = cli.NodeRemove(ctx, n.ID, swarm.NodeRemoveOptions{Force: true})
			if aerr == nil {
				log.Warn("swarm: recover: removed node", "node", n.ID, "hostname", n.Description.Hostname, "reason", "lost with the majority")
			} else if n.Spec.Role == swarm.NodeRoleManager {
				spec := n.Spec
				spec.Role = swarm.NodeRoleWorker
				derr := cli.NodeUpdate(ctx, n.ID, n.Version, spec)
				log.Warn("swarm: recover: demoting node", "node", n.ID, "hostname", n.Description.Hostname, "remove_err", aerr, "err", derr, "reason", "lost with the majority")
				aerr = errors.Join(aerr, derr)
			}
			err = errors.Join(err, aerr)
		}
		if err == nil && left == 0 {
			return listen, nil
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("swarm: recover: %d other nodes still listed after 2 min (last error: %v)", left, err)
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(time.Second): // demoted nodes leave raft asynchronously
		}
	}
}

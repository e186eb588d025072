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
		if c.Kind == Remove && c.Departed {
			if err := r.rotateJoinTokens(ctx); err != nil {
				return changed, fmt.Errorf("swarm: after removing departed %s: %w", c.Hostname, err)
			}
			r.log.Info("swarm: join tokens rotated", "reason", "departed node "+c.Hostname+" removed")
		}
	}
	return changed, nil
}

// rotateJoinTokens replaces both join tokens. The formation record takes the new ones on this pass's announce
// (lead reads them from SwarmInspect), so members still joining switch to them; the removed machine's copy
// opens nothing.
func (r *Reconciler) rotateJoinTokens(ctx context.Context) error {
	sw, err := r.cli.SwarmInspect(ctx)
	if err != nil {
		return fmt.Errorf("rotate join tokens: inspect: %w", err)
	}
	if err := r.cli.SwarmUpdate(ctx, sw.Version, sw.Spec, swarm.UpdateFlags{RotateWorkerToken: true, RotateManagerToken: true}); err != nil {
		return fmt.Errorf("rotate join tokens: %w", err)
	}
	return nil
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
//
// Without a leader it also watches for a stillborn seat (StillbornSeat): once one has held for stillbornGrace,
// this node forces a new cluster of itself and reports tookOver.
func (r *Reconciler) checkQuorum(ctx context.Context, s *state.State, info swarm.Info) (tookOver bool, _ error) {
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
		r.noQuorumSince, r.stillbornSince = time.Time{}, time.Time{}
		return false, nil
	}
	if !NoQuorum(err) && !errors.Is(qctx.Err(), context.DeadlineExceeded) {
		return false, nil // some other failure: the ready wait below reports it
	}
	if r.noQuorumSince.IsZero() {
		r.noQuorumSince = r.now()
	}
	if seat, ok := StillbornSeat(info.NodeID, info.RemoteManagers, s.Members); !ok {
		r.stillbornSince = time.Time{}
	} else if r.stillbornSince.IsZero() {
		r.stillbornSince = r.now()
	} else if r.now().Sub(r.stillbornSince) >= stillbornGrace {
		return true, r.takeOver(ctx, s, seat, err)
	}
	rep := QuorumReport(info.RemoteManagers, s.Members, r.noQuorumSince)
	s.Set("swarm", rep)
	return false, fmt.Errorf("swarm: %s: %w", rep, err)
}

// takeOver makes this manager the swarm's only raft member (`swarm init --force-new-cluster`: swarm ID, tokens,
// services and node entries are kept) after its only other seat was found stillborn. The seat's entry is then a
// Down manager whose machine reports no swarm node: the leader's cleanup removes it (PlanCleanup), and the
// machine joins again through the formation record this node announces.
func (r *Reconciler) takeOver(ctx context.Context, s *state.State, seat swarm.Peer, noQuorum error) error {
	addr := s.Self.Addr.String()
	r.log.Warn("swarm: init --force-new-cluster", "advertise", addr, "seat", seat.NodeID, "seat_addr", seat.Addr,
		"reason", "the only other raft seat is held by no machine (its join never completed) and keeps this swarm without a leader",
		"since", r.stillbornSince.UTC().Format(time.RFC3339), "swarm_error", noQuorum)
	req := swarm.InitRequest{ListenAddr: net.JoinHostPort(addr, strconv.Itoa(Port)), AdvertiseAddr: addr, DataPathAddr: addr, ForceNewCluster: true}
	if _, err := r.cli.SwarmInit(ctx, req); err != nil {
		return fmt.Errorf("swarm: init --force-new-cluster without stillborn seat %s (%s): %w", seat.NodeID, seat.Addr, err)
	}
	now := r.now()
	r.lastHeal = fmt.Sprintf("took the swarm over alone: seat %s (%s) was stillborn, at %s", seat.NodeID, seat.Addr, now.UTC().Format(time.RFC3339))
	r.noQuorumSince, r.stillbornSince = time.Time{}, time.Time{}
	s.Wait("swarm", r.lastHeal)
	return nil
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

package swarm

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strconv"

	"github.com/docker/docker/api/types/swarm"

	"github.com/kiln-project/kiln/firstboot/member"
	"github.com/kiln-project/kiln/firstboot/state"
)

// lead is a verified manager's work: heal the node list, promote, announce, report. Each step sees the node
// list the one before it left.
func (r *Reconciler) lead(ctx context.Context, s *state.State, self string, nodes []swarm.Node) (changed bool, err error) {
	healed, err := r.heal(ctx, s, self, nodes)
	if err != nil {
		return false, err
	}
	if healed {
		changed = true
		if nodes, err = r.cli.NodeList(ctx, swarm.NodeListOptions{}); err != nil {
			return changed, fmt.Errorf("swarm: list nodes: %w", err)
		}
	}
	promoted, err := r.promote(ctx, s, self, nodes)
	if err != nil {
		return changed, err
	}
	if promoted {
		changed = true
		if nodes, err = r.cli.NodeList(ctx, swarm.NodeListOptions{}); err != nil {
			return changed, fmt.Errorf("swarm: list nodes: %w", err)
		}
	}
	ann, err := r.announce(ctx, s, nodes)
	if err != nil {
		return changed, err
	}
	s.Swarm.Announce = ann
	st := fmt.Sprintf("manager %s swarm %s (%d of %d managers ready)", self, ann.SwarmID, len(ann.ManagerAddrs), ann.Managers)
	if d := degraded(nodes); d != "" {
		st += "; " + d
	}
	if r.lastHeal != "" {
		st += "; last repair: " + r.lastHeal
	}
	s.Set("swarm", st)
	return changed, nil
}

// promote turns workers that should be managers into managers. Only the leader does it, so two managers do
// not race on the same node object (the loser would get "update out of sequence").
func (r *Reconciler) promote(ctx context.Context, s *state.State, self string, nodes []swarm.Node) (bool, error) {
	var leader bool
	for _, n := range nodes {
		if n.ID == self && n.ManagerStatus != nil && n.ManagerStatus.Leader {
			leader = true
		}
	}
	if !leader {
		return false, nil
	}
	changed := false
	for _, n := range Promotions(nodes, s.Members, s.Expected) {
		spec := n.Spec
		spec.Role = swarm.NodeRoleManager
		r.log.Info("swarm: promote", "node", n.ID, "addr", n.Status.Addr)
		if err := r.cli.NodeUpdate(ctx, n.ID, n.Version, spec); err != nil {
			return changed, fmt.Errorf("swarm: promote %s (%s): %w", n.ID, n.Status.Addr, err)
		}
		changed = true
	}
	return changed, nil
}

// Promotions returns the Ready workers of alive members (lowest member ID first) that fill free manager
// seats: managers (entries with the manager role, reachable or not) stay at most Seats(expected). A dead
// manager keeps its seat until PlanCleanup removes it, so a successor is promoted only after that. So does
// an alive member of manager rank (Role) that has no entry yet: it is about to join as a manager
// (JoinRole), and a worker promoted meanwhile would make raft one manager larger than the seats. A member
// that stays alive but never manages to join keeps its seat too; the workers wait for it.
func Promotions(nodes []swarm.Node, members []member.Member, expected int) []swarm.Node {
	managers := 0
	for _, n := range nodes {
		if isManager(n) { // a demoted entry still leaving raft keeps its seat until it is gone
			managers++
		}
	}
	for _, m := range members {
		if m.Alive && Role(m.ID, members, expected) == swarm.NodeRoleManager && !hasEntry(nodes, members, m.ID) {
			managers++
		}
	}
	var out []swarm.Node
	for _, c := range candidates(nodes, members) {
		if managers >= Seats(expected) {
			break
		}
		out = append(out, c.node)
		managers++
	}
	return out
}

// hasEntry reports whether any node entry belongs to member id (memberOf).
func hasEntry(nodes []swarm.Node, members []member.Member, id string) bool {
	for _, n := range nodes {
		if m, ok := memberOf(members, n); ok && m.ID == id {
			return true
		}
	}
	return false
}

// announce builds the formation record this manager vouches for: fresh tokens and the ready, reachable
// managers' addresses.
func (r *Reconciler) announce(ctx context.Context, s *state.State, nodes []swarm.Node) (*state.Formation, error) {
	sw, err := r.cli.SwarmInspect(ctx)
	if err != nil {
		return nil, fmt.Errorf("swarm: inspect: %w", err)
	}
	f := &state.Formation{
		SwarmID:      sw.ID,
		Initialiser:  s.Self.ID,
		ManagerToken: sw.JoinTokens.Manager,
		WorkerToken:  sw.JoinTokens.Worker,
		ManagerAddrs: ManagerAddrs(nodes),
	}
	for _, n := range nodes {
		if isManager(n) {
			f.Managers++
		}
		if n.ManagerStatus != nil {
			f.RaftMembers++
		}
	}
	if s.Formation != nil {
		// The gluster reconciler owns this map (it runs after swarm and refreshes it on the coordinator);
		// the epoch changes only through `recover`.
		f.GlusterPeers = s.Formation.GlusterPeers
		f.Epoch = s.Formation.Epoch
	}
	if s.Formation != nil && s.Formation.Initialiser != "" {
		f.Initialiser = s.Formation.Initialiser
	}
	return f, nil
}

// ManagerAddrs returns host:2377 of every ready, reachable manager, sorted.
func ManagerAddrs(nodes []swarm.Node) []string {
	var out []string
	for _, n := range nodes {
		if n.ManagerStatus == nil || n.ManagerStatus.Reachability != swarm.ReachabilityReachable || n.Status.State != swarm.NodeStateReady {
			continue
		}
		addr := n.ManagerStatus.Addr // host:port the manager advertises for raft
		if addr == "" {
			addr = net.JoinHostPort(n.Status.Addr, strconv.Itoa(Port))
		}
		out = append(out, addr)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// Package swarm forms and keeps the node's Docker Swarm membership through the Docker API: init on the
// initialiser, join everywhere else, promote members that should be managers, and verify every step against
// what the swarm itself reports (a call's return value is never taken as proof).
package swarm

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"time"

	"github.com/docker/docker/api/types/swarm"
	"github.com/docker/docker/api/types/system"

	"github.com/kiln-project/kiln/firstboot/member"
	"github.com/kiln-project/kiln/firstboot/state"
)

// DockerAPI is the part of github.com/docker/docker/client the reconciler uses (*client.Client satisfies it).
type DockerAPI interface {
	Info(ctx context.Context) (system.Info, error)
	SwarmInit(ctx context.Context, req swarm.InitRequest) (string, error)
	SwarmJoin(ctx context.Context, req swarm.JoinRequest) error
	SwarmInspect(ctx context.Context) (swarm.Swarm, error)
	NodeList(ctx context.Context, options swarm.NodeListOptions) ([]swarm.Node, error)
	NodeUpdate(ctx context.Context, nodeID string, version swarm.Version, node swarm.NodeSpec) error
	NodeRemove(ctx context.Context, nodeID string, options swarm.NodeRemoveOptions) error
	SwarmLeave(ctx context.Context, force bool) error
}

// MaxManagers is the number of managers kiln keeps: raft needs a majority, so 3/5/7 tolerate 1/2/3 failures;
// beyond 7 every write waits on more peers for no gain in tolerance worth having, so further nodes are workers.
const MaxManagers = 7

// Port is swarm's control-plane port (raft, join).
const Port = 2377

// dockerdFirstAnswer bounds a look at dockerd from a pass with no swarm work before dockerd first answered.
const dockerdFirstAnswer = 2 * time.Second

// errDockerdStarting: dockerd has not answered since the agent started, and this pass has no swarm work. The
// reconciler reports it as waiting, not as an error (at boot the agent starts beside dockerd).
var errDockerdStarting = errors.New("dockerd has not answered yet")

// Options tune the reconciler's waits.
type Options struct {
	// ReadyTimeout bounds one wait for the node to become active and ready (default 90 s: a join can take 20 s
	// to return and the node then needs raft catch-up and a dispatcher heartbeat before it shows Ready).
	ReadyTimeout time.Duration
	// ControlTimeout bounds the wait for a node that should be a manager to get its control plane (default
	// 20 s: raft catch-up after a join or promotion takes a few seconds; a worker still awaiting promotion
	// must not hold up the other reconcilers for long).
	ControlTimeout time.Duration
	// PollInterval is how often Info/NodeList are polled while waiting (default 250 ms).
	PollInterval time.Duration
	// StartWait bounds the one wait for dockerd to answer when this node first has swarm work (default 60 s;
	// see Reconcile).
	StartWait time.Duration
}

// Reconciler converges this node's swarm membership.
type Reconciler struct {
	cli  DockerAPI
	log  *slog.Logger
	opts Options
	// now is the clock (tests).
	now func() time.Time
	// downSince is when this node, as leader, first saw each swarm entry Down (see PlanCleanup).
	downSince map[string]time.Time
	// noQuorumSince is when this manager first found its swarm without a leader; zero while it has one.
	noQuorumSince time.Time
	// lastHeal is the last corrective action with its reason and time, shown in status.
	lastHeal string
	// ownSeatSince is when this inactive node first found its own address among the record's managers.
	ownSeatSince time.Time
	// waitedForDockerd is set once dockerd answered or this process waited for it once (see Reconcile).
	waitedForDockerd bool
	// awaitingSince is when this node, which should be a manager, was first seen a worker; zero otherwise.
	// Shown in status: under load a promoted worker's certificate renewal can time out again and again
	// (swarmkit retries it with back-off, for many minutes) and "since" tells that from a promotion just
	// sent.
	awaitingSince time.Time
}

// New returns the swarm reconciler talking to dockerd through cli.
func New(cli DockerAPI, log *slog.Logger) *Reconciler {
	return NewWithOptions(cli, log, Options{})
}

// NewWithOptions is New with explicit waits (tests shorten them).
func NewWithOptions(cli DockerAPI, log *slog.Logger, opts Options) *Reconciler {
	if opts.ReadyTimeout == 0 {
		opts.ReadyTimeout = 90 * time.Second
	}
	if opts.ControlTimeout == 0 {
		opts.ControlTimeout = 20 * time.Second
	}
	if opts.PollInterval == 0 {
		opts.PollInterval = 250 * time.Millisecond
	}
	if opts.StartWait == 0 {
		opts.StartWait = 60 * time.Second
	}
	return &Reconciler{cli: cli, log: log, opts: opts, now: time.Now, downSince: map[string]time.Time{}}
}

// Name implements state.Reconciler.
func (r *Reconciler) Name() string { return "swarm" }

// ErrForeignSwarm means the node is active in a swarm other than the formation's. Leaving would destroy
// whatever that swarm runs, so kiln never does it on its own: a human decides.
var ErrForeignSwarm = errors.New("node is in a different swarm than the cluster's formation; refusing to leave automatically")

// Role returns the role self should have: a manager among the first Seats(expected) members by ID, else a
// worker. All known members count (alive or not), so a member's failure does not reshuffle everyone's role.
func Role(self string, members []member.Member, expected int) swarm.NodeRole {
	if rank(self, members) < Seats(expected) {
		return swarm.NodeRoleManager
	}
	return swarm.NodeRoleWorker
}

func rank(id string, members []member.Member) int {
	ids := make([]string, 0, len(members)+1)
	for _, m := range members {
		ids = append(ids, m.ID)
	}
	if !slices.Contains(ids, id) {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	ids = slices.Compact(ids)
	return slices.Index(ids, id)
}

// Reconcile observes the local swarm state and moves it one step towards "active, ready, in the formation's
// swarm, with the right role"; then, on the leader, promotes members that should be managers.
func (r *Reconciler) Reconcile(ctx context.Context, s *state.State) (bool, error) {
	s.Swarm.Announce, s.Swarm.Active, s.Swarm.Node = nil, false, ""
	info, err := r.firstInfo(ctx, s.Initialiser || s.Formation != nil)
	if errors.Is(err, errDockerdStarting) {
		s.Wait("swarm", "waiting for dockerd to start")
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if r.staleEpoch(ctx, s, info) {
		// The cluster was recovered (`recover --force-new-cluster`) while this node was away: its swarm
		// state is the old majority's, which the survivor removed. Leaving is what the operator's recover
		// asked for; the next step joins the recovered swarm as a new node.
		r.log.Warn("swarm: leaving the pre-recovery swarm", "node", info.NodeID, "state", info.LocalNodeState,
			"epoch", s.Formation.Epoch, "local_epoch", s.LocalEpoch, "reason", "cluster recovered without this node")
		if err := r.cli.SwarmLeave(ctx, true); err != nil {
			return false, fmt.Errorf("swarm: leave pre-recovery swarm: %w", err)
		}
		if info, err = r.info(ctx); err != nil {
			return true, err
		}
	}
	s.Swarm.Node = info.NodeID
	if info.LocalNodeState == swarm.LocalNodeStateInactive || s.Swarm.Node == "" {
		s.Swarm.Node = member.NoSwarmNode
	}
	changed := false
	switch info.LocalNodeState {
	case swarm.LocalNodeStatePending:
		// A join is under way (ours, perhaps from before a restart): wait for it rather than start another.
		r.log.Info("swarm: join pending, waiting")
	case swarm.LocalNodeStateError, swarm.LocalNodeStateLocked:
		if failedJoin(s, info) {
			// A manager join that swarmkit gave up on (under load: "can't initialize raft node: could not
			// connect to prospective new cluster member") leaves dockerd in "error" for good, and the leader
			// has already dropped the half-added member. Leaving clears it; the next pass joins again.
			r.log.Warn("swarm: leaving after a failed join", "node", info.NodeID, "error", info.Error,
				"managers", s.Formation.ManagerAddrs, "reason", "local node in error and not a ready manager of the formation")
			if err := r.cli.SwarmLeave(ctx, true); err != nil {
				return false, fmt.Errorf("swarm: leave after failed join: %w", err)
			}
			s.Wait("swarm", "left after a failed join, joining again")
			return true, nil
		}
		s.Set("swarm", "swarm: "+string(info.LocalNodeState)+" "+info.Error)
		return false, fmt.Errorf("swarm: local node state %s: %s", info.LocalNodeState, info.Error)
	case swarm.LocalNodeStateActive:
	case swarm.LocalNodeStateInactive:
		acted, err := r.form(ctx, s)
		if err != nil || !acted {
			return false, err
		}
		changed = true
	default:
		return false, fmt.Errorf("swarm: unknown local node state %q", info.LocalNodeState)
	}

	info, err = r.waitActive(ctx)
	if err != nil {
		return changed, err
	}
	s.Swarm.Node = info.NodeID
	if !info.ControlAvailable && Role(s.Self.ID, s.Members, s.Expected) == swarm.NodeRoleManager {
		// A manager reports active before its raft member has caught up, and a promoted worker needs a moment
		// to start its manager: give the control plane a bounded wait. If it does not come, this node is a
		// worker awaiting promotion by the leader.
		if ci, err := r.waitControl(ctx); err == nil {
			info = ci
		}
	}
	if info.ControlAvailable {
		// Before anything else that reads the control plane: a manager without quorum reports an empty
		// cluster (Info could not inspect it), which must read as "no quorum", not as another swarm.
		if err := r.checkQuorum(ctx, s, info); err != nil {
			return changed, err
		}
	}
	if s.Formation != nil && s.Formation.SwarmID != "" && info.Cluster != nil && info.Cluster.ID != "" && info.Cluster.ID != s.Formation.SwarmID {
		s.Set("swarm", "swarm: foreign swarm "+info.Cluster.ID)
		return changed, fmt.Errorf("swarm: in swarm %s, formation says %s: %w", info.Cluster.ID, s.Formation.SwarmID, ErrForeignSwarm)
	}
	if !info.ControlAvailable {
		// A worker cannot list nodes; active with a reachable manager is what it can verify.
		if len(info.RemoteManagers) == 0 {
			return changed, fmt.Errorf("swarm: worker %s is active but knows no manager", info.NodeID)
		}
		s.Swarm.Active = true
		if Role(s.Self.ID, s.Members, s.Expected) != swarm.NodeRoleManager {
			r.awaitingSince = time.Time{}
			s.Set("swarm", "worker "+info.NodeID)
			return changed, nil
		}
		if r.awaitingSince.IsZero() {
			r.awaitingSince = r.now()
		}
		s.Wait("swarm", fmt.Sprintf("worker %s, awaiting promotion to manager (since %s)", info.NodeID, r.awaitingSince.UTC().Format(time.RFC3339)))
		return changed, nil
	}
	r.awaitingSince = time.Time{}

	nodes, err := r.waitReady(ctx, info.NodeID, true)
	if err != nil {
		return changed, err
	}
	if s.Formation == nil && !s.Initialiser {
		// An active swarm nobody agreed on (left over on this disk?): never advertise it as the cluster's.
		s.Wait("swarm", fmt.Sprintf("manager %s in swarm %s, which no formation names; not announcing or promoting", info.NodeID, clusterID(info)))
		return changed, nil
	}
	s.Swarm.Active = true
	healed, err := r.heal(ctx, s, info.NodeID, nodes)
	if err != nil {
		return changed, err
	}
	if healed {
		changed = true
		if nodes, err = r.cli.NodeList(ctx, swarm.NodeListOptions{}); err != nil {
			return changed, fmt.Errorf("swarm: list nodes: %w", err)
		}
	}
	promoted, err := r.promote(ctx, s, info.NodeID, nodes)
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
	st := fmt.Sprintf("manager %s swarm %s (%d of %d managers ready)", info.NodeID, ann.SwarmID, len(ann.ManagerAddrs), ann.Managers)
	if d := degraded(nodes); d != "" {
		st += "; " + d
	}
	if r.lastHeal != "" {
		st += "; last repair: " + r.lastHeal
	}
	s.Set("swarm", st)
	return changed, nil
}

// ownSeatWait bounds how long a reimaged manager waits for the leader to free its old seat before it joins
// as a worker (see form).
const ownSeatWait = 3 * time.Minute

// form runs init or join from the inactive state. It reports whether it acted.
func (r *Reconciler) form(ctx context.Context, s *state.State) (bool, error) {
	if !s.Self.Addr.IsValid() {
		return false, errors.New("swarm: this node has no cluster address yet")
	}
	addr := s.Self.Addr.String()
	listen := net.JoinHostPort(addr, strconv.Itoa(Port))
	if s.Formation == nil {
		if !s.Initialiser {
			s.Wait("swarm", "waiting for formation")
			return false, nil
		}
		for _, m := range s.Members {
			if m.ID != s.Self.ID && m.Alive && m.SwarmNode != "" && m.SwarmNode != member.NoSwarmNode {
				// A member is already in a swarm: this initialiser was reimaged (its formation record is
				// gone with /var) and must join that swarm once the record arrives, never init another.
				s.Wait("swarm", "waiting for the formation record: member "+m.ID+" is already in a swarm")
				return false, nil
			}
		}
		r.log.Info("swarm: init", "advertise", addr)
		id, err := r.cli.SwarmInit(ctx, swarm.InitRequest{ListenAddr: listen, AdvertiseAddr: addr, DataPathAddr: addr})
		if err != nil {
			return false, fmt.Errorf("swarm: init on %s: %w", addr, err)
		}
		r.log.Info("swarm: initialised", "node", id)
		return true, nil
	}

	var remotes []string
	ownSeat := false // the record counts this address as a manager
	for _, a := range s.Formation.ManagerAddrs {
		if h, _, err := net.SplitHostPort(a); err == nil && h == addr {
			ownSeat = true // ourselves, e.g. a reimaged initialiser rejoining its own cluster
			continue
		}
		remotes = append(remotes, a)
	}
	if len(remotes) == 0 {
		return false, errors.New("swarm: formation lists no manager other than this node")
	}
	role := JoinRole(s.Self.ID, s.Members, s.Expected, s.Formation.Managers)
	if role == swarm.NodeRoleWorker && ownSeat && Role(s.Self.ID, s.Members, s.Expected) == swarm.NodeRoleManager {
		// The record still counts this address as a manager: this machine was one before its disk was
		// replaced, and that old entry holds the seat. The leader removes it (PlanCleanup) and publishes a
		// record without it, usually within a minute; joining now instead takes the worker path and a
		// promotion, whose certificate renewal can keep timing out for many minutes on loaded managers. So
		// wait for the fresh record, for ownSeatWait at most; then join as a worker, as before.
		now := r.now()
		if r.ownSeatSince.IsZero() {
			r.ownSeatSince = now
		}
		if now.Sub(r.ownSeatSince) < ownSeatWait {
			s.Wait("swarm", fmt.Sprintf("the formation record still counts %s as a manager (the old install of this machine): waiting since %s for the leader to free the seat, to join as a manager",
				addr, r.ownSeatSince.UTC().Format(time.RFC3339)))
			return false, nil
		}
	}
	token := s.Formation.ManagerToken
	if role == swarm.NodeRoleWorker {
		token = s.Formation.WorkerToken
	}
	if token == "" {
		return false, fmt.Errorf("swarm: formation carries no %s token", role)
	}
	r.log.Info("swarm: join", "role", role, "remotes", remotes, "advertise", addr)
	err := r.cli.SwarmJoin(ctx, swarm.JoinRequest{
		ListenAddr: listen, AdvertiseAddr: addr, DataPathAddr: addr, RemoteAddrs: remotes, JoinToken: token,
	})
	if err != nil {
		// dockerd gives up waiting after 20 s ("Timeout was reached before node joined") but keeps joining in
		// the background; only the state we observe next decides whether this failed.
		info, ierr := r.info(ctx)
		if ierr != nil || info.LocalNodeState == swarm.LocalNodeStateInactive {
			return false, fmt.Errorf("swarm: join %v: %w", remotes, err)
		}
		r.log.Info("swarm: join call returned an error but the node is joining", "state", info.LocalNodeState, "err", err)
	}
	return true, nil
}

// firstInfo is info for the start of a pass, aware that the agent starts beside dockerd, not after it
// (kiln-firstboot.service): at boot the election is usually decided while dockerd is still starting (20-25 s
// under TCG). work tells whether this pass's State gives the node swarm work (init or join).
//   - With work, and before dockerd ever answered: wait for it here, once per process (a dockerd down for good
//     must not hold every pass up), and act the moment it answers rather than at the next pass, 5 s later.
//   - Without work, before dockerd ever answered: ask briefly. dockerd's socket is systemd's, so a call waits
//     for a starting dockerd rather than fail; that held the pass, and the election decided meanwhile, until
//     dockerd was up (lab: 5 s more to the init).
func (r *Reconciler) firstInfo(ctx context.Context, work bool) (swarm.Info, error) {
	if r.waitedForDockerd {
		return r.info(ctx)
	}
	if !work {
		brief, cancel := context.WithTimeout(ctx, dockerdFirstAnswer)
		defer cancel()
		info, err := r.info(brief)
		if err != nil && ctx.Err() == nil {
			// Not a failure: nothing to do yet, and dockerd has not answered since the agent started.
			return info, fmt.Errorf("%w: %w", errDockerdStarting, err)
		}
		r.waitedForDockerd = err == nil
		return info, err
	}
	r.waitedForDockerd = true
	info, err := r.info(ctx)
	if err == nil {
		return info, nil
	}
	r.log.Info("swarm: waiting for dockerd to answer", "within", r.opts.StartWait, "err", err)
	err = r.poll(ctx, "dockerd answering", r.opts.StartWait, func() (bool, error) {
		info, err = r.info(ctx)
		return err == nil, err
	})
	return info, err
}

func (r *Reconciler) info(ctx context.Context) (swarm.Info, error) {
	i, err := r.cli.Info(ctx)
	if err != nil {
		return swarm.Info{}, fmt.Errorf("swarm: docker info: %w", err)
	}
	return i.Swarm, nil
}

// poll calls f every PollInterval until it reports done or timeout passes; f's errors are kept for the report
// (a daemon busy joining may fail a call or two).
func (r *Reconciler) poll(ctx context.Context, what string, timeout time.Duration, f func() (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	t := time.NewTicker(r.opts.PollInterval)
	defer t.Stop()
	var last error
	for {
		done, err := f()
		if done {
			return nil
		}
		if err != nil {
			last = err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("swarm: %s: not reached within %s (last error: %v)", what, timeout, last)
		case <-t.C:
		}
	}
}

// waitActive waits until the local node is active.
func (r *Reconciler) waitActive(ctx context.Context) (swarm.Info, error) {
	return r.waitState(ctx, "local node active", r.opts.ReadyTimeout, false)
}

// waitControl waits until the local node is active with its control plane (manager) available.
func (r *Reconciler) waitControl(ctx context.Context) (swarm.Info, error) {
	return r.waitState(ctx, "manager control plane available", r.opts.ControlTimeout, true)
}

func (r *Reconciler) waitState(ctx context.Context, what string, timeout time.Duration, control bool) (swarm.Info, error) {
	var info swarm.Info
	err := r.poll(ctx, what, timeout, func() (bool, error) {
		var err error
		if info, err = r.info(ctx); err != nil {
			return false, err
		}
		switch info.LocalNodeState {
		case swarm.LocalNodeStateActive:
			return info.ControlAvailable || !control, nil
		case swarm.LocalNodeStatePending:
			return false, nil
		default:
			return false, fmt.Errorf("state %s %s", info.LocalNodeState, info.Error)
		}
	})
	return info, err
}

// waitReady waits until the node list (from this manager) shows self Ready and, for a manager, reachable.
func (r *Reconciler) waitReady(ctx context.Context, self string, manager bool) ([]swarm.Node, error) {
	var nodes []swarm.Node
	err := r.poll(ctx, "node "+self+" ready in node list", r.opts.ReadyTimeout, func() (bool, error) {
		var err error
		if nodes, err = r.cli.NodeList(ctx, swarm.NodeListOptions{}); err != nil {
			return false, err
		}
		for _, n := range nodes {
			if n.ID != self {
				continue
			}
			ready := n.Status.State == swarm.NodeStateReady
			if manager {
				ready = ready && n.ManagerStatus != nil && n.ManagerStatus.Reachability == swarm.ReachabilityReachable
			}
			return ready, nil
		}
		return false, nil
	})
	return nodes, err
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
// manager keeps its seat until PlanCleanup removes it, so a successor is promoted only after that.
func Promotions(nodes []swarm.Node, members []member.Member, expected int) []swarm.Node {
	managers := 0
	for _, n := range nodes {
		if isManager(n) { // a demoted entry still leaving raft keeps its seat until it is gone
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

// failedJoin tells a join that ended in dockerd's "error" state from a broken manager of the cluster: the
// formation record names ready managers, and this node is not one of them. A recorded manager in error is
// left alone (reported): leaving would drop a raft member the cluster may still count on.
func failedJoin(s *state.State, info swarm.Info) bool {
	if info.LocalNodeState != swarm.LocalNodeStateError || s.Formation == nil || !s.Self.Addr.IsValid() {
		return false
	}
	self := net.JoinHostPort(s.Self.Addr.String(), strconv.Itoa(Port))
	others := 0
	for _, a := range s.Formation.ManagerAddrs {
		if a == self {
			return false
		}
		others++
	}
	return others > 0
}

func clusterID(info swarm.Info) string {
	if info.Cluster == nil {
		return "?"
	}
	return info.Cluster.ID
}

// Package swarm forms and keeps the node's Docker Swarm membership through the Docker API: init on the
// initialiser, join everywhere else, promote members that should be managers, and verify every step against
// what the swarm itself reports (a call's return value is never taken as proof).
package swarm

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
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
	SwarmUpdate(ctx context.Context, version swarm.Version, spec swarm.Spec, flags swarm.UpdateFlags) error
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
	// PollInterval is the first pause between Info/NodeList polls while waiting; later pauses double, up to
	// 8× (default 250 ms, so at most 2 s).
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
	// since holds when PlanLocal's timed conditions were first seen: this inactive node's own address among the
	// record's managers (Seat), this node pending (Pending).
	since Since
	// stillbornSince is when this manager, without a leader, first found its only other raft seat held by no
	// machine (StillbornSeat); zero otherwise.
	stillbornSince time.Time
	// waitedForDockerd is set once dockerd answered or this process waited for it once (see Reconcile).
	waitedForDockerd bool
	// awaitingSince is when this node, which should be a manager, was first seen a worker; zero otherwise.
	// Shown in status: under load a promoted worker's certificate renewal can time out again and again
	// (swarmkit retries it with back-off, for many minutes) and "since" tells that from a promotion just
	// sent.
	awaitingSince time.Time
	// joinFailures counts joins in a row that failed (the call failed and the node stayed inactive, or
	// dockerd gave up and went to "error"); retryJoinAt is when the next may go. Kept in memory only: a
	// restarted agent joins at once, which is what it would do anyway.
	joinFailures int
	retryJoinAt  time.Time
	lastJoinErr  string
}

// Join back-off: every failed join can leave a swarm entry (and, for a manager, a raft member) behind until the
// leader removes it, and each one adds work to managers that are already too slow to answer (a join fails by
// timing out on loaded machines). Retrying at once piles entries up; waiting gives the managers room.
const (
	joinBackoffBase = 20 * time.Second
	joinBackoffMax  = 5 * time.Minute
)

// joinBackoff is the wait after the n-th failed join in a row (n >= 1): base·2^(n-1), capped, plus up to a
// quarter more so nodes that failed together do not retry together.
func joinBackoff(n int) time.Duration {
	d := joinBackoffBase << min(n-1, 8)
	d = min(d, joinBackoffMax)
	return d + rand.N(d/4+1)
}

// joinFailed records a failed join and when the next may go.
func (r *Reconciler) joinFailed(reason string) {
	r.joinFailures++
	r.lastJoinErr = reason
	r.retryJoinAt = r.now().Add(joinBackoff(r.joinFailures))
	r.log.Warn("swarm: join failed; backing off", "failures", r.joinFailures, "retry_at", r.retryJoinAt.UTC().Format(time.RFC3339), "err", reason)
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

// Reconcile observes the local swarm state and takes this node one step towards "active, ready, in the
// formation's swarm, with the right role" (PlanLocal); then it verifies the result and, on a manager, does the
// manager's work (manage).
func (r *Reconciler) Reconcile(ctx context.Context, s *state.State) (bool, error) {
	s.Swarm.Announce, s.Swarm.Active, s.Swarm.Node, s.Swarm.Leader = nil, false, "", false
	info, changed, err := r.observe(ctx, s)
	if errors.Is(err, errDockerdStarting) {
		s.Wait("swarm", "waiting for dockerd to start")
		return false, nil
	}
	if err != nil {
		return changed, err
	}
	if info.LocalNodeState != swarm.LocalNodeStatePending {
		r.since.Pending = time.Time{}
	} else if r.since.Pending.IsZero() {
		r.since.Pending = r.now()
	}
	step := PlanLocal(s, info, r.since, r.now())
	if step.SeatHeld && r.since.Seat.IsZero() {
		r.since.Seat = r.now()
	}
	switch step.Kind {
	case StepWait:
		s.Wait("swarm", step.Wait)
		return changed, nil
	case StepFail:
		if info.LocalNodeState == swarm.LocalNodeStateError || info.LocalNodeState == swarm.LocalNodeStateLocked {
			s.Set("swarm", "swarm: "+string(info.LocalNodeState)+" "+info.Error)
		}
		return changed, step.Err
	case StepLeave:
		reason := "local node in error and not a ready manager of the formation"
		if step.Why != "" {
			reason = step.Why + ", not a ready manager of the formation"
		}
		r.log.Warn("swarm: leaving after a failed join", "node", info.NodeID, "error", info.Error,
			"managers", s.Formation.ManagerAddrs, "reason", reason)
		if err := r.cli.SwarmLeave(ctx, true); err != nil {
			return changed, fmt.Errorf("swarm: leave after failed join: %w", err)
		}
		r.since.Pending = time.Time{}
		r.joinFailed(cmp.Or(info.Error, step.Why))
		s.Wait("swarm", "left after a failed join, joining again at "+r.retryJoinAt.UTC().Format(time.RFC3339))
		return true, nil
	case StepJoin:
		if now := r.now(); now.Before(r.retryJoinAt) {
			s.Wait("swarm", fmt.Sprintf("%d join(s) in a row failed (last: %s); joining again at %s",
				r.joinFailures, r.lastJoinErr, r.retryJoinAt.UTC().Format(time.RFC3339)))
			return changed, nil
		}
		if err := r.form(ctx, s, step); err != nil {
			r.joinFailed(err.Error())
			return changed, err
		}
		changed = true
	case StepInit:
		if err := r.form(ctx, s, step); err != nil {
			return changed, err
		}
		changed = true
	case StepVerify:
		if info.LocalNodeState == swarm.LocalNodeStatePending {
			r.log.Info("swarm: join pending, waiting")
		}
	}
	return r.manage(ctx, s, info, changed)
}

// observe reads the local swarm state at the start of a pass and sets State.Swarm.Node. A node still in the
// swarm of an older epoch leaves it first (staleEpoch): the cluster was recovered (`recover
// --force-new-cluster`) while this node was away, its swarm state is the old majority's, which the survivor
// removed, and leaving is what the operator's recover asked for; PlanLocal then joins the recovered swarm as
// a new node.
func (r *Reconciler) observe(ctx context.Context, s *state.State) (info swarm.Info, changed bool, err error) {
	if info, err = r.firstInfo(ctx, s.Initialiser || s.Formation != nil); err != nil {
		return info, false, err
	}
	if r.staleEpoch(ctx, s, info) {
		r.log.Warn("swarm: leaving the pre-recovery swarm", "node", info.NodeID, "state", info.LocalNodeState,
			"epoch", s.Formation.Epoch, "local_epoch", s.LocalEpoch, "reason", "cluster recovered without this node")
		if err := r.cli.SwarmLeave(ctx, true); err != nil {
			return info, false, fmt.Errorf("swarm: leave pre-recovery swarm: %w", err)
		}
		if info, err = r.info(ctx); err != nil {
			return info, true, err
		}
		changed = true
	}
	s.Swarm.Node = info.NodeID
	if info.LocalNodeState == swarm.LocalNodeStateInactive || s.Swarm.Node == "" {
		s.Swarm.Node = member.NoSwarmNode
	}
	return info, changed, nil
}

// manage verifies that the node is active in the formation's swarm with its role. On a worker that is all; on a
// verified manager it heals the swarm's node list, promotes members that should be managers and announces the
// formation record it can vouch for. observed is the pass's first Info: when this pass changed nothing and it
// was already active it stands, rather than asking dockerd again.
func (r *Reconciler) manage(ctx context.Context, s *state.State, observed swarm.Info, changed bool) (bool, error) {
	info := observed
	if changed || observed.LocalNodeState != swarm.LocalNodeStateActive {
		var err error
		if info, err = r.waitActive(ctx); err != nil {
			return changed, err
		}
	}
	s.Swarm.Node = info.NodeID
	r.joinFailures, r.retryJoinAt, r.lastJoinErr = 0, time.Time{}, ""
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
		if tookOver, err := r.checkQuorum(ctx, s, info); err != nil || tookOver {
			return changed || tookOver, err
		}
	} else {
		r.stillbornSince = time.Time{} // the seat must look stillborn pass after pass, as a manager's
	}
	if s.Formation != nil && s.Formation.SwarmID != "" && info.Cluster != nil && info.Cluster.ID != "" && info.Cluster.ID != s.Formation.SwarmID {
		s.Set("swarm", "swarm: foreign swarm "+info.Cluster.ID)
		return changed, fmt.Errorf("swarm: in swarm %s, formation says %s: %w", info.Cluster.ID, s.Formation.SwarmID, ErrForeignSwarm)
	}
	if !info.ControlAvailable {
		return changed, r.worker(s, info)
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
	for _, n := range nodes {
		if n.ID == info.NodeID {
			s.Swarm.Leader = n.ManagerStatus != nil && n.ManagerStatus.Leader
		}
	}
	lead, err := r.lead(ctx, s, info.NodeID, nodes)
	return changed || lead, err
}

// worker is manage's end on a node without the control plane: active with a reachable manager is what a
// worker can verify. A node that should be a manager waits for the leader's promotion.
func (r *Reconciler) worker(s *state.State, info swarm.Info) error {
	if len(info.RemoteManagers) == 0 {
		return fmt.Errorf("swarm: worker %s is active but knows no manager", info.NodeID)
	}
	s.Swarm.Active = true
	if Role(s.Self.ID, s.Members, s.Expected) != swarm.NodeRoleManager {
		r.awaitingSince = time.Time{}
		s.Set("swarm", "worker "+info.NodeID)
		return nil
	}
	if r.awaitingSince.IsZero() {
		r.awaitingSince = r.now()
	}
	s.Wait("swarm", fmt.Sprintf("worker %s, awaiting promotion to manager (since %s)", info.NodeID, r.awaitingSince.UTC().Format(time.RFC3339)))
	return nil
}

// form runs PlanLocal's init or join.
func (r *Reconciler) form(ctx context.Context, s *state.State, step Step) error {
	addr := s.Self.Addr.String()
	listen := net.JoinHostPort(addr, strconv.Itoa(Port))
	if step.Kind == StepInit {
		r.log.Info("swarm: init", "advertise", addr)
		id, err := r.cli.SwarmInit(ctx, swarm.InitRequest{ListenAddr: listen, AdvertiseAddr: addr, DataPathAddr: addr})
		if err != nil {
			return fmt.Errorf("swarm: init on %s: %w", addr, err)
		}
		r.log.Info("swarm: initialised", "node", id)
		return nil
	}
	r.log.Info("swarm: join", "role", step.Role, "remotes", step.Remotes, "advertise", addr)
	err := r.cli.SwarmJoin(ctx, swarm.JoinRequest{
		ListenAddr: listen, AdvertiseAddr: addr, DataPathAddr: addr, RemoteAddrs: step.Remotes, JoinToken: step.Token,
	})
	if err != nil {
		// dockerd gives up waiting after 20 s ("Timeout was reached before node joined") but keeps joining in
		// the background; only the state we observe next decides whether this failed.
		info, ierr := r.info(ctx)
		if ierr != nil || info.LocalNodeState == swarm.LocalNodeStateInactive {
			return fmt.Errorf("swarm: join %v: %w", step.Remotes, err)
		}
		r.log.Info("swarm: join call returned an error but the node is joining", "state", info.LocalNodeState, "err", err)
	}
	return nil
}

func clusterID(info swarm.Info) string {
	if info.Cluster == nil {
		return "?"
	}
	return info.Cluster.ID
}

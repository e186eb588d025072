package gluster

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/kiln-project/kiln/firstboot/member"
	"github.com/kiln-project/kiln/firstboot/sdunit"
	"github.com/kiln-project/kiln/firstboot/state"
)

// Reconciler converges glusterd and the /var/data mount.
type Reconciler struct {
	cli     *CLI
	systemd sdunit.Manager
	root    string // prefix for files the reconciler writes (brick dir, unit file); "" on a node
	log     *slog.Logger
	now     func() time.Time // the clock (tests)
	// viewTimeout bounds each read of another member's peer list (the const; shorter in tests).
	viewTimeout time.Duration
	mem         memory
}

// memory is what the reconciler keeps from one pass to the next, in the process only: when things last
// happened, which paces its actions and fills its status line. An agent restart loses it; each field says
// what that loss costs. It never leads to a wrong or destructive decision: at most an action comes later,
// or an idempotent one is repeated once (TestRestartedAgentIsHarmless, TestRestartedAgentDelaysReplace).
// Whatever a restarted agent must not get wrong is on disk or observed again: glusterd's own state, the owed
// full heal (FullHealOwedFile), the reset epoch (glusterd.ResetEpochFile).
type memory struct {
	// clusterOptionsSet: this process applied ClusterOptions. They do not show in `volume info`, so they are
	// applied once per agent start rather than observed. Lost: the coordinator sets them once more, which
	// is idempotent.
	clusterOptionsSet bool
	// downSince is when each peer address was first seen disconnected. Lost: the count starts again at the
	// first pass, so a dead member's brick is replaced, and a dead brickless peer detached, up to
	// ReplaceAfter later than it would have been; never sooner. The health line's "since" restarts too.
	downSince map[string]time.Time
	// lastHeal is when an index heal was last launched (at most one a minute). Lost: the first pass may
	// launch one less than a minute after the last.
	lastHeal time.Time
	// lastHealInfo is when heal info was last asked for (healInfoEvery). Lost: the first pass asks at once.
	lastHealInfo time.Time
	// lastRepair is the last corrective action with its reason, shown in status. Lost: status stops naming
	// it.
	lastRepair string
	// lastRestart is when a rejoining node last restarted glusterd (restartEvery). Lost: the first pass may
	// restart glusterd again sooner than restartEvery, and the handshake that restart started begins anew.
	lastRestart time.Time
	// orphanID and orphanSince: the volume id this follower's brick carried while no volume existed, and
	// since when (clearFailedCreate's grace). Lost: the grace starts over, so a failed create's marks are
	// cleared up to orphanGrace later.
	orphanID    string
	orphanSince time.Time
	// createFailed is when this coordinator's last `volume create` failed (createRetryAfter). Lost: the
	// create is retried at once; while a follower's brick still carries the failed create's marks the retry
	// fails the same way and the back-off starts over, so formation comes up to createRetryAfter later.
	createFailed time.Time
	// onlineSince is when this node's brick and self-heal daemon were first seen online while a full heal of
	// the brick is owed (healSettle). Lost: the owed heal waits healSettle again.
	onlineSince time.Time
	// offlineSince is when this node's prepared brick was first seen offline while its full heal is owed, or
	// when it was last started again (brickStartRetry). Lost: the retry waits brickStartRetry again.
	offlineSince time.Time
}

// createRetryAfter is how long a coordinator waits after a failed `volume create` before it tries again. A
// failed create leaves volume-id marks on every brick whose staging passed, and the next create fails on
// exactly those ("… is already part of a volume") while marking the others: retried every pass, the
// followers' marks are never all cleared at once and formation livelocks. Followers clear a mark after
// orphanGrace at their next pass, so the wait covers the grace and two slow passes.
const createRetryAfter = orphanGrace + 2*time.Minute

// New returns the gluster reconciler. root prefixes the paths it writes ("" on a node; a temp dir in tests).
func New(cli *CLI, systemd sdunit.Manager, root string, log *slog.Logger) *Reconciler {
	return &Reconciler{cli: cli, systemd: systemd, root: root, log: log, now: time.Now, viewTimeout: viewTimeout,
		mem: memory{downSince: map[string]time.Time{}}}
}

// Name implements state.Reconciler.
func (r *Reconciler) Name() string { return "gluster" }

// maxRounds bounds observe→plan→act rounds in one pass (probe; create with its options and start; a set
// after members changed: three are enough).
const maxRounds = 5

// Reconcile takes part in storage once the swarm is verified. It runs the plan's stages in order: this node's
// own standing in the pool (selfRepair), the pool and the volume (form), and on a started volume the healing
// (heal); then it mounts.
func (r *Reconciler) Reconcile(ctx context.Context, s *state.State) (bool, error) {
	// The brick's parent must exist before the coordinator creates the volume (glusterd creates only the
	// last path component; staging fails with ENOENT otherwise: glusterd_test.go). On a node the image's
	// tmpfiles.d makes it at boot, before glusterd answers a probe: this pass can come minutes later on a
	// slow node. Made here too for hosts without that file and for tests.
	if err := os.MkdirAll(filepath.Join(r.root, filepath.Dir(BrickPath)), 0o755); err != nil {
		return false, fmt.Errorf("gluster: brick directory: %w", err)
	}
	started, err := r.prepare(ctx, s)
	if err != nil {
		return started, err
	}
	if !s.Swarm.Active {
		// The coordinator probes only members that reported their glusterd's epoch: report it now, so
		// storage formation does not wait for a pass after this node's swarm is up (unless the storage
		// report step already did in this pass: one peer list per pass is enough).
		if s.Gluster.Epoch == "" {
			if err := r.reportEpoch(ctx, s); err != nil {
				r.log.Warn("gluster: observe peers for the epoch report", "err", err)
			}
		}
		s.Wait("gluster", "waiting for swarm")
		return started, nil
	}
	changed, rejoining, last, err := r.selfRepair(ctx, s)
	changed = changed || started
	if err != nil {
		return changed, err
	}
	if rejoining {
		// Until this glusterd is back in its old pool, forming would mean creating a second pool (and, on
		// a coordinator, a second volume): wait for the next pass.
		s.Wait("gluster", "reimaged: rejoining the pool as "+s.Formation.GlusterPeers[s.Self.Addr.String()])
		return changed, nil
	}
	coord, _ := Coordinator(s)
	if err := r.setClusterOptions(ctx, coord.ID == s.Self.ID); err != nil {
		return changed, err
	}
	f, err := r.form(ctx, s, coord, last)
	changed = changed || f.changed
	if err != nil {
		return changed, err
	}
	if w := f.waiting(); w != "" {
		if sh := brickShortage(s); sh != "" && f.obs.Volume == nil {
			w = "forming: " + sh
		}
		s.Wait("gluster", w)
		return changed, nil
	}
	healed, health, err := r.heal(ctx, s, f.obs)
	changed = changed || healed
	if err != nil {
		return changed, err
	}
	mounted, err := r.mount(ctx, s)
	if err != nil {
		return changed, err
	}
	line := r.status(f.obs, health)
	if s.NoBrick != "" {
		line += "; " + s.NoBrick
	}
	s.Set("gluster", line)
	return changed || mounted, nil
}

// prepare gets this node's glusterd ready to be probed: running, and speaking TLS as the record says. It
// reports whether it started or restarted glusterd or wrote the certificate.
func (r *Reconciler) prepare(ctx context.Context, s *state.State) (bool, error) {
	started, err := r.ensureGlusterd(ctx)
	if err != nil {
		return false, err
	}
	tlsChanged, err := r.ensureTLS(ctx, s)
	return started || tlsChanged, err
}

// setClusterOptions applies ClusterOptions on the coordinator, once per agent start (memory), before its
// first probe: in a pool of one the transaction commits locally, and glusterd hands its global options to
// every peer it probes (checked with real glusterds: TestFormationRealGlusterd). Set after `volume start`, it
// would be one more three-node transaction between the start and the mount.
func (r *Reconciler) setClusterOptions(ctx context.Context, coordinator bool) error {
	if !coordinator || r.mem.clusterOptionsSet {
		return nil
	}
	for _, k := range sortedKeys(ClusterOptions) {
		if err := r.cli.Set(ctx, "all", Option{k, ClusterOptions[k]}); err != nil {
			return fmt.Errorf("gluster: set all %s: %w", k, err)
		}
	}
	r.mem.clusterOptionsSet = true
	return nil
}

// formation is what one pass's formation rounds leave for the rest of the pass.
type formation struct {
	// obs is the last observation; no action came after it.
	obs     Observed
	changed bool
	// backoff is why a create is held back, meshing why it waits for the pool to mesh (for status).
	backoff, meshing string
}

// waiting is what formation still waits for, as a status line; "" once the volume is started.
func (f formation) waiting() string {
	switch {
	case f.obs.Volume == nil && f.backoff != "":
		return f.backoff
	case f.obs.Volume == nil && f.meshing != "":
		return "forming: " + f.meshing
	case f.obs.Volume == nil || f.obs.Volume.Status != "Started":
		return fmt.Sprintf("forming: %d peers, volume not started", len(f.obs.Peers))
	}
	return ""
}

// form runs observe → plan → act rounds until the plan is empty. It starts from last when that is
// selfRepair's observation, still current.
func (r *Reconciler) form(ctx context.Context, s *state.State, coord member.Member, last *Observed) (formation, error) {
	var f formation
	var meshDeadline time.Time
	for round, fresh := 0, last; ; fresh = nil {
		if fresh != nil {
			f.obs = *fresh
		} else {
			var err error
			if f.obs, err = r.observe(ctx); err != nil {
				return f, err
			}
		}
		acts, creating, err := r.planForm(ctx, s, coord, &f)
		if err != nil {
			return f, err
		}
		if len(acts) == 0 {
			f.meshing = ""
			if creating {
				f.meshing = meshLag(s, f.obs)
			}
			if f.meshing == "" {
				return f, nil
			}
			// Meshing takes seconds: wait for it in this pass (bounded) rather than a whole pass interval.
			again, err := awaitMesh(ctx, &meshDeadline)
			if err != nil || !again {
				return f, err
			}
			continue
		}
		if round == maxRounds {
			return f, fmt.Errorf("gluster: not converged after %d rounds, next: %v", maxRounds, acts)
		}
		round++
		if err := r.runForm(ctx, acts, &f); err != nil {
			return f, err
		}
	}
}

// planForm plans one formation round on f.obs. With no volume, this node first clears a failed create's
// marks from its brick, and a coordinator that may create reads the other brick members' peer lists
// (unmeshed); for createRetryAfter after a failed create, a create is held back. creating reports that this
// round may create.
func (r *Reconciler) planForm(ctx context.Context, s *state.State, coord member.Member, f *formation) (acts []Action, creating bool, err error) {
	wait := r.mem.createFailed.Add(createRetryAfter).Sub(r.now())
	creating = f.obs.Volume == nil && coord.ID == s.Self.ID && wait <= 0
	if f.obs.Volume == nil {
		if err := r.clearFailedCreate(coord.ID == s.Self.ID); err != nil {
			return nil, false, err
		}
		if creating {
			f.obs.Views = r.observeViews(ctx, s, f.obs)
		}
	} else {
		r.mem.orphanID = ""
	}
	acts = planStage(stageForm, s, HealObserved{Observed: f.obs})
	if wait > 0 {
		if i := slices.IndexFunc(acts, func(a Action) bool { return a.Kind == ActCreate }); i >= 0 {
			acts = acts[:i] // the create, and the options and start of the volume it would make
		}
		f.backoff = fmt.Sprintf("volume create failed at %s: retrying in %s, once the bricks are clear of its marks",
			r.mem.createFailed.UTC().Format(time.RFC3339), wait.Round(time.Second))
	}
	return acts, creating, nil
}

// runForm carries out one formation round's actions.
func (r *Reconciler) runForm(ctx context.Context, acts []Action, f *formation) error {
	for _, a := range acts {
		r.log.Info("gluster: "+a.String(), "volume", VolumeName)
		if err := r.act(ctx, a); err != nil {
			if a.Kind == ActCreate {
				r.mem.createFailed = r.now()
			}
			return err
		}
		if a.Kind == ActStart {
			// A volume started just now holds no file, so nothing can be pending heal: the first heal info
			// (a client graph connecting to every brick, seconds on a TCG guest) waits healInfoEvery.
			r.mem.lastHealInfo = r.now()
		}
		f.changed = true
	}
	return nil
}

// status is the status line of a node whose volume is started and mounted.
func (r *Reconciler) status(obs Observed, health string) string {
	st := fmt.Sprintf("volume %s started (%s, replica %d), %d peers, /var/data mounted", VolumeName, obs.Volume.Type, obs.Volume.Replica, len(obs.Peers))
	if health != "" {
		st += "; " + health
	}
	if r.mem.lastRepair != "" {
		st += "; last repair: " + r.mem.lastRepair
	}
	return st
}

// meshWait bounds how long one pass waits for the pool to mesh before a create, polling every meshPoll.
const (
	meshWait = 30 * time.Second
	meshPoll = time.Second
)

// awaitMesh sleeps meshPoll and reports true while the pass's meshWait, counted from its first call (deadline),
// has not run out.
func awaitMesh(ctx context.Context, deadline *time.Time) (bool, error) {
	if deadline.IsZero() {
		*deadline = time.Now().Add(meshWait)
	}
	if time.Now().After(*deadline) {
		return false, nil
	}
	select {
	case <-ctx.Done():
		return false, ctx.Err()
	case <-time.After(meshPoll):
		return true, nil
	}
}

// Recover shrinks the volume to this node's brick after the majority is lost for good (RecoverPlan), logging
// every step. It is the gluster half of `kiln-firstboot recover --force-new-cluster`.
func (r *Reconciler) Recover(ctx context.Context, self netip.Addr) error {
	obs, err := r.observe(ctx)
	if err != nil {
		return err
	}
	acts, err := RecoverPlan(self, obs.Volume, obs.Peers)
	if err != nil {
		return err
	}
	for _, a := range acts {
		r.log.Info("gluster recover: "+a.String(), "volume", VolumeName, "reason", "operator: recover --force-new-cluster")
		if err := r.act(ctx, a); err != nil {
			return err
		}
	}
	return nil
}

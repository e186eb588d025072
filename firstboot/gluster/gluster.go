package gluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/kiln-project/kiln/firstboot/member"
	"github.com/kiln-project/kiln/firstboot/sdunit"
	"github.com/kiln-project/kiln/firstboot/state"
	"github.com/kiln-project/kiln/internal/files"
)

// The volume, its bricks and its mount (docs/design.md: /var/data on every node, bricks on the state partition).
const (
	VolumeName = "data"
	BrickPath  = "/var/lib/kiln/bricks/data/brick"
	MountPoint = "/var/data"
	// MountUnit is the unit name systemd derives from MountPoint; UnitPath is where the agent writes it
	// (/run: regenerated every boot, nothing to clean up on a read-only root).
	MountUnit = "var-data.mount"
	UnitPath  = "/run/systemd/system/var-data.mount"
)

// Options are the volume options kiln sets; docs/cluster-services.md gives the reasons. auth.allow names every
// member known (alive or not) and every recorded address (state.Inputs.RecordedAddrs): a node that has just booted
// (after a power cut, say) and sees no peer yet must not narrow it to itself, which would lock every other client
// out of its brick.
func Options(members []member.Member, recorded []netip.Addr) map[string]string {
	known := append(addrs(members), recorded...)
	slices.SortFunc(known, netip.Addr.Compare)
	allow := []string{"127.0.0.1"}
	for _, a := range slices.Compact(known) {
		allow = append(allow, a.String())
	}
	return map[string]string{
		// Client quorum: writes need 2 of 3 bricks, so a partitioned minority cannot diverge (split-brain).
		"cluster.quorum-type": "auto",
		// Server quorum: glusterd stops its bricks when it sees less than the ratio (set on "all") of the pool.
		"cluster.server-quorum-type": "server",
		// 5 s instead of 42 s: I/O on the survivors stalls this long after a node dies uncleanly.
		"network.ping-timeout": "5",
		// Only members (and local mounts) may talk to the bricks.
		"auth.allow": strings.Join(allow, ","),
	}
}

// Option is one volume option.
type Option struct{ Key, Value string }

// ClusterOptions are set on the pseudo-volume "all".
var ClusterOptions = map[string]string{"cluster.server-quorum-ratio": "51%"}

// ActionKind names one step the reconciler can take against glusterd.
type ActionKind string

const (
	ActProbe  ActionKind = "probe"
	ActCreate ActionKind = "create"
	ActSet    ActionKind = "set"
	ActStart  ActionKind = "start"
)

// Action is one step; Plan returns them, Reconcile runs them.
type Action struct {
	Kind    ActionKind
	Host    string   // probe
	Replica int      // create
	Bricks  []string // create
	// Options are set in one `volume set` (one cluster-wide transaction: each costs ~20 s on a loaded TCG
	// lab node, so four separate ones delayed formation by a minute).
	Options []Option
	// Value is the action's one argument: the UUID to adopt, the volume id of a brick to prepare, the epoch.
	Value string
	// Pool is the pool's address → glusterd UUID map without this node (adopt-uuid).
	Pool map[string]string
}

func (a Action) String() string {
	switch a.Kind {
	case ActProbe:
		return "probe " + a.Host
	case ActCreate:
		return fmt.Sprintf("create replica %d %s", a.Replica, strings.Join(a.Bricks, " "))
	case ActSet:
		words := []string{"set"}
		for _, o := range a.Options {
			words = append(words, o.Key, o.Value)
		}
		return strings.Join(words, " ")
	case ActReplaceBrick:
		return "replace-brick " + strings.Join(a.Bricks, " ")
	case ActDetach:
		return "peer detach " + a.Host
	case ActAdoptUUID:
		return "adopt glusterd UUID " + a.Value
	case ActAddBrick:
		return fmt.Sprintf("add-brick replica %d %s", a.Replica, strings.Join(a.Bricks, " "))
	case ActRemoveBricks:
		return fmt.Sprintf("remove-brick replica %d %s force", a.Replica, strings.Join(a.Bricks, " "))
	case ActResetPeer:
		return "reset to a fresh peer (epoch " + a.Value + ")"
	default:
		return string(a.Kind)
	}
}

// Observed is what glusterd reports on this node.
type Observed struct {
	Peers  []Peer
	Volume *Volume // nil: no volume `data` (or this node is not in the pool yet)
	// Views are the other brick members' own peer lists, by address, observed only by a coordinator about to
	// create the volume (see unmeshed); a member whose list could not be read has no entry.
	Views map[string][]Peer
}

// Coordinator is the member that probes peers and creates the volume: the swarm initialiser while it is alive,
// else the lowest-ID alive member. Every node computes the same answer from the same membership.
func Coordinator(s *state.State) (member.Member, bool) {
	alive := aliveMembers(s)
	if s.Formation != nil {
		for _, m := range alive {
			if m.ID == s.Formation.Initialiser {
				return m, true
			}
		}
	}
	if len(alive) == 0 {
		return member.Member{}, false
	}
	return alive[0], true
}

// Plan is the pure decision: given the state and what glusterd reports, the next steps for this node.
func Plan(s *state.State, obs Observed) []Action {
	coord, ok := Coordinator(s)
	if !ok {
		return nil
	}
	if coord.ID != s.Self.ID {
		return planFollower(s, obs, coord)
	}
	var acts []Action
	for _, m := range aliveMembers(s) {
		if m.ID != s.Self.ID && findPeer(obs.Peers, m.Addr) == nil && probeable(s, m) {
			acts = append(acts, Action{Kind: ActProbe, Host: m.Addr.String()})
		}
	}
	if obs.Volume == nil {
		if ms := brickMembers(s, obs); ms != nil && meshLag(s, obs) == "" {
			var bricks []string
			for _, m := range ms {
				bricks = append(bricks, m.Addr.String()+":"+BrickPath)
			}
			acts = append(acts, Action{Kind: ActCreate, Replica: len(ms), Bricks: bricks})
		}
		return acts
	}
	want := Options(s.Members, s.RecordedAddrs())
	var set []Option
	for _, k := range sortedKeys(want) {
		if obs.Volume.Options[k] != want[k] {
			set = append(set, Option{Key: k, Value: want[k]})
		}
	}
	if len(set) > 0 {
		acts = append(acts, Action{Kind: ActSet, Options: set})
	}
	if obs.Volume.Status != "Started" {
		acts = append(acts, Action{Kind: ActStart})
	}
	return acts
}

// brickMembers are the members a new volume gets its bricks on: the lowest-ID alive members in this node's
// pool (self is always in its own pool), as many as the replica count; nil while fewer are in.
func brickMembers(s *state.State, obs Observed) []member.Member {
	replica := min(3, max(s.Expected, 1))
	var ready []member.Member
	for _, m := range aliveMembers(s) {
		if m.ID == s.Self.ID {
			ready = append(ready, m)
		} else if p := findPeer(obs.Peers, m.Addr); p != nil && p.InCluster() {
			ready = append(ready, m)
		}
	}
	if len(ready) < replica {
		return nil
	}
	return ready[:replica]
}

// meshLag is unmeshed for the bricks a create would use now ("" when there are not enough of them yet).
func meshLag(s *state.State, obs Observed) string {
	ms := brickMembers(s, obs)
	if ms == nil {
		return ""
	}
	return unmeshed(s.Self, ms, obs.Views)
}

// unmeshed says why the volume cannot be created on bricks yet, "" when it can. Every brick's glusterd stages
// the create and refuses it unless it is connected to every other brick's host; the coordinator's own view
// is not enough: a follower learns of the other followers from the coordinator and connects to them seconds
// later. A create in that window fails in staging ("Staging failed on <follower>. Error: Host <other
// follower> not connected"), and a failed create leaves marks that hold formation back for
// createRetryAfter. So each other brick member's own peer list must show the other followers, and as many
// peers in the pool as there are other bricks, all connected (the coordinator may be listed under the name
// its first probe gave it rather than its address: planFollower). A member whose list could not be read is
// not held against the create: the check guards against a known race, it must not become a way to stall.
func unmeshed(self member.Member, bricks []member.Member, views map[string][]Peer) string {
	for _, b := range bricks {
		if b.ID == self.ID {
			continue
		}
		view, ok := views[b.Addr.String()]
		if !ok {
			continue
		}
		in := 0
		for _, p := range view {
			if p.InCluster() {
				in++
			}
		}
		for _, o := range bricks {
			if o.ID == self.ID || o.ID == b.ID {
				continue
			}
			if p := findPeer(view, o.Addr); p == nil || !p.InCluster() {
				return fmt.Sprintf("%s does not see %s in its pool yet", b.Addr, o.Addr)
			}
		}
		if in < len(bricks)-1 {
			return fmt.Sprintf("%s sees %d of the %d other bricks' hosts in its pool", b.Addr, in, len(bricks)-1)
		}
	}
	return ""
}

// probeable reports whether the coordinator may probe m: its glusterd is in no pool, or its state belongs to
// the record's epoch. A member back from before a `recover` still holds the old pool until it resets its
// glusterd (PlanEpochReset); probed in those seconds, it leaves an entry under its old UUID in the recovered
// pool beside the one of its fresh glusterd, and every add-brick then fails with "Another transaction is
// in progress". A member that has not reported yet is not probed either: its first pass
// reports it, even before its swarm is up.
func probeable(s *state.State, m member.Member) bool {
	if m.GlusterEpoch == member.FreshGluster {
		return true
	}
	e, err := strconv.Atoi(m.GlusterEpoch)
	return err == nil && e >= recordEpoch(s)
}

// recordEpoch is the formation record's epoch (0 before there is a record).
func recordEpoch(s *state.State) int {
	if s.Formation == nil {
		return 0
	}
	return s.Formation.Epoch
}

// GlusterEpoch is what this node reports as member.GlusterEpoch: FreshGluster with no peer, else the newest
// of the epoch it was last ready in, the epoch it was reset for, and the record's epoch once the record
// names this glusterd's UUID at its address. Pure.
func GlusterEpoch(s *state.State, peers []Peer, selfUUID string, resetEpoch int) string {
	if len(peers) == 0 {
		return member.FreshGluster
	}
	e := max(s.LocalEpoch, resetEpoch)
	if s.Formation != nil && selfUUID != "" && s.Formation.GlusterPeers[s.Self.Addr.String()] == selfUUID {
		e = max(e, s.Formation.Epoch)
	}
	return strconv.Itoa(e)
}

// planFollower: the lowest-ID other member probes the coordinator back once it is in the pool, so the
// coordinator is known by its address rather than by whatever name the first probe recorded (glusterdocs#706).
func planFollower(s *state.State, obs Observed, coord member.Member) []Action {
	if len(obs.Peers) == 0 || findPeer(obs.Peers, coord.Addr) != nil {
		return nil
	}
	for _, m := range aliveMembers(s) {
		if m.ID != coord.ID {
			if m.ID == s.Self.ID {
				return []Action{{Kind: ActProbe, Host: coord.Addr.String()}}
			}
			return nil
		}
	}
	return nil
}

// Reconciler converges glusterd and the /var/data mount.
type Reconciler struct {
	cli     *CLI
	systemd sdunit.Manager
	root    string // prefix for files the reconciler writes (brick dir, unit file); "" on a node
	log     *slog.Logger
	// clusterOptionsSet records that ClusterOptions were applied by this process: they are not visible in
	// `volume info`, so they are re-applied once per agent start (idempotent) rather than observed.
	clusterOptionsSet bool
	// now is the clock (tests); downSince is when each peer address was first seen disconnected.
	now       func() time.Time
	downSince map[string]time.Time
	// lastHeal is when an index heal was last started (at most one a minute); lastRepair the last
	// corrective action with its reason, shown in status.
	lastHeal time.Time
	// lastHealInfo is when heal info was last asked for (see healInfoEvery).
	lastHealInfo time.Time
	lastRepair   string
	lastRestart  time.Time
	// orphanID and orphanSince: the volume id this follower's brick carried while no volume existed, and
	// since when (clearFailedCreate's grace).
	orphanID    string
	orphanSince time.Time
	// createFailed is when this coordinator's last `volume create` failed (see createRetryAfter).
	createFailed time.Time
	// onlineSince is when this node's brick and self-heal daemon were first seen online while a full heal
	// of the brick is owed (healSettle).
	onlineSince time.Time
}

// createRetryAfter is how long a coordinator waits after a failed `volume create` before it tries again. A
// failed create leaves volume-id marks on every brick whose staging passed, and the next create fails on
// exactly those ("… is already part of a volume") while marking the others: retried every pass, the
// followers' marks are never all cleared at once and formation livelocks. Followers clear a mark after
// orphanGrace at their next pass, so the wait covers the grace and two slow passes.
const createRetryAfter = orphanGrace + 2*time.Minute

// New returns the gluster reconciler. root prefixes the paths it writes ("" on a node; a temp dir in tests).
func New(cli *CLI, systemd sdunit.Manager, root string, log *slog.Logger) *Reconciler {
	return &Reconciler{cli: cli, systemd: systemd, root: root, log: log, now: time.Now, downSince: map[string]time.Time{}}
}

// Name implements state.Reconciler.
func (r *Reconciler) Name() string { return "gluster" }

// maxRounds bounds observe→plan→act rounds in one pass (probe, create, set, start: four are enough).
const maxRounds = 5

// Reconcile runs after the swarm is verified: it converges the pool and volume (coordinator), then mounts.
func (r *Reconciler) Reconcile(ctx context.Context, s *state.State) (bool, error) {
	// The brick's parent must exist before the coordinator creates the volume (glusterd creates only the
	// last path component; staging fails with ENOENT otherwise: glusterd_test.go). On a node the image's
	// tmpfiles.d makes it at boot, before glusterd answers a probe: this pass can come minutes later on a
	// slow node. Made here too for hosts without that file and for tests.
	if err := os.MkdirAll(filepath.Join(r.root, filepath.Dir(BrickPath)), 0o755); err != nil {
		return false, fmt.Errorf("gluster: brick directory: %w", err)
	}
	if !s.Swarm.Active {
		// The coordinator probes only members that reported their glusterd's epoch: report it now, so
		// storage formation does not wait for a pass after this node's swarm is up.
		if err := r.reportEpoch(ctx, s); err != nil {
			r.log.Warn("gluster: observe peers for the epoch report", "err", err)
		}
		s.Wait("gluster", "waiting for swarm")
		return false, nil
	}
	changed, rejoining, last, err := r.selfRepair(ctx, s)
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
	if coord.ID == s.Self.ID && !r.clusterOptionsSet {
		// Before the first probe: in a pool of one the transaction commits locally, and glusterd hands its
		// global options to every peer it probes (checked with real glusterds: TestFormationRealGlusterd).
		// Set after `volume start`, it was one more three-node transaction between the start and the mount.
		for _, k := range sortedKeys(ClusterOptions) {
			if err := r.cli.Set(ctx, "all", Option{k, ClusterOptions[k]}); err != nil {
				return changed, fmt.Errorf("gluster: set all %s: %w", k, err)
			}
		}
		r.clusterOptionsSet = true
	}
	var obs Observed
	var backoff string // why a create is held back, for status
	var meshing string // why a create waits for the pool to mesh, for status
	var meshDeadline time.Time
	for round, fresh := 0, last; ; fresh = nil {
		if fresh != nil {
			obs = *fresh // selfRepair's observation, taken after its last action
		} else {
			var err error
			if obs, err = r.observe(ctx); err != nil {
				return changed, err
			}
		}
		wait := r.createFailed.Add(createRetryAfter).Sub(r.now())
		creating := obs.Volume == nil && coord.ID == s.Self.ID && wait <= 0
		if obs.Volume == nil {
			if err := r.clearFailedCreate(coord.ID == s.Self.ID); err != nil {
				return changed, err
			}
			if creating {
				obs.Views = r.observeViews(ctx, s, obs)
			}
		} else {
			r.orphanID = ""
		}
		acts := Plan(s, obs)
		if wait > 0 {
			acts = slices.DeleteFunc(acts, func(a Action) bool { return a.Kind == ActCreate })
			backoff = fmt.Sprintf("volume create failed at %s: retrying in %s, once the bricks are clear of its marks",
				r.createFailed.UTC().Format(time.RFC3339), wait.Round(time.Second))
		}
		if len(acts) == 0 {
			meshing = ""
			if creating {
				meshing = meshLag(s, obs)
			}
			if meshing == "" {
				break
			}
			// Meshing takes seconds: wait for it in this pass (bounded) rather than a whole pass interval.
			again, err := awaitMesh(ctx, &meshDeadline)
			if err != nil {
				return changed, err
			}
			if !again {
				break
			}
			continue
		}
		if round == maxRounds {
			return changed, fmt.Errorf("gluster: not converged after %d rounds, next: %v", maxRounds, acts)
		}
		round++
		for _, a := range acts {
			r.log.Info("gluster: "+a.String(), "volume", VolumeName)
			if err := r.act(ctx, a); err != nil {
				if a.Kind == ActCreate {
					r.createFailed = r.now()
				}
				return changed, err
			}
			if a.Kind == ActStart {
				// A volume started just now holds no file, so nothing can be pending heal: the first heal info
				// (a client graph connecting to every brick, seconds on a TCG guest) waits healInfoEvery.
				r.lastHealInfo = r.now()
			}
			changed = true
		}
	}
	if obs.Volume == nil && backoff != "" {
		s.Wait("gluster", backoff)
		return changed, nil
	}
	if obs.Volume == nil && meshing != "" {
		s.Wait("gluster", "forming: "+meshing)
		return changed, nil
	}
	if obs.Volume == nil || obs.Volume.Status != "Started" {
		s.Wait("gluster", fmt.Sprintf("forming: %d peers, volume not started", len(obs.Peers)))
		return changed, nil
	}
	healed, health, err := r.heal(ctx, s, obs)
	changed = changed || healed
	if err != nil {
		return changed, err
	}
	mounted, err := r.mount(ctx, s)
	if err != nil {
		return changed, err
	}
	st := fmt.Sprintf("volume %s started (%s, replica %d), %d peers, /var/data mounted", VolumeName, obs.Volume.Type, obs.Volume.Replica, len(obs.Peers))
	if health != "" {
		st += "; " + health
	}
	if r.lastRepair != "" {
		st += "; last repair: " + r.lastRepair
	}
	s.Set("gluster", st)
	return changed || mounted, nil
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

// observeViews asks the other members a create would put bricks on for their own peer lists (unmeshed), at
// the same time: each answer takes about a second on a TCG guest. A member that does not answer gets no entry.
func (r *Reconciler) observeViews(ctx context.Context, s *state.State, obs Observed) map[string][]Peer {
	ms := brickMembers(s, obs)
	if ms == nil {
		return nil
	}
	views := map[string][]Peer{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, m := range ms {
		if m.ID == s.Self.ID {
			continue
		}
		wg.Go(func() {
			ps, err := r.cli.PeersOf(ctx, m.Addr.String())
			if err != nil {
				r.log.Warn("gluster: cannot read a brick member's peer list; not waiting for it", "member", m.Addr, "err", err)
				return
			}
			mu.Lock()
			views[m.Addr.String()] = ps
			mu.Unlock()
		})
	}
	wg.Wait()
	return views
}

// reportEpoch sets s.Gluster.Epoch from glusterd's peer list (GlusterEpoch).
func (r *Reconciler) reportEpoch(ctx context.Context, s *state.State) error {
	peers, err := r.cli.Peers(ctx)
	if err != nil {
		return err
	}
	uuid, err := ReadUUID(filepath.Join(r.root, GlusterdInfo))
	if err != nil {
		return err
	}
	s.Gluster.Epoch = GlusterEpoch(s, peers, uuid, readResetEpoch(r.root))
	return nil
}

func (r *Reconciler) observe(ctx context.Context) (Observed, error) {
	peers, err := r.cli.Peers(ctx)
	if err != nil {
		return Observed{}, err
	}
	vol, err := r.cli.VolumeInfo(ctx, VolumeName)
	if err != nil {
		return Observed{}, err
	}
	return Observed{Peers: peers, Volume: vol}, nil
}

func (r *Reconciler) act(ctx context.Context, a Action) error {
	var err error
	switch a.Kind {
	case ActProbe:
		err = r.cli.Probe(ctx, a.Host)
	case ActCreate:
		err = r.cli.Create(ctx, VolumeName, a.Replica, a.Bricks)
	case ActSet:
		err = r.cli.Set(ctx, VolumeName, a.Options...)
	case ActStart:
		err = r.cli.Start(ctx, VolumeName)
	case ActStartForce:
		err = r.cli.op(ctx, "volume", "start", VolumeName, "force")
	case ActHeal:
		err = r.cli.Heal(ctx, VolumeName, false)
	case ActHealFull:
		err = r.cli.Heal(ctx, VolumeName, true)
	case ActReplaceBrick:
		err = r.cli.op(ctx, "volume", "replace-brick", VolumeName, a.Bricks[0], a.Bricks[1], "commit", "force")
	case ActDetach:
		// force: the peer is gone for good and holds no brick (checked by PlanHeal); a plain detach
		// refuses a disconnected peer.
		err = r.cli.op(ctx, "peer", "detach", a.Host, "force")
	case ActAdoptUUID:
		err = r.adoptUUID(ctx, a.Value, a.Pool)
	case ActPrepareBrick:
		// Owed first: a crash between the two leaves a heal owed for a brick that gets prepared next pass.
		if err = writeMarker(filepath.Join(r.root, FullHealOwedFile), a.Value); err == nil {
			err = prepareBrick(filepath.Join(r.root, BrickPath), a.Value)
		}
	case ActHealOwnBrick:
		if err = r.cli.Heal(ctx, VolumeName, true); err == nil {
			err = os.Remove(filepath.Join(r.root, FullHealOwedFile))
		}
	case ActAddBrick:
		err = r.cli.op(ctx, append([]string{"volume", "add-brick", VolumeName, "replica", fmt.Sprint(a.Replica)}, a.Bricks...)...)
	case ActRemoveBricks:
		err = r.cli.op(ctx, append(append([]string{"volume", "remove-brick", VolumeName, "replica", fmt.Sprint(a.Replica)}, a.Bricks...), "force")...)
	case ActResetPeer:
		err = r.resetPeer(ctx, a.Value)
	case ActRestartGlusterd:
		err = r.restartGlusterd(ctx)
	default:
		err = fmt.Errorf("unknown action %q", a.Kind)
	}
	if err != nil {
		return fmt.Errorf("gluster: %s: %w", a, err)
	}
	return nil
}

// mount writes the mount unit when it differs, reloads systemd, and starts the mount if it is not active.
func (r *Reconciler) mount(ctx context.Context, s *state.State) (bool, error) {
	unit := RenderMountUnit(s.Self.Addr, backupServers(s))
	path := filepath.Join(r.root, UnitPath)
	old, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return false, fmt.Errorf("gluster: read %s: %w", path, err)
	}
	changed := false
	if !bytes.Equal(old, []byte(unit)) {
		if err := files.Write(path, []byte(unit), 0o644); err != nil {
			return false, fmt.Errorf("gluster: %w", err)
		}
		if err := r.systemd.DaemonReload(ctx); err != nil {
			return true, fmt.Errorf("gluster: %w", err)
		}
		changed = true
	}
	state, err := r.systemd.ActiveState(ctx, MountUnit)
	if err != nil {
		return changed, fmt.Errorf("gluster: %w", err)
	}
	if state != "active" {
		if err := os.MkdirAll(filepath.Join(r.root, MountPoint), 0o755); err != nil {
			return changed, fmt.Errorf("gluster: mount point: %w", err)
		}
		r.log.Info("gluster: mounting", "unit", MountUnit, "was", state)
		if err := r.systemd.Start(ctx, MountUnit); err != nil {
			return changed, fmt.Errorf("gluster: mount %s: %w", MountPoint, err)
		}
		changed = true
	}
	return changed, nil
}

// RenderMountUnit returns the var-data.mount unit. The volfile comes from this node's glusterd; if that is
// down the client asks the backup servers, so a node can mount while its own glusterd restarts.
func RenderMountUnit(self netip.Addr, backups []netip.Addr) string {
	opts := []string{"_netdev"}
	if len(backups) > 0 {
		var bs []string
		for _, b := range backups {
			bs = append(bs, b.String())
		}
		opts = append([]string{"backup-volfile-servers=" + strings.Join(bs, ":")}, opts...)
	}
	return fmt.Sprintf(`# Generated by kiln-firstboot: the GlusterFS volume %[1]s on every node.
[Unit]
Description=kiln shared volume %[1]s
Requires=glusterd.service
After=glusterd.service network-online.target
Wants=network-online.target

[Mount]
What=%[2]s:/%[1]s
Where=%[3]s
Type=glusterfs
Options=%[4]s
TimeoutSec=90
`, VolumeName, self, MountPoint, strings.Join(opts, ","))
}

// backupServers are the other members' addresses (alive or not: the list is only tried in order).
func backupServers(s *state.State) []netip.Addr {
	var out []netip.Addr
	for _, a := range addrs(s.Members) {
		if a != s.Self.Addr.Unmap() {
			out = append(out, a)
		}
	}
	return out
}

func aliveMembers(s *state.State) []member.Member {
	var out []member.Member
	seenSelf := false
	for _, m := range s.Members {
		if m.ID == s.Self.ID {
			seenSelf = true
			out = append(out, s.Self) // self is alive by definition
			continue
		}
		if m.Alive && m.Addr.IsValid() {
			out = append(out, m)
		}
	}
	if !seenSelf && s.Self.ID != "" {
		out = append(out, s.Self)
	}
	slices.SortFunc(out, func(a, b member.Member) int { return strings.Compare(a.ID, b.ID) })
	return out
}

func findPeer(peers []Peer, addr netip.Addr) *Peer {
	for i, p := range peers {
		if slices.Contains(p.Names(), addr.String()) {
			return &peers[i]
		}
	}
	return nil
}

func addrs(members []member.Member) []netip.Addr {
	var out []netip.Addr
	for _, m := range members {
		if m.Addr.IsValid() {
			out = append(out, m.Addr.Unmap())
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return slices.Compact(out)
}

func sortedKeys(m map[string]string) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
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

package gluster

import (
	"context"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/kiln-project/kiln/firstboot/gluster/glusterd"
	"github.com/kiln-project/kiln/firstboot/state"
)

// Observed is what glusterd reports on this node.
type Observed struct {
	Peers  []Peer
	Volume *Volume // nil: no volume `data` (or this node is not in the pool yet)
	// Views are the other brick members' own peer lists, by address, observed only by a coordinator about to
	// create the volume (see unmeshed); a member whose list could not be read has no entry.
	Views map[string][]Peer
}

// HealObserved is what healing decisions look at beyond Observed.
type HealObserved struct {
	Observed
	// SelfUUID is this node's glusterd UUID (glusterd.info); "" when unknown.
	SelfUUID string
	// BrickPrepared reports whether this node's brick directory carries the volume-id xattr.
	BrickPrepared bool
	// FullHealOwed: this node prepared its empty brick and no full heal has been launched for it since
	// (FullHealOwedFile). BrickOnline and HealDaemonOnline are this node's brick and self-heal daemon in
	// `volume status`, and OnlineFor how long both have been seen online; observed only while a heal is owed.
	// ResetEpoch is the epoch this glusterd was last reset for (glusterd.ResetEpochFile; 0: never).
	ResetEpoch       int
	FullHealOwed     bool
	BrickOnline      bool
	HealDaemonOnline bool
	OnlineFor        time.Duration
	// OfflineFor is how long this node's brick has been seen offline while a full heal is owed, since it was
	// last started (0: online).
	OfflineFor time.Duration
	// Heal is `volume heal data info` (nil when not asked: volume absent or not started).
	Heal []HealBrick
	// DownSince is when this node first saw each peer address disconnected (in memory).
	DownSince map[string]time.Time
	Now       time.Time
}

// observe asks glusterd for its peers and the volume at the same time: both are local reads that take no
// cluster lock, and each CLI call costs a process start and a round trip (tens of milliseconds natively,
// about a second on a TCG guest), on the path of every formation round.
func (r *Reconciler) observe(ctx context.Context) (Observed, error) {
	var obs Observed
	var peersErr, volErr error
	var wg sync.WaitGroup
	wg.Go(func() { obs.Peers, peersErr = r.cli.Peers(ctx) })
	wg.Go(func() { obs.Volume, volErr = r.cli.VolumeInfo(ctx, VolumeName) })
	wg.Wait()
	if peersErr != nil {
		return Observed{}, peersErr
	}
	if volErr != nil {
		return Observed{}, volErr
	}
	return obs, nil
}

// viewTimeout bounds one read of another member's peer list. The gluster CLI's own bound is 120 s, and a
// `--remote-host` call can hang that long: in one native formation of 22 the coordinator's read of a
// follower's list sat from the probes to the CLI's timeout, and the create, with every view but that one
// already meshed, waited two minutes for it. An unreadable view is not held against the create (unmeshed);
// a read answers within about a second natively and a few seconds on a loaded TCG guest.
const viewTimeout = 15 * time.Second

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
			ctx, cancel := context.WithTimeout(ctx, r.viewTimeout)
			defer cancel()
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

// healInfoEvery bounds how often the coordinator asks for heal info.
const healInfoEvery = 30 * time.Second

// healObserve adds to observe what healing needs; heal info only when asked (it walks the bricks' indices).
// current is an observation of peers and volume taken since the last action, reused as is; nil observes anew.
func (r *Reconciler) healObserve(ctx context.Context, current *Observed, withHeal bool) (HealObserved, error) {
	var obs Observed
	var err error
	if current != nil {
		obs = *current
	} else if obs, err = r.observe(ctx); err != nil {
		return HealObserved{}, err
	}
	ho := HealObserved{Observed: obs, DownSince: r.mem.downSince, Now: r.now()}
	if ho.SelfUUID, err = glusterd.ReadUUID(filepath.Join(r.root, glusterd.InfoFile)); err != nil {
		return ho, err
	}
	ho.BrickPrepared = glusterd.BrickPrepared(filepath.Join(r.root, BrickPath))
	ho.ResetEpoch = glusterd.ReadResetEpoch(filepath.Join(r.root, glusterd.ResetEpochFile))
	if ho.FullHealOwed = glusterd.HasMarker(filepath.Join(r.root, FullHealOwedFile)); ho.FullHealOwed && obs.Volume != nil && obs.Volume.Status == "Started" {
		if err := r.observeOwnBrick(ctx, &ho); err != nil {
			return ho, err
		}
	}
	// heal info walks every brick's index through glusterd: at most every healInfoEvery, since the planner only
	// needs it to start a heal (itself rate-limited to one a minute), not on every 5 s pass.
	if withHeal && obs.Volume != nil && obs.Volume.Status == "Started" && obs.Volume.Replica > 1 &&
		ho.Now.Sub(r.mem.lastHealInfo) >= healInfoEvery {
		r.mem.lastHealInfo = ho.Now
		// (heal info is an error on a plain distribute volume: after `recover`, until it grows back)
		if ho.Heal, err = r.cli.HealInfo(ctx, VolumeName); err != nil {
			r.log.Warn("gluster: heal info", "err", err) // not fatal: healing waits for the next pass
		}
	}
	return ho, nil
}

// observeOwnBrick fills in whether this node's brick and self-heal daemon are online, and for how long both
// have been: the owed full heal waits for them (healSettle).
func (r *Reconciler) observeOwnBrick(ctx context.Context, ho *HealObserved) error {
	ps, err := r.cli.VolumeStatus(ctx, VolumeName)
	if err != nil {
		return err
	}
	ho.BrickOnline, ho.HealDaemonOnline = localOnline(ps, ho.Volume, ho.SelfUUID)
	if !ho.BrickOnline || !ho.HealDaemonOnline {
		r.mem.onlineSince = time.Time{}
	} else if r.mem.onlineSince.IsZero() {
		r.mem.onlineSince = ho.Now
	}
	if !r.mem.onlineSince.IsZero() {
		ho.OnlineFor = ho.Now.Sub(r.mem.onlineSince)
	}
	switch {
	case ho.BrickOnline:
		r.mem.offlineSince = time.Time{}
	case r.mem.offlineSince.IsZero():
		r.mem.offlineSince = ho.Now
	default:
		ho.OfflineFor = ho.Now.Sub(r.mem.offlineSince)
	}
	return nil
}

// localOnline reads this node's brick and self-heal daemon out of `volume status` (by glusterd UUID: the
// brick line names the host as the volume does, the daemon line says "localhost").
func localOnline(ps []Process, vol *Volume, selfUUID string) (brick, daemon bool) {
	for _, p := range ps {
		if p.PeerID != selfUUID {
			continue
		}
		switch {
		case p.Host == SelfHealDaemon:
			daemon = daemon || p.Online
		case p.Path == BrickPath && slices.Contains(vol.Bricks, p.Host+":"+p.Path):
			brick = brick || p.Online
		}
	}
	return brick, daemon
}

// reportEpoch sets s.Gluster.Epoch from glusterd's peer list (GlusterEpoch).
func (r *Reconciler) reportEpoch(ctx context.Context, s *state.State) error {
	peers, err := r.cli.Peers(ctx)
	if err != nil {
		return err
	}
	uuid, err := glusterd.ReadUUID(filepath.Join(r.root, glusterd.InfoFile))
	if err != nil {
		return err
	}
	s.Gluster.Epoch = GlusterEpoch(s, peers, uuid, glusterd.ReadResetEpoch(filepath.Join(r.root, glusterd.ResetEpochFile)))
	return nil
}

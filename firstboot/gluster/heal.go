package gluster

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"
	"time"

	"github.com/kiln-project/kiln/firstboot/gluster/glusterd"
	"github.com/kiln-project/kiln/firstboot/state"
)

// restartEvery spaces glusterd restarts of a rejoining node: the handshake after a restart takes seconds.
const restartEvery = 30 * time.Second

// selfRepair brings a reimaged node back in place (PlanSelfRepair), before the normal plan runs. rejoining
// reports that this glusterd is not back in its old pool yet: the normal plan must not run meanwhile. When its
// last round found nothing to do, that round's observation is still current and is returned as last, so the
// normal plan starts from it (every gluster CLI call costs about a second on a TCG guest).
func (r *Reconciler) selfRepair(ctx context.Context, s *state.State) (changed, rejoining bool, last *Observed, err error) {
	for round := 0; round < maxRounds; round++ {
		obs, err := r.healObserve(ctx, nil, false)
		if err != nil {
			return changed, false, nil, err
		}
		if round == 0 {
			// Before any repair: a reset below makes it fresh, reported from the next pass on.
			s.Gluster.Epoch = GlusterEpoch(s, obs.Peers, obs.SelfUUID, obs.ResetEpoch)
		}
		acts := planStage(stageSelf, s, obs)
		if len(acts) == 0 {
			return changed, isolated(s, obs), &obs.Observed, nil
		}
		if acts[0].Kind == ActRestartGlusterd && r.now().Sub(r.mem.lastRestart) < restartEvery {
			return changed, true, nil, nil // give the last restart's handshake time
		}
		for _, a := range acts {
			r.log.Info("gluster: "+a.String(), "volume", VolumeName, "reason", selfRepairReason(a))
			if err := r.act(ctx, a); err != nil {
				return changed, rejoins(acts[0].Kind), nil, err
			}
			changed = true
			r.mem.lastRepair = fmt.Sprintf("%s (%s) at %s", a, selfRepairReason(a), r.now().UTC().Format(time.RFC3339))
		}
		if acts[0].Kind == ActRestartGlusterd {
			r.mem.lastRestart = r.now()
		}
		if rejoins(acts[0].Kind) {
			// glusterd restarted or is syncing peers and volumes: look again next pass.
			return changed, true, nil, nil
		}
	}
	return changed, false, nil, nil
}

// rejoins reports whether a self-repair of this kind means the node is not back in its pool yet, so the
// normal plan must wait. Repairing the brick (prepare, start, its full heal) happens in the pool and holds
// nothing back (mount, options), whether it worked or not.
func rejoins(k ActionKind) bool {
	switch k {
	case ActAdoptUUID, ActProbe, ActResetPeer, ActRestartGlusterd:
		return true
	}
	return false
}

func selfRepairReason(a Action) string {
	switch a.Kind {
	case ActAdoptUUID:
		return "reimaged: the pool knows this address as glusterd " + a.Value
	case ActProbe:
		return "reimaged: rejoining the pool through a member"
	case ActPrepareBrick, ActStartForce:
		return "brick directory empty (no volume id): recreating it, then healing it in full"
	case ActHealOwnBrick:
		return "the prepared empty brick and the self-heal daemon are online: healing the brick in full"
	case ActRestartGlusterd:
		return "reimaged: back in the pool but without its volumes; a restart fetches them"
	case ActResetPeer:
		return "the cluster was recovered (epoch " + a.Value + ") without this node: starting over as a fresh peer"
	}
	return ""
}

// heal runs on every node with a started volume: it tracks disconnected peers, and on the coordinator
// publishes the pool's UUIDs and carries out PlanHeal. It returns a one-line health summary.
func (r *Reconciler) heal(ctx context.Context, s *state.State, obs Observed) (bool, string, error) {
	now := r.now()
	health := r.trackDown(obs.Peers, now)
	coord, _ := Coordinator(s)
	if coord.ID != s.Self.ID {
		return false, health, nil
	}
	ho, err := r.healObserve(ctx, &obs, true)
	if err != nil {
		return false, health, err
	}
	s.Gluster.PoolUUIDs = PoolUUIDs(s.Self.Addr, ho.SelfUUID, ho.Peers)
	pending := 0
	for _, h := range ho.Heal {
		pending += max(h.Entries, 0)
	}
	if pending > 0 {
		health = strings.TrimPrefix(health+fmt.Sprintf("; %d entries pending heal", pending), "; ")
	}
	changed := false
	for _, a := range planStage(stageHeal, s, ho) {
		if a.Kind == ActHeal && now.Sub(r.mem.lastHeal) < time.Minute {
			continue
		}
		reason := healReason(a, r.mem.downSince, replaceAfter(s), s)
		r.log.Info("gluster: "+a.String(), "volume", VolumeName, "reason", reason)
		if err := r.act(ctx, a); err != nil {
			return changed, health, err
		}
		changed = true
		if a.Kind == ActHeal {
			r.mem.lastHeal = now
		} else {
			r.mem.lastRepair = fmt.Sprintf("%s (%s) at %s", a, reason, now.UTC().Format(time.RFC3339))
		}
	}
	return changed, health, nil
}

// trackDown notes since when each peer is disconnected (forgetting the ones connected again), and returns
// them as a health line ("" when all are connected).
func (r *Reconciler) trackDown(peers []Peer, now time.Time) string {
	seen := map[string]bool{}
	var down []string
	for _, p := range peers {
		if !p.Connected {
			seen[p.Hostname] = true
			if _, ok := r.mem.downSince[p.Hostname]; !ok {
				r.mem.downSince[p.Hostname] = now
			}
			down = append(down, fmt.Sprintf("%s since %s", p.Hostname, r.mem.downSince[p.Hostname].UTC().Format(time.RFC3339)))
		}
	}
	for h := range r.mem.downSince {
		if !seen[h] {
			delete(r.mem.downSince, h)
		}
	}
	if len(down) == 0 {
		return ""
	}
	return "peers disconnected: " + strings.Join(down, ", ")
}

func healReason(a Action, downSince map[string]time.Time, after time.Duration, s *state.State) string {
	host := a.Host
	if a.Kind == ActReplaceBrick {
		host, _, _ = strings.Cut(a.Bricks[0], ":")
		for _, m := range aliveMembers(s) {
			if m.NoBrick && m.Addr.String() == host {
				return fmt.Sprintf("member %s at %s is back with /var in RAM: it holds no brick, so its brick moves", m.Hostname, host)
			}
		}
	}
	switch a.Kind {
	case ActReplaceBrick, ActDetach:
		return fmt.Sprintf("peer %s disconnected since %s (more than %s) and no alive member has its address",
			host, downSince[host].UTC().Format(time.RFC3339), after)
	case ActHeal:
		return "entries pending heal and every brick connected"
	case ActHealFull:
		return "a brick was replaced or added: fill it"
	case ActAddBrick:
		return "replica count below the cluster's; a newcomer without a brick is in the pool"
	}
	return ""
}

// orphanGrace is how long a follower's brick must carry the same volume id with no volume known before
// clearFailedCreate clears it.
const orphanGrace = time.Minute

// clearFailedCreate undoes what a failed `volume create` leaves on this node's brick (glusterd.ClearVolumeMarks):
// a create that fails after staging marked a brick does not remove the marks, so every later create fails with
// "… is already part of a volume". Only while this glusterd knows no volume, and only on a brick that holds no
// file: anything else is data.
//
// The coordinator runs the create itself and the CLI returns after the commit, so when it sees marks and no
// volume the create failed: it clears at once. A follower cannot tell a failed create from one in flight:
// staging marks its brick before its glusterd lists the volume, and a follower that cleared in that window
// would strip a live volume's marks, so that `volume start` then fails on the missing volume-id. It waits
// until the same id has stayed orphaned for orphanGrace; a create takes seconds.
func (r *Reconciler) clearFailedCreate(coordinator bool) error {
	dir := filepath.Join(r.root, BrickPath)
	data, err := glusterd.BrickData(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("gluster: brick %s: %w", dir, err)
	}
	if data != "" {
		return nil // data: leave it to a human
	}
	id := glusterd.VolumeID(dir)
	if id == "" {
		r.mem.orphanID = ""
		return nil
	}
	if !coordinator {
		if id != r.mem.orphanID {
			r.mem.orphanID, r.mem.orphanSince = id, r.now()
		}
		if r.now().Sub(r.mem.orphanSince) < orphanGrace {
			return nil
		}
	}
	r.mem.orphanID = ""
	r.log.Warn("gluster: clearing a failed create's marks from the empty brick", "brick", dir, "volume_id", id,
		"reason", "no volume exists but the brick carries a volume id")
	return glusterd.ClearVolumeMarks(dir)
}

package gluster

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kiln-project/kiln/firstboot/member"
	"github.com/kiln-project/kiln/firstboot/state"
)

// Healing actions (docs/self-healing.md).
const (
	// ActAdoptUUID: a reimaged node (fresh glusterd, empty pool) takes the UUID the pool knows its address
	// by: stop glusterd, rewrite glusterd.info, write a peer file for every other pool member, start
	// glusterd. It then handshakes with the pool as the member it was and imports the volume.
	ActAdoptUUID ActionKind = "adopt-uuid"
	// ActPrepareBrick: this node hosts a brick of the volume whose directory lacks the volume-id xattr (a
	// reimaged node's empty brick): create it and set trusted.glusterfs.volume-id, which glusterd checks
	// before it starts a brick. Followed by ActStartForce and ActHealFull.
	ActPrepareBrick ActionKind = "prepare-brick"
	// ActStartForce starts the volume's bricks that are not running (`volume start data force`).
	ActStartForce ActionKind = "start-force"
	// ActHeal starts an index heal of the pending entries; ActHealFull a full crawl (an empty brick has
	// no pending markers on the good ones, so only a full heal fills it).
	ActHeal     ActionKind = "heal"
	ActHealFull ActionKind = "heal-full"
	// ActHealOwnBrick is the full heal a prepared empty brick is owed (FullHealOwed), launched once the
	// brick and this node's self-heal daemon are online; a launch clears what is owed.
	ActHealOwnBrick ActionKind = "heal-own-brick"
	// ActReplaceBrick moves a brick of a member gone past cluster.replaceAfter to a newcomer
	// (`replace-brick … commit force`); ActDetach then removes the dead peer from the pool.
	ActReplaceBrick ActionKind = "replace-brick"
	ActDetach       ActionKind = "detach"
	// ActAddBrick grows the replica count by one with a newcomer's brick (after `recover` shrank the
	// volume to the survivor's brick, or on a cluster that started smaller than 3).
	ActAddBrick ActionKind = "add-brick"
	// ActRemoveBricks shrinks the volume to the given replica count, dropping the bricks named
	// (`remove-brick … force`): only `kiln-firstboot recover` does it.
	ActRemoveBricks ActionKind = "remove-bricks"
	// ActResetPeer makes this glusterd a fresh one (state set aside, brick directory set aside): a node
	// from before a `recover` that the new pool does not know.
	ActResetPeer ActionKind = "reset-peer"
	// ActRestartGlusterd restarts this glusterd: after a reimaged node probed back in with its old UUID the
	// handshake stalls ("Accepted peer request" here, "Peer Rejected" on others: it has no volumes); on
	// restart it fetches peers and volumes from the pool (the documented same-UUID procedure).
	ActRestartGlusterd ActionKind = "restart-glusterd"
)

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
	// ResetEpoch is the epoch this glusterd was last reset for (ResetEpochFile; 0: never).
	ResetEpoch       int
	FullHealOwed     bool
	BrickOnline      bool
	HealDaemonOnline bool
	OnlineFor        time.Duration
	// Heal is `volume heal data info` (nil when not asked: volume absent or not started).
	Heal []HealBrick
	// DownSince is when this node first saw each peer address disconnected (in memory).
	DownSince map[string]time.Time
	Now       time.Time
}

// PlanSelfRepair is what a node does for itself: adopt its old UUID when it was reimaged, probe its way back
// into the pool, and prepare its empty brick. Pure.
func PlanSelfRepair(s *state.State, obs HealObserved) []Action {
	self := s.Self.Addr.String()
	if s.Formation == nil {
		return nil
	}
	old, known := s.Formation.GlusterPeers[self]
	if known && obs.SelfUUID != "" && obs.SelfUUID != old && len(obs.Peers) == 0 && obs.Volume == nil {
		// A fresh glusterd on an address the pool knows: it was this machine before the reimage.
		others := map[string]string{}
		for addr, id := range s.Formation.GlusterPeers {
			if addr != self {
				others[addr] = id
			}
		}
		return []Action{{Kind: ActAdoptUUID, Value: old, Pool: others}}
	}
	if known && obs.SelfUUID == old && len(obs.Peers) == 0 {
		// Adopted, not yet back in the pool: probe a member the pool knows, which re-syncs peers and volumes.
		for _, m := range aliveMembers(s) {
			if m.ID != s.Self.ID {
				if _, inPool := s.Formation.GlusterPeers[m.Addr.String()]; inPool {
					return []Action{{Kind: ActProbe, Host: m.Addr.String()}}
				}
			}
		}
		return nil
	}
	if known && obs.SelfUUID == old && len(obs.Peers) > 0 && obs.Volume == nil {
		return []Action{{Kind: ActRestartGlusterd}}
	}
	if obs.Volume != nil && obs.Volume.Status == "Started" && slices.Contains(obs.Volume.Bricks, self+":"+BrickPath) && !obs.BrickPrepared {
		return []Action{{Kind: ActPrepareBrick, Value: obs.Volume.ID}, {Kind: ActStartForce}}
	}
	if obs.FullHealOwed && obs.Volume != nil && obs.Volume.Status == "Started" && obs.BrickOnline && obs.HealDaemonOnline && obs.OnlineFor >= healSettle {
		return []Action{{Kind: ActHealOwnBrick}}
	}
	return nil
}

// healSettle is how long the prepared brick and this node's self-heal daemon must have been online before
// the full heal is launched. The full crawl that fills an empty brick runs in this node's self-heal daemon
// over its local brick: launched before the daemon has connected to the restarted brick, it crawls nothing
// and reports success (a launch right after `start force` leaves the brick empty), and nothing launches it
// again. `volume status` shows the brick online as soon as glusterd has its port; the
// daemon reconnects within a few seconds of that.
const healSettle = 10 * time.Second

// FullHealOwedFile marks a prepared brick that still needs its full heal; it sits beside the brick so
// it goes with it (a new brick disk starts without it and is prepared again).
var FullHealOwedFile = filepath.Join(filepath.Dir(BrickPath), "full-heal-owed")

// RecoverPlan is what `kiln-firstboot recover --force-new-cluster` does to the volume on the survivor: lift
// both quorums (the lost majority can no longer form one), shrink the volume to the local brick, and
// detach every other peer. The reconcilers later restore the options and grow the volume back with
// newcomers (ActAddBrick). Pure.
func RecoverPlan(self netip.Addr, vol *Volume, peers []Peer) ([]Action, error) {
	if vol == nil {
		return nil, errors.New("gluster: recover: no volume " + VolumeName)
	}
	mine := self.String() + ":" + BrickPath
	if !slices.Contains(vol.Bricks, mine) {
		return nil, fmt.Errorf("gluster: recover: this node (%s) holds no brick of %s; recover on a node that does", self, VolumeName)
	}
	acts := []Action{
		{Kind: ActSet, Options: []Option{{"cluster.server-quorum-type", "none"}, {"cluster.quorum-type", "none"}}},
	}
	var others []string
	for _, b := range vol.Bricks {
		if b != mine {
			others = append(others, b)
		}
	}
	if len(others) > 0 {
		acts = append(acts, Action{Kind: ActRemoveBricks, Replica: 1, Bricks: others})
	}
	for _, p := range peers {
		acts = append(acts, Action{Kind: ActDetach, Host: p.Hostname})
	}
	return acts, nil
}

// PlanEpochReset: after a `recover`, a node whose glusterd still belongs to the old pool (it has peers, and
// the new pool's map does not know it by its UUID) must start over as a fresh peer. Pure.
//
// Once per epoch: right after the reset the coordinator probes the fresh glusterd, which then has a peer
// before the record's map names its new UUID; reading that as "still the old pool" would reset it every pass,
// until systemd refuses to start glusterd again.
func PlanEpochReset(s *state.State, obs HealObserved) []Action {
	if s.Formation == nil || s.Formation.Epoch <= s.LocalEpoch || len(obs.Peers) == 0 || s.Formation.GlusterPeers == nil {
		return nil
	}
	if obs.ResetEpoch >= s.Formation.Epoch {
		return nil
	}
	if s.Formation.GlusterPeers[s.Self.Addr.String()] == obs.SelfUUID {
		return nil
	}
	return []Action{{Kind: ActResetPeer, Value: fmt.Sprint(s.Formation.Epoch)}}
}

// resetPeer stops glusterd, sets its state directory and this node's brick aside (renamed, never deleted:
// they may hold writes the survivor never saw, for a human to salvage), and starts a fresh glusterd.
func (r *Reconciler) resetPeer(ctx context.Context, epoch string) error {
	st, ok := r.systemd.(stopper)
	if !ok {
		return errors.New("gluster: reset peer: systemd manager cannot stop units")
	}
	if err := st.Stop(ctx, "glusterd.service"); err != nil {
		return fmt.Errorf("gluster: reset peer: %w", err)
	}
	suffix := ".before-epoch-" + epoch + "." + r.now().UTC().Format("20060102T150405")
	for _, p := range []string{"/var/lib/glusterd", BrickPath} {
		path := filepath.Join(r.root, p)
		if err := os.Rename(path, path+suffix); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("gluster: reset peer: set %s aside: %w", path, err)
		}
	}
	// Recorded before glusterd starts: from here on its state is the new epoch's.
	if err := writeMarker(filepath.Join(r.root, ResetEpochFile), epoch); err != nil {
		return fmt.Errorf("gluster: reset peer: %w", err)
	}
	if err := r.systemd.Start(ctx, "glusterd.service"); err != nil {
		return fmt.Errorf("gluster: reset peer: %w", err)
	}
	return nil
}

// ResetEpochFile holds the epoch this node's glusterd was last reset for (PlanEpochReset).
const ResetEpochFile = "/var/lib/kiln/gluster-reset-epoch"

// writeMarker writes a one-line marker file, creating its directory. Markers are read for their presence or
// one value, so a plain write is enough.
func writeMarker(path, value string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, []byte(value+"\n"), 0o644)
}

// readResetEpoch reads ResetEpochFile under root; absent or unreadable is 0 (never reset).
func readResetEpoch(root string) int {
	b, err := os.ReadFile(filepath.Join(root, ResetEpochFile))
	if err != nil {
		return 0
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0
	}
	return n
}

// isolated: this glusterd has the UUID the pool knows this address by, but no peers (it adopted it and no
// pool member is alive to probe yet).
func isolated(s *state.State, obs HealObserved) bool {
	if s.Formation == nil {
		return false
	}
	old, known := s.Formation.GlusterPeers[s.Self.Addr.String()]
	return known && len(s.Formation.GlusterPeers) > 1 && obs.SelfUUID == old && len(obs.Peers) == 0
}

// PlanHeal is the coordinator's healing decision, after the volume exists. Pure.
//   - A brick on an address that no alive member has, whose peer has been disconnected for ReplaceAfter,
//     moves to an alive pool member without a brick (lowest ID), while a majority of the bricks is up
//     (never act without quorum); then a full heal. A dead peer without bricks is detached.
//   - Pending heal entries with every brick connected: start an index heal (the self-heal daemon would
//     get there within 10 minutes; this makes "node back" converge in seconds).
func PlanHeal(s *state.State, obs HealObserved, replaceAfter time.Duration) []Action {
	if obs.Volume == nil || obs.Volume.Status != "Started" {
		return nil
	}
	alive := map[string]bool{}
	for _, m := range aliveMembers(s) {
		alive[m.Addr.String()] = true
	}
	brickHosts := map[string]bool{}
	up := 0
	for _, b := range obs.Volume.Bricks {
		host, _, _ := strings.Cut(b, ":")
		brickHosts[host] = true
		if host == s.Self.Addr.String() {
			up++
		} else if p := findPeerName(obs.Peers, host); p != nil && p.Connected {
			up++
		}
	}
	quorum := up > len(obs.Volume.Bricks)/2
	gone := func(host string) bool {
		if alive[host] {
			return false
		}
		p := findPeerName(obs.Peers, host)
		if p != nil && p.Connected {
			return false
		}
		since, ok := obs.DownSince[host]
		return ok && obs.Now.Sub(since) >= replaceAfter
	}
	var newcomers []member.Member
	for _, m := range aliveMembers(s) {
		a := m.Addr.String()
		if m.ID == s.Self.ID || brickHosts[a] {
			continue
		}
		if p := findPeerName(obs.Peers, a); p != nil && p.InCluster() {
			newcomers = append(newcomers, m)
		}
	}
	var acts []Action
	for _, b := range obs.Volume.Bricks {
		host, _, _ := strings.Cut(b, ":")
		if !gone(host) || !quorum || len(newcomers) == 0 {
			continue
		}
		n := newcomers[0]
		newcomers = newcomers[1:]
		acts = append(acts, Action{Kind: ActReplaceBrick, Bricks: []string{b, n.Addr.String() + ":" + BrickPath}})
	}
	if len(acts) > 0 {
		return append(acts, Action{Kind: ActHealFull})
	}
	if want := min(3, max(s.Expected, 1)); obs.Volume.Replica < want && len(newcomers) > 0 && up == len(obs.Volume.Bricks) {
		n := newcomers[0]
		return []Action{{Kind: ActAddBrick, Replica: obs.Volume.Replica + 1, Bricks: []string{n.Addr.String() + ":" + BrickPath}}, {Kind: ActHealFull}}
	}
	for _, p := range obs.Peers {
		if brickHosts[p.Hostname] || !gone(p.Hostname) || !quorum {
			continue
		}
		acts = append(acts, Action{Kind: ActDetach, Host: p.Hostname})
	}
	if len(obs.Heal) > 0 {
		pending, connected := 0, true
		for _, h := range obs.Heal {
			if h.Entries < 0 || h.Status != "Connected" {
				connected = false
			}
			pending += max(h.Entries, 0)
		}
		if connected && pending > 0 {
			acts = append(acts, Action{Kind: ActHeal})
		}
	}
	return acts
}

// PoolUUIDs is the address → UUID map the formation record carries (self included), from the coordinator's
// pool view. Peers are known by their address (kiln probes by address).
func PoolUUIDs(self netip.Addr, selfUUID string, peers []Peer) map[string]string {
	if selfUUID == "" {
		return nil
	}
	m := map[string]string{self.String(): selfUUID}
	for _, p := range peers {
		if _, err := netip.ParseAddr(p.Hostname); err == nil && p.UUID != "" {
			m[p.Hostname] = p.UUID
		}
	}
	return m
}

func findPeerName(peers []Peer, host string) *Peer {
	for i, p := range peers {
		if slices.Contains(p.Names(), host) {
			return &peers[i]
		}
	}
	return nil
}

// GlusterdInfo is glusterd's identity file.
const GlusterdInfo = "/var/lib/glusterd/glusterd.info"

// ReadUUID returns the UUID= line of glusterd.info ("" when the file does not exist yet).
func ReadUUID(path string) (string, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("gluster: read %s: %w", path, err)
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "UUID="); ok {
			return v, nil
		}
	}
	return "", nil
}

// WithUUID returns glusterd.info content with the UUID line replaced (other lines, e.g. operating-version,
// kept; a missing UUID line added).
func WithUUID(content []byte, id string) []byte {
	var out []string
	found := false
	for line := range strings.Lines(string(content)) {
		line = strings.TrimRight(line, "\n")
		if strings.HasPrefix(line, "UUID=") {
			line, found = "UUID="+id, true
		}
		if line != "" {
			out = append(out, line)
		}
	}
	if !found {
		out = append([]string{"UUID=" + id}, out...)
	}
	return []byte(strings.Join(out, "\n") + "\n")
}

// volumeIDXattr is the xattr glusterd checks on a brick root before starting the brick.
const volumeIDXattr = "trusted.glusterfs.volume-id"

// brickPrepared reports whether dir carries the volume-id xattr and the .glusterfs directory (without it the
// brick's index translator fails to start).
func brickPrepared(dir string) bool {
	return hasVolumeID(dir) && isDir(filepath.Join(dir, ".glusterfs"))
}

func hasVolumeID(dir string) bool { return volumeID(dir) != "" }

// volumeID returns dir's volume-id xattr in hex ("" when absent).
func volumeID(dir string) string {
	buf := make([]byte, 16)
	if n, err := unix.Getxattr(dir, volumeIDXattr, buf); err != nil || n != 16 {
		return ""
	}
	return hex.EncodeToString(buf)
}

func isFile(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular()
}

func isDir(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.IsDir()
}

// rootGFID is the GFID of every brick's root directory.
var rootGFID = []byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}

// prepareBrick creates dir (empty), sets the volume-id xattr to volumeID and the root GFID, and creates
// .glusterfs: what `volume create` and the first brick start did for the brick originally. Refuses a
// directory that holds anything but .glusterfs: that is data, not a fresh brick.
func prepareBrick(dir, volumeID string) error {
	id, err := parseUUID(volumeID)
	if err != nil {
		return fmt.Errorf("gluster: volume id %q: %w", volumeID, err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("gluster: brick %s: %w", dir, err)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("gluster: brick %s: %w", dir, err)
	}
	for _, e := range ents {
		if e.Name() != ".glusterfs" {
			return fmt.Errorf("gluster: brick %s is not prepared but holds %s; refusing to adopt it", dir, e.Name())
		}
	}
	if err := unix.Setxattr(dir, volumeIDXattr, id[:], 0); err != nil {
		return fmt.Errorf("gluster: set %s on %s: %w", volumeIDXattr, dir, err)
	}
	if err := unix.Setxattr(dir, "trusted.gfid", rootGFID, 0); err != nil {
		return fmt.Errorf("gluster: set trusted.gfid on %s: %w", dir, err)
	}
	if err := os.Mkdir(filepath.Join(dir, ".glusterfs"), 0o600); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("gluster: brick %s: %w", dir, err)
	}
	return nil
}

// stopper is implemented by *sdunit.Conn (not part of sdunit.Manager).
type stopper interface {
	Stop(ctx context.Context, unit string) error
}

// restartEvery spaces glusterd restarts of a rejoining node: the handshake after a restart takes seconds.
const restartEvery = 30 * time.Second

// restartGlusterd stops and starts glusterd.
func (r *Reconciler) restartGlusterd(ctx context.Context) error {
	st, ok := r.systemd.(stopper)
	if !ok {
		return errors.New("gluster: restart glusterd: systemd manager cannot stop units")
	}
	if err := st.Stop(ctx, "glusterd.service"); err != nil {
		return fmt.Errorf("gluster: restart glusterd: %w", err)
	}
	if err := r.systemd.Start(ctx, "glusterd.service"); err != nil {
		return fmt.Errorf("gluster: restart glusterd: %w", err)
	}
	return nil
}

// adoptUUID stops glusterd, writes the old UUID into glusterd.info and the pool's peer files, and starts
// glusterd again.
//
// The peer files are why this converges every time: a glusterd that only knows its UUID has to probe its way
// back, and then rejects the handshakes of the members it has not heard of yet ("Rejecting management
// handshake request from unknown peer"); the pool's view of it stays half-accepted until a
// restart happens to catch the friend update. With every member on file as "Peer in Cluster" it
// handshakes with all of them at start, as after an ordinary reboot, and imports the volume from them.
func (r *Reconciler) adoptUUID(ctx context.Context, id string, pool map[string]string) error {
	st, ok := r.systemd.(stopper)
	if !ok {
		return errors.New("gluster: adopt UUID: systemd manager cannot stop units")
	}
	if _, err := parseUUID(id); err != nil {
		return fmt.Errorf("gluster: adopt UUID %q: %w", id, err)
	}
	path := filepath.Join(r.root, GlusterdInfo)
	if err := st.Stop(ctx, "glusterd.service"); err != nil {
		return fmt.Errorf("gluster: adopt UUID: %w", err)
	}
	old, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("gluster: adopt UUID: %w", err)
	}
	if err := os.WriteFile(path, WithUUID(old, id), 0o600); err != nil {
		return fmt.Errorf("gluster: adopt UUID: %w", err)
	}
	if err := writePeerFiles(filepath.Join(r.root, PeersDir), pool); err != nil {
		return fmt.Errorf("gluster: adopt UUID: %w", err)
	}
	if err := r.systemd.Start(ctx, "glusterd.service"); err != nil {
		return fmt.Errorf("gluster: adopt UUID: %w", err)
	}
	return nil
}

// PeersDir is where glusterd keeps one file per peer, named by its UUID.
const PeersDir = "/var/lib/glusterd/peers"

// peerBefriended is glusterd's GD_FRIEND_STATE_BEFRIENDED ("Peer in Cluster").
const peerBefriended = 3

// PeerFile is the content glusterd stores for a peer it is in a pool with (glusterd_store_peer_write).
func PeerFile(uuid, addr string) []byte {
	return fmt.Appendf(nil, "uuid=%s\nstate=%d\nhostname1=%s\n", uuid, peerBefriended, addr)
}

// writePeerFiles writes dir/<uuid> for every pool member (address → UUID), replacing what is there: the
// directory belongs to a glusterd that is stopped.
func writePeerFiles(dir string, pool map[string]string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for addr, id := range pool {
		if _, err := parseUUID(id); err != nil {
			return fmt.Errorf("peer %s: UUID %q: %w", addr, id, err)
		}
		if _, err := netip.ParseAddr(addr); err != nil {
			return fmt.Errorf("peer %q: %w", addr, err)
		}
		if err := os.WriteFile(filepath.Join(dir, id), PeerFile(id, addr), 0o600); err != nil {
			return err
		}
	}
	return nil
}

// parseUUID decodes the canonical 8-4-4-4-12 form into its 16 bytes.
func parseUUID(s string) ([]byte, error) {
	if len(s) != 36 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
		return nil, errors.New("not a UUID")
	}
	b, err := hex.DecodeString(strings.ReplaceAll(s, "-", ""))
	if err != nil {
		return nil, fmt.Errorf("not a UUID: %w", err)
	}
	return b, nil
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
		acts := PlanEpochReset(s, obs)
		if len(acts) == 0 {
			acts = PlanSelfRepair(s, obs)
		}
		if len(acts) == 0 {
			return changed, isolated(s, obs), &obs.Observed, nil
		}
		if acts[0].Kind == ActRestartGlusterd && r.now().Sub(r.lastRestart) < restartEvery {
			return changed, true, nil, nil // give the last restart's handshake time
		}
		for _, a := range acts {
			r.log.Info("gluster: "+a.String(), "volume", VolumeName, "reason", selfRepairReason(a))
			if err := r.act(ctx, a); err != nil {
				return changed, rejoins(acts[0].Kind), nil, err
			}
			changed = true
			r.lastRepair = fmt.Sprintf("%s (%s) at %s", a, selfRepairReason(a), r.now().UTC().Format(time.RFC3339))
		}
		if acts[0].Kind == ActRestartGlusterd {
			r.lastRestart = r.now()
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
	ho := HealObserved{Observed: obs, DownSince: r.downSince, Now: r.now()}
	if ho.SelfUUID, err = ReadUUID(filepath.Join(r.root, GlusterdInfo)); err != nil {
		return ho, err
	}
	ho.BrickPrepared = brickPrepared(filepath.Join(r.root, BrickPath))
	ho.ResetEpoch = readResetEpoch(r.root)
	if ho.FullHealOwed = isFile(filepath.Join(r.root, FullHealOwedFile)); ho.FullHealOwed && obs.Volume != nil && obs.Volume.Status == "Started" {
		ps, err := r.cli.VolumeStatus(ctx, VolumeName)
		if err != nil {
			return ho, err
		}
		ho.BrickOnline, ho.HealDaemonOnline = localOnline(ps, obs.Volume, ho.SelfUUID)
		if !ho.BrickOnline || !ho.HealDaemonOnline {
			r.onlineSince = time.Time{}
		} else if r.onlineSince.IsZero() {
			r.onlineSince = ho.Now
		}
		if !r.onlineSince.IsZero() {
			ho.OnlineFor = ho.Now.Sub(r.onlineSince)
		}
	}
	// heal info walks every brick's index through glusterd: at most every healInfoEvery, since the planner only
	// needs it to start a heal (itself rate-limited to one a minute), not on every 5 s pass.
	if withHeal && obs.Volume != nil && obs.Volume.Status == "Started" && obs.Volume.Replica > 1 &&
		ho.Now.Sub(r.lastHealInfo) >= healInfoEvery {
		r.lastHealInfo = ho.Now
		// (heal info is an error on a plain distribute volume: after `recover`, until it grows back)
		if ho.Heal, err = r.cli.HealInfo(ctx, VolumeName); err != nil {
			r.log.Warn("gluster: heal info", "err", err) // not fatal: healing waits for the next pass
		}
	}
	return ho, nil
}

// heal runs on every node with a started volume: it tracks disconnected peers, and on the coordinator
// publishes the pool's UUIDs and carries out PlanHeal. It returns a one-line health summary.
func (r *Reconciler) heal(ctx context.Context, s *state.State, obs Observed) (bool, string, error) {
	now := r.now()
	seen := map[string]bool{}
	var down []string
	for _, p := range obs.Peers {
		if !p.Connected {
			seen[p.Hostname] = true
			if _, ok := r.downSince[p.Hostname]; !ok {
				r.downSince[p.Hostname] = now
			}
			down = append(down, fmt.Sprintf("%s since %s", p.Hostname, r.downSince[p.Hostname].UTC().Format(time.RFC3339)))
		}
	}
	for h := range r.downSince {
		if !seen[h] {
			delete(r.downSince, h)
		}
	}
	health := ""
	if len(down) > 0 {
		health = "peers disconnected: " + strings.Join(down, ", ")
	}
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
	replaceAfter := s.ReplaceAfter
	if replaceAfter == 0 {
		replaceAfter = 10 * time.Minute
	}
	changed := false
	for _, a := range PlanHeal(s, ho, replaceAfter) {
		if a.Kind == ActHeal && now.Sub(r.lastHeal) < time.Minute {
			continue
		}
		reason := healReason(a, r.downSince, replaceAfter)
		r.log.Info("gluster: "+a.String(), "volume", VolumeName, "reason", reason)
		if err := r.act(ctx, a); err != nil {
			return changed, health, err
		}
		changed = true
		if a.Kind == ActHeal {
			r.lastHeal = now
		} else {
			r.lastRepair = fmt.Sprintf("%s (%s) at %s", a, reason, now.UTC().Format(time.RFC3339))
		}
	}
	return changed, health, nil
}

func healReason(a Action, downSince map[string]time.Time, after time.Duration) string {
	host := a.Host
	if a.Kind == ActReplaceBrick {
		host, _, _ = strings.Cut(a.Bricks[0], ":")
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

// clearFailedCreate undoes what a failed `volume create` leaves on this node's brick: glusterd sets the
// volume-id (and gfid) xattrs on a brick while staging, and a create that then fails elsewhere does not
// remove them, so every later create fails with "… is already part of a volume".
// Only while this glusterd knows no volume, and only on a brick that holds no file: anything else is data.
//
// The coordinator runs the create itself and the CLI returns after the commit, so when it sees marks and no
// volume the create failed: it clears at once. A follower cannot tell a failed create from one in flight:
// staging marks its brick before its glusterd lists the volume, and a follower that cleared in that window
// would strip a live volume's marks, so that `volume start` then fails on the missing volume-id. It waits
// until the same id has stayed orphaned for orphanGrace; a create takes seconds.
func (r *Reconciler) clearFailedCreate(coordinator bool) error {
	dir := filepath.Join(r.root, BrickPath)
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("gluster: brick %s: %w", dir, err)
	}
	for _, e := range ents {
		if e.Name() != ".glusterfs" {
			return nil // data: leave it to a human
		}
	}
	id := volumeID(dir)
	if id == "" {
		r.orphanID = ""
		return nil
	}
	if !coordinator {
		if id != r.orphanID {
			r.orphanID, r.orphanSince = id, r.now()
		}
		if r.now().Sub(r.orphanSince) < orphanGrace {
			return nil
		}
	}
	r.orphanID = ""
	r.log.Warn("gluster: clearing a failed create's marks from the empty brick", "brick", dir, "volume_id", id,
		"reason", "no volume exists but the brick carries a volume id")
	for _, x := range []string{volumeIDXattr, "trusted.gfid"} {
		if err := unix.Removexattr(dir, x); err != nil && !errors.Is(err, unix.ENODATA) {
			return fmt.Errorf("gluster: remove %s from %s: %w", x, dir, err)
		}
	}
	if err := os.RemoveAll(filepath.Join(dir, ".glusterfs")); err != nil {
		return fmt.Errorf("gluster: %w", err)
	}
	return nil
}

package gluster

import (
	"bytes"
	"errors"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kiln-project/kiln/firstboot/member"
)

const (
	uuidA = "aaaaaaaa-0000-4000-8000-00000000000a"
	uuidB = "bbbbbbbb-0000-4000-8000-00000000000b"
	uuidC = "cccccccc-0000-4000-8000-00000000000c"
	uuidX = "99999999-0000-4000-8000-000000000099"
	volID = "12345678-1234-4123-8123-123456789abc"
)

func bricks(ms ...member.Member) []string {
	var out []string
	for _, m := range ms {
		out = append(out, m.Addr.String()+":"+BrickPath)
	}
	return out
}

func kinds(acts []Action) string {
	var ks []string
	for _, a := range acts {
		ks = append(ks, a.String())
	}
	return strings.Join(ks, "; ")
}

func TestPlanSelfRepair(t *testing.T) {
	pool := map[string]string{"10.77.0.11": uuidA, "10.77.0.12": uuidB, "10.77.0.13": uuidC}
	started := &Volume{ID: volID, Status: "Started", Bricks: bricks(mA, mB, mC)}
	tests := []struct {
		name string
		pool map[string]string
		obs  HealObserved
		want string
	}{
		{"reimaged: fresh glusterd on a known address adopts the old UUID", pool,
			HealObserved{SelfUUID: uuidX}, "adopt glusterd UUID " + uuidC},
		{"adopted, pool empty: probe a pool member", pool,
			HealObserved{SelfUUID: uuidC}, "probe 10.77.0.11"},
		{"probed back in, volumes not synced yet: restart glusterd", pool,
			HealObserved{SelfUUID: uuidC, Observed: Observed{Peers: []Peer{peer(mA, false)}}}, "restart-glusterd"},
		{"back in the pool, brick directory without volume id: recreate and start it (a full heal is owed)", pool,
			HealObserved{SelfUUID: uuidC, Observed: Observed{Peers: []Peer{peer(mA, true), peer(mB, true)}, Volume: started}},
			"prepare-brick; start-force"},
		{"full heal owed, brick online, self-heal daemon not yet: wait", pool,
			HealObserved{SelfUUID: uuidC, BrickPrepared: true, FullHealOwed: true, BrickOnline: true, Observed: Observed{Peers: []Peer{peer(mA, true), peer(mB, true)}, Volume: started}}, ""},
		{"full heal owed, both online but only just: wait for the daemon to connect to the brick", pool,
			HealObserved{SelfUUID: uuidC, BrickPrepared: true, FullHealOwed: true, BrickOnline: true, HealDaemonOnline: true, OnlineFor: time.Second, Observed: Observed{Peers: []Peer{peer(mA, true), peer(mB, true)}, Volume: started}}, ""},
		{"full heal owed, both online for healSettle: launch it", pool,
			HealObserved{SelfUUID: uuidC, BrickPrepared: true, FullHealOwed: true, BrickOnline: true, HealDaemonOnline: true, OnlineFor: healSettle, Observed: Observed{Peers: []Peer{peer(mA, true), peer(mB, true)}, Volume: started}}, "heal-own-brick"},
		{"healthy node", pool,
			HealObserved{SelfUUID: uuidC, BrickPrepared: true, Observed: Observed{Peers: []Peer{peer(mA, true), peer(mB, true)}, Volume: started}}, ""},
		{"new machine, address unknown to the pool: nothing to adopt", map[string]string{"10.77.0.11": uuidA},
			HealObserved{SelfUUID: uuidX}, ""},
		{"fresh glusterd but already has peers (formation in progress): never adopt", pool,
			HealObserved{SelfUUID: uuidX, Observed: Observed{Peers: []Peer{peer(mA, true)}}}, ""},
		{"no map yet (record from before)", nil, HealObserved{SelfUUID: uuidX}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := st(mC, mA, mB, mC)
			s.Formation.GlusterPeers = tc.pool
			if got := kinds(PlanSelfRepair(s, tc.obs)); got != tc.want {
				t.Errorf("PlanSelfRepair = %q, want %q", got, tc.want)
			}
		})
	}
	// Adopting carries the rest of the pool, which becomes the node's peer files.
	s := st(mC, mA, mB, mC)
	s.Formation.GlusterPeers = pool
	acts := PlanSelfRepair(s, HealObserved{SelfUUID: uuidX})
	want := map[string]string{"10.77.0.11": uuidA, "10.77.0.12": uuidB}
	if len(acts) != 1 || !maps.Equal(acts[0].Pool, want) {
		t.Errorf("adopt action %+v, want pool %v", acts, want)
	}
}

func TestWritePeerFiles(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "peers")
	if err := writePeerFiles(dir, map[string]string{"10.77.0.11": uuidA}); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(dir, uuidA))
	if err != nil {
		t.Fatal(err)
	}
	if want := "uuid=" + uuidA + "\nstate=3\nhostname1=10.77.0.11\n"; string(got) != want {
		t.Errorf("peer file %q, want %q", got, want)
	}
	if err := writePeerFiles(dir, map[string]string{"10.77.0.12": "not-a-uuid"}); err == nil {
		t.Error("a malformed UUID from the formation record was written as a peer file")
	}
}

func TestPlanHeal(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	mD := member.Member{ID: "d", Addr: mC.Addr.Next(), Alive: true}
	deadC := mC
	deadC.Alive = false
	started := &Volume{ID: volID, Status: "Started", Bricks: bricks(mA, mB, mC)}
	cDown := peer(mC, false)
	cDown.Connected = false
	long := map[string]time.Time{"10.77.0.13": now.Add(-11 * time.Minute)}
	short := map[string]time.Time{"10.77.0.13": now.Add(-time.Minute)}
	healthy := []HealBrick{{Status: "Connected"}, {Status: "Connected"}, {Status: "Connected"}}
	pending := []HealBrick{{Status: "Connected", Entries: 4}, {Status: "Connected"}, {Status: "Connected", Entries: 1}}
	oneDown := []HealBrick{{Status: "Connected", Entries: 4}, {Status: "Connected"}, {Status: "Transport endpoint is not connected", Entries: -1}}
	tests := []struct {
		name    string
		members []member.Member
		peers   []Peer
		vol     *Volume
		heal    []HealBrick
		down    map[string]time.Time
		want    string
	}{
		{"healthy", []member.Member{mA, mB, mC}, []Peer{peer(mB, true), peer(mC, true)}, started, healthy, nil, ""},
		{"node back, entries pending, all bricks connected: heal", []member.Member{mA, mB, mC}, []Peer{peer(mB, true), peer(mC, true)}, started, pending, nil, "heal"},
		{"a brick still down: the heal waits", []member.Member{mA, mB, deadC}, []Peer{peer(mB, true), cDown}, started, oneDown, short, ""},
		{"dead inside the grace period, newcomer waiting: wait", []member.Member{mA, mB, deadC, mD}, []Peer{peer(mB, true), cDown, peer(mD, true)}, started, oneDown, short, ""},
		{"dead past the grace period, newcomer in the pool: replace, then full heal", []member.Member{mA, mB, deadC, mD}, []Peer{peer(mB, true), cDown, peer(mD, true)}, started, oneDown, long,
			"replace-brick 10.77.0.13:" + BrickPath + " 10.77.0.14:" + BrickPath + "; heal-full"},
		{"dead past the grace period, newcomer not yet in the pool: wait", []member.Member{mA, mB, deadC, mD}, []Peer{peer(mB, true), cDown}, started, oneDown, long, ""},
		{"dead past the grace period, no newcomer: keep the brick", []member.Member{mA, mB, deadC}, []Peer{peer(mB, true), cDown}, started, oneDown, long, ""},
		{"replaced: detach the dead peer", []member.Member{mA, mB, deadC, mD}, []Peer{peer(mB, true), cDown, peer(mD, true)},
			&Volume{ID: volID, Status: "Started", Bricks: bricks(mA, mB, mD)}, healthy, long, "peer detach 10.77.0.13"},
		{"alive member with a disconnected peer entry (glusterd restarting): never replaced", []member.Member{mA, mB, mC, mD}, []Peer{peer(mB, true), cDown, peer(mD, true)}, started, oneDown, long, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := st(mA, tc.members...)
			obs := HealObserved{Observed: Observed{Peers: tc.peers, Volume: tc.vol}, Heal: tc.heal, DownSince: tc.down, Now: now}
			if got := kinds(PlanHeal(s, obs, 10*time.Minute)); got != tc.want {
				t.Errorf("PlanHeal = %q, want %q", got, tc.want)
			}
		})
	}
	// Without a majority of bricks up nothing is replaced (two bricks gone: no quorum to act with).
	deadB := mB
	deadB.Alive = false
	bDown := peer(mB, false)
	bDown.Connected = false
	twoDown := map[string]time.Time{"10.77.0.12": now.Add(-time.Hour), "10.77.0.13": now.Add(-time.Hour)}
	s := st(mA, mA, deadB, deadC, mD)
	obs := HealObserved{Observed: Observed{Peers: []Peer{bDown, cDown, peer(mD, true)}, Volume: started}, DownSince: twoDown, Now: now}
	if got := kinds(PlanHeal(s, obs, 10*time.Minute)); got != "" {
		t.Errorf("without quorum PlanHeal = %q, want nothing", got)
	}
}

func TestPoolUUIDs(t *testing.T) {
	pb, pc := peer(mB, true), peer(mC, false)
	pb.UUID, pc.UUID = uuidB, uuidC
	m := PoolUUIDs(mA.Addr, uuidA, []Peer{pb, pc})
	if len(m) != 3 || m["10.77.0.11"] != uuidA || m["10.77.0.13"] != uuidC {
		t.Errorf("PoolUUIDs = %v", m)
	}
	if PoolUUIDs(mA.Addr, "", nil) != nil {
		t.Error("unknown self UUID must give no map (never publish a partial one)")
	}
}

func TestGlusterdInfoUUID(t *testing.T) {
	path := filepath.Join(t.TempDir(), "glusterd.info")
	if id, err := ReadUUID(path); err != nil || id != "" {
		t.Fatalf("missing file: %q %v", id, err)
	}
	if err := os.WriteFile(path, []byte("UUID="+uuidX+"\noperating-version=100000\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(path)
	if err := os.WriteFile(path, WithUUID(b, uuidC), 0o600); err != nil {
		t.Fatal(err)
	}
	if id, err := ReadUUID(path); err != nil || id != uuidC {
		t.Fatalf("after rewrite: %q %v", id, err)
	}
	if b, _ := os.ReadFile(path); !strings.Contains(string(b), "operating-version=100000\n") {
		t.Errorf("operating-version lost: %s", b)
	}
	if got := string(WithUUID(nil, uuidC)); got != "UUID="+uuidC+"\n" {
		t.Errorf("WithUUID(empty) = %q", got)
	}
}

func TestPrepareBrick(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "brick")
	if err := prepareBrick(dir, volID); err != nil {
		if errors.Is(err, unix.EPERM) || errors.Is(err, unix.ENOTSUP) {
			t.Skipf("trusted xattrs need root and a filesystem that has them: %v", err)
		}
		t.Fatal(err)
	}
	if !brickPrepared(dir) {
		t.Fatal("volume id xattr not set")
	}
	buf := make([]byte, 16)
	if _, err := unix.Getxattr(dir, volumeIDXattr, buf); err != nil || buf[0] != 0x12 || buf[15] != 0xbc {
		t.Fatalf("xattr = %x %v", buf, err)
	}
	other := filepath.Join(t.TempDir(), "used")
	os.MkdirAll(other, 0o755)
	os.WriteFile(filepath.Join(other, "file"), []byte("data"), 0o644)
	if err := prepareBrick(other, volID); err == nil {
		t.Fatal("a non-empty directory was adopted as a fresh brick")
	}
	if _, err := parseUUID("nope"); err == nil {
		t.Fatal("parseUUID accepted garbage")
	}
}

func TestRecoverPlan(t *testing.T) {
	vol := &Volume{ID: volID, Status: "Started", Replica: 3, Bricks: bricks(mA, mB, mC)}
	acts, err := RecoverPlan(mA.Addr, vol, []Peer{peer(mB, false), peer(mC, false)})
	if err != nil {
		t.Fatal(err)
	}
	want := "set cluster.server-quorum-type none cluster.quorum-type none; remove-brick replica 1 10.77.0.12:" + BrickPath +
		" 10.77.0.13:" + BrickPath + " force; peer detach 10.77.0.12; peer detach 10.77.0.13"
	if got := kinds(acts); got != want {
		t.Errorf("RecoverPlan =\n %q\nwant\n %q", got, want)
	}
	if _, err := RecoverPlan(mC.Addr.Next().Next(), vol, nil); err == nil {
		t.Error("recover on a node without a brick must refuse")
	}
	if _, err := RecoverPlan(mA.Addr, nil, nil); err == nil {
		t.Error("recover without a volume must refuse")
	}
}

func TestPlanHealGrowsAfterRecover(t *testing.T) {
	mD := member.Member{ID: "d", Addr: mC.Addr.Next(), Alive: true}
	one := &Volume{ID: volID, Status: "Started", Replica: 1, Bricks: bricks(mA)}
	s := st(mA, mA, mD)
	obs := HealObserved{Observed: Observed{Peers: []Peer{peer(mD, true)}, Volume: one}, Now: time.Now()}
	if got, want := kinds(PlanHeal(s, obs, time.Minute)), "add-brick replica 2 10.77.0.14:"+BrickPath+"; heal-full"; got != want {
		t.Errorf("PlanHeal = %q, want %q", got, want)
	}
	// Not while the newcomer is still being probed, nor beyond the cluster's replica count.
	obs.Peers = []Peer{peer(mD, false)}
	if got := kinds(PlanHeal(s, obs, time.Minute)); got != "" {
		t.Errorf("newcomer not in the pool yet: PlanHeal = %q", got)
	}
	full := &Volume{ID: volID, Status: "Started", Replica: 3, Bricks: bricks(mA, mB, mC)}
	s = st(mA, mA, mB, mC, mD)
	obs = HealObserved{Observed: Observed{Peers: []Peer{peer(mB, true), peer(mC, true), peer(mD, true)}, Volume: full}, Now: time.Now()}
	if got := kinds(PlanHeal(s, obs, time.Minute)); got != "" {
		t.Errorf("a 4th member of a full replica 3: PlanHeal = %q, want nothing (it is a client)", got)
	}
}

func TestPlanEpochReset(t *testing.T) {
	s := st(mC, mA, mB, mC)
	s.Formation.Epoch = 1
	s.Formation.GlusterPeers = map[string]string{"10.77.0.11": uuidA}
	old := HealObserved{SelfUUID: uuidC, Observed: Observed{Peers: []Peer{peer(mA, false), peer(mB, false)}}}
	if got := kinds(PlanEpochReset(s, old)); got != "reset to a fresh peer (epoch 1)" {
		t.Errorf("node from before the recovery: %q", got)
	}
	s.LocalEpoch = 1
	if got := kinds(PlanEpochReset(s, old)); got != "" {
		t.Errorf("node of the current epoch: %q", got)
	}
	s.LocalEpoch = 0
	fresh := HealObserved{SelfUUID: uuidX}
	if got := kinds(PlanEpochReset(s, fresh)); got != "" {
		t.Errorf("fresh node (no peers): %q", got)
	}
	// Reset once for epoch 1: the coordinator then probes the fresh glusterd, which has a peer before the
	// record's map names its new UUID. That must not read as "still the old pool".
	probed := HealObserved{SelfUUID: uuidX, ResetEpoch: 1, Observed: Observed{Peers: []Peer{peer(mA, true)}}}
	if got := kinds(PlanEpochReset(s, probed)); got != "" {
		t.Errorf("fresh glusterd already reset for this epoch, probed in: %q", got)
	}
	s.Formation.Epoch = 2
	if got := kinds(PlanEpochReset(s, probed)); got != "reset to a fresh peer (epoch 2)" {
		t.Errorf("reset for epoch 1, cluster recovered again (epoch 2): %q", got)
	}
	s.Formation.Epoch = 1
	s.Formation.GlusterPeers["10.77.0.13"] = uuidC
	if got := kinds(PlanEpochReset(s, old)); got != "" {
		t.Errorf("node the recovered pool knows: %q", got)
	}
}

// TestClearFailedCreate: a volume id on an empty brick with no volume known is cleared at once by the
// coordinator (its own create returned, so it failed) and by a follower only once the same id has stayed so
// for orphanGrace: a follower that saw "no volume" just before a create committed must not strip the marks of
// the volume being born.
func TestClearFailedCreate(t *testing.T) {
	mark := func(t *testing.T, id byte) string {
		root := t.TempDir()
		brick := filepath.Join(root, BrickPath)
		if err := os.MkdirAll(filepath.Join(brick, ".glusterfs"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := unix.Setxattr(brick, volumeIDXattr, bytes.Repeat([]byte{id}, 16), 0); err != nil {
			t.Skipf("trusted xattrs unavailable here (need root): %v", err)
		}
		return root
	}
	t.Run("coordinator clears at once", func(t *testing.T) {
		root := mark(t, 1)
		r := New(nil, nil, root, slog.New(slog.DiscardHandler))
		if err := r.clearFailedCreate(true); err != nil {
			t.Fatal(err)
		}
		if hasVolumeID(filepath.Join(root, BrickPath)) {
			t.Fatal("coordinator left a failed create's marks")
		}
	})
	t.Run("follower waits out the grace", func(t *testing.T) {
		root := mark(t, 1)
		brick := filepath.Join(root, BrickPath)
		now := time.Unix(1000, 0)
		r := New(nil, nil, root, slog.New(slog.DiscardHandler))
		r.now = func() time.Time { return now }
		step := func(d time.Duration) {
			t.Helper()
			now = now.Add(d)
			if err := r.clearFailedCreate(false); err != nil {
				t.Fatal(err)
			}
		}
		step(0)
		step(orphanGrace - time.Second)
		if !hasVolumeID(brick) {
			t.Fatal("cleared before the grace ran out")
		}
		// Another create marked the brick with a new id: the grace starts again.
		if err := unix.Setxattr(brick, volumeIDXattr, bytes.Repeat([]byte{2}, 16), 0); err != nil {
			t.Fatal(err)
		}
		step(2 * time.Second)
		if !hasVolumeID(brick) {
			t.Fatal("a fresh mark was cleared on the old one's grace")
		}
		step(orphanGrace)
		if hasVolumeID(brick) {
			t.Fatal("still marked after the grace")
		}
		if _, err := os.Stat(filepath.Join(brick, ".glusterfs")); !os.IsNotExist(err) {
			t.Errorf(".glusterfs left behind: %v", err)
		}
	})
	t.Run("brick with data is never touched", func(t *testing.T) {
		root := mark(t, 1)
		brick := filepath.Join(root, BrickPath)
		if err := os.WriteFile(filepath.Join(brick, "record"), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
		r := New(nil, nil, root, slog.New(slog.DiscardHandler))
		if err := r.clearFailedCreate(true); err != nil {
			t.Fatal(err)
		}
		if !hasVolumeID(brick) {
			t.Fatal("the marks of a brick holding data were cleared")
		}
	})
}

func TestLocalOnline(t *testing.T) {
	vol := &Volume{Bricks: bricks(mA, mB, mC)}
	brick := func(m member.Member, id string, online bool) Process {
		return Process{Host: m.Addr.String(), Path: BrickPath, PeerID: id, Online: online}
	}
	shd := func(path, id string, online bool) Process {
		return Process{Host: SelfHealDaemon, Path: path, PeerID: id, Online: online}
	}
	tests := []struct {
		name          string
		ps            []Process
		brick, daemon bool
	}{
		{"both up", []Process{brick(mA, uuidA, true), brick(mC, uuidC, true), shd("localhost", uuidC, true), shd("10.77.0.11", uuidA, true)}, true, true},
		{"own brick still down (others' are up)", []Process{brick(mA, uuidA, true), brick(mC, uuidC, false), shd("localhost", uuidC, true)}, false, true},
		{"another node's daemon does not count", []Process{brick(mC, uuidC, true), shd("10.77.0.11", uuidA, true)}, true, false},
		{"no lines for this node yet", []Process{brick(mA, uuidA, true)}, false, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if b, d := localOnline(tc.ps, vol, uuidC); b != tc.brick || d != tc.daemon {
				t.Errorf("localOnline = brick %v daemon %v, want %v %v", b, d, tc.brick, tc.daemon)
			}
		})
	}
}

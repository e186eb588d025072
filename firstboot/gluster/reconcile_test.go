package gluster

import (
	"context"
	"flag"
	"io"
	"log/slog"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kiln-project/kiln/firstboot/gluster/glusterd"
	"github.com/kiln-project/kiln/firstboot/member"
	"github.com/kiln-project/kiln/firstboot/state"
)

var update = flag.Bool("update", false, "rewrite golden files under testdata/")

func TestRenderMountUnitGolden(t *testing.T) {
	got := RenderMountUnit(mA.Addr, []netip.Addr{mB.Addr, mC.Addr})
	path := filepath.Join("testdata", "var-data.mount")
	if *update {
		os.WriteFile(path, []byte(got), 0o644)
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if got != string(want) {
		t.Errorf("mount unit differs from %s:\n%s", path, got)
	}
	if !strings.Contains(RenderMountUnit(mA.Addr, nil), "Options=_netdev\n") {
		t.Error("no backups: options should be just _netdev")
	}
}

func TestReconcileFormsAndMountsThenIsIdempotent(t *testing.T) {
	g := &fakeGlusterd{}
	sd := newFakeSystemd()
	root := t.TempDir()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	r := New(NewCLI(g.run), sd, root, log)
	s := st(mA, mA, mB, mC)

	s.Swarm.Active = false
	if changed, err := r.Reconcile(context.Background(), s); err != nil || changed || !slices.Equal(g.ran, []string{"peer status"}) {
		t.Fatalf("before swarm: changed=%v err=%v ran=%v, want only the peer list (for the epoch report)", changed, err, g.ran)
	}
	if s.Gluster.Epoch != member.FreshGluster {
		t.Fatalf("before swarm: reported glusterd epoch %q, want %q", s.Gluster.Epoch, member.FreshGluster)
	}
	s.Swarm.Active = true
	changed, err := r.Reconcile(context.Background(), s)
	if err != nil || !changed {
		t.Fatalf("first pass: changed=%v err=%v", changed, err)
	}
	if !g.started || g.opts["network.ping-timeout"] != "5" || !slices.Contains(g.ran, "volume set all cluster.server-quorum-ratio 51%") {
		t.Fatalf("not formed: %+v", g)
	}
	unit, err := os.ReadFile(filepath.Join(root, UnitPath))
	if err != nil || !strings.Contains(string(unit), "backup-volfile-servers=10.77.0.12:10.77.0.13") {
		t.Fatalf("unit: %s %v", unit, err)
	}
	if !slices.Equal(sd.calls, []string{"daemon-reload", "start var-data.mount"}) {
		t.Fatalf("systemd calls %v", sd.calls)
	}
	if _, err := os.Stat(filepath.Join(root, "/var/lib/kiln/bricks/data")); err != nil {
		t.Fatal(err)
	}
	// Second pass and a restarted agent: observe only (cluster options are re-applied once per process).
	for i, rr := range []*Reconciler{r, New(NewCLI(g.run), sd, root, log)} {
		g.ran, sd.calls = nil, nil
		changed, err := rr.Reconcile(context.Background(), s)
		if err != nil || changed || len(sd.calls) != 0 {
			t.Fatalf("pass %d: changed=%v err=%v systemd=%v", i, changed, err, sd.calls)
		}
		for _, c := range g.ran {
			if !strings.HasPrefix(c, "peer status") && !strings.HasPrefix(c, "volume info") && !strings.HasPrefix(c, "volume set all") &&
				c != "volume heal data info" {
				t.Errorf("pass %d ran %q", i, c)
			}
		}
	}
}

// TestReconcileBacksOffAfterFailedCreate: after a failed create the coordinator does not retry on every pass
// (each retry would re-mark the bricks the followers are clearing) but waits createRetryAfter, says so in
// status, and then forms.
func TestReconcileBacksOffAfterFailedCreate(t *testing.T) {
	g := &fakeGlusterd{failCreates: 1}
	sd := newFakeSystemd()
	r := New(NewCLI(g.run), sd, t.TempDir(), slog.New(slog.DiscardHandler))
	now := time.Unix(1000, 0)
	r.now = func() time.Time { return now }
	s := st(mA, mA, mB, mC)
	s.Swarm.Active = true
	creates := func() int {
		n := 0
		for _, c := range g.ran {
			if strings.HasPrefix(c, "volume create") {
				n++
			}
		}
		return n
	}

	if _, err := r.Reconcile(context.Background(), s); err == nil || !strings.Contains(err.Error(), "already part of a volume") {
		t.Fatalf("first pass: err %v, want the staging failure", err)
	}
	for _, d := range []time.Duration{5 * time.Second, createRetryAfter - 6*time.Second} {
		now = now.Add(d)
		s.Pending, s.Status = nil, nil
		if _, err := r.Reconcile(context.Background(), s); err != nil {
			t.Fatal(err)
		}
		if n := creates(); n != 1 {
			t.Fatalf("%s after the failure: %d creates, want no retry yet", d, n)
		}
		if w := s.Pending["gluster"]; !strings.Contains(w, "volume create failed at") {
			t.Fatalf("pending %q, want the back-off named", w)
		}
	}
	now = now.Add(2 * time.Second)
	if _, err := r.Reconcile(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	if n := creates(); n != 2 || !g.started {
		t.Fatalf("after the back-off: %d creates, started %v; want the retry to form", n, g.started)
	}
}

// TestReconcileWaitsForTheMeshBeforeCreate: right after the probes, the followers do not list each other yet;
// the coordinator keeps reading their peer lists in the same pass and creates once they do, never before.
func TestReconcileWaitsForTheMeshBeforeCreate(t *testing.T) {
	g := &fakeGlusterd{unmeshedViews: 3}
	sd := newFakeSystemd()
	r := New(NewCLI(g.run), sd, t.TempDir(), slog.New(slog.DiscardHandler))
	s := st(mA, mA, mB, mC)
	if _, err := r.Reconcile(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	create := slices.IndexFunc(g.ran, func(c string) bool { return strings.HasPrefix(c, "volume create") })
	if create < 0 || !g.started {
		t.Fatalf("no create in the pass (started %v); ran %q", g.started, g.ran)
	}
	views := 0
	for _, c := range g.ran[:create] {
		if strings.HasPrefix(c, "--remote-host=") {
			views++
		}
	}
	// Three unmeshed answers, then both members' meshed ones: at least two rounds of asking before the create.
	if views < 5 {
		t.Fatalf("%d peer lists read before the create, want the three unmeshed ones and two meshed; ran %q", views, g.ran)
	}
}

// TestReconcileCreatesPastAHangingView: a member's peer list that never comes (a `--remote-host` call can
// hang until the CLI's 120 s timeout) is given up after viewTimeout and not held against the create, so
// formation goes on in the same pass.
func TestReconcileCreatesPastAHangingView(t *testing.T) {
	g := &fakeGlusterd{hangViews: map[string]bool{"10.77.0.13": true}}
	r := New(NewCLI(g.run), newFakeSystemd(), t.TempDir(), slog.New(slog.DiscardHandler))
	r.viewTimeout = 50 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := r.Reconcile(ctx, st(mA, mA, mB, mC)); err != nil {
		t.Fatal(err)
	}
	if ctx.Err() != nil {
		t.Fatal("the pass waited for the hanging view until the caller's deadline")
	}
	if !g.started || !slices.Contains(g.ran, "--remote-host=10.77.0.13 peer status") {
		t.Fatalf("started %v after asking 10.77.0.13 for its view; ran %q", g.started, g.ran)
	}
}

// TestClearFailedCreate: a volume id on an empty brick with no volume known is cleared at once by the
// coordinator (its own create returned, so it failed) and by a follower only once the same id has stayed so
// for orphanGrace: a follower that saw "no volume" just before a create committed must not strip the marks of
// the volume being born.
func TestClearFailedCreate(t *testing.T) {
	// mark leaves on an empty brick what staging a create does: the volume id, the root GFID, .glusterfs.
	mark := func(t *testing.T, id string) string {
		root := t.TempDir()
		if err := glusterd.PrepareBrick(filepath.Join(root, BrickPath), id); err != nil {
			t.Skipf("trusted xattrs unavailable here (need root): %v", err)
		}
		return root
	}
	marked := func(brick string) bool { return glusterd.VolumeID(brick) != "" }
	t.Run("coordinator clears at once", func(t *testing.T) {
		root := mark(t, volID)
		r := New(nil, nil, root, slog.New(slog.DiscardHandler))
		if err := r.clearFailedCreate(true); err != nil {
			t.Fatal(err)
		}
		if marked(filepath.Join(root, BrickPath)) {
			t.Fatal("coordinator left a failed create's marks")
		}
	})
	t.Run("follower waits out the grace", func(t *testing.T) {
		root := mark(t, volID)
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
		if !marked(brick) {
			t.Fatal("cleared before the grace ran out")
		}
		// Another create marked the brick with a new id: the grace starts again.
		if err := glusterd.PrepareBrick(brick, uuidX); err != nil {
			t.Fatal(err)
		}
		step(2 * time.Second)
		if !marked(brick) {
			t.Fatal("a fresh mark was cleared on the old one's grace")
		}
		step(orphanGrace)
		if marked(brick) {
			t.Fatal("still marked after the grace")
		}
		if _, err := os.Stat(filepath.Join(brick, ".glusterfs")); !os.IsNotExist(err) {
			t.Errorf(".glusterfs left behind: %v", err)
		}
	})
	t.Run("brick with data is never touched", func(t *testing.T) {
		root := mark(t, volID)
		brick := filepath.Join(root, BrickPath)
		if err := os.WriteFile(filepath.Join(brick, "record"), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
		r := New(nil, nil, root, slog.New(slog.DiscardHandler))
		if err := r.clearFailedCreate(true); err != nil {
			t.Fatal(err)
		}
		if !marked(brick) {
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

// restartPool is the pool map a formed volume's record carries.
var restartPool = map[string]string{"10.77.0.11": uuidA, "10.77.0.12": uuidB, "10.77.0.13": uuidC}

// formedDisk is one node's disk as formation left it: glusterd.info with the UUID the pool knows, and the
// node's brick with the volume's marks.
func formedDisk(t *testing.T, uuid string) string {
	t.Helper()
	root := t.TempDir()
	if err := glusterd.PrepareBrick(filepath.Join(root, BrickPath), volID); err != nil {
		t.Skipf("trusted xattrs unavailable here (need root): %v", err)
	}
	if err := glusterd.WriteUUID(filepath.Join(root, glusterd.InfoFile), uuid); err != nil {
		t.Fatal(err)
	}
	return root
}

// formedGlusterd is a node's glusterd in a formed pool with peers: the started replica-3 volume on a, b and c
// with kiln's options for members.
func formedGlusterd(members []member.Member, peers ...member.Member) *fakeGlusterd {
	g := &fakeGlusterd{created: true, started: true, volID: volID, bricks: bricks(mA, mB, mC), opts: Options(addrs(members)), down: map[string]bool{}}
	for _, p := range peers {
		g.peers = append(g.peers, p.Addr.String())
	}
	return g
}

// formedPass runs one pass of r as self in a formed cluster of members.
func formedPass(t *testing.T, r *Reconciler, self member.Member, members ...member.Member) (*state.State, bool) {
	t.Helper()
	s := st(self, members...)
	s.Formation.GlusterPeers = maps.Clone(restartPool)
	s.ReplaceAfter = 10 * time.Minute
	changed, err := r.Reconcile(context.Background(), s)
	if err != nil {
		t.Fatalf("pass: %v (status %q)", err, s.Status["gluster"])
	}
	return s, changed
}

// acting lists the commands in ran that change the pool or the volume.
func acting(ran []string) []string {
	var out []string
	for _, c := range ran {
		for _, verb := range []string{"volume create", "volume start", "volume replace-brick", "volume add-brick", "volume remove-brick", "peer probe", "peer detach"} {
			if strings.HasPrefix(c, verb) {
				out = append(out, c)
			}
		}
	}
	return out
}

// TestRestartedAgentIsHarmless: an agent restart loses the reconciler's memory (Reconciler.mem). A reconciler
// with fresh memory, on the disk and glusterd a formed volume left, converges from what it observes: no
// create, no reset or UUID adoption (the fake systemd cannot stop glusterd: either would fail the pass), no
// brick replaced or peer detached, nothing changed.
func TestRestartedAgentIsHarmless(t *testing.T) {
	for _, tc := range []struct {
		name  string
		self  member.Member
		uuid  string
		peers []member.Member
	}{
		{"coordinator", mA, uuidA, []member.Member{mB, mC}},
		{"follower", mB, uuidB, []member.Member{mA, mC}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := formedDisk(t, tc.uuid)
			g := formedGlusterd([]member.Member{mA, mB, mC}, tc.peers...)
			sd := newFakeSystemd()
			log := slog.New(slog.DiscardHandler)
			formedPass(t, New(NewCLI(g.run), sd, root, log), tc.self, mA, mB, mC) // writes and starts the mount unit (in /run: it outlives the agent)
			g.ran, sd.calls = nil, nil
			s, changed := formedPass(t, New(NewCLI(g.run), sd, root, log), tc.self, mA, mB, mC)
			if changed || len(s.Pending) != 0 || len(sd.calls) != 0 || len(acting(g.ran)) != 0 {
				t.Fatalf("restarted: changed=%v pending=%v systemd=%v acted=%q", changed, s.Pending, sd.calls, acting(g.ran))
			}
			if !strings.HasPrefix(s.Status["gluster"], "volume data started") {
				t.Fatalf("restarted: status %q", s.Status["gluster"])
			}
		})
	}
}

// TestRestartedAgentDelaysReplace: a member already down when the agent restarts is replaced only once the new
// process has seen it down for ReplaceAfter. Losing the memory delays a repair; it never hastens one.
func TestRestartedAgentDelaysReplace(t *testing.T) {
	mD := member.Member{ID: "d", Addr: mC.Addr.Next(), Alive: true}
	deadC := mC
	deadC.Alive = false
	members := []member.Member{mA, mB, deadC, mD}
	root := formedDisk(t, uuidA)
	g := formedGlusterd(members, mB, mC, mD)
	g.down[mC.Addr.String()] = true
	sd := newFakeSystemd()
	log := slog.New(slog.DiscardHandler)
	now := time.Unix(1000, 0)
	clock := func() time.Time { return now }
	before := New(NewCLI(g.run), sd, root, log)
	before.now = clock
	formedPass(t, before, mA, members...)
	now = now.Add(9 * time.Minute)
	formedPass(t, before, mA, members...)

	// Restarted with c down for 9 minutes: 2 more, and c has been down past ReplaceAfter, but the new process
	// has seen it down for no time at all.
	now = now.Add(2 * time.Minute)
	g.ran = nil
	after := New(NewCLI(g.run), sd, root, log)
	after.now = clock
	if _, changed := formedPass(t, after, mA, members...); changed || len(acting(g.ran)) != 0 {
		t.Fatalf("first pass after the restart: changed=%v acted=%q; want c's brick kept", changed, acting(g.ran))
	}
	now = now.Add(10*time.Minute - time.Second)
	if _, changed := formedPass(t, after, mA, members...); changed || len(acting(g.ran)) != 0 {
		t.Fatalf("just inside ReplaceAfter of the restart: changed=%v acted=%q", changed, acting(g.ran))
	}
	now = now.Add(time.Second)
	if _, changed := formedPass(t, after, mA, members...); !changed || !slices.Equal(acting(g.ran), []string{
		"volume replace-brick data 10.77.0.13:" + BrickPath + " 10.77.0.14:" + BrickPath + " commit force"}) {
		t.Fatalf("ReplaceAfter after the restart: changed=%v acted=%q; want c's brick moved to d", changed, acting(g.ran))
	}
}

// TestReconcileWaitsForABrickCapableMember: three members, one with /var in RAM. The coordinator probes all
// three into the pool and creates no volume (no replica-2 volume: the design is replica 3); its status says
// what it waits for. A fourth member that may hold a brick completes the volume, and the brickless member
// mounts it saying why it holds no brick.
func TestReconcileWaitsForABrickCapableMember(t *testing.T) {
	g := &fakeGlusterd{}
	sd := newFakeSystemd()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	r := New(NewCLI(g.run), sd, t.TempDir(), log)
	s := st(mA, mA, mB, brickless(mC))
	if _, err := r.Reconcile(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	if g.created || !slices.Equal(g.peers, []string{"10.77.0.12", "10.77.0.13"}) {
		t.Fatalf("created=%v peers=%v: want both probed, nothing created", g.created, g.peers)
	}
	want := "forming: waiting for a member that may hold a brick: the replica-3 volume needs 3, 2 alive (10.77.0.13: no brick, /var in RAM)"
	if s.Pending["gluster"] != want {
		t.Errorf("status %q, want %q", s.Pending["gluster"], want)
	}

	mD := member.Member{ID: "d", Addr: mC.Addr.Next(), Alive: true, GlusterEpoch: member.FreshGluster}
	s = st(mA, mA, mB, brickless(mC), mD)
	s.Expected = 4
	if _, err := r.Reconcile(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(g.ran, "volume create data replica 3 10.77.0.11:"+BrickPath+" 10.77.0.12:"+BrickPath+" 10.77.0.14:"+BrickPath) {
		t.Fatalf("no replica-3 create on a, b and d: %q", g.ran)
	}

	// The brickless member itself: mounted, and its line says why it holds no brick.
	g.bricks = bricks(mA, mB, mD)
	rc := New(NewCLI(g.run), newFakeSystemd(), t.TempDir(), log)
	sc := st(brickless(mC), mA, mB, brickless(mC), mD)
	sc.Expected = 4
	sc.NoBrick = "no brick: /var is in RAM (no local disk for kiln-state)"
	if _, err := rc.Reconcile(context.Background(), sc); err != nil {
		t.Fatal(err)
	}
	if line := sc.Status["gluster"]; !strings.HasSuffix(line, "/var/data mounted; no brick: /var is in RAM (no local disk for kiln-state)") || len(sc.Pending) != 0 {
		t.Errorf("brickless member: status %q pending %v", line, sc.Pending)
	}
}

// glusterd found stopped (a crash, a restart cut short) is started by the next pass, before anything else.
func TestPassStartsStoppedGlusterd(t *testing.T) {
	sd := newFakeSystemd()
	sd.active[GlusterdUnit] = false
	r := New(NewCLI((&fakeGlusterd{}).run), sd, t.TempDir(), slog.New(slog.DiscardHandler))
	changed, err := r.Reconcile(context.Background(), &state.State{})
	if err != nil || !changed || !slices.Equal(sd.calls, []string{"start " + GlusterdUnit}) {
		t.Fatalf("Reconcile = %v, %v; systemd calls %v; want glusterd started", changed, err, sd.calls)
	}
}

// A pass cancelled right after it stopped glusterd (agent shutdown, pass timeout) still starts it again.
func TestRestartSurvivesCancelledPass(t *testing.T) {
	sd := newFakeSystemd()
	ctx, cancel := context.WithCancel(context.Background())
	sd.ctxCancel = cancel
	r := New(NewCLI((&fakeGlusterd{}).run), sd, t.TempDir(), slog.New(slog.DiscardHandler))
	if err := r.restartGlusterd(ctx); err != nil {
		t.Fatal(err)
	}
	if ctx.Err() == nil || !sd.active[GlusterdUnit] {
		t.Fatalf("context err %v, glusterd active %v; want a cancelled pass and glusterd running", ctx.Err(), sd.active[GlusterdUnit])
	}
}

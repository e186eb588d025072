package gluster

import (
	"context"
	"errors"
	"flag"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kiln-project/kiln/firstboot/member"
	"github.com/kiln-project/kiln/firstboot/state"
)

var update = flag.Bool("update", false, "rewrite golden files under testdata/")

func fixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "cli", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParseRealOutput(t *testing.T) {
	ps, err := ParsePeers(fixture(t, "peer-status.xml"))
	if err != nil || len(ps) != 0 {
		t.Fatalf("empty peer status: %v %v", ps, err)
	}
	ps, err = ParsePeers(fixture(t, "peer-status-two.xml"))
	if err != nil || len(ps) != 2 || !ps[0].InCluster() || ps[1].InCluster() || ps[0].Hostnames[0] != "10.77.0.12" {
		t.Fatalf("two peers: %+v %v", ps, err)
	}
	v, err := ParseVolumeInfo(fixture(t, "volinfo-missing.xml"))
	if err != nil || v != nil {
		t.Fatalf("missing volume: %+v %v", v, err)
	}
	v, err = ParseVolumeInfo(fixture(t, "volinfo-r3.xml"))
	if err != nil || v.Name != "r3" || v.Status != "Started" || v.Replica != 3 || len(v.Bricks) != 3 || v.Type != "Replicate" {
		t.Fatalf("r3: %+v %v", v, err)
	}
	v, err = ParseVolumeInfo(fixture(t, "volinfo.xml"))
	if err != nil || v.Options["network.ping-timeout"] != "5" || v.Bricks[0] != "10.99.6.11:/tmp/kglb/brick" {
		t.Fatalf("data: %+v %v", v, err)
	}
	hs, err := ParseHealInfo(fixture(t, "heal-r3.xml"))
	if err != nil || len(hs) != 3 || hs[0].Entries != 0 || hs[0].Status != "Connected" {
		t.Fatalf("heal: %+v %v", hs, err)
	}
	// The self-heal daemon is a line of its own, "localhost" for this node's; bricks are host and path.
	procs, err := ParseVolumeStatus(fixture(t, "volstatus-all.xml"), "r3")
	if err != nil || len(procs) != 4 || procs[3] != (Process{Host: SelfHealDaemon, Path: "localhost", PeerID: "a9593a6d-e5c7-49b1-85d4-ea0aeaa85585", Online: true}) ||
		procs[0].Host != "10.99.6.11" || procs[0].Path != "/tmp/kglb/r1" || !procs[0].Online {
		t.Fatalf("volume status r3: %+v %v", procs, err)
	}
	// gluster exits 0 with opRet -1: the XML carries the failure.
	for _, f := range []string{"probe-unreach.xml", "create-noforce.xml", "start-again.xml", "heal.xml"} {
		_, err := parse(fixture(t, f))
		var oe *OpError
		if !errors.As(err, &oe) || oe.Errstr == "" {
			t.Errorf("%s: err = %v, want an OpError", f, err)
		}
	}
	if _, err := parse(fixture(t, "probe-self.xml")); err != nil {
		t.Errorf("probe of self is success: %v", err)
	}
}

func FuzzParsers(f *testing.F) {
	entries, _ := os.ReadDir(filepath.Join("testdata", "cli"))
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".xml") {
			f.Add(fixture(f, e.Name()))
		}
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		ParsePeers(in)
		ParseVolumeInfo(in)
		ParseHealInfo(in)
		ParseVolumeStatus(in, "data")
	})
}

var (
	mA = member.Member{ID: "a", Addr: netip.MustParseAddr("10.77.0.11"), Alive: true, GlusterEpoch: member.FreshGluster}
	mB = member.Member{ID: "b", Addr: netip.MustParseAddr("10.77.0.12"), Alive: true, GlusterEpoch: member.FreshGluster}
	mC = member.Member{ID: "c", Addr: netip.MustParseAddr("10.77.0.13"), Alive: true, GlusterEpoch: member.FreshGluster}
)

// inEpoch is m reporting its glusterd state as epoch e's ("" for not reported).
func inEpoch(m member.Member, e string) member.Member {
	m.GlusterEpoch = e
	return m
}

// recovered is st with a record of epoch 1 (one `recover` ago) coordinated by a.
func recovered(self member.Member, ms ...member.Member) *state.State {
	s := st(self, ms...)
	s.Formation.Epoch = 1
	return s
}

func st(self member.Member, ms ...member.Member) *state.State {
	return &state.State{Inputs: state.Inputs{Expected: 3, Formation: &state.Formation{Initialiser: "a"}}, Observed: state.Observed{Self: self, Members: ms}, Swarm: state.SwarmOutput{Active: true}}
}

func peer(m member.Member, inCluster bool) Peer {
	p := Peer{Hostname: m.Addr.String(), Connected: inCluster, State: "Peer in Cluster"}
	if !inCluster {
		p.State = "Probe Sent to Peer"
	}
	return p
}

func TestPlan(t *testing.T) {
	brick := func(m member.Member) string { return m.Addr.String() + ":" + BrickPath }
	started := &Volume{Status: "Started", Options: Options([]member.Member{mA, mB, mC}, nil)}
	deadB := mB
	deadB.Alive = false
	cases := []struct {
		name string
		s    *state.State
		obs  Observed
		want []string
	}{
		{"coordinator probes everyone", st(mA, mA, mB, mC), Observed{}, []string{"probe 10.77.0.12", "probe 10.77.0.13"}},
		{"probed but not yet in cluster: no create", st(mA, mA, mB, mC), Observed{Peers: []Peer{peer(mB, true), peer(mC, false)}}, nil},
		{"all in, and in each other's pools: create replica 3", st(mA, mA, mB, mC), Observed{Peers: []Peer{peer(mB, true), peer(mC, true)}, Views: map[string][]Peer{
			"10.77.0.12": {{Hostname: "kiln-a", Connected: true, State: "Peer in Cluster"}, peer(mC, true)},
			"10.77.0.13": {peer(mA, true), peer(mB, true)},
		}}, []string{"create replica 3 " + brick(mA) + " " + brick(mB) + " " + brick(mC)}},
		{"all in, but b not yet connected to c: no create", st(mA, mA, mB, mC), Observed{Peers: []Peer{peer(mB, true), peer(mC, true)}, Views: map[string][]Peer{
			"10.77.0.12": {peer(mA, true), peer(mC, false)},
			"10.77.0.13": {peer(mA, true), peer(mB, true)},
		}}, nil},
		{"all in, c's peer list unreadable: not held against the create", st(mA, mA, mB, mC), Observed{Peers: []Peer{peer(mB, true), peer(mC, true)}, Views: map[string][]Peer{
			"10.77.0.12": {peer(mA, true), peer(mC, true)},
		}}, []string{"create replica 3 " + brick(mA) + " " + brick(mB) + " " + brick(mC)}},
		{"all in, b lists c but not yet connected to the coordinator: no create", st(mA, mA, mB, mC), Observed{Peers: []Peer{peer(mB, true), peer(mC, true)}, Views: map[string][]Peer{
			"10.77.0.12": {peer(mA, false), peer(mC, true)},
		}}, nil},
		{"all in, but c does not list the coordinator yet: no create", st(mA, mA, mB, mC), Observed{Peers: []Peer{peer(mB, true), peer(mC, true)}, Views: map[string][]Peer{
			"10.77.0.12": {peer(mA, true), peer(mC, true)},
			"10.77.0.13": {peer(mB, true)},
		}}, nil},
		{"only two of three members: wait", st(mA, mA, mB), Observed{Peers: []Peer{peer(mB, true)}}, nil},
		{"created: options then start", st(mA, mA, mB, mC), Observed{Peers: []Peer{peer(mB, true), peer(mC, true)}, Volume: &Volume{Status: "Created", Options: map[string]string{}}},
			[]string{"set auth.allow 127.0.0.1,10.77.0.11,10.77.0.12,10.77.0.13 cluster.quorum-type auto cluster.server-quorum-type server network.ping-timeout 5", "start"}},
		{"converged: nothing", st(mA, mA, mB, mC), Observed{Peers: []Peer{peer(mB, true), peer(mC, true)}, Volume: started}, nil},
		{"follower b probes the coordinator back", st(mB, mA, mB, mC), Observed{Peers: []Peer{{Hostname: "kiln-a", Connected: true, State: "Peer in Cluster"}}}, []string{"probe 10.77.0.11"}},
		{"follower c does not", st(mC, mA, mB, mC), Observed{Peers: []Peer{{Hostname: "kiln-a", Connected: true}}}, nil},
		{"follower not yet in a pool waits", st(mB, mA, mB, mC), Observed{}, nil},
		{"dead coordinator: next lowest alive takes over", func() *state.State {
			dead := mA
			dead.Alive = false
			return st(mB, dead, mB, mC)
		}(), Observed{Peers: []Peer{peer(mA, false), peer(mC, true)}, Volume: started}, nil},
		{"dead member is not probed", st(mA, mA, deadB, mC), Observed{Peers: []Peer{peer(mC, true)}}, nil},
		{"rebooted, no peer seen yet: auth.allow keeps the recorded pool", func() *state.State {
			s := st(mA, mA)
			s.Formation = &state.Formation{GlusterPeers: map[string]string{"10.77.0.12": "u-b", "10.77.0.13": "u-c", "10.77.0.11": "u-a"}}
			return s
		}(), Observed{Volume: started}, nil},
		{"a member that has not reported its glusterd's epoch is not probed", st(mA, mA, inEpoch(mB, ""), mC), Observed{},
			[]string{"probe 10.77.0.13"}},
		{"after a recover: a member still in the old pool is not probed", recovered(mA, mA, inEpoch(mB, "0"), mC), Observed{},
			[]string{"probe 10.77.0.13"}},
		{"after a recover: a member reset for the new epoch is probed", recovered(mA, mA, inEpoch(mB, "1"), mC), Observed{},
			[]string{"probe 10.77.0.12", "probe 10.77.0.13"}},
		{"single-node cluster: plain volume", &state.State{Inputs: state.Inputs{Expected: 1}, Observed: state.Observed{Self: mA, Members: []member.Member{mA}}}, Observed{},
			[]string{"create replica 1 " + brick(mA)}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var got []string
			for _, a := range Plan(c.s, c.obs) {
				got = append(got, a.String())
			}
			if !slices.Equal(got, c.want) {
				t.Errorf("Plan =\n  %q\nwant\n  %q", got, c.want)
			}
		})
	}
}

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

// fakeGlusterd plays glusterd for the CLI: a pool, one volume, and a log of what was run.
type fakeGlusterd struct {
	mu      sync.Mutex // the reconciler asks peers' views concurrently
	peers   []string
	created bool
	started bool
	opts    map[string]string
	ran     []string
	// failCreates makes that many `volume create` calls fail the way a marked brick does.
	failCreates int
	// unmeshedViews makes that many other members' peer lists (--remote-host) miss the other followers, as
	// right after the probes, before the followers have connected to each other.
	unmeshedViews int
}

func (f *fakeGlusterd) run(_ context.Context, args ...string) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(args) > 0 && args[0] == "--xml" {
		args = args[1:]
	}
	f.ran = append(f.ran, strings.Join(args, " "))
	ok := `<cliOutput><opRet>0</opRet><opErrno>0</opErrno><opErrstr/></cliOutput>`
	peers := f.peers
	if host, remote := strings.CutPrefix(args[0], "--remote-host="); remote {
		// Another member's own view: the pool is fully meshed, and this glusterd is the coordinator 10.77.0.11.
		args = args[1:]
		peers = []string{"10.77.0.11"}
		for _, p := range f.peers {
			if p != host && f.unmeshedViews <= 0 {
				peers = append(peers, p)
			}
		}
		f.unmeshedViews--
	}
	switch {
	case args[0] == "peer" && args[1] == "status":
		var b strings.Builder
		b.WriteString(`<cliOutput><opRet>0</opRet><peerStatus>`)
		for _, p := range peers {
			b.WriteString(`<peer><hostname>` + p + `</hostname><connected>1</connected><stateStr>Peer in Cluster</stateStr></peer>`)
		}
		b.WriteString(`</peerStatus></cliOutput>`)
		return []byte(b.String()), nil
	case args[0] == "peer" && args[1] == "probe":
		f.peers = append(f.peers, args[2])
		return []byte(ok), nil
	case args[0] == "volume" && args[1] == "info":
		if !f.created {
			return []byte(`<cliOutput><opRet>-1</opRet><opErrno>30806</opErrno><opErrstr>Volume does not exist</opErrstr></cliOutput>`), nil
		}
		status := "Created"
		if f.started {
			status = "Started"
		}
		var b strings.Builder
		b.WriteString(`<cliOutput><opRet>0</opRet><volInfo><volumes><volume><name>data</name><statusStr>` + status + `</statusStr><typeStr>Replicate</typeStr><replicaCount>3</replicaCount><options>`)
		for k, v := range f.opts {
			b.WriteString(`<option><name>` + k + `</name><value>` + v + `</value></option>`)
		}
		b.WriteString(`</options></volume></volumes></volInfo></cliOutput>`)
		return []byte(b.String()), nil
	case args[0] == "volume" && args[1] == "create" && f.failCreates > 0:
		f.failCreates--
		return []byte(`<cliOutput><opRet>-1</opRet><opErrno>30800</opErrno><opErrstr>Staging failed on 10.77.0.13. Error: /var/lib/kiln/bricks/data/brick is already part of a volume</opErrstr></cliOutput>`), nil
	case args[0] == "volume" && args[1] == "create":
		f.created, f.opts = true, map[string]string{}
		return []byte(ok), nil
	case args[0] == "volume" && args[1] == "set":
		for i := 3; args[2] == "data" && i+1 < len(args); i += 2 {
			f.opts[args[i]] = args[i+1]
		}
		return []byte(ok), nil
	case args[0] == "volume" && args[1] == "heal" && len(args) == 4 && args[3] == "info":
		return []byte(`<cliOutput><opRet>0</opRet><healInfo><bricks><brick><name>10.77.0.11:/b</name><status>Connected</status><numberOfEntries>0</numberOfEntries></brick></bricks></healInfo></cliOutput>`), nil
	case args[0] == "volume" && args[1] == "start":
		f.started = true
		return []byte(ok), nil
	}
	return nil, errors.New("fake glusterd: unexpected " + strings.Join(args, " "))
}

type fakeSystemd struct {
	active map[string]bool
	calls  []string
}

func (f *fakeSystemd) DaemonReload(context.Context) error {
	f.calls = append(f.calls, "daemon-reload")
	return nil
}
func (f *fakeSystemd) Start(_ context.Context, u string) error {
	f.calls, f.active[u] = append(f.calls, "start "+u), true
	return nil
}
func (f *fakeSystemd) ReloadOrRestart(_ context.Context, u string) error { return nil }
func (f *fakeSystemd) ActiveState(_ context.Context, u string) (string, error) {
	if f.active[u] {
		return "active", nil
	}
	return "inactive", nil
}

func TestReconcileFormsAndMountsThenIsIdempotent(t *testing.T) {
	g := &fakeGlusterd{}
	sd := &fakeSystemd{active: map[string]bool{}}
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
	sd := &fakeSystemd{active: map[string]bool{}}
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

func TestGlusterEpoch(t *testing.T) {
	two := []Peer{peer(mB, true), peer(mC, true)}
	cases := []struct {
		name       string
		s          *state.State
		peers      []Peer
		uuid       string
		resetEpoch int
		want       string
	}{
		{"no peer: fresh, whatever the epochs", recovered(mA, mA), nil, "u-a", 0, member.FreshGluster},
		{"formed in epoch 0", st(mA, mA, mB, mC), two, "u-a", 0, "0"},
		{"back from before a recover: still the old epoch", recovered(mA, mA, mB, mC), two, "u-a", 0, "0"},
		{"reset for epoch 1", recovered(mA, mA, mB, mC), two, "u-new", 1, "1"},
		{"ready in epoch 1", func() *state.State { s := recovered(mA, mA, mB, mC); s.LocalEpoch = 1; return s }(), two, "u-a", 0, "1"},
		{"the record names this glusterd", func() *state.State {
			s := recovered(mA, mA, mB, mC)
			s.Formation.GlusterPeers = map[string]string{"10.77.0.11": "u-a"}
			return s
		}(), two, "u-a", 0, "1"},
		{"the record names another UUID at this address", func() *state.State {
			s := recovered(mA, mA, mB, mC)
			s.Formation.GlusterPeers = map[string]string{"10.77.0.11": "u-other"}
			return s
		}(), two, "u-a", 0, "0"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := GlusterEpoch(c.s, c.peers, c.uuid, c.resetEpoch); got != c.want {
				t.Errorf("GlusterEpoch = %q, want %q", got, c.want)
			}
		})
	}
}

// TestReconcileWaitsForTheMeshBeforeCreate: right after the probes, the followers do not list each other yet;
// the coordinator keeps reading their peer lists in the same pass and creates once they do, never before.
func TestReconcileWaitsForTheMeshBeforeCreate(t *testing.T) {
	g := &fakeGlusterd{unmeshedViews: 3}
	sd := &fakeSystemd{active: map[string]bool{}}
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

package vrrp

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/docker/docker/api/types/swarm"
	"github.com/docker/docker/api/types/system"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/kiln-project/kiln/firstboot/member"
	"github.com/kiln-project/kiln/firstboot/state"
	"github.com/kiln-project/kiln/internal/run"
)

var update = flag.Bool("update", false, "rewrite golden files under testdata/")

func threeNodeState(self int) *state.State {
	ms := []member.Member{
		{ID: "1a2b", Addr: netip.MustParseAddr("10.77.0.11"), Alive: true},
		{ID: "3c4d", Addr: netip.MustParseAddr("10.77.0.12"), Alive: true},
		{ID: "5e6f", Addr: netip.MustParseAddr("10.77.0.13"), Alive: false},
	}
	return &state.State{Inputs: state.Inputs{Expected: 3, ClusterName: "garage", VIP: netip.MustParsePrefix("10.77.0.250/24"), Interface: "eth0", Subnet: netip.MustParsePrefix("10.77.0.0/24")}, Observed: state.Observed{Self: ms[self], Members: ms}}
}

func TestRenderGolden(t *testing.T) {
	for i := range 3 {
		name := fmt.Sprintf("node%d.conf", i)
		t.Run(name, func(t *testing.T) {
			got, err := Render(ConfigFor(threeNodeState(i)))
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join("testdata", name)
			if *update {
				os.WriteFile(path, []byte(got), 0o644)
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("read golden (run with -update): %v", err)
			}
			if got != string(want) {
				t.Errorf("differs from %s:\n%s", path, got)
			}
			// keepalived's own parser, when installed, must accept it (it rejects unknown keywords).
			if _, err := exec.LookPath("keepalived"); err == nil {
				f := filepath.Join(t.TempDir(), "k.conf")
				os.WriteFile(f, []byte(strings.Replace(got, HealthFile, filepath.Join(t.TempDir(), "health"), 1)), 0o644)
				out, err := exec.Command("keepalived", "--config-test", "-f", f).CombinedOutput()
				if err != nil {
					t.Errorf("keepalived --config-test: %v\n%s", err, out)
				}
			}
		})
	}
}

func TestPrioritiesUniqueAndVRIDStable(t *testing.T) {
	seen := map[int]bool{}
	for rank := range MaxPriority - MinPriority {
		p := Priority(rank)
		if p < 1 || p > 254 || seen[p] {
			t.Fatalf("Priority(%d) = %d: out of range or not unique", rank, p)
		}
		seen[p] = true
	}
	vip := netip.MustParsePrefix("192.168.1.250/24")
	// Pinned: every node of a cluster, whatever kiln version it runs, must derive the same id.
	if got := VRID("garage", vip); got != 27 {
		t.Fatalf("VRID(garage, %s) = %d, want 27 (the derivation changed: mixed-version clusters would split)", vip, got)
	}
	// Spread: 1000 cluster names hit most of the 255 ids and never 0.
	ids := map[int]bool{}
	for i := range 1000 {
		id := VRID(fmt.Sprint("c", i), vip)
		if id < 1 || id > 255 {
			t.Fatalf("VRID = %d", id)
		}
		ids[id] = true
	}
	if len(ids) < 240 {
		t.Errorf("1000 names gave only %d distinct VRIDs", len(ids))
	}
}

func TestRenderRejects(t *testing.T) {
	good := ConfigFor(threeNodeState(0))
	for name, mut := range map[string]func(*Config){
		"no vip":        func(c *Config) { c.VIP = netip.Prefix{} },
		"ipv6 vip":      func(c *Config) { c.VIP = netip.MustParsePrefix("fd00::1/64") },
		"no interface":  func(c *Config) { c.Interface = "" },
		"brace in name": func(c *Config) { c.ClusterName = "x}y" },
	} {
		c := good
		mut(&c)
		if _, err := Render(c); err == nil {
			t.Errorf("%s: Render accepted it", name)
		}
	}
}

// fakeSystemd records calls and plays keepalived's unit state.
type fakeSystemd struct {
	state string
	calls []string
}

func (f *fakeSystemd) DaemonReload(context.Context) error {
	f.calls = append(f.calls, "daemon-reload")
	return nil
}
func (f *fakeSystemd) Start(_ context.Context, u string) error {
	f.calls, f.state = append(f.calls, "start "+u), "active"
	return nil
}
func (f *fakeSystemd) ReloadOrRestart(_ context.Context, u string) error {
	f.calls = append(f.calls, "reload "+u)
	return nil
}
func (f *fakeSystemd) ActiveState(context.Context, string) (string, error) { return f.state, nil }

// fakeAddrs is an interface with a fixed set of addresses.
type fakeAddrs struct{ addrs []string }

func (f fakeAddrs) LinkByName(name string) (netlink.Link, error) {
	return &netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Name: name}}, nil
}
func (f fakeAddrs) AddrList(netlink.Link, int) ([]netlink.Addr, error) {
	var out []netlink.Addr
	for _, a := range f.addrs {
		p, _ := netlink.ParseAddr(a)
		out = append(out, *p)
	}
	return out, nil
}

func TestReconcileWritesAndReloadsOnlyOnChange(t *testing.T) {
	sd := &fakeSystemd{state: "inactive"}
	path := filepath.Join(t.TempDir(), "run", "kiln", "keepalived.conf")
	r := New(sd, fakeAddrs{addrs: []string{"10.77.0.11/24", "10.77.0.250/24"}}, path, slog.New(slog.NewTextHandler(io.Discard, nil)))
	s := threeNodeState(0)
	step := func(wantChanged bool, wantCalls ...string) {
		t.Helper()
		sd.calls = nil
		changed, err := r.Reconcile(context.Background(), s)
		if err != nil {
			t.Fatal(err)
		}
		if changed != wantChanged || strings.Join(sd.calls, ",") != strings.Join(wantCalls, ",") {
			t.Fatalf("changed=%v calls=%v, want %v %v", changed, sd.calls, wantChanged, wantCalls)
		}
	}
	step(true, "start keepalived.service") // first write: keepalived was not running
	step(false)                            // nothing changed: no write, no reload
	if s.Status["vrrp"] != "holds VIP 10.77.0.250/24" {
		t.Errorf("status = %q", s.Status["vrrp"])
	}
	s.Members = s.Members[:2]
	step(true, "reload keepalived.service") // membership changed: reload
	sd.state = "failed"
	step(true, "start keepalived.service") // crashed keepalived is started again
	// Restart safety: a fresh reconciler with the same file does nothing.
	r = New(sd, fakeAddrs{}, path, slog.New(slog.NewTextHandler(io.Discard, nil)))
	step(false)
	if s.Status["vrrp"] != "backup for VIP 10.77.0.250/24" {
		t.Errorf("status = %q", s.Status["vrrp"])
	}
}

// TestHoldsVIPNetlink reads real addresses through netlink in a namespace of its own.
func TestHoldsVIPNetlink(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to create a network namespace")
	}
	ns := fmt.Sprintf("kiln-vrrp-%d", os.Getpid())
	if _, err := run.Cmd(context.Background(), "ip", "netns", "add", ns); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { run.Cmd(context.Background(), "ip", "netns", "del", ns) })
	for _, args := range [][]string{
		{"-n", ns, "link", "add", "kv0", "type", "veth", "peer", "name", "kv1"},
		{"-n", ns, "addr", "add", "10.99.5.11/24", "dev", "kv0"},
	} {
		if _, err := run.Cmd(context.Background(), "ip", args...); err != nil {
			t.Fatal(err)
		}
	}
	nsh, err := netns.GetFromName(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer nsh.Close()
	h, err := netlink.NewHandleAt(nsh)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	vip := netip.MustParseAddr("10.99.5.250")
	if holds, err := HoldsVIP(h, "kv0", vip); err != nil || holds {
		t.Fatalf("before: holds=%v err=%v", holds, err)
	}
	if _, err := run.Cmd(context.Background(), "ip", "-n", ns, "addr", "add", "10.99.5.250/24", "dev", "kv0"); err != nil {
		t.Fatal(err)
	}
	if holds, err := HoldsVIP(h, "kv0", vip); err != nil || !holds {
		t.Fatalf("after: holds=%v err=%v", holds, err)
	}
	if _, err := HoldsVIP(h, "nosuch0", vip); err == nil {
		t.Fatal("missing link: no error")
	}
}

// infoAPI answers like dockerd: SwarmInspect only on a manager with quorum (it goes through the raft leader).
type infoAPI struct {
	sw    swarm.Info
	calls *int
}

func (f infoAPI) Info(context.Context) (system.Info, error) {
	if f.calls != nil {
		*f.calls++
	}
	return system.Info{Swarm: f.sw}, nil
}

func (f infoAPI) SwarmInspect(context.Context) (swarm.Swarm, error) {
	if f.sw.ControlAvailable && f.sw.Error == "" && f.sw.Nodes > 0 {
		return swarm.Swarm{}, nil
	}
	return swarm.Swarm{}, errors.New("This node is not a swarm manager, or the swarm does not have a leader")
}

// A healthy manager is judged without Info, which makes dockerd exec runc and docker-init.
func TestHealthyManagerSkipsInfo(t *testing.T) {
	calls := 0
	sw := swarm.Info{LocalNodeState: "active", ControlAvailable: true, Nodes: 3, Managers: 3}
	if err := Healthy(context.Background(), infoAPI{sw: sw, calls: &calls}); err != nil || calls != 0 {
		t.Fatalf("err=%v, Info calls=%d; want healthy with no Info call", err, calls)
	}
}

func TestHealthy(t *testing.T) {
	for _, c := range []struct {
		sw swarm.Info
		ok bool
	}{
		{swarm.Info{LocalNodeState: "active", ControlAvailable: true, Nodes: 3, Managers: 3}, true},
		{swarm.Info{LocalNodeState: "active", ControlAvailable: true, Error: "rpc error: code = Unknown desc = The swarm does not have a leader."}, false},
		{swarm.Info{LocalNodeState: "active", ControlAvailable: true}, false},
		{swarm.Info{LocalNodeState: "active", RemoteManagers: []swarm.Peer{{Addr: "10.0.0.1:2377"}}}, true},
		{swarm.Info{LocalNodeState: "active"}, false},
		{swarm.Info{LocalNodeState: "pending"}, false},
		{swarm.Info{LocalNodeState: "inactive"}, false},
	} {
		if err := Healthy(context.Background(), infoAPI{sw: c.sw}); (err == nil) != c.ok {
			t.Errorf("%+v: err = %v, want ok=%v", c.sw, err, c.ok)
		}
	}
}

// TestConfigForJustBooted: a node that booted seeing nobody yet still lists the recorded members as unicast
// peers, so its keepalived hears the VIP holder instead of becoming a second master.
func TestConfigForJustBooted(t *testing.T) {
	s := threeNodeState(0)
	s.Members = s.Members[:1]
	s.Formation = &state.Formation{
		GlusterPeers: map[string]string{"10.77.0.11": "u1", "10.77.0.12": "u2"},
		ManagerAddrs: []string{"10.77.0.13:2377", "10.77.0.12:2377"},
	}
	got := ConfigFor(s).Peers
	want := []netip.Addr{netip.MustParseAddr("10.77.0.12"), netip.MustParseAddr("10.77.0.13")}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("peers %v, want the recorded members %v (not self, no duplicates)", got, want)
	}
}

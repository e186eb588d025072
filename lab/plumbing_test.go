package lab

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kiln-project/kiln/lab/dhcp"
	"github.com/kiln-project/kiln/lab/netns"
	"github.com/kiln-project/kiln/lab/qemu"
)

// requireRootTools skips unless the test can create namespaces and run qemu and dnsmasq.
func requireRootTools(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: no namespaces or VMs")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root for network namespaces")
	}
	for _, tool := range []string{"ip", "nft", "dnsmasq", qemu.Binary, "qemu-img"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
}

// TestPlumbing brings a lab up over a blank "image": OVMF finds nothing to boot and idles in its shell, which is
// enough to prove namespace, bridge, taps, DHCP server, qemu in the namespace, QMP, partitions, kill/start,
// replace and a clean down, without a node image or a guest OS.
func TestPlumbing(t *testing.T) {
	requireRootTools(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	root := t.TempDir()
	img := filepath.Join(root, "blank.raw")
	if err := os.WriteFile(img, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 64<<20); err != nil {
		t.Fatal(err)
	}
	name := "plumb" + time.Now().Format("150405")
	t.Cleanup(func() { _ = Down(context.Background(), root, name) })

	l, err := Up(ctx, Options{Name: name, Root: root, Image: img, Nodes: 2, MemoryMiB: 256, DiskGiB: 1,
		Accel: qemu.AccelTCG})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Up(ctx, Options{Name: name, Root: root, Image: img, Accel: qemu.AccelTCG}); err == nil ||
		!strings.Contains(err.Error(), "already exists") {
		t.Errorf("second up: got %v, want already exists", err)
	}
	links, err := netns.Links(l.Namespace())
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"lo", "br0", "tap1", "tap2"} {
		if !slices.Contains(links, want) {
			t.Errorf("namespace links %v lack %s", links, want)
		}
	}
	if _, ok := dhcp.Running(l.dhcpConfig()); !ok {
		t.Error("dnsmasq not running")
	}
	nodes, err := l.Nodes()
	if err != nil {
		t.Fatal(err)
	}
	n1, n2 := nodes[0], nodes[1]
	// OVMF reaching its boot manager on the serial log proves firmware, serial and the VM actually run.
	if err := n1.WaitSerial(ctx, "BdsDxe:"); err != nil {
		t.Fatal(err)
	}
	if p := n1.Power(ctx); p != "running" {
		t.Errorf("node1 power %q, want running", p)
	}
	// The qemu process lives in the lab namespace.
	pid, _ := qemu.Running(l.pidFile(NodeState{Name: "node1"}))
	nsPids, err := netns.Pids(ctx, l.Namespace())
	if err != nil || !slices.Contains(nsPids, pid) {
		t.Errorf("qemu pid %d not among namespace pids %v (%v)", pid, nsPids, err)
	}

	if err := n2.Partition(ctx, true); err != nil {
		t.Fatal(err)
	}
	if err := n1.Partition(ctx, false); err != nil {
		t.Fatal(err)
	}
	rules, err := netns.Exec(ctx, l.Namespace(), nil, "nft", "list", "table", "bridge", netns.Table)
	if err != nil || !strings.Contains(string(rules), `iifname "tap2" drop`) || !strings.Contains(string(rules), `oifname "tap1" drop`) {
		t.Errorf("partition rules missing: %s %v", rules, err)
	}
	if err := n1.Heal(ctx); err != nil {
		t.Fatal(err)
	}
	if err := n2.Heal(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := netns.Exec(ctx, l.Namespace(), nil, "nft", "list", "table", "bridge", netns.Table); err == nil {
		t.Error("partition table still present after healing every node")
	}

	if err := n1.Kill(ctx); err != nil {
		t.Fatal(err)
	}
	if p := n1.Power(ctx); p != "off" {
		t.Errorf("node1 power after kill %q, want off", p)
	}
	if err := n1.Start(ctx); err != nil {
		t.Fatal(err)
	}
	// The log is appended across boots: this marker must come from the new boot.
	if err := n1.WaitSerial(ctx, "BdsDxe:"); err != nil {
		t.Fatal(err)
	}
	if err := n1.Start(ctx); err == nil || !strings.Contains(err.Error(), "already running") {
		t.Errorf("second start: %v", err)
	}
	before, _ := n2.State()
	if err := n2.Replace(ctx); err != nil {
		t.Fatal(err)
	}
	after, _ := n2.State()
	if after.MAC == before.MAC || after.UUID == before.UUID || after.Address == before.Address || after.Tap != before.Tap {
		t.Errorf("replace: before %+v after %+v", before, after)
	}
	hosts, _ := os.ReadFile(l.dhcpConfig().HostsFile())
	if !strings.Contains(string(hosts), after.MAC) || strings.Contains(string(hosts), before.MAC) {
		t.Errorf("dhcp hosts not updated: %s", hosts)
	}
	n3, err := l.Add(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n3.Name() != "node3" || !n3.Running() {
		t.Errorf("add: %s running=%v", n3.Name(), n3.Running())
	}
	if err := l.PowerCut(ctx); err != nil {
		t.Fatal(err)
	}
	for _, n := range []*Node{n1, n2, n3} {
		if n.Running() {
			t.Errorf("%s still running after power cut", n.Name())
		}
	}
	if err := n1.Start(ctx); err != nil {
		t.Fatal(err)
	}

	if err := l.Down(ctx); err != nil {
		t.Fatal(err)
	}
	if err := l.Down(ctx); err != nil {
		t.Errorf("second down: %v", err)
	}
	assertGone(t, root, name)
}

// assertGone checks that a lab left no namespace, process or file.
func assertGone(t *testing.T, root, name string) {
	t.Helper()
	if netns.Exists(Namespace(name)) {
		t.Errorf("namespace %s still exists", Namespace(name))
	}
	if _, err := os.Stat(filepath.Join(root, name)); !os.IsNotExist(err) {
		t.Errorf("lab directory still exists: %v", err)
	}
	dir := filepath.Join(root, name)
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		if b, err := os.ReadFile(p); err == nil && strings.Contains(string(b), dir+"/") {
			t.Errorf("process %s still refers to the lab: %q", p, strings.ReplaceAll(string(b), "\x00", " "))
		}
	}
}

package formation_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kiln-project/kiln/internal/testenv"
	"github.com/kiln-project/kiln/lab"
	"github.com/kiln-project/kiln/lab/labtest"
	"github.com/kiln-project/kiln/test/formation"
)

// netbootTimeout bounds TestNetboot: three TCG guests fetch ~400 MB of layers each, form, and one reboots.
const netbootTimeout = 60 * time.Minute

// TestNetboot is the garage without a disk to flash: three machines with blank disks boot from their NICs
// through `kiln pxe serve` (proxyDHCP beside the lab's plain DHCP server), read their config from it, and form
// the cluster with no command typed. Then one of them reboots and comes back as the same node: same identity,
// machine-id and swarm node, because its state partition on the local disk is found again.
//
// It runs in make e2e (KILN_E2E_LARGE), not in make test: three netboots and a reboot take 8-13 min, over CI's
// budget beside the formation proof. make test keeps netboot's own path (the initramfs fetching and checking
// the layers, a blank disk made the state disk, the same machine after a reboot) in builder/boottest's
// TestNetboot, one VM.
func TestNetboot(t *testing.T) {
	labtest.Image(t) // the VM gate
	if os.Getenv("KILN_E2E_LARGE") != "1" {
		t.Skip("set KILN_E2E_LARGE=1 (make e2e) to form a netbooted three-node lab")
	}
	pxeDir, err := testenv.PXEDir()
	if err != nil {
		t.Fatalf("KILN_E2E=1 but %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), netbootTimeout)
	defer cancel()
	cfg, _, err := formation.ClusterConfig("netboot", 3)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	l := labtest.Up(ctx, t, lab.Options{Name: labName("pxe"), Boot: lab.BootPXE, PXEDir: pxeDir,
		KilnBin: filepath.Join(testenv.BinDir(), "kiln"), Nodes: 3, ClusterConfig: cfg}, formation.Diagnose)
	nodes, err := l.Nodes()
	if err != nil {
		t.Fatal(err)
	}
	fctx, fcancel := context.WithTimeout(ctx, formTimeout)
	_, err = formation.WaitFormed(fctx, nodes, pollEvery)
	fcancel()
	if err != nil {
		t.Fatalf("%v\nkiln pxe serve log tail:\n%s", err, l.PXELogTail(30))
	}
	t.Logf("three netbooted nodes formed %s after lab up", time.Since(start).Round(time.Second))
	assertOneCluster(ctx, t, nodes)

	for _, n := range nodes {
		st, err := formation.AgentStatus(ctx, n)
		if err != nil {
			t.Fatal(err)
		}
		if st.ConfigSource == "fw_cfg" || st.ConfigSource == "image" || st.ConfigSource == "" {
			t.Errorf("%s: config from %q, want it from kiln pxe serve (kiln.config)", n.Name(), st.ConfigSource)
		}
		// / is the layers (read-only), /var the kiln-state partition the initramfs made on the blank disk.
		if opts := must(t, ctx, n, "findmnt", "-no", "OPTIONS", "/"); !strings.HasPrefix(opts, "ro") {
			t.Errorf("%s: / mounted %q, want read-only", n.Name(), opts)
		}
		if src := must(t, ctx, n, "findmnt", "-no", "SOURCE", "/var"); !strings.HasPrefix(src, "/dev/vda") {
			t.Errorf("%s: /var on %q, want the kiln-state partition of the local disk", n.Name(), src)
		}
	}
	log, _ := os.ReadFile(l.PXELog())
	for _, n := range nodes {
		s, _ := n.State()
		summary := false
		for _, line := range strings.Split(strings.ToLower(string(log)), "\n") {
			summary = summary || strings.Contains(line, "fetched everything") && strings.Contains(line, s.MAC)
		}
		if !summary {
			t.Errorf("kiln pxe serve's log has no summary line for %s (%s):\n%s", n.Name(), s.MAC, l.PXELogTail(30))
		}
	}

	t.Run("reboot comes back as the same node", func(t *testing.T) {
		n := nodes[1]
		id := func() (nodeID, machineID, swarmNode string) {
			st, err := formation.AgentStatus(ctx, n)
			if err != nil {
				t.Fatal(err)
			}
			return st.NodeID, must(t, ctx, n, "cat", "/etc/machine-id"), must(t, ctx, n, "docker", "info", "--format", "{{.Swarm.NodeID}}")
		}
		nodeID, machineID, swarmNode := id()
		if err := n.Stop(ctx); err != nil {
			t.Fatal(err)
		}
		if err := n.Start(ctx); err != nil {
			t.Fatal(err)
		}
		fctx, fcancel := context.WithTimeout(ctx, formTimeout)
		defer fcancel()
		if _, err := formation.WaitFormed(fctx, nodes, pollEvery); err != nil {
			t.Fatal(err)
		}
		n2, m2, s2 := id()
		if n2 != nodeID || m2 != machineID || s2 != swarmNode {
			t.Fatalf("after reboot: node %s machine-id %s swarm node %s, want %s %s %s", n2, m2, s2, nodeID, machineID, swarmNode)
		}
		assertOneCluster(ctx, t, nodes)
	})
}

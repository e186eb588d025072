// Package labtest is the harness every end-to-end suite boots its lab with: the VM gate (KILN_E2E), the image
// under test, a lab that is torn down by itself, and diagnostics in the log when the test failed.
package labtest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kiln-project/kiln/internal/testenv"
	"github.com/kiln-project/kiln/lab"
	"github.com/kiln-project/kiln/lab/qemu"
)

// Image skips unless VMs were asked for (KILN_E2E=1, not -short) and returns the image under test
// ($KILN_IMAGE, default out/node.raw). Once VMs were asked for, a missing image fails the test.
func Image(t testing.TB) string {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: no VMs")
	}
	if os.Getenv("KILN_E2E") != "1" {
		t.Skip("set KILN_E2E=1 to boot VMs")
	}
	img, err := testenv.ImagePath()
	if err != nil {
		t.Fatalf("KILN_E2E=1 but %v", err)
	}
	return img
}

// Name is a lab name for this test process: prefix and the pid, so two test binaries never share a lab.
func Name(prefix string) string { return fmt.Sprintf("%s%d", prefix, os.Getpid()%100000) }

// Accel is the accelerator the suites ask for: $KILN_LAB_ACCEL, or "" to probe KVM and fall back to TCG.
func Accel() qemu.Accel { return qemu.Accel(os.Getenv("KILN_LAB_ACCEL")) }

// Diagnoser renders what a failed test shows of a lab's nodes.
type Diagnoser func(ctx context.Context, nodes []*lab.Node) string

// Up boots a lab with opts and registers its teardown: when the test failed, diag's report (Serial when
// diag is nil) goes to the log first, then the lab goes down. Root defaults to a temporary directory of the
// test, Accel to Accel(). A failed start fails the test.
func Up(ctx context.Context, t testing.TB, opts lab.Options, diag Diagnoser) *lab.Lab {
	t.Helper()
	if opts.Root == "" {
		opts.Root = t.TempDir()
	}
	if opts.Accel == "" {
		opts.Accel = Accel()
	}
	if diag == nil {
		diag = Serial
	}
	l, err := lab.Up(ctx, opts)
	t.Cleanup(func() {
		if l != nil && t.Failed() {
			if ns, err := l.Nodes(); err == nil {
				t.Logf("diagnostics:\n%s", diag(context.Background(), ns))
				if dir := os.Getenv("KILN_DIAG_DIR"); dir != "" {
					keepJournals(t, filepath.Join(dir, opts.Name), ns)
				}
			}
		}
		if err := lab.Down(context.Background(), opts.Root, opts.Name); err != nil {
			t.Errorf("lab down: %v", err)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// Serial is the plain diagnoser: each node's serial tail, then one short block per node (running, address,
// MAC, its DHCP log) at the very end, so a report that keeps only the output's tail still has it.
func Serial(_ context.Context, nodes []*lab.Node) string {
	var b strings.Builder
	for _, n := range nodes {
		fmt.Fprintf(&b, "=== %s serial tail ===\n%s\n", n.Name(), n.SerialTail(40))
	}
	for _, n := range nodes {
		st, _ := n.State()
		fmt.Fprintf(&b, "=== %s: running %v, address %s, mac %s; DHCP log:\n%s\n", n.Name(), n.Running(), st.Address, st.MAC, n.DHCPLog(4))
	}
	return b.String()
}

// keepJournals writes each node's whole journal of this boot to dir/<node>.journal: the diagnostics in the
// log hold only the agent's last lines, and a failure's cause (a demotion, a raft election) is often older.
func keepJournals(t testing.TB, dir string, nodes []*lab.Node) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Logf("keep journals: %v", err)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	for _, n := range nodes {
		wg.Go(func() {
			res, err := n.Exec(ctx, "journalctl", "-b", "--no-pager", "-o", "short-precise")
			path := filepath.Join(dir, n.Name()+".journal")
			if err == nil {
				err = os.WriteFile(path, res.Stdout, 0o644)
			}
			if err != nil {
				t.Logf("keep journal of %s: %v", n.Name(), err)
				return
			}
			t.Logf("journal of %s: %s", n.Name(), path)
		})
	}
	wg.Wait()
}

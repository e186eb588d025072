package lab_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kiln-project/kiln/lab"
	"github.com/kiln-project/kiln/lab/labtest"
	"github.com/kiln-project/kiln/lab/netns"
)

// e2eTimeout bounds the whole end-to-end run: two rounds of three concurrent TCG boots on two cores, each boot
// a few minutes, plus partitions and teardown.
const e2eTimeout = 40 * time.Minute

// bootTimeout bounds one round of concurrent boots.
const bootTimeout = 15 * time.Minute

// marker is written to /var on nodes before faults: it survives a power cut, not a reimage.
const marker = "/var/lib/kiln-e2e-marker"

// TestE2E boots three nodes of the real image and breaks them: power cut with /var kept, reimage with /var lost
// and the hostname kept, replace with a new hostname, partitions full and peers-only, and a clean teardown.
func TestE2E(t *testing.T) {
	img := labtest.Image(t)
	ctx, cancel := context.WithTimeout(context.Background(), e2eTimeout)
	defer cancel()
	root := t.TempDir()
	name := labtest.Name("e2e")
	l := labtest.Up(ctx, t, lab.Options{Name: name, Root: root, Image: img, Nodes: 3}, labtest.Serial)
	nodes, err := l.Nodes()
	if err != nil {
		t.Fatal(err)
	}
	n1, n2, n3 := nodes[0], nodes[1], nodes[2]

	bootCtx, bootCancel := context.WithTimeout(ctx, bootTimeout)
	times, err := l.WaitBooted(bootCtx)
	bootCancel()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("first boot of 3 concurrent nodes: %v", times)

	hostnames := map[string]string{}
	for _, n := range nodes {
		h := mustExec(ctx, t, n, "hostname")
		addr, _ := n.Address()
		ips := mustExec(ctx, t, n, "ip", "-4", "-o", "addr", "show")
		if !strings.Contains(ips, " "+addr+"/24") {
			t.Errorf("%s: lab address %s not configured on the node:\n%s", n.Name(), addr, ips)
		}
		for other, oh := range hostnames {
			if oh == h {
				t.Errorf("%s and %s share hostname %q", n.Name(), other, h)
			}
		}
		hostnames[n.Name()] = h
	}
	t.Logf("hostnames: %v", hostnames)
	// A file into a node through stdin, as tests load images: 4 MiB, checked on the other side.
	blob := make([]byte, 4<<20)
	_, _ = rand.Read(blob)
	res, err := n1.ExecWith(ctx, lab.ExecOptions{Stdin: bytes.NewReader(blob)}, "sha256sum")
	if want := fmt.Sprintf("%x", sha256.Sum256(blob)); err != nil || res.ExitCode != 0 || !strings.HasPrefix(string(res.Stdout), want+" ") {
		t.Errorf("4 MiB through stdin: %q (exit %d, %v), want sha256 %s", res.Stdout, res.ExitCode, err, want)
	}
	st, err := l.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range st {
		if s.Power != "running" || !s.Booted {
			t.Errorf("status %s: power %s booted %v", s.Name, s.Power, s.Booted)
		}
		t.Logf("status %s: agent %s %s", s.Name, s.Agent, s.AgentError)
	}

	t.Run("partition", func(t *testing.T) {
		a3, _ := n3.Address()
		requireReach(ctx, t, n1, a3, true, "before partition")
		if err := n3.Partition(ctx, false); err != nil {
			t.Fatal(err)
		}
		requireReach(ctx, t, n1, a3, false, "full partition")
		requireReach(ctx, t, n2, a3, false, "full partition")
		if _, err := n3.Exec(ctx, "true"); !errors.Is(err, lab.ErrUnreachable) {
			t.Errorf("full partition: lab host still reaches node3 (err %v)", err)
		}
		if err := n3.Heal(ctx); err != nil {
			t.Fatal(err)
		}
		requireReach(ctx, t, n1, a3, true, "after heal")
		mustExec(ctx, t, n3, "true")

		if err := n3.Partition(ctx, true); err != nil {
			t.Fatal(err)
		}
		requireReach(ctx, t, n1, a3, false, "peers-only partition")
		mustExec(ctx, t, n3, "true") // the lab host still gets through
		if err := n3.Heal(ctx); err != nil {
			t.Fatal(err)
		}
		requireReach(ctx, t, n2, a3, true, "after second heal")
	})

	for _, n := range []*lab.Node{n1, n2} {
		mustExec(ctx, t, n, "sh", "-c", "echo kiln-e2e > "+marker+" && sync")
	}
	oldAddr3, _ := n3.Address()

	// Three faults on three nodes at once: their reboots overlap, which is most of the test's time.
	var wg sync.WaitGroup
	faults := map[string]func(t *testing.T){
		"kill-start": func(t *testing.T) {
			if err := n1.Kill(ctx); err != nil {
				t.Fatal(err)
			}
			if n1.Running() {
				t.Fatal("node1 running after kill")
			}
			if err := n1.Start(ctx); err != nil {
				t.Fatal(err)
			}
			waitBooted(ctx, t, n1)
			if got := mustExec(ctx, t, n1, "cat", marker); got != "kiln-e2e" {
				t.Errorf("marker after power cut: %q, want kiln-e2e", got)
			}
		},
		"reimage": func(t *testing.T) {
			if err := n2.Reimage(ctx); err != nil {
				t.Fatal(err)
			}
			waitBooted(ctx, t, n2)
			if res, err := n2.Exec(ctx, "test", "-e", marker); err != nil || res.ExitCode == 0 {
				t.Errorf("marker survived reimage (exit %d, %v)", res.ExitCode, err)
			}
			if h := mustExec(ctx, t, n2, "hostname"); h != hostnames["node2"] {
				t.Errorf("hostname after reimage %q, want %q (same hardware)", h, hostnames["node2"])
			}
		},
		"replace": func(t *testing.T) {
			if err := n3.Replace(ctx); err != nil {
				t.Fatal(err)
			}
			waitBooted(ctx, t, n3)
			if a, _ := n3.Address(); a == oldAddr3 {
				t.Errorf("replaced node kept address %s", a)
			}
			if h := mustExec(ctx, t, n3, "hostname"); h == hostnames["node3"] {
				t.Errorf("hostname after replace %q unchanged (new hardware)", h)
			}
		},
	}
	for name, fn := range faults {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t.Run(name, fn) // parallel-safe: t.Run of a non-parallel subtest blocks only this goroutine
		}()
	}
	wg.Wait()

	// An ACPI shutdown needs no reboot afterwards: cheap to check last.
	stopStart := time.Now()
	if err := n1.Stop(ctx); err != nil {
		t.Error(err)
	} else if p := n1.Power(ctx); p != "off" {
		t.Errorf("node1 power after stop %q, want off", p)
	} else {
		t.Logf("node1 ACPI shutdown took %s", time.Since(stopStart).Round(time.Second))
	}

	if t.Failed() {
		// Last before Down removes the logs, so that a CI report's tail (the lines before --- FAIL) shows them.
		nodes, _ := l.Nodes()
		t.Log(labtest.Serial(ctx, nodes))
	}
	if err := l.Down(ctx); err != nil {
		t.Fatal(err)
	}
	assertGone(t, root, name)
}

func waitBooted(ctx context.Context, t *testing.T, n *lab.Node) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, bootTimeout)
	defer cancel()
	d, err := n.WaitBooted(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s booted in %s", n.Name(), d.Round(time.Second))
}

func mustExec(ctx context.Context, t *testing.T, n *lab.Node, argv ...string) string {
	t.Helper()
	res, err := n.Exec(ctx, argv...)
	if err != nil {
		t.Fatalf("%s: %v: %v", n.Name(), argv, err)
	}
	if res.ExitCode != 0 {
		t.Fatalf("%s: %v: exit %d: %s", n.Name(), argv, res.ExitCode, res.Stderr)
	}
	return strings.TrimSpace(string(res.Stdout))
}

// requireReach checks whether from can open a TCP connection to addr:22 (sshd listens on every node).
func requireReach(ctx context.Context, t *testing.T, from *lab.Node, addr string, want bool, when string) {
	t.Helper()
	res, err := from.Exec(ctx, "timeout", "3", "bash", "-c", "exec 3<>/dev/tcp/"+addr+"/22")
	if err != nil {
		t.Fatalf("%s: %s: %v", when, from.Name(), err)
	}
	if got := res.ExitCode == 0; got != want {
		t.Errorf("%s: %s reaches %s: %v, want %v (%s)", when, from.Name(), addr, got, want, res.Stderr)
	}
}

// assertGone checks that a lab left no namespace, process or file.
func assertGone(t *testing.T, root, name string) {
	t.Helper()
	if netns.Exists(lab.Namespace(name)) {
		t.Errorf("namespace %s still exists", lab.Namespace(name))
	}
	out, _ := exec.Command("ip", "-o", "link", "show").Output()
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, "kiln-"+name) {
			t.Errorf("host link refers to the lab: %s", line)
		}
	}
	dir := filepath.Join(root, name)
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("lab directory still exists: %v", err)
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		if b, err := os.ReadFile(p); err == nil && strings.Contains(string(b), dir+"/") {
			t.Errorf("process %s still refers to the lab: %q", p, strings.ReplaceAll(string(b), "\x00", " "))
		}
	}
}

package testenv

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/docker/docker/client"
)

// NeedDocker skips unless KILN_DOCKER_TESTS=1; once asked for, a host that cannot run private dockerds in
// namespaces fails the test instead of hiding it behind a skip.
func NeedDocker(t testing.TB) {
	t.Helper()
	if os.Getenv("KILN_DOCKER_TESTS") != "1" {
		t.Skip("set KILN_DOCKER_TESTS=1 to run tests against private dockerds (needs root, dockerd, nsenter)")
	}
	if os.Geteuid() != 0 {
		t.Fatal("KILN_DOCKER_TESTS=1 asks for these tests, and they need root: network namespaces need root")
	}
	for _, tool := range []string{"dockerd", "nsenter", "ip"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("KILN_DOCKER_TESTS=1 asks for these tests, and they need %s: %v (make deps installs it)", tool, err)
		}
	}
}

// Dockerd starts a private dockerd in network namespace ns with its data, exec root and socket under dir
// (keep dir short: unix socket paths are limited to 108 bytes), and returns a client once it answers. It
// never touches the host's dockerd: its own socket, data root, no bridge, no iptables. It runs under
// `nsenter --net` (not `ip netns exec`, whose private /sys hides the cgroup mounts dockerd needs), and is
// stopped in t.Cleanup, which prints its log's tail when the test failed.
func Dockerd(t testing.TB, ns, dir string) *client.Client {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "d.sock")
	logf, err := os.Create(filepath.Join(dir, "dockerd.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("nsenter", "--net=/run/netns/"+ns, "dockerd",
		"--data-root", filepath.Join(dir, "data"), "--exec-root", filepath.Join(dir, "x"),
		"-H", "unix://"+sock, "--pidfile", filepath.Join(dir, "pid"),
		"--bridge=none", "--iptables=false", "--ip6tables=false")
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); logf.Close(); close(exited) }()
	t.Cleanup(func() {
		// nsenter execs dockerd, so the pid we started is dockerd's; it stops its own containerd on SIGTERM.
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		UnmountUnder(t, dir) // dockerd leaves the sandbox namespaces it bind-mounted under its exec-root
		if t.Failed() {
			if b, err := os.ReadFile(logf.Name()); err == nil {
				lines := strings.Split(strings.TrimSpace(string(b)), "\n")
				t.Logf("%s dockerd log tail:\n%s", ns, strings.Join(lines[max(0, len(lines)-15):], "\n"))
			}
		}
	})
	cli, err := client.NewClientWithOpts(client.WithHost("unix://"+sock), client.WithAPIVersionNegotiation())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := cli.Info(ctx)
		cancel()
		if err == nil {
			return cli
		}
		select {
		case <-exited:
			t.Fatalf("dockerd in %s exited during start-up; see %s", ns, logf.Name())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("dockerd in %s not answering after 60 s: %v", ns, err)
		}
		time.Sleep(200 * time.Millisecond) // poll interval while waiting for the daemon socket
	}
}

// UnmountUnder lazily unmounts every mount point below dir (so the temp dir can be removed).
func UnmountUnder(t testing.TB, dir string) {
	b, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		t.Log(err)
		return
	}
	for line := range strings.Lines(string(b)) {
		f := strings.Fields(line)
		if len(f) > 1 && strings.HasPrefix(f[1], dir+"/") {
			if err := syscall.Unmount(f[1], syscall.MNT_DETACH); err != nil {
				t.Logf("unmount %s: %v", f[1], err)
			}
		}
	}
}

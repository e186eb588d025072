package agents

import (
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/docker/docker/client"

	"github.com/kiln-project/kiln/firstboot/status"
	"github.com/kiln-project/kiln/internal/files"
	"github.com/kiln-project/kiln/internal/run"
	"github.com/kiln-project/kiln/internal/testenv"
)

// subnet is the bench LAN; nodes are .11, .12, … and the VIP is .100.
var subnet = netip.MustParsePrefix("10.99.8.0/24")

// node is one bench machine: a network namespace on the LAN's bridge and a mount namespace of its own
// (held open by a sleeping holder process) where /run and /var are private, so the agent's fixed paths
// (/run/kiln, /var/lib/kiln, /var/lib/glusterd, /var/data) are the node's alone.
type node struct {
	id          string
	ns          string
	addr        netip.Addr
	dir         string // host directory with the node's disk-backed state and logs
	holder      *exec.Cmd
	agent       *exec.Cmd
	agentExited chan struct{}
	started     time.Time // when the agent was started
}

// nodeSetup runs in the holder: private /run and /var on tmpfs, /var/run as Debian has it, glusterfs' TLS
// paths and switch as the image has them at first boot (kiln-firstboot glusterd-tls), and no geo-replication
// helper, as in the image. The bricks under /var/lib/kiln land on that tmpfs: it has trusted.* xattrs, and it
// is not the root filesystem, which glusterd refuses for bricks.
const nodeSetup = `set -e
mount -t tmpfs kab-run /run
mkdir -p /run/kiln /run/gluster /run/lock /run/systemd/system
mount -t tmpfs -o size=256m kab-var /var
mkdir -p /var/lib/glusterd /var/lib/kiln /var/log/glusterfs /var/data /var/tmp
ln -s /run /var/run
ln -s /run/lock /var/lock
` + testenv.GlusterTLSLinks + testenv.GlusterWithoutGeoRep + `touch /var/lib/glusterd/secure-access
touch /run/kab-ready
exec sleep 86400
`

// newLAN makes n nodes on one bridge and registers their teardown: every process in a node's network
// namespace is ended, then the namespaces and directories go.
func newLAN(tb testing.TB, n int) []*node {
	tb.Helper()
	base, err := os.MkdirTemp("", "kab") // short: unix socket paths are limited to 108 bytes
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { os.RemoveAll(base) })

	var nodes []*node
	for i, h := range testenv.LAN(tb, "kab", subnet, n) {
		nd := &node{id: fmt.Sprintf("n%d", i+1), ns: h.NS, addr: h.Addr, dir: filepath.Join(base, strconv.Itoa(i))}
		for _, d := range []string{"docker", "log"} {
			if err := os.MkdirAll(filepath.Join(nd.dir, d), 0o755); err != nil {
				tb.Fatal(err)
			}
		}
		tb.Cleanup(func() { nd.teardown(tb) })
		nd.startHolder(tb)
		nodes = append(nodes, nd)
	}
	return nodes
}

func (n *node) startHolder(tb testing.TB) {
	tb.Helper()
	logf, err := os.Create(filepath.Join(n.dir, "log", "holder.log"))
	if err != nil {
		tb.Fatal(err)
	}
	// nsenter --net, not ip netns exec: the latter remounts /sys and hides the cgroup mounts dockerd needs.
	n.holder = exec.Command("nsenter", "--net=/run/netns/"+n.ns, "unshare", "--mount", "--propagation", "private",
		"sh", "-c", nodeSetup, "sh", n.dir)
	n.holder.Stdout, n.holder.Stderr = logf, logf
	if err := n.holder.Start(); err != nil {
		tb.Fatal(err)
	}
	go func() { n.holder.Wait(); logf.Close() }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(n.path("/run/kab-ready")); err == nil {
			return
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(logf.Name())
			tb.Fatalf("node %s: namespaces not ready after 10 s: %s", n.id, b)
		}
		time.Sleep(20 * time.Millisecond) // poll interval while the holder mounts
	}
}

// path is p inside the node's mount namespace, as seen from the host.
func (n *node) path(p string) string {
	return fmt.Sprintf("/proc/%d/root%s", n.holder.Process.Pid, p)
}

// command runs name inside the node's network and mount namespaces (a daemon: not bound to a context).
func (n *node) command(name string, args ...string) *exec.Cmd {
	return n.commandContext(context.Background(), name, args...)
}

// commandContext is command, killed when ctx ends.
func (n *node) commandContext(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "nsenter", append([]string{"-t", strconv.Itoa(n.holder.Process.Pid), "-n", "-m", "--", name}, args...)...)
}

// startDockerd starts the node's dockerd on /run/docker.sock and waits until it answers, as the image's
// docker.service does before the agent needs it.
func (n *node) startDockerd(tb testing.TB) {
	tb.Helper()
	logf, err := os.Create(filepath.Join(n.dir, "log", "dockerd.log"))
	if err != nil {
		tb.Fatal(err)
	}
	cmd := n.command("dockerd", "--data-root", filepath.Join(n.dir, "docker"),
		"--bridge=none", "--iptables=false", "--ip6tables=false")
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	go func() { cmd.Wait(); logf.Close() }()
	cli, err := client.NewClientWithOpts(client.WithHost("unix://"+n.path("/run/docker.sock")), client.WithAPIVersionNegotiation())
	if err != nil {
		tb.Fatal(err)
	}
	defer cli.Close()
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := cli.Info(ctx)
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("node %s: dockerd not answering after 60 s: %v\n%s", n.id, err, files.Tail(filepath.Join(n.dir, "log", "dockerd.log"), 15))
		}
		time.Sleep(100 * time.Millisecond) // poll interval while dockerd starts
	}
}

// startGlusterd starts the node's glusterd with its pid file (see units) and waits until its CLI answers.
func (n *node) startGlusterd(tb testing.TB) {
	tb.Helper()
	logf, err := os.Create(filepath.Join(n.dir, "log", "glusterd.log"))
	if err != nil {
		tb.Fatal(err)
	}
	cmd := n.command("glusterd", glusterdArgs...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	go func() { cmd.Wait(); logf.Close() }()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := waitGlusterdIn(ctx, n); err != nil {
		tb.Fatalf("node %s: %v\n%s", n.id, err, files.Tail(logf.Name(), 15))
	}
}

// startAgent starts this test binary as the node's agent (see TestMain) with the cluster config at cfg.
func (n *node) startAgent(tb testing.TB, cfg string) {
	tb.Helper()
	exe, err := os.Executable()
	if err != nil {
		tb.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(n.dir, "log", "agent.log"))
	if err != nil {
		tb.Fatal(err)
	}
	cmd := n.command(exe)
	cmd.Env = append(os.Environ(), agentEnv+"="+n.id, configEnv+"="+cfg, logDirEnv+"="+filepath.Join(n.dir, "log"))
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	n.agent, n.started, n.agentExited = cmd, time.Now(), make(chan struct{})
	go func() { cmd.Wait(); logf.Close(); close(n.agentExited) }()
}

// status reads the agent's status file (nil before the agent wrote one).
func (n *node) status() *status.Status {
	b, err := os.ReadFile(n.path(status.DefaultPath))
	if err != nil {
		return nil
	}
	var st status.Status
	if json.Unmarshal(b, &st) != nil {
		return nil
	}
	return &st
}

// teardown stops the agent first (so it leaves the membership cleanly), then ends every process left in the
// node's network namespace (dockerd and its containerd, glusterd, bricks, FUSE client, keepalived, the
// holder); testenv.LAN removes the namespace after.
func (n *node) teardown(tb testing.TB) {
	if n.agent != nil {
		n.agent.Process.Signal(syscall.SIGTERM)
		select {
		case <-n.agentExited:
		case <-time.After(20 * time.Second):
		}
	}
	if tb.Failed() {
		tb.Logf("node %s agent log tail:\n%s", n.id, files.Tail(filepath.Join(n.dir, "log", "agent.log"), 30))
	}
	n.keepLogs(tb)
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL} {
		deadline := time.Now().Add(15 * time.Second)
		for first := true; time.Now().Before(deadline); first = false {
			out, _ := run.Cmd(context.Background(), "ip", "netns", "pids", n.ns)
			pids := strings.Fields(string(out))
			if len(pids) == 0 {
				break
			}
			if first {
				for _, p := range pids {
					if pid, err := strconv.Atoi(p); err == nil {
						syscall.Kill(pid, sig)
					}
				}
			}
			time.Sleep(100 * time.Millisecond) // poll interval while processes exit
		}
	}
}

// keepLogs copies the node's logs under $KILN_BENCH_KEEPLOGS (when set), so a slow or failed formation can be
// read afterwards: <dir>/<lan>/<node>/log/…, and glusterfs' own logs (glusterd, bricks, FUSE client), which
// live in the node's private /var and go with its holder, under log/glusterfs.
func (n *node) keepLogs(tb testing.TB) {
	dst := os.Getenv(keepLogsEnv)
	if dst == "" {
		return
	}
	logDir := filepath.Join(dst, filepath.Base(filepath.Dir(n.dir)), filepath.Base(n.dir), "log")
	for src, to := range map[string]string{filepath.Join(n.dir, "log"): logDir, n.path("/var/log/glusterfs"): filepath.Join(logDir, "glusterfs")} {
		filepath.WalkDir(src, func(p string, e fs.DirEntry, err error) error {
			if err != nil || !e.Type().IsRegular() {
				return nil
			}
			rel, _ := filepath.Rel(src, p)
			out := filepath.Join(to, rel)
			err = os.MkdirAll(filepath.Dir(out), 0o755)
			if err == nil {
				err = files.Copy(context.Background(), out, p, 0o644)
			}
			if err != nil {
				tb.Logf("keep logs: %v", err)
			}
			return nil
		})
	}
}

package formation

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/kiln-project/kiln/firstboot/config"
	"github.com/kiln-project/kiln/firstboot/ingress"
	"github.com/kiln-project/kiln/internal/run"
	"github.com/kiln-project/kiln/lab"
	"github.com/kiln-project/kiln/lab/netns"
	"github.com/kiln-project/kiln/test/acmeca"
)

// ExecStdin runs command (one shell command line, already quoted) on n with stdin, over n's shared ssh
// connection (lab.Node.ExecWith), and returns stdout; a non-zero exit is an error.
func ExecStdin(ctx context.Context, n *lab.Node, stdin []byte, command string) ([]byte, error) {
	res, err := n.ExecWith(ctx, lab.ExecOptions{Stdin: bytes.NewReader(stdin)}, "sh", "-c", command)
	if err := execError(res, err); err != nil {
		return res.Stdout, fmt.Errorf("%s: %s: %w", n.Name(), command, err)
	}
	return res.Stdout, nil
}

// SSH runs command as root on whatever answers ssh at addr now (a node, or the VIP) with the lab's key, on a
// connection of its own (lab.Lab.ExecAt), and returns stdout; a non-zero exit is an error.
func SSH(ctx context.Context, l *lab.Lab, addr string, stdin []byte, command string) ([]byte, error) {
	var o lab.ExecOptions
	if stdin != nil {
		o.Stdin = bytes.NewReader(stdin)
	}
	res, err := l.ExecAt(ctx, addr, o, "sh", "-c", command)
	if err := execError(res, err); err != nil {
		return res.Stdout, fmt.Errorf("ssh %s: %s: %w", addr, command, err)
	}
	return res.Stdout, nil
}

func execError(res lab.ExecResult, err error) error {
	if err != nil {
		return err
	}
	if res.ExitCode != 0 {
		return fmt.Errorf("exit %d: %s", res.ExitCode, res.Stderr)
	}
	return nil
}

// BuildTestsvc compiles test/formation/testsvc as a static binary (CGO_ENABLED=0) and returns its bytes.
func BuildTestsvc(ctx context.Context) ([]byte, error) {
	dir, err := os.MkdirTemp("", "kiln-testsvc-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, "testsvc")
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags", "-s -w -buildid=", "-o", bin, "./test/formation/testsvc")
	cmd.Dir = RepoRoot()
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("build testsvc: %w: %s", err, out)
	}
	return os.ReadFile(bin)
}

// TestsvcImage is the local image name the test service runs as.
const TestsvcImage = "kiln/testsvc:e2e"

// InstallTestsvc imports the one-file image tar as TestsvcImage on n (no registry exists anywhere: every node
// gets the image the same way) and returns the image id.
func InstallTestsvc(ctx context.Context, n *lab.Node, tarball []byte) (string, error) {
	out, err := ExecStdin(ctx, n, tarball,
		`cat > /var/tmp/testsvc.tar && docker import --change 'ENTRYPOINT ["/testsvc"]' /var/tmp/testsvc.tar `+TestsvcImage+` && rm -f /var/tmp/testsvc.tar`)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(out)), nil
}

// AddSource adds p to the lab bridge (idempotent), so probes can come from an address outside the lab subnet.
func AddSource(ctx context.Context, ns string, p netip.Prefix) error {
	if _, err := run.Cmd(ctx, "ip", "-n", ns, "addr", "replace", p.String(), "dev", lab.Bridge); err != nil {
		return fmt.Errorf("add source %s in %s: %w", p, ns, err)
	}
	return nil
}

// HTTPGet does one GET http://addr:port/path from inside namespace ns (from src when valid) on a fresh
// connection, and returns the status code and body. One connection per request, so each request is balanced
// anew by the routing mesh.
func HTTPGet(ctx context.Context, ns string, src, addr netip.Addr, port uint16, path string, timeout time.Duration) (code int, body string, err error) {
	return HTTPDo(ctx, ns, src, addr, port, http.MethodGet, path, "", timeout)
}

// HTTPDo is HTTPGet for any method, with a request body (none when empty).
func HTTPDo(ctx context.Context, ns string, src, addr netip.Addr, port uint16, method, path, reqBody string, timeout time.Duration) (code int, body string, err error) {
	err = netns.Do(ns, func() error {
		d := net.Dialer{Timeout: timeout}
		if src.IsValid() {
			d.LocalAddr = &net.TCPAddr{IP: src.AsSlice()}
		}
		target := netip.AddrPortFrom(addr, port).String()
		c, err := d.DialContext(ctx, "tcp", target)
		if err != nil {
			return err
		}
		defer c.Close()
		if err := c.SetDeadline(time.Now().Add(timeout)); err != nil {
			return err
		}
		var rb io.Reader
		if reqBody != "" {
			rb = strings.NewReader(reqBody)
		}
		req, err := http.NewRequestWithContext(ctx, method, "http://"+target+path, rb)
		if err != nil {
			return err
		}
		req.Close = true
		if err := req.Write(c); err != nil {
			return fmt.Errorf("%s %s: %w", method, target, err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), req)
		if err != nil {
			return fmt.Errorf("%s %s: %w", method, target, err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		if err != nil {
			return fmt.Errorf("%s %s: body: %w", method, target, err)
		}
		code, body = resp.StatusCode, string(bytes.TrimSpace(b))
		return nil
	})
	return code, body, err
}

// WebDataDir is the directory on the shared volume the web service stores POSTed records in (bind-mounted
// into every task at /data).
const WebDataDir = "/var/data/web"

// WebHost is the name the web service is routed under through Traefik (Web.Routed).
const WebHost = "app.test"

// Web says how the test service is deployed and reached.
type Web struct {
	// Routed puts the service behind Traefik instead of publishing port 80 itself: it joins the ingress
	// stack's network with labels for https://WebHost/ (and for acmeca.BlockedDomain, whose certificate the
	// test CA refuses), and clients reach it at any node's (the VIP's) 443. Needs the ingress stack, which
	// owns 80 and 443; the firewall lets nothing but 80 and 443 through to published ports from outside the
	// cluster, so a routed service publishes nothing.
	Routed bool
}

// WebArgs are the `docker service create` arguments of the web service (without the image).
func (w Web) WebArgs() []string {
	args := []string{"--detach", "--name", "web", "--no-resolve-image",
		"--hostname", "{{.Node.Hostname}}", "--replicas", "3",
		"--replicas-max-per-node", "1", "--mount", "type=bind,source=" + WebDataDir + ",target=/data",
		"--env", "TESTSVC_DATA=/data"}
	if !w.Routed {
		return append(args, "--publish", "published=80,target=80")
	}
	return append(args, "--network", ingress.Network,
		"--label", "traefik.enable=true",
		"--label", "traefik.http.routers.app.rule=Host(`"+WebHost+"`)",
		"--label", "traefik.http.routers.blocked.rule=Host(`"+acmeca.BlockedDomain+"`)",
		"--label", "traefik.http.services.app.loadbalancer.server.port=80")
}

// Do sends one request to the web service through addr (the VIP or a node) from inside namespace ns, on a
// fresh connection, the way a client reaches it: http://addr/path, or https://WebHost/path via addr:443 when
// routed (any certificate accepted: the ingress proof checks certificates on its own).
func (w Web) Do(ctx context.Context, ns string, addr netip.Addr, method, path, body string, timeout time.Duration) (code int, answer string, err error) {
	if !w.Routed {
		return HTTPDo(ctx, ns, netip.Addr{}, addr, 80, method, path, body, timeout)
	}
	ans, err := acmeca.HTTPSDo(ctx, ns, addr, WebHost, method, path, body, timeout)
	return ans.Code, ans.Body, err
}

// CreateWebService creates the test service "web" from n: three tasks of TestsvcImage, one per node, reached
// through the routing mesh (w), with WebDataDir bind-mounted. The directory is made on the mounted volume
// first (never on the empty mountpoint below it); on a node whose volume is not mounted yet the bind source is
// missing, so docker refuses the task there instead of letting it write to the local disk.
//   - --no-resolve-image: there is no registry to ask for a digest; every node has the image locally.
//   - --hostname: each task answers with its node's hostname, so responses say who served them.
//
// A routed service waits (bounded by ctx) for the ingress network, which the agent creates with the stack.
func CreateWebService(ctx context.Context, n *lab.Node, w Web) error {
	_, err := Exec(ctx, n, "sh", "-c", "mountpoint -q /var/data && mkdir -p "+WebDataDir)
	if err != nil {
		return fmt.Errorf("web service: data directory: %w", err)
	}
	if w.Routed {
		err := Poll(ctx, 5*time.Second, "network "+ingress.Network, func(ctx context.Context) (bool, string, error) {
			_, err := Exec(ctx, n, "docker", "network", "inspect", "--format", "{{.ID}}", ingress.Network)
			if err != nil {
				return false, err.Error(), nil
			}
			return true, "", nil
		})
		if err != nil {
			return fmt.Errorf("web service: %w", err)
		}
	}
	_, err = Exec(ctx, n, append(append([]string{"docker", "service", "create"}, w.WebArgs()...), TestsvcImage)...)
	if err != nil {
		return fmt.Errorf("web service: create: %w", err)
	}
	return nil
}

// TestsvcTarball builds testsvc and packs it as the tarball InstallTestsvc imports.
func TestsvcTarball(ctx context.Context) ([]byte, error) {
	svc, err := BuildTestsvc(ctx)
	if err != nil {
		return nil, err
	}
	var tar bytes.Buffer
	if err := ImageTar(&tar, "testsvc", svc); err != nil {
		return nil, err
	}
	return tar.Bytes(), nil
}

// DeployWeb imports the testsvc tarball on every node, creates the web service (CreateWebService) and waits,
// bounded by ctx, until its three tasks run.
func DeployWeb(ctx context.Context, nodes []*lab.Node, tarball []byte, w Web) error {
	errs := make([]error, len(nodes))
	var wg sync.WaitGroup
	for i, n := range nodes {
		wg.Go(func() { _, errs[i] = InstallTestsvc(ctx, n, tarball) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if err := CreateWebService(ctx, nodes[0], w); err != nil {
		return err
	}
	return Poll(ctx, 5*time.Second, "service web 3/3", func(ctx context.Context) (bool, string, error) {
		ok, detail := ServiceConverged(ctx, nodes[0], "web")
		return ok, detail, nil
	})
}

// AddNodeWithConfig adds a node whose fw_cfg config carries clusterConfig instead of the lab's.
//
// The lab API has no per-node config: Add provisions the new node from the lab's own cluster config file
// (<dir>/cluster.yaml), read when the node's config.yaml is written. So the file is swapped for the call and
// restored afterwards; nodes already provisioned keep theirs (config.yaml is only rewritten on provision, i.e.
// add, replace, reimage-free paths). Replace this with a lab API (e.g. Lab.AddWith) when one exists.
func AddNodeWithConfig(ctx context.Context, l *lab.Lab, clusterConfig []byte) (*lab.Node, error) {
	path := filepath.Join(l.Dir(), "cluster.yaml")
	orig, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("add foreign node: lab cluster config: %w", err)
	}
	if err := os.WriteFile(path, clusterConfig, 0o600); err != nil {
		return nil, fmt.Errorf("add foreign node: %w", err)
	}
	n, addErr := l.Add(ctx)
	if err := os.WriteFile(path, orig, 0o600); err != nil {
		return n, fmt.Errorf("add foreign node: restore lab cluster config: %w", err)
	}
	if addErr != nil {
		return nil, addErr
	}
	// Prove the swap did what we meant: the node's own config is the foreign one.
	got, err := os.ReadFile(filepath.Join(l.Dir(), n.Name(), "config.yaml"))
	if err != nil {
		return n, fmt.Errorf("add foreign node: %w", err)
	}
	want, err := config.Parse(clusterConfig)
	if err != nil {
		return n, fmt.Errorf("add foreign node: %w", err)
	}
	if !bytes.Contains(got, []byte(want.Cluster.Key.String())) {
		return n, fmt.Errorf("add foreign node: %s's config.yaml does not carry the foreign key", n.Name())
	}
	return n, nil
}

package ingress

import (
	"archive/tar"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kiln-project/kiln/firstboot/config"
	"github.com/kiln-project/kiln/internal/testenv"
	"github.com/kiln-project/kiln/test/acmeca"
)

// TestTraefikACME runs the preloaded Traefik binary with the ingress stack's own arguments (the swarm
// provider swapped for a file one: no swarm here, and ACME does not care where routers come from) against
// Pebble in a network namespace, no VM:
//   - with the CA reachable through the configured bundle, https://app.test/ gets a certificate chaining to
//     the CA's root, stored in acme.json (0600); a restarted Traefik serves the same one and asks for none;
//     a name the CA refuses gets the self-signed default certificate and LastACMEError names it;
//   - with the CA unreachable, HTTPS answers with the default certificate and LastACMEError says why.
//
// The status line the agent shows is "ACME failing: " + LastACMEError of this same log. Needs root (netns)
// and the Traefik archive: $KILN_TRAEFIK_ARCHIVE, else taken from the built image's pxe directory.
func TestTraefikACME(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: no namespaces")
	}
	testenv.NeedDocker(t) // the real-daemon gate: root, ip netns
	bin := traefikBinary(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	tools := t.TempDir()
	if err := acmeca.BuildTools(ctx, tools); err != nil {
		t.Fatal(err)
	}
	h := testenv.LAN(t, "ktr", netip.MustParsePrefix("10.99.9.0/24"), 1)[0]
	ca, err := acmeca.New(t.TempDir(), h.Addr)
	if err != nil {
		t.Fatal(err)
	}
	if err := ca.Start(ctx, h.NS, tools, h.Addr); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ca.Stop)
	root, err := ca.Root(ctx)
	if err != nil {
		t.Fatal(err)
	}
	in := ca.Ingress()
	routes := "http:\n  routers:\n" +
		"    app:\n      rule: Host(`app.test`)\n      service: app\n" +
		"    blocked:\n      rule: Host(`" + acmeca.BlockedDomain + "`)\n      service: app\n" +
		"  services:\n    app:\n      loadBalancer:\n        servers:\n          - url: http://127.0.0.1:9\n"

	run := func(cfg *config.Ingress, data string) *traefikProc {
		t.Helper()
		bundle, err := cfg.Bundle()
		if err != nil {
			t.Fatal(err)
		}
		d := Desired{Email: cfg.Email, CA: cfg.CA, Bundle: bundle, DataDir: data}
		if err := prepareData(d); err != nil {
			t.Fatal(err)
		}
		p, err := startTraefik(h.NS, bin, d, routes)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(p.stop)
		return p
	}

	data := filepath.Join(t.TempDir(), "ingress")
	p := run(in, data)
	ans := waitCert(ctx, t, h.NS, h.Addr, "app.test", root, p)
	serial := acmeca.SerialHex(ans.Leaf())
	st, err := os.Stat(filepath.Join(data, AcmeFile))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("acme.json: %v %v, want mode 0600", st.Mode(), err)
	}
	b, _ := os.ReadFile(filepath.Join(data, AcmeFile))
	if stored, err := acmeca.StoredCert(b, Resolver, "app.test"); err != nil || acmeca.SerialHex(stored) != serial {
		t.Errorf("acme.json holds %s (%v), Traefik serves %s", acmeca.Describe(stored), err, serial)
	}
	checkDefault(ctx, t, h.NS, h.Addr, acmeca.BlockedDomain, root)
	waitACMEError(ctx, t, p, acmeca.BlockedDomain)

	p.stop()
	p = run(in, data)
	again := waitCert(ctx, t, h.NS, h.Addr, "app.test", root, p)
	if got := acmeca.SerialHex(again.Leaf()); got != serial {
		t.Errorf("restarted Traefik serves %s, want the stored %s", got, serial)
	}
	if n, err := ca.Issued(); err != nil || n != 1 {
		t.Errorf("the CA issued %d certificates (%v), want 1", n, err)
	}
	p.stop()

	// No reachable ACME: the CA is gone; a fresh data directory has no certificate to fall back on.
	ca.Stop()
	p = run(in, filepath.Join(t.TempDir(), "ingress"))
	waitACMEError(ctx, t, p, "connection refused")
	checkDefault(ctx, t, h.NS, h.Addr, "app.test", root)
}

// traefikBinary extracts usr/local/bin/traefik from the preloaded image's archive.
func traefikBinary(t *testing.T) string {
	t.Helper()
	archive := os.Getenv("KILN_TRAEFIK_ARCHIVE")
	if archive == "" {
		pxe, err := testenv.PXEDir()
		if err != nil {
			t.Skipf("no Traefik archive: set KILN_TRAEFIK_ARCHIVE or build the image with preload traefik and pxe (%v)", err)
		}
		dir := t.TempDir()
		out, err := exec.Command("unsquashfs", "-no-progress", "-d", filepath.Join(dir, "x"), filepath.Join(pxe, "node.squashfs"), "/usr/lib/kiln/images").CombinedOutput()
		if err != nil {
			t.Fatalf("unsquashfs: %v: %s", err, out)
		}
		m, _ := filepath.Glob(filepath.Join(dir, "x", "usr/lib/kiln/images", "traefik-*.tar"))
		if len(m) == 0 {
			t.Skipf("the image at %s preloads no Traefik", pxe)
		}
		archive = m[0]
	}
	bin := filepath.Join(t.TempDir(), "traefik")
	if err := extractTraefik(archive, bin); err != nil {
		t.Fatal(err)
	}
	return bin
}

// extractTraefik copies the Traefik binary out of a docker save archive (its layer tars).
func extractTraefik(archive, dst string) error {
	f, err := os.Open(archive)
	if err != nil {
		return err
	}
	defer f.Close()
	outer := tar.NewReader(f)
	for {
		h, err := outer.Next()
		if errors.Is(err, io.EOF) {
			return fmt.Errorf("%s: no usr/local/bin/traefik in any layer", archive)
		}
		if err != nil {
			return err
		}
		if !strings.HasSuffix(h.Name, "layer.tar") {
			continue
		}
		inner := tar.NewReader(outer)
		for {
			ih, err := inner.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return err
			}
			if strings.TrimPrefix(ih.Name, "./") != "usr/local/bin/traefik" {
				continue
			}
			out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
			if err != nil {
				return err
			}
			if _, err := io.Copy(out, inner); err != nil {
				out.Close()
				return err
			}
			return out.Close()
		}
	}
}

type traefikProc struct {
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

// startTraefik runs bin in ns with Args(d): paths under /data point at d.DataDir, and routes (file
// provider) stand in for the swarm provider.
func startTraefik(ns, bin string, d Desired, routes string) (*traefikProc, error) {
	dyn := filepath.Join(d.DataDir, "routes.yaml")
	if err := os.WriteFile(dyn, []byte(routes), 0o644); err != nil {
		return nil, err
	}
	args := []string{"netns", "exec", ns, bin}
	for _, a := range Args(d) {
		if strings.HasPrefix(a, "--providers.swarm") {
			continue
		}
		args = append(args, strings.ReplaceAll(a, containerData+"/", d.DataDir+"/"))
	}
	args = append(args, "--providers.file.filename="+dyn)
	logPath := filepath.Join(d.DataDir, "traefik.log")
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command("ip", args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &traefikProc{cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(p.done) }()
	return p, nil
}

func (p *traefikProc) stop() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
}

func (p *traefikProc) logTail() string {
	b, _ := os.ReadFile(p.log)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// waitCert polls https://name/ through addr until the certificate presented chains to root.
func waitCert(ctx context.Context, t *testing.T, ns string, addr netip.Addr, name string, root *x509.Certificate, p *traefikProc) acmeca.TLSAnswer {
	t.Helper()
	var last string
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
		ans, err := acmeca.HTTPSGet(ctx, ns, addr, name, "/", 5*time.Second)
		if err != nil {
			last = err.Error()
			continue
		}
		if err := ans.VerifyChain(root, name); err != nil {
			last = fmt.Sprintf("%s: %v", acmeca.Describe(ans.Leaf()), err)
			continue
		}
		return ans
	}
	t.Fatalf("https://%s/: no certificate from the test CA within a minute: %s\ntraefik log:\n%s", name, last, p.logTail())
	return acmeca.TLSAnswer{}
}

// checkDefault wants https://name/ to answer with a self-signed certificate that is not the CA's.
func checkDefault(ctx context.Context, t *testing.T, ns string, addr netip.Addr, name string, root *x509.Certificate) {
	t.Helper()
	ans, err := acmeca.HTTPSGet(ctx, ns, addr, name, "/", 5*time.Second)
	if err != nil {
		t.Fatalf("https://%s/: %v", name, err)
	}
	leaf := ans.Leaf()
	if leaf == nil || ans.VerifyChain(root, name) == nil || leaf.Issuer.String() != leaf.Subject.String() {
		t.Errorf("https://%s/: %s, want Traefik's self-signed default certificate", name, acmeca.Describe(leaf))
	}
}

// waitACMEError waits until LastACMEError of Traefik's log mentions want.
func waitACMEError(ctx context.Context, t *testing.T, p *traefikProc, want string) {
	t.Helper()
	var got string
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline) && ctx.Err() == nil; time.Sleep(500 * time.Millisecond) {
		b, _ := os.ReadFile(p.log)
		if got = LastACMEError(b); strings.Contains(got, want) {
			t.Logf("status would say: ACME failing: %s", got)
			return
		}
	}
	t.Errorf("LastACMEError = %q, want it to name %q\ntraefik log:\n%s", got, want, p.logTail())
}

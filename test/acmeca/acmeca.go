// Package acmeca runs Let's Encrypt's ACME test CA (Pebble, and pebble-challtestsrv as its DNS) for the
// ingress proofs, inside a network namespace, and reads what an HTTPS server presents: the chain, whether it
// leads to the CA's root, the certificates in Traefik's acme.json.
package acmeca

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/kiln-project/kiln/firstboot/config"
	"github.com/kiln-project/kiln/internal/files"
	"github.com/kiln-project/kiln/internal/testenv"
	"github.com/kiln-project/kiln/lab/netns"
)

// The CA's ports on its address. ACMEPort serves the directory, ACMEMgmtPort the management API (roots,
// intermediates), DNSPort the challenge test server's DNS, which answers every A query with one address
// (Start's answer): a test name such as app.test resolves, for Pebble's validation, to where Traefik answers.
const (
	ACMEPort     = 14000
	ACMEMgmtPort = 15000
	DNSPort      = 8053
	dnsMgmtPort  = 8055
)

// BlockedDomain is a name Pebble refuses to issue for: a router for it is the proof's ACME failure.
const BlockedDomain = "blocked.test"

// BuildTools compiles Pebble and pebble-challtestsrv (Let's Encrypt's ACME test CA and its DNS, tool
// dependencies in go.mod, so their versions are pinned and their sums checked) into dir.
func BuildTools(ctx context.Context, dir string) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", dir+"/",
		"github.com/letsencrypt/pebble/v2/cmd/pebble", "github.com/letsencrypt/pebble/v2/cmd/pebble-challtestsrv")
	cmd.Dir = testenv.RepoRoot()
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("build pebble: %w: %s", err, out)
	}
	return nil
}

// CA is Pebble and its DNS running inside a network namespace (the lab's: on the lab host), bound to one
// address only. Pebble's HTTPS listener has a certificate from a CA made for the test (TLSBundle): nodes
// trust it through the cluster config's ingress.ca_bundle. The CA that signs what Pebble issues is Pebble's
// own, made at its start (Root).
type CA struct {
	Host netip.Addr
	// TLSBundle is the PEM of the CA that signs Pebble's listener certificate.
	TLSBundle []byte
	dir       string
	tlsPool   *x509.CertPool
	ns        string
	procs     []*exec.Cmd
}

// New makes the listener's CA and certificate for host under dir; Start runs the servers.
func New(dir string, host netip.Addr) (*CA, error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "kiln test ACME listener CA"},
		NotBefore:             now.Add(-24 * time.Hour),
		NotAfter:              now.Add(7 * 24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, fmt.Errorf("acme ca: %w", err)
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: host.String()},
		IPAddresses:  []net.IP{host.AsSlice()},
		DNSNames:     []string{"pebble"},
		NotBefore:    now.Add(-24 * time.Hour),
		NotAfter:     now.Add(7 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}, caCert, &key.PublicKey, caKey)
	if err != nil {
		return nil, fmt.Errorf("acme ca: %w", err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, err
	}
	bundle := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	for name, data := range map[string][]byte{
		"cert.pem": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leafDER}),
		"key.pem":  pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}),
	} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			return nil, err
		}
	}
	pool := x509.NewCertPool()
	pool.AddCert(caCert)
	return &CA{Host: host, TLSBundle: bundle, dir: dir, tlsPool: pool}, nil
}

// DirectoryURL is Pebble's ACME directory.
func (a *CA) DirectoryURL() string {
	return "https://" + netip.AddrPortFrom(a.Host, ACMEPort).String() + "/dir"
}

// Ingress is the cluster config's ingress section for this CA.
func (a *CA) Ingress() *config.Ingress {
	return &config.Ingress{Email: "ops@kiln.test", CA: a.DirectoryURL(), CABundle: string(a.TLSBundle)}
}

// pebbleConfig is Pebble's config file: validation of HTTP-01 on port 80 and TLS-ALPN-01 on 443 (where
// Traefik listens), BlockedDomain refused.
func (a *CA) pebbleConfig() ([]byte, error) {
	c := map[string]any{"pebble": map[string]any{
		"listenAddress":                  netip.AddrPortFrom(a.Host, ACMEPort).String(),
		"managementListenAddress":        netip.AddrPortFrom(a.Host, ACMEMgmtPort).String(),
		"certificate":                    filepath.Join(a.dir, "cert.pem"),
		"privateKey":                     filepath.Join(a.dir, "key.pem"),
		"httpPort":                       80,
		"tlsPort":                        443,
		"externalAccountBindingRequired": false,
		"domainBlocklist":                []string{BlockedDomain},
		"retryAfter":                     map[string]int{"authz": 3, "order": 5},
	}}
	return json.MarshalIndent(c, "", "  ")
}

// Start runs pebble-challtestsrv (DNS only: every A query answers answer, no AAAA) and Pebble in namespace
// ns, each in its own process group, logging to files in the CA's directory, and waits until both listen.
// Stop ends them.
func (a *CA) Start(ctx context.Context, ns, toolDir string, answer netip.Addr) error {
	a.ns = ns
	cfg, err := a.pebbleConfig()
	if err != nil {
		return err
	}
	cfgPath := filepath.Join(a.dir, "pebble-config.json")
	if err := os.WriteFile(cfgPath, cfg, 0o600); err != nil {
		return err
	}
	dns := netip.AddrPortFrom(a.Host, DNSPort).String()
	if err := a.start(ns, "challtestsrv", nil, filepath.Join(toolDir, "pebble-challtestsrv"),
		"-dnsserver", dns, "-defaultIPv4", answer.String(), "-defaultIPv6", "",
		"-http01", "", "-https01", "", "-tlsalpn01", "", "-doh", "",
		"-management", netip.AddrPortFrom(a.Host, dnsMgmtPort).String()); err != nil {
		return err
	}
	// No random sleeps before validating, no nonces rejected on purpose: the proof times issuance, and
	// Traefik's ACME client handles neither faster.
	env := []string{"PEBBLE_VA_NOSLEEP=1", "PEBBLE_WFE_NONCEREJECT=0"}
	if err := a.start(ns, "pebble", env, filepath.Join(toolDir, "pebble"), "-config", cfgPath, "-dnsserver", dns); err != nil {
		a.Stop()
		return err
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := a.Root(ctx)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			a.Stop()
			return fmt.Errorf("acme ca: pebble does not answer: %w\n%s", err, a.LogTail(20))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (a *CA) start(ns, name string, env []string, argv ...string) error {
	logf, err := os.OpenFile(filepath.Join(a.dir, name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns}, argv...)...)
	cmd.Dir = a.dir
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("acme ca: start %s: %w", name, err)
	}
	a.procs = append(a.procs, cmd)
	return nil
}

// Stop ends the processes Start started (their process groups) and waits for them.
func (a *CA) Stop() {
	for _, c := range a.procs {
		_ = syscall.Kill(-c.Process.Pid, syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = c.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = syscall.Kill(-c.Process.Pid, syscall.SIGKILL)
			<-done
		}
	}
	a.procs = nil
}

// LogTail is the last n lines of Pebble's log.
func (a *CA) LogTail(n int) string { return files.Tail(filepath.Join(a.dir, "pebble.log"), n) }

// Issued is how many certificates Pebble has issued so far (its log line for each).
func (a *CA) Issued() (int, error) {
	b, err := os.ReadFile(filepath.Join(a.dir, "pebble.log"))
	if err != nil {
		return 0, err
	}
	return bytes.Count(b, []byte("Issued certificate serial")), nil
}

// Root is the root of what Pebble issues, from its management API (/roots/0); Pebble makes a new one at
// every start.
func (a *CA) Root(ctx context.Context) (*x509.Certificate, error) {
	body, err := a.get(ctx, "/roots/0")
	if err != nil {
		return nil, fmt.Errorf("acme ca: root: %w", err)
	}
	blk, _ := pem.Decode(body)
	if blk == nil {
		return nil, fmt.Errorf("acme ca: root: not PEM: %q", body)
	}
	return x509.ParseCertificate(blk.Bytes)
}

// get is one GET of Pebble's management API, from inside its namespace.
func (a *CA) get(ctx context.Context, path string) ([]byte, error) {
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext:     netns.DialContext(a.ns, &net.Dialer{Timeout: 5 * time.Second}),
		TLSClientConfig: &tls.Config{RootCAs: a.tlsPool},
	}}
	defer c.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+netip.AddrPortFrom(a.Host, ACMEMgmtPort).String()+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	return io.ReadAll(io.LimitReader(resp.Body, 64<<10))
}

// TLSAnswer is what an HTTPS request got: status, body, and the certificate chain the server presented.
type TLSAnswer struct {
	Code  int
	Body  string
	Chain []*x509.Certificate
}

// Leaf is the server's certificate (nil without a handshake).
func (a TLSAnswer) Leaf() *x509.Certificate {
	if len(a.Chain) == 0 {
		return nil
	}
	return a.Chain[0]
}

// VerifyChain checks that the presented chain leads from a certificate for name to root.
func (a TLSAnswer) VerifyChain(root *x509.Certificate, name string) error {
	if len(a.Chain) == 0 {
		return errors.New("no certificate presented")
	}
	roots := x509.NewCertPool()
	roots.AddCert(root)
	inter := x509.NewCertPool()
	for _, c := range a.Chain[1:] {
		inter.AddCert(c)
	}
	_, err := a.Chain[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, DNSName: name})
	return err
}

// HTTPSGet does one GET https://name/path with the TCP connection to addr:443 from inside namespace ns (as
// curl --resolve name:443:addr would), on a fresh connection. The handshake accepts any certificate: the
// caller inspects what was presented (Pebble's, or Traefik's self-signed default).
func HTTPSGet(ctx context.Context, ns string, addr netip.Addr, name, path string, timeout time.Duration) (TLSAnswer, error) {
	var ans TLSAnswer
	err := netns.Do(ns, func() error {
		d := net.Dialer{Timeout: timeout}
		raw, err := d.DialContext(ctx, "tcp", netip.AddrPortFrom(addr, 443).String())
		if err != nil {
			return err
		}
		defer raw.Close()
		if err := raw.SetDeadline(time.Now().Add(timeout)); err != nil {
			return err
		}
		c := tls.Client(raw, &tls.Config{ServerName: name, InsecureSkipVerify: true}) // verified by the caller
		if err := c.HandshakeContext(ctx); err != nil {
			return fmt.Errorf("TLS handshake with %s as %s: %w", addr, name, err)
		}
		ans.Chain = c.ConnectionState().PeerCertificates
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+name+path, nil)
		if err != nil {
			return err
		}
		req.Close = true
		if err := req.Write(c); err != nil {
			return err
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), req)
		if err != nil {
			return fmt.Errorf("GET https://%s%s via %s: %w", name, path, addr, err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		if err != nil {
			return err
		}
		ans.Code, ans.Body = resp.StatusCode, string(bytes.TrimSpace(b))
		return nil
	})
	return ans, err
}

// AcmeStore is the part of Traefik's acme.json the proof reads: each resolver's certificates.
type AcmeStore map[string]struct {
	Certificates []struct {
		Domain struct {
			Main string `json:"main"`
		} `json:"domain"`
		// Certificate is the base64 of the PEM chain.
		Certificate []byte `json:"certificate"`
	} `json:"Certificates"`
}

// StoredCert returns the leaf certificate acme.json holds for domain under resolver.
func StoredCert(acmeJSON []byte, resolver, domain string) (*x509.Certificate, error) {
	var s AcmeStore
	if err := json.Unmarshal(acmeJSON, &s); err != nil {
		return nil, fmt.Errorf("acme.json: %w", err)
	}
	for _, c := range s[resolver].Certificates {
		if c.Domain.Main != domain {
			continue
		}
		blk, _ := pem.Decode(c.Certificate)
		if blk == nil {
			return nil, fmt.Errorf("acme.json: %s: certificate is not PEM", domain)
		}
		return x509.ParseCertificate(blk.Bytes)
	}
	return nil, fmt.Errorf("acme.json: no certificate for %s under resolver %s", domain, resolver)
}

// SerialHex is a certificate's serial as Pebble logs it (lower-case hex).
func SerialHex(c *x509.Certificate) string {
	if c == nil {
		return ""
	}
	return strings.ToLower(c.SerialNumber.Text(16))
}

// Describe names a certificate in one line: subject, issuer, serial.
func Describe(c *x509.Certificate) string {
	if c == nil {
		return "none"
	}
	return fmt.Sprintf("subject %q issuer %q serial %s", c.Subject.CommonName, c.Issuer.CommonName, SerialHex(c))
}

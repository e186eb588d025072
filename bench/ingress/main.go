// Command ingress measures the front door (make bench-ingress): three fresh nodes whose cluster config has an
// ingress section pointing at Pebble (Let's Encrypt's test CA, run on the lab host), the test service deployed
// with Traefik labels for app.test as soon as the swarm lets it, and
//
//   - from formed (every agent ready) to Traefik running, to the web service running, and to the first
//     valid HTTPS answer for https://app.test/ through the VIP (a certificate issued by Pebble over HTTP-01
//     through the VIP): what a user waits for after formation;
//   - HTTPS requests per second through the VIP from the lab host: C clients for -duration each, once on
//     kept-alive connections (one handshake per client) and once with a new connection and TLS handshake per
//     request, with latency percentiles.
//
// It builds what it needs (the test service, Pebble) before it takes the VM lock (-lock), then boots the lab.
// Under TCG on two cores the figures are far below what hardware gives; they compare changes on one machine.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/kiln-project/kiln/firstboot/ingress"
	"github.com/kiln-project/kiln/lab"
	"github.com/kiln-project/kiln/lab/labtest"
	"github.com/kiln-project/kiln/lab/netns"
	"github.com/kiln-project/kiln/test/acmeca"
	"github.com/kiln-project/kiln/test/formation"
)

const (
	formTimeout  = 25 * time.Minute
	stepTimeout  = 10 * time.Minute
	pollEvery    = 2 * time.Second
	requestLimit = 10 * time.Second
)

func main() {
	img := flag.String("image", "", "raw node image preloading Traefik (default $KILN_IMAGE, else <repo>/out/node.raw)")
	root := flag.String("root", "", "lab root (default: a temp dir)")
	lock := flag.String("lock", "/tmp/kiln-vm.lock", "file locked (flock) while VMs run, so VM runs never overlap; empty: none")
	clients := flag.Int("clients", 8, "concurrent HTTPS clients in the throughput runs")
	duration := flag.Duration("duration", 20*time.Second, "length of each throughput run")
	flag.Parse()
	if *img != "" {
		os.Setenv("KILN_IMAGE", *img)
	}
	r, err := run(*root, *lock, *clients, *duration)
	if r != nil {
		report(os.Stdout, r, *clients, *duration)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench-ingress:", err)
		os.Exit(1)
	}
}

// result is the run's figures; zero means not reached.
type result struct {
	formed                 time.Duration // lab up → every agent ready
	traefik, web, https    time.Duration // formed → Traefik 1/1, web 3/3, first valid HTTPS
	certificate            string
	keepAlive, fresh       load
	servedBy               map[string]int
	issued                 int
	imageDigest, imageName string
}

// load is one throughput run.
type load struct {
	ok, failed int
	elapsed    time.Duration
	latencies  []time.Duration
	firstError string
}

func run(root, lockPath string, clients int, duration time.Duration) (*result, error) {
	img, err := formation.ImagePath()
	if err != nil {
		return nil, err
	}
	traefik, err := formation.PreloadedTraefik(img)
	if err != nil {
		return nil, err
	}
	if root == "" {
		dir, err := os.MkdirTemp("", "kiln-bench-ingress-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(dir)
		root = dir
	}
	ctx := context.Background()
	// Everything compiled before the lock and the VMs: a build beside three TCG guests slows both.
	tar, err := formation.TestsvcTarball(ctx)
	if err != nil {
		return nil, err
	}
	tools, err := os.MkdirTemp("", "kiln-bench-ingress-tools-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tools)
	if err := acmeca.BuildTools(ctx, tools); err != nil {
		return nil, err
	}
	caDir, err := os.MkdirTemp("", "kiln-bench-ingress-ca-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(caDir)
	ca, err := acmeca.New(caDir, formation.HostAddr())
	if err != nil {
		return nil, err
	}
	_, cfg, err := formation.ClusterConfig("benchingress", 3)
	if err != nil {
		return nil, err
	}
	cfg.Ingress = ca.Ingress()
	cfgFile, err := cfg.Marshal()
	if err != nil {
		return nil, err
	}
	vip := cfg.Cluster.VIP.Addr()

	if lockPath != "" {
		unlock, err := flock(lockPath)
		if err != nil {
			return nil, err
		}
		defer unlock()
	}
	res := &result{imageName: traefik.Name, imageDigest: traefik.Digest}
	name := fmt.Sprintf("bing%d", os.Getpid()%100000)
	upAt := time.Now()
	l, err := lab.Up(ctx, lab.Options{Name: name, Root: root, Image: img, Nodes: 3, ClusterConfig: cfgFile, Accel: labtest.Accel()})
	defer func() {
		if err := lab.Down(context.Background(), root, name); err != nil {
			fmt.Fprintln(os.Stderr, "bench-ingress: lab down:", err)
		}
	}()
	if err != nil {
		return nil, err
	}
	if err := ca.Start(ctx, l.Namespace(), tools, vip); err != nil {
		return nil, err
	}
	defer ca.Stop()
	nodes, err := l.Nodes()
	if err != nil {
		return nil, err
	}
	progress("forming")
	fctx, cancel := context.WithTimeout(ctx, formTimeout)
	defer cancel()
	if _, err := formation.WaitFormed(fctx, nodes, 5*time.Second); err != nil {
		return res, err
	}
	formedAt := time.Now()
	res.formed = formedAt.Sub(upAt)
	progress("formed after %s; deploying the web service, waiting for Traefik and the certificate", res.formed.Round(time.Second))

	sctx, scancel := context.WithTimeout(ctx, stepTimeout)
	defer scancel()
	var wg sync.WaitGroup
	var traefikErr, webErr error
	wg.Go(func() {
		traefikErr = formation.Poll(sctx, pollEvery, ingress.ServiceName+" running", func(ctx context.Context) (bool, string, error) {
			ok, detail := formation.ServiceConverged(ctx, nodes[0], ingress.ServiceName)
			return ok, detail, nil
		})
		res.traefik = time.Since(formedAt)
	})
	wg.Go(func() {
		webErr = formation.DeployWeb(sctx, nodes, tar, formation.Web{Routed: true})
		res.web = time.Since(formedAt)
	})
	root509, err := ca.Root(ctx)
	if err != nil {
		return res, err
	}
	ans, httpsErr := formation.WaitHTTPS(sctx, l.Namespace(), vip, formation.WebHost, root509)
	if httpsErr == nil {
		res.https = time.Since(formedAt)
		res.certificate = acmeca.Describe(ans.Leaf())
	}
	wg.Wait()
	if err := errors.Join(traefikErr, webErr, httpsErr); err != nil {
		return res, fmt.Errorf("%w\npebble log:\n%s", err, ca.LogTail(20))
	}

	progress("HTTPS answers; throughput, %d clients, %s kept-alive then %s with a handshake per request", clients, duration, duration)
	res.servedBy = map[string]int{}
	res.keepAlive = throughput(ctx, l.Namespace(), vip, root509, clients, duration, true, res.servedBy)
	res.fresh = throughput(ctx, l.Namespace(), vip, root509, clients, duration, false, nil)
	res.issued, _ = ca.Issued()
	return res, nil
}

// throughput runs clients concurrent HTTPS clients against https://app.test/ through the VIP for d, from inside
// the lab namespace, each with its own connection pool: keepAlive keeps one connection per client, else every
// request opens a connection and does a full handshake. servedBy, when non-nil, counts the answering tasks.
func throughput(ctx context.Context, ns string, vip netip.Addr, root *x509.Certificate, clients int, d time.Duration, keepAlive bool, servedBy map[string]int) load {
	pool := x509.NewCertPool()
	pool.AddCert(root)
	var mu sync.Mutex
	var out load
	deadline := time.Now().Add(d)
	start := time.Now()
	var wg sync.WaitGroup
	for range clients {
		wg.Go(func() {
			tr := &http.Transport{
				DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
					return netns.DialContext(ns, &net.Dialer{Timeout: requestLimit})(ctx, network, netip.AddrPortFrom(vip, 443).String())
				},
				// No session cache: without keep-alive every request pays a full handshake.
				TLSClientConfig:     &tls.Config{RootCAs: pool, ServerName: formation.WebHost},
				DisableKeepAlives:   !keepAlive,
				MaxIdleConnsPerHost: 1,
			}
			defer tr.CloseIdleConnections()
			c := &http.Client{Transport: tr, Timeout: requestLimit}
			for time.Now().Before(deadline) {
				t0 := time.Now()
				body, err := get(ctx, c)
				lat := time.Since(t0)
				mu.Lock()
				if err != nil {
					out.failed++
					if out.firstError == "" {
						out.firstError = err.Error()
					}
				} else {
					out.ok++
					out.latencies = append(out.latencies, lat)
					if servedBy != nil {
						servedBy[strings.TrimSpace(body)]++
					}
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	out.elapsed = time.Since(start)
	slices.Sort(out.latencies)
	return out
}

func get(ctx context.Context, c *http.Client) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+formation.WebHost+"/", nil)
	if err != nil {
		return "", err
	}
	resp, err := c.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%s", resp.Status)
	}
	return string(b), nil
}

func (l load) rate() float64 {
	if l.elapsed <= 0 {
		return 0
	}
	return float64(l.ok) / l.elapsed.Seconds()
}

func (l load) pct(p float64) time.Duration {
	if len(l.latencies) == 0 {
		return 0
	}
	i := min(int(p*float64(len(l.latencies))), len(l.latencies)-1)
	return l.latencies[i]
}

func report(w io.Writer, r *result, clients int, d time.Duration) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "figure\tvalue\n")
	show := func(name string, v time.Duration) {
		if v == 0 {
			fmt.Fprintf(tw, "%s\tnot reached\n", name)
			return
		}
		fmt.Fprintf(tw, "%s\t%s\n", name, v.Round(time.Second))
	}
	show("formed (lab up → every agent ready)", r.formed)
	show("formed → Traefik running", r.traefik)
	show("formed → web service 3/3 (image import over ssh included)", r.web)
	show("formed → first valid HTTPS answer (https://app.test/ via the VIP)", r.https)
	for _, run := range []struct {
		name string
		l    load
	}{{"kept-alive", r.keepAlive}, {"handshake per request", r.fresh}} {
		if run.l.elapsed == 0 {
			continue
		}
		fmt.Fprintf(tw, "HTTPS req/s, %d clients, %s, %s\t%.1f (%d ok, %d failed)\n", clients, d, run.name, run.l.rate(), run.l.ok, run.l.failed)
		fmt.Fprintf(tw, "  latency p50 / p90 / p99\t%s / %s / %s\n", run.l.pct(0.5).Round(time.Millisecond), run.l.pct(0.9).Round(time.Millisecond), run.l.pct(0.99).Round(time.Millisecond))
		if run.l.firstError != "" {
			fmt.Fprintf(tw, "  first error\t%s\n", run.l.firstError)
		}
	}
	tw.Flush()
	fmt.Fprintf(w, "certificate: %s; certificates issued by the test CA: %d; Traefik image %s (%s)\n", r.certificate, r.issued, r.imageName, r.imageDigest)
	if len(r.servedBy) > 0 {
		fmt.Fprintf(w, "kept-alive requests answered by: %v\n", r.servedBy)
	}
}

// flock takes an exclusive lock on path, waiting for it, and returns its release.
func flock(path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("vm lock: %w", err)
	}
	progress("waiting for the VM lock %s", path)
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("vm lock %s: %w", path, err)
	}
	return func() { _ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN); f.Close() }, nil
}

func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s bench-ingress: %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

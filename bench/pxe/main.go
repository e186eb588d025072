// Command pxe measures netboot against disk boot of the same build, in one run on one machine, and prints a
// table: one node booted from its disk, one node netbooted, three nodes netbooted at once (each until it
// answers ssh), the RAM the layers take inside a netbooted node, and `kiln pxe serve`'s HTTP throughput to
// one and to three concurrent clients.
//
//	go run ./bench/pxe -image out/node.raw -pxe-dir out/pxe -kiln bin/kiln
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/kiln-project/kiln/lab"
	"github.com/kiln-project/kiln/lab/labtest"
	"github.com/kiln-project/kiln/lab/netns"
	"github.com/kiln-project/kiln/pxe/pxedir"
	"github.com/kiln-project/kiln/test/formation"
)

type row struct{ figure, value, note string }

func main() {
	image := flag.String("image", "out/node.raw", "raw node image")
	pxeDir := flag.String("pxe-dir", "out/pxe", "pxe directory of the same build")
	kiln := flag.String("kiln", "bin/kiln", "kiln binary (runs kiln pxe serve)")
	timeout := flag.Duration("timeout", 45*time.Minute, "bound on the whole benchmark")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	root, err := os.MkdirTemp("", "kiln-bench-pxe-")
	if err != nil {
		fail(err)
	}
	defer os.RemoveAll(root)
	// Nodes of a cluster of 5 that never forms: the agents only discover, so every boot is the plain boot.
	cfg, _, err := formation.ClusterConfig("benchpxe", 5)
	if err != nil {
		fail(err)
	}
	base := lab.Options{Root: root, Image: *image, PXEDir: *pxeDir, KilnBin: *kiln, ClusterConfig: cfg,
		Accel: labtest.Accel(), Logger: log}

	var rows []row
	boot := func(name, boot string, nodes int, inside func(l *lab.Lab) error) time.Duration {
		o := base
		o.Name, o.Boot, o.Nodes = name, boot, nodes
		l, err := lab.Up(ctx, o)
		var slowest time.Duration
		if err == nil {
			var each map[string]time.Duration
			each, err = l.WaitBooted(ctx)
			for _, d := range each {
				slowest = max(slowest, d)
			}
			if err == nil && inside != nil {
				err = inside(l)
			}
		}
		if derr := lab.Down(context.Background(), root, name); derr != nil {
			fmt.Fprintln(os.Stderr, "down:", derr)
		}
		if err != nil {
			fail(fmt.Errorf("%s: %w", name, err))
		}
		return slowest
	}

	disk := boot("pxedisk", lab.BootDisk, 1, nil)
	rows = append(rows, row{"disk boot, 1 node, start → ssh", dur(disk), "UEFI, disk overlay of -image"})
	var ram []row
	net1 := boot("pxenet1", lab.BootPXE, 1, func(l *lab.Lab) error {
		var err error
		ram, err = layerRAM(ctx, l)
		if err != nil {
			return err
		}
		tp, err := throughput(ctx, l, *pxeDir)
		ram = append(ram, tp...)
		return err
	})
	rows = append(rows, row{"netboot, 1 node, start → ssh", dur(net1), "UEFI, iPXE ROM, proxyDHCP, layers over HTTP"})
	net3 := boot("pxenet3", lab.BootPXE, 3, nil)
	rows = append(rows, row{"netboot, 3 nodes at once, start → last ssh", dur(net3), ""})
	rows = append(rows,
		row{"netboot / disk boot (target ≤ 1.3×)", fmt.Sprintf("%.2f×", float64(net1)/float64(disk)), ""},
		row{"3 at once / 1 netboot (target ≤ 1.5×)", fmt.Sprintf("%.2f×", float64(net3)/float64(net1)), ""})
	rows = append(rows, ram...)

	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "FIGURE\tVALUE\tNOTE")
	for _, r := range rows {
		fmt.Fprintf(w, "%s\t%s\t%s\n", r.figure, r.value, r.note)
	}
	w.Flush()
}

// layerRAM reads, inside a netbooted node, what its layers occupy in RAM (the tmpfs they were fetched into)
// and the memory left to the system.
// layerDir is where the initramfs keeps the fetched layers, as seen from the booted node.
const layerDir = "/run/kiln/layers"

func layerRAM(ctx context.Context, l *lab.Lab) ([]row, error) {
	nodes, err := l.Nodes()
	if err != nil {
		return nil, err
	}
	res, err := nodes[0].Exec(ctx, "sh", "-c", "du -sb "+layerDir+" | cut -f1; grep -E '^(MemTotal|MemAvailable):' /proc/meminfo")
	if err != nil {
		return nil, err
	}
	if res.ExitCode != 0 {
		return nil, fmt.Errorf("layer RAM: exit %d: %s", res.ExitCode, res.Stderr)
	}
	f := strings.Fields(string(res.Stdout))
	if len(f) < 7 {
		return nil, fmt.Errorf("layer RAM: unexpected output %q", res.Stdout)
	}
	layers, _ := strconv.ParseInt(f[0], 10, 64)
	return []row{
		{"layers in RAM (du " + layerDir + ")", mib(layers), "tmpfs: counted in the guest's shared memory"},
		{"guest MemTotal / MemAvailable after boot", f[2] + " / " + f[5] + " kB", "1536 MiB guest"},
	}, nil
}

// throughput fetches the base layer from the lab's kiln pxe serve with one, then three concurrent clients, from
// the lab host's side of the bridge.
func throughput(ctx context.Context, l *lab.Lab, pxeDir string) ([]row, error) {
	fi, err := os.Stat(filepath.Join(pxeDir, pxedir.Base))
	if err != nil {
		return nil, err
	}
	host, _ := netns.HostAddr(lab.HostCIDR)
	addr := net.JoinHostPort(host.String(), strconv.Itoa(lab.PXEHTTPPort))
	var out []row
	for _, clients := range []int{1, 3} {
		start := time.Now()
		var wg sync.WaitGroup
		errs := make([]error, clients)
		for i := range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var conn net.Conn
				// The socket is made on a thread inside the namespace and keeps it afterwards.
				errs[i] = netns.Do(l.Namespace(), func() error {
					var err error
					conn, err = (&net.Dialer{Timeout: 5 * time.Second}).DialContext(ctx, "tcp", addr)
					return err
				})
				if errs[i] == nil {
					errs[i] = fetch(conn, addr, "/base.squashfs", fi.Size())
				}
			}()
		}
		wg.Wait()
		elapsed := time.Since(start)
		for _, e := range errs {
			if e != nil {
				return nil, e
			}
		}
		mbps := float64(fi.Size()*int64(clients)) / elapsed.Seconds() / (1 << 20)
		out = append(out, row{fmt.Sprintf("kiln pxe serve, %d client(s) × base layer", clients), fmt.Sprintf("%.0f MiB/s", mbps),
			fmt.Sprintf("%s each, all done in %s", mib(fi.Size()), dur(elapsed))})
	}
	return out, nil
}

// fetch GETs path over conn and reads the whole body.
func fetch(conn net.Conn, host, path string, want int64) error {
	defer conn.Close()
	if _, err := fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", path, host); err != nil {
		return err
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	n, err := io.Copy(io.Discard, resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK || n != want {
		return fmt.Errorf("GET %s: %s, %d of %d bytes", path, resp.Status, n, want)
	}
	return nil
}

func dur(d time.Duration) string { return d.Round(100 * time.Millisecond).String() }
func mib(b int64) string         { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

func fail(err error) {
	fmt.Fprintln(os.Stderr, "bench-pxe:", err)
	os.Exit(1)
}

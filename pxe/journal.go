package pxe

import (
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"
)

// journal follows each node through one boot, from its proxyDHCP answer to its last file, and logs one summary
// line when it has fetched everything a netboot needs.
type journal struct {
	log   *slog.Logger
	want  map[string]int64 // the files that make "everything" and their sizes: kernel, initrd, layers, the config if served
	mu    sync.Mutex
	nodes map[string]*round
	now   func() time.Time
}

// round is one boot of one node.
type round struct {
	start time.Time
	bytes int64
	got   map[string]int64 // bytes of each wanted file sent
	done  bool
}

func newJournal(log *slog.Logger, want map[string]int64) *journal {
	return &journal{log: log, want: want, nodes: map[string]*round{}, now: time.Now}
}

// key names a node by MAC, or by address when the neighbour table did not know it.
func key(mac net.HardwareAddr, ip netip.Addr) string {
	if mac != nil {
		return mac.String()
	}
	return "ip " + ip.String()
}

// booting records a proxyDHCP answer or a fetch of the script: a node that already fetched part of a boot's
// files is starting a new boot. The firmware's and then iPXE's DHCP, and the iPXE binary between them, stay one.
func (j *journal) booting(mac net.HardwareAddr, ip netip.Addr) {
	j.mu.Lock()
	defer j.mu.Unlock()
	k := key(mac, ip)
	if r := j.nodes[k]; r == nil || r.done || len(r.got) > 0 {
		j.nodes[k] = &round{start: j.now(), got: map[string]int64{}}
	}
}

// served records n body bytes of file sent to the node.
func (j *journal) served(mac net.HardwareAddr, ip netip.Addr, file string, n int64) {
	j.mu.Lock()
	defer j.mu.Unlock()
	k := key(mac, ip)
	r := j.nodes[k]
	if r == nil {
		r = &round{start: j.now(), got: map[string]int64{}}
		j.nodes[k] = r
	}
	r.bytes += n
	if _, ok := j.want[file]; !ok || n == 0 {
		return
	}
	r.got[file] += n
	if r.done {
		return
	}
	for w, size := range j.want {
		// Bytes of ranges and retries add up: a node that resumed a layer has it when the parts cover its size.
		// Whether they are the right bytes is the node's check (sha256 of each layer), not ours.
		if r.got[w] < size {
			return
		}
	}
	r.done = true
	d := j.now().Sub(r.start)
	j.log.Info(fmt.Sprintf("node %s %s fetched everything in %s, %s", macOr(mac), ip, d.Round(100*time.Millisecond), human(r.bytes)),
		"mac", macOr(mac), "ip", ip, "dur", d.Round(time.Millisecond), "bytes", r.bytes)
}

func macOr(m net.HardwareAddr) string {
	if m == nil {
		return "unknown"
	}
	return m.String()
}

// human is a byte count in binary units, three significant figures.
func human(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	v, i := float64(n), -1
	for v >= unit && i < 4 {
		v /= unit
		i++
	}
	return fmt.Sprintf("%.3g %ciB", v, "KMGTP"[i])
}

package formation

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/kiln-project/kiln/lab/netns"
)

// PortState is what a TCP connect to a port observed.
//
// "Answers" means exactly Open: the three-way handshake completed within the probe timeout, i.e. something on
// the node (a listening socket, or the swarm routing mesh) accepted a connection from the prober. Closed (a RST
// or ICMP port-unreachable: the packet reached the host and nothing listens) and Filtered (no reply within the
// timeout, or ICMP host/net/admin-unreachable: a firewall dropped it) both mean "does not answer".
type PortState int

// Port states.
const (
	Open PortState = iota + 1
	Closed
	Filtered
)

func (s PortState) String() string {
	switch s {
	case Open:
		return "open"
	case Closed:
		return "closed"
	case Filtered:
		return "filtered"
	}
	return fmt.Sprintf("PortState(%d)", int(s))
}

// Classify maps the outcome of a TCP dial to a PortState.
func Classify(err error) PortState {
	switch {
	case err == nil:
		return Open
	case errors.Is(err, syscall.ECONNREFUSED):
		return Closed
	default:
		// Timeouts (nft drop) and ICMP unreachables other than port-unreachable (nft reject with another type):
		// the packet was not let through to a socket.
		return Filtered
	}
}

// ScanPorts is the port list the proof scans on every node: the web ports, and every port a kiln node's
// services listen on or a Debian default could open (rpcbind, NFS, docker's TCP API) — none of which may answer.
var ScanPorts = []int{
	22, 80, 443, // ssh, web (Traefik's entry points when the config has an ingress section; routing mesh)
	111, 2049, // rpcbind, nfs (glusterfs-server Recommends nfs-common)
	2375, 2376, // dockerd TCP API (plain, TLS)
	2377,             // swarm manager raft/control
	4789,             // VXLAN (UDP in use; TCP must not answer either)
	7946, 7947, 7948, // swarm gossip, kiln beacons, kiln membership
	8946,         // spare membership port (firewall renders what it is told)
	24007, 24008, // glusterd management
	38465, 38466, // gluster NFS
	49152, 49153, // glusterfsd bricks
	9100, 8080, 5000, // common exporters / proxies / registries; 8080 is the proof's web service (WebPort)
}

// Scan connects to addr on every port concurrently from inside network namespace ns, optionally from local
// source address src (must be configured in ns; invalid means the kernel's choice). Each connect is bounded by
// timeout.
func Scan(ctx context.Context, ns string, src netip.Addr, addr netip.Addr, ports []int, timeout time.Duration) (map[int]PortState, error) {
	res := make(map[int]PortState, len(ports))
	var mu sync.Mutex // guards res
	var wg sync.WaitGroup
	errs := make([]error, len(ports))
	for i, p := range ports {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// One netns.Do per port: each locks its own OS thread into the namespace, so the socket is created there.
			errs[i] = netns.Do(ns, func() error {
				d := net.Dialer{Timeout: timeout}
				if src.IsValid() {
					d.LocalAddr = &net.TCPAddr{IP: src.AsSlice()}
				}
				c, err := d.DialContext(ctx, "tcp", netip.AddrPortFrom(addr, uint16(p)).String())
				if c != nil {
					c.Close()
				}
				if ctx.Err() != nil {
					return fmt.Errorf("scan %s:%d: %w", addr, p, ctx.Err())
				}
				if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) && !isNetErr(err) {
					return fmt.Errorf("scan %s:%d: %w", addr, p, err)
				}
				mu.Lock()
				res[p] = Classify(err)
				mu.Unlock()
				return nil
			})
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return res, nil
}

// isNetErr reports whether err came from the network (so it says something about the port), not from a local
// problem like a bad source address.
func isNetErr(err error) bool {
	var se syscall.Errno
	if errors.As(err, &se) {
		switch se {
		case syscall.EADDRNOTAVAIL, syscall.EINVAL, syscall.EACCES, syscall.EMFILE:
			return false
		}
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// PortPolicy says which ports of a node may answer a given prober.
type PortPolicy struct {
	// MustAnswer ports must be Open.
	MustAnswer []int
	// MayAnswer ports may be in any state.
	MayAnswer []int
}

// Check returns one line per port whose state breaks the policy: a MustAnswer port that does not answer, or any
// other port that answers. A MustAnswer port missing from res is a violation too (it was never probed).
func (p PortPolicy) Check(res map[int]PortState) []string {
	var bad []string
	for _, port := range p.MustAnswer {
		if s, ok := res[port]; !ok {
			bad = append(bad, fmt.Sprintf("port %d: not probed, must answer", port))
		} else if s != Open {
			bad = append(bad, fmt.Sprintf("port %d: %s, must answer", port, s))
		}
	}
	ports := make([]int, 0, len(res))
	for port := range res {
		ports = append(ports, port)
	}
	sort.Ints(ports)
	for _, port := range ports {
		if res[port] == Open && !slices.Contains(p.MustAnswer, port) && !slices.Contains(p.MayAnswer, port) {
			bad = append(bad, fmt.Sprintf("port %d: answers, must not", port))
		}
	}
	return bad
}

// FormatScan renders res as "22/open 80/open 443/closed …" in port order, for logs.
func FormatScan(res map[int]PortState) string {
	ports := make([]int, 0, len(res))
	for p := range res {
		ports = append(ports, p)
	}
	sort.Ints(ports)
	var b strings.Builder
	for i, p := range ports {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%d/%s", p, res[p])
	}
	return b.String()
}

// Package netns builds a lab's private network: a named network namespace holding a bridge with the lab host's
// address and one tap per node, plus the nft rules that partition nodes. Nothing outside the namespace is touched.
package netns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/kiln-project/kiln/internal/run"
)

// runDir is where `ip netns` keeps the bind mounts that name namespaces.
const runDir = "/run/netns"

// Exists reports whether the named namespace exists.
func Exists(name string) bool {
	_, err := os.Stat(filepath.Join(runDir, name))
	return err == nil
}

// Create makes the named namespace (if absent) with loopback up and bridge br holding addr (CIDR, e.g. 10.77.0.1/24).
// Safe to re-run.
func Create(ctx context.Context, name, br, addr string) error {
	if !Exists(name) {
		// `ip netns add` sets up the shared /run/netns mount the way every other tool expects.
		if _, err := run.Cmd(ctx, "ip", "netns", "add", name); err != nil {
			return fmt.Errorf("netns: create %s: %w", name, err)
		}
	}
	ip, err := netlink.ParseAddr(addr)
	if err != nil {
		return fmt.Errorf("netns: %s: bridge address: %w", name, err)
	}
	return Do(name, func() error {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		if err := netlink.LinkSetUp(lo); err != nil {
			return fmt.Errorf("lo up: %w", err)
		}
		link, err := netlink.LinkByName(br)
		if err != nil {
			if err := netlink.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: br}}); err != nil {
				return fmt.Errorf("add bridge %s: %w", br, err)
			}
			if link, err = netlink.LinkByName(br); err != nil {
				return err
			}
		}
		if err := netlink.AddrReplace(link, ip); err != nil {
			return fmt.Errorf("address %s on %s: %w", addr, br, err)
		}
		if err := netlink.LinkSetUp(link); err != nil {
			return fmt.Errorf("%s up: %w", br, err)
		}
		return nil
	})
}

// Delete removes the namespace and with it every device in it. Deleting an absent namespace is not an error.
func Delete(ctx context.Context, name string) error {
	if !Exists(name) {
		return nil
	}
	if _, err := run.Cmd(ctx, "ip", "netns", "delete", name); err != nil {
		return fmt.Errorf("netns: delete %s: %w", name, err)
	}
	return nil
}

// AddTap creates a persistent tap device in namespace ns, enslaves it to bridge br and sets it up. Idempotent.
// Persistent, so the tap (and partition rules naming it) outlive the qemu using it across kill and start.
func AddTap(name, tap, br string) error {
	return Do(name, func() error {
		bridge, err := netlink.LinkByName(br)
		if err != nil {
			return fmt.Errorf("bridge %s: %w", br, err)
		}
		link, err := netlink.LinkByName(tap)
		if err != nil {
			t := &netlink.Tuntap{LinkAttrs: netlink.LinkAttrs{Name: tap}, Mode: netlink.TUNTAP_MODE_TAP,
				// qemu opens the tap with a vnet header and without packet info.
				Flags: netlink.TUNTAP_ONE_QUEUE | netlink.TUNTAP_NO_PI | netlink.TUNTAP_VNET_HDR}
			if err := netlink.LinkAdd(t); err != nil {
				return fmt.Errorf("add tap %s: %w", tap, err)
			}
			if link, err = netlink.LinkByName(tap); err != nil {
				return err
			}
		}
		if err := netlink.LinkSetMaster(link, bridge); err != nil {
			return fmt.Errorf("%s master %s: %w", tap, br, err)
		}
		if err := netlink.LinkSetUp(link); err != nil {
			return fmt.Errorf("%s up: %w", tap, err)
		}
		return nil
	})
}

// DelTap removes a tap; an absent one is not an error.
func DelTap(name, tap string) error {
	return Do(name, func() error {
		link, err := netlink.LinkByName(tap)
		if err != nil {
			var nf netlink.LinkNotFoundError
			if errors.As(err, &nf) {
				return nil
			}
			return err
		}
		return netlink.LinkDel(link)
	})
}

// Links lists the names of the network devices in the namespace.
func Links(name string) ([]string, error) {
	var names []string
	err := Do(name, func() error {
		links, err := netlink.LinkList()
		for _, l := range links {
			names = append(names, l.Attrs().Name)
		}
		return err
	})
	return names, err
}

// Do runs fn on an OS thread switched into the named namespace, and switches the thread back afterwards. If
// switching back fails the thread stays locked, and Go ends it with the goroutine, so a namespace switch never
// leaks into other goroutines. (Go cannot end the process's main thread: that one must always be switched back,
// or the whole process would count as living in the namespace.)
func Do(name string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			errc <- fmt.Errorf("netns: current namespace: %w", err)
			return
		}
		defer orig.Close()
		h, err := netns.GetFromName(name)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("netns: open %s: %w", name, err)
			return
		}
		defer h.Close()
		if err := netns.Set(h); err != nil {
			errc <- fmt.Errorf("netns: enter %s: %w", name, err)
			return
		}
		ferr := fn()
		if err := netns.Set(orig); err == nil {
			runtime.UnlockOSThread()
		}
		if ferr != nil {
			errc <- fmt.Errorf("netns %s: %w", name, ferr)
			return
		}
		errc <- nil
	}()
	return <-errc
}

// Dial connects to addr from inside the named namespace. Only the socket is made there (in Do); a socket
// belongs to the namespace it was made in for its whole life, so the connection is then used from any thread,
// with no process started.
func Dial(ctx context.Context, name, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := Do(name, func() error {
		var d net.Dialer
		var err error
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// Pids lists the processes running in the namespace (what `ip netns pids` finds).
func Pids(ctx context.Context, name string) ([]int, error) {
	if !Exists(name) {
		return nil, nil
	}
	out, err := run.Cmd(ctx, "ip", "netns", "pids", name)
	if err != nil {
		return nil, fmt.Errorf("netns: pids %s: %w", name, err)
	}
	var pids []int
	for _, f := range strings.Fields(string(out)) {
		if p, err := strconv.Atoi(f); err == nil {
			pids = append(pids, p)
		}
	}
	return pids, nil
}

// Exec runs a program inside the namespace and returns its stdout.
func Exec(ctx context.Context, name string, stdin []byte, argv ...string) ([]byte, error) {
	return run.CmdIn(ctx, stdin, "ip", append([]string{"netns", "exec", name}, argv...)...)
}

// HostAddr is the address part of a CIDR like 10.77.0.1/24.
func HostAddr(cidr string) (net.IP, error) {
	ip, _, err := net.ParseCIDR(cidr)
	return ip, err
}

// DialContext returns a dial function whose sockets are created inside the named namespace (a socket stays in
// the namespace it was made in, whichever thread uses it later), for clients that dial on goroutines of their
// own, like net/http's Transport: calling such a client inside Do would dial from the host's namespace.
func DialContext(name string, d *net.Dialer) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		var c net.Conn
		err := Do(name, func() error {
			var err error
			c, err = d.DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}
}

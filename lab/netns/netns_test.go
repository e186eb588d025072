package netns

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

func requireRoot(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: no namespaces")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	for _, tool := range []string{"ip", "nft"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
}

// TestPartitionTraffic proves the partition rules on real frames: two "nodes" are namespaces plugged into the lab
// bridge by veth pairs whose bridge ends are named like node taps, and TCP connects between nodes and the lab host
// must pass or fail as each cut says.
func TestPartitionTraffic(t *testing.T) {
	requireRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	lab := fmt.Sprintf("kiln-nt%d", os.Getpid()%100000)
	nodes := map[string]string{"tap1": lab + "a", "tap2": lab + "b"}
	addrs := map[string]string{"tap1": "10.77.0.11", "tap2": "10.77.0.12", "host": "10.77.0.1"}
	t.Cleanup(func() {
		for _, ns := range append([]string{lab}, nodes["tap1"], nodes["tap2"]) {
			_ = Delete(context.Background(), ns)
		}
	})
	if err := Create(ctx, lab, "br0", "10.77.0.1/24"); err != nil {
		t.Fatal(err)
	}
	if err := Create(ctx, lab, "br0", "10.77.0.1/24"); err != nil {
		t.Fatalf("create is not idempotent: %v", err)
	}
	listen := func(ns, addr string) {
		var l net.Listener
		if err := Do(ns, func() (err error) { l, err = net.Listen("tcp", addr+":7000"); return err }); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				c.Close()
			}
		}()
	}
	listen(lab, addrs["host"])
	for tap, ns := range nodes {
		if err := exec.CommandContext(ctx, "ip", "netns", "add", ns).Run(); err != nil {
			t.Fatal(err)
		}
		h, err := netns.GetFromName(ns)
		if err != nil {
			t.Fatal(err)
		}
		err = Do(lab, func() error {
			br, err := netlink.LinkByName("br0")
			if err != nil {
				return err
			}
			v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: tap, MasterIndex: br.Attrs().Index},
				PeerName: "eth0", PeerNamespace: netlink.NsFd(int(h))}
			if err := netlink.LinkAdd(v); err != nil {
				return err
			}
			l, err := netlink.LinkByName(tap)
			if err != nil {
				return err
			}
			return netlink.LinkSetUp(l)
		})
		h.Close()
		if err != nil {
			t.Fatal(err)
		}
		if err := Do(ns, func() error {
			l, err := netlink.LinkByName("eth0")
			if err != nil {
				return err
			}
			a, _ := netlink.ParseAddr(addrs[tap] + "/24")
			if err := netlink.AddrAdd(l, a); err != nil {
				return err
			}
			return netlink.LinkSetUp(l)
		}); err != nil {
			t.Fatal(err)
		}
		listen(ns, addrs[tap])
	}
	links, _ := Links(lab)
	if !slices.Contains(links, "tap1") || !slices.Contains(links, "br0") {
		t.Fatalf("links %v", links)
	}
	nsOf := map[string]string{"host": lab, "tap1": nodes["tap1"], "tap2": nodes["tap2"]}
	// reach reports whether a TCP connect from one party to another succeeds; a cut drops frames, so a connect
	// that fails does so by timeout.
	reach := func(from, to string, timeout time.Duration) bool {
		err := Do(nsOf[from], func() error {
			c, err := net.DialTimeout("tcp", addrs[to]+":7000", timeout)
			if err == nil {
				c.Close()
			}
			return err
		})
		return err == nil
	}
	check := func(when string, want map[[2]string]bool) {
		t.Helper()
		for pair, w := range want {
			// A pass must come quickly once the path is open (the bridge may still be learning on the first
			// frames): give it longer than an expected failure needs.
			timeout := 700 * time.Millisecond
			if w {
				timeout = 5 * time.Second
			}
			if got := reach(pair[0], pair[1], timeout); got != w {
				t.Errorf("%s: %s → %s reachable %v, want %v", when, pair[0], pair[1], got, w)
			}
		}
	}
	all := func(v bool, pairs ...[2]string) map[[2]string]bool {
		m := map[[2]string]bool{}
		for _, p := range pairs {
			m[p] = v
		}
		return m
	}
	ab, ba, ha, ah, hb := [2]string{"tap1", "tap2"}, [2]string{"tap2", "tap1"}, [2]string{"host", "tap1"},
		[2]string{"tap1", "host"}, [2]string{"host", "tap2"}
	check("connected", all(true, ab, ba, ha, ah, hb))

	if err := ApplyCuts(ctx, lab, []Cut{{Tap: "tap1"}}); err != nil {
		t.Fatal(err)
	}
	want := all(false, ab, ba, ha, ah)
	want[hb] = true
	check("full cut of tap1", want)

	if err := ApplyCuts(ctx, lab, []Cut{{Tap: "tap1", PeersOnly: true}}); err != nil {
		t.Fatal(err)
	}
	want = all(false, ab, ba)
	want[ha], want[ah], want[hb] = true, true, true
	check("peers-only cut of tap1", want)

	if err := ApplyCuts(ctx, lab, nil); err != nil {
		t.Fatal(err)
	}
	check("healed", all(true, ab, ba, ha, ah, hb))
}

// Dial's socket is made in the namespace and stays there: it reaches a listener on the namespace's loopback,
// the kernel names the namespace as the socket's, and the connection works from any thread after Do switched back.
func TestDial(t *testing.T) {
	requireRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	name := fmt.Sprintf("kiln-dial%d", os.Getpid()%100000)
	t.Cleanup(func() { _ = Delete(context.Background(), name) })
	if err := Create(ctx, name, "br0", "10.77.0.1/24"); err != nil {
		t.Fatal(err)
	}
	var ln net.Listener
	if err := Do(name, func() (err error) { ln, err = net.Listen("tcp", "127.0.0.1:0"); return err }); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_, _ = c.Write([]byte("from the namespace\n"))
	}()
	c, err := Dial(ctx, name, "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	b := make([]byte, 64)
	n, err := c.Read(b)
	if err != nil || string(b[:n]) != "from the namespace\n" {
		t.Fatalf("read %q, %v", b[:n], err)
	}
	if got, want := socketNetns(t, c), namespaceInode(t, name); got != want {
		t.Errorf("socket's namespace inode %d, want %s's %d", got, name, want)
	}
	if _, err := Dial(ctx, "kiln-no-such-namespace", "tcp", ln.Addr().String()); err == nil {
		t.Error("Dial into a missing namespace succeeded")
	}
}

// socketNetns is the inode of the network namespace c's socket belongs to (ioctl SIOCGSKNS).
func socketNetns(t *testing.T, c net.Conn) uint64 {
	t.Helper()
	raw, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var ino uint64
	var ierr error
	err = raw.Control(func(fd uintptr) {
		nsfd, err := unix.IoctlRetInt(int(fd), unix.SIOCGSKNS)
		if err != nil {
			ierr = err
			return
		}
		defer unix.Close(nsfd)
		var st unix.Stat_t
		ierr = unix.Fstat(nsfd, &st)
		ino = st.Ino
	})
	if err != nil || ierr != nil {
		t.Fatal(err, ierr)
	}
	return ino
}

func namespaceInode(t *testing.T, name string) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(runDir, name), &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

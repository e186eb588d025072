package pxe

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"github.com/insomniacslk/dhcp/iana"
	"github.com/pin/tftp/v3"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/kiln-project/kiln/internal/testenv"
	"github.com/kiln-project/kiln/pxe/internal/pxetest"
	"github.com/kiln-project/kiln/pxe/pxedir"
)

// childEnv carries the Options (JSON) to a copy of this test binary that serves inside a namespace.
const childEnv = "KILN_PXE_CHILD"

// needNetns skips without root or under -short, like the other namespace tests; KILN_PXE_TESTS=1 asks for
// these tests, and then anything missing fails them instead.
func needNetns(t *testing.T, tools ...string) {
	t.Helper()
	forced := os.Getenv("KILN_PXE_TESTS") == "1"
	missing := func(what string) {
		t.Helper()
		if forced {
			t.Fatalf("KILN_PXE_TESTS=1 asks for this test, and it needs %s", what)
		}
		t.Skipf("needs %s (KILN_PXE_TESTS=1 makes this a failure)", what)
	}
	if testing.Short() && !forced {
		t.Skip("-short: no namespaces")
	}
	if os.Geteuid() != 0 {
		missing("root (network namespaces, ports below 1024)")
	}
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			missing(tool + " (make deps installs it)")
		}
	}
}

// inNS runs fn on a thread inside the named namespace. Sockets fn creates stay in it, whichever thread uses
// them later.
func inNS(t *testing.T, name string, fn func() error) {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with the goroutine, namespace and all
		h, err := netns.GetFromName(name)
		if err != nil {
			errc <- err
			return
		}
		defer h.Close()
		if err := netns.Set(h); err != nil {
			errc <- err
			return
		}
		errc <- fn()
	}()
	if err := <-errc; err != nil {
		t.Fatalf("in %s: %v", name, err)
	}
}

// child is `kiln pxe serve` (Start, then Serve until SIGTERM, as the command runs them) in a copy of this test
// binary inside a namespace: a whole process there, since every socket it opens (TFTP opens one per transfer)
// must be in the namespace.
type child struct {
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error // Wait's, once done is closed
}

func startChild(t *testing.T, ns string, o Options) *child {
	t.Helper()
	o.Log = nil
	opts, err := json.Marshal(o)
	if err != nil {
		t.Fatal(err)
	}
	c := &child{log: filepath.Join(t.TempDir(), "serve.log"), done: make(chan struct{})}
	out, err := os.Create(c.log)
	if err != nil {
		t.Fatal(err)
	}
	c.cmd = exec.Command("ip", "netns", "exec", ns, os.Args[0], "-test.run", "^TestServeInNamespaces$", "-test.count=1")
	c.cmd.Env = append(os.Environ(), childEnv+"="+string(opts))
	c.cmd.Stdout, c.cmd.Stderr = out, out
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		c.err = c.cmd.Wait()
		out.Close()
		close(c.done)
	}()
	t.Cleanup(func() {
		select {
		case <-c.done:
		default:
			_ = c.cmd.Process.Kill()
			<-c.done
		}
	})
	return c
}

func (c *child) logs(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(c.log)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// ready waits (bounded) for the serving line.
func (c *child) ready(t *testing.T) {
	t.Helper()
	deadline := time.After(60 * time.Second)
	for !strings.Contains(c.logs(t), `msg="pxe: serving"`) {
		select {
		case <-c.done:
			t.Fatalf("server exited (%v) before serving:\n%s", c.err, c.logs(t))
		case <-deadline:
			t.Fatalf("server not serving after 60s:\n%s", c.logs(t))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// stop sends SIGTERM and wants a clean exit within 15 s.
func (c *child) stop(t *testing.T) {
	t.Helper()
	if err := c.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-c.done:
	case <-time.After(15 * time.Second):
		t.Fatalf("server still running 15s after SIGTERM:\n%s", c.logs(t))
	}
	if c.err != nil {
		t.Fatalf("server exited with %v after SIGTERM:\n%s", c.err, c.logs(t))
	}
}

// refused wants the server to exit at start with an error saying want.
func (c *child) refused(t *testing.T, want string) {
	t.Helper()
	select {
	case <-c.done:
	case <-time.After(60 * time.Second):
		t.Fatalf("server still running, want it to refuse with %q:\n%s", want, c.logs(t))
	}
	if c.err == nil || !strings.Contains(c.logs(t), want) {
		t.Fatalf("exit %v, want a failure saying %q:\n%s", c.err, want, c.logs(t))
	}
}

// serveChild is the child's side.
func serveChild(t *testing.T) {
	var o Options
	if err := json.Unmarshal([]byte(os.Getenv(childEnv)), &o); err != nil {
		t.Fatal(err)
	}
	o.Log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	s, err := Start(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Serve(ctx); err != nil {
		t.Fatal(err)
	}
}

// answer is one DHCP reply and where it came from.
type answer struct {
	from *net.UDPAddr
	msg  *dhcpv4.DHCPv4
}

// broadcast sends req from 0.0.0.0:68 to 255.255.255.255:67 on ns's eth0 through a raw socket, as a client
// without an address does, and collects the replies to it for window.
func broadcast(t *testing.T, ns string, req *dhcpv4.DHCPv4, window time.Duration) []answer {
	t.Helper()
	var conn net.PacketConn
	inNS(t, ns, func() (err error) { conn, err = nclient4.NewRawUDPConn("eth0", dhcpv4.ClientPort); return err })
	defer conn.Close()
	if _, err := conn.WriteTo(req.ToBytes(), &net.UDPAddr{IP: net.IPv4bcast, Port: dhcpv4.ServerPort}); err != nil {
		t.Fatal(err)
	}
	return collect(t, conn, req, window)
}

// unicast sends req from laddr to raddr through an ordinary UDP socket in ns: a client with an address.
func unicast(t *testing.T, ns string, laddr, raddr string, req *dhcpv4.DHCPv4, window time.Duration) []answer {
	t.Helper()
	var conn net.PacketConn
	inNS(t, ns, func() (err error) { conn, err = net.ListenPacket("udp4", laddr); return err })
	defer conn.Close()
	ra, err := net.ResolveUDPAddr("udp4", raddr)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.WriteTo(req.ToBytes(), ra); err != nil {
		t.Fatal(err)
	}
	return collect(t, conn, req, window)
}

func collect(t *testing.T, conn net.PacketConn, req *dhcpv4.DHCPv4, window time.Duration) []answer {
	t.Helper()
	if err := conn.SetReadDeadline(time.Now().Add(window)); err != nil {
		t.Fatal(err)
	}
	var got []answer
	buf := make([]byte, 1500)
	for {
		n, from, err := conn.ReadFrom(buf)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return got
		}
		if err != nil {
			t.Fatal(err)
		}
		m, err := dhcpv4.FromBytes(buf[:n])
		if err != nil || m.OpCode != dhcpv4.OpcodeBootReply || m.TransactionID != req.TransactionID {
			continue
		}
		got = append(got, answer{from: from.(*net.UDPAddr), msg: m})
	}
}

// pxeClient is a DHCP message from a PXE client with hardware address mac: vendor class, architecture, and
// the iPXE user class when ipxe is set.
func pxeClient(t *testing.T, mac net.HardwareAddr, typ dhcpv4.MessageType, arch iana.Arch, ipxe bool, mods ...dhcpv4.Modifier) *dhcpv4.DHCPv4 {
	t.Helper()
	m := []dhcpv4.Modifier{
		dhcpv4.WithHwAddr(mac),
		dhcpv4.WithMessageType(typ),
		dhcpv4.WithBroadcast(true),
		dhcpv4.WithOption(dhcpv4.OptClassIdentifier(fmt.Sprintf("PXEClient:Arch:%05d:UNDI:003016", arch))),
		dhcpv4.WithOption(dhcpv4.OptClientArch(arch)),
	}
	if ipxe {
		m = append(m, dhcpv4.WithGeneric(dhcpv4.OptionUserClassInformation, []byte("iPXE")))
	}
	req, err := dhcpv4.New(append(m, mods...)...)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

// only returns the single answer matching keep, failing on none or several.
func only(t *testing.T, what string, got []answer, keep func(answer) bool) answer {
	t.Helper()
	var match []answer
	for _, a := range got {
		if keep(a) {
			match = append(match, a)
		}
	}
	if len(match) != 1 {
		var s []string
		for _, a := range got {
			s = append(s, fmt.Sprintf("from %s: %s", a.from, a.msg.Summary()))
		}
		t.Fatalf("%s: %d matching answers, want 1; all answers:\n%s", what, len(match), strings.Join(s, "\n"))
	}
	return match[0]
}

func isProxy(a answer) bool {
	return a.msg.YourIPAddr.IsUnspecified() && a.msg.ClassIdentifier() == "PXEClient"
}
func isLease(a answer) bool { return !a.msg.YourIPAddr.IsUnspecified() }

// httpIn is an HTTP client whose connections start in ns.
func httpIn(t *testing.T, ns string) *http.Client {
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (c net.Conn, err error) {
			inNS(t, ns, func() error { c, err = (&net.Dialer{}).DialContext(ctx, network, addr); return nil })
			return c, err
		},
	}}
}

func fetch(t *testing.T, c *http.Client, url string, hdr ...string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}

func macOf(t *testing.T, ns string) net.HardwareAddr {
	t.Helper()
	var mac net.HardwareAddr
	inNS(t, ns, func() error {
		l, err := netlink.LinkByName("eth0")
		if err == nil {
			mac = l.Attrs().HardwareAddr
		}
		return err
	})
	return mac
}

// startDnsmasq runs a plain DHCP server (dynamic leases .100-.150 of net, a /24 like "10.98.7", as a home router
// gives) on ns's iface, next to the proxy.
func startDnsmasq(t *testing.T, ns, iface, net string) {
	t.Helper()
	dir := t.TempDir()
	conf := strings.Join([]string{
		"port=0", "no-resolv", "no-hosts", "interface=" + iface, "bind-interfaces", "except-interface=lo",
		"dhcp-range=" + net + ".100," + net + ".150,255.255.255.0,1h", "dhcp-authoritative", "no-ping",
		"dhcp-leasefile=" + filepath.Join(dir, "leases"), "pid-file=" + filepath.Join(dir, "pid"),
		"log-facility=" + filepath.Join(dir, "log"), "log-dhcp", "user=root",
	}, "\n") + "\n"
	if err := os.WriteFile(filepath.Join(dir, "dnsmasq.conf"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("ip", "netns", "exec", ns, "dnsmasq", "--conf-file="+filepath.Join(dir, "dnsmasq.conf")).CombinedOutput(); err != nil {
		t.Fatalf("dnsmasq: %v: %s", err, out)
	}
	b, err := os.ReadFile(filepath.Join(dir, "pid"))
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = syscall.Kill(pid, syscall.SIGTERM)
		if t.Failed() {
			log, _ := os.ReadFile(filepath.Join(dir, "log"))
			t.Logf("dnsmasq log:\n%s", log)
		}
	})
}

// TestServeInNamespaces runs the server in one namespace of a LAN, next to a plain DHCP server (dnsmasq) on the
// same host as in the lab, and two nodes in two others: one allowed the config, one not.
func TestServeInNamespaces(t *testing.T) {
	if os.Getenv(childEnv) != "" {
		serveChild(t)
		return
	}
	needNetns(t, "ip", "dnsmasq")
	hosts := testenv.LAN(t, "kpx", netip.MustParsePrefix("10.98.7.0/24"), 3)
	srv, a, b := hosts[0], hosts[1], hosts[2]
	macA, macB := macOf(t, a.NS), macOf(t, b.NS)
	dir := pxetest.Dir(t, nil)
	cfgPath, cfg := writeConfig(t)
	o := Options{Dir: dir, ConfigFile: cfgPath, Interface: "eth0", HTTPPort: 8080, AllowMACs: []string{macA.String()}}
	startDnsmasq(t, srv.NS, "eth0", "10.98.7")

	t.Run("refusals at start", func(t *testing.T) {
		noIf := o
		noIf.Interface = ""
		startChild(t, srv.NS, noIf).refused(t, "no default route to pick the boot LAN's interface from: name it with --interface")
		var busy net.Listener
		inNS(t, srv.NS, func() (err error) { busy, err = net.Listen("tcp4", "10.98.7.11:8080"); return err })
		startChild(t, srv.NS, o).refused(t, "TCP port 8080 (--http-port) on 10.98.7.11 is in use")
		busy.Close()
		var busyUDP net.PacketConn
		inNS(t, srv.NS, func() (err error) { busyUDP, err = net.ListenPacket("udp4", "10.98.7.11:69"); return err })
		startChild(t, srv.NS, o).refused(t, "UDP port 69 (TFTP, fixed by PXE) on 10.98.7.11 is in use")
		busyUDP.Close()
	})

	server := startChild(t, srv.NS, o)
	server.ready(t)
	startChild(t, srv.NS, o).refused(t, "UDP port 4011 (PXE boot server, fixed by PXE) on eth0 is in use")
	const window = time.Second
	self := net.IPv4(10, 98, 7, 11)

	t.Run("proxyDHCP beside a DHCP server", func(t *testing.T) {
		// A BIOS PXE ROM: dnsmasq offers an address, the proxy offers undionly.kpxe and no address.
		got := broadcast(t, a.NS, pxeClient(t, macA, dhcpv4.MessageTypeDiscover, iana.INTEL_X86PC, false), window)
		lease := only(t, "lease offer", got, isLease)
		p := only(t, "proxy offer", got, isProxy)
		if len(got) != 2 {
			t.Errorf("%d answers, want dnsmasq's and the proxy's", len(got))
		}
		if p.from.String() != "10.98.7.11:67" || p.msg.MessageType() != dhcpv4.MessageTypeOffer ||
			!p.msg.ServerIPAddr.Equal(self) || p.msg.BootFileName != pxedir.BIOS ||
			!bytes.Equal(p.msg.GetOneOption(dhcpv4.OptionVendorSpecificInformation), []byte{6, 1, 8, 255}) {
			t.Errorf("proxy offer from %s: %s", p.from, p.msg.Summary())
		}
		// UEFI firmware gets ipxe.efi; iPXE gets the script.
		got = broadcast(t, a.NS, pxeClient(t, macA, dhcpv4.MessageTypeDiscover, iana.EFI_X86_64, false), window)
		if p := only(t, "UEFI proxy offer", got, isProxy); p.msg.BootFileName != pxedir.EFI {
			t.Errorf("UEFI: boot file %q", p.msg.BootFileName)
		}
		got = broadcast(t, a.NS, pxeClient(t, macA, dhcpv4.MessageTypeDiscover, iana.EFI_X86_64, true), window)
		if p := only(t, "iPXE proxy offer", got, isProxy); p.msg.BootFileName != "http://10.98.7.11:8080/boot.ipxe" {
			t.Errorf("iPXE: boot file %q", p.msg.BootFileName)
		}
		// A plain client hears only the DHCP server.
		plain, err := dhcpv4.NewDiscovery(macA, dhcpv4.WithBroadcast(true))
		if err != nil {
			t.Fatal(err)
		}
		if got := broadcast(t, a.NS, plain, window); len(got) != 1 || !isLease(got[0]) {
			t.Errorf("plain DISCOVER: %d answers, want dnsmasq's alone", len(got))
		}
		// The PXE client takes dnsmasq's lease: one ACK, dnsmasq's (the proxy shares its address, and stays out).
		req := pxeClient(t, macA, dhcpv4.MessageTypeRequest, iana.INTEL_X86PC, true,
			dhcpv4.WithOption(dhcpv4.OptServerIdentifier(lease.msg.ServerIdentifier())),
			dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(lease.msg.YourIPAddr)))
		got = broadcast(t, a.NS, req, window)
		ack := only(t, "ACK", got, func(answer) bool { return true })
		if ack.msg.MessageType() != dhcpv4.MessageTypeAck || !ack.msg.YourIPAddr.Equal(lease.msg.YourIPAddr) {
			t.Fatalf("REQUEST: %s", ack.msg.Summary())
		}
		// iPXE's ProxyDHCPREQUEST, unicast to port 4011 from the leased address.
		leased := lease.msg.YourIPAddr.String()
		if out, err := exec.Command("ip", "-n", a.NS, "addr", "add", leased+"/24", "dev", "eth0").CombinedOutput(); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		preq := pxeClient(t, macA, dhcpv4.MessageTypeRequest, iana.INTEL_X86PC, true,
			dhcpv4.WithClientIP(lease.msg.YourIPAddr), dhcpv4.WithBroadcast(false))
		got = unicast(t, a.NS, leased+":68", "10.98.7.11:4011", preq, window)
		if p := only(t, "ProxyDHCPACK", got, isProxy); p.from.Port != 4011 || p.msg.MessageType() != dhcpv4.MessageTypeAck ||
			p.msg.BootFileName != "http://10.98.7.11:8080/boot.ipxe" || !p.msg.ClientIPAddr.Equal(lease.msg.YourIPAddr) {
			t.Errorf("ProxyDHCPACK from %s: %s", p.from, p.msg.Summary())
		}
		// Renewals are unicast to port 67 of the same host: each must reach dnsmasq, never the proxy.
		for i := range 5 {
			renew, err := dhcpv4.New(dhcpv4.WithHwAddr(macA), dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest),
				dhcpv4.WithClientIP(lease.msg.YourIPAddr))
			if err != nil {
				t.Fatal(err)
			}
			got := unicast(t, a.NS, leased+":68", "10.98.7.11:67", renew, window)
			if len(got) != 1 || got[0].msg.MessageType() != dhcpv4.MessageTypeAck || !got[0].msg.YourIPAddr.Equal(lease.msg.YourIPAddr) {
				t.Fatalf("renewal %d: %d answers, want dnsmasq's ACK", i, len(got))
			}
		}
	})

	t.Run("tftp", func(t *testing.T) {
		get := func(file string) ([]byte, error) {
			var buf bytes.Buffer
			var err error
			inNS(t, a.NS, func() error {
				c, cerr := tftp.NewClient("10.98.7.11:69")
				if cerr != nil {
					return cerr
				}
				c.SetTimeout(2 * time.Second)
				c.SetBlockSize(1408) // what iPXE asks for
				c.RequestTSize(true)
				var wt io.WriterTo
				if wt, err = c.Receive(file, "octet"); err == nil {
					_, err = wt.WriteTo(&buf)
				}
				return nil
			})
			return buf.Bytes(), err
		}
		for _, f := range []string{pxedir.BIOS, pxedir.EFI, "/" + pxedir.EFI} {
			b, err := get(f)
			if err != nil || !bytes.Equal(b, pxetest.Read(t, dir, strings.TrimPrefix(f, "/"))) {
				t.Errorf("%s: %d bytes, %v", f, len(b), err)
			}
		}
		for _, f := range []string{pxedir.Manifest, "../pxe/pxe.json", "/etc/passwd", "cluster.yaml", "nonexistent"} {
			if _, err := get(f); err == nil || !strings.Contains(err.Error(), "not a file of this pxe directory") {
				t.Errorf("%s: served or an unexpected error: %v", f, err)
			}
		}
	})

	t.Run("http", func(t *testing.T) {
		ca, cb := httpIn(t, a.NS), httpIn(t, b.NS)
		const url = "http://10.98.7.11:8080/"
		code, script := fetch(t, ca, url+"boot.ipxe")
		if lines := strings.SplitN(string(script), "\n", 3); code != 200 || lines[1] != "set kiln-url "+url {
			t.Fatalf("boot.ipxe: %d %q", code, script)
		}
		for _, f := range []string{pxedir.Kernel, pxedir.Initrd, pxedir.Node} {
			if code, body := fetch(t, ca, url+f); code != 200 || !bytes.Equal(body, pxetest.Read(t, dir, f)) {
				t.Errorf("%s: %d, %d bytes", f, code, len(body))
			}
		}
		// The base layer in two ranges, as a resumed download.
		base := pxetest.Read(t, dir, pxedir.Base)
		half := len(base) / 2
		code1, first := fetch(t, ca, url+"base.squashfs?sha256=x", "Range", fmt.Sprintf("bytes=0-%d", half-1))
		code2, rest := fetch(t, ca, url+"base.squashfs", "Range", fmt.Sprintf("bytes=%d-", half))
		if code1 != 206 || code2 != 206 || !bytes.Equal(append(first, rest...), base) {
			t.Errorf("base.squashfs in ranges: %d %d, %d+%d bytes", code1, code2, len(first), len(rest))
		}
		if code, body := fetch(t, ca, url+"cluster.yaml"); code != 200 || !bytes.Equal(body, cfg) {
			t.Errorf("cluster.yaml to the allowed MAC: %d", code)
		}
		if code, _ := fetch(t, cb, url+"cluster.yaml"); code != 403 {
			t.Errorf("cluster.yaml to a MAC not allowed: %d, want 403", code)
		}
		if code, body := fetch(t, cb, url+"vmlinuz"); code != 200 || len(body) != pxetest.Sizes[pxedir.Kernel] {
			t.Errorf("vmlinuz to any node: %d", code)
		}
		// The server's own host has no neighbour entry for itself: refused.
		if code, _ := fetch(t, httpIn(t, srv.NS), url+"cluster.yaml"); code != 403 {
			t.Errorf("cluster.yaml to a peer without neighbour entry: %d, want 403", code)
		}
	})

	server.stop(t)
	logs := server.logs(t)
	for _, want := range []string{
		fmt.Sprintf(`msg="proxyDHCP OFFER" mac=%s arch=0 ipxe=false port=67 boot=undionly.kpxe`, macA),
		fmt.Sprintf(`msg="proxyDHCP ACK" mac=%s arch=0 ipxe=true port=4011 boot=http://10.98.7.11:8080/boot.ipxe`, macA),
		fmt.Sprintf(`msg=tftp mac=%s ip=10.98.7.12 file=undionly.kpxe bytes=%d`, macA, pxetest.Sizes[pxedir.BIOS]),
		fmt.Sprintf(`msg=http mac=%s ip=10.98.7.12 file=base.squashfs status=206`, macA),
		fmt.Sprintf(`msg="node %s 10.98.7.12 fetched everything in `, macA),
		fmt.Sprintf(`msg="http: cluster config refused: MAC not allowed (--allow-mac)" mac=%s ip=10.98.7.13`, macB),
		`msg="http: cluster config refused: MAC not allowed (--allow-mac)" mac=unknown ip=10.98.7.11`,
		`msg="pxe: stopped"`,
	} {
		if !strings.Contains(logs, want) {
			t.Errorf("server log lacks %s", want)
		}
	}
	if n := strings.Count(logs, "fetched everything"); n != 1 {
		t.Errorf("%d summaries, want 1 (node b was refused the config)", n)
	}
	if t.Failed() {
		t.Logf("server log:\n%s", logs)
	}
}

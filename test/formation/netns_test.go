package formation

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os/exec"
	"testing"
	"time"

	"github.com/kiln-project/kiln/internal/testenv"
	"github.com/kiln-project/kiln/lab/netns"
)

// TestScanAndHTTPInNamespace proves Scan and HTTPGet on real sockets in a namespace of their own (no VMs): a
// listening port is open, an unused one closed, one behind an nft drop filtered, and the source address really
// is the one asked for (a rule drops only the off-LAN source). Needs root (ip netns, nft). The address sits on
// a bridge: these hosts have no dummy interfaces.
func TestScanAndHTTPInNamespace(t *testing.T) {
	ns := testenv.Namespace(t, "kiln-fscan")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ip := func(args ...string) {
		t.Helper()
		if out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
	}
	ip("-n", ns, "link", "add", "br0", "type", "bridge")
	ip("-n", ns, "addr", "add", "10.77.0.11/24", "dev", "br0")
	ip("-n", ns, "link", "set", "br0", "up")
	if err := AddSource(ctx, ns, OffLANSource); err != nil {
		t.Fatal(err)
	}
	// Run twice: AddSource is idempotent.
	if err := AddSource(ctx, ns, OffLANSource); err != nil {
		t.Fatal(err)
	}
	rules := `table inet t {
	chain input {
		type filter hook input priority 0; policy accept;
		tcp dport 2377 drop
		ip saddr 198.51.100.1 tcp dport 8080 drop
	}
}`
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", ns, "nft", "-f", "/dev/stdin")
	stdin, _ := cmd.StdinPipe()
	go func() { fmt.Fprint(stdin, rules); stdin.Close() }()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nft: %v: %s", err, out)
	}

	var ln net.Listener
	if err := netns.Do(ns, func() error {
		var err error
		ln, err = net.Listen("tcp", "10.77.0.11:8080")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		fmt.Fprintln(w, host)
	})}
	go srv.Serve(ln)
	defer srv.Close()

	target := netip.MustParseAddr("10.77.0.11")
	ports := []int{8080, 8081, 2377}
	res, err := Scan(ctx, ns, netip.Addr{}, target, ports, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if want := map[int]PortState{8080: Open, 8081: Closed, 2377: Filtered}; FormatScan(res) != FormatScan(want) {
		t.Errorf("scan from the LAN: %s, want %s", FormatScan(res), FormatScan(want))
	}
	res, err = Scan(ctx, ns, OffLANSource.Addr(), target, ports, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if want := map[int]PortState{8080: Filtered, 8081: Closed, 2377: Filtered}; FormatScan(res) != FormatScan(want) {
		t.Errorf("scan from off the LAN: %s, want %s", FormatScan(res), FormatScan(want))
	}
	// A source the namespace does not have is a local error, not a port state.
	if _, err := Scan(ctx, ns, netip.MustParseAddr("203.0.113.9"), target, []int{8080}, time.Second); err == nil {
		t.Error("scan from a missing source address: no error")
	}

	// BootScan keeps scanning until its context ends, and reports a port by the first round it answered in:
	// 8081 starts listening only after the first rounds.
	bctx, bcancel := context.WithCancel(ctx)
	type scanned struct {
		open   map[string]map[int]time.Duration
		rounds int
	}
	done := make(chan scanned, 1)
	go func() {
		open, rounds := BootScan(bctx, ns, map[string]netip.Addr{"n": target}, ports, 200*time.Millisecond, time.Second)
		done <- scanned{open, rounds}
	}()
	time.Sleep(time.Second)
	var late net.Listener
	if err := netns.Do(ns, func() error {
		var err error
		late, err = net.Listen("tcp", "10.77.0.11:8081")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer late.Close()
	time.Sleep(2500 * time.Millisecond)
	bcancel()
	got := <-done
	if _, ok := got.open["n"][2377]; ok || len(got.open["n"]) != 2 || got.open["n"][8081] < time.Second || got.rounds < 2 {
		t.Errorf("BootScan: open %v in %d rounds, want 8080 at once and 8081 after a second or more", got.open, got.rounds)
	}

	code, body, err := HTTPGet(ctx, ns, netip.Addr{}, target, 8080, "/", 5*time.Second)
	if err != nil || code != 200 || body != "10.77.0.11" {
		t.Errorf("GET: %d %q %v, want 200 from 10.77.0.11", code, body, err)
	}
	if _, _, err := HTTPGet(ctx, ns, netip.Addr{}, target, 8081, "/", 5*time.Second); err == nil {
		t.Error("GET on a closed port: no error")
	}
}

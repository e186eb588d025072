package pxe

import (
	"bytes"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestJournalSummary(t *testing.T) {
	var logs bytes.Buffer
	j := newJournal(slog.New(slog.NewTextHandler(&logs, nil)),
		map[string]int64{"vmlinuz": 100, "initrd.img": 50, "base.squashfs": 1000, "node.squashfs": 10, "cluster.yaml": 5})
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	j.now = func() time.Time { return now }
	mac := net.HardwareAddr{0x52, 0x54, 0, 0, 0, 1}
	ip := netip.MustParseAddr("10.77.0.11")
	summaries := func() int { return strings.Count(logs.String(), "fetched everything") }

	j.booting(mac, netip.Addr{}) // firmware's DHCP
	now = now.Add(time.Second)
	j.served(mac, ip, "undionly.kpxe", 70000)
	j.booting(mac, netip.Addr{}) // iPXE's DHCP: the same boot
	j.served(mac, ip, "boot.ipxe", 300)
	j.served(mac, ip, "vmlinuz", 100)
	j.served(mac, ip, "initrd.img", 50)
	j.served(mac, ip, "base.squashfs", 400) // cut off, then resumed with a range
	j.served(mac, ip, "base.squashfs", 600)
	j.served(mac, ip, "node.squashfs", 10)
	if summaries() != 0 {
		t.Fatalf("summary before the config was fetched:\n%s", logs.String())
	}
	now = now.Add(41 * time.Second)
	j.served(mac, ip, "cluster.yaml", 5)
	want := "node 52:54:00:00:00:01 10.77.0.11 fetched everything in 42s, 69.8 KiB"
	if summaries() != 1 || !strings.Contains(logs.String(), want) {
		t.Fatalf("want one summary %q:\n%s", want, logs.String())
	}
	j.served(mac, ip, "cluster.yaml", 5) // the agent reads it again: no second summary
	if summaries() != 1 {
		t.Errorf("a second summary in one boot:\n%s", logs.String())
	}

	// A reboot starts a new round: nothing counts from the last one.
	j.booting(mac, netip.Addr{})
	for _, f := range []string{"vmlinuz", "initrd.img", "base.squashfs", "node.squashfs"} {
		j.served(mac, ip, f, 1)
	}
	j.served(mac, ip, "cluster.yaml", 5)
	if summaries() != 1 {
		t.Errorf("summary for a boot that fetched a byte of each file:\n%s", logs.String())
	}

	// A peer the neighbour table does not know is followed by its address.
	other := netip.MustParseAddr("10.77.0.12")
	for f, n := range map[string]int64{"vmlinuz": 100, "initrd.img": 50, "base.squashfs": 1000, "node.squashfs": 10, "cluster.yaml": 5} {
		j.served(nil, other, f, n)
	}
	if summaries() != 2 || !strings.Contains(logs.String(), "node unknown 10.77.0.12 fetched everything") {
		t.Errorf("no summary for a node without MAC:\n%s", logs.String())
	}
}

func TestHuman(t *testing.T) {
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1024: "1 KiB", 1536: "1.5 KiB", 612 << 20: "612 MiB", 3 << 30: "3 GiB"} {
		if got := human(n); got != want {
			t.Errorf("human(%d) = %q, want %q", n, got, want)
		}
	}
}

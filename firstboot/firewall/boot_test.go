package firewall

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Boot loads the last persisted ruleset when there is a good one, else the boot rules, and says which; a
// persisted file that does not load is reported and replaced by the boot rules, never left half-applied.
func TestBootInNetns(t *testing.T) {
	needNetns(t)
	ctx := context.Background()
	ns := fmt.Sprintf("kiln-fw-boot-%d", os.Getpid())
	newNetns(t, ns)
	nft := nftIn(ns)
	ports := []uint16{7947, 7948}
	persisted := filepath.Join(t.TempDir(), "firewall.nft")
	loaded := func() string {
		t.Helper()
		have, err := (&Reconciler{nft: nft}).Loaded(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return have
	}

	// First boot: nothing persisted.
	got, err := Boot(ctx, nft, persisted, ports)
	if err != nil || got != "boot rules" || loaded() != MarkerOf(Render(BootRules(ports))) {
		t.Fatalf("first boot: loaded %q, err %v, table %s; want the boot rules", got, err, loaded())
	}

	// A later boot: the agent's last ruleset, with its members.
	last := Render(Rules{Members: []netip.Addr{netip.MustParseAddr("10.99.9.2")}, DiscoveryPorts: ports})
	if err := os.WriteFile(persisted, []byte(last), 0o644); err != nil {
		t.Fatal(err)
	}
	if got, err := Boot(ctx, nft, persisted, ports); err != nil || got != persisted || loaded() != MarkerOf(last) {
		t.Fatalf("later boot: loaded %q, err %v; want %s", got, err, persisted)
	}

	// A persisted file that nft refuses: the boot rules instead, and an error that says so.
	if err := os.WriteFile(persisted, []byte(strings.Replace(last, "chain input {", "chain input { bogus", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err = Boot(ctx, nft, persisted, ports)
	if got != "boot rules" || err == nil || !strings.Contains(err.Error(), "not loaded, using the boot rules") ||
		loaded() != MarkerOf(Render(BootRules(ports))) {
		t.Fatalf("bad persisted file: loaded %q, err %v, table %s; want the boot rules and an error", got, err, loaded())
	}
}

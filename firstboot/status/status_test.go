package status

import (
	"errors"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/kiln-project/kiln/firstboot/member"
)

func TestWriteRead(t *testing.T) {
	path := filepath.Join(t.TempDir(), "run/kiln/status.json")
	in := &Status{
		NodeID: "525400123456", Hostname: "kiln-1de4288b", Phase: PhaseReady, Cluster: "lab", ConfigSource: "fw_cfg",
		Expected: 3,
		Members: []member.Member{
			{ID: "525400123456", Hostname: "kiln-1de4288b", Addr: netip.MustParseAddr("10.77.0.11"), Alive: true},
		},
		Swarm:       Component{State: "joined", Detail: "manager of 3"},
		Gluster:     Component{State: "mounted"},
		VIP:         "10.77.0.250/24",
		VIPHolder:   "kiln-1de4288b",
		Reconcilers: map[string]string{"swarm": "ok"},
		LastError:   "gluster: peer probe: timeout",
		LastErrorAt: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
	}
	if err := Write(path, in); err != nil {
		t.Fatal(err)
	}
	if in.UpdatedAt.IsZero() {
		t.Error("Write did not set UpdatedAt")
	}
	out, err := Read(path)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(in, out) {
		t.Errorf("round trip:\n in %+v\nout %+v", in, out)
	}
	// Overwrite: the file is replaced whole, and no temp files stay behind.
	in.Phase = PhaseDegraded
	if err := Write(path, in); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Errorf("directory holds %d entries, want only status.json", len(entries))
	}
	if out, _ := Read(path); out.Phase != PhaseDegraded {
		t.Errorf("phase = %s after rewrite", out.Phase)
	}
}

func TestReadErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := Read(filepath.Join(dir, "none.json")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing: %v, want ErrNotExist", err)
	}
	bad := filepath.Join(dir, "bad.json")
	os.WriteFile(bad, []byte("{"), 0o644)
	if _, err := Read(bad); err == nil {
		t.Error("truncated JSON read without error")
	}
}

func TestFormat(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 5, 0, 0, time.UTC)
	s := &Status{
		NodeID: "525400123456", Hostname: "kiln-1de4288b", Phase: PhaseConfigError, ConfigError: "config from esp: cluster.key: required",
		Members:   []member.Member{{ID: "a", Hostname: "kiln-a", Alive: true}, {ID: "b", Hostname: "kiln-b", Addr: netip.MustParseAddr("10.0.0.2")}},
		Expected:  3,
		LastError: "x", LastErrorAt: now.Add(-10 * time.Second), UpdatedAt: now.Add(-2 * time.Second),
	}
	var b strings.Builder
	if err := Format(&b, s, now); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"kiln-1de4288b (525400123456)", "config-error", "config from esp: cluster.key: required",
		"1 alive / 2 known / 3 expected", "kiln-b", "10.0.0.2", "DOWN", "x (10s ago)", "2s ago"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, b.String())
		}
	}
}

// TestFormatBricklessNode: a netbooted node with /var in RAM says it holds no brick, the member list marks
// brickless members, and a config taken from a lower source says why the higher one gave none.
func TestFormatBricklessNode(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 5, 0, 0, time.UTC)
	s := &Status{
		NodeID: "a", Hostname: "kiln-a", Phase: PhaseReady, Cluster: "garage", ConfigSource: "image",
		ConfigSkipped: []string{"cmdline-url: http://10.0.0.1:8080/cluster.yaml: no answer for 2m0s (13 attempts; last: connection refused)"},
		NoBrick:       "no brick: /var is in RAM (no local disk for kiln-state)",
		Expected:      3,
		Members: []member.Member{
			{ID: "a", Hostname: "kiln-a", Addr: netip.MustParseAddr("10.0.0.11"), Alive: true, NoBrick: true, StateInRAM: true},
			{ID: "b", Hostname: "kiln-b", Addr: netip.MustParseAddr("10.0.0.12"), Alive: true},
			{ID: "c", Hostname: "kiln-c", Addr: netip.MustParseAddr("10.0.0.13"), Alive: true},
		},
		Swarm:     Component{State: "active"},
		Gluster:   Component{State: "ok", Detail: "volume data started (Replicate, replica 3), 2 peers, /var/data mounted"},
		VIP:       "10.0.0.100/24",
		VIPHolder: "kiln-b",
		UpdatedAt: now.Add(-time.Second),
	}
	var b strings.Builder
	if err := Format(&b, s, now); err != nil {
		t.Fatal(err)
	}
	want := `node:            kiln-a (a)
phase:           ready
cluster:         garage (config from image)
config skipped:  cmdline-url: http://10.0.0.1:8080/cluster.yaml: no answer for 2m0s (13 attempts; last: connection refused)
members:         3 alive / 3 known / 3 expected
                   kiln-a  10.0.0.11  alive, no brick
                   kiln-b  10.0.0.12  alive
                   kiln-c  10.0.0.13  alive
swarm:           active
gluster:         ok volume data started (Replicate, replica 3), 2 peers, /var/data mounted
brick:           no brick: /var is in RAM (no local disk for kiln-state)
vip:             10.0.0.100/24 held by kiln-b
updated:         1s ago
`
	if b.String() != want {
		t.Errorf("got:\n%s\nwant:\n%s", b.String(), want)
	}

	s.Phase, s.Election = "electing", "waiting for voters: a decision needs 2 alive members with /var on a disk, alive now: 1 (members with /var in RAM do not vote)"
	b.Reset()
	if err := Format(&b, s, now); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "\nelection:        waiting for voters: a decision needs 2") {
		t.Errorf("election line missing:\n%s", b.String())
	}
}

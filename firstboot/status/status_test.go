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

package firewall

import (
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite golden files under testdata/")

func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read golden (run with -update to create): %v", err)
	}
	if got != string(want) {
		t.Errorf("%s differs from golden:\n--- got ---\n%s\n--- want ---\n%s", name, got, want)
	}
}

func threeNodes() Rules {
	return Rules{
		// Unsorted, with a duplicate and an IPv4-mapped form: Render must normalise.
		Members: []netip.Addr{
			netip.MustParseAddr("10.77.0.13"), netip.MustParseAddr("10.77.0.11"),
			netip.MustParseAddr("::ffff:10.77.0.12"), netip.MustParseAddr("10.77.0.11"),
		},
		Discovery: []netip.Prefix{
			netip.MustParsePrefix("10.77.0.0/24"), netip.MustParsePrefix("10.77.0.11/32"),
			netip.MustParsePrefix("192.0.2.7/32"),
		},
		DiscoveryPorts: []uint16{7946 + 1000, 7946 + 1000},
	}
}

func TestRenderGolden(t *testing.T) {
	cases := map[string]Rules{
		"three-nodes.nft": threeNodes(),
		"alone.nft":       {Members: []netip.Addr{netip.MustParseAddr("10.77.0.11")}},
		"boot.nft":        BootRules([]uint16{7947, 7948}),
		"dual-stack.nft": {
			Members:        []netip.Addr{netip.MustParseAddr("10.77.0.11"), netip.MustParseAddr("fd00::11")},
			Discovery:      []netip.Prefix{netip.MustParsePrefix("fd00::/64"), netip.MustParsePrefix("10.77.0.0/24")},
			DiscoveryPorts: []uint16{8946},
		},
	}
	for name, r := range cases {
		t.Run(name, func(t *testing.T) { golden(t, name, Render(r)) })
	}
}

func TestRenderDeterministicAndOwnsOneTable(t *testing.T) {
	a, b := Render(threeNodes()), Render(threeNodes())
	if a != b {
		t.Fatal("Render is not deterministic")
	}
	if strings.Contains(a, "flush ruleset") && !strings.Contains(a, "never `flush ruleset`") {
		t.Fatal("script flushes the ruleset")
	}
	for line := range strings.Lines(a) {
		if f := strings.Fields(line); len(f) > 0 && (f[0] == "table" || f[0] == "delete") && !strings.Contains(line, "inet kiln") {
			t.Errorf("script touches a table other than inet kiln: %q", line)
		}
	}
	if MarkerOf(a) == "" {
		t.Fatal("rendered script has no marker")
	}
	other := threeNodes()
	other.Members = other.Members[:1]
	if MarkerOf(Render(other)) == MarkerOf(a) {
		t.Fatal("different rules share a marker")
	}
}

func TestParseMarker(t *testing.T) {
	for in, want := range map[string]string{
		"table inet kiln {\n\tcomment \"kiln sha256:00ff\"\n\tset x {": "kiln sha256:00ff",
		"table inet kiln {\n\tset x {\n":                               "",
		"table inet kiln {\n\tcomment \"somebody else\"\n":             "",
		"\tcomment \"kiln sha256:\\\"x\"\n":                            "",
		"":                                                             "",
	} {
		if got := ParseMarker([]byte(in)); got != want {
			t.Errorf("ParseMarker(%q) = %q, want %q", in, got, want)
		}
	}
}

func FuzzParseMarker(f *testing.F) {
	f.Add([]byte(Render(threeNodes())))
	f.Add([]byte("comment \"kiln sha256:\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		m := ParseMarker(in)
		if m != "" && (!strings.HasPrefix(m, "kiln sha256:") || strings.ContainsAny(m, "\"\n")) {
			t.Fatalf("ParseMarker returned %q", m)
		}
	})
}

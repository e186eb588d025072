package identity

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

type nic struct {
	name, mac, assign string
	physical          bool
}

func setup(t *testing.T, uuid string, nics []nic, persisted string) string {
	t.Helper()
	root := t.TempDir()
	write := func(p, s string) {
		p = filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if uuid != "" {
		write(ProductUUIDPath, uuid+"\n")
	}
	for _, n := range nics {
		dir := filepath.Join(NetClassPath, n.name)
		write(filepath.Join(dir, "address"), n.mac+"\n")
		write(filepath.Join(dir, "addr_assign_type"), n.assign+"\n")
		if n.physical {
			write(filepath.Join(dir, "device", "vendor"), "0x1af4\n")
		}
	}
	if persisted != "" {
		write(PersistPath, persisted+"\n")
	}
	return root
}

func TestGet(t *testing.T) {
	const uuid = "4C4C4544-0035-4A10-8031-B3C04F4E4E32"
	const uuidID = "4c4c454400354a108031b3c04f4e4e32"
	ens3 := nic{"ens3", "52:54:00:12:34:56", "0", true}
	eth0 := nic{"eth0", "52:54:00:aa:bb:cc", "0", true}
	tests := []struct {
		name      string
		uuid      string
		nics      []nic
		persisted string
		persist   bool
		wantID    string
		wantSrc   Source
		wantPrev  string
		wantErr   string
	}{
		{name: "dmi", uuid: uuid, nics: []nic{ens3}, wantID: uuidID, wantSrc: SourceDMI},
		{name: "zero uuid falls back to mac", uuid: "00000000-0000-0000-0000-000000000000", nics: []nic{ens3}, wantID: "525400123456", wantSrc: SourceMAC},
		{name: "all-F uuid falls back", uuid: "FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF", nics: []nic{ens3}, wantID: "525400123456", wantSrc: SourceMAC},
		{name: "OEM placeholder uuid falls back", uuid: "03000200-0400-0500-0006-000700080009", nics: []nic{ens3}, wantID: "525400123456", wantSrc: SourceMAC},
		{name: "malformed uuid falls back", uuid: "not-a-uuid", nics: []nic{ens3}, wantID: "525400123456", wantSrc: SourceMAC},
		{name: "first physical nic by name", nics: []nic{eth0, ens3, {"lo", "00:00:00:00:00:00", "0", false}, {"docker0", "02:42:00:00:00:01", "3", false}}, wantID: "525400123456", wantSrc: SourceMAC},
		{name: "virtual and random macs skipped", nics: []nic{{"br0", "aa:aa:aa:aa:aa:aa", "0", false}, {"eth0", "de:ad:be:ef:00:01", "1", true}, {"eth1", "52:54:00:aa:bb:cc", "0", true}}, wantID: "525400aabbcc", wantSrc: SourceMAC},
		{name: "hardware wins over persisted", uuid: uuid, persisted: "525400123456", wantID: uuidID, wantSrc: SourceDMI, wantPrev: "525400123456"},
		{name: "persisted when hardware gives nothing", persisted: "0123456789abcdef0123456789abcdef", wantID: "0123456789abcdef0123456789abcdef", wantSrc: SourcePersisted},
		{name: "random when nothing, persisted", persist: true, wantSrc: SourceRandom},
		{name: "nothing and not persisting is an error", wantErr: "no SMBIOS UUID"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := setup(t, tt.uuid, tt.nics, tt.persisted)
			got, err := Get(Options{Root: root, Persist: tt.persist})
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if (tt.wantID != "" && got.ID != tt.wantID) || got.Source != tt.wantSrc || got.Previous != tt.wantPrev {
				t.Errorf("got %+v, want id %s source %s previous %q", got, tt.wantID, tt.wantSrc, tt.wantPrev)
			}
			if got.Hostname != HostnameFor(got.ID) {
				t.Errorf("hostname %s, want %s", got.Hostname, HostnameFor(got.ID))
			}
			if tt.persist {
				again, err := Get(Options{Root: root})
				if err != nil || again.ID != got.ID {
					t.Errorf("second Get = %+v, %v; want the persisted %s", again, err, got.ID)
				}
			}
		})
	}
}

func TestPersistOverwritesStale(t *testing.T) {
	root := setup(t, "", []nic{{"ens3", "52:54:00:12:34:56", "0", true}}, "0123456789abcdef0123456789abcdef")
	if _, err := Get(Options{Root: root, Persist: true}); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(filepath.Join(root, PersistPath))
	if string(b) != "525400123456\n" {
		t.Errorf("persisted = %q, want the hardware id", b)
	}
}

func TestHostnameFor(t *testing.T) {
	// Fixed values: a change here renames every node of every cluster.
	if got := HostnameFor("525400123456"); got != "kiln-1de4288b" { // echo -n 525400123456 | sha256sum
		t.Errorf("HostnameFor = %s", got)
	}
	a, b := HostnameFor("525400123456"), HostnameFor("525400123457")
	if a == b || len(a) != len("kiln-")+8 {
		t.Errorf("hostnames %s %s: want distinct kiln-XXXXXXXX", a, b)
	}
}

func TestHostsWith(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"debian default", "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n", "127.0.0.1\tlocalhost\n127.0.1.1\tkiln-1\n::1\tlocalhost ip6-localhost\n"},
		{"replace old entry", "127.0.0.1\tlocalhost\n127.0.1.1\tdebian\n", "127.0.0.1\tlocalhost\n127.0.1.1\tkiln-1\n"},
		{"empty", "", "127.0.0.1\tlocalhost\n127.0.1.1\tkiln-1\n"},
		{"no localhost line", "10.0.0.1 gw\n", "127.0.1.1\tkiln-1\n10.0.0.1 gw\n"},
	}
	for _, tt := range tests {
		if got := hostsWith(tt.in, "kiln-1"); got != tt.want {
			t.Errorf("%s: got %q, want %q", tt.name, got, tt.want)
		}
	}
}

func TestWriteHostFilesIdempotent(t *testing.T) {
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "etc"), 0o755)
	os.WriteFile(filepath.Join(root, "etc/hosts"), []byte("127.0.0.1\tlocalhost\n"), 0o644)
	for range 2 {
		if err := WriteHostFiles(root, "kiln-abcd0123"); err != nil {
			t.Fatal(err)
		}
	}
	h, _ := os.ReadFile(filepath.Join(root, "etc/hostname"))
	hosts, _ := os.ReadFile(filepath.Join(root, "etc/hosts"))
	if string(h) != "kiln-abcd0123\n" || strings.Count(string(hosts), "kiln-abcd0123") != 1 {
		t.Errorf("hostname %q hosts %q", h, hosts)
	}
}

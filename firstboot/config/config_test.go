package config

import (
	"net/netip"
	"strings"
	"testing"
	"time"
)

const goodKey = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="  // bytes 0..31
const otherKey = "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=" // 32 bytes of 7

func TestParse(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		wantErr []string // substrings that must all appear; nil means success
		check   func(t *testing.T, c *Config)
	}{
		{
			name: "full",
			in: `cluster:
  name: garage
  key: ` + goodKey + `
  size: 5
  vip: 192.168.1.250/24
  interface: eth0
  peers: [10.0.0.1, "10.0.0.2"]
ssh_authorized_keys:
  - ssh-ed25519 AAAA lab@host
`,
			check: func(t *testing.T, c *Config) {
				if c.Cluster.Name != "garage" || c.Cluster.Size != 5 || c.Cluster.Interface != "eth0" {
					t.Errorf("cluster = %+v", c.Cluster)
				}
				if c.Cluster.Key[31] != 31 {
					t.Errorf("key = %v", c.Cluster.Key)
				}
				if c.Cluster.VIP != netip.MustParsePrefix("192.168.1.250/24") {
					t.Errorf("vip = %v", c.Cluster.VIP)
				}
				if len(c.Cluster.Peers) != 2 || c.Cluster.Peers[1] != netip.MustParseAddr("10.0.0.2") {
					t.Errorf("peers = %v", c.Cluster.Peers)
				}
				if len(c.SSHAuthorizedKeys) != 1 {
					t.Errorf("keys = %v", c.SSHAuthorizedKeys)
				}
			},
		},
		{
			name: "minimal gets defaults",
			in:   "cluster:\n  name: a\n  key: " + goodKey + "\n",
			check: func(t *testing.T, c *Config) {
				if c.Cluster.Size != DefaultSize || c.Cluster.VIP.IsValid() || c.Cluster.Peers != nil {
					t.Errorf("defaults not applied: %+v", c.Cluster)
				}
			},
		},
		{
			name: "replaceAfter",
			in:   "cluster:\n  name: a\n  key: " + goodKey + "\n  replaceAfter: 90s\n",
			check: func(t *testing.T, c *Config) {
				if c.Cluster.ReplaceAfter != 90*time.Second {
					t.Errorf("replaceAfter = %s, want 90s", c.Cluster.ReplaceAfter)
				}
				again, err := Parse(must(c.Marshal()))
				if err != nil || again.Cluster.ReplaceAfter != 90*time.Second {
					t.Errorf("round trip: %v, %v", again, err)
				}
			},
		},
		{name: "replaceAfter default", in: "cluster:\n  name: a\n  key: " + goodKey + "\n",
			check: func(t *testing.T, c *Config) {
				if c.Cluster.ReplaceAfter != DefaultReplaceAfter {
					t.Errorf("replaceAfter = %s, want %s", c.Cluster.ReplaceAfter, DefaultReplaceAfter)
				}
			}},
		{name: "replaceAfter too short", in: "cluster:\n  name: a\n  key: " + goodKey + "\n  replaceAfter: 5s\n",
			wantErr: []string{"cluster.replaceAfter", "at least 30s"}},
		{name: "replaceAfter not a duration", in: "cluster:\n  name: a\n  key: " + goodKey + "\n  replaceAfter: soon\n",
			wantErr: []string{"cluster.replaceAfter", "duration"}},
		{name: "accept_keys", in: "cluster:\n  name: a\n  key: " + goodKey + "\n  accept_keys: [" + otherKey + "]\n",
			check: func(t *testing.T, c *Config) {
				if len(c.Cluster.AcceptKeys) != 1 || c.Cluster.AcceptKeys[0].String() != otherKey {
					t.Errorf("accept_keys = %v", c.Cluster.AcceptKeys)
				}
				again, err := Parse(must(c.Marshal()))
				if err != nil || len(again.Cluster.AcceptKeys) != 1 || again.Cluster.AcceptKeys[0] != c.Cluster.AcceptKeys[0] {
					t.Errorf("round trip: %v, %v", again, err)
				}
			}},
		{name: "accept_keys: the key itself", in: "cluster: {name: a, key: " + goodKey + ", accept_keys: [" + goodKey + "]}\n",
			wantErr: []string{"cluster.accept_keys[0]: is cluster.key itself"}},
		{name: "accept_keys: too many", in: "cluster: {name: a, key: " + goodKey + ", accept_keys: [" + otherKey + ", " + otherKey + ", " + otherKey + "]}\n",
			wantErr: []string{"cluster.accept_keys: 3 keys, at most 2"}},
		{name: "accept_keys: bad one", in: "cluster: {name: a, key: " + goodKey + ", accept_keys: [AAAA]}\n",
			wantErr: []string{"cluster.accept_keys[0]: decodes to 3 bytes"}},
		{name: "empty", in: "", wantErr: []string{"empty"}},
		{name: "comment only", in: "# nothing\n", wantErr: []string{"empty"}},
		{name: "unknown top-level field", in: "cluster: {name: a, key: " + goodKey + "}\nsssh_authorized_keys: []\n",
			wantErr: []string{"2:1: unknown field \"sssh_authorized_keys\"; did you mean \"ssh_authorized_keys\"?"}},
		{name: "unknown nested field", in: "cluster:\n  name: a\n  key: " + goodKey + "\n  sise: 3\n",
			wantErr: []string{"4:3: cluster: unknown field \"sise\"; did you mean \"size\"?"}},
		{name: "duplicate key", in: "cluster:\n  name: a\n  name: b\n  key: " + goodKey + "\n",
			wantErr: []string{"cluster.name"}},
		{name: "all problems at once", in: "cluster:\n  name: Garage\n  key: abc\n  size: 0\n  vip: 10.0.0.1\n  peers: [nope]\n",
			wantErr: []string{"cluster.name:", "cluster.key:", "cluster.size:", "cluster.vip:", "cluster.peers[0]:"}},
		{name: "missing name and key", in: "cluster: {}\n", wantErr: []string{"cluster.name: required", "cluster.key: required"}},
		{name: "key wrong length", in: "cluster: {name: a, key: AAAA}\n", wantErr: []string{"decodes to 3 bytes, want 32"}},
		{name: "size wrong type", in: "cluster: {name: a, key: " + goodKey + ", size: three}\n", wantErr: []string{"1:77: cluster.size: want a whole number"}},
		{name: "name not a string", in: "cluster: {name: 123, key: " + goodKey + "}\n", wantErr: []string{"1:17: cluster.name: want a string, got int 123 (quote it)"}},
		{name: "vip network address", in: "cluster: {name: a, key: " + goodKey + ", vip: 10.0.0.0/24}\n", wantErr: []string{"network address"}},
		{name: "vip ipv6", in: "cluster: {name: a, key: " + goodKey + ", vip: 'fd00::5/64'}\n", wantErr: []string{"IPv4"}},
		{name: "peers not a list", in: "cluster: {name: a, key: " + goodKey + ", peers: 10.0.0.1}\n", wantErr: []string{"1:78: cluster.peers: want a list"}},
		{name: "ssh key with newline", in: "cluster: {name: a, key: " + goodKey + "}\nssh_authorized_keys: [\"a\\nb\"]\n", wantErr: []string{"ssh_authorized_keys[0]"}},
		{name: "alias refused", in: "cluster: {name: &n a, key: " + goodKey + ", interface: *n}\n", wantErr: []string{"aliases"}},
		{name: "two documents", in: "cluster: {name: a, key: " + goodKey + "}\n---\ncluster: {}\n", wantErr: []string{"second YAML document"}},
		{name: "not a mapping", in: "- a\n", wantErr: []string{"1:1: want a mapping of fields, got a list", "want a mapping"}},
		{name: "bad interface", in: "cluster: {name: a, key: " + goodKey + ", interface: 'eth 0'}\n", wantErr: []string{"cluster.interface"}},
		{name: "too large", in: strings.Repeat("#", MaxSize+1), wantErr: []string{"more than"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse([]byte(tt.in))
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("Parse: %v", err)
				}
				tt.check(t, c)
				return
			}
			if err == nil {
				t.Fatalf("Parse succeeded, want error containing %q", tt.wantErr)
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestNewMarshalRoundTrip(t *testing.T) {
	a, err := New("lab")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := New("lab")
	if a.Cluster.Key == b.Cluster.Key {
		t.Fatal("two New configs share a key")
	}
	a.Cluster.VIP = netip.MustParsePrefix("10.77.0.250/24")
	a.Cluster.Peers = []netip.Addr{netip.MustParseAddr("10.77.0.11")}
	a.SSHAuthorizedKeys = []string{`ssh-ed25519 AAAAC3 "odd, [comment]" <x>`}
	data, err := a.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	got, err := Parse(data)
	if err != nil {
		t.Fatalf("Parse(Marshal()): %v\n%s", err, data)
	}
	if got.Cluster.Key != a.Cluster.Key || got.Cluster.VIP != a.Cluster.VIP || got.Cluster.Peers[0] != a.Cluster.Peers[0] ||
		got.SSHAuthorizedKeys[0] != a.SSHAuthorizedKeys[0] || got.Cluster.Size != DefaultSize {
		t.Errorf("round trip changed the config:\n%s\n%+v", data, got)
	}
	if err := a.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
	a.Cluster.Name = "Bad Name"
	if err := a.Validate(); err == nil || !strings.Contains(err.Error(), "cluster.name") {
		t.Errorf("Validate of bad name = %v", err)
	}
}

func must(b []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return b
}

package config

import (
	"testing"
)

// FuzzParse feeds arbitrary bytes to the strict decoder: it must never panic, and whatever it accepts must
// survive Marshal → Parse unchanged (so `kiln cluster new` output and hand-written files mean the same).
// Seeds are in testdata/fuzz/FuzzParse plus the ones below. Run: go test -fuzz FuzzParse ./firstboot/config
func FuzzParse(f *testing.F) {
	f.Add([]byte(cfgYAML("garage")))
	f.Add([]byte("cluster:\n  name: a\n  key: " + goodKey + "\n  size: 5\n  vip: 10.0.0.9/24\n  peers: [10.0.0.1]\nssh_authorized_keys: [x]\n"))
	f.Add([]byte("cluster: {name: &a x, key: *a}\n"))
	f.Add([]byte("- [[[[\n"))
	f.Add([]byte("cluster:\n  size: 99999999999999999999\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data)
		if err != nil {
			return
		}
		out, err := c.Marshal()
		if err != nil {
			t.Fatalf("Marshal: %v", err)
		}
		c2, err := Parse(out)
		if err != nil {
			t.Fatalf("Parse(Marshal()) failed: %v\ninput: %q\nmarshalled:\n%s", err, data, out)
		}
		if c2.Cluster.Name != c.Cluster.Name || c2.Cluster.Key != c.Cluster.Key || c2.Cluster.Size != c.Cluster.Size ||
			c2.Cluster.VIP != c.Cluster.VIP || c2.Cluster.Interface != c.Cluster.Interface ||
			len(c2.Cluster.Peers) != len(c.Cluster.Peers) || len(c2.SSHAuthorizedKeys) != len(c.SSHAuthorizedKeys) {
			t.Fatalf("round trip changed the config: %+v → %+v", c, c2)
		}
		for i := range c.SSHAuthorizedKeys {
			if c.SSHAuthorizedKeys[i] != c2.SSHAuthorizedKeys[i] {
				t.Fatalf("key %d changed: %q → %q", i, c.SSHAuthorizedKeys[i], c2.SSHAuthorizedKeys[i])
			}
		}
	})
}

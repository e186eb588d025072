package ignite

import (
	"errors"
	"testing"
)

// FuzzParse feeds arbitrary JSON to Parse: it must never panic, and anything it accepts must list no
// unsupported field (what Apply sees is only what it implements). Run: go test -fuzz FuzzParse ./firstboot/ignite
func FuzzParse(f *testing.F) {
	f.Add([]byte(`{"ignition":{"version":"3.3.0"}}`))
	f.Add([]byte(`{"ignition":{"version":"3.3.0"},"passwd":{"users":[{"name":"core","uid":1000,"groups":["sudo"],"sshAuthorizedKeys":["ssh-ed25519 A"]}]}}`))
	f.Add([]byte(`{"ignition":{"version":"3.3.0"},"storage":{"files":[{"path":"/etc/motd","contents":{"compression":"gzip","source":"data:;base64,H4sIAAAAAAAC/8pIzcnJVyjPL8pJUaAjGxAAAP//R1qnQHcAAAA="},"mode":420}],"links":[{"path":"/etc/l","target":"/etc/motd"}]}}`))
	f.Add([]byte(`{"ignition":{"version":"3.3.0"},"systemd":{"units":[{"name":"a.service","enabled":true,"contents":"[Service]\nExecStart=/bin/true\n","dropins":[{"name":"x.conf","contents":"[Service]\n"}]}]}}`))
	f.Add([]byte(`{"ignition":{"version":"3.1.0"},"storage":{"disks":[{"device":"/dev/vda"}]}}`))
	f.Add([]byte(`{"ignition":{"version":"3.3.0"},"passwd":{"users":[{"name":"a","bogus":{"x":[1,2]}}]}}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, _, err := Parse(data)
		var ue *UnsupportedError
		if errors.As(err, &ue) && len(ue.Fields) == 0 {
			t.Fatal("UnsupportedError without fields")
		}
		if err != nil {
			return
		}
		if u := Unsupported(*cfg); len(u) > 0 {
			t.Fatalf("accepted config with unsupported fields %q", u)
		}
	})
}

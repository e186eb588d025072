package identity

import (
	"os"
	"path/filepath"
	"testing"
)

// An EC2 Nitro instance is named by its instance id; the node id stays the SMBIOS UUID. Anything short of
// the vendor and a well-formed id in the asset tag keeps the kiln-<hash> name.
func TestEC2Hostname(t *testing.T) {
	const uuid = "EC2A1B2C-3D4E-5F60-7182-93A4B5C6D7E8"
	for _, tc := range []struct {
		name, vendor, tag, want string
	}{
		{"nitro", "Amazon EC2", "i-0123456789abcdef0", "i-0123456789abcdef0"},
		{"nitro, short id", "Amazon EC2\n", "i-01234567\n", "i-01234567"},
		{"ec2 without an id in the tag", "Amazon EC2", "Amazon EC2", HostnameFor("ec2a1b2c3d4e5f60718293a4b5c6d7e8")},
		{"a garage box with an asset tag", "Dell Inc.", "i-0123456789abcdef0", HostnameFor("ec2a1b2c3d4e5f60718293a4b5c6d7e8")},
		{"qemu", "QEMU", "", HostnameFor("ec2a1b2c3d4e5f60718293a4b5c6d7e8")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := setup(t, uuid, nil, "")
			for p, v := range map[string]string{SysVendorPath: tc.vendor, BoardAssetTagPath: tc.tag} {
				p = filepath.Join(root, p)
				if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(p, []byte(v), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			id, err := Get(Options{Root: root})
			if err != nil {
				t.Fatal(err)
			}
			if id.Hostname != tc.want || id.ID != "ec2a1b2c3d4e5f60718293a4b5c6d7e8" {
				t.Errorf("Get = id %s hostname %s, want hostname %s", id.ID, id.Hostname, tc.want)
			}
		})
	}
}

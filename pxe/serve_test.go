package pxe

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kiln-project/kiln/firstboot/config"
	"github.com/kiln-project/kiln/pxe/internal/pxetest"
)

// writeConfig writes a fresh, valid cluster config and returns its path.
func writeConfig(t testing.TB) (string, []byte) {
	t.Helper()
	c, err := config.New("pxetest")
	if err != nil {
		t.Fatal(err)
	}
	b, err := c.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "cluster.yaml")
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p, b
}

// TestStartRefuses covers the checks Start makes before it binds a port, so it needs no root.
func TestStartRefuses(t *testing.T) {
	dir := pxetest.Dir(t, nil)
	cfg, _ := writeConfig(t)
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(bad, []byte("cluster:\n  name: UPPER\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	foreign := pxetest.Dir(t, nil)
	if err := os.WriteFile(filepath.Join(foreign, "initrd.img"), []byte("another build"), 0o644); err != nil {
		t.Fatal(err)
	}
	notIPXE := pxetest.Dir(t, map[string][]byte{"boot.ipxe": []byte("#!/bin/sh\necho\n")})
	for _, tt := range []struct {
		name string
		o    Options
		want string
	}{
		{"config without allow rules", Options{Dir: dir, ConfigFile: cfg}, "--config holds the cluster key"},
		{"unreadable config", Options{Dir: dir, ConfigFile: filepath.Join(dir, "nope.yaml"), AllowAny: true}, "--config: open"},
		{"invalid config", Options{Dir: dir, ConfigFile: bad, AllowAny: true}, "is not a valid cluster config"},
		{"bad MAC", Options{Dir: dir, ConfigFile: cfg, AllowMACs: []string{"52:54:00"}}, `--allow-mac "52:54:00"`},
		{"bad HTTP port", Options{Dir: dir, HTTPPort: 70000, Interface: "lo"}, "--http-port 70000"},
		{"unknown interface", Options{Dir: dir, HTTPPort: 8080, Interface: "nosuch0"}, "--interface nosuch0"},
		{"missing dir", Options{Dir: filepath.Join(dir, "nope"), HTTPPort: 8080, Interface: "lo"}, "no such directory"},
		{"not a pxe dir", Options{Dir: t.TempDir(), HTTPPort: 8080, Interface: "lo"}, "not a kiln pxe directory"},
		{"dir from another build", Options{Dir: foreign, HTTPPort: 8080, Interface: "lo"}, "from another build?"},
		{"script not iPXE", Options{Dir: notIPXE, HTTPPort: 8080, Interface: "lo"}, "boot.ipxe does not start with #!ipxe"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s, err := Start(context.Background(), tt.o)
			if err == nil {
				s.close()
				t.Fatal("started")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not say %q", err, tt.want)
			}
		})
	}
}

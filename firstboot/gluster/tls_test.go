package gluster

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/kiln-project/kiln/firstboot/glustertls"
	"github.com/kiln-project/kiln/firstboot/state"
)

// ensureTLS follows the record: nothing before there is one; with a CA the certificate, and the switch only
// where glusterd did not start with it (then glusterd restarts once); without a CA the switch goes.
func TestEnsureTLS(t *testing.T) {
	ca, err := glustertls.NewCA("test")
	if err != nil {
		t.Fatal(err)
	}
	withCA := &state.Formation{Initialiser: "a", StorageCA: ca}
	plain := &state.Formation{Initialiser: "a"}
	cases := []struct {
		name       string
		record     *state.Formation
		switchOn   bool // secure-access before the pass
		wantOn     bool
		wantTLS    bool
		wantCalls  []string
		wantChange bool
	}{
		{"no record yet", nil, true, true, false, nil, false},
		{"CA, glusterd started with TLS: certificate only", withCA, true, true, true, nil, true},
		{"CA, glusterd started plaintext: switched on while stopped", withCA, false, true, true, []string{"stop " + GlusterdUnit, "start " + GlusterdUnit}, true},
		{"no CA: switched off while stopped", plain, true, false, false, []string{"stop " + GlusterdUnit, "start " + GlusterdUnit}, true},
		{"no CA, plaintext already", plain, false, false, false, nil, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			root := t.TempDir()
			if c.switchOn {
				if err := glustertls.Enable(root); err != nil {
					t.Fatal(err)
				}
			}
			sd := newFakeSystemd()
			r := New(nil, sd, root, slog.New(slog.NewTextHandler(io.Discard, nil)))
			s := st(mA, mA, mB, mC)
			s.Formation = c.record
			changed, err := r.ensureTLS(context.Background(), s)
			if err != nil {
				t.Fatal(err)
			}
			if changed != c.wantChange || glustertls.Enabled(root) != c.wantOn || s.Gluster.TLS != c.wantTLS || !slices.Equal(sd.calls, c.wantCalls) {
				t.Errorf("changed %v, switch %v, TLS %v, systemd %v; want %v, %v, %v, %v", changed, glustertls.Enabled(root),
					s.Gluster.TLS, sd.calls, c.wantChange, c.wantOn, c.wantTLS, c.wantCalls)
			}
			_, err = os.Stat(filepath.Join(root, glustertls.CertFile))
			if (err == nil) != (c.record != nil && c.record.StorageCA != nil) {
				t.Errorf("certificate present: %v, want it only with a CA", err == nil)
			}
			if again, err := r.ensureTLS(context.Background(), s); err != nil || again {
				t.Errorf("second pass: changed %v, %v; want nothing", again, err)
			}
		})
	}
}

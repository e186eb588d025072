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
	"github.com/kiln-project/kiln/firstboot/member"
	"github.com/kiln-project/kiln/firstboot/state"
)

// ensureTLS follows the record: nothing before there is one; with a CA the certificate, and the switch only
// where glusterd did not start with it (then glusterd restarts once); without a CA the switch goes.
func TestEnsureTLS(t *testing.T) {
	ca := newCA(t)
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

// The storage report runs before the swarm join: nothing before a record; with a record carrying the storage CA,
// this node's certificate and the report the coordinator probes on (a fresh glusterd that speaks TLS); nothing
// once this node's gossip carries that report.
func TestReporterBeforeTheSwarm(t *testing.T) {
	ca := newCA(t)
	root := t.TempDir()
	if err := glustertls.Enable(root); err != nil { // as kiln-firstboot glusterd-tls leaves it at boot
		t.Fatal(err)
	}
	g := &fakeGlusterd{}
	sd := newFakeSystemd()
	rep := New(NewCLI(g.run), sd, root, slog.New(slog.NewTextHandler(io.Discard, nil))).Reporter()

	s := st(mB, mA, mB, mC)
	s.Formation, s.Swarm.Active = nil, false
	if changed, err := rep.Reconcile(context.Background(), s); err != nil || changed || len(g.ran) != 0 {
		t.Fatalf("before a record: changed %v, err %v, ran %v; want nothing", changed, err, g.ran)
	}

	s.Formation = &state.Formation{Initialiser: "a", StorageCA: ca}
	changed, err := rep.Reconcile(context.Background(), s)
	if err != nil || !changed {
		t.Fatalf("with the record: changed %v, err %v; want the certificate written", changed, err)
	}
	if !s.Gluster.TLS || s.Gluster.Epoch != member.FreshGluster || !slices.Equal(g.ran, []string{"peer status"}) {
		t.Errorf("report: TLS %v, epoch %q, ran %v; want TLS, %q, the peer list only", s.Gluster.TLS, s.Gluster.Epoch, g.ran, member.FreshGluster)
	}
	if _, err := os.Stat(filepath.Join(root, glustertls.CertFile)); err != nil {
		t.Errorf("certificate: %v", err)
	}
	if len(sd.calls) != 0 {
		t.Errorf("systemd calls %v: glusterd started with TLS needs no restart", sd.calls)
	}

	g.ran = nil
	s2 := st(mB, mA, mB, mC)
	s2.Formation, s2.Swarm.Active = s.Formation, false
	s2.Self.GlusterEpoch, s2.Self.StorageTLS = member.FreshGluster, true
	if changed, err := rep.Reconcile(context.Background(), s2); err != nil || changed || len(g.ran) != 0 {
		t.Errorf("already reported: changed %v, err %v, ran %v; want nothing", changed, err, g.ran)
	}
}

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

// The storage report runs before the swarm join: nothing before a record; with a record carrying the storage CA,
// this node's certificate and the report the coordinator probes on (a fresh glusterd that speaks TLS); nothing
// once this node's gossip carries that report.
func TestReporterBeforeTheSwarm(t *testing.T) {
	ca, err := glustertls.NewCA("test")
	if err != nil {
		t.Fatal(err)
	}
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

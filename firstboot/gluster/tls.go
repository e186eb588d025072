package gluster

import (
	"context"
	"fmt"

	"github.com/kiln-project/kiln/firstboot/glustertls"
	"github.com/kiln-project/kiln/firstboot/state"
)

// ensureTLS puts this node's storage TLS in place once the formation record carries the cluster's storage CA:
// its certificate (glustertls.Ensure), then the secure-access switch, written while glusterd is stopped so
// the glusterd that starts next speaks TLS on every connection. It runs before this node's glusterd talks to
// any peer (the epoch report, probes, a rejoin), and the node gossips member.StorageTLS only afterwards: the
// coordinator probes no member whose glusterd would still answer in plaintext. It reports whether it changed
// anything and sets s.Gluster.TLS.
func (r *Reconciler) ensureTLS(ctx context.Context, s *state.State) (bool, error) {
	if s.Formation == nil || s.Formation.StorageCA == nil {
		return false, nil
	}
	wrote, err := glustertls.Ensure(r.root, s.Formation.StorageCA, s.Self.ID)
	if err != nil {
		return false, fmt.Errorf("gluster: %w", err)
	}
	switchedOn := !glustertls.Enabled(r.root)
	switch {
	case switchedOn:
		r.log.Info("gluster: switching storage TLS on", "node", s.Self.ID)
		if err := r.whileStopped(ctx, "switch storage TLS on", func() error { return glustertls.Enable(r.root) }); err != nil {
			return true, err
		}
	case wrote:
		// A new certificate (a lost key, another name): glusterd takes it at its next start.
		if err := r.restartGlusterd(ctx); err != nil {
			return true, err
		}
	}
	s.Gluster.TLS = true
	return wrote || switchedOn, nil
}

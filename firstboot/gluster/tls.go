package gluster

import (
	"context"
	"fmt"

	"github.com/kiln-project/kiln/firstboot/glustertls"
	"github.com/kiln-project/kiln/firstboot/state"
)

// ensureTLS keeps this node's storage TLS as the formation record says, once there is one. With the cluster's
// storage CA: this node's certificate (glustertls.Ensure; glusterd reads it for each new connection, so no
// restart) and the secure-access switch, which the image sets before glusterd starts (kiln-firstboot
// glusterd-tls) and which is written here, while glusterd is stopped, only where that did not happen. Without
// a CA (a cluster formed before storage TLS): no switch, since every peer speaks plaintext. It runs before this
// node's glusterd talks to any peer, and the node gossips member.StorageTLS only afterwards: the coordinator
// probes no member that cannot answer in TLS yet. It reports whether it changed anything and sets
// s.Gluster.TLS.
func (r *Reconciler) ensureTLS(ctx context.Context, s *state.State) (bool, error) {
	if s.Formation == nil {
		return false, nil
	}
	if s.Formation.StorageCA == nil {
		if !glustertls.Enabled(r.root) {
			return false, nil
		}
		r.log.Info("gluster: switching storage TLS off: the cluster was formed without a storage CA")
		return true, r.whileStopped(ctx, "switch storage TLS off", func() error { return glustertls.Disable(r.root) })
	}
	wrote, err := glustertls.Ensure(r.root, s.Formation.StorageCA, s.Self.ID)
	if err != nil {
		return false, fmt.Errorf("gluster: %w", err)
	}
	changed := wrote
	if !glustertls.Enabled(r.root) {
		r.log.Info("gluster: switching storage TLS on", "node", s.Self.ID)
		if err := r.whileStopped(ctx, "switch storage TLS on", func() error { return glustertls.Enable(r.root) }); err != nil {
			return true, err
		}
		changed = true
	}
	s.Gluster.TLS = true
	return changed, nil
}

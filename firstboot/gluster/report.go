package gluster

import (
	"context"

	"github.com/kiln-project/kiln/firstboot/state"
)

// ReportName is the name of the reconciler Reporter returns.
const ReportName = "gluster-report"

// Reporter returns the storage report step of the pass (state.Pass.StorageReport): once there is a
// formation record it gets this node's glusterd ready to be probed (running, its storage TLS certificate
// issued) and writes State.Gluster's epoch and TLS report, before this node's swarm join. It shares r's
// glusterd and memory; the gluster reconciler later in the pass does the same steps again, idempotently.
func (r *Reconciler) Reporter() state.Reconciler { return reporter{r} }

type reporter struct{ r *Reconciler }

func (reporter) Name() string { return ReportName }

// Reconcile does nothing before a record or once this node's gossip already carries the report the
// coordinator waits for; the epoch it reports later in a cluster's life comes from the gluster reconciler.
// Its errors are logged, not returned: the gluster reconciler meets the same ones in the same pass and
// reports them, once.
func (p reporter) Reconcile(ctx context.Context, s *state.State) (bool, error) {
	if s.Formation == nil || (s.Self.GlusterEpoch != "" && (s.Self.StorageTLS || !tlsCluster(s))) {
		return false, nil
	}
	changed, err := p.r.prepare(ctx, s)
	if err == nil {
		err = p.r.reportEpoch(ctx, s)
	}
	if err != nil {
		p.r.log.Debug("gluster report", "err", err)
	}
	return changed, nil
}

package state

// Pass is the agent's reconcilers in the order one pass runs them. The order is the dependency graph
// between them, and each slot says what it reads from the slots before it; a nil slot is skipped (tests,
// and a node built without a part).
type Pass struct {
	// Firewall opens the cluster ports to members only, before any service listens on them. It reads the
	// membership and the formation record's addresses.
	Firewall Reconciler
	// StorageReport gets this node's glusterd ready to be probed once there is a formation record (running,
	// its storage TLS certificate issued) and writes State.Gluster's epoch and TLS report, which the agent
	// gossips at once. It goes before Swarm: the coordinator probes a member only once it has that report,
	// and a joiner's swarm join (seconds on a loaded node) would otherwise hold it back. Nothing in it needs
	// the swarm.
	StorageReport Reconciler
	// Swarm forms and heals the swarm and writes State.Swarm: the formation record the agent announces, and
	// whether this node is an active member.
	Swarm Reconciler
	// Gluster forms and heals the storage. It reads State.Swarm.Active: a node probes peers and takes part in
	// the volume only once it is a verified swarm member, so a node that is not part of the cluster's swarm
	// (a stray swarm, a failed join) never enters the trusted pool. It writes State.Gluster.
	Gluster Reconciler
	// Ingress deploys and keeps the ingress stack (Traefik on 80/443, certificates on the volume); nil when
	// the cluster config has no ingress section. It reads State.Swarm.Active and needs the volume mounted,
	// and goes before VRRP so a node takes the VIP with its view of the front door reconciled.
	Ingress Reconciler
	// Stacks deploys and keeps the image's user stacks (compose files) and removes those the image no longer
	// has. After Ingress, whose network the stacks' routed services join.
	Stacks Reconciler
	// VRRP renders keepalived's config from the membership and keeps it running; it goes last so the VIP
	// moves only to a node whose other parts had their turn in this pass.
	VRRP Reconciler
	// CloudVIP tells the cloud's network which node holds the VIP (on AWS: the VIP as a secondary private
	// address of the holder's network interface), right after VRRP, from whether this node carries the VIP.
	CloudVIP Reconciler
}

// Steps lists the pass's reconcilers in order, nil slots left out.
func (p Pass) Steps() []Reconciler {
	var out []Reconciler
	for _, r := range []Reconciler{p.Firewall, p.StorageReport, p.Swarm, p.Gluster, p.Ingress, p.Stacks, p.VRRP, p.CloudVIP} {
		if r != nil {
			out = append(out, r)
		}
	}
	return out
}

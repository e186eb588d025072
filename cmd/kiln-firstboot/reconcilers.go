package main

import (
	"github.com/kiln-project/kiln/firstboot"
)

// reconcilers builds the agent's ordered reconciler list (firewall, swarm, gluster, vrrp) once config, identity
// and the cluster interface are known. This is the one place that wires them; until they are wired the agent
// still discovers, elects and reports status.
func reconcilers(env firstboot.Env) ([]firstboot.Reconciler, error) {
	return nil, nil
}

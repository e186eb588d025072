// Package agents measures and proves formation by whole node agents at native speed: N complete agents
// (discovery, election, swarm, volume, VIP), each with its own real dockerd, glusterd and keepalived, in
// network and mount namespaces on this host. The lab runs the same agent in TCG guests, 10–30 times slower;
// this is what the agent itself costs.
package agents

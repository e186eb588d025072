package main

import (
	"context"
	"fmt"

	"github.com/docker/docker/client"
	"github.com/vishvananda/netlink"

	"github.com/kiln-project/kiln/firstboot"
	"github.com/kiln-project/kiln/firstboot/discovery"
	"github.com/kiln-project/kiln/firstboot/firewall"
	"github.com/kiln-project/kiln/firstboot/gluster"
	"github.com/kiln-project/kiln/firstboot/sdunit"
	"github.com/kiln-project/kiln/firstboot/state"
	"github.com/kiln-project/kiln/firstboot/swarm"
	"github.com/kiln-project/kiln/firstboot/vrrp"
)

// reconcilers builds the agent's pass once config, identity and the cluster interface are known (state.Pass
// says why its slots run in their order).
func reconcilers(env firstboot.Env) (state.Pass, error) {
	docker, err := dockerClient()
	if err != nil {
		return state.Pass{}, err
	}
	systemd, err := sdunit.Connect(context.Background())
	if err != nil {
		return state.Pass{}, fmt.Errorf("reconcilers: systemd: %w", err)
	}
	nl, err := netlink.NewHandle()
	if err != nil {
		return state.Pass{}, fmt.Errorf("reconcilers: netlink: %w", err)
	}
	log := env.Logger
	return state.Pass{
		Firewall: firewall.New(firewall.HostNFT, firewall.Options{
			DiscoveryPorts: []uint16{discovery.GossipPort, discovery.BeaconPort},
			StaticPeers:    env.Config.Cluster.Peers,
			ScriptPath:     "/run/kiln/firewall.nft",
		}, log.With("reconciler", "firewall")),
		Swarm:   swarm.New(docker, log.With("reconciler", "swarm")),
		Gluster: gluster.New(gluster.NewCLI(gluster.HostRunner), systemd, "", log.With("reconciler", "gluster")),
		VRRP:    vrrp.New(systemd, nl, vrrp.ConfigPath, log.With("reconciler", "vrrp")),
	}, nil
}

// dockerClient talks to the local dockerd; version negotiation settles on the daemon's API (1.41 on bookworm).
func dockerClient() (*client.Client, error) {
	c, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		return nil, fmt.Errorf("docker client: %w", err)
	}
	return c, nil
}

// Package host wires the node agent to the machine it runs on: the reconcilers of a pass over the local
// nftables, dockerd, glusterd and keepalived, and keepalived's health input beside the reconcile loop.
// kiln-firstboot run uses it with systemd; the whole-agent benchmark with a unit manager of its own.
package host

import (
	"context"
	"fmt"
	"log/slog"

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

// FirewallScript is where the firewall reconciler keeps the ruleset it loaded, for operators to read.
const FirewallScript = "/run/kiln/firewall.nft"

// Machine is what the reconcilers act through besides their daemons' own APIs.
type Machine struct {
	// Docker is the local dockerd.
	Docker *client.Client
	// Units starts, restarts and observes glusterd, keepalived and the volume's mount unit; nil connects to
	// systemd when the pass is built.
	Units sdunit.Manager
}

// DockerClient talks to the local dockerd ($DOCKER_HOST or its socket); version negotiation settles on the
// daemon's API (1.41 on bookworm).
func DockerClient() (*client.Client, error) {
	c, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		return nil, fmt.Errorf("docker client: %w", err)
	}
	return c, nil
}

// Pass builds the agent's pass over m once config, identity and the cluster interface are known
// (firstboot.Options.Reconcilers).
func (m Machine) Pass(env firstboot.Env) (state.Pass, error) {
	units := m.Units
	if units == nil {
		conn, err := sdunit.Connect(context.Background())
		if err != nil {
			return state.Pass{}, fmt.Errorf("reconcilers: systemd: %w", err)
		}
		units = conn
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
			ScriptPath:     FirewallScript,
			PersistPath:    firewall.PersistPath,
		}, log.With("reconciler", "firewall")),
		Swarm:   swarm.New(m.Docker, log.With("reconciler", "swarm")),
		Gluster: gluster.New(gluster.NewCLI(gluster.HostRunner), units, "", log.With("reconciler", "gluster")),
		VRRP:    vrrp.New(units, nl, vrrp.ConfigPath, log.With("reconciler", "vrrp")),
	}, nil
}

// Run is the whole agent on m: firstboot.Run over m's pass (opts.Reconcilers is set here), with keepalived's
// health reporter beside it. The reporter runs on its own goroutine because it must keep ticking while a pass
// is blocked on a slow gluster or docker call.
func Run(ctx context.Context, m Machine, opts firstboot.Options) error {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(ctx)
	health := &vrrp.HealthReporter{Docker: m.Docker, Log: opts.Logger.With("component", "vrrp-health")}
	done := make(chan struct{})
	go func() { defer close(done); health.Run(ctx) }()
	defer func() { cancel(); <-done }()
	opts.Reconcilers = m.Pass
	return firstboot.Run(ctx, opts)
}

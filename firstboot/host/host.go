// Package host wires the node agent to the machine it runs on: the reconcilers of a pass over the local
// nftables, dockerd, glusterd and keepalived, and keepalived's health input beside the reconcile loop.
// kiln-firstboot run uses it with systemd; the whole-agent benchmark with a unit manager of its own.
package host

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"

	"github.com/docker/docker/client"
	"github.com/vishvananda/netlink"

	"github.com/kiln-project/kiln/cloud/aws/ec2node"
	"github.com/kiln-project/kiln/firstboot"
	"github.com/kiln-project/kiln/firstboot/awsvip"
	"github.com/kiln-project/kiln/firstboot/config"
	"github.com/kiln-project/kiln/firstboot/discovery"
	"github.com/kiln-project/kiln/firstboot/firewall"
	"github.com/kiln-project/kiln/firstboot/gluster"
	"github.com/kiln-project/kiln/firstboot/ingress"
	"github.com/kiln-project/kiln/firstboot/netif"
	"github.com/kiln-project/kiln/firstboot/preload"
	"github.com/kiln-project/kiln/firstboot/sdunit"
	"github.com/kiln-project/kiln/firstboot/stacks"
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
	// AWS is this instance's handle on EC2, for peers by tag and the VIP in the VPC; nil makes one when the
	// config asks for either: IMDS at 169.254.169.254, the instance role, the config's aws.endpoint.
	AWS *ec2node.Node
	// IMDSEndpoint is the instance metadata service the EC2 handle asks for its region, interface and role
	// ("": 169.254.169.254; tests).
	IMDSEndpoint string

	// ec2 holds the handle made from the config, so the peer source and the VIP reconciler share one region
	// lookup and one client (Run sets it; nil makes a handle per use).
	ec2 *ec2Handles
}

// ec2Handles makes one EC2 handle per endpoint.
type ec2Handles struct {
	mu sync.Mutex
	by map[string]*ec2node.Node
}

func (h *ec2Handles) get(o ec2node.Options) *ec2node.Node {
	h.mu.Lock()
	defer h.mu.Unlock()
	if n, ok := h.by[o.Endpoint]; ok {
		return n
	}
	if h.by == nil {
		h.by = map[string]*ec2node.Node{}
	}
	n := ec2node.New(o)
	h.by[o.Endpoint] = n
	return n
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
	storage := gluster.New(gluster.NewCLI(gluster.HostRunner), units, "", log.With("reconciler", "gluster"))
	return state.Pass{
		Firewall: firewall.New(firewall.HostNFT, firewall.Options{
			DiscoveryPorts: []uint16{discovery.GossipPort, discovery.BeaconPort},
			StaticPeers:    env.Config.Cluster.Peers,
			ScriptPath:     FirewallScript,
			PersistPath:    firewall.PersistPath,
		}, log.With("reconciler", "firewall")),
		StorageReport: storage.Reporter(),
		Swarm:         swarm.New(m.Docker, log.With("reconciler", "swarm")),
		Gluster:       storage,
		Ingress:       m.ingress(env),
		Stacks:        m.stacks(env),
		VRRP:          vrrp.New(units, nl, vrrp.ConfigPath, log.With("reconciler", "vrrp")),
		CloudVIP:      m.cloudVIP(env, nl),
	}, nil
}

// ingress is the ingress stack's reconciler when the config has an ingress section, else nil (a cluster
// without one runs exactly the pass it ran before ingress existed).
func (m Machine) ingress(env firstboot.Env) state.Reconciler {
	if env.Config.Ingress == nil {
		return nil
	}
	return ingress.New(m.Docker, env.Config.Ingress, gluster.MountPoint, ingress.MountedFunc(gluster.MountPoint),
		preload.Dir, env.Logger.With("reconciler", ingress.Name))
}

// stacks is the user stacks' reconciler. An image without compose files gets one too: it removes the stacks
// an earlier image deployed (a quiet check on the leader, once a minute).
func (m Machine) stacks(env firstboot.Env) state.Reconciler {
	files, err := stacks.Files(stacks.Dir)
	if err != nil {
		env.Logger.Error("user stacks not deployed", "err", err)
		return nil
	}
	return stacks.New(m.Docker, files, gluster.MountPoint, ingress.MountedFunc(gluster.MountPoint), env.Logger.With("reconciler", stacks.Name))
}

// cloudVIP is the AWS VIP reconciler when the config asks for it (cluster.vip_aws), else nil.
func (m Machine) cloudVIP(env firstboot.Env, nl *netlink.Handle) state.Reconciler {
	if !env.Config.Cluster.VIPAWS {
		return nil
	}
	holds := func(dev string, vip netip.Addr) (bool, error) { return netif.Carries(nl, dev, vip) }
	return awsvip.New(m.aws(env.Config), holds, env.Logger.With("reconciler", awsvip.Name))
}

// aws is the EC2 handle for config c: Machine.AWS when set, else one for c's aws.endpoint.
func (m Machine) aws(c *config.Config) *ec2node.Node {
	if m.AWS != nil {
		return m.AWS
	}
	o := ec2node.Options{Endpoint: c.AWS.Endpoint, IMDSEndpoint: m.IMDSEndpoint}
	if m.ec2 == nil {
		return ec2node.New(o)
	}
	return m.ec2.get(o)
}

// peerSource lists the EC2 instances of cluster.discovery.aws_tag; nil when the config names no tag.
func (m Machine) peerSource(c *config.Config) discovery.PeerSource {
	t := c.Cluster.Discovery.AWSTag
	if t.IsZero() {
		return nil
	}
	return &ec2node.TagPeers{Node: m.aws(c), Key: t.Key, Value: t.Value}
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
	if m.AWS == nil && m.ec2 == nil {
		m.ec2 = &ec2Handles{}
	}
	opts.Reconcilers = m.Pass
	if opts.PeerSource == nil {
		opts.PeerSource = m.peerSource
	}
	return firstboot.Run(ctx, opts)
}

package compose

import (
	"fmt"
	"maps"
	"path/filepath"
	"strconv"
	"time"

	"github.com/compose-spec/compose-go/v2/types"
	"github.com/docker/docker/api/types/mount"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/swarm"

	"github.com/kiln-project/kiln/firstboot/stack"
)

// UserStackLabel marks the services and networks of the spec's user stacks (besides stack.ManagedLabel), so
// the reconciler can tell a stack dropped from the image from kiln's own stacks and remove it.
const UserStackLabel = "kiln.user-stack"

// Convert turns a loaded project into the stack the agent deploys, as `docker stack deploy` would: services
// named <stack>_<service>, networks <stack>_<network> (overlay unless a driver is given), external networks
// (the ingress stack's kiln-ingress) used by name, named volumes as <stack>_<volume>. Pure.
func Convert(p *types.Project) (stack.Spec, error) {
	spec := stack.Spec{Name: p.Name}
	netName := map[string]string{} // compose key → swarm name
	for _, key := range sortedKeys(p.Networks) {
		n := p.Networks[key]
		name := n.Name
		if name == "" {
			name = p.Name + "_" + key
		}
		netName[key] = name
		if n.External {
			continue // created by someone else; never by this stack
		}
		driver := n.Driver
		if driver == "" {
			driver = "overlay"
		}
		labels := maps.Clone(map[string]string(n.Labels))
		if labels == nil {
			labels = map[string]string{}
		}
		labels[UserStackLabel] = "true"
		spec.NetworkNames = append(spec.NetworkNames, name)
		spec.Networks = append(spec.Networks, network.CreateOptions{Driver: driver, Attachable: n.Attachable,
			Options: map[string]string(n.DriverOpts), Labels: labels})
	}
	for _, key := range sortedKeys(p.Services) {
		s := p.Services[key]
		svc, err := service(p, s, netName)
		if err != nil {
			return stack.Spec{}, fmt.Errorf("services.%s: %w", key, err)
		}
		svc.Labels = maps.Clone(svc.Labels)
		if svc.Labels == nil {
			svc.Labels = map[string]string{}
		}
		svc.Labels[UserStackLabel] = "true"
		spec.Services = append(spec.Services, stack.WithHash(p.Name, svc))
	}
	return spec, nil
}

func service(p *types.Project, s types.ServiceConfig, netName map[string]string) (swarm.ServiceSpec, error) {
	c := &swarm.ContainerSpec{
		Image:    s.Image,
		Command:  []string(s.Entrypoint),
		Args:     []string(s.Command),
		Dir:      s.WorkingDir,
		User:     s.User,
		Hostname: s.Hostname,
		Labels:   map[string]string(s.Labels),
	}
	for _, k := range sortedKeys(s.Environment) {
		if v := s.Environment[k]; v != nil {
			c.Env = append(c.Env, k+"="+*v)
		} else {
			c.Env = append(c.Env, k) // "FOO" alone: the container gets no value, as compose without an env
		}
	}
	for i, v := range s.Volumes {
		m := mount.Mount{Target: v.Target, ReadOnly: v.ReadOnly}
		switch v.Type {
		case types.VolumeTypeBind:
			if !filepath.IsAbs(v.Source) {
				return swarm.ServiceSpec{}, fmt.Errorf("volumes[%d]: bind source %q: want an absolute path on the nodes (e.g. under /var/data, the replicated volume)", i, v.Source)
			}
			m.Type, m.Source = mount.TypeBind, v.Source
		case types.VolumeTypeVolume:
			m.Type = mount.TypeVolume
			if v.Source != "" {
				vol, ok := p.Volumes[v.Source]
				if !ok {
					return swarm.ServiceSpec{}, fmt.Errorf("volumes[%d]: volume %q is not declared under volumes", i, v.Source)
				}
				m.Source = vol.Name
				if m.Source == "" {
					m.Source = p.Name + "_" + v.Source
				}
				m.VolumeOptions = &mount.VolumeOptions{Labels: map[string]string{stack.StackLabel: p.Name}}
				if !vol.External && vol.Driver != "" {
					m.VolumeOptions.DriverConfig = &mount.Driver{Name: vol.Driver, Options: map[string]string(vol.DriverOpts)}
				}
			}
		default:
			return swarm.ServiceSpec{}, fmt.Errorf("volumes[%d]: type %q: only bind and volume", i, v.Type)
		}
		c.Mounts = append(c.Mounts, m)
	}
	spec := swarm.ServiceSpec{
		Annotations:  swarm.Annotations{Name: p.Name + "_" + s.Name},
		TaskTemplate: swarm.TaskSpec{ContainerSpec: c},
		Mode:         swarm.ServiceMode{Replicated: &swarm.ReplicatedService{Replicas: ptr(uint64(1))}},
		EndpointSpec: &swarm.EndpointSpec{Mode: swarm.ResolutionModeVIP},
	}
	for _, key := range sortedKeys(s.Networks) {
		att := swarm.NetworkAttachmentConfig{Target: netName[key]}
		if n := s.Networks[key]; n != nil {
			att.Aliases = n.Aliases
		}
		if att.Target == "" {
			return swarm.ServiceSpec{}, fmt.Errorf("networks.%s: not declared under networks", key)
		}
		spec.TaskTemplate.Networks = append(spec.TaskTemplate.Networks, att)
	}
	for i, pc := range s.Ports {
		port := swarm.PortConfig{TargetPort: pc.Target, Protocol: swarm.PortConfigProtocol(pc.Protocol), PublishMode: swarm.PortConfigPublishModeIngress}
		if port.Protocol == "" {
			port.Protocol = swarm.PortConfigProtocolTCP
		}
		if pc.Mode == "host" {
			port.PublishMode = swarm.PortConfigPublishModeHost
		}
		if pc.Published != "" {
			n, err := strconv.ParseUint(pc.Published, 10, 16)
			if err != nil {
				return swarm.ServiceSpec{}, fmt.Errorf("ports[%d]: published %q: one port, not a range", i, pc.Published)
			}
			port.PublishedPort = uint32(n)
		}
		spec.EndpointSpec.Ports = append(spec.EndpointSpec.Ports, port)
	}
	if d := s.Deploy; d != nil {
		if err := deploy(&spec, d); err != nil {
			return swarm.ServiceSpec{}, err
		}
	}
	return spec, nil
}

func deploy(spec *swarm.ServiceSpec, d *types.DeployConfig) error {
	spec.Labels = map[string]string(d.Labels)
	switch d.Mode {
	case "", "replicated":
		if d.Replicas != nil {
			if *d.Replicas < 0 {
				return fmt.Errorf("deploy.replicas: %d", *d.Replicas)
			}
			spec.Mode.Replicated.Replicas = ptr(uint64(*d.Replicas))
		}
	case "global":
		spec.Mode = swarm.ServiceMode{Global: &swarm.GlobalService{}}
	default:
		return fmt.Errorf("deploy.mode %q: only replicated and global", d.Mode)
	}
	switch d.EndpointMode {
	case "", "vip":
	case "dnsrr":
		spec.EndpointSpec.Mode = swarm.ResolutionModeDNSRR
	default:
		return fmt.Errorf("deploy.endpoint_mode %q: only vip and dnsrr", d.EndpointMode)
	}
	if len(d.Placement.Constraints) > 0 {
		spec.TaskTemplate.Placement = &swarm.Placement{Constraints: d.Placement.Constraints}
	}
	if r := d.RestartPolicy; r != nil {
		rp := &swarm.RestartPolicy{Condition: swarm.RestartPolicyCondition(r.Condition), MaxAttempts: r.MaxAttempts}
		switch rp.Condition {
		case "", swarm.RestartPolicyConditionAny, swarm.RestartPolicyConditionNone, swarm.RestartPolicyConditionOnFailure:
		default:
			return fmt.Errorf("deploy.restart_policy.condition %q: none, on-failure or any", r.Condition)
		}
		if r.Delay != nil {
			rp.Delay = ptr(time.Duration(*r.Delay))
		}
		if r.Window != nil {
			rp.Window = ptr(time.Duration(*r.Window))
		}
		spec.TaskTemplate.RestartPolicy = rp
	}
	if u := d.UpdateConfig; u != nil {
		uc := &swarm.UpdateConfig{Delay: time.Duration(u.Delay), Order: u.Order, FailureAction: u.FailureAction}
		if u.Parallelism != nil {
			uc.Parallelism = *u.Parallelism
		}
		spec.UpdateConfig = uc
	}
	return nil
}

func ptr[T any](v T) *T { return &v }

// Package stack keeps a set of swarm services and overlay networks as a spec says, the way `docker stack
// deploy` would, for the stacks the agent owns (the ingress stack, the spec's user stacks): observe the
// services and networks carrying the stack's label, plan (pure) what to create, update or remove, act.
// A desired service carries the hash of its spec in a label, so a changed spec is one update and an
// unchanged one no call at all; a deleted service is created again on the next pass.
package stack

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/swarm"
	"github.com/kiln-project/kiln/firstboot/state"
)

// Labels kiln puts on what it deploys.
const (
	// StackLabel names the owning stack (the label `docker stack deploy` uses, so `docker stack ls` and
	// `docker stack ps NAME` show kiln's stacks too).
	StackLabel = "com.docker.stack.namespace"
	// HashLabel is the sha256 of the service's spec as kiln rendered it (without this label).
	HashLabel = "kiln.spec-hash"
	// ManagedLabel marks what the agent owns: it never touches a service or network without it.
	ManagedLabel = "kiln.managed"
)

// Spec is a stack as the agent wants it.
type Spec struct {
	// Name is the stack's name; every service and network is named <Name>_<short name>, as stack deploy
	// names them, unless its name already has that prefix.
	Name string
	// Networks are overlay networks the services attach to (by full name).
	Networks []network.CreateOptions
	// NetworkNames are the full names of Networks, in the same order.
	NetworkNames []string
	// Services are the stack's services, by full name.
	Services []swarm.ServiceSpec
}

// Observed is what the swarm holds of a stack: its services and networks with kiln's label.
type Observed struct {
	Services []swarm.Service
	Networks []network.Summary
}

// ActionKind says what Apply does with one object.
type ActionKind string

// The actions a plan holds.
const (
	CreateNetwork ActionKind = "create network"
	CreateService ActionKind = "create service"
	UpdateService ActionKind = "update service"
	RemoveService ActionKind = "remove service"
)

// Action is one step of a plan.
type Action struct {
	Kind ActionKind
	Name string
	// Why says what differs (for logs and the status line).
	Why string
	// ID and Version identify the observed service (update, remove).
	ID      string
	Version swarm.Version
	Service swarm.ServiceSpec
	Network network.CreateOptions
}

// WithHash returns spec labelled with its stack, kiln's mark and the hash of everything else in it.
func WithHash(stackName string, spec swarm.ServiceSpec) swarm.ServiceSpec {
	labels := maps.Clone(spec.Labels)
	if labels == nil {
		labels = map[string]string{}
	}
	delete(labels, HashLabel)
	labels[StackLabel] = stackName
	labels[ManagedLabel] = "true"
	spec.Labels = labels
	b, err := json.Marshal(spec) // struct fields in order, map keys sorted: the same spec, the same bytes
	if err != nil {
		panic(fmt.Sprintf("stack: a service spec does not marshal: %v", err)) // only plain data in it
	}
	sum := sha256.Sum256(b)
	labels = maps.Clone(labels)
	labels[HashLabel] = hex.EncodeToString(sum[:])
	spec.Labels = labels
	return spec
}

// Plan compares what the swarm holds with the desired stack (each service already WithHash). Pure.
// Networks are created, never changed or removed (a network in use cannot be removed, and options of an
// existing network cannot change: a changed network is a human decision). Services are created when
// missing, updated when their hash label differs or the swarm changed their replica count (`docker service
// scale` on a single-writer service), removed when the stack no longer has them.
func Plan(obs Observed, want Spec) []Action {
	var out []Action
	haveNet := map[string]bool{}
	for _, n := range obs.Networks {
		haveNet[n.Name] = true
	}
	for i, name := range want.NetworkNames {
		if !haveNet[name] {
			opts := want.Networks[i]
			opts.Labels = maps.Clone(opts.Labels)
			if opts.Labels == nil {
				opts.Labels = map[string]string{}
			}
			opts.Labels[StackLabel], opts.Labels[ManagedLabel] = want.Name, "true"
			out = append(out, Action{Kind: CreateNetwork, Name: name, Network: opts, Why: "missing"})
		}
	}
	have := map[string]swarm.Service{}
	for _, s := range obs.Services {
		have[s.Spec.Name] = s
	}
	wanted := map[string]bool{}
	for _, spec := range want.Services {
		wanted[spec.Name] = true
		cur, ok := have[spec.Name]
		switch {
		case !ok:
			out = append(out, Action{Kind: CreateService, Name: spec.Name, Service: spec, Why: "missing"})
		case cur.Spec.Labels[HashLabel] != spec.Labels[HashLabel]:
			out = append(out, Action{Kind: UpdateService, Name: spec.Name, ID: cur.ID, Version: cur.Version, Service: spec, Why: "spec changed"})
		case replicas(cur.Spec) != replicas(spec):
			out = append(out, Action{Kind: UpdateService, Name: spec.Name, ID: cur.ID, Version: cur.Version, Service: spec,
				Why: fmt.Sprintf("%d replicas, want %d", replicas(cur.Spec), replicas(spec))})
		}
	}
	var gone []string
	for name := range have {
		if !wanted[name] {
			gone = append(gone, name)
		}
	}
	slices.Sort(gone)
	for _, name := range gone {
		out = append(out, Action{Kind: RemoveService, Name: name, ID: have[name].ID, Why: "no longer in the stack"})
	}
	return out
}

func replicas(s swarm.ServiceSpec) int64 {
	if s.Mode.Replicated == nil || s.Mode.Replicated.Replicas == nil {
		return -1 // global or unset: compared as is
	}
	return int64(*s.Mode.Replicated.Replicas)
}

// DockerAPI is the part of the Docker client a stack needs (*client.Client satisfies it).
type DockerAPI interface {
	ServiceList(ctx context.Context, options swarm.ServiceListOptions) ([]swarm.Service, error)
	ServiceCreate(ctx context.Context, service swarm.ServiceSpec, options swarm.ServiceCreateOptions) (swarm.ServiceCreateResponse, error)
	ServiceUpdate(ctx context.Context, serviceID string, version swarm.Version, service swarm.ServiceSpec, options swarm.ServiceUpdateOptions) (swarm.ServiceUpdateResponse, error)
	ServiceRemove(ctx context.Context, serviceID string) error
	NetworkList(ctx context.Context, options network.ListOptions) ([]network.Summary, error)
	NetworkCreate(ctx context.Context, name string, options network.CreateOptions) (network.CreateResponse, error)
}

// Observe lists the stack's services (with their running task counts) and networks.
func Observe(ctx context.Context, docker DockerAPI, name string) (Observed, error) {
	f := filters.NewArgs(filters.Arg("label", StackLabel+"="+name), filters.Arg("label", ManagedLabel))
	svcs, err := docker.ServiceList(ctx, swarm.ServiceListOptions{Filters: f, Status: true})
	if err != nil {
		return Observed{}, fmt.Errorf("stack %s: list services: %w", name, err)
	}
	nets, err := docker.NetworkList(ctx, network.ListOptions{Filters: f})
	if err != nil {
		return Observed{}, fmt.Errorf("stack %s: list networks: %w", name, err)
	}
	return Observed{Services: svcs, Networks: nets}, nil
}

// Apply carries out a plan. A create that finds its object already there (another manager's create won the
// race) is not an error: the next pass observes it. QueryRegistry is off: preloaded images are in no
// registry, and nodes resolve a tag themselves.
func Apply(ctx context.Context, docker DockerAPI, actions []Action) error {
	for _, a := range actions {
		var err error
		switch a.Kind {
		case CreateNetwork:
			_, err = docker.NetworkCreate(ctx, a.Name, a.Network)
		case CreateService:
			_, err = docker.ServiceCreate(ctx, a.Service, swarm.ServiceCreateOptions{QueryRegistry: false})
		case UpdateService:
			_, err = docker.ServiceUpdate(ctx, a.ID, a.Version, a.Service, swarm.ServiceUpdateOptions{QueryRegistry: false})
		case RemoveService:
			err = docker.ServiceRemove(ctx, a.ID)
		default:
			err = fmt.Errorf("unknown action")
		}
		if err == nil || (a.Kind == CreateNetwork || a.Kind == CreateService) && exists(err) {
			continue
		}
		return fmt.Errorf("stack: %s %s: %w", a.Kind, a.Name, err)
	}
	return nil
}

func exists(err error) bool {
	return cerrdefs.IsConflict(err) || cerrdefs.IsAlreadyExists(err) || strings.Contains(err.Error(), "already exists")
}

// Ready is how a stack reconciler's pass starts: it waits, reporting under name, until the swarm is active and
// the volume at mountPoint is mounted (services keep their state there), then reports whether this node is the
// swarm's leader (State.Swarm.Leader, from the swarm reconciler's node list of this pass). goOn is false when
// the pass ends here.
func Ready(s *state.State, name, mountPoint string, mounted func() (bool, error)) (leader, goOn bool, err error) {
	if !s.Swarm.Active {
		s.Wait(name, "waiting for the swarm")
		return false, false, nil
	}
	if ok, err := mounted(); err != nil {
		return false, false, fmt.Errorf("%s: %w", name, err)
	} else if !ok {
		s.Wait(name, "waiting for the volume at "+mountPoint)
		return false, false, nil
	}
	return s.Swarm.Leader, true, nil
}

// Summary is one line about the stack's services: "name 1/1, other 0/2".
func Summary(obs Observed) string {
	var parts []string
	svcs := slices.Clone(obs.Services)
	slices.SortFunc(svcs, func(a, b swarm.Service) int { return strings.Compare(a.Spec.Name, b.Spec.Name) })
	for _, s := range svcs {
		if s.ServiceStatus != nil {
			parts = append(parts, fmt.Sprintf("%s %d/%d", s.Spec.Name, s.ServiceStatus.RunningTasks, s.ServiceStatus.DesiredTasks))
		} else {
			parts = append(parts, s.Spec.Name)
		}
	}
	if len(parts) == 0 {
		return "no service"
	}
	return strings.Join(parts, ", ")
}

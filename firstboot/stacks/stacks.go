// Package stacks is the user stacks' reconciler: the compose files baked into the image (spec stacks,
// /usr/lib/kiln/stacks/<name>.yaml) deployed on the swarm once it has formed and the volume is mounted, and
// kept as the files say, like the ingress stack; a stack the image no longer has is removed (docs/ingress.md,
// "User stacks").
package stacks

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/swarm"

	"github.com/kiln-project/kiln/firstboot/compose"
	"github.com/kiln-project/kiln/firstboot/stack"
	"github.com/kiln-project/kiln/firstboot/state"
)

// Name is the reconciler's name in the status.
const Name = "stacks"

// Dir is where the image holds the compose files (docs/design.md, "Paths inside a node").
const Dir = "/usr/lib/kiln/stacks"

// Files lists dir's compose files by stack name; none (or no dir) is an empty map.
func Files(dir string) (map[string]string, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return map[string]string{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("stacks: %w", err)
	}
	out := map[string]string{}
	for _, e := range entries {
		if name, ok := strings.CutSuffix(e.Name(), ".yaml"); ok && e.Type().IsRegular() {
			out[name] = filepath.Join(dir, e.Name())
		}
	}
	return out, nil
}

// DockerAPI is what the reconciler needs from dockerd: a stack's calls, and removing a dropped stack's
// networks.
type DockerAPI interface {
	stack.DockerAPI
	NetworkRemove(ctx context.Context, networkID string) error
}

// sweepEvery is how often the leader looks for stacks dropped from the image. Dropping one comes with a new
// image (a reimage or an upgrade restarts the agent, which sweeps at its first pass as leader), so a minute
// is plenty and an image without stacks costs the swarm almost nothing.
const sweepEvery = time.Minute

// Reconciler deploys and keeps the user stacks, and removes those the image no longer has.
type Reconciler struct {
	docker     DockerAPI
	files      map[string]string
	mountPoint string
	mounted    func() (bool, error)
	log        *slog.Logger
	// swept is when the leader last looked for dropped stacks; pending names those still being removed
	// (a network stays until its tasks are gone), shown in the status.
	swept   time.Time
	pending []string
	now     func() time.Time
}

// New returns the reconciler for files (stack name → compose file; empty: the image has none, and the
// reconciler only removes stacks an earlier image deployed).
func New(docker DockerAPI, files map[string]string, mountPoint string, mounted func() (bool, error), log *slog.Logger) *Reconciler {
	return &Reconciler{docker: docker, files: files, mountPoint: mountPoint, mounted: mounted, log: log, now: time.Now}
}

// Name implements state.Reconciler.
func (*Reconciler) Name() string { return Name }

// Reconcile implements state.Reconciler. The files were checked at build time; one that fails here all the
// same (a newer agent on an old image) is reported and the other stacks still deploy.
func (r *Reconciler) Reconcile(ctx context.Context, s *state.State) (bool, error) {
	if len(r.files) == 0 {
		return r.sweepOnly(ctx, s)
	}
	leader, goOn, err := stack.Ready(s, Name, r.mountPoint, r.mounted)
	if err != nil || !goOn {
		return false, err
	}
	names := make([]string, 0, len(r.files))
	for n := range r.files {
		names = append(names, n)
	}
	slices.Sort(names)
	changed := false
	var errs []error
	var lines []string
	for _, name := range names {
		line, ch, err := r.one(ctx, name, leader)
		changed = changed || ch
		if err != nil {
			errs = append(errs, err)
			line = "error"
		}
		lines = append(lines, name+": "+line)
	}
	if leader {
		ch, err := r.sweep(ctx)
		changed = changed || ch
		if err != nil {
			errs = append(errs, err)
		}
	}
	for _, name := range r.pending {
		lines = append(lines, name+": removing")
	}
	s.Set(Name, strings.Join(lines, "; "))
	return changed, errors.Join(errs...)
}

// sweepOnly is a pass on an image without stacks: nothing to wait for or report, unless the leader finds
// stacks an earlier image deployed, which it removes.
func (r *Reconciler) sweepOnly(ctx context.Context, s *state.State) (bool, error) {
	if !s.Swarm.Active || (r.pending == nil && r.now().Sub(r.swept) < sweepEvery) {
		return false, nil
	}
	if !s.Swarm.Leader {
		return false, nil
	}
	changed, err := r.sweep(ctx)
	if len(r.pending) > 0 {
		lines := make([]string, 0, len(r.pending))
		for _, name := range r.pending {
			lines = append(lines, name+": removing")
		}
		s.Set(Name, strings.Join(lines, "; "))
	}
	return changed, err
}

// sweep removes the user stacks (compose.UserStackLabel) whose name is not among the files, as `docker stack
// rm` would: services first, then networks, which swarm refuses while tasks still use them; a refused
// network is tried again on the next sweep (a stack being removed is swept at every pass). At most once per
// sweepEvery while nothing is being removed.
func (r *Reconciler) sweep(ctx context.Context) (bool, error) {
	if r.pending == nil && r.now().Sub(r.swept) < sweepEvery {
		return false, nil
	}
	r.swept = r.now()
	f := filters.NewArgs(filters.Arg("label", stack.ManagedLabel), filters.Arg("label", compose.UserStackLabel))
	svcs, err := r.docker.ServiceList(ctx, swarm.ServiceListOptions{Filters: f})
	if err != nil {
		return false, fmt.Errorf("stacks: list services: %w", err)
	}
	nets, err := r.docker.NetworkList(ctx, network.ListOptions{Filters: f})
	if err != nil {
		return false, fmt.Errorf("stacks: list networks: %w", err)
	}
	plan := PlanSweep(r.files, svcs, nets)
	changed := false
	var errs []error
	for _, svc := range plan.Services {
		r.log.Info("stacks: remove service", "stack", svc.Spec.Labels[stack.StackLabel], "name", svc.Spec.Name, "why", "stack no longer in the image")
		if err := r.docker.ServiceRemove(ctx, svc.ID); err != nil && !cerrdefs.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("stacks: remove service %s: %w", svc.Spec.Name, err))
			continue
		}
		changed = true
	}
	left := map[string]bool{}
	for _, n := range plan.Networks {
		if plan.Busy[n.Labels[stack.StackLabel]] {
			left[n.Labels[stack.StackLabel]] = true
			continue // its services were just removed: their tasks still hold it
		}
		if err := r.docker.NetworkRemove(ctx, n.ID); err != nil && !cerrdefs.IsNotFound(err) {
			// In use until the removed services' tasks are gone: the next sweep tries again.
			r.log.Info("stacks: network not removed yet", "stack", n.Labels[stack.StackLabel], "name", n.Name, "err", err)
			left[n.Labels[stack.StackLabel]] = true
			continue
		}
		r.log.Info("stacks: removed network", "stack", n.Labels[stack.StackLabel], "name", n.Name, "why", "stack no longer in the image")
		changed = true
	}
	r.pending = nil
	for name := range left {
		r.pending = append(r.pending, name)
	}
	slices.Sort(r.pending)
	return changed, errors.Join(errs...)
}

// Sweep is what a sweep removes: the services and networks of user stacks not among files. Busy names the
// stacks that still had services, whose networks are left for a later sweep. Pure.
type Sweep struct {
	Services []swarm.Service
	Networks []network.Summary
	Busy     map[string]bool
}

// PlanSweep plans a sweep over the observed user-stack services and networks. Pure.
func PlanSweep(files map[string]string, svcs []swarm.Service, nets []network.Summary) Sweep {
	p := Sweep{Busy: map[string]bool{}}
	dropped := func(labels map[string]string) (string, bool) {
		name := labels[stack.StackLabel]
		if labels[compose.UserStackLabel] == "" || labels[stack.ManagedLabel] == "" || name == "" {
			return "", false // not a user stack kiln deployed: never touched
		}
		_, kept := files[name]
		return name, !kept
	}
	for _, s := range svcs {
		if name, ok := dropped(s.Spec.Labels); ok {
			p.Services = append(p.Services, s)
			p.Busy[name] = true
		}
	}
	for _, n := range nets {
		if _, ok := dropped(n.Labels); ok {
			p.Networks = append(p.Networks, n)
		}
	}
	slices.SortFunc(p.Services, func(a, b swarm.Service) int { return strings.Compare(a.Spec.Name, b.Spec.Name) })
	slices.SortFunc(p.Networks, func(a, b network.Summary) int { return strings.Compare(a.Name, b.Name) })
	return p
}

func (r *Reconciler) one(ctx context.Context, name string, leader bool) (string, bool, error) {
	obs, err := stack.Observe(ctx, r.docker, name)
	if err != nil {
		if !leader {
			return "deployed by the swarm leader", false, nil // a worker has no swarm API
		}
		return "", false, fmt.Errorf("stacks: %w", err)
	}
	if !leader {
		return stack.Summary(obs), false, nil
	}
	data, err := os.ReadFile(r.files[name])
	if err != nil {
		return "", false, fmt.Errorf("stacks: %w", err)
	}
	p, err := compose.Load(ctx, name, r.files[name], data)
	if err != nil {
		return "", false, fmt.Errorf("stacks: %w", err)
	}
	want, err := compose.Convert(p)
	if err != nil {
		return "", false, fmt.Errorf("stacks: %s: %w", r.files[name], err)
	}
	plan := stack.Plan(obs, want)
	for _, a := range plan {
		r.log.Info("stacks: "+string(a.Kind), "stack", name, "name", a.Name, "why", a.Why)
	}
	if err := stack.Apply(ctx, r.docker, plan); err != nil {
		return "", false, fmt.Errorf("stacks: %s: %w", name, err)
	}
	if len(plan) > 0 {
		if obs, err = stack.Observe(ctx, r.docker, name); err != nil {
			return "", true, fmt.Errorf("stacks: %w", err)
		}
	}
	return stack.Summary(obs), len(plan) > 0, nil
}

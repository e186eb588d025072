// Package stacks is the user stacks' reconciler: the compose files baked into the image (spec stacks,
// /usr/lib/kiln/stacks/<name>.yaml) deployed on the swarm once it has formed and the volume is mounted, and
// kept as the files say, like the ingress stack (docs/ingress.md, "User stacks").
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

// Reconciler deploys and keeps the user stacks.
type Reconciler struct {
	docker     stack.DockerAPI
	files      map[string]string
	mountPoint string
	mounted    func() (bool, error)
	log        *slog.Logger
}

// New returns the reconciler for files (stack name → compose file, non-empty: an image without stacks has no
// reconciler).
func New(docker stack.DockerAPI, files map[string]string, mountPoint string, mounted func() (bool, error), log *slog.Logger) *Reconciler {
	return &Reconciler{docker: docker, files: files, mountPoint: mountPoint, mounted: mounted, log: log}
}

// Name implements state.Reconciler.
func (*Reconciler) Name() string { return Name }

// Reconcile implements state.Reconciler. The files were checked at build time; one that fails here all the
// same (a newer agent on an old image) is reported and the other stacks still deploy.
func (r *Reconciler) Reconcile(ctx context.Context, s *state.State) (bool, error) {
	leader, goOn, err := stack.Ready(ctx, s, Name, r.docker, r.mountPoint, r.mounted)
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
	s.Set(Name, strings.Join(lines, "; "))
	return changed, errors.Join(errs...)
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

package images

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/kiln-project/kiln/builder"
	"github.com/kiln-project/kiln/builder/spec"
)

// CompileStage is the compile stage: the binaries of preloaded images built from Go modules (Traefik), one
// file per version in its output. It reads no other stage's output (builder.Needer: it needs nothing), so
// on a cold build the minutes of Go compiling run while the packages stage installs the package tree; the
// images stage then assembles the archives from these binaries and the tree's CA bundle.
type CompileStage struct {
	spec *spec.Spec
}

// NewCompile returns the compile stage for s.
func NewCompile(s *spec.Spec) builder.Stage { return &CompileStage{spec: s} }

// Name implements builder.Stage.
func (*CompileStage) Name() string { return "compile" }

// Needs implements builder.Needer: nothing.
func (*CompileStage) Needs() []string { return nil }

// Inputs implements builder.Stage: per Traefik version, the Go that compiles it and the source patches. A spec
// without Traefik has no inputs and an empty output.
func (st *CompileStage) Inputs(ctx context.Context) (map[string]string, error) {
	in := map[string]string{}
	for i, p := range st.spec.Preload {
		if p.Traefik == "" {
			continue
		}
		goVersion, err := goVersion(ctx)
		if err != nil {
			return nil, fmt.Errorf("compile: preload[%d] (traefik %s): %w", i, p.Traefik, err)
		}
		in["traefik "+p.Traefik] = goVersion + " patches " + sourcePatches
	}
	return in, nil
}

// Run implements builder.Stage.
func (st *CompileStage) Run(ctx context.Context, env *builder.Env, dir string) error {
	defer func() { _ = os.RemoveAll(filepath.Join(dir, ".work")) }()
	for i, p := range st.spec.Preload {
		if p.Traefik == "" {
			continue
		}
		if _, err := os.Stat(filepath.Join(dir, traefikBinary(p.Traefik))); err == nil {
			continue // listed twice
		}
		env.Progress(float64(i)/float64(len(st.spec.Preload)), "traefik "+p.Traefik)
		if err := buildTraefik(ctx, env, dir, p.Traefik); err != nil {
			return fmt.Errorf("compile: preload[%d]: %w", i, err)
		}
	}
	env.Progress(1, "done")
	return nil
}

// traefikBinary is the compile stage's file for a Traefik version.
func traefikBinary(version string) string { return "traefik-" + version }

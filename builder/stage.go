// Package builder turns an image spec into bootable artifacts through a pipeline of cached stages.
package builder

import (
	"context"
	"log/slog"
)

// Stage is one step of the pipeline. Its output is a directory in the cache, keyed by the hash of its inputs
// and of its parent's key, so a changed input re-runs this stage and every stage after it, nothing else.
type Stage interface {
	// Name is the stage's short name: packages, base, node, disk, formats.
	Name() string
	// Inputs describes everything that determines the output, as name → content (a value, or a hash of a
	// file or tree). It must be cheap: it runs on every build, cache hit or not.
	Inputs(ctx context.Context) (map[string]string, error)
	// Run produces the output in dir (empty, created by the pipeline). in gives the output directories of the
	// stages already run, by stage name. Run must not write outside dir.
	Run(ctx context.Context, env *Env, dir string) error
}

// Needer is a Stage that names the stages whose outputs it reads. A stage that does not implement it needs
// the stage listed before it (the chain). Its key covers the keys of what it needs, so a change reruns it and
// whatever needs it, and a stage needing nothing still unbuilt starts at once, beside the others: Traefik's
// compile runs while the package tree installs.
type Needer interface {
	Needs() []string
}

// Env is what a running stage may use besides its own inputs.
type Env struct {
	// Outputs maps the name of every stage this one needs, directly or through others, to its output
	// directory in the cache.
	Outputs map[string]string
	// Keys maps an earlier stage's name to its cache key: one hash of everything its output depends on.
	Keys map[string]string
	// Log is the build's logger, already tagged with the stage name.
	Log *slog.Logger
	// Progress reports a fraction done in [0,1] and a short note; never nil.
	Progress func(fraction float64, note string)
	// SourceDateEpoch is the timestamp written wherever a time is recorded (files, filesystems).
	SourceDateEpoch int64
}

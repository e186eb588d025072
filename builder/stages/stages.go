// Package stages is the image pipeline's one explicit list of stages, in order, shared by `kiln build`
// and tests that build real images.
package stages

import (
	"github.com/kiln-project/kiln/builder"
	"github.com/kiln-project/kiln/builder/disk"
	"github.com/kiln-project/kiln/builder/images"
	"github.com/kiln-project/kiln/builder/layers"
	"github.com/kiln-project/kiln/builder/output"
	"github.com/kiln-project/kiln/builder/rootfs"
	"github.com/kiln-project/kiln/builder/spec"
)

// For returns the stages for s: packages → base, compile, then images (packages, compile) → node (base,
// images) → disk → formats. Each stage's cache key includes the keys of the stages it needs (builder.Needer;
// by default the one before it), so these needs are part of the cache contract (docs/builder.md). compile
// needs nothing, so it runs beside packages and base.
func For(s *spec.Spec) []builder.Stage {
	return []builder.Stage{
		rootfs.New(s),        // packages: mmdebstrap tree + packages.tsv
		layers.NewBase(s),    // base: squashfs of the package tree
		images.NewCompile(s), // compile: Go-built binaries of preloaded images (Traefik)
		images.New(s),        // images: preloaded container images (empty without preload)
		layers.NewNode(s),    // node: squashfs of agent, overlays, Ignition, config
		disk.New(s),          // disk: GPT raw image with ESP and both layers
		output.New(s),        // formats: <name>.raw, <name>.qcow2 …
	}
}

// Names lists the stage names in order, for help texts and --rebuild.
var Names = []string{"packages", "base", "compile", "images", "node", "disk", "formats"}

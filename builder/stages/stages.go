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

// For returns packages → base → images → node → disk → formats for s. Each stage's cache key includes the previous
// one's, so the order is part of the cache contract (docs/builder.md).
func For(s *spec.Spec) []builder.Stage {
	return []builder.Stage{
		rootfs.New(s),     // packages: mmdebstrap tree + packages.tsv
		layers.NewBase(s), // base: squashfs of the package tree
		images.New(s),     // images: preloaded container images (empty without preload)
		layers.NewNode(s), // node: squashfs of agent, overlays, Ignition, config
		disk.New(s),       // disk: GPT raw image with ESP and both layers
		output.New(s),     // formats: <name>.raw, <name>.qcow2 …
	}
}

// Names lists the stage names in order, for help texts and --rebuild.
var Names = []string{"packages", "base", "images", "node", "disk", "formats"}

package layers

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/kiln-project/kiln/builder"
	"github.com/kiln-project/kiln/builder/cache"
	"github.com/kiln-project/kiln/builder/rootfs"
	"github.com/kiln-project/kiln/builder/spec"
)

// BaseImage is the base stage's output file.
const BaseImage = "base.squashfs"

// BaseDigest holds the sha256 of BaseImage, written once by the base stage so that the node stage can name the
// base layer in image.json without reading it.
const BaseDigest = "base.squashfs.sha256"

// baseExcludes are left out of the base layer: the initrd is a build product that lives on the ESP (and in
// the packages output); in the layer it would only add ~50 MB of already-compressed data.
var baseExcludes = []string{"boot/initrd.img*"}

// Base is the stage that compresses the package tree into the base layer.
type Base struct {
	spec *spec.Spec
}

// NewBase returns the base stage for s.
func NewBase(s *spec.Spec) builder.Stage { return &Base{spec: s} }

// Name implements builder.Stage.
func (*Base) Name() string { return "base" }

// Inputs implements builder.Stage. The tree itself is covered by the packages stage's key (the parent).
func (b *Base) Inputs(ctx context.Context) (map[string]string, error) {
	v, err := mksquashfsVersion(ctx)
	if err != nil {
		return nil, fmt.Errorf("base: %w", err)
	}
	o := b.options(0)
	return map[string]string{
		"compression": o.Compression,
		"level":       strconv.Itoa(o.Level),
		"excludes":    fmt.Sprint(o.Excludes),
		"mksquashfs":  v,
	}, nil
}

func (b *Base) options(epoch int64) squashfsOptions {
	o := squashfsOptions{
		Compression: b.spec.Disk.Compression,
		Level:       b.spec.Disk.CompressionLevel,
		Epoch:       epoch,
		Excludes:    baseExcludes,
	}
	if o.Compression == "" {
		o.Compression = spec.DefaultCompression
	}
	if o.Level == 0 && o.Compression == "zstd" {
		o.Level = spec.DefaultZstdLevel
	}
	return o
}

// Run implements builder.Stage.
func (b *Base) Run(ctx context.Context, env *builder.Env, dir string) error {
	pkgs, ok := env.Outputs["packages"]
	if !ok {
		return fmt.Errorf("base: no output of the packages stage")
	}
	env.Progress(0, "mksquashfs")
	o := b.options(env.SourceDateEpoch)
	env.Log.Info("compressing the package tree", "compression", o.Compression, "level", o.Level)
	img := filepath.Join(dir, BaseImage)
	if err := mksquashfs(ctx, filepath.Join(pkgs, rootfs.TreeDir), img, o); err != nil {
		return fmt.Errorf("base: %w", err)
	}
	sum, err := cache.HashFile(img)
	if err != nil {
		return fmt.Errorf("base: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, BaseDigest), []byte(sum+"\n"), 0o644); err != nil {
		return fmt.Errorf("base: %w", err)
	}
	env.Progress(1, "done")
	return nil
}

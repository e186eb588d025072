// Package layers builds the image's two read-only layers: base (the package tree) and node (kiln's agent,
// overlays and configuration), each a squashfs made by mksquashfs. The boot script stacks node over base.
package layers

import (
	"context"
	"fmt"
	"strconv"

	"github.com/kiln-project/kiln/internal/run"
)

// squashfsOptions are how a layer is compressed and which metadata it keeps.
type squashfsOptions struct {
	// Compression is a mksquashfs compressor (zstd, xz, gzip).
	Compression string
	// Level is the compressor level; 0 leaves mksquashfs's default (xz has no levels).
	Level int
	// Epoch is written as every inode's mtime and as the filesystem's creation time.
	Epoch int64
	// AllRoot makes every file owned by root:root (the node layer: its sources are a user's checkout).
	AllRoot bool
	// Excludes are mksquashfs wildcard patterns, relative to the source, left out of the image.
	Excludes []string
}

// args is the mksquashfs argument list, without source and destination. Reproducible: mksquashfs sorts
// directory entries itself and, given fixed times, writes the same bytes for the same tree whatever the
// thread count (-reproducible is its default; it is spelled out so a differently-built mksquashfs fails loudly).
func (o squashfsOptions) args() []string {
	epoch := strconv.FormatInt(o.Epoch, 10)
	a := []string{
		"-noappend", "-reproducible", "-no-progress", "-quiet",
		"-all-time", epoch, "-mkfs-time", epoch,
		"-xattrs", "-b", "131072",
		"-comp", o.Compression,
	}
	if o.Level > 0 && (o.Compression == "zstd" || o.Compression == "gzip") {
		a = append(a, "-Xcompression-level", strconv.Itoa(o.Level))
	}
	if o.AllRoot {
		a = append(a, "-all-root")
	}
	if len(o.Excludes) > 0 {
		a = append(a, "-wildcards")
		for _, e := range o.Excludes {
			a = append(a, "-e", e)
		}
	}
	return a
}

// mksquashfs writes the tree at src as a squashfs image at dst.
func mksquashfs(ctx context.Context, src, dst string, o squashfsOptions) error {
	args := append([]string{src, dst}, o.args()...)
	if _, err := run.Cmd(ctx, "mksquashfs", args...); err != nil {
		return fmt.Errorf("mksquashfs %s: %w", src, err)
	}
	return nil
}

// mksquashfsVersion is the tool's version line: a different mksquashfs may write different bytes.
func mksquashfsVersion(ctx context.Context) (string, error) {
	out, err := run.Cmd(ctx, "mksquashfs", "-version")
	if err != nil {
		return "", fmt.Errorf("mksquashfs -version: %w", err)
	}
	for i, b := range out {
		if b == '\n' {
			return string(out[:i]), nil
		}
	}
	return string(out), nil
}

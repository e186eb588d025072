// Package output is the formats stage: it writes the disk image in each format the spec lists.
package output

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/kiln-project/kiln/builder"
	"github.com/kiln-project/kiln/builder/disk"
	"github.com/kiln-project/kiln/builder/spec"
	"github.com/kiln-project/kiln/internal/files"
	"github.com/kiln-project/kiln/internal/run"
)

// Format is one artifact kind.
type Format struct {
	// Name is how specs list it.
	Name string
	// Ext is the file extension of <name>.<ext>.
	Ext string
	// Write converts the raw disk image src into dst.
	Write func(ctx context.Context, src, dst string) error
}

// Formats is every format kiln writes, by name order.
var Formats = []Format{
	{Name: spec.FormatQcow2, Ext: "qcow2", Write: writeQcow2},
	{Name: spec.FormatRaw, Ext: "raw", Write: writeRaw},
}

// Lookup returns the format called name.
func Lookup(name string) (Format, error) {
	for _, f := range Formats {
		if f.Name == name {
			return f, nil
		}
	}
	names := make([]string, len(Formats))
	for i, f := range Formats {
		names[i] = f.Name
	}
	return Format{}, fmt.Errorf("unknown format %q (known: %s)", name, strings.Join(names, ", "))
}

// Stage writes <name>.<ext> for each of the spec's formats.
type Stage struct {
	spec *spec.Spec
}

// New returns the formats stage for s.
func New(s *spec.Spec) builder.Stage { return &Stage{spec: s} }

// Name implements builder.Stage.
func (*Stage) Name() string { return "formats" }

func (st *Stage) formats() ([]Format, error) {
	names := st.spec.Formats
	if len(names) == 0 {
		names = []string{spec.FormatRaw, spec.FormatQcow2}
	}
	var fs []Format
	var errs []error
	for _, n := range names {
		f, err := Lookup(n)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		fs = append(fs, f)
	}
	return fs, errors.Join(errs...)
}

// Inputs implements builder.Stage.
func (st *Stage) Inputs(ctx context.Context) (map[string]string, error) {
	fs, err := st.formats()
	if err != nil {
		return nil, fmt.Errorf("formats: %w", err)
	}
	names := make([]string, len(fs))
	for i, f := range fs {
		names[i] = f.Name
	}
	in := map[string]string{"name": st.spec.Name, "formats": strings.Join(names, ",")}
	for _, f := range fs {
		if f.Name == spec.FormatQcow2 {
			// qemu-img's version decides the qcow2 bytes.
			v, err := run.Cmd(ctx, "qemu-img", "--version")
			if err != nil {
				return nil, fmt.Errorf("formats: %w", err)
			}
			in["qemu-img"] = string(bytes.SplitN(v, []byte("\n"), 2)[0])
		}
	}
	return in, nil
}

// Run implements builder.Stage.
func (st *Stage) Run(ctx context.Context, env *builder.Env, dir string) error {
	fs, err := st.formats()
	if err != nil {
		return fmt.Errorf("formats: %w", err)
	}
	src := filepath.Join(env.Outputs["disk"], disk.Image)
	for i, f := range fs {
		env.Progress(float64(i)/float64(len(fs)), f.Name)
		dst := filepath.Join(dir, st.spec.Name+"."+f.Ext)
		if err := f.Write(ctx, src, dst); err != nil {
			return fmt.Errorf("formats: %s: %w", f.Name, err)
		}
	}
	env.Progress(1, "done")
	return nil
}

// writeQcow2 converts with qemu-img, uncompressed: compression (-c) costs more build time than it saves
// (docs/measurements.md), and an uncompressed qcow2 is already sparse.
func writeQcow2(ctx context.Context, src, dst string) error {
	_, err := run.Cmd(ctx, "qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", src, dst)
	return err
}

// writeRaw copies the image, keeping it sparse. A copy, not a hard link: whoever boots out/<name>.raw writes
// to it, and that must not change the cache.
func writeRaw(ctx context.Context, src, dst string) error { return files.Copy(ctx, dst, src, 0o644) }

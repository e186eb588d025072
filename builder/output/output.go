// Package output is the formats stage: it writes the image in each format the spec lists, from the earlier
// stages' outputs: the disk image (raw, qcow2), or the kernel, initrd and layers (pxe).
package output

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"path/filepath"
	"strings"

	"github.com/kiln-project/kiln/builder"
	"github.com/kiln-project/kiln/builder/disk"
	"github.com/kiln-project/kiln/builder/layers"
	"github.com/kiln-project/kiln/builder/rootfs"
	"github.com/kiln-project/kiln/builder/spec"
	"github.com/kiln-project/kiln/internal/files"
	"github.com/kiln-project/kiln/internal/run"
)

// Format is one artifact kind.
type Format struct {
	// Name is how specs list it.
	Name string
	// Ext is the file extension of <name>.<ext>; "" for a format written as the directory Name/.
	Ext string
	// Inputs returns what decides the format's bytes besides the earlier stages (a tool's version), added
	// to the stage's inputs when the spec lists the format; nil for nothing. It may also reject the spec.
	Inputs func(ctx context.Context, s *spec.Spec) (map[string]string, error)
	// Write writes the artifact dst (a file, or a directory it creates) from in.
	Write func(ctx context.Context, in Sources, dst string) error
}

// Sources is what a format is written from: the spec and the earlier stages' files.
type Sources struct {
	Spec *spec.Spec
	// Disk is the disk stage's raw image.
	Disk string
	// Kernel and Initrd are the packages stage's, the files the disk's ESP carries.
	Kernel, Initrd string
	// Base and Node are the layer files, the bytes the disk stage writes into kiln-base and kiln-node.
	Base, Node string
	// IPXE is the directory holding iPXE's binaries.
	IPXE string
	// DiskKey is the disk stage's cache key: it identifies Disk's bytes, and seeds the identifiers a format
	// must carry (a VHD's UUID, a vmdk's CID) so that two builds give the same bytes.
	DiskKey string
	// SourceDateEpoch is the build's timestamp, for the times a format records.
	SourceDateEpoch int64
}

// Formats is every format kiln writes, by name order.
var Formats = []Format{
	{Name: spec.FormatISO, Ext: "iso", Inputs: isoInputs, Write: writeISO},
	{Name: spec.FormatPXE, Inputs: pxeInputs, Write: writePXE},
	{Name: spec.FormatQcow2, Ext: "qcow2", Inputs: qcow2Inputs, Write: writeQcow2},
	{Name: spec.FormatRaw, Ext: "raw", Write: writeRaw},
	{Name: spec.FormatVHD, Ext: "vhd", Inputs: vhdInputs, Write: writeVHD},
	{Name: spec.FormatVMDK, Ext: "vmdk", Inputs: vmdkInputs, Write: writeVMDK},
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

// Stage writes <name>.<ext> for each of the spec's file formats and a directory for each directory format.
type Stage struct {
	spec *spec.Spec
	// ipxeDir is where iPXE's binaries are read from.
	ipxeDir string
}

// New returns the formats stage for s.
func New(s *spec.Spec) builder.Stage { return &Stage{spec: s, ipxeDir: IPXEDir} }

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
		if f.Inputs == nil {
			continue
		}
		more, err := f.Inputs(ctx, st.spec)
		if err != nil {
			return nil, fmt.Errorf("formats: %s: %w", f.Name, err)
		}
		maps.Copy(in, more)
	}
	return in, nil
}

// Run implements builder.Stage.
func (st *Stage) Run(ctx context.Context, env *builder.Env, dir string) error {
	fs, err := st.formats()
	if err != nil {
		return fmt.Errorf("formats: %w", err)
	}
	pkgs, base, node := env.Outputs["packages"], env.Outputs["base"], env.Outputs["node"]
	in := Sources{
		Spec:   st.spec,
		Disk:   filepath.Join(env.Outputs["disk"], disk.Image),
		Kernel: filepath.Join(pkgs, rootfs.Kernel),
		Initrd: filepath.Join(pkgs, rootfs.Initrd),
		Base:   filepath.Join(base, layers.BaseImage),
		Node:   filepath.Join(node, layers.NodeImage),
		IPXE:   st.ipxeDir,

		DiskKey:         env.Keys["disk"],
		SourceDateEpoch: env.SourceDateEpoch,
	}
	for i, f := range fs {
		env.Progress(float64(i)/float64(len(fs)), f.Name)
		dst := filepath.Join(dir, f.Name)
		if f.Ext != "" {
			dst = filepath.Join(dir, st.spec.Name+"."+f.Ext)
		}
		if err := f.Write(ctx, in, dst); err != nil {
			return fmt.Errorf("formats: %s: %w", f.Name, err)
		}
	}
	env.Progress(1, "done")
	return nil
}

// qcow2Inputs is qemu-img's version, which decides the qcow2 bytes.
func qcow2Inputs(ctx context.Context, _ *spec.Spec) (map[string]string, error) {
	v, err := qemuImgVersion(ctx)
	if err != nil {
		return nil, err
	}
	return map[string]string{"qemu-img": v}, nil
}

// qemuImgVersion is the first line of `qemu-img --version`.
func qemuImgVersion(ctx context.Context) (string, error) {
	v, err := run.Cmd(ctx, "qemu-img", "--version")
	if err != nil {
		return "", err
	}
	return string(bytes.SplitN(v, []byte("\n"), 2)[0]), nil
}

// writeQcow2 converts with qemu-img, uncompressed: compression (-c) costs more build time than it saves
// (docs/measurements.md), and an uncompressed qcow2 is already sparse.
func writeQcow2(ctx context.Context, in Sources, dst string) error {
	_, err := run.Cmd(ctx, "qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", in.Disk, dst)
	return err
}

// writeRaw copies the image, keeping it sparse. A copy, not a hard link: whoever boots out/<name>.raw writes
// to it, and that must not change the cache.
func writeRaw(ctx context.Context, in Sources, dst string) error {
	return files.Copy(ctx, dst, in.Disk, 0o644)
}

// Package spec defines the declarative image spec (images/*.yaml): its types, strict decoding and validation.
package spec

// Spec is one image: what goes in it and which artifacts come out.
type Spec struct {
	// Name names the artifacts (out/<name>.raw) and seeds the disk's fixed GUIDs. [a-z0-9-]{1,40}
	Name string `yaml:"name" json:"name"`
	// Distribution is where packages come from.
	Distribution Distribution `yaml:"distribution" json:"distribution"`
	// Packages are installed with their dependencies (no Recommends).
	Packages []string `yaml:"packages" json:"packages"`
	// Firmware packages come from the non-free-firmware component; kept apart so they can be dropped for VMs.
	Firmware []string `yaml:"firmware,omitempty" json:"firmware,omitempty"`
	// Overlays are directory trees (relative to the spec file) copied over the root in the node layer, in order.
	Overlays []string `yaml:"overlays,omitempty" json:"overlays,omitempty"`
	// Butane is a Butane file (relative to the spec) translated at build time to Ignition and applied at boot.
	Butane string `yaml:"butane,omitempty" json:"butane,omitempty"`
	// Agent is the kiln-firstboot binary baked in; default: kiln-firstboot next to the kiln executable.
	Agent string `yaml:"agent,omitempty" json:"agent,omitempty"`
	// ClusterConfig is an optional default cluster config baked at /usr/lib/kiln/cluster.yaml.
	ClusterConfig string `yaml:"clusterConfig,omitempty" json:"clusterConfig,omitempty"`
	// Kernel tunes the boot entry.
	Kernel Kernel `yaml:"kernel,omitempty" json:"kernel,omitempty"`
	// Disk tunes the disk layout.
	Disk Disk `yaml:"disk,omitempty" json:"disk,omitempty"`
	// Formats lists the artifacts to write: raw, qcow2 (default both).
	Formats []string `yaml:"formats,omitempty" json:"formats,omitempty"`

	// Dir is the directory of the spec file; relative paths resolve against it. Not part of the YAML.
	Dir string `yaml:"-" json:"-"`
	// File is the spec file's path, for error messages. Not part of the YAML.
	File string `yaml:"-" json:"-"`
}

// Distribution selects the Debian release and mirror.
type Distribution struct {
	// Suite is the Debian suite, e.g. bookworm.
	Suite string `yaml:"suite" json:"suite"`
	// Architecture is the Debian architecture; only amd64 today.
	Architecture string `yaml:"architecture" json:"architecture"`
	// Mirror is the Debian mirror URL; default: the host's apt source for Debian, else http://deb.debian.org/debian.
	Mirror string `yaml:"mirror,omitempty" json:"mirror,omitempty"`
	// Snapshot pins snapshot.debian.org at a timestamp (20250520T000000Z); overrides Mirror.
	Snapshot string `yaml:"snapshot,omitempty" json:"snapshot,omitempty"`
	// Components are the archive components; default main, non-free-firmware.
	Components []string `yaml:"components,omitempty" json:"components,omitempty"`
}

// Kernel tunes the boot entry.
type Kernel struct {
	// Cmdline is appended to kiln's own kernel arguments.
	Cmdline []string `yaml:"cmdline,omitempty" json:"cmdline,omitempty"`
}

// Disk tunes the disk layout.
type Disk struct {
	// ESPSizeMiB is the EFI System Partition size; default 256, minimum 64.
	ESPSizeMiB int `yaml:"espSizeMiB,omitempty" json:"espSizeMiB,omitempty"`
	// Compression is the base layer's squashfs compressor: zstd (default) or xz.
	Compression string `yaml:"compression,omitempty" json:"compression,omitempty"`
	// CompressionLevel is the compressor level; default 3 for zstd (fast builds, see docs/builder.md).
	CompressionLevel int `yaml:"compressionLevel,omitempty" json:"compressionLevel,omitempty"`
}

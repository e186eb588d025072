// Package spec defines the declarative image spec (images/*.yaml): its types, strict decoding and validation.
package spec

import (
	"time"

	"github.com/kiln-project/kiln/internal/yamlstrict"
)

// Spec is one image: what goes in it and which artifacts come out.
type Spec struct {
	// Name names the artifacts (out/<name>.raw) and seeds the disk's fixed GUIDs. [a-z0-9-]{1,40}
	Name string `yaml:"name" json:"name" jsonschema:"required,pattern=^[a-z0-9-]+$,maxLength=40"`
	// Distribution is where packages come from.
	Distribution Distribution `yaml:"distribution" json:"distribution"`
	// Packages are installed with their dependencies (no Recommends).
	Packages []string `yaml:"packages" json:"packages" jsonschema:"required,minItems=1"`
	// Firmware packages come from the non-free-firmware component; kept apart so they can be dropped for VMs.
	Firmware []string `yaml:"firmware,omitempty" json:"firmware,omitempty"`
	// Exclude are path globs dpkg never unpacks (dpkg --path-exclude), for package files the image must
	// not have: images/node.yaml drops gluster's geo-replication helper, which glusterd otherwise runs two
	// dozen times at every start. Absolute paths; * ? [ ] as in dpkg.
	Exclude []string `yaml:"exclude,omitempty" json:"exclude,omitempty"`
	// Overlays are directory trees (relative to the spec file) copied over the root in the node layer, in order.
	Overlays []string `yaml:"overlays,omitempty" json:"overlays,omitempty"`
	// Butane is a Butane file (relative to the spec) translated at build time to Ignition and applied at boot.
	Butane string `yaml:"butane,omitempty" json:"butane,omitempty"`
	// Agent is the kiln-firstboot binary baked in; default: kiln-firstboot next to the kiln executable.
	Agent string `yaml:"agent,omitempty" json:"agent,omitempty"`
	// ClusterConfig is an optional default cluster config baked at /usr/lib/kiln/cluster.yaml.
	ClusterConfig string `yaml:"clusterConfig,omitempty" json:"clusterConfig,omitempty"`
	// Preload lists container images baked into the image and loaded into dockerd at every boot where they
	// are missing (first boot, after a reimage), without any registry (docs/ingress.md).
	Preload []PreloadImage `yaml:"preload,omitempty" json:"preload,omitempty"`
	// Stacks are compose files the cluster deploys as swarm stacks once it has formed, and keeps deployed
	// (docs/ingress.md, "User stacks"); checked at build time against the subset kiln deploys.
	Stacks []Stack `yaml:"stacks,omitempty" json:"stacks,omitempty"`
	// Kernel tunes the boot entry.
	Kernel Kernel `yaml:"kernel,omitempty" json:"kernel,omitempty"`
	// Disk tunes the disk layout.
	Disk Disk `yaml:"disk,omitempty" json:"disk,omitempty"`
	// Formats lists the artifacts to write: raw, qcow2 (default both), pxe (the directory pxe/ for netboot),
	// vmdk (streamOptimized), vhd (fixed), iso (the hybrid installer: docs/install.md).
	Formats []string `yaml:"formats,omitempty" json:"formats,omitempty" jsonschema:"enum=raw,enum=qcow2,enum=pxe,enum=vmdk,enum=vhd,enum=iso,default=raw,default=qcow2"`

	// Dir is the directory of the spec file; relative paths resolve against it. Not part of the YAML.
	Dir string `yaml:"-" json:"-"`
	// File is the spec file's path, for error messages. Not part of the YAML.
	File string `yaml:"-" json:"-"`
	// pos is where each field is in File, for errors found after parsing; empty for a spec built in code.
	pos yamlstrict.Positions
}

// Distribution selects the Debian release and mirror.
type Distribution struct {
	// Suite is the Debian suite, e.g. bookworm; default bookworm.
	Suite string `yaml:"suite" json:"suite" jsonschema:"default=bookworm"`
	// Architecture is the Debian architecture; only amd64 today (default).
	Architecture string `yaml:"architecture" json:"architecture" jsonschema:"enum=amd64,default=amd64"`
	// Mirror is the Debian mirror URL; default: the host's apt source for Debian, else http://deb.debian.org/debian.
	Mirror string `yaml:"mirror,omitempty" json:"mirror,omitempty"`
	// Snapshot pins snapshot.debian.org at a timestamp (20250520T000000Z); overrides Mirror.
	Snapshot string `yaml:"snapshot,omitempty" json:"snapshot,omitempty" jsonschema:"pattern=^[0-9]{8}T[0-9]{6}Z$"`
	// Components are the archive components; default main, non-free-firmware.
	Components []string `yaml:"components,omitempty" json:"components,omitempty"`
}

// Stack is one user stack.
type Stack struct {
	// Name is the stack's name: its services are <name>_<service>, as with docker stack deploy.
	Name string `yaml:"name" json:"name" jsonschema:"required,pattern=^[a-z0-9][a-z0-9_-]{0,62}$"`
	// File is the compose file (relative to the spec), baked at /usr/lib/kiln/stacks/<name>.yaml.
	File string `yaml:"file" json:"file" jsonschema:"required"`
}

// PreloadImage is one preloaded container image: exactly one of its fields is set.
type PreloadImage struct {
	// Traefik builds Traefik from its Go module (github.com/traefik/traefik/v3) at this version, e.g. v3.7.13,
	// into the image kiln/traefik:<version>, which the ingress stack runs.
	Traefik string `yaml:"traefik,omitempty" json:"traefik,omitempty" jsonschema:"pattern=^v3[.][0-9]+[.][0-9]+$"`
	// Archive is a `docker save` archive (relative to the spec), loaded under the tags it holds.
	Archive string `yaml:"archive,omitempty" json:"archive,omitempty"`
}

// Kernel tunes the boot entry.
type Kernel struct {
	// Cmdline is appended to kiln's own kernel arguments.
	Cmdline []string `yaml:"cmdline,omitempty" json:"cmdline,omitempty"`
}

// Disk tunes the disk layout.
type Disk struct {
	// ESPSizeMiB is the EFI System Partition size; default 256, minimum 64.
	ESPSizeMiB int `yaml:"espSizeMiB,omitempty" json:"espSizeMiB,omitempty" jsonschema:"minimum=64,maximum=4096,default=256"`
	// Compression is the base layer's squashfs compressor: zstd (default) or xz.
	Compression string `yaml:"compression,omitempty" json:"compression,omitempty" jsonschema:"enum=zstd,enum=xz,default=zstd"`
	// CompressionLevel is the compressor level; default 3 for zstd (fast builds, see docs/builder.md).
	CompressionLevel int `yaml:"compressionLevel,omitempty" json:"compressionLevel,omitempty" jsonschema:"minimum=0,maximum=22"`
	// PMBRBootFlag marks the protective MBR's partition active (bootable), for BIOSes that only boot a disk
	// with an active MBR partition; default off, as the UEFI specification wants: some UEFI firmware ignores a
	// GPT whose protective MBR is marked active (docs/install.md, "Legacy BIOS").
	PMBRBootFlag bool `yaml:"pmbrBootFlag,omitempty" json:"pmbrBootFlag,omitempty"`
}

// suiteRelease is the release day of each Debian suite kiln knows, the default SOURCE_DATE_EPOCH: a date
// fixed by the spec (not by the build machine's clock or a git checkout's mtimes), and one that a newer
// point release of the same suite does not change.
var suiteRelease = map[string]int64{
	"bullseye": 1628899200, // 2021-08-14
	"bookworm": 1686355200, // 2023-06-10
	"trixie":   1754697600, // 2025-08-09
}

// fallbackEpoch is for suites not in suiteRelease: bookworm's date, so unknown suites still build reproducibly.
const fallbackEpoch = 1686355200

// DefaultSourceDateEpoch is the timestamp recorded in the image when SOURCE_DATE_EPOCH is not set: the
// snapshot's time if the spec pins one (the packages are exactly as of then), else the suite's release day.
func (s *Spec) DefaultSourceDateEpoch() int64 {
	if t, err := time.Parse("20060102T150405Z", s.Distribution.Snapshot); err == nil {
		return t.Unix()
	}
	if e, ok := suiteRelease[s.Distribution.Suite]; ok {
		return e
	}
	return fallbackEpoch
}

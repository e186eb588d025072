// Package install is the installer the kiln ISO boots (`kiln-install`, run by the initramfs in kiln.install
// mode): it picks the install disk by the cluster config's install section or by the brick disk's emptiness
// rules, writes the node image onto it from the medium, and carries the cluster config over to the installed
// disk's ESP. A disk that holds anything is written only when the config names it and says wipe: true.
//
// Choose is the pure decision; Run observes the machine, writes, and reports on the console.
package install

// Paths on the installation medium, relative to its root. The ISO's boot entry loads the ESP's own kernel and
// initrd from kiln/vmlinuz and kiln/initrd.img, which is also where the image's ESP keeps them.
const (
	ManifestPath = "kiln/image.json"
	DataPath     = "kiln/image.data"
	ConfigPath   = "kiln/cluster.yaml"
	BinaryPath   = "kiln/kiln-install"
)

// Manifest describes the node image on the medium without its holes: a raw image is mostly zeros (the ESP's
// free space), which an ISO could not store sparsely. Extents list where the image holds data and which
// medium file holds those bytes (image.data, or the kernel and initrd the medium boots itself, which are the
// ESP's files byte for byte: stored once); every byte outside them is zero.
type Manifest struct {
	// Name is the image's spec name.
	Name string `json:"name"`
	// Size is the raw image's size in bytes, and SHA256 its hash: the installer hashes what it writes and
	// compares.
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
	// Extents are in disk order and do not overlap.
	Extents []Extent `json:"extents"`
	// Identity are ranges of the image that name this build (the layers' partitions): a disk whose bytes
	// there match already holds this image, installed by an earlier run with the medium still in.
	Identity []Range `json:"identity"`
}

// Extent is Length bytes at Offset of the image, read from File (a path on the medium) at FileOffset.
type Extent struct {
	Offset     int64  `json:"offset"`
	Length     int64  `json:"length"`
	File       string `json:"file"`
	FileOffset int64  `json:"file_offset"`
}

// Range is Length bytes at Offset whose sha256 is SHA256.
type Range struct {
	Offset int64  `json:"offset"`
	Length int64  `json:"length"`
	SHA256 string `json:"sha256"`
}

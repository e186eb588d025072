package glusterd

import (
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// volumeIDXattr is the xattr glusterd checks on a brick root before starting the brick.
const volumeIDXattr = "trusted.glusterfs.volume-id"

// gfidXattr holds a file's GFID; on a brick root it is rootGFID.
const gfidXattr = "trusted.gfid"

// rootGFID is the GFID of every brick's root directory.
var rootGFID = []byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}

// metaDir is the directory glusterd keeps inside a brick for itself; everything else in a brick is data.
const metaDir = ".glusterfs"

// BrickPrepared reports whether dir carries the volume-id xattr and the .glusterfs directory (without it the
// brick's index translator fails to start).
func BrickPrepared(dir string) bool {
	return VolumeID(dir) != "" && isDir(filepath.Join(dir, metaDir))
}

// VolumeID returns dir's volume-id xattr in hex ("" when absent).
func VolumeID(dir string) string {
	buf := make([]byte, 16)
	if n, err := unix.Getxattr(dir, volumeIDXattr, buf); err != nil || n != 16 {
		return ""
	}
	return hex.EncodeToString(buf)
}

// BrickData returns the name of an entry of brick directory dir that is not glusterd's own, "" when there is
// none: a brick that holds one holds data, which kiln never adopts or clears.
func BrickData(dir string) (string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return "", err
	}
	for _, e := range ents {
		if e.Name() != metaDir {
			return e.Name(), nil
		}
	}
	return "", nil
}

// PrepareBrick creates dir (empty), sets the volume-id xattr to volumeID and the root GFID, and creates
// .glusterfs: what `volume create` and the first brick start did for the brick originally. Refuses a
// directory that holds anything but .glusterfs: that is data, not a fresh brick.
func PrepareBrick(dir, volumeID string) error {
	id, err := ParseUUID(volumeID)
	if err != nil {
		return fmt.Errorf("gluster: volume id %q: %w", volumeID, err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("gluster: brick %s: %w", dir, err)
	}
	data, err := BrickData(dir)
	if err != nil {
		return fmt.Errorf("gluster: brick %s: %w", dir, err)
	}
	if data != "" {
		return fmt.Errorf("gluster: brick %s is not prepared but holds %s; refusing to adopt it", dir, data)
	}
	if err := unix.Setxattr(dir, volumeIDXattr, id[:], 0); err != nil {
		return fmt.Errorf("gluster: set %s on %s: %w", volumeIDXattr, dir, err)
	}
	if err := unix.Setxattr(dir, gfidXattr, rootGFID, 0); err != nil {
		return fmt.Errorf("gluster: set trusted.gfid on %s: %w", dir, err)
	}
	if err := os.Mkdir(filepath.Join(dir, metaDir), 0o600); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("gluster: brick %s: %w", dir, err)
	}
	return nil
}

// ClearVolumeMarks removes what staging a `volume create` leaves on brick directory dir: the volume-id and
// GFID xattrs and .glusterfs. glusterd refuses a brick that carries a volume id ("… is already part of a
// volume"), so a create that failed after marking dir holds every later create back until they are gone.
func ClearVolumeMarks(dir string) error {
	for _, x := range []string{volumeIDXattr, gfidXattr} {
		if err := unix.Removexattr(dir, x); err != nil && !errors.Is(err, unix.ENODATA) {
			return fmt.Errorf("gluster: remove %s from %s: %w", x, dir, err)
		}
	}
	if err := os.RemoveAll(filepath.Join(dir, metaDir)); err != nil {
		return fmt.Errorf("gluster: %w", err)
	}
	return nil
}

func isDir(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.IsDir()
}

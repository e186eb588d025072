// Package glusterd reads and changes what glusterd keeps on disk, behind its back: its identity
// (glusterd.info), its peer files, the marks on a brick directory, and kiln's own markers beside them. Every
// path is the node's path; callers prefix it with their root ("" on a node, a temporary directory in
// tests). The files under /var/lib/glusterd are changed only while glusterd is stopped, and a brick
// directory's marks only while no brick process serves it: glusterd reads both at start and would overwrite
// or contradict a change made under it.
package glusterd

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/kiln-project/kiln/internal/files"
)

// StateDir is glusterd's working directory: its identity, peers and volumes.
const StateDir = "/var/lib/glusterd"

// InfoFile is glusterd's identity file.
const InfoFile = StateDir + "/glusterd.info"

// ReadUUID returns the UUID= line of glusterd.info at path ("" when the file does not exist yet).
func ReadUUID(path string) (string, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("gluster: read %s: %w", path, err)
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "UUID="); ok {
			return v, nil
		}
	}
	return "", nil
}

// WithUUID returns glusterd.info content with the UUID line replaced (other lines, e.g. operating-version,
// kept; a missing UUID line added).
func WithUUID(content []byte, id string) []byte {
	var out []string
	found := false
	for line := range strings.Lines(string(content)) {
		line = strings.TrimRight(line, "\n")
		if strings.HasPrefix(line, "UUID=") {
			line, found = "UUID="+id, true
		}
		if line != "" {
			out = append(out, line)
		}
	}
	if !found {
		out = append([]string{"UUID=" + id}, out...)
	}
	return []byte(strings.Join(out, "\n") + "\n")
}

// WriteUUID sets the UUID of glusterd.info at path to id, keeping its other lines. The file is replaced
// atomically: written in place, a crash could leave it truncated, and glusterd without the identity its
// pool knows it by.
func WriteUUID(path, id string) error {
	old, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return files.Write(path, WithUUID(old, id), 0o600)
}

// PeersDir is where glusterd keeps one file per peer, named by its UUID.
const PeersDir = StateDir + "/peers"

// peerBefriended is glusterd's GD_FRIEND_STATE_BEFRIENDED ("Peer in Cluster").
const peerBefriended = 3

// PeerFile is the content glusterd stores for a peer it is in a pool with (glusterd_store_peer_write).
func PeerFile(uuid, addr string) []byte {
	return fmt.Appendf(nil, "uuid=%s\nstate=%d\nhostname1=%s\n", uuid, peerBefriended, addr)
}

// WritePeerFiles writes dir/<uuid> for every pool member (address → UUID), replacing what is there: the
// directory belongs to a glusterd that is stopped. The map comes from the formation record, so each entry is
// checked before it becomes a file glusterd trusts.
func WritePeerFiles(dir string, pool map[string]string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for addr, id := range pool {
		if _, err := ParseUUID(id); err != nil {
			return fmt.Errorf("peer %s: UUID %q: %w", addr, id, err)
		}
		if _, err := netip.ParseAddr(addr); err != nil {
			return fmt.Errorf("peer %q: %w", addr, err)
		}
		if err := os.WriteFile(filepath.Join(dir, id), PeerFile(id, addr), 0o600); err != nil {
			return err
		}
	}
	return nil
}

// ParseUUID decodes the canonical 8-4-4-4-12 form into its 16 bytes.
func ParseUUID(s string) ([]byte, error) {
	if len(s) != 36 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
		return nil, errors.New("not a UUID")
	}
	b, err := hex.DecodeString(strings.ReplaceAll(s, "-", ""))
	if err != nil {
		return nil, fmt.Errorf("not a UUID: %w", err)
	}
	return b, nil
}

// SetAside renames path to path+suffix; a missing path is nothing to set aside. Renamed, never deleted:
// what is set aside may hold writes no other node has, for a human to salvage.
func SetAside(path, suffix string) error {
	if err := os.Rename(path, path+suffix); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

package cache

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
)

// Sum is one output file's digest, with the size and mtime it was computed at, so a file changed since
// (someone edited the cache by hand) is hashed again instead of trusted.
type Sum struct {
	SHA256  string `json:"sha256"`
	Size    int64  `json:"size"`
	ModTime int64  `json:"mtimeNs"`
}

// Sums returns the sha256 of each regular file under the entry's out/ directory, keyed by its slash path
// relative to out/ ("node.raw", "pxe/vmlinuz"). The digests are stored in the entry's sums.json after the
// first call, so a warm rebuild doesn't read hundreds of MB again. Safe to call from concurrent builds holding
// the entry: the file is replaced atomically and both would write the same content.
func (e *Entry) Sums() (map[string]Sum, error) {
	path := filepath.Join(e.dir, "sums.json")
	stored := map[string]Sum{}
	if b, err := os.ReadFile(path); err == nil {
		_ = json.Unmarshal(b, &stored) // unreadable: recompute
	}
	out := e.Out()
	sums := map[string]Sum{}
	changed := false
	err := filepath.WalkDir(out, func(p string, de fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !de.Type().IsRegular() {
			return nil
		}
		rel, err := filepath.Rel(out, p)
		if err != nil {
			return err
		}
		name := filepath.ToSlash(rel)
		fi, err := de.Info()
		if err != nil {
			return err
		}
		if s, ok := stored[name]; ok && s.Size == fi.Size() && s.ModTime == fi.ModTime().UnixNano() {
			sums[name] = s
			return nil
		}
		digest, err := HashFile(p)
		if err != nil {
			return err
		}
		sums[name] = Sum{SHA256: digest, Size: fi.Size(), ModTime: fi.ModTime().UnixNano()}
		changed = true
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("cache: %w", err)
	}
	if changed || len(sums) != len(stored) {
		if err := writeJSON(path, sums); err != nil {
			return nil, err
		}
	}
	return sums, nil
}

// SortedNames returns the keys of sums in order, for stable listings.
func SortedNames(sums map[string]Sum) []string {
	names := make([]string, 0, len(sums))
	for n := range sums {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// HashFile is the hex sha256 of a file's content.
func HashFile(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("hash %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

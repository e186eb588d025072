package cache

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
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

// Sums returns the sha256 of each regular file directly in the entry's out/ directory, by file name.
// The digests are stored in the entry's sums.json after the first call, so a warm rebuild doesn't read
// hundreds of MB again. Safe to call from concurrent builds holding the entry: the file is replaced
// atomically and both would write the same content.
func (e *Entry) Sums() (map[string]Sum, error) {
	path := filepath.Join(e.dir, "sums.json")
	stored := map[string]Sum{}
	if b, err := os.ReadFile(path); err == nil {
		_ = json.Unmarshal(b, &stored) // unreadable: recompute
	}
	ents, err := os.ReadDir(e.Out())
	if err != nil {
		return nil, fmt.Errorf("cache: %w", err)
	}
	sums := map[string]Sum{}
	changed := false
	for _, de := range ents {
		if !de.Type().IsRegular() {
			continue
		}
		fi, err := de.Info()
		if err != nil {
			return nil, fmt.Errorf("cache: %w", err)
		}
		if s, ok := stored[de.Name()]; ok && s.Size == fi.Size() && s.ModTime == fi.ModTime().UnixNano() {
			sums[de.Name()] = s
			continue
		}
		digest, err := hashFile(filepath.Join(e.Out(), de.Name()))
		if err != nil {
			return nil, err
		}
		sums[de.Name()] = Sum{SHA256: digest, Size: fi.Size(), ModTime: fi.ModTime().UnixNano()}
		changed = true
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

func hashFile(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("cache: %w", err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("cache: hash %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// Package debindex knows which package names a Debian mirror offers: it reads a suite's Release file and
// the Packages index of each component for one architecture, verifies them against the Release file's
// hashes, and keeps only the names (and the virtual names packages provide) in a cache keyed by those
// hashes. The packages stage asks it before mmdebstrap runs, so a misspelt package fails the build in
// seconds, with every unknown name at once, instead of after minutes of downloads.
package debindex

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/kiln-project/kiln/internal/files"
)

// Index is the set of installable names of one suite, architecture and set of components.
type Index struct {
	names map[string]bool
}

// Has reports whether name is a package or a virtual package some package provides.
func (x *Index) Has(name string) bool { return x.names[name] }

// Names returns every name, sorted (for suggestions).
func (x *Index) Names() []string {
	out := make([]string, 0, len(x.names))
	for n := range x.names {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// Source says which index to read.
type Source struct {
	// Mirror is the archive's base URL (http://deb.debian.org/debian, a snapshot.debian.org URL).
	Mirror       string
	Suite        string
	Components   []string
	Architecture string
}

// Load returns the index of src, from cacheDir when a previous load stored the same Packages files (same
// hashes in the Release file), else downloaded from the mirror and stored. Only the Release file is fetched
// when the cache is current.
func Load(ctx context.Context, client *http.Client, src Source, cacheDir string) (*Index, error) {
	base := strings.TrimSuffix(src.Mirror, "/") + "/dists/" + src.Suite + "/"
	release, err := get(ctx, client, base+"InRelease")
	if err != nil {
		// A plain mirror may carry only the unsigned Release file.
		var rerr error
		if release, rerr = get(ctx, client, base+"Release"); rerr != nil {
			return nil, err
		}
	}
	sums := releaseSHA256(release)
	x := &Index{names: map[string]bool{}}
	for _, comp := range src.Components {
		path := comp + "/binary-" + src.Architecture + "/Packages.gz"
		sum, ok := sums[path]
		if !ok {
			return nil, fmt.Errorf("debindex: %s's Release file lists no %s", base, path)
		}
		names, err := load(ctx, client, base+path, sum, filepath.Join(cacheDir, sum+".names"))
		if err != nil {
			return nil, err
		}
		for _, n := range names {
			x.names[n] = true
		}
	}
	return x, nil
}

// load returns the names of one Packages.gz: from the cache file, or downloaded, verified and cached.
func load(ctx context.Context, client *http.Client, url, sum, cached string) ([]string, error) {
	if b, err := os.ReadFile(cached); err == nil {
		return strings.Split(strings.TrimSpace(string(b)), "\n"), nil
	}
	gz, err := get(ctx, client, url)
	if err != nil {
		return nil, err
	}
	if got := sha256.Sum256(gz); hex.EncodeToString(got[:]) != sum {
		return nil, fmt.Errorf("debindex: %s: sha256 %x, the Release file says %s", url, got, sum)
	}
	r, err := gzip.NewReader(bytes.NewReader(gz))
	if err != nil {
		return nil, fmt.Errorf("debindex: %s: %w", url, err)
	}
	names, err := parsePackages(r)
	if err != nil {
		return nil, fmt.Errorf("debindex: %s: %w", url, err)
	}
	if err := os.MkdirAll(filepath.Dir(cached), 0o755); err != nil {
		return nil, fmt.Errorf("debindex: %w", err)
	}
	if err := files.Write(cached, []byte(strings.Join(names, "\n")+"\n"), 0o644); err != nil {
		return nil, fmt.Errorf("debindex: %w", err)
	}
	return names, nil
}

// parsePackages reads the Package and Provides fields of a Packages file (deb822 stanzas), sorted and
// de-duplicated. Provides entries lose their version constraints: "Provides: mail-transport-agent, foo (= 1)".
func parsePackages(r io.Reader) ([]string, error) {
	var names []string
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 1<<20), 1<<20) // Description fields run long
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "Package: "):
			names = append(names, strings.TrimSpace(line[len("Package: "):]))
		case strings.HasPrefix(line, "Provides: "):
			for _, p := range strings.Split(line[len("Provides: "):], ",") {
				name, _, _ := strings.Cut(strings.TrimSpace(p), " ")
				if name != "" {
					names = append(names, name)
				}
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	slices.Sort(names)
	return slices.Compact(names), nil
}

// releaseSHA256 maps each path of a Release file's SHA256 section to its hash. The OpenPGP signature
// around InRelease is not checked: the index only tells which names exist; apt checks everything it
// installs.
func releaseSHA256(release []byte) map[string]string {
	sums := map[string]string{}
	in := false
	for _, line := range strings.Split(string(release), "\n") {
		switch {
		case strings.HasPrefix(line, "SHA256:"):
			in = true
		case in && strings.HasPrefix(line, " "):
			f := strings.Fields(line)
			if len(f) == 3 {
				sums[f[2]] = f[0]
			}
		default:
			in = false
		}
	}
	return sums
}

// maxIndex bounds a download: bookworm's main Packages.gz is 12 MB.
const maxIndex = 256 << 20

func get(ctx context.Context, client *http.Client, url string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("debindex: %w", err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("debindex: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("debindex: GET %s: %s", url, resp.Status)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxIndex+1))
	if err != nil {
		return nil, fmt.Errorf("debindex: GET %s: %w", url, err)
	}
	if len(b) > maxIndex {
		return nil, errors.New("debindex: GET " + url + ": larger than any Debian index")
	}
	return b, nil
}

// Package cache is the builder's content-addressed store of stage outputs: one directory per (stage, key),
// built in a temp dir and renamed into place, guarded by a per-key flock so concurrent builds wait for each
// other instead of corrupting an entry. Deleting any entry, or the whole cache, only costs a rebuild.
package cache

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/kiln-project/kiln/internal/files"
)

// formatVersion is mixed into every key: bump it when the entry layout or key recipe changes, so old
// entries are simply never hit again (and can be deleted) instead of being misread.
const formatVersion = 1

// Cache is a store rooted at a directory:
//
//	<root>/stages/<stage>/<key>/meta.json   what built it (Meta)
//	<root>/stages/<stage>/<key>/out/        the stage's output
//	<root>/stages/<stage>/<key>/sums.json   sha256 of output files, computed once on first use (Sums)
//	<root>/stages/<stage>/.tmp-<key>-*      an entry being built (removed on failure or by the next builder)
//	<root>/locks/<stage>/<key>.lock         the key's flock
type Cache struct {
	root string
	// pollInterval is how often a waiting builder retries a busy lock; flock itself cannot be cancelled.
	pollInterval time.Duration
}

// DefaultDir is $XDG_CACHE_HOME/kiln, else ~/.cache/kiln.
func DefaultDir() (string, error) {
	if d := os.Getenv("XDG_CACHE_HOME"); d != "" {
		return filepath.Join(d, "kiln"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("cache: no $XDG_CACHE_HOME and no home directory: %w", err)
	}
	return filepath.Join(home, ".cache", "kiln"), nil
}

// Open creates the cache directory if needed.
func Open(root string) (*Cache, error) {
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("cache: %w", err)
	}
	for _, d := range []string{"stages", "locks"} {
		if err := os.MkdirAll(filepath.Join(abs, d), 0o755); err != nil {
			return nil, fmt.Errorf("cache: %w", err)
		}
	}
	return &Cache{root: abs, pollInterval: 100 * time.Millisecond}, nil
}

// Root is the cache's directory.
func (c *Cache) Root() string { return c.root }

// Key is the hash of everything that determines a stage's output: sha256 over the canonical JSON of
// {version, stage, inputs, parent}. encoding/json sorts map keys, so the input order never matters.
func Key(stage string, inputs map[string]string, parent string) string {
	doc := struct {
		Version int               `json:"v"`
		Stage   string            `json:"stage"`
		Inputs  map[string]string `json:"inputs"`
		Parent  string            `json:"parent"`
	}{formatVersion, stage, inputs, parent}
	if doc.Inputs == nil {
		doc.Inputs = map[string]string{}
	}
	b, err := json.Marshal(doc)
	if err != nil {
		panic(err) // a map of strings always marshals
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// Meta is an entry's meta.json: what built it, when, how long it took, and a cheap fingerprint of its output
// (file count and bytes) that tells a complete entry from one a user half-deleted.
type Meta struct {
	Stage    string            `json:"stage"`
	Key      string            `json:"key"`
	Parent   string            `json:"parent"`
	Inputs   map[string]string `json:"inputs"`
	Created  time.Time         `json:"created"`
	Duration Duration          `json:"duration"`
	Files    int               `json:"files"`
	Bytes    int64             `json:"bytes"`
}

// Duration marshals as seconds (a float), readable by people and by jq.
type Duration time.Duration

func (d Duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(float64(time.Duration(d).Round(time.Millisecond)) / float64(time.Second))
}

func (d *Duration) UnmarshalJSON(b []byte) error {
	var s float64
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	*d = Duration(s * float64(time.Second))
	return nil
}

// Request asks for one stage's entry.
type Request struct {
	Stage  string
	Inputs map[string]string
	// Parent is the previous stage's key ("" for the first stage).
	Parent string
	// Force rebuilds the entry even if it exists (kiln build --rebuild).
	Force bool
	// OnMiss, if set, is told why the entry is being built, just before building it.
	OnMiss func(why string)
}

// BuildFunc fills dir (empty, already created) with the stage's output.
type BuildFunc func(ctx context.Context, dir string) error

// Entry is a stage output in the cache, held under a shared lock until Close so that nobody replaces it
// (kiln build --rebuild elsewhere) while this build reads it.
type Entry struct {
	Meta Meta
	// Hit reports whether the entry existed; false if this call built it.
	Hit bool
	// Why says why it was built (empty on a hit): the input that changed against the newest entry of the
	// same stage, a changed parent, a forced rebuild, or a first build.
	Why string

	dir  string
	lock *lock
}

// Dir is the entry's directory (meta.json, out/, sums.json).
func (e *Entry) Dir() string { return e.dir }

// Out is the stage's output directory.
func (e *Entry) Out() string { return filepath.Join(e.dir, "out") }

// Close releases the entry's lock.
func (e *Entry) Close() error { return e.lock.close() }

// Get returns the entry for req, building it with build on a miss. Two callers asking for the same key
// at once (goroutines or processes) serialise on the key's lock: the second finds the first's entry.
// On error or cancellation nothing is left in the cache but the stage's previous state.
func (c *Cache) Get(ctx context.Context, req Request, build BuildFunc) (*Entry, error) {
	if !validName.MatchString(req.Stage) {
		return nil, fmt.Errorf("cache: invalid stage name %q", req.Stage)
	}
	key := Key(req.Stage, req.Inputs, req.Parent)
	stageDir := filepath.Join(c.root, "stages", req.Stage)
	dir := filepath.Join(stageDir, key)
	lockDir := filepath.Join(c.root, "locks", req.Stage)
	for _, d := range []string{stageDir, lockDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("cache: %w", err)
		}
	}
	l, err := openLock(filepath.Join(lockDir, key+".lock"))
	if err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			l.close()
		}
	}()

	// Fast path: a shared lock lets any number of builds read one entry at once.
	if !req.Force {
		if err := l.acquire(ctx, false, c.pollInterval); err != nil {
			return nil, err
		}
		if m, err := readValid(dir, key); err == nil {
			ok = true
			return &Entry{Meta: m, Hit: true, dir: dir, lock: l}, nil
		}
	}

	// Miss: take the lock exclusively and look again, another builder may have finished while we waited.
	// Two shared holders converting at once would wait on each other: drop ours first. While waiting,
	// watch for the other builder's entry: it renames it in complete, then keeps a shared lock on it.
	why := "forced rebuild"
	for {
		if err := l.unlock(); err != nil {
			return nil, err
		}
		var appeared func() bool
		if !req.Force {
			appeared = func() bool { _, err := readValid(dir, key); return err == nil }
		}
		err := l.acquireUnless(ctx, true, c.pollInterval, appeared)
		if errors.Is(err, errNoLongerNeeded) {
			if err := l.acquire(ctx, false, c.pollInterval); err != nil {
				return nil, err
			}
			if m, err := readValid(dir, key); err == nil {
				ok = true
				return &Entry{Meta: m, Hit: true, dir: dir, lock: l}, nil
			}
			continue // replaced between the look and the lock (a forced rebuild): wait again
		}
		if err != nil {
			return nil, err
		}
		break
	}
	if !req.Force {
		m, err := readValid(dir, key)
		if err == nil {
			if err := l.acquire(ctx, false, c.pollInterval); err != nil {
				return nil, err
			}
			ok = true
			return &Entry{Meta: m, Hit: true, dir: dir, lock: l}, nil
		}
		if errors.Is(err, fs.ErrNotExist) {
			why = c.explain(req)
		} else {
			why = "entry damaged: " + err.Error()
		}
	}
	if req.OnMiss != nil {
		req.OnMiss(why)
	}
	m, err := c.build(ctx, req, key, stageDir, build)
	if err != nil {
		return nil, err
	}
	// Downgrade so concurrent readers of this key can proceed while we keep using it.
	if err := l.acquire(ctx, false, c.pollInterval); err != nil {
		return nil, err
	}
	ok = true
	return &Entry{Meta: m, Hit: false, Why: why, dir: dir, lock: l}, nil
}

var validName = regexp.MustCompile(`^[a-z0-9][a-z0-9-]*$`)

// build runs build into a temp dir next to the entry and renames it in. The caller holds the key exclusively.
func (c *Cache) build(ctx context.Context, req Request, key, stageDir string, build BuildFunc) (Meta, error) {
	dir := filepath.Join(stageDir, key)
	// Temp dirs of this key can only be left over from a builder that died: we hold the key's lock.
	if err := removeGlob(filepath.Join(stageDir, ".tmp-"+key+"-*")); err != nil {
		return Meta{}, err
	}
	tmp, err := os.MkdirTemp(stageDir, ".tmp-"+key+"-")
	if err != nil {
		return Meta{}, fmt.Errorf("cache: %w", err)
	}
	defer removeTree(tmp) // a no-op after the rename
	out := filepath.Join(tmp, "out")
	if err := os.Mkdir(out, 0o755); err != nil {
		return Meta{}, fmt.Errorf("cache: %w", err)
	}
	start := time.Now()
	if err := build(ctx, out); err != nil {
		return Meta{}, err
	}
	if err := ctx.Err(); err != nil {
		return Meta{}, err
	}
	files, bytes, err := fingerprint(out)
	if err != nil {
		return Meta{}, fmt.Errorf("cache: %s: %w", req.Stage, err)
	}
	m := Meta{
		Stage: req.Stage, Key: key, Parent: req.Parent, Inputs: req.Inputs,
		Created: time.Now().UTC(), Duration: Duration(time.Since(start)), Files: files, Bytes: bytes,
	}
	if err := writeJSON(filepath.Join(tmp, "meta.json"), m); err != nil {
		return Meta{}, err
	}
	// A forced rebuild or a damaged entry: move the old one aside first (rename cannot replace a directory).
	if _, err := os.Lstat(dir); err == nil {
		old := filepath.Join(stageDir, ".tmp-"+key+"-old")
		if err := os.Rename(dir, old); err != nil {
			return Meta{}, fmt.Errorf("cache: %w", err)
		}
		defer removeTree(old)
	}
	if err := os.Rename(tmp, dir); err != nil {
		return Meta{}, fmt.Errorf("cache: %w", err)
	}
	return m, nil
}

// readValid reads the entry's meta.json and checks the output still has the files and bytes it was built with.
func readValid(dir, key string) (Meta, error) {
	var m Meta
	b, err := os.ReadFile(filepath.Join(dir, "meta.json"))
	if err != nil {
		return m, err
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return m, fmt.Errorf("meta.json: %w", err)
	}
	if m.Key != key {
		return m, fmt.Errorf("meta.json is for key %.12s", m.Key)
	}
	files, bytes, err := fingerprint(filepath.Join(dir, "out"))
	if err != nil {
		return m, err
	}
	if files != m.Files || bytes != m.Bytes {
		return m, fmt.Errorf("out/ has %d files, %d bytes; built with %d, %d", files, bytes, m.Files, m.Bytes)
	}
	return m, nil
}

// fingerprint counts the entries under dir and the bytes of its regular files (stat only, no reads).
func fingerprint(dir string) (files int, bytes int64, err error) {
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == dir {
			return nil
		}
		files++
		if d.Type().IsRegular() {
			fi, err := d.Info()
			if err != nil {
				return err
			}
			bytes += fi.Size()
		}
		return nil
	})
	return files, bytes, err
}

// explain says why req missed: the differences from the newest complete entry of the same stage.
func (c *Cache) explain(req Request) string {
	prev, ok := c.Latest(req.Stage)
	if !ok {
		return "first build of this stage"
	}
	var changed []string
	for k, v := range req.Inputs {
		pv, ok := prev.Inputs[k]
		switch {
		case !ok:
			changed = append(changed, "+"+k)
		case pv != v:
			changed = append(changed, k)
		}
	}
	for k := range prev.Inputs {
		if _, ok := req.Inputs[k]; !ok {
			changed = append(changed, "-"+k)
		}
	}
	sort.Strings(changed)
	switch {
	case len(changed) > 0:
		return "inputs changed since " + short(prev.Key) + ": " + strings.Join(changed, ", ")
	case prev.Parent != req.Parent:
		return "previous stage changed (" + short(prev.Parent) + " → " + short(req.Parent) + ")"
	default:
		return "entry " + short(prev.Key) + " missing"
	}
}

// Latest returns the meta of the most recently created entry of stage.
func (c *Cache) Latest(stage string) (Meta, bool) {
	metas, _ := filepath.Glob(filepath.Join(c.root, "stages", stage, "*", "meta.json"))
	var best Meta
	found := false
	for _, p := range metas {
		if strings.HasPrefix(filepath.Base(filepath.Dir(p)), ".") {
			continue
		}
		var m Meta
		b, err := os.ReadFile(p)
		if err != nil || json.Unmarshal(b, &m) != nil {
			continue
		}
		if !found || m.Created.After(best.Created) {
			best, found = m, true
		}
	}
	return best, found
}

func short(key string) string {
	if len(key) > 12 {
		return key[:12]
	}
	return key
}

func removeGlob(pattern string) error {
	paths, err := filepath.Glob(pattern)
	if err != nil {
		return fmt.Errorf("cache: %w", err)
	}
	for _, p := range paths {
		if err := removeTree(p); err != nil {
			return fmt.Errorf("cache: remove stale %s: %w", p, err)
		}
	}
	return nil
}

// writeJSON writes v to path through a temp file and rename, so readers see the old file or the new one.
func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("cache: %w", err)
	}
	if err := files.Write(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("cache: %w", err)
	}
	return nil
}

// RootOf returns the cache root holding out, the output directory a stage's Run is given
// (<root>/stages/<stage>/.tmp-<key>-*/out), so a stage can keep data of its own beside the stage entries;
// ok is false for a directory laid out otherwise (a test's).
func RootOf(out string) (root string, ok bool) {
	tmp := filepath.Dir(out)
	stages := filepath.Dir(filepath.Dir(tmp))
	if filepath.Base(out) != "out" || !strings.HasPrefix(filepath.Base(tmp), ".tmp-") || filepath.Base(stages) != "stages" {
		return "", false
	}
	return filepath.Dir(stages), true
}

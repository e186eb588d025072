package config

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"gopkg.in/yaml.v3"
)

// Source is one place a config can come from. Load returns the raw file, or an error wrapping fs.ErrNotExist
// when the source holds no config (so the next source is tried); any other error stops the search, because
// a config that exists but can't be read must not be silently replaced by a lower-priority one.
type Source interface {
	Name() string
	Load(ctx context.Context) ([]byte, error)
}

// Paths of the sources inside a node (docs/design.md); Sources joins them under a root for tests.
const (
	FwCfgPath   = "/sys/firmware/qemu_fw_cfg/by_name/opt/kiln/config/raw"
	ESPFile     = "kiln/cluster.yaml"
	ImagePath   = "/usr/lib/kiln/cluster.yaml"
	ESPPartName = "esp"
)

// Sources returns the node's config sources in priority order, with every path under root ("/" on a node).
// log receives the URL and user-data sources' lines (nil: none).
//
// The order: what the machine's own firmware hands over (fw_cfg: the lab, a hypervisor) is the most specific;
// then the netboot server named on the kernel command line; then the ESP of a flashed disk; then EC2
// user-data; then the image's default. A netbooted node has no ESP, and the image it boots is the same one a
// flashed node boots, so the server's config must win over the image's. User-data is per instance, so it too
// beats the image's default; an AMI has no ESP a person could have edited, so its place after the ESP only
// matters on a disk moved between worlds.
func Sources(root string, log *slog.Logger) []Source {
	return []Source{
		File{SourceName: "fw_cfg", Path: filepath.Join(root, FwCfgPath)},
		URL{Cmdline: filepath.Join(root, CmdlinePath), Cache: cacheUnder(root), Log: log},
		ESP{Root: root},
		IMDS{Root: root, Cache: filepath.Join(root, IMDSCachePath), Image: filepath.Join(root, ImagePath), Log: log},
		File{SourceName: "image", Path: filepath.Join(root, ImagePath)},
	}
}

// ErrNotFound means no source holds a config: the node waits for one and forms nothing.
var ErrNotFound = errors.New("no cluster config (fw_cfg opt/kiln/config, " + CmdlineParam + "= URL, ESP kiln/cluster.yaml, EC2 user-data, " + ImagePath + ")")

// Error is a config that was found but could not be read or is invalid. The agent reports it in status and
// does nothing else: a node with a broken config must not join, form or change anything.
type Error struct {
	// Source names the source the config came from.
	Source string
	Err    error
}

func (e *Error) Error() string { return fmt.Sprintf("config from %s: %v", e.Source, e.Err) }
func (e *Error) Unwrap() error { return e.Err }

// Load returns the config of the first source that has one, with Config.Source and Config.Skipped set. It
// returns ErrNotFound when none has one (wrapped with what the skipped sources said), and an *Error when the
// first one found is unreadable or invalid.
func Load(ctx context.Context, sources []Source) (*Config, error) {
	name, data, skipped, err := first(ctx, sources)
	if err != nil {
		return nil, err
	}
	c, err := Parse(data)
	if err != nil {
		return nil, &Error{Source: name, Err: err}
	}
	c.Source, c.Skipped = name, skipped
	return c, nil
}

// first returns the raw config of the first source that has one, and why the sources before it that were
// asked for gave none (SkipError). It returns ErrNotFound when none has one, and an *Error when the first one
// found cannot be read.
func first(ctx context.Context, sources []Source) (string, []byte, []string, error) {
	var skipped []string
	for _, s := range sources {
		data, err := s.Load(ctx)
		var skip *SkipError
		if errors.As(err, &skip) {
			skipped = append(skipped, skip.Error())
		}
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return "", nil, skipped, &Error{Source: s.Name(), Err: err}
		}
		return s.Name(), data, skipped, nil
	}
	if len(skipped) > 0 {
		return "", nil, skipped, fmt.Errorf("%w; %s", ErrNotFound, strings.Join(skipped, "; "))
	}
	return "", nil, nil, ErrNotFound
}

// File is a source that is a plain file (fw_cfg's sysfs entry, the image default).
type File struct {
	SourceName string
	Path       string
}

func (f File) Name() string { return f.SourceName }

func (f File) Load(ctx context.Context) ([]byte, error) {
	return readLimited(f.Path)
}

// readLimited reads at most MaxSize+1 bytes, so Parse can say "too large" without the whole file in memory.
func readLimited(path string) ([]byte, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer fh.Close()
	data, err := io.ReadAll(io.LimitReader(fh, MaxSize+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return data, nil
}

// SSHKeys returns the ssh_authorized_keys of the first source that holds a config, even when its cluster
// section is missing or invalid: the keys are how a person logs in to see and fix what is wrong, and a lab or
// a machine not yet given a cluster has keys and nothing else. Only that one field is read (leniently: other
// fields may be anything), and a key that is not one authorized_keys line is dropped.
func SSHKeys(ctx context.Context, sources []Source) ([]string, error) {
	name, data, _, err := first(ctx, sources)
	if err != nil {
		return nil, err
	}
	if len(data) > MaxSize {
		return nil, &Error{Source: name, Err: fmt.Errorf("config is %d bytes, more than the %d allowed", len(data), MaxSize)}
	}
	var f struct {
		Keys []string `yaml:"ssh_authorized_keys"`
	}
	if err := yaml.Unmarshal(data, &f); err != nil {
		return nil, &Error{Source: name, Err: fmt.Errorf("yaml: %w", err)}
	}
	var keys []string
	for _, k := range f.Keys {
		if k = strings.TrimSpace(k); k != "" && !strings.ContainsAny(k, "\r\n") {
			keys = append(keys, k)
		}
	}
	return keys, nil
}

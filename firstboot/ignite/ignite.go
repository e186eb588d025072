package ignite

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/coreos/ignition/v2/config/v3_3/types"

	"github.com/kiln-project/kiln/internal/files"
)

// Options say where and how Apply works.
type Options struct {
	// Root is the filesystem root ("/" on a node, a temp dir in tests).
	Root string
	// Systemd applies enabled/mask; nil skips that part (the unit files are still written).
	Systemd Systemd
	Log     *slog.Logger
}

// Apply applies cfg: groups and users, then storage nodes (parents first), then units. A failing item does not
// stop the others (a wrong file mode must not leave the admin without their account); all failures are
// returned joined, each naming its field.
func Apply(ctx context.Context, cfg *types.Config, opts Options) error {
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	root := opts.Root
	if root == "" {
		root = "/"
	}
	var errs []error
	acc, err := loadAccounts(root)
	if err != nil {
		return err
	}
	for i, g := range cfg.Passwd.Groups {
		if err := acc.ensureGroup(i, g); err != nil {
			errs = append(errs, err)
		}
	}
	type newHome struct {
		path     string
		uid, gid int
	}
	var homes []newHome
	for i, u := range cfg.Passwd.Users {
		home, uid, gid, created, err := acc.ensureUser(i, u, func(home string) (int, bool) {
			fi, err := os.Stat(filepath.Join(root, home))
			if err != nil {
				return 0, false
			}
			uid, _ := ids(fi)
			return uid, uid >= 0
		})
		if err != nil {
			errs = append(errs, err)
		}
		if created {
			log.Info("user added", "user", u.Name, "uid", uid, "home", home)
			homes = append(homes, newHome{home, uid, gid})
		}
	}
	if err := acc.write(); err != nil {
		return errors.Join(append(errs, err)...)
	}
	for _, h := range homes {
		if err := makeHome(root, h.path, h.uid, h.gid); err != nil {
			errs = append(errs, fmt.Errorf("ignite: home %s: %w", h.path, err))
		}
	}

	for _, n := range storageNodes(cfg.Storage) {
		changed, err := applyNode(root, acc, n)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s (%s): %w", n.at, n.path, err))
			continue
		}
		if changed {
			log.Info("storage node written", "path", n.path)
		}
	}

	changed, err := writeUnits(root, cfg.Systemd.Units)
	if err != nil {
		errs = append(errs, err)
	}
	if opts.Systemd != nil && len(cfg.Systemd.Units) > 0 {
		if err := activateUnits(ctx, opts.Systemd, changed, cfg.Systemd.Units); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// makeHome creates a home under /var (it persists, so only on a user's first boot) from /etc/skel. An existing
// home is left alone: it is the user's.
func makeHome(root, home string, uid, gid int) error {
	dir, err := resolveIn(root, home)
	if err != nil {
		return err
	}
	if _, err := os.Lstat(dir); err == nil {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return err
	}
	// Build it beside, then rename: a crash mid-copy must not leave a half home that the check above would keep.
	tmp, err := os.MkdirTemp(filepath.Dir(dir), ".home-*")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	skel := filepath.Join(root, "etc/skel")
	err = filepath.WalkDir(skel, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) && p == skel {
				return filepath.SkipAll
			}
			return err
		}
		rel, _ := filepath.Rel(skel, p)
		dst := filepath.Join(tmp, rel)
		switch {
		case rel == ".":
			return nil
		case d.IsDir():
			if err := os.Mkdir(dst, 0o755); err != nil {
				return err
			}
		case d.Type().IsRegular():
			fi, err := d.Info()
			if err != nil {
				return err
			}
			if err := files.Copy(context.Background(), dst, p, fi.Mode().Perm()); err != nil {
				return err
			}
		default:
			return nil // skel holds no links or devices worth copying
		}
		return os.Lchown(dst, uid, gid)
	})
	if err != nil {
		return err
	}
	// Debian 12's HOME_MODE: homes are private.
	if err := os.Chmod(tmp, 0o700); err != nil {
		return err
	}
	if err := os.Lchown(tmp, uid, gid); err != nil {
		return err
	}
	return os.Rename(tmp, dir)
}

// Load reads and parses the config at path (Parse's notes are logged).
func Load(path string, log *slog.Logger) (*types.Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("ignition: %w", err)
	}
	cfg, notes, err := Parse(data)
	for _, n := range notes {
		if log != nil {
			log.Warn("ignition config", "note", n)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return cfg, nil
}

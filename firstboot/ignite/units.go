package ignite

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/coreos/go-systemd/v22/dbus"
	"github.com/coreos/ignition/v2/config/v3_3/types"
)

// UnitDir is where unit files and drop-ins go: /etc is the only writable place systemd reads units from
// that survives a daemon-reload, and it starts from the image on every boot, as ignite expects.
const UnitDir = "/etc/systemd/system"

// Systemd is the part of systemd ignite drives; dbusSystemd talks to PID 1, tests record the calls.
type Systemd interface {
	Reload(ctx context.Context) error
	// Enable enables units for this boot only (runtime: /run), since / is read-only and /etc resets anyway.
	Enable(ctx context.Context, units []string) error
	Disable(ctx context.Context, units []string) error
	// Start queues a start job and does not wait: ignite runs inside the boot transaction, and a unit ordered
	// after it (multi-user.target, say) would wait for ignite while ignite waits for it.
	Start(ctx context.Context, unit string) error
	Stop(ctx context.Context, unit string) error
}

// unitName checks that a unit name is a plain file name with a unit suffix (it becomes a path).
func unitName(name string) error {
	if name == "" || strings.ContainsAny(name, "/\x00") || strings.HasPrefix(name, ".") {
		return fmt.Errorf("%q is not a unit file name", name)
	}
	i := strings.LastIndexByte(name, '.')
	if i < 1 {
		return fmt.Errorf("%q has no unit type suffix", name)
	}
	switch name[i+1:] {
	case "service", "socket", "target", "timer", "path", "mount", "automount", "swap", "slice", "scope", "device":
		return nil
	}
	return fmt.Errorf("%q: unknown unit type %q", name, name[i+1:])
}

// writeUnits writes unit files, drop-ins and masks under root; it reports whether any file changed (then
// systemd must reload).
func writeUnits(root string, units []types.Unit) (bool, error) {
	dir := filepath.Join(root, UnitDir)
	changed := false
	var errs []error
	for i, u := range units {
		at := fmt.Sprintf("systemd.units[%d]", i)
		if err := unitName(u.Name); err != nil {
			errs = append(errs, fmt.Errorf("%s.name: %w", at, err))
			continue
		}
		path := filepath.Join(dir, u.Name)
		if boolOf(u.Mask) {
			c, err := ensureSymlink(path, "/dev/null")
			changed = changed || c
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: mask: %w", at, err))
			}
			continue
		}
		if u.Contents != nil {
			c, err := writeIfChanged(path, []byte(*u.Contents))
			changed = changed || c
			if err != nil {
				errs = append(errs, fmt.Errorf("%s.contents: %w", at, err))
			}
		}
		for j, d := range u.Dropins {
			dat := fmt.Sprintf("%s.dropins[%d]", at, j)
			if d.Name == "" || strings.ContainsAny(d.Name, "/\x00") || !strings.HasSuffix(d.Name, ".conf") {
				errs = append(errs, fmt.Errorf("%s.name: %q is not a drop-in file name (*.conf)", dat, d.Name))
				continue
			}
			if d.Contents == nil {
				continue
			}
			c, err := writeIfChanged(filepath.Join(dir, u.Name+".d", d.Name), []byte(*d.Contents))
			changed = changed || c
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", dat, err))
			}
		}
	}
	return changed, errors.Join(errs...)
}

// activateUnits applies enabled/mask through systemd after the files are in place.
func activateUnits(ctx context.Context, sd Systemd, reload bool, units []types.Unit) error {
	if reload {
		if err := sd.Reload(ctx); err != nil {
			return fmt.Errorf("systemd: daemon-reload: %w", err)
		}
	}
	var errs []error
	for _, u := range units {
		if unitName(u.Name) != nil {
			continue // reported by writeUnits
		}
		switch {
		case boolOf(u.Mask):
			if err := sd.Stop(ctx, u.Name); err != nil {
				errs = append(errs, fmt.Errorf("systemd: stop masked %s: %w", u.Name, err))
			}
		case u.Enabled == nil:
		case *u.Enabled:
			if err := sd.Enable(ctx, []string{u.Name}); err != nil {
				errs = append(errs, fmt.Errorf("systemd: enable %s: %w", u.Name, err))
				continue
			}
			if err := sd.Start(ctx, u.Name); err != nil {
				errs = append(errs, fmt.Errorf("systemd: start %s: %w", u.Name, err))
			}
		default:
			if err := sd.Disable(ctx, []string{u.Name}); err != nil {
				errs = append(errs, fmt.Errorf("systemd: disable %s: %w", u.Name, err))
			}
			if err := sd.Stop(ctx, u.Name); err != nil {
				errs = append(errs, fmt.Errorf("systemd: stop %s: %w", u.Name, err))
			}
		}
	}
	return errors.Join(errs...)
}

func writeIfChanged(path string, data []byte) (bool, error) {
	if old, err := os.ReadFile(path); err == nil && string(old) == string(data) {
		return false, nil
	}
	return true, writeFileAtomic(path, data, 0o644, 0, 0)
}

func ensureSymlink(path, target string) (bool, error) {
	if cur, err := os.Readlink(path); err == nil && cur == target {
		return false, nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return false, err
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return false, err
	}
	return true, os.Symlink(target, path)
}

// DBus is the Systemd implementation that talks to PID 1 over D-Bus.
type DBus struct {
	conn *dbus.Conn
}

// NewDBus connects to the system manager.
func NewDBus(ctx context.Context) (*DBus, error) {
	c, err := dbus.NewSystemConnectionContext(ctx)
	if err != nil {
		return nil, fmt.Errorf("systemd: connect: %w", err)
	}
	return &DBus{conn: c}, nil
}

func (d *DBus) Close() { d.conn.Close() }

func (d *DBus) Reload(ctx context.Context) error { return d.conn.ReloadContext(ctx) }

func (d *DBus) Enable(ctx context.Context, units []string) error {
	_, _, err := d.conn.EnableUnitFilesContext(ctx, units, true, true)
	return err
}

func (d *DBus) Disable(ctx context.Context, units []string) error {
	// Both scopes: the image may enable it in /etc, an earlier run in /run.
	if _, err := d.conn.DisableUnitFilesContext(ctx, units, true); err != nil {
		return err
	}
	_, err := d.conn.DisableUnitFilesContext(ctx, units, false)
	return err
}

func (d *DBus) Start(ctx context.Context, unit string) error {
	_, err := d.conn.StartUnitContext(ctx, unit, "replace", nil)
	return err
}

func (d *DBus) Stop(ctx context.Context, unit string) error {
	_, err := d.conn.StopUnitContext(ctx, unit, "replace", nil)
	return err
}

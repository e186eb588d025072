package gluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/kiln-project/kiln/firstboot/gluster/glusterd"
	"github.com/kiln-project/kiln/firstboot/glustertls"
	"github.com/kiln-project/kiln/firstboot/state"
	"github.com/kiln-project/kiln/internal/files"
)

func (r *Reconciler) act(ctx context.Context, a Action) error {
	var err error
	switch a.Kind {
	case ActProbe:
		err = r.cli.Probe(ctx, a.Host)
	case ActCreate:
		err = r.cli.Create(ctx, VolumeName, a.Replica, a.Bricks)
	case ActSet:
		err = r.cli.Set(ctx, VolumeName, a.Options...)
	case ActStart:
		err = r.cli.Start(ctx, VolumeName)
	case ActStartForce:
		err = r.cli.op(ctx, "volume", "start", VolumeName, "force")
		r.mem.offlineSince = r.now() // the next start, if the brick stays down, after brickStartRetry
	case ActHeal:
		err = r.cli.Heal(ctx, VolumeName, false)
	case ActHealFull:
		err = r.cli.Heal(ctx, VolumeName, true)
	case ActReplaceBrick:
		err = r.cli.op(ctx, "volume", "replace-brick", VolumeName, a.Bricks[0], a.Bricks[1], "commit", "force")
	case ActDetach:
		// force: the peer is gone for good and holds no brick (checked by PlanHeal); a plain detach
		// refuses a disconnected peer.
		err = r.cli.op(ctx, "peer", "detach", a.Host, "force")
	case ActAdoptUUID:
		err = r.adoptUUID(ctx, a.Value, a.Pool)
	case ActPrepareBrick:
		// Owed first: a crash between the two leaves a heal owed for a brick that gets prepared next pass.
		if err = glusterd.WriteMarker(filepath.Join(r.root, FullHealOwedFile), a.Value); err == nil {
			err = glusterd.PrepareBrick(filepath.Join(r.root, BrickPath), a.Value)
		}
	case ActHealOwnBrick:
		if err = r.cli.Heal(ctx, VolumeName, true); err == nil {
			err = os.Remove(filepath.Join(r.root, FullHealOwedFile))
		}
	case ActAddBrick:
		err = r.cli.op(ctx, append([]string{"volume", "add-brick", VolumeName, "replica", fmt.Sprint(a.Replica)}, a.Bricks...)...)
	case ActRemoveBricks:
		err = r.cli.op(ctx, append(append([]string{"volume", "remove-brick", VolumeName, "replica", fmt.Sprint(a.Replica)}, a.Bricks...), "force")...)
	case ActResetPeer:
		err = r.resetPeer(ctx, a.Value)
	case ActRestartGlusterd:
		err = r.restartGlusterd(ctx)
	default:
		err = fmt.Errorf("unknown action %q", a.Kind)
	}
	if err != nil {
		return fmt.Errorf("gluster: %s: %w", a, err)
	}
	return nil
}

// stopper is implemented by *sdunit.Conn (not part of sdunit.Manager).
type stopper interface {
	Stop(ctx context.Context, unit string) error
}

// GlusterdUnit is glusterd's systemd unit.
const GlusterdUnit = "glusterd.service"

// glusterdStartTimeout bounds the start that follows a stop (whileStopped), which no longer depends on the
// pass's context.
const glusterdStartTimeout = 2 * time.Minute

// whileStopped stops glusterd, runs fn (which may rewrite glusterd's files) and starts glusterd again. The start
// runs whatever fn returned and whether or not the pass's context was cancelled meanwhile (a shutdown, the pass
// timeout), on a context of its own: a stop without its start would leave the node's storage down with nothing
// to start it but the next pass's check (ensureGlusterd).
func (r *Reconciler) whileStopped(ctx context.Context, what string, fn func() error) error {
	st, ok := r.systemd.(stopper)
	if !ok {
		return fmt.Errorf("gluster: %s: systemd manager cannot stop units", what)
	}
	if err := st.Stop(ctx, GlusterdUnit); err != nil {
		return fmt.Errorf("gluster: %s: %w", what, err)
	}
	ferr := fn()
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), glusterdStartTimeout)
	defer cancel()
	if err := r.systemd.Start(sctx, GlusterdUnit); err != nil {
		return errors.Join(ferr, fmt.Errorf("gluster: %s: start glusterd: %w", what, err))
	}
	if ferr != nil {
		return fmt.Errorf("gluster: %s: %w", what, ferr)
	}
	return nil
}

// ensureGlusterd starts glusterd when systemd reports it inactive or failed: it is the ground every other step
// stands on, and a crash or an interrupted restart must not leave it down until someone notices.
func (r *Reconciler) ensureGlusterd(ctx context.Context) (bool, error) {
	state, err := r.systemd.ActiveState(ctx, GlusterdUnit)
	if err != nil {
		return false, fmt.Errorf("gluster: glusterd state: %w", err)
	}
	if state != "inactive" && state != "failed" {
		return false, nil
	}
	r.log.Warn("gluster: glusterd is not running; starting it", "state", state)
	if err := r.systemd.Start(ctx, GlusterdUnit); err != nil {
		return false, fmt.Errorf("gluster: start glusterd (was %s): %w", state, err)
	}
	return true, nil
}

// restartGlusterd stops and starts glusterd.
func (r *Reconciler) restartGlusterd(ctx context.Context) error {
	return r.whileStopped(ctx, "restart glusterd", func() error { return nil })
}

// adoptUUID stops glusterd, writes the old UUID into glusterd.info and the pool's peer files, and starts
// glusterd again.
//
// The peer files are why this converges every time: a glusterd that only knows its UUID has to probe its way
// back, and then rejects the handshakes of the members it has not heard of yet ("Rejecting management
// handshake request from unknown peer"); the pool's view of it stays half-accepted until a
// restart happens to catch the friend update. With every member on file as "Peer in Cluster" it
// handshakes with all of them at start, as after an ordinary reboot, and imports the volume from them.
func (r *Reconciler) adoptUUID(ctx context.Context, id string, pool map[string]string) error {
	if _, err := glusterd.ParseUUID(id); err != nil {
		return fmt.Errorf("gluster: adopt UUID %q: %w", id, err)
	}
	return r.whileStopped(ctx, "adopt UUID", func() error {
		if err := glusterd.WriteUUID(filepath.Join(r.root, glusterd.InfoFile), id); err != nil {
			return err
		}
		return glusterd.WritePeerFiles(filepath.Join(r.root, glusterd.PeersDir), pool)
	})
}

// resetPeer stops glusterd, sets its state directory and this node's brick aside (renamed, never deleted:
// they may hold writes the survivor never saw, for a human to salvage), and starts a fresh glusterd.
func (r *Reconciler) resetPeer(ctx context.Context, epoch string) error {
	return r.whileStopped(ctx, "reset peer", func() error {
		suffix := ".before-epoch-" + epoch + "." + r.now().UTC().Format("20060102T150405")
		tls := glustertls.Enabled(r.root)
		for _, p := range []string{glusterd.StateDir, BrickPath} {
			path := filepath.Join(r.root, p)
			if err := glusterd.SetAside(path, suffix); err != nil {
				return fmt.Errorf("set %s aside: %w", path, err)
			}
		}
		if tls {
			// The switch lives in glusterd's state directory; the fresh glusterd must speak TLS from its
			// start, as this node's gossip still says it does.
			if err := glustertls.Enable(r.root); err != nil {
				return err
			}
		}
		// Recorded before glusterd starts: from here on its state is the new epoch's.
		return glusterd.WriteMarker(filepath.Join(r.root, glusterd.ResetEpochFile), epoch)
	})
}

// mount writes the mount unit when it differs, reloads systemd, and starts the mount if it is not active.
func (r *Reconciler) mount(ctx context.Context, s *state.State) (bool, error) {
	unit := RenderMountUnit(s.Self.Addr, backupServers(s))
	path := filepath.Join(r.root, UnitPath)
	old, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return false, fmt.Errorf("gluster: read %s: %w", path, err)
	}
	changed := false
	if !bytes.Equal(old, []byte(unit)) {
		if err := files.Write(path, []byte(unit), 0o644); err != nil {
			return false, fmt.Errorf("gluster: %w", err)
		}
		if err := r.systemd.DaemonReload(ctx); err != nil {
			return true, fmt.Errorf("gluster: %w", err)
		}
		changed = true
	}
	state, err := r.systemd.ActiveState(ctx, MountUnit)
	if err != nil {
		return changed, fmt.Errorf("gluster: %w", err)
	}
	if state != "active" {
		if err := os.MkdirAll(filepath.Join(r.root, MountPoint), 0o755); err != nil {
			return changed, fmt.Errorf("gluster: mount point: %w", err)
		}
		r.log.Info("gluster: mounting", "unit", MountUnit, "was", state)
		if err := r.systemd.Start(ctx, MountUnit); err != nil {
			return changed, fmt.Errorf("gluster: mount %s: %w", MountPoint, err)
		}
		changed = true
	}
	return changed, nil
}

// RenderMountUnit returns the var-data.mount unit. The volfile comes from this node's glusterd; if that is
// down the client asks the backup servers, so a node can mount while its own glusterd restarts.
func RenderMountUnit(self netip.Addr, backups []netip.Addr) string {
	opts := []string{"_netdev"}
	if len(backups) > 0 {
		var bs []string
		for _, b := range backups {
			bs = append(bs, b.String())
		}
		opts = append([]string{"backup-volfile-servers=" + strings.Join(bs, ":")}, opts...)
	}
	return fmt.Sprintf(`# Generated by kiln-firstboot: the GlusterFS volume %[1]s on every node.
[Unit]
Description=kiln shared volume %[1]s
Requires=glusterd.service
After=glusterd.service network-online.target
Wants=network-online.target

[Mount]
What=%[2]s:/%[1]s
Where=%[3]s
Type=glusterfs
Options=%[4]s
TimeoutSec=90
`, VolumeName, self, MountPoint, strings.Join(opts, ","))
}

// backupServers are the other members' addresses (alive or not: the list is only tried in order).
func backupServers(s *state.State) []netip.Addr {
	var out []netip.Addr
	for _, a := range addrs(s.Members) {
		if a != s.Self.Addr.Unmap() {
			out = append(out, a)
		}
	}
	return out
}

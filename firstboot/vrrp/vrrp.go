package vrrp

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/netip"
	"os"
	"slices"

	"github.com/kiln-project/kiln/firstboot/netif"
	"github.com/kiln-project/kiln/firstboot/sdunit"
	"github.com/kiln-project/kiln/firstboot/state"
	"github.com/kiln-project/kiln/internal/files"
)

// ConfigPath is where the agent writes keepalived.conf; keepalived.service is started with -f on it through the
// image's drop-in (see DropIn).
const ConfigPath = "/run/kiln/keepalived.conf"

// Unit is keepalived's systemd unit.
const Unit = "keepalived.service"

// DropIn is the content of /etc/systemd/system/keepalived.service.d/kiln.conf in the image: keepalived reads
// the agent's file, and does not start before the agent has written one (Debian's unit would start it at boot
// with the empty /etc/keepalived/keepalived.conf, holding no VIP but logging errors).
const DropIn = `[Unit]
ConditionFileNotEmpty=
ConditionFileNotEmpty=/run/kiln/keepalived.conf

[Service]
ExecStart=
ExecStart=/usr/sbin/keepalived --dont-fork -f /run/kiln/keepalived.conf $DAEMON_ARGS
`

// Addrs is the part of *netlink.Handle used to see which addresses an interface carries.
type Addrs = netif.Addrs

// Reconciler keeps ConfigPath equal to Render(state) and keepalived running it.
type Reconciler struct {
	systemd sdunit.Manager
	addrs   Addrs
	path    string
	log     *slog.Logger
}

// New returns the VRRP reconciler. addrs is usually netlink.NewHandle(); path is usually ConfigPath.
func New(systemd sdunit.Manager, addrs Addrs, path string, log *slog.Logger) *Reconciler {
	return &Reconciler{systemd: systemd, addrs: addrs, path: path, log: log}
}

// Name implements state.Reconciler.
func (r *Reconciler) Name() string { return "vrrp" }

// ConfigFor derives the keepalived config from the agent state.
func ConfigFor(s *state.State) Config {
	cfg := Config{
		ClusterName: s.ClusterName, VIP: s.VIP, Interface: s.Interface,
		SelfID: s.Self.ID, SelfAddr: s.Self.Addr,
	}
	// The rank counts every member ever seen, departed ones included, so priorities never shift under a
	// running cluster. Recorded members not seen again yet are peers (state.PeerAddrs): keepalived in unicast
	// mode only hears its listed peers, so a node that booted seeing nobody would otherwise become master
	// beside the VIP's holder.
	ids := []string{s.Self.ID}
	for _, m := range s.Members {
		ids = append(ids, m.ID)
	}
	for _, a := range s.PeerAddrs() {
		if a != s.Self.Addr.Unmap() {
			cfg.Peers = append(cfg.Peers, a)
		}
	}
	slices.Sort(ids)
	cfg.Rank = slices.Index(slices.Compact(ids), s.Self.ID)
	return cfg
}

// Reconcile renders the config, writes it and reloads keepalived when it changed, starts keepalived when it is
// not running, and reports who holds the VIP on this node.
func (r *Reconciler) Reconcile(ctx context.Context, s *state.State) (bool, error) {
	conf, err := Render(ConfigFor(s))
	if err != nil {
		return false, err
	}
	old, err := os.ReadFile(r.path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return false, fmt.Errorf("vrrp: read %s: %w", r.path, err)
	}
	changed := false
	if !bytes.Equal(old, []byte(conf)) {
		if err := files.Write(r.path, []byte(conf), 0o644); err != nil {
			return false, fmt.Errorf("vrrp: %w", err)
		}
		changed = true
	}
	state, err := r.systemd.ActiveState(ctx, Unit)
	if err != nil {
		return changed, fmt.Errorf("vrrp: %w", err)
	}
	switch {
	case state != "active":
		// Start (not reload) when down: a reload of a stopped unit fails, and a failed one needs a fresh start.
		if err := r.systemd.Start(ctx, Unit); err != nil {
			return changed, fmt.Errorf("vrrp: %w", err)
		}
		r.log.Info("vrrp: started keepalived", "was", state, "vip", s.VIP, "dev", s.Interface)
		changed = true
	case changed:
		// keepalived's reload (SIGHUP) keeps the current master/backup state where it can, so a membership
		// change does not move the VIP.
		if err := r.systemd.ReloadOrRestart(ctx, Unit); err != nil {
			return changed, fmt.Errorf("vrrp: %w", err)
		}
		r.log.Info("vrrp: reloaded keepalived", "vip", s.VIP, "dev", s.Interface)
	}
	holds, err := HoldsVIP(r.addrs, s.Interface, s.VIP.Addr())
	if err != nil {
		return changed, err
	}
	if holds {
		s.Set("vrrp", "holds VIP "+s.VIP.String())
	} else {
		s.Set("vrrp", "backup for VIP "+s.VIP.String())
	}
	return changed, nil
}

// HoldsVIP reports whether interface ifname carries vip (i.e. this node's keepalived is master).
func HoldsVIP(h Addrs, ifname string, vip netip.Addr) (bool, error) {
	holds, err := netif.Carries(h, ifname, vip)
	if err != nil {
		return false, fmt.Errorf("vrrp: %w", err)
	}
	return holds, nil
}

// Package dhcp runs dnsmasq as the lab network's DHCP server: static leases only (one per node MAC), no DNS,
// inside the lab's namespace.
package dhcp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/kiln-project/kiln/internal/files"
	"github.com/kiln-project/kiln/internal/pidfile"
	"github.com/kiln-project/kiln/internal/run"
)

// Host is one static lease.
type Host struct {
	MAC string
	IP  net.IP
}

// Config is one dnsmasq instance.
type Config struct {
	// Interface dnsmasq serves (the lab bridge).
	Interface string
	// Subnet is the lab network, e.g. 10.77.0.0/24; only hosts listed in HostsFile get an address in it.
	Subnet *net.IPNet
	// Router is announced as the default gateway: the lab host's bridge address. Nothing is routed beyond it, but
	// nodes need a default route to pick their interface (docker swarm's advertise address, the agent's default).
	Router net.IP
	// Dir holds the config, hosts file, leases, log and pid file.
	Dir string
}

// Files dnsmasq uses, under Config.Dir.
func (c Config) ConfFile() string  { return filepath.Join(c.Dir, "dnsmasq.conf") }
func (c Config) HostsFile() string { return filepath.Join(c.Dir, "dhcp-hosts") }
func (c Config) PidFile() string   { return filepath.Join(c.Dir, "dnsmasq.pid") }
func (c Config) LeaseFile() string { return filepath.Join(c.Dir, "dnsmasq.leases") }
func (c Config) LogFile() string   { return filepath.Join(c.Dir, "dnsmasq.log") }

// RenderConf is dnsmasq.conf for c. Pure: golden-tested.
func RenderConf(c Config) string {
	mask := net.IP(c.Subnet.Mask).String()
	lines := []string{
		"# kiln lab DHCP: static leases only, no DNS. Generated; do not edit.",
		"port=0", // no DNS server: nothing may resolve or forward out of the lab
		"no-resolv",
		"no-hosts",
		"interface=" + c.Interface,
		"bind-interfaces",
		"except-interface=lo",
		// "static": addresses only for MACs listed in the hosts file, so a stray client gets nothing.
		fmt.Sprintf("dhcp-range=%s,static,%s,1h", c.Subnet.IP, mask),
		"dhcp-hostsfile=" + c.HostsFile(), // re-read on SIGHUP when nodes are replaced or added
		"dhcp-option=option:router," + c.Router.String(),
		"dhcp-authoritative",
		"dhcp-leasefile=" + c.LeaseFile(),
		"pid-file=" + c.PidFile(),
		"log-facility=" + c.LogFile(),
		"log-dhcp",
		// Stay root: the state dir is root's, and hosts-file re-reads after SIGHUP must still be able to read it.
		"user=root",
	}
	return strings.Join(lines, "\n") + "\n"
}

// RenderHosts is the dhcp-hostsfile: "MAC,IP" per line, sorted by IP. No hostname is handed out: nodes derive
// their own from their hardware.
func RenderHosts(hosts []Host) string {
	hosts = append([]Host(nil), hosts...)
	sort.Slice(hosts, func(i, j int) bool { return string(hosts[i].IP.To16()) < string(hosts[j].IP.To16()) })
	var b strings.Builder
	for _, h := range hosts {
		fmt.Fprintf(&b, "%s,%s\n", h.MAC, h.IP)
	}
	return b.String()
}

// WriteHosts replaces the hosts file atomically.
func WriteHosts(c Config, hosts []Host) error {
	return writeAtomic(c.HostsFile(), []byte(RenderHosts(hosts)))
}

// Start writes the config and starts dnsmasq in namespace ns (it daemonizes and writes its pid file).
// Returns the pid. If one is already running for c, that pid is returned.
func Start(ctx context.Context, ns string, c Config, hosts []Host) (int, error) {
	if pid, ok := Running(c); ok {
		return pid, nil
	}
	if err := writeAtomic(c.ConfFile(), []byte(RenderConf(c))); err != nil {
		return 0, err
	}
	if err := WriteHosts(c, hosts); err != nil {
		return 0, err
	}
	if _, err := run.Cmd(ctx, "ip", "netns", "exec", ns, "dnsmasq", "--conf-file="+c.ConfFile()); err != nil {
		return 0, fmt.Errorf("dhcp: start dnsmasq in %s: %w", ns, err)
	}
	// dnsmasq writes its pid file before the parent returns; the daemon is live from then on.
	pid, ok := Running(c)
	if !ok {
		return 0, fmt.Errorf("dhcp: dnsmasq in %s exited right after start (see %s)", ns, c.LogFile())
	}
	return pid, nil
}

// Reload makes a running dnsmasq re-read the hosts file.
func Reload(c Config, hosts []Host) error {
	if err := WriteHosts(c, hosts); err != nil {
		return err
	}
	pid, ok := Running(c)
	if !ok {
		return fmt.Errorf("dhcp: reload: dnsmasq for %s not running", c.Dir)
	}
	if err := syscall.Kill(pid, syscall.SIGHUP); err != nil {
		return fmt.Errorf("dhcp: reload pid %d: %w", pid, err)
	}
	return nil
}

// Running reports dnsmasq's pid and whether it is alive. The pid is only believed if the process's command line
// names our config file: pids get reused.
func Running(c Config) (int, bool) { return pidfile.Running(c.PidFile(), c.ConfFile()) }

// Stop terminates dnsmasq and waits (bounded by ctx) until it is gone. Stopping a stopped one is not an error.
func Stop(ctx context.Context, c Config) error {
	pid, ok := Running(c)
	if !ok {
		return nil
	}
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("dhcp: stop pid %d: %w", pid, err)
	}
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		if _, ok := Running(c); !ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("dhcp: wait for dnsmasq pid %d to exit: %w", pid, ctx.Err())
		case <-t.C:
		}
	}
}

func writeAtomic(path string, b []byte) error {
	if err := files.Write(path, b, 0o644); err != nil {
		return fmt.Errorf("dhcp: %w", err)
	}
	return nil
}

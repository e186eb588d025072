package lab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/kiln-project/kiln/internal/files"
	"github.com/kiln-project/kiln/internal/pidfile"
	"github.com/kiln-project/kiln/lab/netns"
	"github.com/kiln-project/kiln/pxe/pxedir"
)

// Boot modes of a lab's nodes.
const (
	// BootDisk: every node's disk is a copy-on-write overlay of the image, booted by its firmware.
	BootDisk = "disk"
	// BootPXE: every node has blank disks and boots from its NIC, through `kiln pxe serve` running in the lab's
	// namespace as a proxyDHCP server beside the lab's own plain DHCP server, as a laptop in a garage would.
	BootPXE = "pxe"
)

// PXEHTTPPort is the port the lab's `kiln pxe serve` answers HTTP on.
const PXEHTTPPort = 8080

// pxeReadyTimeout bounds the wait for a fresh `kiln pxe serve` to answer HTTP: it hashes the layers at start.
const pxeReadyTimeout = 60 * time.Second

func (l *Lab) pxeConfigPath() string { return filepath.Join(l.dir, "pxe-config.yaml") }
func (l *Lab) pxePidFile() string    { return filepath.Join(l.dir, "pxe.pid") }

// PXELog is the log of the lab's `kiln pxe serve` (one line per node and file served).
func (l *Lab) PXELog() string { return filepath.Join(l.dir, "pxe.log") }

// PXELogTail is the last n lines of PXELog, for failure reports.
func (l *Lab) PXELogTail(n int) string { return files.Tail(l.PXELog(), n) }

// checkPXEDir reports what makes dir unusable as a pxe artifact directory.
func checkPXEDir(dir string) error {
	if dir == "" {
		return errors.New("pxe-dir: not set (boot pxe needs OUT/pxe of a build with the pxe format)")
	}
	if _, err := os.Stat(filepath.Join(dir, pxedir.Manifest)); err != nil {
		return fmt.Errorf("pxe-dir: %s is not a kiln pxe directory (no pxe.json; build with --format pxe): %w", dir, err)
	}
	return nil
}

// startPXE (re)starts the lab's `kiln pxe serve` for the current nodes: the config is served only to their
// MACs, so it is restarted whenever a machine is added or replaced. The caller holds the state locks.
func (l *Lab) startPXE(ctx context.Context, st State) error {
	if err := l.stopPXE(ctx); err != nil {
		return err
	}
	pub, err := os.ReadFile(l.keyPath() + ".pub")
	if err != nil {
		return fmt.Errorf("lab %s: ssh key: %w", l.name, err)
	}
	cluster, err := os.ReadFile(l.clusterConfigPath())
	if err != nil {
		return fmt.Errorf("lab %s: boot pxe: cluster config: %w", l.name, err)
	}
	cfg, err := nodeConfig(cluster, string(pub))
	if err != nil {
		return err
	}
	if err := os.WriteFile(l.pxeConfigPath(), cfg, 0o600); err != nil {
		return fmt.Errorf("lab %s: %w", l.name, err)
	}
	args := []string{"netns", "exec", l.Namespace(), st.KilnBin, "pxe", "serve", "--dir", st.PXEDir,
		"--config", l.pxeConfigPath(), "--interface", Bridge, "--http-port", strconv.Itoa(PXEHTTPPort)}
	for _, n := range st.Nodes {
		args = append(args, "--allow-mac", n.MAC)
	}
	logf, err := os.OpenFile(l.PXELog(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("lab %s: %w", l.name, err)
	}
	defer logf.Close()
	cmd := exec.Command("ip", args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own session: the server outlives the kiln command that started it, like the VMs and dnsmasq.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("lab %s: start kiln pxe serve: %w", l.name, err)
	}
	pid := cmd.Process.Pid
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	if err := os.WriteFile(l.pxePidFile(), []byte(strconv.Itoa(pid)+"\n"), 0o644); err != nil {
		_ = cmd.Process.Kill()
		return fmt.Errorf("lab %s: %w", l.name, err)
	}
	host, _ := netns.HostAddr(HostCIDR)
	addr := net.JoinHostPort(host.String(), strconv.Itoa(PXEHTTPPort))
	deadline := time.Now().Add(pxeReadyTimeout)
	for {
		select {
		case err := <-exited:
			return fmt.Errorf("lab %s: kiln pxe serve exited at start (%v): %s", l.name, err, l.PXELogTail(10))
		default:
		}
		dialErr := netns.Do(l.Namespace(), func() error {
			c, err := net.DialTimeout("tcp", addr, time.Second)
			if err == nil {
				c.Close()
			}
			return err
		})
		if dialErr == nil {
			l.log.Info("pxe server up", "pid", pid, "http", addr, "dir", st.PXEDir, "log", l.PXELog())
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("lab %s: kiln pxe serve does not answer on %s after %s: %s", l.name, addr, pxeReadyTimeout, l.PXELogTail(10))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// pxeRunning returns the pid of the lab's `kiln pxe serve`, believed only when its command line names this
// lab's config file (pids get reused).
func (l *Lab) pxeRunning() (int, bool) { return pidfile.Running(l.pxePidFile(), l.pxeConfigPath()) }

// stopPXE ends the lab's `kiln pxe serve`, if one runs, and waits until it is gone.
func (l *Lab) stopPXE(ctx context.Context) error {
	pid, ok := l.pxeRunning()
	if !ok {
		return nil
	}
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("lab %s: stop kiln pxe serve (pid %d): %w", l.name, pid, err)
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for {
		if _, ok := l.pxeRunning(); !ok {
			return nil
		}
		select {
		case <-ctx.Done():
			_ = syscall.Kill(pid, syscall.SIGKILL)
			return fmt.Errorf("lab %s: kiln pxe serve (pid %d) ignored SIGTERM; killed", l.name, pid)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

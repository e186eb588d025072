package agents

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/kiln-project/kiln/firstboot/gluster"
	"github.com/kiln-project/kiln/firstboot/vrrp"
	"github.com/kiln-project/kiln/internal/run"
)

// units plays systemd for an agent inside a bench node (no init system there): it runs glusterd, keepalived
// and the volume's FUSE mount as the agent's children, in the node's namespaces the agent runs in.
type units struct {
	// logDir receives each daemon's output.
	logDir string
	// mu guards procs: the reconcile loop and the health reporter may both ask.
	mu    sync.Mutex
	procs map[string]*proc
}

type proc struct {
	cmd    *exec.Cmd
	exited chan struct{}
}

func (p *proc) running() bool {
	if p == nil {
		return false
	}
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

func newUnits(logDir string) *units { return &units{logDir: logDir, procs: map[string]*proc{}} }

func (u *units) DaemonReload(context.Context) error { return nil }

func (u *units) Start(ctx context.Context, unit string) error {
	switch unit {
	case "glusterd.service":
		return u.startGlusterd(ctx)
	case gluster.MountUnit:
		if mounted(ctx) {
			return nil
		}
		what, err := mountSource()
		if err != nil {
			return err
		}
		_, err = run.Cmd(ctx, "mount", "-t", "glusterfs", what, gluster.MountPoint)
		return err
	case vrrp.Unit:
		return u.ReloadOrRestart(ctx, unit)
	}
	return fmt.Errorf("bench units: start %s: unknown unit", unit)
}

func (u *units) Stop(ctx context.Context, unit string) error {
	if unit != "glusterd.service" {
		return fmt.Errorf("bench units: stop %s: unknown unit", unit)
	}
	return u.stopGlusterd(ctx)
}

func (u *units) ReloadOrRestart(ctx context.Context, unit string) error {
	switch unit {
	case vrrp.Unit:
		u.mu.Lock()
		defer u.mu.Unlock()
		if p := u.procs[unit]; p.running() {
			return p.cmd.Process.Signal(syscall.SIGHUP) // keepalived reloads its config on SIGHUP
		}
		p, err := u.spawn("keepalived", "keepalived", "--dont-fork", "--log-console", "-f", vrrp.ConfigPath,
			"-p", "/run/keepalived.pid", "-r", "/run/keepalived-vrrp.pid")
		if err != nil {
			return err
		}
		u.procs[unit] = p
		return nil
	case "glusterd.service":
		if err := u.Stop(ctx, unit); err != nil {
			return err
		}
		return u.startGlusterd(ctx)
	}
	return fmt.Errorf("bench units: restart %s: unknown unit", unit)
}

func (u *units) ActiveState(ctx context.Context, unit string) (string, error) {
	if unit == gluster.MountUnit {
		if mounted(ctx) {
			return "active", nil
		}
		return "inactive", nil
	}
	if unit == "glusterd.service" {
		if _, ok := glusterdRunning(); ok {
			return "active", nil
		}
		return "inactive", nil
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.procs[unit].running() {
		return "active", nil
	}
	return "inactive", nil
}

// glusterdPID is glusterd's pid file in the node's private /run. glusterd is found by it, not as a child:
// the node starts it before the agent, as the image's boot does (the agent is ordered after glusterd).
const glusterdPID = "/run/glusterd.pid"

// glusterdArgs start glusterd in the foreground with its pid file.
var glusterdArgs = []string{"-N", "-p", glusterdPID, "--log-level=INFO"}

// glusterdRunning reports whether the pid file names a live process.
func glusterdRunning() (int, bool) {
	b, err := os.ReadFile(glusterdPID)
	if err != nil {
		return 0, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0, false
	}
	return pid, syscall.Kill(pid, 0) == nil
}

// startGlusterd starts glusterd (when not running) and waits until its CLI answers, as systemd's start job
// of the forking glusterd.service does.
func (u *units) startGlusterd(ctx context.Context) error {
	u.mu.Lock()
	if _, ok := glusterdRunning(); !ok {
		p, err := u.spawn("glusterd", "glusterd", glusterdArgs...)
		if err != nil {
			u.mu.Unlock()
			return err
		}
		u.procs["glusterd.service"] = p
	}
	u.mu.Unlock()
	return waitGlusterd(ctx)
}

// stopGlusterd ends glusterd, whoever started it, and waits until it is gone.
func (u *units) stopGlusterd(ctx context.Context) error {
	u.mu.Lock()
	delete(u.procs, "glusterd.service")
	u.mu.Unlock()
	pid, ok := glusterdRunning()
	if !ok {
		return nil
	}
	syscall.Kill(pid, syscall.SIGTERM)
	deadline := time.Now().Add(10 * time.Second)
	for syscall.Kill(pid, 0) == nil {
		if time.Now().After(deadline) {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond): // poll interval while glusterd exits
		}
	}
	return nil
}

// spawn starts name with its output in logDir/<log>.log. Callers hold mu.
func (u *units) spawn(log, name string, args ...string) (*proc, error) {
	f, err := os.OpenFile(u.logDir+"/"+log+".log", os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("bench units: start %s: %w", name, err)
	}
	p := &proc{cmd: cmd, exited: make(chan struct{})}
	go func() { cmd.Wait(); f.Close(); close(p.exited) }()
	return p, nil
}

// stopAll ends every daemon the units started.
func (u *units) stopAll(ctx context.Context) {
	u.mu.Lock()
	ps := u.procs
	u.procs = map[string]*proc{}
	u.mu.Unlock()
	for _, p := range ps {
		stop(ctx, p)
	}
}

func stop(ctx context.Context, p *proc) error {
	if !p.running() {
		return nil
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
		return nil
	case <-time.After(10 * time.Second):
		p.cmd.Process.Kill()
		<-p.exited
		return nil
	case <-ctx.Done():
		p.cmd.Process.Kill()
		return ctx.Err()
	}
}

func waitGlusterd(ctx context.Context) error {
	return pollGlusterd(ctx, func(ctx context.Context) error {
		_, err := run.Cmd(ctx, "gluster", "--mode=script", "pool", "list")
		return err
	})
}

// waitGlusterdIn is waitGlusterd from the host, for node n.
func waitGlusterdIn(ctx context.Context, n *node) error {
	return pollGlusterd(ctx, func(ctx context.Context) error {
		return n.commandContext(ctx, "gluster", "--mode=script", "pool", "list").Run()
	})
}

func pollGlusterd(ctx context.Context, ask func(context.Context) error) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := ask(cctx)
		cancel()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("glusterd not answering: %w", err)
		}
		time.Sleep(100 * time.Millisecond) // poll interval while glusterd starts
	}
}

func mounted(ctx context.Context) bool {
	_, err := run.Cmd(ctx, "mountpoint", "-q", gluster.MountPoint)
	return err == nil
}

// mountSource is the What= of the mount unit the gluster reconciler wrote (its server and volume).
func mountSource() (string, error) {
	b, err := os.ReadFile(gluster.UnitPath)
	if err != nil {
		return "", fmt.Errorf("bench units: mount unit: %w", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "What="); ok {
			return v, nil
		}
	}
	return "", errors.New("bench units: mount unit without What=")
}

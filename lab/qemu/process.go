package qemu

import (
	"context"
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

	"github.com/kiln-project/kiln/internal/pidfile"
	"github.com/kiln-project/kiln/internal/run"
)

// Binary is the emulator; Debian's qemu-system-x86 package.
const Binary = "qemu-system-x86_64"

// pollInterval is how often process and socket states are re-read while waiting: short against VM time scales.
const pollInterval = 100 * time.Millisecond

// Start launches the VM of s inside network namespace ns and returns the daemon's pid once qemu has set the VM up.
func Start(ctx context.Context, ns string, s Spec) (int, error) {
	args, err := Args(s)
	if err != nil {
		return 0, err
	}
	if pid, ok := Running(s.PidFile); ok {
		return 0, fmt.Errorf("qemu: start %s: already running as pid %d", s.Name, pid)
	}
	// Stale files from a killed run would make us read a dead pid or fail to bind the socket.
	for _, p := range []string{s.PidFile, s.QMPSocket} {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			return 0, fmt.Errorf("qemu: start %s: %w", s.Name, err)
		}
	}
	argv := append([]string{"netns", "exec", ns, Binary}, args...)
	if _, err := run.Cmd(ctx, "ip", argv...); err != nil {
		return 0, fmt.Errorf("qemu: start %s: %w", s.Name, err)
	}
	pid, ok := Running(s.PidFile)
	if !ok {
		return 0, fmt.Errorf("qemu: start %s: daemon exited right after start (see %s)", s.Name, s.SerialLog)
	}
	return pid, nil
}

// Running reports the pid of the qemu that wrote pidFile, and whether it is still alive. A pid is only believed
// when the process's command line names pidFile: pids get reused, and we must never signal someone else's process.
func Running(pidFile string) (int, bool) { return pidfile.Running(pidFile, pidFile) }

// Kill sends SIGKILL to the qemu of pidFile (a power cut for the guest) and waits until it is gone.
// Killing a VM that isn't running is not an error.
func Kill(ctx context.Context, pidFile string) error {
	pid, ok := Running(pidFile)
	if !ok {
		return nil
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("qemu: kill pid %d: %w", pid, err)
	}
	return WaitExit(ctx, pidFile)
}

// WaitExit waits until the qemu of pidFile is no longer running, or ctx ends.
func WaitExit(ctx context.Context, pidFile string) error {
	t := time.NewTicker(pollInterval)
	defer t.Stop()
	for {
		pid, ok := Running(pidFile)
		if !ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("qemu: wait for pid %d to exit: %w", pid, ctx.Err())
		case <-t.C:
		}
	}
}

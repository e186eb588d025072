package lab

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/kiln-project/kiln/internal/run"
	"github.com/kiln-project/kiln/lab/netns"
)

// sshConnectTimeout bounds one connection attempt, banner exchange included: an address without a live host
// costs this long per probe. 4 s proved too short: three TCG guests on two host cores took longer than that to
// fork sshd and send its banner, so live nodes looked unreachable.
const sshConnectTimeout = 20

// ExecResult is what a command in a node did.
type ExecResult struct {
	Stdout []byte
	// Stderr is the tail of the command's stderr, kept only when it failed (internal/run keeps no more).
	Stderr   string
	ExitCode int
}

// ErrUnreachable means ssh could not reach or log in to the node (ssh's own exit code 255).
var ErrUnreachable = errors.New("node unreachable over ssh")

// Exec runs argv in the node as root over ssh, from inside the lab namespace with the lab key. The error is nil
// whenever the command ran, whatever its exit code; ErrUnreachable when ssh could not get there.
func (n *Node) Exec(ctx context.Context, argv ...string) (ExecResult, error) {
	s, err := n.State()
	if err != nil {
		return ExecResult{}, err
	}
	return n.lab.ssh(ctx, s.Address, argv...)
}

func (l *Lab) ssh(ctx context.Context, addr string, argv ...string) (ExecResult, error) {
	if len(argv) == 0 {
		return ExecResult{}, errors.New("exec: no command")
	}
	args := []string{"ssh", "-i", l.keyPath(),
		"-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
		// Host keys change with every reimage and replace; the lab network is private to this namespace.
		"-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
		"-o", fmt.Sprintf("ConnectTimeout=%d", sshConnectTimeout),
		"-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=6"}
	args = append(args, l.muxOptions()...)
	args = append(args, "root@"+addr, "--")
	args = append(args, RemoteCommand(ctx, argv...))
	out, err := netns.Exec(ctx, l.Namespace(), nil, args...)
	if err == nil {
		return ExecResult{Stdout: out}, nil
	}
	var re *run.Error
	if !errors.As(err, &re) || re.ExitCode < 0 {
		return ExecResult{}, fmt.Errorf("exec on %s: %w", addr, err)
	}
	if re.ExitCode == 255 {
		return ExecResult{Stdout: out, Stderr: re.Stderr, ExitCode: 255},
			fmt.Errorf("exec on %s: %w: %s", addr, ErrUnreachable, re.Stderr)
	}
	return ExecResult{Stdout: out, Stderr: re.Stderr, ExitCode: re.ExitCode}, nil
}

// muxOptions share one ssh connection per node between commands: a handshake (key exchange, sshd's
// re-exec, the AuthorizedKeysCommand) costs a TCG guest about a second of its only vCPU, and tests poll
// every node every few seconds. The master lingers 60 s after its last command, then exits by itself;
// lab down kills it with everything else in the namespace.
func (l *Lab) muxOptions() []string {
	return []string{"-o", "ControlMaster=auto", "-o", "ControlPath=" + filepath.Join(l.dir, "ssh-%h"), "-o", "ControlPersist=60"}
}

// closeMux ends the shared connection to addr, if any. Called when the node behind it is powered off, cut
// off or replaced: commands would otherwise queue on a dead connection until its keepalives time out (30 s)
// and talk to the old host after a reimage.
func (l *Lab) closeMux(ctx context.Context, addr string) {
	args := append([]string{"ssh"}, l.muxOptions()...)
	args = append(args, "-O", "exit", "root@"+addr)
	// No master is the common case (exit 255, "Control socket connect … No such file"): nothing to do.
	_, _ = netns.Exec(ctx, l.Namespace(), nil, args...)
}

// RemoteCommand is the one string ssh hands the node's shell so that it runs exactly argv, bounded by ctx's
// deadline (RemoteBound).
func RemoteCommand(ctx context.Context, argv ...string) string {
	argv = append(RemoteBound(ctx), argv...)
	quoted := make([]string, len(argv))
	for i, a := range argv {
		quoted[i] = shellQuote(a)
	}
	return strings.Join(quoted, " ")
}

// RemoteBound returns the argv prefix that bounds a command in a node by ctx's deadline (nil without one).
//
// Killing the local ssh when ctx ends does not stop the remote command: without a tty sshd sends it no
// signal. A caller polling `gluster volume heal data info` on a loaded node would pile up one more CLI (and
// its glfsheal client) per poll, until the node's gluster answers nothing (docs/self-healing.md, "Bounded
// commands"). coreutils timeout runs the command in its own process group and signals the whole
// group, so the children go too; it ends a little before ctx so the node is clean when the caller gives up.
func RemoteBound(ctx context.Context) []string {
	dl, ok := ctx.Deadline()
	if !ok {
		return nil
	}
	secs := int(time.Until(dl).Seconds()) - remoteBoundMargin
	if secs < 1 {
		secs = 1
	}
	return []string{"timeout", "--kill-after=5", strconv.Itoa(secs)}
}

// remoteBoundMargin is how much earlier than the caller's deadline a remote command is stopped, in seconds.
const remoteBoundMargin = 2

// shellQuote makes s one word for a POSIX shell.
func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./=:,+@%", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

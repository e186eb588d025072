package lab

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/kiln-project/kiln/lab/netns"
	"github.com/kiln-project/kiln/lab/sshpool"
)

// sshConnectTimeout bounds the TCP connect to a node, and again its SSH handshake (banner, key exchange, login):
// an address without a live host costs this long per probe. 4 s proved too short: three TCG guests on two host
// cores took longer than that to fork sshd and send its banner, so live nodes looked unreachable.
const sshConnectTimeout = 20

// Keepalives on every connection to a node, as ssh's ServerAliveInterval=5 and ServerAliveCountMax=6: a node
// that vanished without the lab knowing (powered off by another process) is found out within 30 s.
const (
	sshAliveInterval = 5 * time.Second
	sshAliveCountMax = 6
)

// ExecResult is what a command in a node did.
type ExecResult struct {
	// Stdout is the command's output, unless ExecOptions.Stdout took it.
	Stdout []byte
	// Stderr is the tail of the command's stderr (the last 2 KiB), kept only when it failed.
	Stderr   string
	ExitCode int
}

// ErrUnreachable means no command ran: the node could not be reached or logged in to over ssh, or the
// connection broke before the command's exit status came back.
var ErrUnreachable = sshpool.ErrUnreachable

// ExecOptions connect a command's streams.
type ExecOptions struct {
	// Stdin feeds the command (nil: empty).
	Stdin io.Reader
	// Stdout receives the command's output as it comes (nil: collected into ExecResult.Stdout); Stderr its error
	// output (nil: only the tail is kept). Neither may block for good, and they get nothing once Exec returned.
	Stdout, Stderr io.Writer
	// Dedicated runs the command on an ssh connection of its own, closed when it ends, rather than on the
	// node's shared one: for a stream that lasts a whole test. AliveCountMax, if set, is its keepalive
	// tolerance (ServerAliveCountMax; the shared connections' is 6).
	Dedicated     bool
	AliveCountMax int
}

// Exec runs argv in the node as root over ssh, from inside the lab namespace with the lab key. The error is nil
// whenever the command ran, whatever its exit code; it wraps ErrUnreachable when the command could not run.
// When ctx ends the command gets SIGTERM and Exec returns at once; with a deadline, the command is also
// bounded on the node (RemoteBound).
func (n *Node) Exec(ctx context.Context, argv ...string) (ExecResult, error) {
	return n.ExecWith(ctx, ExecOptions{}, argv...)
}

// ExecWith is Exec with the command's streams connected as o says.
func (n *Node) ExecWith(ctx context.Context, o ExecOptions, argv ...string) (ExecResult, error) {
	s, err := n.State()
	if err != nil {
		return ExecResult{}, err
	}
	return n.lab.exec(ctx, s.Address, o, argv...)
}

// ExecAt runs argv as Exec does on whatever answers ssh at addr now (a virtual IP), over a connection of its
// own: a kept one would stay with the host that answered first.
func (l *Lab) ExecAt(ctx context.Context, addr string, o ExecOptions, argv ...string) (ExecResult, error) {
	o.Dedicated = true
	return l.exec(ctx, addr, o, argv...)
}

func (l *Lab) exec(ctx context.Context, addr string, o ExecOptions, argv ...string) (ExecResult, error) {
	if len(argv) == 0 {
		return ExecResult{}, errors.New("exec: no command")
	}
	p, err := l.sshPool()
	if err != nil {
		return ExecResult{}, err
	}
	// The handle must outlive the command: once it is garbage its cleanup closes the pool's connections, and
	// the caller may hold no reference while the command runs (kiln lab exec's node is not used after).
	defer runtime.KeepAlive(l)
	res, err := p.Run(ctx, sshAddr(addr), sshpool.Command{Line: RemoteCommand(ctx, argv...),
		Stdin: o.Stdin, Stdout: o.Stdout, Stderr: o.Stderr, Dedicated: o.Dedicated, AliveCountMax: o.AliveCountMax})
	if err != nil {
		return ExecResult{}, fmt.Errorf("exec on %s: %w", addr, err)
	}
	return ExecResult{Stdout: res.Stdout, Stderr: res.Stderr, ExitCode: res.ExitCode}, nil
}

func sshAddr(addr string) string { return net.JoinHostPort(addr, "22") }

// sshPool returns the lab handle's ssh connections, made on first use: a handle that runs no command reads no
// key. Connections are dialled from inside the lab namespace: the socket is made there, and stays there.
func (l *Lab) sshPool() (*sshpool.Pool, error) {
	l.sshMu.Lock()
	defer l.sshMu.Unlock()
	if l.sshConns != nil {
		return l.sshConns, nil
	}
	b, err := os.ReadFile(l.keyPath())
	if err != nil {
		return nil, fmt.Errorf("lab %s: ssh key: %w", l.name, err)
	}
	signer, err := ssh.ParsePrivateKey(b)
	if err != nil {
		return nil, fmt.Errorf("lab %s: ssh key %s: %w", l.name, l.keyPath(), err)
	}
	ns := l.Namespace()
	p := sshpool.New(sshpool.Config{User: "root", Signer: signer,
		Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return netns.Dial(ctx, ns, network, addr)
		},
		ConnectTimeout: sshConnectTimeout * time.Second, AliveInterval: sshAliveInterval, AliveCountMax: sshAliveCountMax})
	pools.add(l.dir, p)
	// A handle dropped without Close still closes its connections once it is garbage. The pool must not
	// reference the handle, or the handle would never become garbage.
	dir := l.dir
	runtime.AddCleanup(l, func(p *sshpool.Pool) { pools.close(dir, p) }, p)
	l.sshConns = p
	return p, nil
}

// Close closes the handle's ssh connections. The handle stays usable: the next command connects again.
func (l *Lab) Close() {
	l.sshMu.Lock()
	p := l.sshConns
	l.sshConns = nil
	l.sshMu.Unlock()
	if p != nil {
		pools.close(l.dir, p)
	}
}

// forgetSSH closes every kept connection of this process to addr in this lab, through any handle: its node was
// powered off, cut off or replaced. Commands would otherwise wait on a dead connection until its keepalives give
// up (30 s), or reach the old host after a reimage.
func (l *Lab) forgetSSH(addr string) { pools.forget(l.dir, sshAddr(addr)) }

// pools are the ssh connection pools of the lab handles of this process, by lab directory, so that down and
// the verbs that take a node away close the connections of every handle on that lab.
var pools = poolRegistry{byDir: map[string]map[*sshpool.Pool]bool{}}

type poolRegistry struct {
	mu    sync.Mutex
	byDir map[string]map[*sshpool.Pool]bool
}

func (r *poolRegistry) add(dir string, p *sshpool.Pool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.byDir[dir] == nil {
		r.byDir[dir] = map[*sshpool.Pool]bool{}
	}
	r.byDir[dir][p] = true
}

func (r *poolRegistry) of(dir string) []*sshpool.Pool {
	r.mu.Lock()
	defer r.mu.Unlock()
	var ps []*sshpool.Pool
	for p := range r.byDir[dir] {
		ps = append(ps, p)
	}
	return ps
}

// close closes p's connections and forgets p.
func (r *poolRegistry) close(dir string, p *sshpool.Pool) {
	r.mu.Lock()
	delete(r.byDir[dir], p)
	if len(r.byDir[dir]) == 0 {
		delete(r.byDir, dir)
	}
	r.mu.Unlock()
	p.Close()
}

// closeAll closes the connections of every handle on the lab in dir (lab down).
func (r *poolRegistry) closeAll(dir string) {
	for _, p := range r.of(dir) {
		p.Close()
	}
}

func (r *poolRegistry) forget(dir, addr string) {
	for _, p := range r.of(dir) {
		p.Forget(addr)
	}
}

// genKey makes the lab's own SSH key, in OpenSSH's formats (`ssh -i <dir>/id_ed25519` works too); its public
// half reaches every node through fw_cfg.
func (l *Lab) genKey() error {
	if _, err := os.Stat(l.keyPath()); err == nil {
		return nil
	}
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return fmt.Errorf("lab %s: ssh key: %w", l.name, err)
	}
	comment := "kiln-lab-" + l.name
	block, err := ssh.MarshalPrivateKey(priv, comment)
	if err != nil {
		return fmt.Errorf("lab %s: ssh key: %w", l.name, err)
	}
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		return fmt.Errorf("lab %s: ssh key: %w", l.name, err)
	}
	authorized := strings.TrimSuffix(string(ssh.MarshalAuthorizedKey(sshPub)), "\n") + " " + comment + "\n"
	if err := os.WriteFile(l.keyPath()+".pub", []byte(authorized), 0o644); err != nil {
		return fmt.Errorf("lab %s: ssh key: %w", l.name, err)
	}
	// The private half last: its presence is what says the key exists.
	if err := os.WriteFile(l.keyPath(), pem.EncodeToMemory(block), 0o600); err != nil {
		return fmt.Errorf("lab %s: ssh key: %w", l.name, err)
	}
	return nil
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
// Ending the session when ctx ends is not enough to stop the remote command: sshd delivers the SIGTERM Exec
// sends to the command's own process only, and closing the session signals nothing (no tty). A caller polling
// `gluster volume heal data info` on a loaded node would pile up one more CLI (and its glfsheal client) per
// poll, until the node's gluster answers nothing (docs/self-healing.md, "Bounded commands"). coreutils timeout
// runs the command in its own process group and signals the whole group, on its deadline and on the SIGTERM
// alike, so the children go too; it ends a little before ctx so the node is clean when the caller gives up.
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

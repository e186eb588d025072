// Package sshpool runs commands on hosts over SSH (golang.org/x/crypto/ssh) in-process, keeping one client
// connection per address and opening a session on it per command.
//
// One connection per host, because a handshake is the expensive part of a command for a slow server (key
// exchange, sshd's re-exec, its authorized-keys lookup): a TCG guest spends about a second of its only vCPU on
// each. A session on an open connection costs the server one fork of the login shell.
package sshpool

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"
)

// ErrUnreachable means no command could run: the connection, its handshake or the login failed, or the
// connection broke before the command reported its exit status.
var ErrUnreachable = errors.New("unreachable over ssh")

// Config is how a Pool reaches its hosts.
type Config struct {
	// User to log in as, with Signer's key.
	User   string
	Signer ssh.Signer
	// Dial opens the TCP connection (net.Dialer.DialContext when nil). The lab's dials from inside its
	// network namespace.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// ConnectTimeout bounds the TCP connect, and again the SSH handshake after it (banner, key exchange,
	// login); default 20 s.
	ConnectTimeout time.Duration
	// AliveInterval and AliveCountMax are OpenSSH's ServerAliveInterval and ServerAliveCountMax: a keepalive
	// request every AliveInterval, and the connection is closed when one stays unanswered for AliveCountMax
	// intervals; defaults 5 s and 6.
	AliveInterval time.Duration
	AliveCountMax int
}

func (c *Config) defaults() {
	if c.Dial == nil {
		var d net.Dialer
		c.Dial = d.DialContext
	}
	if c.ConnectTimeout == 0 {
		c.ConnectTimeout = 20 * time.Second
	}
	if c.AliveInterval == 0 {
		c.AliveInterval = 5 * time.Second
	}
	if c.AliveCountMax == 0 {
		c.AliveCountMax = 6
	}
}

// Command is one command to run.
type Command struct {
	// Line is what the server's login shell runs (ssh's remote command).
	Line string
	// Stdin feeds the command (nil: empty). Stdout receives its output as it comes (nil: collected into
	// Result.Stdout); Stderr its error output (nil: only the tail is kept, in Result.Stderr). Neither writer
	// may block for good: the session waits for them. Once Run returned, they get nothing more.
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	// Dedicated runs the command on a connection of its own, closed when it ends, instead of the address's
	// shared one: for an address that moves between hosts (a virtual IP), where a kept connection would stay
	// with the old one, and for streams that last long. AliveCountMax, if set, replaces the pool's for it.
	Dedicated     bool
	AliveCountMax int
}

// Result is what a command did.
type Result struct {
	// Stdout is the command's output when Command.Stdout was nil.
	Stdout []byte
	// Stderr is the tail of its error output, kept only when it failed.
	Stderr   string
	ExitCode int
}

// stderrTail bounds how much of stderr a Result keeps: enough for the command's own message, not a whole log.
const stderrTail = 2048

// Pool keeps one client connection per address. Safe for concurrent use: concurrent commands to one address
// share its connection, each in its own session (sshd allows 10 per connection by default, MaxSessions).
type Pool struct {
	cfg Config

	mu    sync.Mutex
	slots map[string]*slot
}

// slot is one address's connection; dial serialises connecting to it, so concurrent first commands make one
// connection, not one each.
type slot struct {
	dial chan struct{}
	conn *conn // guarded by Pool.mu
}

// New returns an empty pool: connections are made by the first command to each address.
func New(cfg Config) *Pool {
	cfg.defaults()
	return &Pool{cfg: cfg, slots: map[string]*slot{}}
}

// Run runs cmd at addr (host:port) and returns how it ended. The error is nil whenever the command ran to an
// exit status, whatever it was; it wraps ErrUnreachable when the command could not run or its connection
// broke under it, and ctx's error when ctx ended first. When ctx ends, the command gets SIGTERM (a `timeout`
// wrapping it passes that to its whole process group) and its session is closed; Run returns at once.
func (p *Pool) Run(ctx context.Context, addr string, cmd Command) (Result, error) {
	if cmd.Dedicated {
		c, err := p.connect(ctx, addr, cmd.AliveCountMax)
		if err != nil {
			return Result{}, err
		}
		defer c.close()
		s, err := c.session(ctx)
		if err != nil {
			return Result{}, p.sessionError(ctx, addr, err)
		}
		return p.run(ctx, addr, c, s, cmd)
	}
	c, err := p.shared(ctx, addr)
	if err != nil {
		return Result{}, err
	}
	s, err := c.session(ctx)
	var refused *ssh.OpenChannelError
	if err != nil && ctx.Err() == nil && !errors.As(err, &refused) {
		// The kept connection broke since its last command (its host rebooted, or went away and keepalives
		// have not noticed yet): one new connection decides.
		p.drop(addr, c)
		if c, err = p.shared(ctx, addr); err != nil {
			return Result{}, err
		}
		s, err = c.session(ctx)
	}
	if err != nil {
		return Result{}, p.sessionError(ctx, addr, err)
	}
	return p.run(ctx, addr, c, s, cmd)
}

func (p *Pool) sessionError(ctx context.Context, addr string, err error) error {
	var refused *ssh.OpenChannelError
	switch {
	case ctx.Err() != nil:
		return fmt.Errorf("ssh %s: open session: %w", addr, ctx.Err())
	case errors.As(err, &refused):
		// The server is there and said no (too many sessions): not unreachable.
		return fmt.Errorf("ssh %s: open session: %w", addr, err)
	default:
		return fmt.Errorf("ssh %s: open session: %w: %v", addr, ErrUnreachable, err)
	}
}

func (p *Pool) run(ctx context.Context, addr string, c *conn, s *ssh.Session, cmd Command) (Result, error) {
	var collected bytes.Buffer
	out := &gate{w: cmd.Stdout}
	if cmd.Stdout == nil {
		out.w = &collected
	}
	tail := &tailWriter{max: stderrTail}
	errOut := &gate{w: tail}
	if cmd.Stderr != nil {
		errOut.w = io.MultiWriter(cmd.Stderr, tail)
	}
	s.Stdout, s.Stderr = out, errOut
	if cmd.Stdin != nil {
		// Fed here rather than through Session.Stdin, whose copy error (the command exited without reading
		// everything) would turn a successful command into a failed one; ssh(1) ignores it too.
		w, err := s.StdinPipe()
		if err != nil {
			s.Close()
			return Result{}, fmt.Errorf("ssh %s: stdin: %w", addr, err)
		}
		go func() {
			_, _ = io.Copy(w, cmd.Stdin)
			w.Close()
		}()
	}
	done := make(chan error, 1)
	go func() {
		if err := s.Start(cmd.Line); err != nil {
			done <- startError{err}
			return
		}
		done <- s.Wait()
	}()
	var err error
	select {
	case err = <-done:
		s.Close()
	case <-ctx.Done():
		_ = s.Signal(ssh.SIGTERM)
		s.Close()
		// The goroutine ends when the server confirms the close, or with the connection.
		out.shut()
		errOut.shut()
		return Result{}, fmt.Errorf("ssh %s: %w", addr, ctx.Err())
	}
	out.shut()
	errOut.shut()
	res := Result{Stdout: collected.Bytes()}
	var exit *ssh.ExitError
	var start startError
	switch {
	case err == nil:
		return res, nil
	case errors.As(err, &exit):
		res.ExitCode, res.Stderr = exit.ExitStatus(), tail.String()
		return res, nil
	case errors.As(err, &start) && !c.closed():
		return res, fmt.Errorf("ssh %s: start: %w", addr, start.err)
	case c.closed():
		p.drop(addr, c)
		return res, fmt.Errorf("ssh %s: %w: connection lost before the command's exit status (%v)", addr, ErrUnreachable, err)
	default:
		// An error of the caller's writers, or the server closed the session without an exit status.
		return res, fmt.Errorf("ssh %s: %w", addr, err)
	}
}

type startError struct{ err error }

func (e startError) Error() string { return e.err.Error() }

// shared returns addr's kept connection, connecting if there is none or it has ended.
func (p *Pool) shared(ctx context.Context, addr string) (*conn, error) {
	p.mu.Lock()
	s := p.slots[addr]
	if s == nil {
		s = &slot{dial: make(chan struct{}, 1)}
		p.slots[addr] = s
	}
	p.mu.Unlock()
	select {
	case s.dial <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("ssh %s: connect: %w", addr, ctx.Err())
	}
	defer func() { <-s.dial }()
	p.mu.Lock()
	c := s.conn
	p.mu.Unlock()
	if c != nil && !c.closed() {
		return c, nil
	}
	c, err := p.connect(ctx, addr, 0)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	s.conn = c
	p.mu.Unlock()
	return c, nil
}

// drop closes c and forgets it as addr's connection (if it still is).
func (p *Pool) drop(addr string, c *conn) {
	p.mu.Lock()
	if s := p.slots[addr]; s != nil && s.conn == c {
		s.conn = nil
	}
	p.mu.Unlock()
	c.close()
}

// Forget closes addr's kept connection, if any: its host was powered off, cut off or replaced, so commands
// neither wait on a dead connection until keepalives give up nor reach the old host. The next command to
// addr connects anew.
func (p *Pool) Forget(addr string) {
	p.mu.Lock()
	var c *conn
	if s := p.slots[addr]; s != nil {
		c, s.conn = s.conn, nil
	}
	p.mu.Unlock()
	if c != nil {
		c.close()
	}
}

// Close closes every kept connection; commands running on them end unreachable. The pool stays usable: a
// later command connects anew. Dedicated connections belong to their command and end with it.
func (p *Pool) Close() {
	p.mu.Lock()
	var cs []*conn
	for _, s := range p.slots {
		if s.conn != nil {
			cs = append(cs, s.conn)
			s.conn = nil
		}
	}
	p.mu.Unlock()
	for _, c := range cs {
		c.close()
	}
}

// connect dials addr and logs in.
func (p *Pool) connect(ctx context.Context, addr string, aliveCountMax int) (*conn, error) {
	unreachable := func(err error) error {
		if ctx.Err() != nil {
			return fmt.Errorf("ssh %s: connect: %w", addr, ctx.Err())
		}
		return fmt.Errorf("ssh %s: %w: %v", addr, ErrUnreachable, err)
	}
	dctx, cancel := context.WithTimeout(ctx, p.cfg.ConnectTimeout)
	nc, err := p.cfg.Dial(dctx, "tcp", addr)
	cancel()
	if err != nil {
		return nil, unreachable(err)
	}
	if err := nc.SetDeadline(time.Now().Add(p.cfg.ConnectTimeout)); err != nil {
		nc.Close()
		return nil, unreachable(err)
	}
	// ctx ending aborts the handshake: every read and write on the socket fails at once.
	stop := context.AfterFunc(ctx, func() { _ = nc.SetDeadline(time.Unix(1, 0)) })
	sc, chans, reqs, err := ssh.NewClientConn(nc, addr, &ssh.ClientConfig{
		User: p.cfg.User,
		Auth: []ssh.AuthMethod{ssh.PublicKeys(p.cfg.Signer)},
		// Any host key is accepted, as StrictHostKeyChecking=no did: lab nodes make new host keys on every
		// reimage and replace, addresses are reused across labs, and the network is a namespace of our own
		// with no route out, so there is no third party to tell apart from the node.
		HostKeyCallback: ssh.InsecureIgnoreHostKey(),
	})
	aborted := !stop()
	if err != nil {
		nc.Close()
		return nil, unreachable(err)
	}
	if aborted {
		sc.Close()
		return nil, unreachable(ctx.Err())
	}
	if err := nc.SetDeadline(time.Time{}); err != nil {
		sc.Close()
		return nil, unreachable(err)
	}
	if aliveCountMax == 0 {
		aliveCountMax = p.cfg.AliveCountMax
	}
	c := &conn{client: ssh.NewClient(sc, chans, reqs), done: make(chan struct{})}
	go func() {
		_ = c.client.Wait()
		close(c.done)
	}()
	go c.keepalive(p.cfg.AliveInterval, aliveCountMax)
	return c, nil
}

// conn is one client connection.
type conn struct {
	client *ssh.Client
	done   chan struct{} // closed when the connection has ended
}

func (c *conn) closed() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

func (c *conn) close() {
	c.client.Close()
	<-c.done
}

// session opens a session, bounded by ctx: opening one waits for the server, which a dead host never answers.
func (c *conn) session(ctx context.Context) (*ssh.Session, error) {
	type opened struct {
		s   *ssh.Session
		err error
	}
	ch := make(chan opened, 1)
	go func() {
		s, err := c.client.NewSession()
		ch <- opened{s, err}
	}()
	select {
	case o := <-ch:
		return o.s, o.err
	case <-ctx.Done():
		go func() {
			if o := <-ch; o.s != nil {
				o.s.Close()
			}
		}()
		return nil, ctx.Err()
	}
}

// keepalive sends keepalive@openssh.com every interval and closes the connection when one stays unanswered
// for countMax intervals, as ssh(1)'s ServerAliveInterval and ServerAliveCountMax do. Without it a connection
// to a host that vanished (powered off, cut off) would only end when TCP gives up, many minutes later.
func (c *conn) keepalive(interval time.Duration, countMax int) {
	t := time.NewTicker(interval)
	defer t.Stop()
	replies := make(chan error, 1)
	pending, missed := false, 0
	for {
		select {
		case <-c.done:
			return
		case err := <-replies:
			if err != nil {
				c.client.Close()
				return
			}
			pending, missed = false, 0
		case <-t.C:
			if pending {
				if missed++; missed >= countMax {
					c.client.Close()
					return
				}
				continue
			}
			pending = true
			go func() {
				// OpenSSH answers an unknown global request with a failure: any answer proves the server alive.
				_, _, err := c.client.SendRequest("keepalive@openssh.com", true, nil)
				replies <- err
			}()
		}
	}
}

// gate passes writes to w until shut, then discards them: a session's copy goroutines can outlive Run (ctx
// ended on a host that does not confirm the close), and must not write to the caller's writers after it.
type gate struct {
	mu     sync.Mutex
	w      io.Writer
	closed bool
}

func (g *gate) Write(b []byte) (int, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return len(b), nil
	}
	return g.w.Write(b)
}

func (g *gate) shut() {
	g.mu.Lock()
	g.closed = true
	g.mu.Unlock()
}

// tailWriter keeps the last max bytes written to it.
type tailWriter struct {
	max       int
	buf       []byte
	truncated bool
}

func (t *tailWriter) Write(b []byte) (int, error) {
	t.buf = append(t.buf, b...)
	if len(t.buf) > 2*t.max {
		t.buf = append(t.buf[:0], t.buf[len(t.buf)-t.max:]...)
		t.truncated = true
	}
	return len(b), nil
}

// String is the tail, trimmed, marked with "…" when output was dropped before it.
func (t *tailWriter) String() string {
	b := t.buf
	cut := t.truncated
	if len(b) > t.max {
		b, cut = b[len(b)-t.max:], true
	}
	s := strings.TrimSpace(string(b))
	if cut {
		s = "…" + s
	}
	return s
}

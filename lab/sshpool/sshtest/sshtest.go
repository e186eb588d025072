// Package sshtest is a small SSH server for tests of SSH clients: it runs each session's command with the
// local `sh -c`, as sshd hands a command to the login shell, answers keepalives as OpenSSH does (a failure
// reply), delivers "signal" requests to the command's process, and can freeze, to play a host that vanished
// without closing its connections.
package sshtest

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"os/exec"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/crypto/ssh"
)

// Server serves SSH on one listener with a host key of its own, made at Serve.
type Server struct {
	HostKey ssh.PublicKey

	ln     net.Listener
	cfg    *ssh.ServerConfig
	frozen atomic.Bool
	done   chan struct{}
	wg     sync.WaitGroup

	mu       sync.Mutex
	accepted int
	conns    map[net.Conn]bool
	procs    map[*exec.Cmd]bool
}

// NewKey returns a fresh ed25519 signer (a client's key or a host key).
func NewKey() (ssh.Signer, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	return ssh.NewSignerFromKey(priv)
}

// Serve serves on ln, letting in only the holder of authorized's key.
func Serve(ln net.Listener, authorized ssh.PublicKey) (*Server, error) {
	host, err := NewKey()
	if err != nil {
		return nil, err
	}
	s := &Server{HostKey: host.PublicKey(), ln: ln, done: make(chan struct{}),
		conns: map[net.Conn]bool{}, procs: map[*exec.Cmd]bool{}}
	s.cfg = &ssh.ServerConfig{PublicKeyCallback: func(_ ssh.ConnMetadata, k ssh.PublicKey) (*ssh.Permissions, error) {
		if string(k.Marshal()) != string(authorized.Marshal()) {
			return nil, errors.New("key not authorized")
		}
		return nil, nil
	}}
	s.cfg.AddHostKey(host)
	s.wg.Add(1)
	go s.accept()
	return s, nil
}

// Addr is the listener's address.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Accepted is how many connections the server accepted so far.
func (s *Server) Accepted() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.accepted
}

// Open is how many accepted connections are still open.
func (s *Server) Open() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// Freeze stops (true) or resumes (false) reading from every connection, new ones included: the server
// answers nothing, as a host that lost power does, while the sockets stay open.
func (s *Server) Freeze(on bool) { s.frozen.Store(on) }

// Close stops listening, closes every connection, kills every command still running and waits for all of it.
func (s *Server) Close() {
	select {
	case <-s.done:
		return
	default:
	}
	close(s.done)
	s.ln.Close()
	s.mu.Lock()
	for c := range s.conns {
		c.Close()
	}
	for p := range s.procs {
		_ = syscall.Kill(-p.Process.Pid, syscall.SIGKILL)
	}
	s.mu.Unlock()
	s.wg.Wait()
}

func (s *Server) accept() {
	defer s.wg.Done()
	for {
		nc, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		s.accepted++
		s.conns[nc] = true
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.serve(&freezable{Conn: nc, s: s})
			nc.Close()
			s.mu.Lock()
			delete(s.conns, nc)
			s.mu.Unlock()
		}()
	}
}

func (s *Server) serve(nc net.Conn) {
	sc, chans, reqs, err := ssh.NewServerConn(nc, s.cfg)
	if err != nil {
		return
	}
	defer sc.Close()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		ssh.DiscardRequests(reqs) // keepalive@openssh.com gets a failure reply, as from OpenSSH
	}()
	var sessions sync.WaitGroup
	for nch := range chans {
		if nch.ChannelType() != "session" {
			_ = nch.Reject(ssh.UnknownChannelType, "only sessions")
			continue
		}
		sessions.Add(1)
		go func() {
			defer sessions.Done()
			s.session(nch)
		}()
	}
	sessions.Wait()
}

// session runs the one command of a session channel.
func (s *Server) session(nch ssh.NewChannel) {
	ch, reqs, err := nch.Accept()
	if err != nil {
		return
	}
	defer ch.Close()
	var (
		mu     sync.Mutex
		cmd    *exec.Cmd
		exited = make(chan struct{})
	)
	for req := range reqs {
		switch req.Type {
		case "exec":
			var m struct{ Command string }
			if ssh.Unmarshal(req.Payload, &m) != nil || cmd != nil {
				_ = req.Reply(false, nil)
				continue
			}
			c := exec.Command("sh", "-c", m.Command)
			c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
			c.Stdout, c.Stderr = ch, ch.Stderr()
			stdin, err := c.StdinPipe()
			if err == nil {
				err = c.Start()
			}
			_ = req.Reply(err == nil, nil)
			if err != nil {
				return
			}
			mu.Lock()
			cmd = c
			mu.Unlock()
			s.mu.Lock()
			s.procs[c] = true
			s.mu.Unlock()
			go func() {
				_, _ = io.Copy(stdin, ch)
				stdin.Close()
			}()
			go func() {
				defer close(exited)
				err := c.Wait()
				s.mu.Lock()
				delete(s.procs, c)
				s.mu.Unlock()
				var ee *exec.ExitError
				switch {
				case err == nil:
					_, _ = ch.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{0}))
				case errors.As(err, &ee) && ee.ExitCode() >= 0:
					_, _ = ch.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{uint32(ee.ExitCode())}))
				case errors.As(err, &ee):
					ws := ee.Sys().(syscall.WaitStatus)
					_, _ = ch.SendRequest("exit-signal", false, ssh.Marshal(struct {
						Signal     string
						CoreDumped bool
						Error      string
						Lang       string
					}{Signal: signalName(ws.Signal())}))
				}
				ch.Close()
			}()
		case "signal":
			// As sshd: the signal goes to the command's process only.
			var m struct{ Signal string }
			mu.Lock()
			c := cmd
			mu.Unlock()
			if ssh.Unmarshal(req.Payload, &m) == nil && c != nil {
				if sig, ok := signals[m.Signal]; ok {
					_ = c.Process.Signal(sig)
				}
			}
		default:
			if req.WantReply {
				_ = req.Reply(false, nil)
			}
		}
	}
	mu.Lock()
	started := cmd != nil
	mu.Unlock()
	if started {
		<-exited
	}
}

var signals = map[string]syscall.Signal{"TERM": syscall.SIGTERM, "KILL": syscall.SIGKILL, "INT": syscall.SIGINT, "HUP": syscall.SIGHUP}

func signalName(sig syscall.Signal) string {
	for name, s := range signals {
		if s == sig {
			return name
		}
	}
	return "USR1"
}

// freezable is a server-side connection that stops reading while its server is frozen.
type freezable struct {
	net.Conn
	s *Server
}

func (f *freezable) Read(b []byte) (int, error) {
	for f.s.frozen.Load() {
		select {
		case <-f.s.done:
			return 0, net.ErrClosed
		case <-time.After(10 * time.Millisecond):
		}
	}
	return f.Conn.Read(b)
}

package sshpool

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/kiln-project/kiln/lab/sshpool/sshtest"
)

// fixture is a pool and the loopback server it talks to, with the client's key authorized.
type fixture struct {
	key  ssh.Signer
	srv  *sshtest.Server
	pool *Pool
	addr string
}

func newFixture(t *testing.T, cfg Config) *fixture {
	t.Helper()
	key, err := sshtest.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{key: key}
	f.serve(t, "127.0.0.1:0")
	f.addr = f.srv.Addr()
	cfg.User, cfg.Signer = "root", key
	f.pool = New(cfg)
	t.Cleanup(func() {
		f.pool.Close()
		f.srv.Close()
	})
	return f
}

// serve starts a server (a new host key) on addr.
func (f *fixture) serve(t *testing.T, addr string) {
	t.Helper()
	var ln net.Listener
	var err error
	// The port of a closed listener can take a moment to be free again.
	for i := 0; i < 50; i++ {
		if ln, err = net.Listen("tcp", addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	if f.srv, err = sshtest.Serve(ln, f.key.PublicKey()); err != nil {
		t.Fatal(err)
	}
}

func (f *fixture) run(t *testing.T, line string) Result {
	t.Helper()
	res, err := f.pool.Run(context.Background(), f.addr, Command{Line: line})
	if err != nil {
		t.Fatalf("run %q: %v", line, err)
	}
	return res
}

func TestExitCodesAndOutput(t *testing.T) {
	f := newFixture(t, Config{})
	for _, tc := range []struct {
		line   string
		code   int
		stdout string
		stderr string
	}{
		{"echo hello", 0, "hello\n", ""},
		{"echo out; echo err >&2; exit 7", 7, "out\n", "err"},
		// Stderr is kept only when the command failed.
		{"echo noise >&2", 0, "", ""},
		{"exit 255", 255, "", ""},
		// Killed by a signal: 128 + its number, as a shell reports it.
		{"kill -TERM $$", 128 + 15, "", ""},
	} {
		res := f.run(t, tc.line)
		if res.ExitCode != tc.code || string(res.Stdout) != tc.stdout || res.Stderr != tc.stderr {
			t.Errorf("%q: got exit %d stdout %q stderr %q, want %d %q %q", tc.line, res.ExitCode, res.Stdout, res.Stderr,
				tc.code, tc.stdout, tc.stderr)
		}
	}
	if n := f.srv.Accepted(); n != 1 {
		t.Errorf("%d connections for 5 commands, want 1 kept", n)
	}
}

func TestStderrTail(t *testing.T) {
	f := newFixture(t, Config{})
	res := f.run(t, `i=0; while [ $i -lt 2000 ]; do echo "line $i" >&2; i=$((i+1)); done; exit 3`)
	if res.ExitCode != 3 {
		t.Fatalf("exit %d, want 3", res.ExitCode)
	}
	if !strings.HasPrefix(res.Stderr, "…") || !strings.HasSuffix(res.Stderr, "line 1999") {
		t.Errorf("stderr tail %q…%q: want the end of the output, marked as cut", res.Stderr[:20], res.Stderr[len(res.Stderr)-20:])
	}
	if n := len(res.Stderr) - len("…"); n > stderrTail {
		t.Errorf("stderr tail is %d bytes, want at most %d", n, stderrTail)
	}
}

func TestStdinAndStreaming(t *testing.T) {
	f := newFixture(t, Config{})
	ctx := context.Background()
	// A large stdin through a command that reads it all (a file copy, docker load).
	data := bytes.Repeat([]byte("0123456789abcdef"), 1<<18) // 4 MiB
	res, err := f.pool.Run(ctx, f.addr, Command{Line: "wc -c", Stdin: bytes.NewReader(data)})
	if err != nil || strings.TrimSpace(string(res.Stdout)) != strconv.Itoa(len(data)) {
		t.Fatalf("wc -c of 4 MiB stdin: %q, %v", res.Stdout, err)
	}
	// A command that ignores its stdin still succeeds.
	if res, err := f.pool.Run(ctx, f.addr, Command{Line: "true", Stdin: bytes.NewReader(data)}); err != nil || res.ExitCode != 0 {
		t.Fatalf("true with unread stdin: exit %d, %v", res.ExitCode, err)
	}
	// Stdout streams: the first line arrives while the command still runs.
	pr, pw := io.Pipe()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ended := make(chan error, 1)
	go func() {
		_, err := f.pool.Run(ctx, f.addr, Command{Line: "echo first; exec sleep 30", Stdout: pw})
		pw.Close()
		ended <- err
	}()
	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil || line != "first\n" {
		t.Fatalf("streamed %q, %v", line, err)
	}
	cancel()
	select {
	case err := <-ended:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("cancelled stream: %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("cancelled stream did not end")
	}
}

func TestUnreachable(t *testing.T) {
	key, err := sshtest.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	// Nothing listens.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	p := New(Config{User: "root", Signer: key, ConnectTimeout: time.Second})
	defer p.Close()
	if _, err := p.Run(ctx, closed, Command{Line: "true"}); !errors.Is(err, ErrUnreachable) {
		t.Errorf("closed port: %v, want ErrUnreachable", err)
	}
	// A server that does not know the key.
	f := newFixture(t, Config{})
	if _, err := p.Run(ctx, f.addr, Command{Line: "true"}); !errors.Is(err, ErrUnreachable) ||
		!strings.Contains(err.Error(), "unable to authenticate") {
		t.Errorf("unknown key: %v, want ErrUnreachable", err)
	}
	// A host that accepts TCP but never speaks: the connect bound ends the handshake.
	f.srv.Freeze(true)
	start := time.Now()
	if _, err := p.Run(ctx, f.addr, Command{Line: "true"}); !errors.Is(err, ErrUnreachable) {
		t.Errorf("silent host: %v, want ErrUnreachable", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("silent host took %s, want about the 1 s connect bound", d)
	}
	// ctx ending during the handshake is the caller's doing, not unreachable.
	cctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	if _, err := p.Run(cctx, f.addr, Command{Line: "true"}); !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, ErrUnreachable) {
		t.Errorf("ctx ended in the handshake: %v, want DeadlineExceeded only", err)
	}
}

func TestCancelEndsTheCommand(t *testing.T) {
	f := newFixture(t, Config{})
	pidFile := filepath.Join(t.TempDir(), "pid")
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := f.pool.Run(ctx, f.addr, Command{Line: "echo $$ > " + pidFile + "; exec sleep 30"})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Run returned %s after start, want soon after the 500 ms deadline", d)
	}
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	waitFor(t, "the command to get SIGTERM and end", func() bool { return syscall.Kill(pid, 0) != nil })
	// The connection survives a cancelled session.
	if res := f.run(t, "echo again"); string(res.Stdout) != "again\n" || f.srv.Accepted() != 1 {
		t.Errorf("after cancel: %q over %d connections, want again over 1", res.Stdout, f.srv.Accepted())
	}
}

func TestReconnectAfterRestartWithNewHostKey(t *testing.T) {
	f := newFixture(t, Config{})
	f.run(t, "true")
	old := f.srv.HostKey
	f.srv.Close()
	f.serve(t, f.addr)
	if string(f.srv.HostKey.Marshal()) == string(old.Marshal()) {
		t.Fatal("restarted server kept its host key")
	}
	if res := f.run(t, "echo back"); string(res.Stdout) != "back\n" {
		t.Errorf("after restart: %q", res.Stdout)
	}
	if n := f.srv.Accepted(); n != 1 {
		t.Errorf("new server accepted %d connections, want 1", n)
	}
	// Forget closes the kept connection; the next command makes a new one.
	f.pool.Forget(f.addr)
	waitFor(t, "the forgotten connection to close", func() bool { return f.srv.Open() == 0 })
	f.run(t, "true")
	if n := f.srv.Accepted(); n != 2 {
		t.Errorf("after Forget: %d connections accepted, want 2", n)
	}
}

// A host that stops answering without closing (power cut, link cut) is found out by keepalives, and the next
// command connects anew.
func TestKeepaliveClosesADeadConnection(t *testing.T) {
	f := newFixture(t, Config{AliveInterval: 50 * time.Millisecond, AliveCountMax: 4})
	f.run(t, "true")
	f.srv.Freeze(true)
	c := f.pool.slots[f.addr].conn
	select {
	case <-c.done:
	case <-time.After(2 * time.Second):
		t.Fatal("keepalives did not close a connection whose host stopped answering")
	}
	f.srv.Freeze(false)
	f.run(t, "true")
	if n := f.srv.Accepted(); n != 2 {
		t.Errorf("%d connections accepted, want 2 (a new one after the dead one)", n)
	}
}

func TestConcurrentSessionsShareOneConnection(t *testing.T) {
	f := newFixture(t, Config{})
	const workers, each = 8, 5
	var wg sync.WaitGroup
	errs := make(chan error, workers*each)
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				want := fmt.Sprintf("%d-%d", w, i)
				res, err := f.pool.Run(context.Background(), f.addr, Command{Line: "echo " + want})
				if err != nil || strings.TrimSpace(string(res.Stdout)) != want {
					errs <- fmt.Errorf("%s: got %q, %v", want, res.Stdout, err)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := f.srv.Accepted(); n != 1 {
		t.Errorf("%d connections for %d concurrent commands, want 1", n, workers*each)
	}
}

func TestDedicated(t *testing.T) {
	f := newFixture(t, Config{})
	f.run(t, "true")
	res, err := f.pool.Run(context.Background(), f.addr, Command{Line: "echo own", Dedicated: true})
	if err != nil || string(res.Stdout) != "own\n" {
		t.Fatalf("dedicated: %q, %v", res.Stdout, err)
	}
	if n := f.srv.Accepted(); n != 2 {
		t.Errorf("%d connections accepted, want 2 (the kept one and the dedicated one)", n)
	}
	waitFor(t, "the dedicated connection to close", func() bool { return f.srv.Open() == 1 })
}

// Close leaves no goroutine and no file descriptor behind.
func TestCloseLeaksNothing(t *testing.T) {
	key, err := sshtest.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := sshtest.Serve(ln, key.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	settle()
	goroutines, fds := runtime.NumGoroutine(), openFDs(t)
	p := New(Config{User: "root", Signer: key, AliveInterval: 20 * time.Millisecond})
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 5 {
				if _, err := p.Run(context.Background(), srv.Addr(), Command{Line: "echo x", Stdin: strings.NewReader("in")}); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	_, _ = p.Run(ctx, srv.Addr(), Command{Line: "exec sleep 30"})
	cancel()
	if _, err := p.Run(context.Background(), srv.Addr(), Command{Line: "true", Dedicated: true}); err != nil {
		t.Fatal(err)
	}
	if openFDs(t) <= fds {
		t.Fatal("no connection open before Close: the test proves nothing")
	}
	p.Close()
	waitFor(t, "goroutines and descriptors back to before the pool", func() bool {
		return runtime.NumGoroutine() <= goroutines && openFDs(t) <= fds
	})
}

func settle() {
	for range 5 {
		runtime.Gosched()
		time.Sleep(10 * time.Millisecond)
	}
}

func openFDs(t *testing.T) int {
	t.Helper()
	es, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(es)
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/kiln-project/kiln/lab/netns"
	"github.com/kiln-project/kiln/lab/sshpool/sshtest"
)

func TestRemoteCommandQuotes(t *testing.T) {
	got := RemoteCommand(context.Background(), "sh", "-c", "echo 'a b' $x", "")
	if want := `sh -c 'echo '\''a b'\'' $x' ''`; got != want {
		t.Errorf("RemoteCommand = %s, want %s", got, want)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if got := RemoteCommand(ctx, "true"); !strings.HasPrefix(got, "timeout --kill-after=5 5") || !strings.HasSuffix(got, " true") {
		t.Errorf("bounded RemoteCommand = %s, want timeout --kill-after=5 5x true", got)
	}
}

// sshLab is a lab without VMs: its namespace, its key and a state naming node1 at 10.77.0.11 and node2 at
// 10.77.0.12, where an in-process SSH server (sshtest, running commands with the host's sh) plays node1 inside
// the namespace; node2's address answers nothing.
type sshLab struct {
	root, name string
	lab        *Lab
	srv        *sshtest.Server
}

func newSSHLab(t *testing.T) *sshLab {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: no namespaces")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root for network namespaces")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("ip not installed")
	}
	ctx := context.Background()
	s := &sshLab{root: t.TempDir(), name: fmt.Sprintf("ssh%d", os.Getpid()%100000)}
	dir := filepath.Join(s.root, s.name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	st := State{Version: stateVersion, Name: s.name, NextHardware: 3,
		Nodes: []NodeState{newNode(s.name, 1, 1), newNode(s.name, 2, 2)}}
	if st.Nodes[0].Address != "10.77.0.11" || st.Nodes[1].Address != "10.77.0.12" {
		t.Fatalf("node addresses %s, %s: the test expects 10.77.0.11 and .12", st.Nodes[0].Address, st.Nodes[1].Address)
	}
	if err := saveState(dir, st); err != nil {
		t.Fatal(err)
	}
	ns := Namespace(s.name)
	t.Cleanup(func() { _ = netns.Delete(context.Background(), ns) })
	if err := netns.Create(ctx, ns, Bridge, HostCIDR); err != nil {
		t.Fatal(err)
	}
	for _, a := range []string{"10.77.0.11/32", "10.77.0.12/32"} {
		if out, err := exec.Command("ip", "-n", ns, "addr", "add", a, "dev", "lo").CombinedOutput(); err != nil {
			t.Fatalf("ip addr add %s: %v: %s", a, err, out)
		}
	}
	var err error
	if s.lab, err = Open(s.root, s.name, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.lab.genKey(); err != nil {
		t.Fatal(err)
	}
	pub, err := os.ReadFile(s.lab.KeyPath() + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	key, comment, _, _, err := ssh.ParseAuthorizedKey(pub)
	if err != nil || comment != "kiln-lab-"+s.name {
		t.Fatalf("public key %q: comment %q, %v", pub, comment, err)
	}
	var ln net.Listener
	if err := netns.Do(ns, func() (err error) { ln, err = net.Listen("tcp", "10.77.0.11:22"); return err }); err != nil {
		t.Fatal(err)
	}
	if s.srv, err = sshtest.Serve(ln, key); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.srv.Close)
	return s
}

func (s *sshLab) node(t *testing.T, l *Lab, name string) *Node {
	t.Helper()
	n, err := l.Node(name)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestExecThroughTheNamespace(t *testing.T) {
	s := newSSHLab(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	n1 := s.node(t, s.lab, "node1")

	res, err := n1.Exec(ctx, "sh", "-c", "echo out; echo oops >&2; exit 3")
	if err != nil || res.ExitCode != 3 || string(res.Stdout) != "out\n" || res.Stderr != "oops" {
		t.Errorf("exit 3: %+v, %v", res, err)
	}
	res, err = n1.ExecWith(ctx, ExecOptions{Stdin: strings.NewReader("piped\n")}, "cat")
	if err != nil || string(res.Stdout) != "piped\n" {
		t.Errorf("stdin: %q, %v", res.Stdout, err)
	}
	var streamed bytes.Buffer
	res, err = n1.ExecWith(ctx, ExecOptions{Stdout: &streamed}, "echo", "streamed")
	if err != nil || streamed.String() != "streamed\n" || len(res.Stdout) != 0 {
		t.Errorf("stdout writer got %q, result %q, %v", streamed.String(), res.Stdout, err)
	}
	if n := s.srv.Accepted(); n != 1 {
		t.Errorf("%d connections for 3 commands, want 1", n)
	}
	// The VIP path: a connection of its own, closed after.
	if res, err := s.lab.ExecAt(ctx, "10.77.0.11", ExecOptions{}, "echo", "vip"); err != nil || string(res.Stdout) != "vip\n" {
		t.Errorf("ExecAt: %q, %v", res.Stdout, err)
	}
	waitUntil(t, "the ExecAt connection to close", func() bool { return s.srv.Open() == 1 })

	// node2's address refuses connections: unreachable, and fast.
	if _, err := s.node(t, s.lab, "node2").Exec(ctx, "true"); !errors.Is(err, ErrUnreachable) {
		t.Errorf("node2: %v, want ErrUnreachable", err)
	}
	// A cancelled command returns at once with ctx's error, not unreachable.
	cctx, ccancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer ccancel()
	start := time.Now()
	if _, err := n1.Exec(cctx, "sleep", "30"); !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, ErrUnreachable) {
		t.Errorf("cancelled: %v, want DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("cancelled Exec returned after %s", d)
	}

	// Another handle on the same lab has connections of its own; killing node1 through either closes both.
	l2, err := Open(s.root, s.name, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.node(t, l2, "node1").Exec(ctx, "true"); err != nil {
		t.Fatal(err)
	}
	if n := s.srv.Open(); n != 2 {
		t.Fatalf("%d connections open with two handles, want 2", n)
	}
	if err := n1.Kill(ctx); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "kill to close both handles' connections", func() bool { return s.srv.Open() == 0 })
	if _, err := n1.Exec(ctx, "true"); err != nil {
		t.Fatalf("after kill, the next command connects again: %v", err)
	}
	if _, err := s.node(t, l2, "node1").Exec(ctx, "true"); err != nil {
		t.Fatal(err)
	}
	// Close ends one handle's connections.
	l2.Close()
	waitUntil(t, "Close to end l2's connection", func() bool { return s.srv.Open() == 1 })
	// Down ends everyone's.
	if err := Down(ctx, s.root, s.name); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "down to close every connection", func() bool { return s.srv.Open() == 0 })
}

// A handle dropped without Close closes its connections once it is garbage, and leaves no goroutine behind.
func TestDroppedHandleClosesItsConnections(t *testing.T) {
	s := newSSHLab(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s.lab = nil
	runtime.GC()
	goroutines := runtime.NumGoroutine()
	func() {
		l, err := Open(s.root, s.name, nil)
		if err != nil {
			t.Fatal(err)
		}
		for range 3 {
			if _, err := s.node(t, l, "node1").Exec(ctx, "true"); err != nil {
				t.Fatal(err)
			}
		}
	}()
	if n := s.srv.Open(); n != 1 {
		t.Fatalf("%d connections open, want 1", n)
	}
	waitUntil(t, "the dropped handle's connection to close", func() bool {
		runtime.GC()
		return s.srv.Open() == 0 && runtime.NumGoroutine() <= goroutines
	})
	pools.mu.Lock()
	left := len(pools.byDir)
	pools.mu.Unlock()
	if left != 0 {
		t.Errorf("%d lab directories still hold pools", left)
	}
}

// A handle only reachable through the running command stays alive until the command ends: the collector must
// not close the connection under it (kiln lab exec holds no reference to its node while the command runs).
func TestHandleOutlivesItsCommand(t *testing.T) {
	s := newSSHLab(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s.lab = nil
	done := make(chan struct{})
	defer close(done)
	go func() {
		for {
			select {
			case <-done:
				return
			case <-time.After(5 * time.Millisecond):
				runtime.GC()
			}
		}
	}()
	openNode1 := func() *Node {
		l, err := Open(s.root, s.name, nil)
		if err != nil {
			t.Fatal(err)
		}
		return s.node(t, l, "node1")
	}
	res, err := openNode1().Exec(ctx, "sh", "-c", "sleep 1; echo done")
	if err != nil || string(res.Stdout) != "done\n" {
		t.Fatalf("command under a collected handle: %q, %v", res.Stdout, err)
	}
}

func waitUntil(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

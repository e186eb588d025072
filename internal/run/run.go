// Package run is kiln's one place that starts external programs, so every failure names its argv, exit code and stderr.
package run

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// Error is a failed command: what ran, how it ended, and the end of what it said.
type Error struct {
	Argv     []string
	ExitCode int
	Stderr   string
	Err      error
}

func (e *Error) Error() string {
	return fmt.Sprintf("%s: exit %d: %v: %s", strings.Join(e.Argv, " "), e.ExitCode, e.Err, e.Stderr)
}

func (e *Error) Unwrap() error { return e.Err }

// stderrTail bounds how much of stderr an error carries: enough for the tool's own message, not a whole log.
const stderrTail = 2048

// waitDelay is how long Wait waits for output after the command was killed.
const waitDelay = 5 * time.Second

// Cmd runs name with args and returns its stdout.
func Cmd(ctx context.Context, name string, args ...string) ([]byte, error) {
	return CmdIn(ctx, nil, name, args...)
}

// CmdIn is Cmd with stdin (nil for none).
func CmdIn(ctx context.Context, stdin []byte, name string, args ...string) ([]byte, error) {
	return CmdOpts(ctx, Opts{}, stdin, name, args...)
}

// Opts place a command: its working directory ("" for the caller's) and variables added to the caller's
// environment (later ones win, as in exec.Cmd.Env).
type Opts struct {
	Dir string
	Env []string
}

func (o Opts) apply(c *exec.Cmd) {
	c.Dir = o.Dir
	if len(o.Env) > 0 {
		c.Env = append(os.Environ(), o.Env...)
	}
}

// CmdOpts is CmdIn run as o says.
func CmdOpts(ctx context.Context, o Opts, stdin []byte, name string, args ...string) ([]byte, error) {
	c := exec.CommandContext(ctx, name, args...)
	o.apply(c)
	// When ctx ends, kill the command's whole process group, not only the command: `gluster volume heal … info`
	// runs glfsheal, which held the stdout pipe open after the CLI was killed, so Wait (and the agent's pass
	// with it) blocked until glfsheal finished on its own, and each timed-out call left one more behind.
	// WaitDelay bounds the wait for a descendant that escaped the group.
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	c.Cancel = func() error { return syscall.Kill(-c.Process.Pid, syscall.SIGKILL) }
	c.WaitDelay = waitDelay
	var stdout, stderr bytes.Buffer
	c.Stdout, c.Stderr = &stdout, &stderr
	if stdin != nil {
		c.Stdin = bytes.NewReader(stdin)
	}
	if err := c.Run(); err != nil {
		e := &Error{Argv: append([]string{name}, args...), ExitCode: -1, Err: err}
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			e.ExitCode = ee.ExitCode()
		}
		s := strings.TrimSpace(stderr.String())
		if len(s) > stderrTail {
			s = "…" + s[len(s)-stderrTail:]
		}
		e.Stderr = s
		return stdout.Bytes(), e
	}
	return stdout.Bytes(), nil
}

// Lines runs name with args and hands every line of its stdout and stderr, interleaved as written, to onLine
// (from one goroutine, in order). The error is Cmd's, its Stderr the tail of all output: a tool that reports
// progress on stdout and its failure on stderr (mmdebstrap, apt) is read as one log.
func Lines(ctx context.Context, onLine func(string), name string, args ...string) error {
	return LinesOpts(ctx, Opts{}, onLine, name, args...)
}

// LinesOpts is Lines run as o says.
func LinesOpts(ctx context.Context, o Opts, onLine func(string), name string, args ...string) error {
	c := exec.CommandContext(ctx, name, args...)
	o.apply(c)
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	c.Cancel = func() error { return syscall.Kill(-c.Process.Pid, syscall.SIGKILL) }
	c.WaitDelay = waitDelay
	pr, pw := io.Pipe()
	c.Stdout, c.Stderr = pw, pw
	tail := &tailBuffer{max: stderrTail}
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			tail.add(line)
			onLine(line)
		}
		// A line longer than the buffer ends the scan: drain so the command never blocks on a full pipe.
		_, _ = io.Copy(io.Discard, pr)
	}()
	err := c.Run()
	pw.Close()
	<-done
	if err != nil {
		e := &Error{Argv: append([]string{name}, args...), ExitCode: -1, Err: err, Stderr: tail.String()}
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			e.ExitCode = ee.ExitCode()
		}
		return e
	}
	return nil
}

// tailBuffer keeps the last lines of a log, at most max bytes.
type tailBuffer struct {
	max   int
	lines []string
	size  int
}

func (t *tailBuffer) add(line string) {
	t.lines = append(t.lines, line)
	t.size += len(line) + 1
	for t.size > t.max && len(t.lines) > 1 {
		t.size -= len(t.lines[0]) + 1
		t.lines = t.lines[1:]
	}
}

func (t *tailBuffer) String() string { return strings.Join(t.lines, "\n") }

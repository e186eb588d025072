package run

import (
	"context"
	"errors"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A command that leaves a child holding its stdout (as gluster's CLI leaves glfsheal) must not outlive ctx:
// Cmd returns soon after the deadline and the child is killed with it.
func TestCmdKillsTheProcessGroupWhenCtxEnds(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	out, err := Cmd(ctx, "sh", "-c", "sleep 60 & echo $!; wait")
	if took := time.Since(start); took > waitDelay {
		t.Fatalf("Cmd returned after %s, want before WaitDelay (%s)", took, waitDelay)
	}
	var re *Error
	if !errors.As(err, &re) {
		t.Fatalf("err = %v, want a *run.Error", err)
	}
	pid, perr := strconv.Atoi(strings.TrimSpace(string(out)))
	if perr != nil {
		t.Fatalf("child pid from %q: %v", out, perr)
	}
	// The killed child is reparented to init: wait (bounded) until it is reaped or a zombie.
	for i := 0; ; i++ {
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			return
		}
		if stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat"); err == nil && strings.Contains(string(stat), ") Z ") {
			return
		}
		if i == 50 {
			t.Fatalf("child %d still alive 5 s after Cmd returned", pid)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestCmdErrorNamesArgvAndExitCode(t *testing.T) {
	_, err := Cmd(context.Background(), "sh", "-c", "echo broken >&2; exit 3")
	var re *Error
	if !errors.As(err, &re) {
		t.Fatalf("err = %v, want a *run.Error", err)
	}
	if re.ExitCode != 3 || re.Stderr != "broken" || !strings.Contains(err.Error(), "sh -c") {
		t.Fatalf("err = %+v", re)
	}
}

// Lines hands over stdout and stderr line by line, in order, and a failure carries the tail of both.
func TestLines(t *testing.T) {
	var got []string
	err := Lines(context.Background(), func(l string) { got = append(got, l) }, "sh", "-c", "echo one; echo two >&2; echo three; exit 3")
	if want := []string{"one", "two", "three"}; !slices.Equal(got, want) {
		t.Errorf("lines %q, want %q", got, want)
	}
	var e *Error
	if !errors.As(err, &e) || e.ExitCode != 3 || e.Stderr != "one\ntwo\nthree" {
		t.Fatalf("err = %#v, want exit 3 with the output's tail", err)
	}
	long := strings.Repeat("x", 100)
	tb := &tailBuffer{max: 250}
	for range 10 {
		tb.add(long)
	}
	if n := strings.Count(tb.String(), "\n") + 1; n != 2 {
		t.Errorf("tail keeps %d lines of 101 bytes under a 250-byte bound, want 2", n)
	}
}

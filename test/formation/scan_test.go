package formation

import (
	"errors"
	"net"
	"os"
	"reflect"
	"slices"
	"syscall"
	"testing"
	"time"
)

func TestClassifyRealDials(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	open := ln.Addr().String()
	// A port that was just listening and is now closed: connects get a RST.
	ln2, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln2.Addr().String()
	ln2.Close()
	defer ln.Close()

	c, err := net.DialTimeout("tcp", open, time.Second)
	if got := Classify(err); got != Open {
		t.Errorf("listening port: %v (%v), want open", got, err)
	}
	if c != nil {
		c.Close()
	}
	_, err = net.DialTimeout("tcp", closed, time.Second)
	if got := Classify(err); got != Closed {
		t.Errorf("closed port: %v (%v), want closed", got, err)
	}
}

func TestClassifyErrors(t *testing.T) {
	timeout := &net.OpError{Op: "dial", Net: "tcp", Err: os.ErrDeadlineExceeded}
	for _, tc := range []struct {
		name string
		err  error
		want PortState
	}{
		{"nil", nil, Open},
		{"refused", &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}, Closed},
		{"timeout", timeout, Filtered},
		{"host unreachable", &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.EHOSTUNREACH)}, Filtered},
	} {
		if got := Classify(tc.err); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
	if !isNetErr(timeout) {
		t.Error("timeout is a network outcome")
	}
	if isNetErr(&net.OpError{Op: "dial", Err: os.NewSyscallError("bind", syscall.EADDRNOTAVAIL)}) {
		t.Error("a source address missing locally is not a network outcome")
	}
	if isNetErr(errors.New("other")) {
		t.Error("an unknown error is not a network outcome")
	}
}

func TestPortPolicyCheck(t *testing.T) {
	p := PortPolicy{MustAnswer: []int{22, 80}, MayAnswer: []int{443}}
	for _, tc := range []struct {
		name string
		res  map[int]PortState
		want []string
	}{
		{"exactly the web ports", map[int]PortState{22: Open, 80: Open, 443: Closed, 2377: Filtered, 111: Closed}, nil},
		{"443 open is fine", map[int]PortState{22: Open, 80: Open, 443: Open, 2377: Filtered}, nil},
		{"swarm port answers", map[int]PortState{22: Open, 80: Open, 2377: Open, 24007: Open},
			[]string{"port 2377: answers, must not", "port 24007: answers, must not"}},
		{"mesh missing", map[int]PortState{22: Open, 80: Filtered}, []string{"port 80: filtered, must answer"}},
		{"ssh not probed", map[int]PortState{80: Open}, []string{"port 22: not probed, must answer"}},
	} {
		got := p.Check(tc.res)
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestFormatScan(t *testing.T) {
	got := FormatScan(map[int]PortState{443: Closed, 22: Open, 2377: Filtered})
	if want := "22/open 443/closed 2377/filtered"; got != want {
		t.Errorf("%q, want %q", got, want)
	}
	for _, p := range []int{22, 80, 443, 2377, 7946, 7947, 24007, 49152, 111} {
		if !slices.Contains(ScanPorts, p) {
			t.Errorf("ScanPorts lacks %d", p)
		}
	}
}

package healing_test

import (
	"fmt"
	"sync"
	"testing"
)

// recorder is a testing.TB that keeps every failure message it is given, so that TestChain can repeat them
// as its very last output: CI shows only the tail of a run's output, and a failed chain's tail is the
// teardown diagnostics (three nodes' status, journal and serial console), which push the failure itself
// out of view.
type recorder struct {
	testing.TB
	kept *failures
}

func (r recorder) note(msg string) {
	r.kept.mu.Lock()
	defer r.kept.mu.Unlock()
	r.kept.msgs = append(r.kept.msgs, r.Name()+": "+msg)
}

func (r recorder) Error(args ...any) {
	r.Helper()
	r.note(fmt.Sprint(args...))
	r.TB.Error(args...)
}

func (r recorder) Errorf(format string, args ...any) {
	r.Helper()
	r.note(fmt.Sprintf(format, args...))
	r.TB.Errorf(format, args...)
}

func (r recorder) Fatal(args ...any) {
	r.Helper()
	r.note(fmt.Sprint(args...))
	r.TB.Fatal(args...)
}

func (r recorder) Fatalf(format string, args ...any) {
	r.Helper()
	r.note(fmt.Sprintf(format, args...))
	r.TB.Fatalf(format, args...)
}

// failures collects the messages of every recorder it hands out.
type failures struct {
	mu   sync.Mutex
	msgs []string
}

func (f *failures) wrap(t testing.TB) testing.TB { return recorder{TB: t, kept: f} }

func (f *failures) list() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.msgs...)
}

func TestRecorderKeepsFailureMessages(t *testing.T) {
	var f failures
	r := f.wrap(silentTB{})
	r.Errorf("VIP on %s", "node2")
	r.Fatal("volume not writable: ", "timeout")
	got := f.list()
	want := []string{"silent: VIP on node2", "silent: volume not writable: timeout"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("recorded %q, want %q", got, want)
	}
}

// silentTB reports nothing: the failures are expected, and not this test's. Its Fatal returns.
type silentTB struct{ testing.TB }

func (silentTB) Name() string          { return "silent" }
func (silentTB) Helper()               {}
func (silentTB) Error(...any)          {}
func (silentTB) Errorf(string, ...any) {}
func (silentTB) Fatal(...any)          {}
func (silentTB) Fatalf(string, ...any) {}

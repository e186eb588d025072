package discovery

import (
	"fmt"
	"testing"
	"time"
)

func TestThrottle(t *testing.T) {
	now := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	th := newThrottle(time.Minute)
	if !th.allow("10.0.0.1", now) || th.allow("10.0.0.1", now.Add(59*time.Second)) || !th.allow("10.0.0.1", now.Add(time.Minute)) {
		t.Fatal("one key: want allowed, refused within the period, allowed after it")
	}
	// A flood of spoofed sources: memory stays bounded, and new keys wait while every remembered one is recent.
	for i := range 10 * maxThrottled {
		th.allow(fmt.Sprintf("src-%d", i), now.Add(time.Minute))
	}
	if th.size() > maxThrottled {
		t.Fatalf("throttle remembers %d keys, bound %d", th.size(), maxThrottled)
	}
	if th.allow("10.0.0.2", now.Add(time.Minute+time.Second)) {
		t.Error("a new key was allowed while the throttle was full of recent ones")
	}
	// Once the flood's keys are older than the period they are forgotten, and new keys act again.
	if !th.allow("10.0.0.2", now.Add(2*time.Minute+time.Second)) || th.size() != 1 {
		t.Errorf("after the flood aged out: allowed=false or %d keys remembered, want 1", th.size())
	}
}

package formation

import (
	"testing"
	"time"
)

func TestGuestToHost(t *testing.T) {
	before := time.Date(2026, 1, 1, 12, 0, 10, 0, time.UTC)
	after := before.Add(2 * time.Second)
	// The guest had been up 100 s at the midpoint (12:00:11); the unit became active 40 s after boot, i.e.
	// 60 s before the midpoint.
	got := GuestToHost(before, after, 100, 40_000_000)
	if want := time.Date(2026, 1, 1, 11, 59, 11, 0, time.UTC); !got.Equal(want) {
		t.Errorf("%v, want %v", got, want)
	}
}

package vrrp

import (
	"os"
	"testing"
)

// The image ships DropIn as a file (root is read-only at runtime); the two must not drift apart.
func TestImageDropInMatches(t *testing.T) {
	got, err := os.ReadFile("../../overlays/base/etc/systemd/system/keepalived.service.d/kiln.conf")
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != DropIn {
		t.Fatalf("overlays keepalived drop-in differs from vrrp.DropIn:\n%s", got)
	}
}

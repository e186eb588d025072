package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"testing"
)

// Namespace creates a network namespace named prefix+pid with its loopback up, removed when t ends. It skips
// under -short and without root (ip netns needs both a real kernel and privileges).
func Namespace(t *testing.T, prefix string) string {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: no namespaces")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root for ip netns")
	}
	ns := fmt.Sprintf("%s%d", prefix, os.Getpid()%100000)
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", ns, err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
	if out, err := exec.Command("ip", "-n", ns, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("%s: lo up: %v: %s", ns, err, out)
	}
	return ns
}

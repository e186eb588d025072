package identity

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// WriteHostFiles writes hostname to root/etc/hostname and maps it to 127.0.1.1 in root/etc/hosts (Debian's
// convention, so sudo and anything else that resolves its own name works without DNS). /etc is tmpfs-backed
// and starts from the image on every boot, so this runs every boot; it is idempotent.
func WriteHostFiles(root, hostname string) error {
	etc := filepath.Join(root, "etc")
	if err := writeIfChanged(filepath.Join(etc, "hostname"), []byte(hostname+"\n")); err != nil {
		return fmt.Errorf("identity: write hostname: %w", err)
	}
	hostsPath := filepath.Join(etc, "hosts")
	old, err := os.ReadFile(hostsPath)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("identity: read hosts: %w", err)
	}
	if err := writeIfChanged(hostsPath, []byte(hostsWith(string(old), hostname))); err != nil {
		return fmt.Errorf("identity: write hosts: %w", err)
	}
	return nil
}

// hostsWith returns hosts content with exactly one 127.0.1.1 line, naming hostname; other lines are kept.
func hostsWith(hosts, hostname string) string {
	var out []string
	for _, line := range strings.Split(strings.TrimRight(hosts, "\n"), "\n") {
		if f := strings.Fields(line); len(f) > 0 && f[0] == "127.0.1.1" {
			continue
		}
		if line != "" || len(out) > 0 {
			out = append(out, line)
		}
	}
	if len(out) == 0 {
		out = append(out, "127.0.0.1\tlocalhost")
	}
	// Right after the localhost line, where Debian's installer puts it.
	entry := "127.0.1.1\t" + hostname
	for i, line := range out {
		if f := strings.Fields(line); len(f) > 0 && f[0] == "127.0.0.1" {
			out = append(out[:i+1], append([]string{entry}, out[i+1:]...)...)
			return strings.Join(out, "\n") + "\n"
		}
	}
	return strings.Join(append([]string{entry}, out...), "\n") + "\n"
}

func writeIfChanged(path string, data []byte) error {
	if old, err := os.ReadFile(path); err == nil && string(old) == string(data) {
		return nil
	}
	return writeAtomic(path, data)
}

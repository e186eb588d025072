// Package pidfile reads the pid files of the daemons kiln starts (qemu, dnsmasq, kiln pxe serve) and believes a
// pid only when that process is alive and its command line names a marker (its pid or config file): pids get
// reused, and kiln must never signal someone else's process.
package pidfile

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Running returns the pid in path, and whether that process is alive with marker in its command line.
func Running(path, marker string) (int, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0, false
	}
	return pid, Owns(pid, marker)
}

// Owns reports whether pid is a live (not zombie) process whose command line contains marker.
func Owns(pid int, marker string) bool {
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || len(cmdline) == 0 { // a zombie has an empty command line
		return false
	}
	for _, arg := range bytes.Split(cmdline, []byte{0}) {
		if bytes.Contains(arg, []byte(marker)) {
			return true
		}
	}
	return false
}

package glusterd

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// ResetEpochFile holds the epoch this node's glusterd was last reset for. It lives outside StateDir, which
// the reset sets aside.
const ResetEpochFile = "/var/lib/kiln/gluster-reset-epoch"

// WriteMarker writes a one-line marker file, creating its directory. Markers are read for their presence or
// one value, so a plain write is enough.
func WriteMarker(path, value string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, []byte(value+"\n"), 0o644)
}

// HasMarker reports whether the marker file at path exists.
func HasMarker(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular()
}

// ReadResetEpoch reads the ResetEpochFile at path; absent or unreadable is 0 (never reset).
func ReadResetEpoch(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0
	}
	return n
}

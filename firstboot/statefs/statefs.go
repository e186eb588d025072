// Package statefs says where this boot keeps /var. A netbooted node with no local disk for kiln-state runs
// with /var on tmpfs: the initramfs writes Marker to say so, with its reason. Such a node keeps nothing across
// a reboot (no glusterd state, no election state), so it holds no gluster brick and casts no election vote
// (docs/formation.md, "Nodes with /var in RAM").
package statefs

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Marker is the file the initramfs writes when it mounts /var on tmpfs; its first line is the reason. It is
// the only signal: a /var that merely is a tmpfs (a test namespace, a container) says nothing about whether the
// machine keeps state across reboots.
const Marker = "/run/kiln/state-tmpfs"

// DefaultReason is the reason when Marker is empty.
const DefaultReason = "no local disk for kiln-state"

// maxReason bounds the reason read from Marker: it ends up in status lines and the journal.
const maxReason = 200

// InRAM reports whether /var is in RAM this boot (Marker exists under root, "/" on a node) and why.
func InRAM(root string) (reason string, inRAM bool, err error) {
	path := filepath.Join(root, Marker)
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("statefs: %w", err)
	}
	defer f.Close()
	line, err := bufio.NewReader(io.LimitReader(f, 4096)).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", false, fmt.Errorf("statefs: read %s: %w", path, err)
	}
	reason = strings.Map(func(r rune) rune {
		if unicode.IsPrint(r) {
			return r
		}
		return -1
	}, strings.TrimSpace(line))
	for len(reason) > maxReason {
		_, size := utf8.DecodeLastRuneInString(reason)
		reason = reason[:len(reason)-size]
	}
	if reason == "" {
		reason = DefaultReason
	}
	return reason, true, nil
}

// NoBrickLine is how a node with /var in RAM states that it holds no brick (status, journal).
func NoBrickLine(reason string) string {
	return "no brick: /var is in RAM (" + reason + ")"
}

// Package version says which kiln source a binary was built from: the release name, the commit and its date
// as Go's build stamping recorded them, and the Go toolchain. Both binaries print it, and the builder records
// it in manifest.json and in the image's /usr/lib/kiln/image.json.
package version

import (
	"debug/buildinfo"
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"
	"time"
)

// version is the release name, set by the Makefile from `git describe` (-X). A plain `go build` leaves "dev":
// the commit and date below still say exactly what was built. It is a var, not a const, for -X to reach it.
var version = "dev"

// Info is what a binary knows about its own build. The JSON names follow docs/cli.md.
type Info struct {
	// Version is the release name (`git describe --tags --always --dirty` at build time), "dev" without one.
	Version string `json:"version"`
	// Commit is the full commit hash Go stamped (vcs.revision); empty when built outside a git checkout.
	Commit string `json:"commit,omitempty"`
	// CommitTime is the commit's date (vcs.time), RFC 3339 UTC: the date of the source, not of the build,
	// which keeps builds reproducible.
	CommitTime string `json:"commit_time,omitempty"`
	// Modified reports whether the checkout had uncommitted changes (vcs.modified).
	Modified bool `json:"modified,omitempty"`
	// Go is the toolchain that compiled the binary (go1.26.8).
	Go string `json:"go"`
}

// Get reads the running binary's build information.
func Get() Info {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return Info{Version: version, Go: runtime.Version()}
	}
	i := fromBuildInfo(bi)
	i.Version = version
	return i
}

// ReadFile reads the build information of another Go binary: the agent the builder bakes into an image.
// Its release name is read back from the -X flag the Makefile passed, which Go records with the settings.
func ReadFile(path string) (Info, error) {
	bi, err := buildinfo.ReadFile(path)
	if err != nil {
		return Info{}, fmt.Errorf("version: %s: %w", path, err)
	}
	return fromBuildInfo(bi), nil
}

// versionX is the -X assignment of version, as it appears in the recorded -ldflags.
const versionX = "github.com/kiln-project/kiln/internal/version.version="

func fromBuildInfo(bi *debug.BuildInfo) Info {
	i := Info{Version: "dev", Go: bi.GoVersion}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			i.Commit = s.Value
		case "vcs.time":
			i.CommitTime = s.Value
		case "vcs.modified":
			i.Modified = s.Value == "true"
		case "-ldflags":
			if _, v, ok := strings.Cut(s.Value, versionX); ok {
				i.Version, _, _ = strings.Cut(strings.Trim(v, `'"`), " ")
				i.Version = strings.TrimRight(i.Version, `'"`)
			}
		}
	}
	return i
}

// String is the one-line form --version prints: "v0.3.0-12-gabc1234 (commit abc1234def01, 2026-01-02, go1.26.8)".
func (i Info) String() string {
	s := i.Version + " ("
	if i.Commit != "" {
		c := i.Commit
		if len(c) > 12 {
			c = c[:12]
		}
		s += "commit " + c
		if i.Modified {
			s += "+modified"
		}
		if t, err := time.Parse(time.RFC3339, i.CommitTime); err == nil {
			s += ", " + t.UTC().Format(time.DateOnly)
		}
		s += ", "
	} else {
		s += "no commit recorded, "
	}
	return s + i.Go + ")"
}

// Text is the multi-line form `version` prints, one field per line.
func (i Info) Text(name string) string {
	commit, date := i.Commit, i.CommitTime
	if commit == "" {
		commit = "(not recorded: built outside a git checkout)"
	} else if i.Modified {
		commit += " (with uncommitted changes)"
	}
	if date == "" {
		date = "-"
	}
	return fmt.Sprintf("%s %s\ncommit:      %s\ncommit date: %s\ngo:          %s\n", name, i.Version, commit, date, i.Go)
}

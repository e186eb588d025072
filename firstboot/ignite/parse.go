// Package ignite applies the image's baked Ignition config (/usr/lib/kiln/user.ign, translated from the spec's
// Butane file at build time) to the running node: users, files, directories, links and systemd units.
//
// It implements a subset of Ignition spec 3.3 (docs/agent.md lists it) and rejects everything else by name,
// because a config whose fields were silently dropped is worse than one that fails at build or boot. It runs
// on every boot: /etc is a tmpfs-backed overlay that starts from the image each time, so what ignite wrote
// there last boot is gone, while /var (homes, state) persists; every step is idempotent.
package ignite

import (
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"sort"
	"strings"

	"github.com/coreos/ignition/v2/config/v3_3"
	"github.com/coreos/ignition/v2/config/v3_3/types"
	"github.com/coreos/vcontext/report"
)

// DefaultPath is where the image carries its Ignition config (docs/design.md).
const DefaultPath = "/usr/lib/kiln/user.ign"

// supported lists the fields ignite implements, as JSON paths with "[]" for any list index. Everything else
// that is set in a config is an error naming the field.
var supported = map[string]bool{
	"ignition.version": true,

	"passwd.users[].name":              true,
	"passwd.users[].uid":               true,
	"passwd.users[].gecos":             true,
	"passwd.users[].groups":            true,
	"passwd.users[].shell":             true,
	"passwd.users[].passwordHash":      true,
	"passwd.users[].sshAuthorizedKeys": true,
	"passwd.groups[].name":             true,
	"passwd.groups[].gid":              true,

	"storage.files[].path":                 true,
	"storage.files[].mode":                 true,
	"storage.files[].overwrite":            true,
	"storage.files[].user.id":              true,
	"storage.files[].user.name":            true,
	"storage.files[].group.id":             true,
	"storage.files[].group.name":           true,
	"storage.files[].contents.source":      true,
	"storage.files[].contents.compression": true,
	"storage.directories[].path":           true,
	"storage.directories[].mode":           true,
	"storage.directories[].overwrite":      true,
	"storage.directories[].user.id":        true,
	"storage.directories[].user.name":      true,
	"storage.directories[].group.id":       true,
	"storage.directories[].group.name":     true,
	"storage.links[].path":                 true,
	"storage.links[].target":               true,
	"storage.links[].hard":                 true,
	"storage.links[].overwrite":            true,
	"storage.links[].user.id":              true,
	"storage.links[].user.name":            true,
	"storage.links[].group.id":             true,
	"storage.links[].group.name":           true,

	"systemd.units[].name":               true,
	"systemd.units[].contents":           true,
	"systemd.units[].enabled":            true,
	"systemd.units[].mask":               true,
	"systemd.units[].dropins[].name":     true,
	"systemd.units[].dropins[].contents": true,
}

// UnsupportedError names the fields of a config that ignite does not implement.
type UnsupportedError struct {
	Fields []string
}

func (e *UnsupportedError) Error() string {
	return "ignition: unsupported fields (kiln implements a subset of spec 3.3, see docs/agent.md): " + strings.Join(e.Fields, ", ")
}

// Parse parses an Ignition config of spec 3.0–3.3 (translated up to 3.3, as Ignition does), validates it with
// Ignition's own validation, and rejects fields ignite does not implement, unknown keys included. It returns
// the non-fatal report entries (warnings, infos) for the caller to log.
func Parse(data []byte) (*types.Config, []string, error) {
	cfg, rpt, err := v3_3.ParseCompatibleVersion(data)
	var unsupported, notes []string
	for _, e := range rpt.Entries {
		// Ignition only warns about unknown keys; here they are errors, since a misspelt key is a lost setting.
		if e.Kind == report.Warn && strings.HasPrefix(e.Message, "unused key") {
			unsupported = append(unsupported, jsonPath(e.Context.String()))
			continue
		}
		if !e.Kind.IsFatal() {
			notes = append(notes, e.String())
		}
	}
	if err != nil {
		return nil, notes, fmt.Errorf("ignition: %w: %s", err, strings.TrimSpace(rpt.String()))
	}
	unsupported = append(unsupported, Unsupported(cfg)...)
	if len(unsupported) > 0 {
		sort.Strings(unsupported)
		return nil, notes, &UnsupportedError{Fields: unsupported}
	}
	return &cfg, notes, nil
}

// jsonPath turns vcontext's "$.passwd.users.0.bogus" into "passwd.users[0].bogus".
func jsonPath(p string) string {
	p = strings.TrimPrefix(strings.TrimPrefix(p, "$"), ".")
	return indexPattern.ReplaceAllString(p, "[$1]")
}

var indexPattern = regexp.MustCompile(`\.(\d+)`)

// Unsupported lists the set fields of cfg that ignite does not implement, as JSON paths with indexes.
func Unsupported(cfg types.Config) []string {
	var out []string
	walk(reflect.ValueOf(cfg), "", "", &out)
	return out
}

// walk visits every set leaf of v. path has real indexes (for the message), generic has "[]" (for the lookup).
func walk(v reflect.Value, path, generic string, out *[]string) {
	switch v.Kind() {
	case reflect.Pointer:
		if !v.IsNil() {
			walk(v.Elem(), path, generic, out)
		}
	case reflect.Struct:
		t := v.Type()
		for i := range t.NumField() {
			f := t.Field(i)
			if f.Anonymous { // Node, FileEmbedded1, …: their fields belong to the parent object
				walk(v.Field(i), path, generic, out)
				continue
			}
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			walk(v.Field(i), join(path, name), join(generic, name), out)
		}
	case reflect.Slice:
		if v.Len() == 0 {
			return
		}
		if v.Type().Elem().Kind() != reflect.Struct {
			check(path, generic, out) // a list of strings is one field
			return
		}
		for i := range v.Len() {
			walk(v.Index(i), fmt.Sprintf("%s[%d]", path, i), generic+"[]", out)
		}
	default:
		if !v.IsZero() {
			check(path, generic, out)
		}
	}
}

func check(path, generic string, out *[]string) {
	if !supported[generic] {
		*out = append(*out, path)
	}
}

func join(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

// errUnsupportedSource is returned for contents that would need the network or a file outside the config.
var errUnsupportedSource = errors.New("only data: URLs are supported (ignite runs before the network, with no files beside the config)")

package spec

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	butane "github.com/coreos/butane/config"
	"github.com/coreos/butane/config/common"
	ign33 "github.com/coreos/ignition/v2/config/v3_3"
	"github.com/coreos/vcontext/report"
)

// MaxIgnitionVersion is the newest Ignition spec the image's applier accepts (Debian bookworm's ignition 2.14
// stops at 3.3.0), so Butane variants that translate to anything newer are refused at build time, not boot time.
const MaxIgnitionVersion = "3.3.0"

// emptyIgnition is the config of a spec without a Butane file: valid, and does nothing.
var emptyIgnition = []byte(`{"ignition":{"version":"` + MaxIgnitionVersion + `"}}`)

// Ignition translates the spec's Butane file into Ignition JSON (spec ≤ 3.3.0), strictly: any warning in
// Butane's report (an unknown key, a deprecated field) is an error, naming the file, line and column.
// The output is deterministic: compact JSON, inline resources not compressed (gzip would make user.ign
// unreadable for no gain, the layer is compressed anyway). Local file references resolve against the
// Butane file's directory. Without a Butane file it returns an empty valid config.
func (s *Spec) Ignition() ([]byte, error) {
	if s.Butane == "" {
		return emptyIgnition, nil
	}
	file := s.Path(s.Butane)
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, &FieldError{File: s.File, Path: "butane", Msg: err.Error()}
	}
	opts := common.TranslateBytesOptions{TranslateOptions: common.TranslateOptions{
		FilesDir:                  filepath.Dir(file),
		NoResourceAutoCompression: true,
	}}
	out, rep, err := butane.TranslateBytes(data, opts)
	if len(rep.Entries) > 0 {
		return nil, reportError(file, rep)
	}
	if err != nil {
		return nil, &FieldError{File: file, Msg: "butane: " + err.Error()}
	}
	// Parse it the way the image's Ignition will: an older spec version translates up, a newer one fails.
	if _, rep, err := ign33.ParseCompatibleVersion(out); err != nil {
		msg := fmt.Sprintf("translates to Ignition the image cannot apply (it accepts ≤ %s; use variant fcos version 1.4.0): %v",
			MaxIgnitionVersion, err)
		if len(rep.Entries) > 0 {
			msg += ": " + rep.String()
		}
		return nil, &FieldError{File: file, Msg: msg}
	}
	return out, nil
}

// reportError turns each Butane report entry into one error: "node.bu: line 9 col 3: warning at $.x: msg".
func reportError(file string, rep report.Report) error {
	var errs []error
	for _, e := range rep.Entries {
		fe := &FieldError{File: file}
		if e.Marker.StartP != nil {
			fe.Line, fe.Col = int(e.Marker.StartP.Line), int(e.Marker.StartP.Column)
		}
		where := ""
		if e.Context.Len() != 0 {
			where = " at " + e.Context.String()
		}
		fe.Msg = fmt.Sprintf("%s%s: %s", e.Kind.String(), where, e.Message)
		errs = append(errs, fe)
	}
	return errors.Join(errs...)
}

package spec

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/kiln-project/kiln/internal/yamlstrict"
)

// Load reads, strictly decodes, defaults and validates the spec at path. Every problem found is returned at
// once (errors.Join), each naming the file and the field path, so one edit-run cycle fixes them all.
func Load(path string) (*Spec, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("spec: %w", err)
	}
	s, err := Parse(path, data)
	if err != nil {
		return nil, err
	}
	s.Default()
	if err := s.Validate(); err != nil {
		return nil, err
	}
	return s, nil
}

// Parse strictly decodes data (read from file, which sets File and Dir) without defaults or validation.
// Unknown fields (with a "did you mean"), type mismatches, an empty file and more than one YAML document
// are errors at file:line:col; the field positions are kept for Validate's errors.
func Parse(file string, data []byte) (*Spec, error) {
	s := &Spec{File: file, Dir: filepath.Dir(file)}
	pos, err := yamlstrict.Decode(file, data, s)
	if err != nil {
		return nil, err
	}
	s.pos = pos
	return s, nil
}

// FieldError is one problem in a spec: where (file, line and column, field path) and what.
type FieldError = yamlstrict.Error

// ErrorAt returns a problem with the field at path (packages[3]), placed where the spec file has it; for
// checks made after Validate, such as the packages stage's check against the mirror.
func (s *Spec) ErrorAt(path, format string, args ...any) *FieldError {
	return s.pos.At(s.File, path, fmt.Sprintf(format, args...))
}

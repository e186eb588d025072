package spec

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"gopkg.in/yaml.v3"
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
// Unknown fields, type mismatches, an empty file and more than one YAML document are errors.
func Parse(file string, data []byte) (*Spec, error) {
	s := &Spec{File: file, Dir: filepath.Dir(file)}
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, &FieldError{File: file, Msg: "empty spec"}
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(s); err != nil {
		return nil, yamlError(file, err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		line := 0
		if err == nil {
			line = extra.Line
		}
		return nil, &FieldError{File: file, Line: line, Msg: "more than one YAML document; a spec is one document"}
	}
	return s, nil
}

// yamlLine matches one problem of a yaml.TypeError: "line 4: field pakages not found in type spec.Spec".
var (
	yamlLine     = regexp.MustCompile(`^line (\d+): (.*)$`)
	yamlNotFound = regexp.MustCompile(`^field (\S+) not found in type \S+$`)
)

// yamlError rewrites yaml.v3's messages into kiln's "file: line N: problem" form, one error per problem.
func yamlError(file string, err error) error {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		// Syntax errors: "yaml: line 3: mapping values are not allowed in this context".
		msg := strings.TrimPrefix(err.Error(), "yaml: ")
		return &FieldError{File: file, Line: lineOf(msg), Msg: stripLine(msg)}
	}
	var errs []error
	for _, e := range te.Errors {
		m := yamlLine.FindStringSubmatch(e)
		if m == nil {
			errs = append(errs, &FieldError{File: file, Msg: e})
			continue
		}
		msg := m[2]
		if nf := yamlNotFound.FindStringSubmatch(msg); nf != nil {
			msg = fmt.Sprintf("field %q not found", nf[1])
		}
		errs = append(errs, &FieldError{File: file, Line: atoi(m[1]), Msg: msg})
	}
	return errors.Join(errs...)
}

func lineOf(msg string) int {
	if m := yamlLine.FindStringSubmatch(msg); m != nil {
		return atoi(m[1])
	}
	return 0
}

func stripLine(msg string) string {
	if m := yamlLine.FindStringSubmatch(msg); m != nil {
		return m[2]
	}
	return msg
}

func atoi(s string) int {
	n := 0
	for _, c := range s {
		n = n*10 + int(c-'0')
	}
	return n
}

// FieldError is one problem in a spec: where (file, field path, or line) and what.
type FieldError struct {
	File string
	// Line is the 1-based line in File, 0 when the problem is tied to a field rather than a line.
	Line int
	// Col is the 1-based column on Line, 0 when unknown.
	Col int
	// Path is the field path in YAML keys, e.g. packages[3] or disk.espSizeMiB; empty for file-level problems.
	Path string
	Msg  string
}

func (e *FieldError) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ": line %d", e.Line)
		if e.Col > 0 {
			fmt.Fprintf(&b, " col %d", e.Col)
		}
	}
	if e.Path != "" {
		b.WriteString(": " + e.Path)
	}
	b.WriteString(": " + e.Msg)
	return b.String()
}

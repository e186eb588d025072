// Package yamlstrict decodes a small YAML file (an image spec, a cluster config) into a Go struct strictly
// and says where each problem is: every unknown key (with a "did you mean"), type mismatch and syntax error
// is reported at once, at file:line:col, with the field path. It also returns where each field is, so the
// caller's validation can point at the same places.
package yamlstrict

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// Error is one problem at a place in a file.
type Error struct {
	// File is the file's name as the user gave it; empty when the data has no file (the caller adds one).
	File string
	// Line and Col are 1-based; 0 when the problem is the whole file or its place is unknown.
	Line, Col int
	// Path is the field path in YAML keys: packages[3], cluster.vip; empty for the document itself.
	Path string
	Msg  string
}

// Error renders "file:line:col: path: msg", the form editors and terminals jump to; absent parts are left out.
func (e *Error) Error() string {
	var b strings.Builder
	pos := e.File
	if e.Line > 0 {
		if pos != "" {
			pos += ":"
		}
		pos += strconv.Itoa(e.Line)
		if e.Col > 0 {
			pos += ":" + strconv.Itoa(e.Col)
		}
	}
	if pos != "" {
		b.WriteString(pos + ": ")
	}
	if e.Path != "" {
		b.WriteString(e.Path + ": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Pos is a place in the file.
type Pos struct{ Line, Col int }

// Positions maps a field path (packages[3], disk.espSizeMiB) to where its value starts.
type Positions map[string]Pos

// At returns an Error for path placed where the path's value is, or at its nearest ancestor that is in the
// file (a missing field is reported at the mapping that should hold it).
func (p Positions) At(file, path, msg string) *Error {
	e := &Error{File: file, Path: path, Msg: msg}
	for q := path; ; {
		if pos, ok := p[q]; ok {
			e.Line, e.Col = pos.Line, pos.Col
			return e
		}
		i := strings.LastIndexAny(q, ".[")
		if i < 0 {
			if pos, ok := p[""]; ok && q != "" {
				e.Line, e.Col = pos.Line, pos.Col
			}
			return e
		}
		q = q[:i]
	}
}

// Decode decodes data, one YAML document, into the struct out points to; fields are matched by their yaml
// tags. Unknown and repeated keys, wrong kinds (a list where a string belongs), non-string values for string
// fields (name: 123), aliases and a second document are errors. All problems are returned (errors.Join of
// *Error), with positions. The positions are returned even on error.
func Decode(file string, data []byte, out any) (Positions, error) {
	pos := Positions{}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return pos, &Error{File: file, Msg: "empty file"}
		}
		return pos, syntaxError(file, data, err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		if err != nil {
			return pos, syntaxError(file, data, err)
		}
		return pos, &Error{File: file, Line: extra.Line, Col: extra.Column, Msg: "a second YAML document; the file is one document"}
	}
	root := &doc
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		root = root.Content[0]
	}
	d := &decoder{file: file, pos: pos}
	d.node(root, reflect.ValueOf(out).Elem(), "")
	return pos, errors.Join(d.errs...)
}

type decoder struct {
	file string
	pos  Positions
	errs []error
}

func (d *decoder) bad(n *yaml.Node, path, format string, args ...any) {
	d.errs = append(d.errs, &Error{File: d.file, Line: n.Line, Col: n.Column, Path: path, Msg: fmt.Sprintf(format, args...)})
}

// node decodes n into v, recursing through structs and slices so that errors carry the path; scalars are
// decoded by yaml.v3.
func (d *decoder) node(n *yaml.Node, v reflect.Value, path string) {
	d.pos[path] = Pos{n.Line, n.Column}
	if n.Kind == yaml.AliasNode {
		// Anchors and aliases add nothing to a file this small, and aliases are how "billion laughs" inputs
		// blow up memory.
		d.bad(n, path, "YAML aliases are not allowed")
		return
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return // "key:" with nothing, or "~": the zero value (absent)
	}
	switch v.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			d.bad(n, path, "want a mapping of fields, got %s", kindName(n))
			return
		}
		t := v.Type()
		fields := map[string]reflect.Value{}
		var names []string
		for i := range t.NumField() {
			name, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
			if name == "" || name == "-" || !t.Field(i).IsExported() {
				continue
			}
			fields[name] = v.Field(i)
			names = append(names, name)
		}
		seen := map[string]bool{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, val := n.Content[i], n.Content[i+1]
			sub := join(path, k.Value)
			f, ok := fields[k.Value]
			switch {
			case k.Kind != yaml.ScalarNode:
				d.bad(k, path, "keys must be plain strings")
			case !ok:
				msg := fmt.Sprintf("unknown field %q", k.Value)
				if s := Suggest(k.Value, names); s != "" {
					msg += fmt.Sprintf("; did you mean %q?", s)
				} else {
					msg += " (fields here: " + strings.Join(names, ", ") + ")"
				}
				d.bad(k, path, "%s", msg)
			case seen[k.Value]:
				d.bad(k, sub, "given twice")
			default:
				seen[k.Value] = true
				d.node(val, f, sub)
			}
		}
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			d.bad(n, path, "want a list, got %s", kindName(n))
			return
		}
		s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, item := range n.Content {
			d.node(item, s.Index(i), path+"["+strconv.Itoa(i)+"]")
		}
		v.Set(s)
	case reflect.Pointer:
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		d.node(n, v.Elem(), path)
	default:
		if n.Kind != yaml.ScalarNode {
			d.bad(n, path, "want %s, got %s", typeName(v.Type()), kindName(n))
			return
		}
		if v.Kind() == reflect.String && n.Tag != "!!str" {
			// yaml.v3 would turn "name: yes" into "true" and "name: 0x1F" into "0x1F" silently; a string field
			// only takes what YAML itself reads as a string, so "name: 123" is a visible mistake.
			d.bad(n, path, "want a string, got %s %s (quote it)", strings.TrimPrefix(n.Tag, "!!"), n.Value)
			return
		}
		if err := n.Decode(v.Addr().Interface()); err != nil {
			d.bad(n, path, "want %s, got %s", typeName(v.Type()), kindName(n))
		}
	}
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		return fmt.Sprintf("%s %s", strings.TrimPrefix(n.Tag, "!!"), n.Value)
	default:
		return "something else"
	}
}

// typeName names a Go type in the file's terms.
func typeName(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a whole number"
	case reflect.Bool:
		return "true or false"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.String:
		return "a string"
	default:
		return t.String()
	}
}

// maxSyntaxScan bounds the search for a syntax error's line (one parse per line from the end).
const maxSyntaxScan = 5000

// syntaxError places a YAML syntax error. yaml.v3 names the line where the broken construct started, off by
// one for parser errors (its marks are 0-based), and no column: "did not find expected key" for a
// mis-indented fourth line says "line 3". The problem is on the first line whose addition makes the
// document unparseable for good: the line after the longest prefix that still parses.
func syntaxError(file string, data []byte, err error) error {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	if rest, ok := strings.CutPrefix(msg, "line "); ok {
		if _, m, ok := strings.Cut(rest, ": "); ok {
			msg = m
		}
	}
	lines := strings.SplitAfter(string(data), "\n")
	e := &Error{File: file, Msg: "YAML syntax: " + msg}
	if len(lines) > maxSyntaxScan {
		return e
	}
	for k := len(lines) - 1; k >= 0; k-- {
		var n yaml.Node
		if yaml.Unmarshal([]byte(strings.Join(lines[:k], "")), &n) == nil {
			e.Line = k + 1
			line := lines[k]
			if i := strings.IndexByte(line, '\t'); i >= 0 && strings.Contains(msg, "tab") {
				e.Col = i + 1
			} else {
				e.Col = len(line) - len(strings.TrimLeft(line, " ")) + 1
			}
			return e
		}
	}
	return e
}

// Suggest returns the candidate closest to word when it is close enough to be a likely typo (an edit
// distance of at most a third of the word's length, at least 1), else "". Ties go to the earlier candidate.
func Suggest(word string, candidates []string) string {
	best, bestD := "", max(1, len([]rune(word))/3)+1
	for _, c := range candidates {
		if d := distance(strings.ToLower(word), strings.ToLower(c)); d < bestD {
			best, bestD = c, d
		}
	}
	return best
}

// distance is the Damerau–Levenshtein (optimal string alignment) distance: a swapped pair of letters, the
// commonest typo, counts as one edit.
func distance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	prev2 := make([]int, len(rb)+1)
	prev := make([]int, len(rb)+1)
	cur := make([]int, len(rb)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(ra); i++ {
		cur[0] = i
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && ra[i-1] == rb[j-2] && ra[i-2] == rb[j-1] {
				cur[j] = min(cur[j], prev2[j-2]+1)
			}
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return prev[len(rb)]
}

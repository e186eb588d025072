package config

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

// MaxSize bounds a config file: a real one is well under 4 KiB, and a source may later be the network.
const MaxSize = 1 << 20

// decodeStrict decodes one YAML document into the struct pointed to by out. Unlike yaml.v3's KnownFields it
// names every problem by its field path (cluster.size, ssh_authorized_keys[2]) and line, and reports all of
// them, not the first.
func decodeStrict(data []byte, out any) error {
	if len(data) > MaxSize {
		return fmt.Errorf("config is %d bytes, more than the %d allowed", len(data), MaxSize)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return errors.New("config is empty")
		}
		return fmt.Errorf("yaml: %w", err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		if err != nil {
			return fmt.Errorf("yaml: %w", err)
		}
		return fmt.Errorf("line %d: a second YAML document; the config is one document", extra.Line)
	}
	root := &doc
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		root = root.Content[0]
	}
	var errs []error
	decodeNode(root, reflect.ValueOf(out).Elem(), "", &errs)
	return errors.Join(errs...)
}

// decodeNode decodes n into v, recursing through structs (matched by yaml tag) and slices so that errors
// carry the path; scalars are left to yaml.v3.
func decodeNode(n *yaml.Node, v reflect.Value, path string, errs *[]error) {
	bad := func(line int, format string, args ...any) {
		p := path
		if p == "" {
			p = "(top level)"
		}
		*errs = append(*errs, fmt.Errorf("%s: line %d: %s", p, line, fmt.Sprintf(format, args...)))
	}
	if n.Kind == yaml.AliasNode {
		// Anchors and aliases add nothing to a file this small, and aliases are how "billion laughs" inputs
		// blow up memory.
		bad(n.Line, "YAML aliases are not allowed")
		return
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return // "key:" with nothing, or "~": leave the zero value (absent)
	}
	switch v.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			bad(n.Line, "want a mapping, got %s", kindName(n))
			return
		}
		fields := map[string]reflect.Value{}
		t := v.Type()
		for i := range t.NumField() {
			name, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
			fields[name] = v.Field(i)
		}
		seen := map[string]bool{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, val := n.Content[i], n.Content[i+1]
			sub := join(path, k.Value)
			f, ok := fields[k.Value]
			switch {
			case k.Kind != yaml.ScalarNode:
				bad(k.Line, "keys must be plain strings")
			case !ok:
				*errs = append(*errs, fmt.Errorf("%s: line %d: unknown field", sub, k.Line))
			case seen[k.Value]:
				*errs = append(*errs, fmt.Errorf("%s: line %d: given twice", sub, k.Line))
			default:
				seen[k.Value] = true
				decodeNode(val, f, sub, errs)
			}
		}
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			bad(n.Line, "want a list, got %s", kindName(n))
			return
		}
		s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, item := range n.Content {
			decodeNode(item, s.Index(i), path+"["+strconv.Itoa(i)+"]", errs)
		}
		v.Set(s)
	default:
		if n.Kind != yaml.ScalarNode {
			bad(n.Line, "want a single value, got %s", kindName(n))
			return
		}
		if v.Kind() == reflect.String && n.Tag != "!!str" {
			// yaml.v3 would turn "size: yes" into "true" and "name: 0x1F" into "0x1F" silently; a string field
			// only takes what YAML itself reads as a string, so "name: 123" is a visible mistake.
			bad(n.Line, "want a string, got %s %q (quote it)", strings.TrimPrefix(n.Tag, "!!"), n.Value)
			return
		}
		if err := n.Decode(v.Addr().Interface()); err != nil {
			bad(n.Line, "%s", yamlErrText(err))
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
		return fmt.Sprintf("%s %q", strings.TrimPrefix(n.Tag, "!!"), n.Value)
	default:
		return "something else"
	}
}

// yamlErrText strips yaml.v3's "yaml: unmarshal errors:\n  line N: " framing; the caller adds path and line.
func yamlErrText(err error) string {
	var te *yaml.TypeError
	if errors.As(err, &te) && len(te.Errors) > 0 {
		s := te.Errors[0]
		if _, rest, ok := strings.Cut(s, ": "); ok && strings.HasPrefix(s, "line ") {
			return rest
		}
		return s
	}
	return err.Error()
}

// Package compose reads the compose files of a spec's stacks (compose-go, the Compose Specification's own
// loader) and turns a project into the swarm services and networks of a kiln stack, for the subset kiln
// deploys (docs/ingress.md, "User stacks"). The builder loads every file with it, so a file that is not
// valid compose, or uses what the subset leaves out, fails the build with the file and line; the agent
// loads the same file from the image and converts it.
package compose

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/tree"
	"github.com/compose-spec/compose-go/v2/types"
	"gopkg.in/yaml.v3"
)

// Supported are the attributes the conversion honours, as compose-go's canonical model names them (short
// syntaxes are already expanded: a "80:80" port is target/published/protocol/mode). Anything else is
// refused, so a file never deploys with an attribute silently dropped.
var Supported = []tree.Path{
	"name", "version",
	"services.*.image",
	"services.*.command",
	"services.*.entrypoint",
	"services.*.environment.*",
	"services.*.labels.*",
	"services.*.working_dir",
	"services.*.user",
	"services.*.hostname",
	"services.*.networks.*",
	"services.*.networks.*.aliases",
	"services.*.ports.[].target",
	"services.*.ports.[].published",
	"services.*.ports.[].protocol",
	"services.*.ports.[].mode",
	"services.*.volumes.[].type",
	"services.*.volumes.[].source",
	"services.*.volumes.[].target",
	"services.*.volumes.[].read_only",
	"services.*.volumes.[].bind.create_host_path",
	"services.*.volumes.[].volume",
	"services.*.deploy.mode",
	"services.*.deploy.replicas",
	"services.*.deploy.labels.*",
	"services.*.deploy.endpoint_mode",
	"services.*.deploy.placement.constraints",
	"services.*.deploy.restart_policy.condition",
	"services.*.deploy.restart_policy.delay",
	"services.*.deploy.restart_policy.max_attempts",
	"services.*.deploy.restart_policy.window",
	"services.*.deploy.update_config.parallelism",
	"services.*.deploy.update_config.delay",
	"services.*.deploy.update_config.order",
	"services.*.deploy.update_config.failure_action",
	"networks.*.driver",
	"networks.*.driver_opts.*",
	"networks.*.external",
	"networks.*.attachable",
	"networks.*.name",
	"networks.*.labels.*",
	"volumes.*.driver",
	"volumes.*.driver_opts.*",
	"volumes.*.external",
	"volumes.*.name",
	"volumes.*.labels.*",
}

// nameRE is a stack name: what `docker stack deploy` accepts and swarm object names can carry.
var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)

// ValidName checks a stack name.
func ValidName(name string) error {
	if !nameRE.MatchString(name) {
		return fmt.Errorf("stack name %q: want [a-z0-9][a-z0-9_-]{0,62}", name)
	}
	return nil
}

// Load reads a compose file's content as stack name, with no environment (a ${VAR} takes its default or
// nothing: the node has no shell environment to take it from) and without touching the file system for
// anything else. Every problem names file and, where the YAML has it, the line: "file:line: message".
func Load(ctx context.Context, name, file string, data []byte) (*types.Project, error) {
	if err := ValidName(name); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, fmt.Errorf("%s:%s", file, yamlError(err))
	}
	var unsupported []loader.UnsupportedAttribute
	p, err := loader.LoadWithContext(ctx, types.ConfigDetails{
		WorkingDir:  filepath.Dir(file),
		ConfigFiles: []types.ConfigFile{{Filename: file, Content: data}},
		Environment: types.Mapping{},
	}, func(o *loader.Options) {
		o.SetProjectName(name, true)
		o.SkipInclude = true
		o.SkipExtends = true
		o.SkipResolveEnvironment = true
		o.ResourceLoaders = nil // no remote includes (git, oci): nothing from the network
	}, loader.WithSupportedAttributes(Supported, func(found []loader.UnsupportedAttribute) { unsupported = found }))
	var errs []error
	for _, u := range unsupported {
		errs = append(errs, fmt.Errorf("%s:%d: %s: not in the compose subset kiln deploys (docs/ingress.md)", file, lineOf(&root, u.Path.String()), u.Path))
	}
	if err != nil {
		errs = append(errs, fmt.Errorf("%s:%d: %s", file, lineOfError(&root, err.Error()), strings.TrimPrefix(err.Error(), "validating "+file+": ")))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	for _, s := range p.Services {
		if s.Image == "" {
			errs = append(errs, fmt.Errorf("%s:%d: services.%s.image: required (kiln builds no image; preload it or name one a registry serves)", file, lineOf(&root, "services."+s.Name), s.Name))
		}
	}
	if _, err := Convert(p); err != nil {
		errs = append(errs, fmt.Errorf("%s: %w", file, err))
	}
	return p, errors.Join(errs...)
}

var yamlLineRE = regexp.MustCompile(`line (\d+)`)

func yamlError(err error) string {
	s := strings.TrimPrefix(err.Error(), "yaml: ")
	if m := yamlLineRE.FindStringSubmatch(s); m != nil {
		return m[1] + ": " + strings.TrimPrefix(strings.TrimPrefix(s, m[0]), ": ")
	}
	return " " + s
}

// pathInErrorRE finds the dotted attribute path compose-go's validation names ("services.web.ports.0").
var pathInErrorRE = regexp.MustCompile(`\b((?:services|networks|volumes)(?:\.[A-Za-z0-9_-]+)+)`)

// serviceInErrorRE finds a service compose-go's consistency checks name (`service "web" has neither…`).
var serviceInErrorRE = regexp.MustCompile(`service "([^"]+)"`)

// lineOfError places a compose-go error at the attribute it names, else at line 1.
func lineOfError(root *yaml.Node, msg string) int {
	if m := yamlLineRE.FindStringSubmatch(msg); m != nil {
		n, _ := strconv.Atoi(m[1])
		return n
	}
	if m := pathInErrorRE.FindString(msg); m != "" {
		return lineOf(root, m)
	}
	if m := serviceInErrorRE.FindStringSubmatch(msg); m != nil {
		return lineOf(root, "services."+m[1])
	}
	return 1
}

// lineOf finds the line of a dotted path in the file ("[]" or a number for list items), or of its deepest
// part the file has (a canonical path may name what the file wrote in short syntax).
func lineOf(root *yaml.Node, path string) int {
	n := root
	if n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		n = n.Content[0]
	}
	line := n.Line
	parts := strings.Split(path, ".")
	for i := 0; i < len(parts); i++ {
		part := parts[i]
		switch n.Kind {
		case yaml.MappingNode:
			found := false
			for j := 0; j+1 < len(n.Content); j += 2 {
				if n.Content[j].Value == part {
					line, n, found = n.Content[j].Line, n.Content[j+1], true
					break
				}
			}
			if !found {
				return line
			}
		case yaml.SequenceNode:
			idx, err := strconv.Atoi(part)
			if err != nil || idx >= len(n.Content) {
				idx = 0 // "[]": the first item is the best guess
			}
			if len(n.Content) == 0 {
				return line
			}
			n = n.Content[idx]
			line = n.Line
		default:
			return line
		}
	}
	return line
}

// sortedKeys returns a map's keys in order, for deterministic specs.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// Package cli holds the conventions kiln's two command-line binaries share (docs/cli.md): which errors are
// usage mistakes, the exit codes, how an error is printed (text, or JSON under --json), and --version.
package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/kiln-project/kiln/internal/version"
)

// Exit statuses (docs/cli.md). A command that passes on another program's status (kiln lab exec) is the
// exception, and says so in its help.
const (
	ExitOK      = 0
	ExitFailure = 1 // the command ran and failed: a build error, an unreachable node, an unhealthy cluster
	ExitUsage   = 2 // the command line is wrong: unknown command or flag, wrong argument count, bad flag value
)

// UsageError is a mistake on the command line rather than a failure of the work: it exits with ExitUsage
// and points at --help instead of dumping the whole usage text.
type UsageError struct{ Err error }

func (e *UsageError) Error() string { return e.Err.Error() }
func (e *UsageError) Unwrap() error { return e.Err }

// ShownError is a failure the command has already written in its --json output (kiln cluster status prints
// its report with "healthy": false): under --json it exits with ExitFailure and prints nothing more; without
// --json it is printed as any error.
type ShownError struct{ Err error }

func (e *ShownError) Error() string { return e.Err.Error() }
func (e *ShownError) Unwrap() error { return e.Err }

// Usagef returns a UsageError; commands use it for flag values they check themselves.
func Usagef(format string, args ...any) error {
	return &UsageError{Err: fmt.Errorf(format, args...)}
}

// IsUsage reports whether err is (or wraps) a usage mistake.
func IsUsage(err error) bool {
	var u *UsageError
	return errors.As(err, &u)
}

// Prepare applies the shared conventions to a finished command tree: errors are printed by Report and never
// by cobra, no command dumps its usage on error, every usage mistake becomes a UsageError, a group command
// given an unknown subcommand says so (cobra prints the group's help and exits 0), and --version prints
// version.Get().
func Prepare(root *cobra.Command) {
	root.SilenceErrors = true
	root.Version = version.Get().String()
	root.SetVersionTemplate("{{.Name}} {{.Version}}\n")
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error { return &UsageError{Err: flagError(err)} })
	walk(root)
}

func walk(c *cobra.Command) {
	c.SilenceUsage = true
	// cobra only applies its default distance when it builds its own "unknown command" message.
	c.SuggestionsMinimumDistance = 2
	switch {
	case c.HasSubCommands() && !c.Runnable():
		c.Args = cobra.ArbitraryArgs
		c.RunE = func(c *cobra.Command, args []string) error {
			if len(args) == 0 {
				return c.Help()
			}
			msg := fmt.Sprintf("unknown command %q for %q", args[0], c.CommandPath())
			if s := c.SuggestionsFor(args[0]); len(s) > 0 {
				msg += "; did you mean " + quoteOr(s) + "?"
			}
			return &UsageError{Err: errors.New(msg)}
		}
	case c.Args != nil:
		check := c.Args
		c.Args = func(c *cobra.Command, args []string) error {
			if err := check(c, args); err != nil {
				// "kiln: build: accepts at most 1 arg(s), received 2": Report prefixes the binary's name.
				path := strings.TrimPrefix(c.CommandPath(), c.Root().Name()+" ")
				return &UsageError{Err: fmt.Errorf("%s: %w", path, err)}
			}
			return nil
		}
	}
	for _, sub := range c.Commands() {
		walk(sub)
	}
}

// quoteOr renders ["a", "b", "c"] as `"a", "b" or "c"`.
func quoteOr(words []string) string {
	q := make([]string, len(words))
	for i, w := range words {
		q[i] = fmt.Sprintf("%q", w)
	}
	if len(q) == 1 {
		return q[0]
	}
	return strings.Join(q[:len(q)-1], ", ") + " or " + q[len(q)-1]
}

// flagError puts pflag's "invalid argument "x" for "--size" flag: strconv.ParseInt: parsing "x": invalid
// syntax" in the user's terms: "--size x: want a whole number".
func flagError(err error) error {
	var iv *pflag.InvalidValueError
	if !errors.As(err, &iv) {
		return err
	}
	f := iv.GetFlag()
	var want string
	switch f.Value.Type() {
	case "int", "int8", "int16", "int32", "int64", "uint", "uint8", "uint16", "uint32", "uint64":
		want = "want a whole number"
	case "duration":
		want = "want a duration such as 90s, 15m or 1h30m"
	case "bool":
		want = "want true or false"
	case "float32", "float64":
		want = "want a number"
	default:
		want = iv.Unwrap().Error()
	}
	return fmt.Errorf("--%s %s: %s", f.Name, iv.GetValue(), want)
}

// jsonError is the shape of an error under --json (docs/cli.md).
type jsonError struct {
	// Error is the whole message, as the text form prints it after "NAME: ".
	Error string `json:"error"`
	// Problems are the message's lines when there are several (every problem of a spec, each on its line).
	Problems []string `json:"problems,omitempty"`
	// Usage reports a usage mistake (exit status 2) rather than a failure (1).
	Usage bool `json:"usage,omitempty"`
}

// Report prints err for the command that ran (c, from ExecuteC) and returns the exit status. Under --json the
// error is a JSON object on stdout, where the script reading the command's JSON looks; otherwise one line
// "NAME: message" (continued on more lines for several problems) on stderr, and for a usage mistake a pointer
// to --help. args are the raw arguments, for when --json was not parsed (a flag error before it).
func Report(c *cobra.Command, name string, args []string, err error, stdout, stderr io.Writer) int {
	if err == nil {
		return ExitOK
	}
	code := ExitFailure
	if IsUsage(err) {
		code = ExitUsage
	}
	var shown *ShownError
	if errors.As(err, &shown) && wantsJSON(c, args) {
		return code // the command's own JSON already says it; a second document would break the reader
	}
	if wantsJSON(c, args) {
		je := jsonError{Error: err.Error(), Usage: code == ExitUsage}
		if lines := strings.Split(je.Error, "\n"); len(lines) > 1 {
			je.Problems = lines
		}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(je)
		return code
	}
	fmt.Fprintf(stderr, "%s: %v\n", name, err)
	if code == ExitUsage && c != nil {
		fmt.Fprintf(stderr, "Run '%s --help' for usage.\n", c.CommandPath())
	}
	return code
}

func wantsJSON(c *cobra.Command, args []string) bool {
	if c != nil {
		if f := c.Flags().Lookup("json"); f != nil && f.Changed {
			return f.Value.String() == "true"
		}
	}
	return slices.Contains(args, "--json") || slices.Contains(args, "--json=true")
}

// NewVersionCmd is the `version` command: the fields of version.Get(), one per line, or --json. extra, when
// set, adds fields (the agent adds the image it runs in).
func NewVersionCmd(name string, extra func() map[string]any) *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "version",
		Short: "Print the version, commit, commit date and Go version this binary was built from",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			i := version.Get()
			var more map[string]any
			if extra != nil {
				more = extra()
			}
			w := c.OutOrStdout()
			if !asJSON {
				fmt.Fprint(w, i.Text(name))
				for _, k := range slices.Sorted(maps.Keys(more)) {
					b, _ := json.Marshal(more[k])
					fmt.Fprintf(w, "%-12s %s\n", k+":", b)
				}
				return nil
			}
			out := map[string]any{}
			b, _ := json.Marshal(i)
			_ = json.Unmarshal(b, &out)
			for k, v := range more {
				out[k] = v
			}
			enc := json.NewEncoder(w)
			enc.SetIndent("", "  ")
			return enc.Encode(out)
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return c
}

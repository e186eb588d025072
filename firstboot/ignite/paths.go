package ignite

import (
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"
)

// maxLinkHops bounds symlink resolution, as the kernel's MAXSYMLINKS does.
const maxLinkHops = 40

// resolveIn maps the absolute path p to a path under root, resolving symlinks in its directories as if root
// were "/" (Ignition's JoinPath does the same): on a node root is "/" and nothing changes, in tests an absolute
// link such as /home → /var/home stays inside the test root instead of reaching the host's /var. The last
// element is never followed: ignite creates or replaces the node itself.
func resolveIn(root, p string) (string, error) {
	if !path.IsAbs(p) {
		return "", fmt.Errorf("path %q is not absolute", p)
	}
	rest := strings.Split(strings.Trim(path.Clean(p), "/"), "/")
	cur := "" // resolved so far, relative to root, never escaping it
	for hops := 0; len(rest) > 0; {
		c := rest[0]
		rest = rest[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			cur = strings.TrimSuffix(path.Dir("/"+cur), "/")
			cur = strings.TrimPrefix(cur, "/")
			continue
		}
		next := path.Join(cur, c)
		if len(rest) == 0 {
			cur = next
			break
		}
		fi, err := os.Lstat(filepath.Join(root, next))
		if err != nil || fi.Mode()&os.ModeSymlink == 0 {
			if err != nil && !errors.Is(err, os.ErrNotExist) {
				return "", err
			}
			cur = next
			continue
		}
		if hops++; hops > maxLinkHops {
			return "", fmt.Errorf("path %q: too many levels of symbolic links", p)
		}
		target, err := os.Readlink(filepath.Join(root, next))
		if err != nil {
			return "", err
		}
		if path.IsAbs(target) {
			cur = ""
		}
		rest = append(strings.Split(target, "/"), rest...)
	}
	return filepath.Join(root, cur), nil
}

package spec

import (
	"fmt"
	"regexp"

	"github.com/kiln-project/kiln/internal/dockerarchive"
)

// traefikVersionRE is a Traefik v3 release tag: the images stage builds github.com/traefik/traefik/v3, whose
// module path only carries v3 versions.
var traefikVersionRE = regexp.MustCompile(`^v3\.\d+\.\d+$`)

// TraefikImage is the reference the images stage gives Traefik built at version.
func TraefikImage(version string) string { return "kiln/traefik:" + version }

// validatePreload checks every preload entry: exactly one kind, a Traefik release version, an archive that
// `docker load` will take (read now, so a wrong file fails the build, not every node's boot), and no image
// name given twice.
func (v *validator) validatePreload() {
	seen := map[string]string{} // image name → field that gave it
	for i, p := range v.spec.Preload {
		field := fmt.Sprintf("preload[%d]", i)
		var names []string
		switch {
		case p.Traefik != "" && p.Archive != "":
			v.add(field, "set one of traefik, archive (one image per entry)")
			continue
		case p.Traefik != "":
			if !traefikVersionRE.MatchString(p.Traefik) {
				v.add(field+".traefik", "%q: want a Traefik v3 release version like v3.7.13", p.Traefik)
				continue
			}
			names = []string{TraefikImage(p.Traefik)}
		case p.Archive != "":
			if !v.path(field+".archive", p.Archive, v.spec.Path(p.Archive), false) {
				continue
			}
			imgs, err := dockerarchive.Inspect(v.spec.Path(p.Archive))
			if err != nil {
				v.add(field+".archive", "%v", err)
				continue
			}
			for _, img := range imgs {
				if len(img.Tags) == 0 {
					v.add(field+".archive", "%s: image %s has no tag (docker save NAME:TAG, not an ID): nothing could run it by name", p.Archive, img.ID)
				}
				names = append(names, img.Tags...)
			}
		default:
			v.add(field, "empty: set traefik: VERSION or archive: FILE")
			continue
		}
		for _, n := range names {
			if prev, ok := seen[n]; ok {
				v.add(field, "image %s is also given by %s", n, prev)
			}
			seen[n] = field
		}
	}
}

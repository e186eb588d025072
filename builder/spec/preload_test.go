package spec

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kiln-project/kiln/internal/dockerarchive"
)

func TestPreloadGood(t *testing.T) {
	path := writeSpecDir(t, good+"preload:\n  - traefik: v3.7.13\n  - archive: app.tar\n", goodButane)
	if _, err := dockerarchive.WriteSingleLayer(filepath.Join(filepath.Dir(path), "app.tar"), "example/app:1",
		dockerarchive.Config{}, []dockerarchive.File{{Path: "x", Mode: 0o644, Data: []byte("x")}}, time.Unix(0, 0)); err != nil {
		t.Fatal(err)
	}
	s, err := Load(path)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if len(s.Preload) != 2 || s.Preload[0].Traefik != "v3.7.13" || s.Preload[1].Archive != "app.tar" {
		t.Errorf("preload = %+v", s.Preload)
	}
}

// TestPreloadErrors: each mistake is named at its entry's field.
func TestPreloadErrors(t *testing.T) {
	for _, tc := range []struct {
		name, preload string
		want          []string
	}{
		{"both kinds", "  - {traefik: v3.7.13, archive: a.tar}\n", []string{"@F:9:5: preload[0]: set one of traefik, archive"}},
		{"empty entry", "  - {}\n", []string{"@F:9:5: preload[0]: empty: set traefik: VERSION or archive: FILE"}},
		{"bad version", "  - traefik: v3.7\n", []string{`@F:9:14: preload[0].traefik: "v3.7": want a Traefik v3 release version like v3.7.13`}},
		{"v2", "  - traefik: v2.11.0\n", []string{`preload[0].traefik: "v2.11.0"`}},
		{"missing archive", "  - archive: nope.tar\n", []string{"@F:9:14: preload[0].archive: nope.tar: no such file"}},
		{"not an archive", "  - archive: x.yaml\n", []string{"@F:9:14: preload[0].archive: ", "not a tar archive"}},
		{"twice", "  - traefik: v3.7.13\n  - traefik: v3.7.13\n", []string{"@F:10:5: preload[1]: image kiln/traefik:v3.7.13 is also given by preload[0]"}},
		{"unknown field", "  - image: traefik:v3\n", []string{`@F:9:5: preload[0]: unknown field "image"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := writeSpecDir(t, good+"preload:\n"+tc.preload, goodButane)
			_, err := Load(path)
			if err == nil {
				t.Fatal("Load succeeded")
			}
			for _, w := range tc.want {
				if w = strings.ReplaceAll(w, "@F", path); !strings.Contains(err.Error(), w) {
					t.Errorf("error\n%v\ndoes not contain\n%s", err, w)
				}
			}
		})
	}
}

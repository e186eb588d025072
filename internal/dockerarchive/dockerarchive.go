// Package dockerarchive writes and reads `docker save` archives (the format `docker load` reads): images
// made without a registry or a daemon, and the facts kiln records about an archive a user hands it.
package dockerarchive

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"slices"
	"strings"
	"time"
)

// File is one entry of a layer: a regular file, a directory or a symlink, owned by root.
type File struct {
	// Path is slash-separated, relative to the image's root (usr/local/bin/traefik).
	Path string
	// Mode holds the permission bits and fs.ModeDir or fs.ModeSymlink.
	Mode fs.FileMode
	// Source is the file whose bytes the entry gets (regular files only); Data is used when Source is "".
	Source string
	Data   []byte
	// Link is a symlink's target.
	Link string
}

// Config is the part of an image's configuration kiln sets.
type Config struct {
	Entrypoint   []string
	Cmd          []string
	Env          []string
	ExposedPorts []string // "80/tcp"
	WorkingDir   string
	Labels       map[string]string
}

// Image is an archive's facts: what `docker load` will name it and the ID it will have.
type Image struct {
	// ID is the sha256 of the image's config ("sha256:…"): the image ID dockerd gives it and the digest kiln
	// records, the same on every node that loads the archive.
	ID string
	// Tags are the references it is loaded under (repo:tag).
	Tags []string
}

// manifestEntry is one image in an archive's manifest.json.
type manifestEntry struct {
	Config   string   `json:"Config"`
	RepoTags []string `json:"RepoTags"`
	Layers   []string `json:"Layers"`
}

// WriteSingleLayer writes the archive file holding one image, tag, of one layer made of files, for amd64
// Linux. Every time recorded is mtime, every owner root, entries sorted by path: the same files give the same
// bytes and so the same image ID. The layer is staged in file+".layer" (a layer holding a Go binary is
// 100 MB and more: not something to keep in memory), removed before returning.
func WriteSingleLayer(file, tag string, cfg Config, files []File, mtime time.Time) (Image, error) {
	if !strings.Contains(tag, ":") {
		return Image{}, fmt.Errorf("dockerarchive: tag %q: want repo:tag", tag)
	}
	layerPath := file + ".layer"
	defer os.Remove(layerPath)
	layer, err := os.Create(layerPath)
	if err != nil {
		return Image{}, fmt.Errorf("dockerarchive: %w", err)
	}
	defer layer.Close()
	lh := sha256.New()
	if err := writeLayer(io.MultiWriter(layer, lh), files, mtime); err != nil {
		return Image{}, fmt.Errorf("dockerarchive: layer: %w", err)
	}
	layerSize, err := layer.Seek(0, io.SeekCurrent)
	if err != nil {
		return Image{}, err
	}
	if _, err := layer.Seek(0, io.SeekStart); err != nil {
		return Image{}, err
	}
	diffHex := hex.EncodeToString(lh.Sum(nil))

	ports := map[string]struct{}{}
	for _, p := range cfg.ExposedPorts {
		ports[p] = struct{}{}
	}
	type runConfig struct {
		Entrypoint   []string            `json:"Entrypoint,omitempty"`
		Cmd          []string            `json:"Cmd,omitempty"`
		Env          []string            `json:"Env,omitempty"`
		ExposedPorts map[string]struct{} `json:"ExposedPorts,omitempty"`
		WorkingDir   string              `json:"WorkingDir,omitempty"`
		Labels       map[string]string   `json:"Labels,omitempty"`
	}
	conf := struct {
		Architecture string    `json:"architecture"`
		OS           string    `json:"os"`
		Created      string    `json:"created"`
		Config       runConfig `json:"config"`
		RootFS       struct {
			Type    string   `json:"type"`
			DiffIDs []string `json:"diff_ids"`
		} `json:"rootfs"`
		History []map[string]string `json:"history"`
	}{Architecture: "amd64", OS: "linux", Created: mtime.UTC().Format(time.RFC3339),
		Config: runConfig{Entrypoint: cfg.Entrypoint, Cmd: cfg.Cmd, Env: cfg.Env, ExposedPorts: ports,
			WorkingDir: cfg.WorkingDir, Labels: cfg.Labels},
		History: []map[string]string{{"created": mtime.UTC().Format(time.RFC3339), "created_by": "kiln build"}}}
	if len(ports) == 0 {
		conf.Config.ExposedPorts = nil
	}
	conf.RootFS.Type = "layers"
	conf.RootFS.DiffIDs = []string{"sha256:" + diffHex}
	confJSON, err := json.Marshal(conf) // struct fields and sorted map keys: stable bytes
	if err != nil {
		return Image{}, fmt.Errorf("dockerarchive: config: %w", err)
	}
	confSum := sha256.Sum256(confJSON)
	confHex := hex.EncodeToString(confSum[:])

	manifest, err := json.Marshal([]manifestEntry{{Config: confHex + ".json", RepoTags: []string{tag},
		Layers: []string{diffHex + "/layer.tar"}}})
	if err != nil {
		return Image{}, err
	}
	repo, t := tag[:strings.LastIndex(tag, ":")], tag[strings.LastIndex(tag, ":")+1:]
	repositories, err := json.Marshal(map[string]map[string]string{repo: {t: diffHex}})
	if err != nil {
		return Image{}, err
	}

	out, err := os.Create(file)
	if err != nil {
		return Image{}, fmt.Errorf("dockerarchive: %w", err)
	}
	defer out.Close()
	tw := tar.NewWriter(out)
	entries := []struct {
		name string
		data []byte
	}{
		{confHex + ".json", confJSON},
		{"manifest.json", manifest},
		{"repositories", repositories},
	}
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: diffHex + "/", Mode: 0o755, ModTime: mtime, Format: tar.FormatPAX}); err != nil {
		return Image{}, err
	}
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: diffHex + "/layer.tar", Mode: 0o644, Size: layerSize, ModTime: mtime, Format: tar.FormatPAX}); err != nil {
		return Image{}, err
	}
	if _, err := io.Copy(tw, layer); err != nil {
		return Image{}, fmt.Errorf("dockerarchive: layer: %w", err)
	}
	for _, e := range entries {
		h := &tar.Header{Typeflag: tar.TypeReg, Name: e.name, Mode: 0o644, Size: int64(len(e.data)), ModTime: mtime, Format: tar.FormatPAX}
		if err := tw.WriteHeader(h); err != nil {
			return Image{}, fmt.Errorf("dockerarchive: %s: %w", e.name, err)
		}
		if _, err := tw.Write(e.data); err != nil {
			return Image{}, fmt.Errorf("dockerarchive: %s: %w", e.name, err)
		}
	}
	if err := tw.Close(); err != nil {
		return Image{}, fmt.Errorf("dockerarchive: %w", err)
	}
	if err := out.Close(); err != nil {
		return Image{}, fmt.Errorf("dockerarchive: %w", err)
	}
	return Image{ID: "sha256:" + confHex, Tags: []string{tag}}, nil
}

// writeLayer writes files as a tar, parents before children, with every missing parent directory added.
func writeLayer(w io.Writer, files []File, mtime time.Time) error {
	all := map[string]File{}
	for _, f := range files {
		p := path.Clean(strings.TrimPrefix(f.Path, "/"))
		if p == "." || strings.HasPrefix(p, "../") {
			return fmt.Errorf("%q: not a path inside the image", f.Path)
		}
		f.Path = p
		all[p] = f
		for d := path.Dir(p); d != "."; d = path.Dir(d) {
			if _, ok := all[d]; !ok {
				all[d] = File{Path: d, Mode: fs.ModeDir | 0o755}
			}
		}
	}
	names := make([]string, 0, len(all))
	for p := range all {
		names = append(names, p)
	}
	slices.Sort(names)
	tw := tar.NewWriter(w)
	for _, p := range names {
		f := all[p]
		h := &tar.Header{Name: p, Mode: int64(f.Mode.Perm()), ModTime: mtime, Uname: "root", Gname: "root", Format: tar.FormatPAX}
		switch {
		case f.Mode&fs.ModeDir != 0:
			h.Typeflag, h.Name = tar.TypeDir, p+"/"
			if err := tw.WriteHeader(h); err != nil {
				return err
			}
		case f.Mode&fs.ModeSymlink != 0:
			h.Typeflag, h.Linkname = tar.TypeSymlink, f.Link
			if err := tw.WriteHeader(h); err != nil {
				return err
			}
		default:
			if err := writeRegular(tw, h, f); err != nil {
				return err
			}
		}
	}
	return tw.Close()
}

// Inspect reads the archive at file (a `docker save` archive, plain tar) and returns its images: their IDs
// (the sha256 of each config, checked against the name it is stored under when that name is a hash) and
// tags. An archive without manifest.json, or whose manifest names a config it does not hold, is refused:
// `docker load` would refuse it on every node at boot.
func Inspect(file string) ([]Image, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	// Two reads: the manifest may come after the configs it names (docker 25+ writes it last). tar.Reader
	// skips file bodies with Seek, so a read costs the headers, not the layers.
	var manifest []manifestEntry
	found := false
	if err := walk(f, func(name string, r io.Reader) error {
		if name != "manifest.json" {
			return nil
		}
		found = true
		if err := json.NewDecoder(r).Decode(&manifest); err != nil {
			return fmt.Errorf("manifest.json: %w", err)
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	if !found {
		return nil, fmt.Errorf("%s: no manifest.json: not a `docker save` archive", file)
	}
	if len(manifest) == 0 {
		return nil, fmt.Errorf("%s: manifest.json lists no image", file)
	}
	want := map[string]string{} // config path → its sha256
	for _, m := range manifest {
		want[path.Clean(m.Config)] = ""
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	if err := walk(f, func(name string, r io.Reader) error {
		if _, ok := want[name]; !ok {
			return nil
		}
		h := sha256.New()
		if _, err := io.Copy(h, r); err != nil {
			return err
		}
		want[name] = hex.EncodeToString(h.Sum(nil))
		return nil
	}); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	var out []Image
	for _, m := range manifest {
		sum := want[path.Clean(m.Config)]
		if sum == "" {
			return nil, fmt.Errorf("%s: manifest.json names config %s, which the archive does not hold", file, m.Config)
		}
		out = append(out, Image{ID: "sha256:" + sum, Tags: slices.Clone(m.RepoTags)})
	}
	return out, nil
}

// walk calls fn with every regular file of the tar read from r.
func walk(r io.Reader, fn func(name string, r io.Reader) error) error {
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("not a tar archive: %w", err)
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		if err := fn(path.Clean(h.Name), tr); err != nil {
			return err
		}
	}
}

// writeRegular writes one regular file's header and bytes, streamed from Source when it has one.
func writeRegular(tw *tar.Writer, h *tar.Header, f File) error {
	h.Typeflag = tar.TypeReg
	if f.Source == "" {
		h.Size = int64(len(f.Data))
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		_, err := tw.Write(f.Data)
		return err
	}
	src, err := os.Open(f.Source)
	if err != nil {
		return err
	}
	defer src.Close()
	st, err := src.Stat()
	if err != nil {
		return err
	}
	h.Size = st.Size()
	if err := tw.WriteHeader(h); err != nil {
		return err
	}
	_, err = io.Copy(tw, src)
	return err
}

package formation

import (
	"archive/tar"
	"fmt"
	"io"
	"path"
	"strings"
	"time"
)

// ImageTar writes a tar that `docker import` turns into a one-file image: binary at /name, mode 0755, owned by
// root, with a fixed mtime so the same binary always gives the same bytes (and the same image id).
func ImageTar(w io.Writer, name string, binary []byte) error {
	if name == "" || strings.Contains(name, "/") || name == "." || name == ".." {
		return fmt.Errorf("image tar: %q is not a plain file name", name)
	}
	tw := tar.NewWriter(w)
	hdr := &tar.Header{
		Typeflag: tar.TypeReg,
		Name:     path.Clean(name),
		Mode:     0o755,
		Size:     int64(len(binary)),
		ModTime:  time.Unix(0, 0).UTC(),
		Format:   tar.FormatPAX,
	}
	if err := tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("image tar: header: %w", err)
	}
	if _, err := tw.Write(binary); err != nil {
		return fmt.Errorf("image tar: %s: %w", name, err)
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("image tar: close: %w", err)
	}
	return nil
}

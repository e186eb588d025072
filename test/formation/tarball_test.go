package formation

import (
	"archive/tar"
	"bytes"
	"io"
	"testing"
)

func TestImageTar(t *testing.T) {
	bin := []byte("\x7fELF pretend binary")
	var a, b bytes.Buffer
	if err := ImageTar(&a, "testsvc", bin); err != nil {
		t.Fatal(err)
	}
	if err := ImageTar(&b, "testsvc", bin); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Error("two tars of one binary differ: the image id would change between runs")
	}
	tr := tar.NewReader(&a)
	h, err := tr.Next()
	if err != nil {
		t.Fatal(err)
	}
	if h.Name != "testsvc" || h.Typeflag != tar.TypeReg || h.Mode != 0o755 || h.Uid != 0 || h.Gid != 0 {
		t.Errorf("header %+v: want regular file testsvc, 0755, root", h)
	}
	got, err := io.ReadAll(tr)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, bin) {
		t.Errorf("content %q, want %q", got, bin)
	}
	if _, err := tr.Next(); err != io.EOF {
		t.Errorf("second entry: %v, want only one file", err)
	}
	for _, bad := range []string{"", "a/b", "..", "."} {
		if err := ImageTar(io.Discard, bad, bin); err == nil {
			t.Errorf("name %q accepted", bad)
		}
	}
}

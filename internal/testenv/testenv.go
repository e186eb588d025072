// Package testenv locates what the end-to-end suites run against: the repository, the published image and the
// built binaries. One place, so every suite boots the same artifact `make image` wrote.
package testenv

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"

	"github.com/kiln-project/kiln/pxe/pxedir"
)

// RepoRoot is the repository root, found from this source file (tests and `go run` both have it).
func RepoRoot() string {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return "."
	}
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// ImagePath is $KILN_IMAGE, default <repo>/out/node.raw, made absolute; an error when it does not exist.
func ImagePath() (string, error) {
	img := os.Getenv("KILN_IMAGE")
	if img == "" {
		img = filepath.Join(RepoRoot(), "out", "node.raw")
	}
	abs, err := filepath.Abs(img)
	if err != nil {
		return "", err
	}
	if _, err := os.Stat(abs); err != nil {
		return "", fmt.Errorf("image: %w (make image, or set KILN_IMAGE)", err)
	}
	return abs, nil
}

// BinDir is $KILN_BIN, default <repo>/bin (make build).
func BinDir() string {
	if b := os.Getenv("KILN_BIN"); b != "" {
		return b
	}
	return filepath.Join(RepoRoot(), "bin")
}

// PXEDir is $KILN_PXE_DIR, default the pxe directory beside the image under test (make image writes both),
// made absolute; an error when it holds no pxe.json.
func PXEDir() (string, error) {
	dir := os.Getenv("KILN_PXE_DIR")
	if dir == "" {
		img, err := ImagePath()
		if err != nil {
			return "", err
		}
		dir = filepath.Join(filepath.Dir(img), "pxe")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	if _, err := os.Stat(filepath.Join(abs, pxedir.Manifest)); err != nil {
		return "", fmt.Errorf("pxe directory: %w (build with --format pxe, or set KILN_PXE_DIR)", err)
	}
	return abs, nil
}

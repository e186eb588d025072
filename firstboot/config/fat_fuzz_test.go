package config

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	diskfile "github.com/diskfs/go-diskfs/backend/file"
)

// FuzzReadFAT feeds the ESP reader a real ESP image (as builder/disk writes it) with fuzzed bytes written over
// its metadata: the boot sector, the FATs and the directories all lie in the first MiB. A node reads the ESP
// of whatever disk it finds, so a damaged one must give an error, never a panic, a hang or a file beyond
// MaxSize.
func FuzzReadFAT(f *testing.F) {
	img := filepath.Join(f.TempDir(), "esp.img")
	makeESP(f, img, map[string]string{"/kiln/cluster.yaml": "cluster:\n  name: fuzz\n"})
	base, err := os.ReadFile(img)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(uint32(0), []byte{})
	f.Add(uint32(0), base[:512])                      // the boot sector as it is
	f.Add(uint32(11), []byte{0, 0})                   // bytes per sector 0
	f.Add(uint32(13), []byte{0})                      // sectors per cluster 0
	f.Add(uint32(36), []byte{0xff, 0xff, 0xff, 0x7f}) // a FAT far beyond the disk
	f.Add(uint32(44), []byte{2, 0, 0, 0})             // root cluster 2
	f.Fuzz(func(t *testing.T, off uint32, patch []byte) {
		off %= 1 << 20
		if len(patch) > 4096 {
			patch = patch[:4096]
		}
		// Patch base in place and put it back after: a copy of the 40 MiB image per input would cost more
		// than the read.
		saved := bytes.Clone(base[off:min(int(off)+len(patch), len(base))])
		copy(base[off:], patch)
		defer copy(base[off:], saved)
		done := make(chan struct{})
		var data []byte
		var err error
		go func() {
			defer close(done)
			data, err = readFAT(diskfile.New(memFile{bytes.NewReader(base)}, true), int64(len(base)), "fuzz", "kiln/cluster.yaml")
		}()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatalf("readFAT did not return within 10 s (offset %d, %d bytes)", off, len(patch))
		}
		if err == nil && len(data) > MaxSize {
			t.Fatalf("read %d bytes, more than MaxSize", len(data))
		}
		if err != nil && errors.Is(err, fs.ErrNotExist) && data != nil {
			t.Fatalf("a missing file came with data")
		}
	})
}

// memFile is an image in memory as go-diskfs's backend wants a file.
type memFile struct{ *bytes.Reader }

func (m memFile) Stat() (fs.FileInfo, error) { return memInfo{m.Size()}, nil }
func (memFile) Close() error                 { return nil }

type memInfo struct{ size int64 }

func (memInfo) Name() string       { return "esp.img" }
func (i memInfo) Size() int64      { return i.size }
func (memInfo) Mode() fs.FileMode  { return 0o444 }
func (memInfo) ModTime() time.Time { return time.Time{} }
func (memInfo) IsDir() bool        { return false }
func (memInfo) Sys() any           { return nil }

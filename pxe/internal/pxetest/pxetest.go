// Package pxetest writes pxe directories for tests: the layout and pxe.json of `kiln build --format pxe`, with
// small files of deterministic bytes in place of the kernel, initrd and layers.
package pxetest

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/kiln-project/kiln/pxe/pxedir"
)

// Sizes of the files Dir writes, bytes.
var Sizes = map[string]int{
	pxedir.Kernel: 3 << 20,
	pxedir.Initrd: 1 << 20,
	pxedir.Base:   8 << 20,
	pxedir.Node:   1 << 20,
	pxedir.EFI:    200 << 10,
	pxedir.BIOS:   80 << 10,
}

// Script is boot.ipxe as the contract has it, for the given layer hashes.
func Script(baseSum, nodeSum string) string {
	return fmt.Sprintf(`#!ipxe
# kiln netboot script. kiln pxe serve inserts "set kiln-url http://<server>:<port>/" as the second line.
isset ${kiln-url} || set kiln-url http://${next-server}/
kernel ${kiln-url}vmlinuz initrd=initrd.img boot=kiln console=tty0 console=ttyS0,115200 BOOTIF=01-${netX/mac:hexhyp} kiln.layers=${kiln-url}base.squashfs?sha256=%s,${kiln-url}node.squashfs?sha256=%s kiln.config=${kiln-url}cluster.yaml
initrd ${kiln-url}initrd.img
boot
`, baseSum, nodeSum)
}

// Dir writes a complete pxe directory under t.TempDir() and returns its path. Files in override replace the
// generated ones (their hashes go into pxe.json too).
func Dir(t testing.TB, override map[string][]byte) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "pxe")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	content := map[string][]byte{}
	rng := rand.NewChaCha8([32]byte{'k', 'i', 'l', 'n'})
	for _, name := range []string{pxedir.Kernel, pxedir.Initrd, pxedir.Base, pxedir.Node, pxedir.EFI, pxedir.BIOS} {
		b := make([]byte, Sizes[name])
		_, _ = rng.Read(b)
		content[name] = b
	}
	sum := func(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }
	for k, v := range override {
		content[k] = v
	}
	if _, ok := override[pxedir.Script]; !ok {
		content[pxedir.Script] = []byte(Script(sum(content[pxedir.Base]), sum(content[pxedir.Node])))
	}
	m := struct {
		Name  string            `json:"name"`
		Files map[string]string `json:"files"`
	}{Name: "node", Files: map[string]string{}}
	for name, b := range content {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
		m.Files[name] = sum(b)
	}
	j, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, pxedir.Manifest), j, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// Read returns a file of dir.
func Read(t testing.TB, dir, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

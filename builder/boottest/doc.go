// Package boottest holds the end-to-end tests of the built node image (make image → out/node.raw): it boots
// in qemu (OVMF, TCG) and keeps the immutable-root contract over SSH, and a second build of the same inputs
// gives the same bytes. Run with KILN_E2E=1; skipped with -short.
package boottest

// Package boottest holds the end-to-end test of the node image: build it, boot it in qemu (OVMF, TCG) and
// check the immutable-root contract over SSH. Run with KILN_E2E=1 (as root); skipped with -short.
package boottest

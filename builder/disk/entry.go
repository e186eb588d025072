package disk

import (
	"fmt"
	"strings"

	"github.com/kiln-project/kiln/builder/spec"
)

// Paths of the kernel and initrd on the ESP, which every boot entry names.
const (
	KernelPath = "/kiln/vmlinuz"
	InitrdPath = "/kiln/initrd.img"
)

// Entry is the one boot entry of an image: what the systemd-boot entry (UEFI), the GRUB menu entry (legacy
// BIOS) and the installer ISO's entries are all written from, so the firmwares cannot start different
// kernels or command lines.
type Entry struct {
	Title          string
	Kernel, Initrd string // paths on the filesystem the boot loader reads
	Options        string // the kernel command line
}

// BootEntry is the entry of s's disk image.
func BootEntry(s *spec.Spec) Entry {
	return Entry{Title: "kiln " + s.Name, Kernel: KernelPath, Initrd: InitrdPath, Options: Cmdline(s)}
}

// SystemdBoot is the entry as a loader/entries/*.conf file.
func (e Entry) SystemdBoot() string {
	return fmt.Sprintf("title %s\nlinux %s\ninitrd %s\noptions %s\n", e.Title, e.Kernel, e.Initrd, e.Options)
}

// GRUB is the entry as a GRUB menuentry. Every word is quoted where GRUB's parser would otherwise expand or
// split it ($, ;, braces…): the kernel must see the command line exactly as systemd-boot passes it.
func (e Entry) GRUB() string {
	words := strings.Fields(e.Options)
	for i, w := range words {
		words[i] = grubQuote(w)
	}
	return fmt.Sprintf("menuentry %s {\n\tlinux %s %s\n\tinitrd %s\n}\n",
		grubQuote(e.Title), grubQuote(e.Kernel), strings.Join(words, " "), grubQuote(e.Initrd))
}

// grubQuote single-quotes s unless it is made only of characters GRUB's script parser passes through.
// A spec's kernel arguments never hold a quote or space (spec validation), so single quotes always suffice.
func grubQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789=,._:/+-@%") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// GRUBConfig is a grub.cfg booting the first of entries at once, on the VGA console and on the first serial
// port when the machine has one (headless garage servers are reached over serial, as the kernel's
// console=ttyS0 assumes). header is a comment saying what the file is for.
func GRUBConfig(header string, timeout int, entries ...Entry) string {
	var b strings.Builder
	for _, l := range strings.Split(strings.TrimSpace(header), "\n") {
		b.WriteString("# " + l + "\n")
	}
	b.WriteString("if serial --unit=0 --speed=115200; then\n\tterminal_input console serial\n\tterminal_output console serial\nfi\n")
	fmt.Fprintf(&b, "set default=0\nset timeout=%d\n", timeout)
	for _, e := range entries {
		b.WriteString(e.GRUB())
	}
	return b.String()
}

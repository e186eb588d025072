// Command kiln-install is the installer on a kiln ISO: the initramfs runs it from the medium in kiln.install
// mode (docs/install.md). It writes the node image onto the install disk, or refuses and says why.
//
// Exit status: 0 the image was written (the initramfs then asks for the medium to be removed and reboots),
// 3 a disk already holds this image (the medium stayed in: the initramfs boots that disk), 1 nothing was
// written (refused, or failed), 2 bad usage.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/kiln-project/kiln/firstboot/install"
)

const (
	exitBoot  = 3
	exitUsage = 2
)

func main() {
	medium := flag.String("medium", "", "directory the installation medium is mounted on")
	mediumDisk := flag.String("medium-disk", "", "kernel name of the disk holding the medium (never written)")
	flag.Parse()
	if *medium == "" || flag.NArg() != 0 {
		fmt.Fprintln(os.Stderr, "usage: kiln-install --medium DIR [--medium-disk NAME]")
		os.Exit(exitUsage)
	}
	out := consoles()
	say := func(format string, args ...any) { fmt.Fprintf(out, format+"\r\n", args...) }
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := install.Run(ctx, install.Options{Medium: *medium, MediumDisk: *mediumDisk, Say: say,
		Log: slog.New(slog.NewTextHandler(out, &slog.HandlerOptions{Level: slog.LevelInfo}))})
	switch {
	case errors.Is(err, install.ErrRefused):
		say("kiln install: REFUSED: %v", strings.TrimPrefix(err.Error(), install.ErrRefused.Error()+": "))
		os.Exit(1)
	case err != nil:
		say("kiln install: FAILED: %v", err)
		os.Exit(1)
	case res.Decision.Action == install.Boot:
		os.Exit(exitBoot)
	}
	say("kiln install: done: %s now holds the node image", "/dev/"+res.Decision.Target.Name)
}

// consoles writes to every console the kernel command line names (console=tty0 console=ttyS0,115200: the
// screen and the serial port), so the installer is read wherever someone looks; stdout is /dev/console, only
// the last of them. Without console= arguments: stdout.
func consoles() io.Writer {
	b, _ := os.ReadFile("/proc/cmdline")
	var ws []io.Writer
	for _, arg := range strings.Fields(string(b)) {
		name, ok := strings.CutPrefix(arg, "console=")
		if !ok {
			continue
		}
		name, _, _ = strings.Cut(name, ",")
		if f, err := os.OpenFile("/dev/"+name, os.O_WRONLY|syscall.O_NOCTTY, 0); err == nil {
			ws = append(ws, f)
		}
	}
	if len(ws) == 0 {
		return os.Stdout
	}
	return allWriter(ws)
}

// allWriter writes to each writer, whatever the others do: a console that fails must not silence the rest
// (io.MultiWriter stops at the first error).
type allWriter []io.Writer

func (a allWriter) Write(p []byte) (int, error) {
	for _, w := range a {
		_, _ = w.Write(p)
	}
	return len(p), nil
}

package files

import (
	"bytes"
	"io"
	"os"
)

// tailWindow bounds how much of a file Tail reads: logs it is used on (serial consoles, server logs) grow
// without bound, and a failure report wants their end.
const tailWindow = 64 << 10

// Tail returns the last n lines of the file at path, without the final newline, for failure reports. A file
// that cannot be read gives the error's text instead, so a report says why its log is missing.
func Tail(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Size() > tailWindow {
		if _, err := f.Seek(-tailWindow, io.SeekEnd); err != nil {
			return err.Error()
		}
	}
	b, err := io.ReadAll(f)
	if err != nil {
		return err.Error()
	}
	b = bytes.TrimRight(b, "\r\n")
	cut := len(b)
	for range n {
		j := bytes.LastIndexByte(b[:cut], '\n')
		if j < 0 {
			return string(b)
		}
		cut = j
	}
	return string(b[cut+1:])
}

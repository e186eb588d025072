package httpd

import (
	"bytes"
	"fmt"
)

// Rewrite returns the iPXE script with `set kiln-url <base>` as its second line, so every URL in it points at
// the address and port the client reached us on (the script's own fallback, http://${next-server}/, assumes
// port 80). base must end in '/'.
func Rewrite(script []byte, base string) ([]byte, error) {
	first, rest, found := bytes.Cut(script, []byte("\n"))
	if string(bytes.TrimRight(first, "\r")) != "#!ipxe" {
		return nil, fmt.Errorf("pxe: boot.ipxe does not start with #!ipxe: not an iPXE script")
	}
	out := make([]byte, 0, len(script)+len(base)+32)
	out = append(out, first...)
	out = append(out, '\n')
	out = fmt.Appendf(out, "set kiln-url %s\n", base)
	if found {
		out = append(out, rest...)
	}
	return out, nil
}

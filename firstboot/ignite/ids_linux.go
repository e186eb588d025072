package ignite

import (
	"io/fs"
	"syscall"
)

// ids returns the owner of a file.
func ids(fi fs.FileInfo) (uid, gid int) {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return int(st.Uid), int(st.Gid)
	}
	return -1, -1
}

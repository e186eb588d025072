package ignite

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/coreos/ignition/v2/config/v3_3/types"
)

// HomeBase is where homes live: /var persists across boots and the root is read-only. The image links
// /home → var/home so that /home/<user> works too.
const HomeBase = "/var/home"

// firstDynamicID is where uids and gids for users without one start (Debian's FIRST_UID/FIRST_GID).
const firstDynamicID = 1000

// namePattern is what Debian's adduser accepts by default (NAME_REGEX), and rules out ':' and newlines, which
// would let a name forge passwd entries.
var namePattern = regexp.MustCompile(`^[a-z_][a-z0-9_-]{0,31}$`)

// db is one of the colon-separated account files, kept in its original order so unrelated entries survive.
type db struct {
	path    string
	fields  int
	rows    [][]string
	mode    fs.FileMode
	uid     int
	gid     int
	exists  bool
	changed bool
}

func loadDB(path string, fields int, defaultMode fs.FileMode) (*db, error) {
	d := &db{path: path, fields: fields, mode: defaultMode}
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return d, nil
	}
	if err != nil {
		return nil, err
	}
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	d.exists, d.mode = true, fi.Mode().Perm()
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		d.uid, d.gid = int(st.Uid), int(st.Gid)
	}
	for _, line := range strings.Split(strings.TrimRight(string(data), "\n"), "\n") {
		if line == "" {
			continue
		}
		row := strings.Split(line, ":")
		for len(row) < fields {
			row = append(row, "")
		}
		d.rows = append(d.rows, row)
	}
	return d, nil
}

func (d *db) find(name string) []string {
	for _, r := range d.rows {
		if r[0] == name {
			return r
		}
	}
	return nil
}

func (d *db) add(row ...string) {
	d.rows = append(d.rows, row)
	d.changed = true
}

// usedIDs returns the numbers in column col (2 = uid in passwd, gid in group).
func (d *db) usedIDs(col int) map[int]bool {
	used := map[int]bool{}
	for _, r := range d.rows {
		if n, err := strconv.Atoi(r[col]); err == nil {
			used[n] = true
		}
	}
	return used
}

func (d *db) write() error {
	if !d.changed {
		return nil
	}
	var b strings.Builder
	for _, r := range d.rows {
		b.WriteString(strings.Join(r, ":"))
		b.WriteByte('\n')
	}
	return writeFileAtomic(d.path, []byte(b.String()), d.mode, d.uid, d.gid)
}

// accounts is the account database under a root.
type accounts struct {
	passwd, shadow, group, gshadow *db
}

func loadAccounts(root string) (*accounts, error) {
	etc := filepath.Join(root, "etc")
	var a accounts
	var err error
	for _, x := range []struct {
		d      **db
		name   string
		fields int
		mode   fs.FileMode
	}{
		{&a.passwd, "passwd", 7, 0o644}, {&a.shadow, "shadow", 9, 0o640},
		{&a.group, "group", 4, 0o644}, {&a.gshadow, "gshadow", 4, 0o640},
	} {
		if *x.d, err = loadDB(filepath.Join(etc, x.name), x.fields, x.mode); err != nil {
			return nil, fmt.Errorf("ignite: read /etc/%s: %w", x.name, err)
		}
	}
	return &a, nil
}

func (a *accounts) write() error {
	// shadow before passwd: a user visible in passwd has its (locked) shadow entry already.
	for _, d := range []*db{a.gshadow, a.group, a.shadow, a.passwd} {
		if d == a.gshadow && !d.exists {
			continue // a system without gshadow keeps not having one
		}
		if err := d.write(); err != nil {
			return fmt.Errorf("ignite: write %s: %w", d.path, err)
		}
	}
	return nil
}

// lookupUser returns the uid of a user name.
func (a *accounts) lookupUser(name string) (int, bool) {
	if r := a.passwd.find(name); r != nil {
		n, err := strconv.Atoi(r[2])
		return n, err == nil
	}
	return 0, false
}

func (a *accounts) lookupGroup(name string) (int, bool) {
	if r := a.group.find(name); r != nil {
		n, err := strconv.Atoi(r[2])
		return n, err == nil
	}
	return 0, false
}

func freeID(used map[int]bool) int {
	id := firstDynamicID
	for used[id] {
		id++
	}
	return id
}

// safeField rejects values that would break the colon-separated format.
func safeField(field, v string) error {
	if strings.ContainsAny(v, ":\n") {
		return fmt.Errorf("%s: must not contain ':' or a newline", field)
	}
	return nil
}

func (a *accounts) ensureGroup(i int, g types.PasswdGroup) error {
	at := fmt.Sprintf("passwd.groups[%d]", i)
	if !namePattern.MatchString(g.Name) {
		return fmt.Errorf("%s.name: %q is not a valid group name", at, g.Name)
	}
	if gid, ok := a.lookupGroup(g.Name); ok {
		if g.Gid != nil && *g.Gid != gid {
			return fmt.Errorf("%s: group %s exists with gid %d, config says %d", at, g.Name, gid, *g.Gid)
		}
		return nil
	}
	gid := freeID(a.group.usedIDs(2))
	if g.Gid != nil {
		gid = *g.Gid
	}
	a.group.add(g.Name, "x", strconv.Itoa(gid), "")
	a.gshadow.add(g.Name, "!", "", "")
	return nil
}

// ensureUser creates or updates the account of u; homeOwner reports the uid owning an existing home, so a
// user without a fixed uid gets the same uid on every boot even if the image's accounts change.
func (a *accounts) ensureUser(i int, u types.PasswdUser, homeOwner func(home string) (int, bool)) (home string, uid, gid int, created bool, err error) {
	at := fmt.Sprintf("passwd.users[%d]", i)
	if !namePattern.MatchString(u.Name) {
		return "", 0, 0, false, fmt.Errorf("%s.name: %q is not a valid user name", at, u.Name)
	}
	for _, f := range []struct {
		name string
		v    *string
	}{{"gecos", u.Gecos}, {"shell", u.Shell}, {"passwordHash", u.PasswordHash}} {
		if f.v != nil {
			if err := safeField(at+"."+f.name, *f.v); err != nil {
				return "", 0, 0, false, err
			}
		}
	}
	row := a.passwd.find(u.Name)
	if row != nil {
		// Existing user (root, or one from the image): adjust what the config sets, keep the rest.
		uid, _ = strconv.Atoi(row[2])
		gid, _ = strconv.Atoi(row[3])
		if u.UID != nil && *u.UID != uid {
			return "", 0, 0, false, fmt.Errorf("%s: user %s exists with uid %d, config says %d", at, u.Name, uid, *u.UID)
		}
		set := func(col int, v *string) {
			if v != nil && row[col] != *v {
				row[col] = *v
				a.passwd.changed = true
			}
		}
		set(4, u.Gecos)
		set(6, u.Shell)
		if u.PasswordHash != nil {
			if s := a.shadow.find(u.Name); s != nil && s[1] != *u.PasswordHash {
				s[1] = *u.PasswordHash
				a.shadow.changed = true
			}
		}
		home = row[5]
	} else {
		home = HomeBase + "/" + u.Name
		switch {
		case u.UID != nil:
			uid = *u.UID
		default:
			if owner, ok := homeOwner(home); ok && owner != 0 {
				uid = owner
			} else {
				uid = freeID(a.passwd.usedIDs(2))
			}
		}
		if a.passwd.usedIDs(2)[uid] {
			return "", 0, 0, false, fmt.Errorf("%s: uid %d is taken", at, uid)
		}
		// User-private group named after the user, gid = uid when free (Debian's USERGROUPS).
		if g, ok := a.lookupGroup(u.Name); ok {
			gid = g
		} else {
			gid = uid
			if a.group.usedIDs(2)[gid] {
				gid = freeID(a.group.usedIDs(2))
			}
			a.group.add(u.Name, "x", strconv.Itoa(gid), "")
			a.gshadow.add(u.Name, "!", "", "")
		}
		gecos, shell, hash := "", "/bin/bash", "!" // "!": locked, ssh keys only
		if u.Gecos != nil {
			gecos = *u.Gecos
		}
		if u.Shell != nil {
			shell = *u.Shell
		}
		if u.PasswordHash != nil {
			hash = *u.PasswordHash
		}
		a.passwd.add(u.Name, "x", strconv.Itoa(uid), strconv.Itoa(gid), gecos, home, shell)
		// No aging fields: an account that expires on an appliance locks people out with no one to notice.
		a.shadow.add(u.Name, hash, "", "", "", "", "", "", "")
		created = true
	}
	var errs []error
	for _, g := range u.Groups {
		if err := a.addMember(string(g), u.Name); err != nil {
			errs = append(errs, fmt.Errorf("%s.groups: %w", at, err))
		}
	}
	return home, uid, gid, created, errors.Join(errs...)
}

func (a *accounts) addMember(group, user string) error {
	row := a.group.find(group)
	if row == nil {
		return fmt.Errorf("group %q does not exist (declare it in passwd.groups)", group)
	}
	if add(row, 3, user) {
		a.group.changed = true
	}
	if s := a.gshadow.find(group); s != nil && add(s, 3, user) {
		a.gshadow.changed = true
	}
	return nil
}

// add appends user to the comma-separated list in row[col]; it reports whether it changed anything.
func add(row []string, col int, user string) bool {
	var members []string
	if row[col] != "" {
		members = strings.Split(row[col], ",")
	}
	if slices.Contains(members, user) {
		return false
	}
	row[col] = strings.Join(append(members, user), ",")
	return true
}

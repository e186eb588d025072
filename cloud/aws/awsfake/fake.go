// Package awsfake is a local stand-in for the parts of AWS kiln talks to: the EBS direct APIs (snapshot
// upload and read-back), the EC2 query actions kiln calls (images, snapshots, instances by tag, secondary
// private addresses) and IMDSv2. The AWS API is the one boundary kiln fakes: everything on kiln's side of it
// (the SDK clients, signing, retries, the agent) runs for real against this handler. It stays thin: it keeps
// what a test reads back, checks what AWS would reject for kiln's calls (checksums, block sizes, states), and
// injects the faults kiln must survive. It is an http.Handler for httptest, and Serve runs it on a listener (a
// lab namespace's 169.254.169.254).
package awsfake

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
)

// BlockSize is EBS direct's block size (StartSnapshot answers it; PutSnapshotBlock takes exactly this much).
const BlockSize = 512 << 10

// Account is the owner id of everything the fake creates.
const Account = "123456789012"

// Fake is one fake AWS account in one region. Its zero value is not usable: call New.
type Fake struct {
	// Region is what IMDS reports as the instances' region (default us-east-1).
	Region string
	// PendingPolls is how many DescribeSnapshots answers say "pending" for a snapshot after CompleteSnapshot
	// before it turns "completed" (real snapshots take seconds to minutes).
	PendingPolls int

	// mu guards every field below.
	mu        sync.Mutex
	seq       int
	snapshots map[string]*Snapshot
	images    map[string]*Image
	instances []*Instance
	calls     map[string]int
	throttle  map[string]int
	notFound  int
	deny      map[string]bool
	tokens    map[string]time.Time
}

// New returns an empty fake account.
func New() *Fake {
	return &Fake{Region: "us-east-1", snapshots: map[string]*Snapshot{}, images: map[string]*Image{},
		calls: map[string]int{}, throttle: map[string]int{}, deny: map[string]bool{}, tokens: map[string]time.Time{}}
}

// Snapshot is an EBS snapshot as the fake holds it.
type Snapshot struct {
	ID          string
	VolumeSize  int64 // GiB
	Description string
	Tags        map[string]string
	// State is pending (open for blocks, then completing), completed or error.
	State string
	// Blocks are the blocks written, by index; a missing index reads as zeros.
	Blocks map[int32][]byte
	polls  int
	// digests are the blocks' SHA-256, by index, taken when each was checked on arrival: CompleteSnapshot's
	// aggregate is over these, so the fake hashes every byte once, as the uploader does.
	digests map[int32][sha256.Size]byte
}

// Image is a registered AMI.
type Image struct {
	ID, Name     string
	Architecture string
	BootMode     string
	EnaSupport   bool
	ImdsSupport  string
	RootDevice   string
	VolumeType   string
	SnapshotID   string
	Tags         map[string]string
}

// Instance is an EC2 instance: what DescribeInstances lists and what IMDS answers to the instance whose
// address (LocalIPv4) the request comes from.
type Instance struct {
	ID        string
	State     string // running, pending, stopped …
	LocalIPv4 string
	MAC       string
	ENI       string
	Tags      map[string]string
	UserData  []byte
	// Secondary are the ENI's secondary private addresses (AssignPrivateIpAddresses moves them here).
	Secondary []string
}

// AddInstance adds an instance (a copy); it answers IMDS requests from its LocalIPv4.
func (f *Fake) AddInstance(in Instance) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := in
	f.instances = append(f.instances, &c)
}

// SetInstanceState changes an instance's state (a terminated node leaves DescribeInstances' running set).
func (f *Fake) SetInstanceState(id, state string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, in := range f.instances {
		if in.ID == id {
			in.State = state
		}
	}
}

// Secondary returns the secondary private addresses of instance id's interface.
func (f *Fake) Secondary(id string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, in := range f.instances {
		if in.ID == id {
			return append([]string(nil), in.Secondary...)
		}
	}
	return nil
}

// SnapshotByID returns a copy of a snapshot's metadata and its blocks (shared: read only), or nil.
func (f *Fake) SnapshotByID(id string) *Snapshot {
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.snapshots[id]
	if !ok {
		return nil
	}
	c := *s
	return &c
}

// Snapshots returns the ids of all snapshots that exist.
func (f *Fake) Snapshots() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for id := range f.snapshots {
		out = append(out, id)
	}
	return out
}

// Images returns copies of all registered images.
func (f *Fake) Images() []Image {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []Image
	for _, im := range f.images {
		out = append(out, *im)
	}
	return out
}

// Calls returns how many times an action was called ("PutSnapshotBlock", "RegisterImage", "imds:user-data" …),
// throttled and refused calls included.
func (f *Fake) Calls(action string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[action]
}

// Throttle makes the next n EBS or EC2 calls of the IAM actions given ("ebs:PutSnapshotBlock"), or of any
// action when none is given, answer with the service's throttling error.
func (f *Fake) Throttle(n int, actions ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(actions) == 0 {
		actions = []string{""}
	}
	for _, a := range actions {
		f.throttle[a] = n
	}
}

// SnapshotNotFound makes the next n PutSnapshotBlock calls answer ResourceNotFoundException
// (SNAPSHOT_NOT_FOUND), as EBS does for a while right after StartSnapshot.
func (f *Fake) SnapshotNotFound(n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.notFound = n
}

// Deny refuses the IAM actions given ("ebs:StartSnapshot", "ec2:RegisterImage" …) with the service's
// access-denied error; Deny() with none allows everything again.
func (f *Fake) Deny(actions ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.deny = map[string]bool{}
	for _, a := range actions {
		f.deny[a] = true
	}
}

// fault counts a call and returns the fault to inject for it, if any: "throttle", "denied" or "".
func (f *Fake) fault(iamAction string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, name, _ := strings.Cut(iamAction, ":")
	f.calls[name]++
	switch {
	case f.deny[iamAction]:
		return "denied"
	case f.throttle[iamAction] > 0:
		f.throttle[iamAction]--
		return "throttle"
	case f.throttle[""] > 0:
		f.throttle[""]--
		return "throttle"
	}
	return ""
}

func (f *Fake) nextID(prefix string) string {
	f.seq++
	return fmt.Sprintf("%s-%017x", prefix, f.seq)
}

// ServeHTTP routes by path: /latest/ is IMDS, /snapshots EBS direct, anything else the EC2 query API
// (POST / with a form body). One endpoint serves all three, so one --endpoint-url points kiln at the fake.
func (f *Fake) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case strings.HasPrefix(r.URL.Path, "/latest/"):
		f.imds(w, r, "")
	case strings.HasPrefix(r.URL.Path, "/snapshots"):
		f.ebs(w, r)
	default:
		f.ec2(w, r)
	}
}

// Serve answers on ln until ctx ends (the lab runs it on 169.254.169.254:80 inside its namespace).
func (f *Fake) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{Handler: f, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("awsfake: %w", err)
	}
	return nil
}

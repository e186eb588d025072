package publish_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"math/rand/v2"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ebs"

	"github.com/kiln-project/kiln/builder"
	"github.com/kiln-project/kiln/cloud/aws/ami"
	"github.com/kiln-project/kiln/cloud/aws/awsconf"
	"github.com/kiln-project/kiln/cloud/aws/awsfake"
	"github.com/kiln-project/kiln/cloud/aws/ebsupload"
	"github.com/kiln-project/kiln/cloud/aws/publish"
	"github.com/kiln-project/kiln/internal/testenv"
)

// env is a fake AWS account and the clients pointed at it.
type env struct {
	fake *awsfake.Fake
	ebs  *ebs.Client
	ec2  ami.API
}

func newEnv(t *testing.T) *env {
	t.Helper()
	f := awsfake.New()
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	cfg, err := awsconf.Load(context.Background(), awsconf.Options{Region: "us-east-1", Endpoint: srv.URL,
		Credentials: credentials.NewStaticCredentialsProvider("AKIDTEST", "secret", "")})
	if err != nil {
		t.Fatal(err)
	}
	e, c := publish.Clients(cfg)
	return &env{fake: f, ebs: e, ec2: c}
}

func (e *env) publish(ctx context.Context, image string) (*publish.Result, error) {
	return publish.Publish(ctx, e.ebs, e.ec2, "us-east-1", publish.Options{Image: image, Name: "kiln-node-test",
		PollInterval: time.Millisecond, Upload: ebsupload.Options{Backoff: time.Millisecond, Workers: 4}})
}

// synthetic writes a sparse image of odd size (the last block is partial) with data, zero and hole blocks,
// and a manifest.json naming it, and returns the image's path.
func synthetic(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "node.raw")
	const size = 9*ebsupload.BlockSize + 12345
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for _, blk := range []int64{0, 1, 4, 8, 9} { // 2, 3, 5–7 stay holes; 9 is the partial tail
		buf := make([]byte, ebsupload.BlockSize)
		for i := range buf {
			buf[i] = byte(rng.Uint32())
		}
		buf[0] = 1
		if n := size - blk*ebsupload.BlockSize; n < int64(len(buf)) {
			buf = buf[:n]
		}
		if _, err := f.WriteAt(buf, blk*ebsupload.BlockSize); err != nil {
			t.Fatal(err)
		}
	}
	// A block of written zeros is as empty as a hole.
	if _, err := f.WriteAt(make([]byte, ebsupload.BlockSize), 3*ebsupload.BlockSize); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	writeManifest(t, path, "b0d1e5"+strings.Repeat("0", 58))
	return path
}

func writeManifest(t *testing.T, image, key string) {
	st, err := os.Stat(image)
	if err != nil {
		t.Fatal(err)
	}
	m := builder.Manifest{Name: "node", Key: key, Artifacts: []builder.Artifact{{File: filepath.Base(image), Format: "raw", Size: st.Size()}}}
	data, _ := json.Marshal(m)
	if err := os.WriteFile(filepath.Join(filepath.Dir(image), builder.ManifestFile), data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// readBack reads every block of the snapshot through the EBS direct read APIs and compares the snapshot with
// the image byte for byte (the snapshot reads zeros wherever no block was written, past the image included).
func readBack(t *testing.T, c *ebs.Client, id, image string) {
	t.Helper()
	ctx := context.Background()
	want, err := os.Open(image)
	if err != nil {
		t.Fatal(err)
	}
	defer want.Close()
	st, _ := want.Stat()
	got := map[int32][]byte{}
	var token *string
	for {
		out, err := c.ListSnapshotBlocks(ctx, &ebs.ListSnapshotBlocksInput{SnapshotId: aws.String(id), NextToken: token, MaxResults: aws.Int32(500)})
		if err != nil {
			t.Fatalf("list blocks: %v", err)
		}
		for _, b := range out.Blocks {
			r, err := c.GetSnapshotBlock(ctx, &ebs.GetSnapshotBlockInput{SnapshotId: aws.String(id), BlockIndex: b.BlockIndex, BlockToken: b.BlockToken})
			if err != nil {
				t.Fatalf("get block %d: %v", aws.ToInt32(b.BlockIndex), err)
			}
			data, err := io.ReadAll(r.BlockData)
			r.BlockData.Close()
			if err != nil {
				t.Fatal(err)
			}
			got[aws.ToInt32(b.BlockIndex)] = data
		}
		if token = out.NextToken; token == nil {
			break
		}
	}
	blocks := (st.Size() + ebsupload.BlockSize - 1) / ebsupload.BlockSize
	buf := make([]byte, ebsupload.BlockSize)
	zero := make([]byte, ebsupload.BlockSize)
	for i := range blocks {
		clear(buf)
		if _, err := want.ReadAt(buf, i*ebsupload.BlockSize); err != nil && err != io.EOF {
			t.Fatal(err)
		}
		data, ok := got[int32(i)]
		if !ok {
			data = zero
		}
		if !bytes.Equal(data, buf) {
			t.Fatalf("block %d of the snapshot differs from the image (written: %v)", i, ok)
		}
		delete(got, int32(i))
	}
	if len(got) > 0 {
		t.Fatalf("the snapshot holds %d blocks past the image", len(got))
	}
}

func TestPublishSynthetic(t *testing.T) {
	e := newEnv(t)
	e.fake.PendingPolls = 2
	image := synthetic(t)
	res, err := e.publish(context.Background(), image)
	if err != nil {
		t.Fatal(err)
	}
	if res.Reused || res.Blocks != 10 || res.Sent != 5 || res.Skipped != 5 || res.SkippedBytes != 5*ebsupload.BlockSize {
		t.Fatalf("result %+v: want 10 blocks, 5 sent, 5 zero blocks skipped", res)
	}
	readBack(t, e.ebs, res.SnapshotID, image)
	ims := e.fake.Images()
	if len(ims) != 1 {
		t.Fatalf("%d images, want 1", len(ims))
	}
	im := ims[0]
	if im.ID != res.ImageID || im.Architecture != "x86_64" || im.BootMode != "uefi" || !im.EnaSupport || im.ImdsSupport != "v2.0" ||
		im.RootDevice != "/dev/xvda" || im.VolumeType != "gp3" || im.SnapshotID != res.SnapshotID ||
		im.Tags["Name"] != "kiln-node-test" || im.Tags[ami.BuildTag] != res.Build {
		t.Fatalf("registered %+v", im)
	}
	if s := e.fake.SnapshotByID(res.SnapshotID); s.VolumeSize != 1 || s.Tags[ami.BuildTag] != res.Build {
		t.Fatalf("snapshot %s: %d GiB, tags %v", s.ID, s.VolumeSize, s.Tags)
	}

	puts := e.fake.Calls("PutSnapshotBlock")
	again, err := e.publish(context.Background(), image)
	if err != nil {
		t.Fatal(err)
	}
	if !again.Reused || again.ImageID != res.ImageID || again.SnapshotID != res.SnapshotID {
		t.Fatalf("second publish %+v, want the first's AMI %s reused", again, res.ImageID)
	}
	if n := e.fake.Calls("PutSnapshotBlock"); n != puts || e.fake.Calls("StartSnapshot") != 1 {
		t.Fatalf("second publish uploaded again: %d puts after %d, %d snapshots started", n, puts, e.fake.Calls("StartSnapshot"))
	}
}

// TestPublishSurvivesTransientErrors: throttling on EBS and EC2 calls and "snapshot does not exist" on the
// first block puts are retried, and the snapshot is still complete and exact.
func TestPublishSurvivesTransientErrors(t *testing.T) {
	e := newEnv(t)
	image := synthetic(t)
	e.fake.Throttle(6, "ebs:StartSnapshot", "ebs:PutSnapshotBlock", "ebs:CompleteSnapshot")
	e.fake.Throttle(1, "ec2:DescribeImages", "ec2:DescribeSnapshots", "ec2:RegisterImage")
	e.fake.SnapshotNotFound(4)
	res, err := e.publish(context.Background(), image)
	if err != nil {
		t.Fatal(err)
	}
	readBack(t, e.ebs, res.SnapshotID, image)
	if n := e.fake.Calls("PutSnapshotBlock"); n < res.Sent+10 {
		t.Fatalf("%d block puts for %d blocks: the injected faults were not hit", n, res.Sent)
	}
}

func TestPublishAccessDenied(t *testing.T) {
	for _, tc := range []struct {
		deny     []string
		want     string
		leftOver bool
	}{
		{deny: []string{"ebs:StartSnapshot"}, want: "may not call ebs:StartSnapshot"},
		{deny: []string{"ebs:PutSnapshotBlock"}, want: "may not call ebs:PutSnapshotBlock"},
		{deny: []string{"ec2:RegisterImage"}, want: "may not call ec2:RegisterImage"},
		{deny: []string{"ec2:RegisterImage", "ec2:DeleteSnapshot"}, want: "is left over", leftOver: true},
		{deny: []string{"ec2:DescribeImages"}, want: "may not call ec2:DescribeImages"},
	} {
		t.Run(strings.Join(tc.deny, "+"), func(t *testing.T) {
			e := newEnv(t)
			e.fake.Deny(tc.deny...)
			start := time.Now()
			_, err := e.publish(context.Background(), synthetic(t))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want one saying %q", err, tc.want)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Fatalf("access denied took %s to fail", d)
			}
			if len(e.fake.Images()) != 0 {
				t.Fatal("an AMI was registered")
			}
			left := e.fake.Snapshots()
			if tc.leftOver {
				if len(left) != 1 || !strings.Contains(err.Error(), left[0]) {
					t.Fatalf("snapshots %v, error %v: want the one left named", left, err)
				}
			} else if len(left) != 0 {
				t.Fatalf("snapshots %v left over", left)
			}
			t.Log(err)
		})
	}
}

func TestPublishCancelledDeletesTheSnapshot(t *testing.T) {
	e := newEnv(t)
	image := synthetic(t)
	ctx, cancel := context.WithCancel(context.Background())
	e.fake.SnapshotNotFound(1 << 20) // every put fails until the cancel
	go func() {
		for e.fake.Calls("PutSnapshotBlock") == 0 {
			time.Sleep(time.Millisecond)
		}
		cancel()
	}()
	if _, err := e.publish(ctx, image); err == nil {
		t.Fatal("a cancelled publish succeeded")
	}
	if left := e.fake.Snapshots(); len(left) != 0 || len(e.fake.Images()) != 0 {
		t.Fatalf("snapshots %v and images %v left", left, e.fake.Images())
	}
}

func TestBuildChecksTheManifest(t *testing.T) {
	image := synthetic(t)
	if err := os.Truncate(image, 1<<20); err != nil {
		t.Fatal(err)
	}
	if _, err := publish.Build(image); err == nil || !strings.Contains(err.Error(), "not the image of this build") {
		t.Fatalf("err %v", err)
	}
}

// TestPublishBuiltImage publishes the real image (make image) and reads every block back. Heavy: gated with
// the end-to-end suites.
func TestPublishBuiltImage(t *testing.T) {
	if os.Getenv("KILN_E2E") != "1" || testing.Short() {
		t.Skip("set KILN_E2E=1 to publish the built image to the fake")
	}
	image, err := testenv.ImagePath()
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t)
	res, err := publish.Publish(context.Background(), e.ebs, e.ec2, "us-east-1", publish.Options{Image: image, Name: "kiln-node",
		PollInterval: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d blocks, %d sent, %d zero skipped (%d MiB) in %.1fs", res.Blocks, res.Sent, res.Skipped, res.SkippedBytes>>20, res.Seconds)
	readBack(t, e.ebs, res.SnapshotID, image)
	again, err := e.publish(context.Background(), image)
	if err != nil || !again.Reused || again.ImageID != res.ImageID {
		t.Fatalf("second publish %+v, %v", again, err)
	}
}

// Package publish is `kiln publish aws`: a built image into an AMI, by uploading the raw disk into an EBS
// snapshot (ebsupload) and registering it (ami). Publishing a build that already has an AMI finds it by its
// build-hash tag and uploads nothing. An AMI is only ever registered on a completed snapshot; a snapshot that
// does not become an AMI is deleted, or named in the error when that fails too.
package publish

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ebs"
	"github.com/aws/aws-sdk-go-v2/service/ec2"

	"github.com/kiln-project/kiln/builder"
	"github.com/kiln-project/kiln/cloud/aws/ami"
	"github.com/kiln-project/kiln/cloud/aws/ebsupload"
)

// Options configure a publish.
type Options struct {
	// Image is the raw image (out/node.raw); manifest.json beside it gives the build hash.
	Image string
	// Name is the AMI's name (unique per account and region) and Name tag.
	Name string
	// Upload tunes the snapshot upload (Path, Tags and Description are set here).
	Upload ebsupload.Options
	// PollInterval paces DescribeSnapshots while the snapshot completes (default 2 s); WaitTimeout bounds
	// that wait (default 30 min).
	PollInterval, WaitTimeout time.Duration
	Log                       *slog.Logger
}

// Result is the published AMI.
type Result struct {
	ImageID    string `json:"image_id"`
	Name       string `json:"name"`
	SnapshotID string `json:"snapshot_id"`
	Build      string `json:"build"`
	Region     string `json:"region"`
	// Reused reports that the build already had this AMI: nothing was uploaded.
	Reused bool `json:"reused"`
	// Blocks, Sent and Skipped count the image's 512 KiB blocks (zero when Reused); SkippedBytes is what the
	// zero-block skipping did not send.
	Blocks       int     `json:"blocks,omitempty"`
	Sent         int     `json:"sent_blocks,omitempty"`
	Skipped      int     `json:"skipped_zero_blocks,omitempty"`
	SkippedBytes int64   `json:"skipped_bytes,omitempty"`
	Seconds      float64 `json:"seconds"`
}

// Build reads the build hash from manifest.json beside image, and checks that the manifest describes this
// file (a manifest left from another build would tag the AMI with the wrong hash).
func Build(image string) (string, error) {
	path := filepath.Join(filepath.Dir(image), builder.ManifestFile)
	data, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("publish: the build's manifest: %w (publish an image kiln build wrote)", err)
	}
	var m builder.Manifest
	if err := json.Unmarshal(data, &m); err != nil {
		return "", fmt.Errorf("publish: %s: %w", path, err)
	}
	if m.Key == "" {
		return "", fmt.Errorf("publish: %s has no build key", path)
	}
	st, err := os.Stat(image)
	if err != nil {
		return "", fmt.Errorf("publish: %w", err)
	}
	for _, a := range m.Artifacts {
		if a.File == filepath.Base(image) {
			if a.Format != "raw" {
				return "", fmt.Errorf("publish: %s is format %s; EBS takes the raw image", image, a.Format)
			}
			if a.Size != st.Size() {
				return "", fmt.Errorf("publish: %s is %d bytes, %s says %d: not the image of this build", image, st.Size(), path, a.Size)
			}
			return m.Key, nil
		}
	}
	return "", fmt.Errorf("publish: %s lists no artifact %s", path, filepath.Base(image))
}

// Publish publishes the image to the account and region of cfg: ebsAPI and ec2API are usually
// ebs.NewFromConfig(cfg) and ec2.NewFromConfig(cfg) (see Clients).
func Publish(ctx context.Context, ebsAPI ebsupload.API, ec2API ami.API, region string, o Options) (*Result, error) {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.PollInterval <= 0 {
		o.PollInterval = 2 * time.Second
	}
	if o.WaitTimeout <= 0 {
		o.WaitTimeout = 30 * time.Minute
	}
	if o.Name == "" {
		return nil, errors.New("publish: the AMI needs a name")
	}
	start := time.Now()
	build, err := Build(o.Image)
	if err != nil {
		return nil, err
	}
	res := &Result{Name: o.Name, Build: build, Region: region}
	found, err := ami.Find(ctx, ec2API, build)
	if err != nil {
		return nil, fmt.Errorf("publish: %w", err)
	}
	if found != nil {
		o.Log.Info("build already published", "ami", found.ID, "name", found.Name, "build", build[:12])
		res.ImageID, res.Name, res.SnapshotID, res.Reused = found.ID, found.Name, found.SnapshotID, true
		res.Seconds = time.Since(start).Seconds()
		return res, nil
	}

	up := o.Upload
	up.Path, up.Log = o.Image, o.Log
	up.Description = fmt.Sprintf("kiln %s build %s", o.Name, build[:12])
	up.Tags = map[string]string{"Name": o.Name, ami.BuildTag: build}
	u, err := ebsupload.Upload(ctx, ebsAPI, up)
	res.SnapshotID = u.SnapshotID
	if err == nil {
		wctx, cancel := context.WithTimeout(ctx, o.WaitTimeout)
		err = ami.WaitSnapshot(wctx, ec2API, u.SnapshotID, o.PollInterval)
		cancel()
	}
	var im *ami.Image
	if err == nil {
		im, err = ami.Register(ctx, ec2API, ami.Spec{Name: o.Name, SnapshotID: u.SnapshotID, Build: build,
			Description: up.Description})
	}
	if err != nil {
		return nil, fmt.Errorf("publish: %w", discard(ctx, ec2API, u.SnapshotID, err, o.Log))
	}
	res.ImageID, res.Blocks, res.Sent, res.Skipped, res.SkippedBytes = im.ID, u.Blocks, u.Sent, u.Skipped, u.SkippedBytes()
	res.Seconds = time.Since(start).Seconds()
	o.Log.Info("published", "ami", im.ID, "snapshot", u.SnapshotID, "sent", u.Sent, "skipped_zero", u.Skipped)
	return res, nil
}

// discard deletes the snapshot of a failed publish and returns cause, naming the snapshot when it could not be
// deleted. It runs on its own short deadline: ctx may be what was cancelled.
func discard(ctx context.Context, api ami.API, id string, cause error, log *slog.Logger) error {
	if id == "" {
		return cause
	}
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if err := ami.DeleteSnapshot(dctx, api, id); err != nil {
		return fmt.Errorf("%w; the unfinished snapshot %s is left over, delete it by hand (aws ec2 delete-snapshot --snapshot-id %s): %v", cause, id, id, err)
	}
	log.Info("deleted the unfinished snapshot", "snapshot", id)
	return cause
}

// Clients returns the EBS and EC2 clients of cfg. The EBS client does not retry on its own: the uploader
// retries each block itself, and the SDK's retry quota, shared by all blocks, would otherwise turn a burst of
// throttling into failures.
func Clients(cfg aws.Config) (*ebs.Client, *ec2.Client) {
	e := ebs.NewFromConfig(cfg, func(o *ebs.Options) { o.Retryer = aws.NopRetryer{} })
	return e, ec2.NewFromConfig(cfg)
}

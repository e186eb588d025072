// Package ami turns a completed EBS snapshot into an AMI kiln nodes boot from, and finds the AMI of a build
// again by its build-hash tag, so publishing a build twice registers it once.
package ami

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/kiln-project/kiln/cloud/aws/awserr"
)

// BuildTag is the tag holding the build hash (manifest.json's key) on the AMI and its snapshot.
const BuildTag = "kiln:build"

// RootDevice is the root device name: what Nitro instances expose as the first NVMe namespace.
const RootDevice = "/dev/xvda"

// API is the part of *ec2.Client this package uses.
type API interface {
	DescribeImages(ctx context.Context, in *ec2.DescribeImagesInput, opts ...func(*ec2.Options)) (*ec2.DescribeImagesOutput, error)
	DescribeSnapshots(ctx context.Context, in *ec2.DescribeSnapshotsInput, opts ...func(*ec2.Options)) (*ec2.DescribeSnapshotsOutput, error)
	RegisterImage(ctx context.Context, in *ec2.RegisterImageInput, opts ...func(*ec2.Options)) (*ec2.RegisterImageOutput, error)
	DeleteSnapshot(ctx context.Context, in *ec2.DeleteSnapshotInput, opts ...func(*ec2.Options)) (*ec2.DeleteSnapshotOutput, error)
}

// Image is a found or registered AMI.
type Image struct {
	ID, Name, State string
	SnapshotID      string
}

// Find returns the AMI this account owns that carries BuildTag=build (nil when none). A failed or
// deregistered AMI does not count: publishing again must replace it.
func Find(ctx context.Context, api API, build string) (*Image, error) {
	out, err := api.DescribeImages(ctx, &ec2.DescribeImagesInput{Owners: []string{"self"},
		Filters: []types.Filter{{Name: aws.String("tag:" + BuildTag), Values: []string{build}}}})
	if err != nil {
		return nil, fmt.Errorf("ami: find build %s: %w", short(build), awserr.Explain(err, "ec2:DescribeImages"))
	}
	for _, im := range out.Images {
		if im.State == types.ImageStateAvailable || im.State == types.ImageStatePending {
			return image(im), nil
		}
	}
	return nil, nil
}

func image(im types.Image) *Image {
	out := &Image{ID: aws.ToString(im.ImageId), Name: aws.ToString(im.Name), State: string(im.State)}
	for _, m := range im.BlockDeviceMappings {
		if m.Ebs != nil && aws.ToString(m.DeviceName) == aws.ToString(im.RootDeviceName) {
			out.SnapshotID = aws.ToString(m.Ebs.SnapshotId)
		}
	}
	return out
}

// WaitSnapshot polls until the snapshot is completed, every interval, and fails when it ends in error or ctx
// ends first. EBS direct snapshots complete within seconds to minutes of CompleteSnapshot.
func WaitSnapshot(ctx context.Context, api API, id string, interval time.Duration) error {
	for {
		out, err := api.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{SnapshotIds: []string{id}})
		if err != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("ami: wait for snapshot %s: %w", id, ctx.Err())
			}
			return fmt.Errorf("ami: wait for snapshot %s: %w", id, awserr.Explain(err, "ec2:DescribeSnapshots"))
		}
		state := ""
		for _, s := range out.Snapshots {
			if aws.ToString(s.SnapshotId) == id {
				state = string(s.State)
				if s.State == types.SnapshotStateError {
					return fmt.Errorf("ami: snapshot %s failed: %s", id, aws.ToString(s.StateMessage))
				}
			}
		}
		if state == string(types.SnapshotStateCompleted) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("ami: wait for snapshot %s (still %q): %w", id, state, ctx.Err())
		case <-time.After(interval):
		}
	}
}

// Spec is what to register.
type Spec struct {
	Name, Description string
	SnapshotID        string
	// Build is the build hash for BuildTag.
	Build string
}

// Register registers an AMI booting the completed snapshot: x86_64, UEFI (kiln images boot systemd-boot from
// their ESP), ENA, IMDSv2 only (a node's user-data holds the cluster key: no unauthenticated metadata GETs),
// a gp3 root volume deleted with the instance, tagged Name and BuildTag.
func Register(ctx context.Context, api API, s Spec) (*Image, error) {
	tags := []types.Tag{{Key: aws.String("Name"), Value: aws.String(s.Name)}, {Key: aws.String(BuildTag), Value: aws.String(s.Build)}}
	in := &ec2.RegisterImageInput{
		Name:               aws.String(s.Name),
		Architecture:       types.ArchitectureValuesX8664,
		BootMode:           types.BootModeValuesUefi,
		EnaSupport:         aws.Bool(true),
		ImdsSupport:        types.ImdsSupportValuesV20,
		VirtualizationType: aws.String("hvm"),
		RootDeviceName:     aws.String(RootDevice),
		BlockDeviceMappings: []types.BlockDeviceMapping{{DeviceName: aws.String(RootDevice), Ebs: &types.EbsBlockDevice{
			SnapshotId: aws.String(s.SnapshotID), VolumeType: types.VolumeTypeGp3, DeleteOnTermination: aws.Bool(true)}}},
		TagSpecifications: []types.TagSpecification{{ResourceType: types.ResourceTypeImage, Tags: tags}},
	}
	if s.Description != "" {
		in.Description = aws.String(s.Description)
	}
	out, err := api.RegisterImage(ctx, in)
	if err != nil {
		return nil, fmt.Errorf("ami: register %s: %w", s.Name, awserr.Explain(err, "ec2:RegisterImage"))
	}
	return &Image{ID: aws.ToString(out.ImageId), Name: s.Name, State: string(types.ImageStatePending), SnapshotID: s.SnapshotID}, nil
}

// DeleteSnapshot deletes a snapshot that will not become an AMI. A snapshot already gone counts as deleted.
func DeleteSnapshot(ctx context.Context, api API, id string) error {
	_, err := api.DeleteSnapshot(ctx, &ec2.DeleteSnapshotInput{SnapshotId: aws.String(id)})
	if err != nil && !slices.Contains([]string{"InvalidSnapshot.NotFound"}, awserr.Code(err)) {
		return fmt.Errorf("ami: delete snapshot %s: %w", id, awserr.Explain(err, "ec2:DeleteSnapshot"))
	}
	return nil
}

func short(h string) string {
	if len(h) > 12 {
		return h[:12]
	}
	return strings.TrimSpace(h)
}

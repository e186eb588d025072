// Package awsconf loads the AWS SDK configuration kiln's AWS callers share: the standard credential chain
// (environment, shared config and profiles, instance role), an explicit region, profile and endpoint, HTTP
// timeouts, and a bounded retryer. It checks up front what would otherwise fail deep inside the first call:
// a missing region and missing credentials.
package awsconf

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"regexp"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
)

// Options select the account, region and endpoint. Zero values leave the SDK's own lookup in charge.
type Options struct {
	// Region overrides AWS_REGION and the profile's region.
	Region string
	// Profile names a profile of the shared config files (~/.aws/config, ~/.aws/credentials).
	Profile string
	// Endpoint sends every service's calls to this URL (a local fake, a VPC endpoint); "" uses AWS's.
	Endpoint string
	// IMDSEndpoint is the instance metadata service the credential chain asks for an instance role (tests,
	// the lab); "" is the SDK's default, 169.254.169.254.
	IMDSEndpoint string
	// Credentials replace the credential chain (tests).
	Credentials aws.CredentialsProvider
	// MaxAttempts bounds the SDK's own retries of one call (default 5; 1 leaves retrying to the caller).
	MaxAttempts int
	// CheckTimeout bounds the up-front credentials lookup (default 15 s: the chain may ask IMDS, which
	// times out off EC2).
	CheckTimeout time.Duration
}

// regionPattern is the shape of every AWS region name (us-east-1, ap-southeast-2, us-gov-west-1, eu-isoe-west-1).
var regionPattern = regexp.MustCompile(`^[a-z]{2}(-[a-z]+)+-[0-9]+$`)

// Load returns the SDK config, or an error naming the missing setting.
func Load(ctx context.Context, o Options) (aws.Config, error) {
	attempts := o.MaxAttempts
	if attempts == 0 {
		attempts = 5
	}
	opts := []func(*config.LoadOptions) error{
		config.WithHTTPClient(httpClient()),
		config.WithRetryer(func() aws.Retryer {
			if attempts == 1 {
				return aws.NopRetryer{}
			}
			return retry.NewStandard(func(so *retry.StandardOptions) {
				so.MaxAttempts = attempts
				so.MaxBackoff = 5 * time.Second
			})
		}),
	}
	if o.Region != "" {
		opts = append(opts, config.WithRegion(o.Region))
	}
	if o.Profile != "" {
		opts = append(opts, config.WithSharedConfigProfile(o.Profile))
	}
	if o.Endpoint != "" {
		opts = append(opts, config.WithBaseEndpoint(o.Endpoint))
	}
	if o.IMDSEndpoint != "" {
		opts = append(opts, config.WithEC2IMDSEndpoint(o.IMDSEndpoint))
	}
	if o.Credentials != nil {
		opts = append(opts, config.WithCredentialsProvider(o.Credentials))
	}
	cfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return aws.Config{}, fmt.Errorf("aws config: %w", err)
	}
	switch {
	case cfg.Region == "":
		return aws.Config{}, fmt.Errorf("aws config: no region: pass --region, set AWS_REGION, or give the profile a region")
	case !regionPattern.MatchString(cfg.Region):
		return aws.Config{}, fmt.Errorf("aws config: region %q is not a region name like eu-central-1", cfg.Region)
	}
	timeout := o.CheckTimeout
	if timeout == 0 {
		timeout = 15 * time.Second
	}
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if _, err := cfg.Credentials.Retrieve(cctx); err != nil {
		return aws.Config{}, fmt.Errorf("aws config: no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, pass --profile, or run with an instance role: %w", err)
	}
	return cfg, nil
}

// httpClient bounds connecting and waiting for headers; whole requests are bounded by their callers'
// per-request contexts, since a block upload's fair time depends on the link. A buildable client, so the
// SDK can still add a CA bundle (AWS_CA_BUNDLE, the profile's ca_bundle).
func httpClient() *awshttp.BuildableClient {
	return awshttp.NewBuildableClient().WithDialerOptions(func(d *net.Dialer) {
		d.Timeout = 10 * time.Second
	}).WithTransportOptions(func(t *http.Transport) {
		t.TLSHandshakeTimeout = 10 * time.Second
		t.ResponseHeaderTimeout = 60 * time.Second
		t.MaxIdleConnsPerHost = 64
	})
}

// Package awserr sorts AWS API errors into the ones worth another attempt and the ones that need a person,
// and words the latter so they name what to fix: the IAM action missing from a policy, the credentials, the
// region. kiln's AWS callers retry the first kind with bounded backoff and stop at once on the second.
package awserr

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
)

// Code is the AWS error code of err ("RequestLimitExceeded", "AccessDeniedException"), "" when err is not an
// API error.
func Code(err error) string {
	// The SDK's smithy.APIError and ec2node's own error both have ErrorCode.
	var api interface{ ErrorCode() string }
	if errors.As(err, &api) {
		return api.ErrorCode()
	}
	return ""
}

// denied are the codes of a refused permission (EBS, EC2, STS spell it differently).
var denied = map[string]bool{
	"AccessDenied": true, "AccessDeniedException": true, "UnauthorizedOperation": true, "UnauthorizedAccess": true,
}

// badCredentials are the codes of credentials the service does not accept.
var badCredentials = map[string]bool{
	"AuthFailure": true, "InvalidClientTokenId": true, "UnrecognizedClientException": true, "SignatureDoesNotMatch": true,
	"InvalidAccessKeyId": true, "ExpiredToken": true, "ExpiredTokenException": true, "RequestExpired": true,
}

// Transient reports whether another attempt of the same request may succeed: throttling, server errors,
// broken connections and timeouts of the attempt itself (not of ctx, the caller's whole budget).
func Transient(ctx context.Context, err error) bool {
	if err == nil || ctx.Err() != nil || Permanent(err) {
		return false
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return true // the attempt's own timeout: ctx is still alive
	}
	for _, r := range retry.DefaultRetryables {
		if r.IsErrorRetryable(err) == aws.TrueTernary {
			return true
		}
	}
	return false
}

// Permanent reports whether err needs a person before any retry can succeed: a refused permission, missing or
// rejected credentials, an endpoint whose name does not resolve (a wrong region).
func Permanent(err error) bool {
	c := Code(err)
	if denied[c] || badCredentials[c] || noCredentials(err) {
		return true
	}
	var dns *net.DNSError
	return errors.As(err, &dns) && dns.IsNotFound
}

// noCredentials reports the SDK's "no credentials found" failure, which it wraps as text inside the operation
// error.
func noCredentials(err error) bool {
	s := err.Error()
	return strings.Contains(s, "get credentials") || strings.Contains(s, "retrieve credentials") ||
		strings.Contains(s, "failed to refresh cached credentials")
}

// Explain rewords a permanent error of the API call made for IAM action (e.g. "ebs:PutSnapshotBlock") so it
// says what to change; other errors come back unchanged.
func Explain(err error, action string) error {
	if err == nil {
		return nil
	}
	c := Code(err)
	var dns *net.DNSError
	switch {
	case denied[c]:
		return fmt.Errorf("access denied: the credentials may not call %s; add it to their IAM policy (docs/aws.md lists the minimal policies): %w", action, err)
	case badCredentials[c]:
		return fmt.Errorf("the AWS credentials were rejected (%s): check the access key, the profile, or the clock; or the region: %w", c, err)
	case noCredentials(err):
		return fmt.Errorf("no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, pass --profile, or run with an instance role: %w", err)
	case errors.As(err, &dns) && dns.IsNotFound:
		return fmt.Errorf("the endpoint %s does not resolve: is the region right (--region, AWS_REGION)? %w", dns.Name, err)
	}
	return err
}

package ec2node

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"

	"github.com/kiln-project/kiln/cloud/aws/awserr"
)

// The agent speaks EC2's query API itself (a signed form POST, an XML answer) for its three calls instead of
// linking the SDK's EC2 client: that client is ~55 MB of binary, which every node image would carry.

// apiVersion is the EC2 query API version the calls are written against.
const apiVersion = "2016-11-15"

// attempts bounds the tries of one call that fails transiently (throttling, 5xx, no answer).
const attempts = 4

// APIError is an error answer of the EC2 API. It has the methods the SDK's error checks look for, so
// awserr classifies and explains it like an SDK error.
type APIError struct {
	Status        int
	Code, Message string
}

func (e *APIError) Error() string {
	return fmt.Sprintf("api error %s (%d): %s", e.Code, e.Status, e.Message)
}
func (e *APIError) ErrorCode() string    { return e.Code }
func (e *APIError) ErrorMessage() string { return e.Message }
func (e *APIError) HTTPStatusCode() int  { return e.Status }

// call runs one EC2 action with params and decodes the answer into out, retrying transient failures.
func (n *Node) call(ctx context.Context, action string, params url.Values, out any) error {
	region, err := n.regionOnce(ctx)
	if err != nil {
		return err
	}
	endpoint := n.opts.Endpoint
	if endpoint == "" {
		endpoint = os.Getenv("AWS_ENDPOINT_URL_EC2")
	}
	if endpoint == "" {
		endpoint = "https://ec2." + region + ".amazonaws.com"
	}
	form := url.Values{"Action": {action}, "Version": {apiVersion}}
	for k, v := range params {
		form[k] = v
	}
	body := []byte(form.Encode())
	backoff := 500 * time.Millisecond
	for attempt := 1; ; attempt++ {
		err = n.post(ctx, endpoint, region, body, out)
		if err == nil || attempt == attempts || !awserr.Transient(ctx, err) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(backoff/2 + rand.N(backoff/2+1)):
		}
		backoff *= 2
	}
}

func (n *Node) post(ctx context.Context, endpoint, region string, body []byte, out any) error {
	creds, err := n.credentials(ctx)
	if err != nil {
		return err
	}
	rctx, cancel := context.WithTimeout(ctx, RequestTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodPost, strings.TrimSuffix(endpoint, "/")+"/", bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")
	sum := sha256.Sum256(body)
	if err := v4.NewSigner().SignHTTP(rctx, creds, req, hex.EncodeToString(sum[:]), "ec2", region, time.Now()); err != nil {
		return fmt.Errorf("sign: %w", err)
	}
	resp, err := n.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		var e struct {
			Errors []struct {
				Code    string `xml:"Code"`
				Message string `xml:"Message"`
			} `xml:"Errors>Error"`
		}
		if xml.Unmarshal(data, &e) == nil && len(e.Errors) > 0 {
			return &APIError{Status: resp.StatusCode, Code: e.Errors[0].Code, Message: e.Errors[0].Message}
		}
		return &APIError{Status: resp.StatusCode, Code: http.StatusText(resp.StatusCode), Message: strings.TrimSpace(string(data[:min(len(data), 200)]))}
	}
	if err := xml.Unmarshal(data, out); err != nil {
		return fmt.Errorf("decode the answer: %w", err)
	}
	return nil
}

func (n *Node) regionOnce(ctx context.Context) (string, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.region != "" {
		return n.region, nil
	}
	r, err := n.md.String(ctx, "meta-data/placement/region")
	if err != nil {
		return "", fmt.Errorf("ec2: region from IMDS: %w", err)
	}
	n.region = r
	return r, nil
}

// credentials are Options.Credentials, else the environment's (AWS_ACCESS_KEY_ID …), else the instance
// role's from IMDS, kept until five minutes before they expire.
func (n *Node) credentials(ctx context.Context) (aws.Credentials, error) {
	if n.opts.Credentials != nil {
		return n.opts.Credentials.Retrieve(ctx)
	}
	if id, secret := os.Getenv("AWS_ACCESS_KEY_ID"), os.Getenv("AWS_SECRET_ACCESS_KEY"); id != "" && secret != "" {
		return aws.Credentials{AccessKeyID: id, SecretAccessKey: secret, SessionToken: os.Getenv("AWS_SESSION_TOKEN")}, nil
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.creds.HasKeys() && time.Until(n.creds.Expires) > 5*time.Minute {
		return n.creds, nil
	}
	role, err := n.md.String(ctx, "meta-data/iam/security-credentials/")
	if err != nil {
		return aws.Credentials{}, fmt.Errorf("ec2: no instance role (launch with an instance profile, docs/aws.md): %w", err)
	}
	role, _, _ = strings.Cut(role, "\n")
	data, err := n.md.Get(ctx, "meta-data/iam/security-credentials/"+role)
	if err != nil {
		return aws.Credentials{}, fmt.Errorf("ec2: credentials of role %s: %w", role, err)
	}
	var c struct {
		Code, AccessKeyID, SecretAccessKey, Token string
		Expiration                                time.Time
	}
	if err := json.Unmarshal(data, &c); err != nil {
		return aws.Credentials{}, fmt.Errorf("ec2: credentials of role %s: %w", role, err)
	}
	if c.Code != "Success" || c.AccessKeyID == "" {
		return aws.Credentials{}, errors.New("ec2: credentials of role " + role + ": " + c.Code)
	}
	n.creds = aws.Credentials{AccessKeyID: c.AccessKeyID, SecretAccessKey: c.SecretAccessKey, SessionToken: c.Token,
		CanExpire: true, Expires: c.Expiration, Source: "imds role " + role}
	return n.creds, nil
}

package config

import (
	"net/url"
	"strings"
)

// AWS is the aws section: how the agent reaches the EC2 API for peers by tag (cluster.discovery.aws_tag) and
// the VIP's assignment (cluster.vip_aws).
type AWS struct {
	// Endpoint is the EC2 API's base URL: a VPC interface endpoint's DNS name for instances in a subnet with
	// no route to the internet (no NAT gateway), a private API endpoint, or a test's fake. "" asks the
	// region's public endpoint (https://ec2.REGION.amazonaws.com), unless the agent's environment names one
	// (AWS_ENDPOINT_URL_EC2).
	Endpoint string
}

// fileAWS is the aws section on disk.
type fileAWS struct {
	Endpoint string `yaml:"endpoint"`
}

// validate returns the section's AWS; every problem goes to bad. uses says whether anything in the config
// calls EC2: an endpoint nothing calls is a mistake worth a word (a misplaced discovery section, a typo'd
// vip_aws), not a setting to accept silently.
func (f fileAWS) validate(uses bool, bad func(field, format string, args ...any)) AWS {
	if f.Endpoint == "" {
		return AWS{}
	}
	const example = "https://vpce-0a1b2c3d4e5f67890-abcdefgh.ec2.eu-central-1.vpce.amazonaws.com"
	u, err := url.Parse(f.Endpoint)
	switch {
	case err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.Opaque != "":
		bad("aws.endpoint", "%q: want the EC2 API's http(s):// URL, like %s", f.Endpoint, example)
	case u.User != nil:
		bad("aws.endpoint", "%q: no user:password in the URL: EC2 calls are signed with the instance role's credentials", f.Endpoint)
	case (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || u.ForceQuery:
		bad("aws.endpoint", "%q: want scheme and host only (the EC2 API answers at /), like %s", f.Endpoint, example)
	case !uses:
		bad("aws.endpoint", "set, but nothing in this config calls EC2: it is for cluster.discovery.aws_tag and cluster.vip_aws")
	default:
		return AWS{Endpoint: u.Scheme + "://" + strings.ToLower(u.Host)}
	}
	return AWS{}
}

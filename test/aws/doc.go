// Package aws is the end-to-end proof of kiln nodes on EC2, with the AWS API as the one boundary faked
// (cloud/aws/awsfake): lab nodes whose firmware says EC2 read their config from user-data through IMDS,
// find each other by tag through the fake EC2 on a network with no broadcast or multicast, form, and move the
// VIP's assignment in EC2 when its holder dies. The test is in this package's _test file (KILN_E2E=1, make e2e).
package aws

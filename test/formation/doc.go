// Package formation is the end-to-end proof that fresh kiln nodes find each other and form Docker Swarm,
// a replica-3 GlusterFS volume and a floating VIP with no hands: helpers to generate a cluster config, observe
// nodes of a lab (agent status, swarm, gluster, VIP), scan ports from the lab host, reach services through the
// lab namespace, and pack a test service as a docker image without a registry.
//
// The tests live in this package's _test files (gated by KILN_E2E=1, chaos by KILN_CHAOS=1); bench/form is the
// `make bench-form` program; testsvc the static HTTP service the proof deploys.
package formation

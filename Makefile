# kiln — build, test and benchmark entry points. See README.md.
SHELL := /bin/bash
GO ?= go
OUT ?= out
SPEC ?= images/node.yaml
BIN := bin
export CGO_ENABLED := 0
# Reproducible binaries: no build id, no paths. Go stamps the commit and its date (-buildvcs=auto, explicit
# because a host's GOFLAGS may say false), and VERSION is the nearest v* tag (`kiln version`): both name the
# source, not the build, so one commit still gives the same bytes (and the same node layer).
VERSION ?= $(shell git describe --tags --match 'v*' 2>/dev/null || echo dev)
GOFLAGS_BUILD := -trimpath -buildvcs=auto -ldflags "-s -w -buildid= -X github.com/kiln-project/kiln/internal/version.version=$(VERSION)"

# Host packages kiln needs on a fresh Debian 12 machine (builder, lab, tests).
DEB_PACKAGES := mmdebstrap squashfs-tools erofs-utils qemu-system-x86 qemu-utils ovmf dnsmasq-base \
	mtools dosfstools docker.io iproute2 nftables openssh-client eatmydata zstd cpio \
	systemd-boot-efi ca-certificates fdisk keepalived glusterfs-server glusterfs-client ipxe \
	grub-pc-bin grub-efi-amd64-bin xorriso

.PHONY: all deps build image test unit fuzz e2e e2e-healing lint chaos bench bench-build bench-lab bench-form bench-form-native bench-heal bench-ingress bench-pxe bench-publish clean

all: build

# apt-get update runs once per machine (stamp), install is a no-op when everything is present.
deps:
	@missing=$$(for p in $(DEB_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing:" $$missing; \
	  [ -f /var/lib/apt/periodic/kiln-updated ] || { apt-get update && mkdir -p /var/lib/apt/periodic && touch /var/lib/apt/periodic/kiln-updated; }; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $$missing; \
	fi

build:
	@mkdir -p $(BIN)
	$(GO) build $(GOFLAGS_BUILD) -o $(BIN)/kiln ./cmd/kiln
	$(GO) build $(GOFLAGS_BUILD) -o $(BIN)/kiln-firstboot ./cmd/kiln-firstboot
	$(GO) build $(GOFLAGS_BUILD) -o $(BIN)/kiln-install ./cmd/kiln-install

# The main job: the default node image in the spec's formats (out/node.raw, node.qcow2, node.iso, pxe/),
# manifest.json, SHA256SUMS.
image: deps build
	$(BIN)/kiln build $(SPEC) --out $(OUT)

lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); exit 1; }
	$(GO) vet ./...

unit:
	$(GO) test -count=1 -short ./...

# End-to-end suites on real qemu VMs booted from out/node.raw under TCG. E2E_CI lists those make test runs: only
# suites that pass on this machine kind go here (docs/testing.md). The lab's own e2e (./lab: TestE2E) runs in
# make e2e: make test keeps to its budget, and the healing chain drives kill, start and reimage of real nodes
# through the same lab code; TestPlumbing checks every verb over a blank disk in the unit phase.
E2E_ALL := ./builder/boottest ./lab ./pxe ./test/formation ./test/aws
E2E_CI ?= ./builder/boottest ./test/formation
E2E_ENV = KILN_E2E=1 KILN_IMAGE=$(CURDIR)/$(OUT)/node.raw KILN_BIN=$(CURDIR)/$(BIN)

# Every test: unit tests (with real dockerds, glusterds, nft and network namespaces), then the end-to-end suites
# one package at a time, since two groups of qemu guests under TCG on two cores would starve each other.
# Self-healing scenarios 1-2 (node loss and back) and 5 (reimage) run on the formation proof's own cluster
# (TestFormation with KILN_HEALING=1): one formation serves both, which keeps CI inside its budget. The power cut
# (3: three more TCG boots, healed in under a minute) runs in make e2e-healing. CI_HEALING= leaves them out.
CI_HEALING ?= 1
test: deps image lint
	KILN_DOCKER_TESTS=1 KILN_GLUSTER_TESTS=1 $(GO) test -p 1 -count=1 -timeout 20m ./...
	$(MAKE) fuzz
	$(if $(strip $(E2E_CI)),$(E2E_ENV) KILN_HEALING=$(CI_HEALING) $(GO) test -p 1 -count=1 -timeout 80m -v $(E2E_CI))

# All end-to-end suites (boot test, lab, cluster formation, nodes on a faked EC2), and formation beyond three
# nodes (a five-node lab that forms and survives a node loss: KILN_E2E_LARGE, too long for make test).
# make e2e also boots node.vmdk: the spec's formats plus vmdk (only the formats stage runs again).
E2E_FORMATS := raw,qcow2,pxe,iso,vmdk
e2e: deps image
	$(BIN)/kiln build $(SPEC) --out $(OUT) --format $(E2E_FORMATS)
	$(E2E_ENV) KILN_E2E_LARGE=1 $(GO) test -p 1 -count=1 -timeout 3h -v $(E2E_ALL)

# Fuzzing of what strangers and key holders can send or leave on a disk, FUZZTIME per target (make test runs
# it): election messages, formation records, discovery beacons, the ESP's FAT32. A failing input is written
# to the package's testdata/fuzz/ and fails the run; commit it with the fix so it stays a regression test.
FUZZTIME ?= 10s
FUZZ_TARGETS := ./firstboot/election:FuzzHandle ./firstboot:FuzzFormationRecord \
	./firstboot/discovery:FuzzDecodeBeacon ./firstboot/config:FuzzReadFAT
fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
	  echo "fuzz $${t##*:} ($${t%%:*}) for $(FUZZTIME)"; \
	  $(GO) test -run '^$$' -fuzz "^$${t##*:}$$" -fuzztime $(FUZZTIME) $${t%%:*}; \
	done

# Long suites and benchmarks: not part of make test.
# Every self-healing scenario once: 1-5, 7, 8 chained on one formation, replacement (6) on its own lab.
HEAL_ENV = KILN_E2E=1 KILN_HEALING=1 KILN_IMAGE=$(CURDIR)/$(OUT)/node.raw KILN_BIN=$(CURDIR)/$(BIN)
e2e-healing: build
	$(HEAL_ENV) $(GO) test -p 1 -count=1 -timeout 4h30m -v -run 'TestChain$$|TestReplacement$$' ./test/healing/

# Everything that breaks things on purpose: the healing scenarios, HEAL_REPEAT more runs of 1, 3 and 5 each on
# a fresh lab, then the formation chaos (10 simultaneous cold starts, agent kills during formation). Many hours.
HEAL_REPEAT ?= 3
chaos: build e2e-healing
	$(HEAL_ENV) $(GO) test -p 1 -count=$(HEAL_REPEAT) -timeout 10h -v -run 'TestNodeLoss$$|TestPowerCut$$|TestReimage$$' ./test/healing/
	KILN_CHAOS=1 KILN_IMAGE=$(CURDIR)/$(OUT)/node.raw KILN_BIN=$(CURDIR)/$(BIN) \
	  $(GO) test -p 1 -count=1 -timeout 6h -run TestChaos -v ./test/formation/

# kiln build vs mkosi 14 (same package set, same machine, one run): cold/warm/one-overlay-file rebuild times and
# image sizes in one table. ~30+ min; quick check: go run ./bench/build -skip-mkosi -seed-cache ~/.cache/kiln -drop-caches=false
bench-build: build
	$(GO) run ./bench/build -kiln $(BIN)/kiln -spec $(SPEC)

# Every benchmark, one after the other (never in parallel: they would skew each other's times).
bench:
	$(MAKE) bench-build
	$(MAKE) bench-lab
	$(MAKE) bench-form
	$(MAKE) bench-form-native
	$(MAKE) bench-heal
	$(MAKE) bench-ingress
	$(MAKE) bench-pxe
	$(MAKE) bench-publish

# Netboot vs disk boot of the same build, three netboots at once, the layers' RAM in a node, and kiln pxe serve's
# throughput (bench/pxe). ~10 min.
bench-pxe: build
	$(GO) run ./bench/pxe -image $(OUT)/node.raw -pxe-dir $(OUT)/pxe -kiln $(BIN)/kiln

# kiln publish aws's upload of out/node.raw to the local AWS fake vs reading and hashing the image, and what
# zero-block skipping saves (bench/publish). ~1 min.
bench-publish:
	$(GO) run ./bench/publish -image $(OUT)/node.raw

bench-lab: build
	$(GO) run ./bench/lab -image $(OUT)/node.raw

bench-form: build
	$(GO) run ./bench/form -image $(OUT)/node.raw

# Formation at native speed: three whole agents (discovery, election, swarm, volume, VIP) with real dockerds,
# glusterds and keepalived in network and mount namespaces on this host (bench/agents: formed after the third
# agent start, target <= 10 s), and the swarm and storage halves alone through the real reconcilers, RUNS
# formations each. A few minutes; run it on an idle machine.
bench-form-native:
	KILN_DOCKER_TESTS=1 KILN_GLUSTER_TESTS=1 $(GO) test -run '^$$' -bench 'BenchmarkFormationReal|BenchmarkWholeAgentFormation' \
	  -benchtime 1x -count $(RUNS) ./firstboot/swarm ./firstboot/gluster ./bench/agents

# Self-healing figures (VIP gap, storage stall, service back, reimage to redundancy), medians of RUNS runs per
# scenario on one lab. Hours under TCG: RUNS=1 SCENARIOS=loss for a quick look.
RUNS ?= 3
SCENARIOS ?= loss,cut,reimage
bench-heal: build
	KILN_BIN=$(CURDIR)/$(BIN) $(GO) run ./bench/heal -image $(OUT)/node.raw -runs $(RUNS) -scenarios $(SCENARIOS)

# The front door (bench/ingress): formed → first valid HTTPS answer through the VIP (certificate from Pebble, the
# ACME test CA on the lab host) and HTTPS requests per second through the VIP from the lab host. Needs an image
# preloading Traefik (images/node.yaml does). Takes the VM lock (VM_LOCK) once its own builds are done. ~20 min.
VM_LOCK ?= /tmp/kiln-vm.lock
bench-ingress: build
	$(GO) run ./bench/ingress -image $(OUT)/node.raw -lock $(VM_LOCK)

clean:
	rm -rf $(BIN) $(OUT)

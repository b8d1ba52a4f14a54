# kvmlab: the two commands a newcomer needs are `make run` and `make test`.
SHELL := /bin/bash
export PATH := $(PATH):/usr/local/go/bin
CACHE ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/kvmlab
BIN := bin/kvmlab
GO_SOURCES := $(shell find . -name '*.go' -not -path './.git/*') go.mod go.sum

.PHONY: run test deps guest build unit integration fuzz lint bench bench-go clean

## run: install what is missing, build the guest kernel and initramfs (cached),
## and boot the default guest on this terminal (via the emulated host when
## this machine has no /dev/kvm). Ctrl-A x quits; `poweroff` in the guest ends it.
run: deps guest build
	@if $(BIN) check >/dev/null 2>&1; then exec $(BIN) run; else \
	  echo "kvmlab: no usable /dev/kvm here: booting inside the emulated host (QEMU TCG with nested SVM); this takes a minute" >&2; \
	  exec $(BIN) run --emulated-host; fi

## test: every test: lint, unit tests, fuzzers (short), and the integration
## tests that boot real guests (on /dev/kvm, or inside the emulated host).
test: deps guest build lint unit fuzz integration

deps:
	@bash tests/deps.sh

guest: deps
	@k=$$(bash kernel-config/build.sh | tail -1) && i=$$(bash guest/build.sh | tail -1) && \
	  mkdir -p $(CACHE)/default && ln -sf $$k/bzImage $(CACHE)/default/bzImage && \
	  ln -sf $$k/vmlinux $(CACHE)/default/vmlinux && ln -sf $$k/System.map $(CACHE)/default/System.map && \
	  ln -sf $$i $(CACHE)/default/initramfs.cpio && echo "guest: ready in $(CACHE)/default" >&2

# -buildvcs=auto: kvmlab --version prints the VCS revision the binary was
# built from, and a GOFLAGS=-buildvcs=false in the environment (as on these
# machines) would leave it out.
build: $(BIN)
$(BIN): $(GO_SOURCES)
	CGO_ENABLED=0 go build -buildvcs=auto -o $(BIN) ./cmd/kvmlab

lint:
	@test -z "$$(gofmt -l . | tee /dev/stderr)" || { echo "gofmt: files above need formatting" >&2; exit 1; }
	go vet ./...
	go run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...

unit:
	KVMLAB_TEST_BZIMAGE=$(CACHE)/default/bzImage go test -count=1 -timeout 25m $$(go list ./... | grep -v /tests$$)

# 6 s a target in make test: with 44 targets that is under 5 minutes, and
# the suite stays under 45 minutes on a fresh machine. Fuzz longer by hand:
# make fuzz FUZZTIME=5m.
FUZZTIME ?= 6s
# Each fuzz target runs for FUZZTIME, all of it spent generating inputs:
# -fuzzminimizetime=0 turns off the minimisation of each new interesting
# input, which by default (60 s) ate most of a 10 s budget. A failing input is
# written as found, under testdata/fuzz, and fails the build; so does any
# other non-zero exit.
# The fuzzing engine runs from Go 1.27 (fetched once through the module
# proxy): Go 1.26's coordinator can report its own -fuzztime deadline as a
# failure ("context deadline exceeded", no input written) when the deadline
# fires before the workers' context is cancelled (golang/go#75804, fixed in
# 1.27's internal/fuzz). With the fixed engine no deadline needs excusing.
FUZZ_GO ?= GOTOOLCHAIN=go1.27.1 go
fuzz:
	@for t in $$(grep -rl --include='*_test.go' '^func Fuzz' . | xargs -n1 dirname | sort -u); do \
	  for f in $$(grep -ho '^func Fuzz[A-Za-z0-9_]*' $$t/*_test.go | cut -c6-); do \
	    echo "fuzz: $$t $$f for $(FUZZTIME)"; \
	    out=$$($(FUZZ_GO) test -run='^$$' -fuzz="^$$f$$" -fuzztime=$(FUZZTIME) -fuzzminimizetime=0 $$t 2>&1); rc=$$?; \
	    echo "$$out" | grep -E '^fuzz: elapsed' | tail -1; echo "$$out" | tail -1; \
	    if [ $$rc -ne 0 ]; then echo "$$out"; exit 1; fi; \
	  done; done

integration: build guest
	KVMLAB_BIN=$(abspath $(BIN)) KVMLAB_GUEST_DIR=$(CACHE)/default CGO_ENABLED=0 go test -count=1 -v -timeout 75m ./tests/

## bench: kvmlab vs QEMU (q35, microvm) vs gokvm on the same guest, interleaved:
## boot, console, memory, exits (kvmlab bench; inside the emulated host when
## there is no /dev/kvm). RUNS=5 for more boots per VMM.
RUNS ?= 3
bench: build guest
	$(BIN) bench --runs $(RUNS)

## bench-go: the Go benchmarks of the boot (BenchmarkBoot) and the exit path.
BENCHTIME ?= 3x
bench-go: build guest
	KVMLAB_BIN=$(abspath $(BIN)) KVMLAB_GUEST_DIR=$(CACHE)/default CGO_ENABLED=0 go test -count=1 -v -run '^$$' -bench Boot -benchtime $(BENCHTIME) -timeout 60m ./tests/

clean:
	rm -rf bin

# moerun: build, run and test with Go and gcc alone.
GO        ?= go
export CGO_ENABLED := 1
# go-nvml's bundled NVML header marks old entry points deprecated; its first compile would
# print pages of warnings for calls we never make.
export CGO_CFLAGS ?= -O2 -g -Wno-deprecated-declarations

# Tests run with the race detector; TESTFLAGS adds more (e.g. TESTFLAGS=-run=Conformance).
TESTFLAGS ?=

.PHONY: all build run test lint clean bench-cpu bench-gpu

all: build

build:
	$(GO) build -o bin/launch ./cmd/launch
	$(GO) build -o bin/worker ./cmd/worker
	$(GO) build -o bin/benchreport ./cmd/benchreport
	$(GO) build -o bin/layouts ./cmd/layouts

# The demo: four CPU ranks (tp 2 × dp 2, expert parallel, so sequence-parallel MoE) run a
# DeepSeek-style layer and check every output row against the float64 reference.
run: build
	bin/launch -np 4 --tp 2 --dp 2 --ep bin/worker run --preset tiny-deepseek --check

test: lint
	$(GO) test -race -timeout 9m $(TESTFLAGS) ./...

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt wants to change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

# The CPU backend beside Open MPI at 64 MiB on 4 ranks (docs/PERFORMANCE.md); needs
# Debian's openmpi-bin and libopenmpi-dev.
bench-cpu: build
	bench/cpu-vs-openmpi.sh 4 64M 3

# moerun beside PyTorch on a GPU host (bench/gpu.sh; OUT=DIR, NP (default 2), PRESETS, TOKENS).
# The GPU hosts have no Go: build here (make build), carry bin/ and .gpu/bench there, run
# it there. So this target does not build.
bench-gpu:
	@missing=; for b in bin/worker bin/launch bin/benchreport; do [ -x $$b ] || missing="$$missing $$b"; done; \
	if [ -n "$$missing" ]; then echo "bench-gpu:$$missing missing: run 'make build' on a machine with Go and carry bin/ here" >&2; exit 1; fi
	bench/gpu.sh $(OUT)

clean:
	rm -rf bin

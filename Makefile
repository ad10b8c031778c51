# moerun: build, run and test with Go and gcc alone.
GO        ?= go
export CGO_ENABLED := 1

# Tests run with the race detector; TESTFLAGS adds more (e.g. TESTFLAGS=-run=Conformance).
TESTFLAGS ?=

.PHONY: all build run test lint clean bench-cpu

all: build

build:
	$(GO) build -o bin/launch ./cmd/launch
	$(GO) build -o bin/worker ./cmd/worker

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

clean:
	rm -rf bin

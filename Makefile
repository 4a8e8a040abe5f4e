# Makefile: a thin front over CMake (CMakeLists.txt holds the build).
#
#   make            install missing Debian packages, configure build/ (-O2 -g) and build
#   make run        build, then run a local 3-member cluster in the foreground (Ctrl-C stops it)
#   make test       build build/, build-asan/ (ASan+UBSan) and build-fuzz/, run ctest in each
#   make fuzz       build the libFuzzer targets with clang in build-fuzz/
#   make node-deps  install tests/node's packages (etcd3, grpc-js) from the npm registry
#   make clean      remove every build directory
#
# Binaries land in build/bin/. Options go to CMake through CMAKE_FLAGS, e.g.
#   make CMAKE_FLAGS=-DCAIRN_BUILD_BENCH=OFF
# and ASAN_SIM_SCALE sets the share of simulator seeds run under ASan (default 0.25).

JOBS ?= 2
CMAKE ?= cmake
CTEST ?= ctest
CMAKE_FLAGS ?=
ASAN_SIM_SCALE ?= 0.25

BUILD := build
BUILD_ASAN := build-asan
BUILD_FUZZ := build-fuzz

CONFIG_build := -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_FLAGS_RELWITHDEBINFO="-O2 -g"
CONFIG_build-asan := -DCMAKE_BUILD_TYPE=Debug -DCMAKE_C_FLAGS_DEBUG="-O1 -g" \
	-DCAIRN_SANITIZE=ON -DCAIRN_SIM_SCALE=$(ASAN_SIM_SCALE)
CONFIG_build-fuzz := -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=Debug \
	-DCMAKE_C_FLAGS_DEBUG="-O1 -g" -DCAIRN_BUILD_FUZZ=ON \
	-DCAIRN_BUILD_TESTS=OFF -DCAIRN_BUILD_BENCH=OFF

.DEFAULT_GOAL := build
MAKEFLAGS += --no-print-directory
.PHONY: build build-asan all run test fuzz deps node-deps clean FORCE

all: build

deps:
	@scripts/deps.sh

# A build directory is configured when it is new or its CMake flags changed (they are recorded in
# <dir>/.configured); otherwise `cmake --build` re-runs CMake by itself whenever a CMakeLists.txt
# or a globbed directory changes. CMake's chatter goes to <dir>/configure.log, shown on failure.
%/.configured: FORCE | deps
	@flags='$(CONFIG_$*) $(CMAKE_FLAGS)'; \
	if [ "$$(cat $@ 2>/dev/null)" != "$$flags" ]; then \
		mkdir -p $* && \
		{ $(CMAKE) -S . -B $* $(CONFIG_$*) $(CMAKE_FLAGS) >$*/configure.log || \
			{ cat $*/configure.log; exit 1; }; } && \
		echo "$$flags" >$@; \
	fi

FORCE:

build: deps $(BUILD)/.configured
	@$(CMAKE) --build $(BUILD) -j$(JOBS)

build-asan: deps $(BUILD_ASAN)/.configured
	@$(CMAKE) --build $(BUILD_ASAN) -j$(JOBS)

# A local 3-member cluster in the foreground (scripts/run-cluster.sh): member-prefixed logs, the
# endpoints and a first etcdctl command printed, a clean stop on Ctrl-C. Data in build/run.
run: build
	@if [ ! -x $(BUILD)/bin/cairn ]; then \
		echo "make run: $(BUILD)/bin/cairn is not built" >&2; \
		exit 1; \
	fi
	@scripts/run-cluster.sh $(BUILD)/bin/cairn

# All builds first, then every test run; a failure in any fails `make test`. The fuzz build
# contributes a short libFuzzer run of each target (fuzz_<name>-smoke).
test: build build-asan fuzz node-deps
	@rc=0; \
	echo "== ctest: $(BUILD) (RelWithDebInfo)"; \
	$(CTEST) --test-dir $(BUILD) --output-on-failure -j$(JOBS) || rc=1; \
	echo "== ctest: $(BUILD_ASAN) (ASan+UBSan, simulator seeds x$(ASAN_SIM_SCALE))"; \
	$(CTEST) --test-dir $(BUILD_ASAN) --output-on-failure -j$(JOBS) || rc=1; \
	echo "== ctest: $(BUILD_FUZZ) (libFuzzer smoke runs)"; \
	$(CTEST) --test-dir $(BUILD_FUZZ) --output-on-failure -j$(JOBS) || rc=1; \
	if [ $$rc -ne 0 ]; then echo "make test: FAILED (see above)" >&2; fi; \
	exit $$rc

# The Node.js client packages of tests/node (a second gRPC stack: etcd3 on grpc-js).
node-deps:
	@scripts/node-deps.sh

fuzz: deps $(BUILD_FUZZ)/.configured
	@$(CMAKE) --build $(BUILD_FUZZ) -j$(JOBS)

clean:
	@rm -rf $(BUILD) $(BUILD_ASAN) $(BUILD_FUZZ)

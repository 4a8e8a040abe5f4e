#!/usr/bin/env bash
# deps.sh: install the Debian packages Cairn builds and tests with, only those missing.
#
# Silent and fast when everything is present (one dpkg query per package). Otherwise runs
# `apt-get update` once and installs the missing packages, as root or through sudo.
# Usage: scripts/deps.sh            (make runs it before every build)
set -euo pipefail

packages=(
	build-essential
	cmake
	pkg-config
	clang            # libFuzzer targets (make fuzz, make test)
	libclang-rt-14-dev # the libFuzzer and sanitizer runtimes clang links
	libuv1-dev       # event loop: net/, server/, client/
	libprotobuf-c-dev
	protobuf-c-compiler
	liblmdb-dev      # kvstore/
	libssl-dev       # TLS
	libnghttp2-dev   # gRPC over HTTP/2
	libcmocka-dev    # tests/unit
	etcd-server      # a real etcd 3.4: integration and conformance tests compare against it
	etcd-client      # etcdctl: integration, conformance and tests/unit/test_grpc_uv run it
	libyaml-dev      # YAML --config-file (server/config.c)
	gnuplot-nox      # cairn-bench --plot
	iproute2         # cairn-bench --netns: network namespaces, veth, bridge
)

if ! command -v dpkg >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then
	echo "deps.sh: not a Debian system; install these yourself: ${packages[*]}" >&2
	exit 0
fi

installed() {
	# `dpkg -s` also knows removed packages whose config files remain: read the status line.
	dpkg -s "$1" 2>/dev/null | grep -q '^Status: install ok installed$'
}

missing=()
for p in "${packages[@]}"; do
	installed "$p" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=()
if [ "$(id -u)" -ne 0 ]; then
	if command -v sudo >/dev/null 2>&1; then
		sudo=(sudo)
	else
		echo "deps.sh: missing ${missing[*]}; run as root, or install sudo" >&2
		exit 1
	fi
fi

echo "deps.sh: installing ${missing[*]}"
"${sudo[@]}" apt-get update -q
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
	apt-get install -y -q --no-install-recommends "${missing[@]}"

#!/usr/bin/env bash
# node-deps.sh: install the Node.js packages of tests/node (etcd3, @grpc/grpc-js,
# @grpc/proto-loader) from package-lock.json, only when they are missing or older than the lock.
# The client tests that use a second gRPC stack run them; `make test` calls this first.
# Needs node and npm (Debian's nodejs and npm packages, or the machine's own) and the npm registry.
set -euo pipefail
dir="$(cd "$(dirname "$0")/../tests/node" && pwd)"
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
	echo "node-deps.sh: node and npm are needed for tests/node" >&2
	exit 1
fi
stamp="$dir/node_modules/.package-lock.json"
if [ -f "$stamp" ] && [ "$stamp" -nt "$dir/package-lock.json" ]; then
	exit 0
fi
echo "node-deps.sh: installing tests/node packages"
npm ci --prefix "$dir" --no-audit --no-fund --loglevel=error

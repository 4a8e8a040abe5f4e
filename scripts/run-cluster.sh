#!/usr/bin/env bash
# run-cluster.sh: a local 3-member Cairn cluster in the foreground (`make run`).
#
#   scripts/run-cluster.sh [--fresh] [cairn binary]     (default binary: build/bin/cairn)
#
# Members m1, m2, m3 on 127.0.0.1, clients on 2379, 22379, 32379 and peers on 2380, 22380, 32380
# (etcd's own Procfile ports), gossip on 7946, 7947, 7948 (UDP and TCP; each member joins through
# the others), data in $CAIRN_RUN_DIR (default build/run): a second run resumes
# from it, --fresh starts a new cluster. Each member's log lines are prefixed with its name.
# Ctrl-C (or SIGTERM) stops every member gracefully: one SIGTERM each, then a bounded wait.
#
# The members run detached from the terminal (setsid), so the terminal's Ctrl-C reaches only this
# script, which then signals each member once; the log prefixers ignore SIGINT so the members'
# last lines still show.
set -euo pipefail

fresh=0
if [[ ${1:-} == --fresh ]]; then
	fresh=1
	shift
fi
bin=${1:-build/bin/cairn}
run_dir=${CAIRN_RUN_DIR:-build/run}
names=(m1 m2 m3)
client_ports=(2379 22379 32379)
peer_ports=(2380 22380 32380)
gossip_ports=(7946 7947 7948)
stop_secs=15

if [[ ! -x $bin ]]; then
	echo "run-cluster: $bin is not built (it is built once server/member.c exists)" >&2
	exit 1
fi
for p in "${client_ports[@]}" "${peer_ports[@]}" "${gossip_ports[@]}"; do
	if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
		echo "run-cluster: 127.0.0.1:$p is in use (another cluster running?)" >&2
		exit 1
	fi
done

if ((fresh)); then
	rm -rf "$run_dir"
fi
mkdir -p "$run_dir"

cluster=""
endpoints=""
gossip_all=""
for i in 0 1 2; do
	cluster+="${cluster:+,}${names[i]}=http://127.0.0.1:${peer_ports[i]}"
	endpoints+="${endpoints:+,}127.0.0.1:${client_ports[i]}"
	gossip_all+="${gossip_all:+,}127.0.0.1:${gossip_ports[i]}"
done

declare -a pids=()
stopping=0

stop_all() {
	((stopping)) && return
	stopping=1
	echo "run-cluster: stopping the members (SIGTERM)" >&2
	local pid
	for pid in "${pids[@]}"; do
		kill -TERM "$pid" 2>/dev/null || true
	done
	local deadline=$((SECONDS + stop_secs))
	for pid in "${pids[@]}"; do
		while kill -0 "$pid" 2>/dev/null && [[ $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) != Z ]]; do
			if ((SECONDS >= deadline)); then
				echo "run-cluster: pid $pid still running after ${stop_secs} s: SIGKILL" >&2
				kill -KILL "$pid" 2>/dev/null || true
				break
			fi
			sleep 0.1
		done
		wait "$pid" 2>/dev/null || true
	done
	echo "run-cluster: stopped; data kept in $run_dir (--fresh starts over)" >&2
}
trap 'stop_all; exit 0' INT TERM
trap 'stop_all' EXIT

for i in 0 1 2; do
	n=${names[i]}
	c=http://127.0.0.1:${client_ports[i]}
	p=http://127.0.0.1:${peer_ports[i]}
	join=""
	for j in 0 1 2; do
		((j == i)) || join+="${join:+,}127.0.0.1:${gossip_ports[j]}"
	done
	setsid "$bin" --name "$n" --data-dir "$run_dir/$n.cairn" \
		--listen-client-urls "$c" --advertise-client-urls "$c" \
		--listen-peer-urls "$p" --initial-advertise-peer-urls "$p" \
		--initial-cluster "$cluster" --initial-cluster-state new \
		--initial-cluster-token cairn-run \
		--gossip-listen "127.0.0.1:${gossip_ports[i]}" --gossip-join "$join" \
		> >(
			trap '' INT
			exec sed -u "s/^/$n | /"
		) 2>&1 &
	pids+=($!)
done

# Bounded wait until every member answers `endpoint health`.
ready=0
if command -v etcdctl >/dev/null; then
	deadline=$((SECONDS + 20))
	while ((SECONDS < deadline)); do
		if ETCDCTL_API=3 timeout 5 etcdctl --endpoints="$endpoints" --dial-timeout=1s \
			--command-timeout=1s endpoint health >/dev/null 2>&1; then
			ready=1
			break
		fi
		sleep 0.2
	done
fi

cat >&2 <<EOF

run-cluster: 3 members, data in $run_dir
  m1  client http://127.0.0.1:${client_ports[0]}  peer http://127.0.0.1:${peer_ports[0]}  gossip 127.0.0.1:${gossip_ports[0]}
  m2  client http://127.0.0.1:${client_ports[1]}  peer http://127.0.0.1:${peer_ports[1]}  gossip 127.0.0.1:${gossip_ports[1]}
  m3  client http://127.0.0.1:${client_ports[2]}  peer http://127.0.0.1:${peer_ports[2]}  gossip 127.0.0.1:${gossip_ports[2]}
$( ((ready)) && echo "  every member is healthy" || echo "  not all members answer endpoint health yet: see the logs")

In another terminal:
  export ETCDCTL_API=3 ETCDCTL_ENDPOINTS=$endpoints
  etcdctl put greeting "hello, cairn" && etcdctl get greeting
  etcdctl member list -w table
  etcdctl endpoint status -w table
  etcdctl watch --prefix /cairn/members/
  $bin agent --name node-1 --gossip-listen 127.0.0.1:7950 --gossip-join $gossip_all --gossip-tag role=worker

Ctrl-C stops the cluster.

EOF

# Runs until Ctrl-C, or until a member exits by itself (then the others are stopped too).
while :; do
	status=0
	wait -n "${pids[@]}" || status=$?
	if ((stopping)); then
		break
	fi
	for pid in "${pids[@]}"; do
		if ! kill -0 "$pid" 2>/dev/null; then
			echo "run-cluster: member pid $pid exited (status $status); stopping the others" >&2
			stop_all
			exit 1
		fi
	done
done

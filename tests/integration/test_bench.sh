#!/usr/bin/env bash
# test_bench.sh: cairn-bench end to end, with its linearizability check, in about a minute.
#  (a) A short put workload against a running 3-member cluster (--endpoints), recorded and
#      checked: operations done, none failed, the verdict "ok", and the --json output parses
#      and says the same.
#  (b) A short mix (put, range, txn) over three connections, checked: verdict "ok".
#  (c) A failover scenario on a cluster cairn-bench starts itself (same binary): an open-loop
#      writer at a fixed rate, kill -9 of the leader at 2 s, the member restarted at 4 s, every
#      operation checked: the unavailability after the kill is measured and printed, a new
#      leader was seen, the verdict is "ok", and no member is left running afterwards.
#  (d) bench/compare-etcd --quick on two scenarios (put at 16 clients, kill -9 of the leader):
#      the side-by-side table has both systems' figures and both checks say "ok". Skipped
#      without etcd 3.4 at /usr/bin/etcd.
# cairn-bench is found next to the server binary (build/bin/), or at $CAIRN_BENCH. Nothing here
# asserts a timing: only that the figures exist.
source "$(dirname "$0")/lib.sh"

CB=${CAIRN_BENCH:-$(dirname "$IT_BIN")/cairn-bench}
if [[ ! -x $CB ]]; then
	if [[ $IT_FLAVOUR == etcd ]]; then
		it_skip_note "cairn-bench is not next to $IT_BIN (set CAIRN_BENCH)"
		exit 0
	fi
	it_fail "$CB is not built (it needs libcairn: client/*.c)"
fi

# bench <name> <args...>: cairn-bench, bounded in time, output in $IT_TMP/<name>.out (shown on
# failure with the logs); BENCH_RC is its exit status.
BENCH_RC=0
bench() {
	local name=$1
	shift
	it_log "cairn-bench $*"
	BENCH_RC=0
	timeout -s TERM 90 "$CB" --quiet "$@" >"$IT_TMP/$name.out" 2>"$IT_TMP/$name.log" || BENCH_RC=$?
	cat "$IT_TMP/$name.out" >&2
}

# --- (a) put against a running cluster, checked ---
it_cluster_init 3 it-bench
it_cluster_start 15
it_wait_leader 10 0 "${IT_EP[@]}"
bench put --endpoints "$IT_ALL" --workload put --clients 8 --duration 3s --warmup 0 \
	--check --json "$IT_TMP/put.json"
it_expect_eq "$BENCH_RC" 0 "cairn-bench put exit status"
out=$(<"$IT_TMP/put.out")
it_expect_match "$out" '^put +[1-9][0-9]* ' "the put row of the table"
it_expect_match "$out" 'linearizability: ok' "the verdict of the put run"
it_expect_eq "$(it_json "d['summary']['verdict']" <"$IT_TMP/put.json")" ok "JSON verdict"
ops=$(it_json "d['summary']['ops']" <"$IT_TMP/put.json")
((ops > 0)) || it_fail "JSON: $ops operations"
it_expect_eq "$(it_json "d['summary']['errors']" <"$IT_TMP/put.json")" 0 "JSON errors"
it_expect_eq "$(it_json "d['runs'][0]['check']['ops'] > 0" <"$IT_TMP/put.json")" True \
	"JSON: operations recorded in the history"
it_expect_eq "$(it_json "len(d['runs'][0]['series']) >= 3" <"$IT_TMP/put.json")" True \
	"JSON: a per-second series"
it_log "put: $ops operations, verdict ok"

# --- (b) a mix over three connections, checked ---
bench mix --endpoints "$IT_ALL" --workload mix --mix put=40,range=40,txn=20 --clients 8 \
	--conns 3 --duration 3s --warmup 0 --check --csv "$IT_TMP/mix.csv"
it_expect_eq "$BENCH_RC" 0 "cairn-bench mix exit status"
out=$(<"$IT_TMP/mix.out")
for op in put get txn; do
	it_expect_match "$out" "^$op +[1-9][0-9]* " "the $op row of the mix"
done
it_expect_match "$out" 'linearizability: ok' "the verdict of the mix"
it_expect_match "$(head -n 1 "$IT_TMP/mix.csv")" '^run,t,ops,errors,p50_ms,p99_ms' "CSV header"
for n in "${IT_NAMES[@]}"; do
	it_stop "$n" TERM 20
done

# --- (c) kill -9 of the leader and its restart, on a cluster cairn-bench starts ---
system=cairn
[[ $IT_FLAVOUR == cairn ]] || system=etcd
bench failover --system "$system" --set "binary=$IT_BIN" --set "dir=$IT_TMP" --members 3 \
	--workload put --rate 300 --conns 3 --duration 7s --warmup 0 --check \
	--fault kill-leader@2s --fault restart@4s --json "$IT_TMP/failover.json"
if [[ $BENCH_RC -ne 0 ]]; then
	cat "$IT_TMP/failover.log" >&2
	it_fail "cairn-bench failover exit status $BENCH_RC"
fi
out=$(<"$IT_TMP/failover.out")
it_expect_match "$out" 'kill-leader@2s +[0-9.]+ +[0-9]+\.[0-9] ' "unavailability after the kill"
it_expect_match "$out" 'restart@4s' "the restart in the fault table"
it_expect_match "$out" 'linearizability: ok' "the verdict of the failover run"
unavail=$(it_json "d['runs'][0]['faults'][0]['unavailability_ms']" <"$IT_TMP/failover.json")
leader=$(it_json "d['runs'][0]['faults'][0]['new_leader_ms']" <"$IT_TMP/failover.json")
[[ $unavail != None && $leader != None ]] ||
	it_fail "JSON: unavailability $unavail ms, new leader after $leader ms"
it_expect_eq "$(it_json "d['summary']['verdict']" <"$IT_TMP/failover.json")" ok \
	"JSON verdict of the failover run"
# Every member it started is gone: none of their data directories is in use.
left=$(pgrep -f -- "--data-dir $IT_TMP/cairn-bench-" || true)
[[ -z $left ]] || it_fail "members left running after cairn-bench: $left"
it_log "failover: unavailable for $unavail ms after kill -9 of the leader (new leader after" \
	"$leader ms), verdict ok"

# --- (d) compare-etcd, shortened ---
etcd_bin=/usr/bin/etcd
if [[ $IT_FLAVOUR == etcd ]]; then
	etcd_bin=$IT_BIN
fi
if [[ ! -x $etcd_bin ]]; then
	it_skip_note "compare-etcd: no etcd at $etcd_bin"
else
	cairn_bin=$IT_BIN
	[[ $IT_FLAVOUR == cairn ]] || cairn_bin=$(dirname "$CB")/cairn
	it_log "compare-etcd --quick --scenarios put-16,kill-leader"
	rc=0
	timeout -s TERM 150 python3 "$(dirname "$0")/../../bench/compare-etcd" --quick \
		--duration 1 --scenarios put-16,kill-leader --bench "$CB" --cairn "$cairn_bin" \
		--etcd "$etcd_bin" >"$IT_TMP/compare.out" 2>"$IT_TMP/compare.log" || rc=$?
	cat "$IT_TMP/compare.out" >&2
	it_expect_eq "$rc" 0 "compare-etcd exit status"
	out=$(<"$IT_TMP/compare.out")
	it_expect_match "$out" '^\| put-16 \| [0-9,.]+ \| [0-9,.]+ \| [0-9.]+ \|' "the put-16 row"
	it_expect_match "$out" '^\| kill-leader@3s \| [0-9,.]+ \| [0-9,.]+ \| .* \| ok \| ok \|$' \
		"the kill-leader row"
fi
it_log PASS

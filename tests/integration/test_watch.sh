#!/usr/bin/env bash
# test_watch.sh: the Watch service on three members, with etcdctl watch and raw gRPC clients.
# etcdctl watches a key, a prefix, a range and a key with --prev-kv, through the leader and
# through followers, while another etcdctl writes: each sees exactly its events, in order, the
# puts of one txn (and the deletes of one delete-range) in one response. A watch with --rev
# replays the history; one from a compacted revision is cancelled with the compaction reported.
# A follower killed and restarted under a watcher: re-watching from the last revision seen + 1
# gives every later revision once (nothing lost, nothing repeated), as a watch of the whole
# history through another member does. A watcher on a follower stopped for 800 writes, then
# brought up to date by a snapshot, misses nothing. Then tests/node/watch_*.js check what etcdctl cannot
# express (ids, cancel, filters, fragments, progress, a client that stops reading), and 160 random
# watchers on four streams of two members against the history of random writes.
source "$(dirname "$0")/lib.sh"

NODE=${NODE:-node}
NODE_DIR=$(cd "$(dirname "$0")/../node" && pwd)
command -v "$NODE" >/dev/null || it_fail "node not found (Debian's nodejs package)"
[[ -d $NODE_DIR/node_modules/@grpc/grpc-js && -d $NODE_DIR/node_modules/@grpc/proto-loader ]] ||
	it_fail "tests/node/node_modules is missing: run scripts/node-deps.sh"

# Progress notifications every second instead of etcd's ten minutes; a stream whose client reads
# nothing while behind is cut after 8 s instead of 120.
export CAIRN_WATCH_PROGRESS_MS=1000 CAIRN_WATCH_SLOW_MS=8000
extra=()
if [[ $IT_FLAVOUR == etcd ]]; then
	extra=(--experimental-watch-progress-notify-interval=1s)
fi
# A snapshot every 100 entries and 100 kept behind it: a follower stopped for 800 writes is
# brought up to date by a snapshot.
extra+=(--snapshot-count 100)
it_cluster_init 3 it-watch
it_cluster_start 20 "${extra[@]}"
it_wait_leader 10 0 "${IT_EP[m1]}" "${IT_EP[m2]}" "${IT_EP[m3]}"
LEADER=""
FOLLOWERS=()
for n in "${IT_NAMES[@]}"; do
	if [[ $(it_status "${IT_EP[$n]}" member_id) == "$IT_LEADER" ]]; then
		LEADER=$n
	else
		FOLLOWERS+=("$n")
	fi
done
F1=${FOLLOWERS[0]} F2=${FOLLOWERS[1]}
it_log "leader $LEADER, followers $F1 $F2"

# watch_start <name> <endpoint> <etcdctl watch args...>: a background `etcdctl watch -w json`
# (bounded to 90 s), its output in $IT_TMP/<name>.out, killed by the EXIT trap on every path.
watch_start() {
	local name=$1 ep=$2
	shift 2
	timeout 90 "$IT_ETCDCTL" --endpoints="$ep" --dial-timeout=2s watch -w json "$@" \
		>"$IT_TMP/$name.out" 2>"$IT_TMP/$name.err" &
	IT_PID[$name]=$!
}
watch_stop() {
	kill "${IT_PID[$1]}" 2>/dev/null || true
	it_wait_exit "$1" 10 || it_fail "watcher $1 did not stop"
}

# events <file>: one line per event, "TYPE key value mod_revision [prev=value]" (an empty value
# is "-"), after checking
# that revisions only grow, that no revision is split over two responses and that no event
# repeats. Fails (status 1, the reason on stderr) otherwise.
events() {
	python3 - "$1" <<'EOF'
import base64, json, sys
dec = lambda s: base64.b64decode(s or "").decode()
last, seen_revs, out = 0, set(), []
for n, line in enumerate(open(sys.argv[1])):
    line = line.strip()
    if not line.startswith("{"):
        continue
    r = json.loads(line)
    revs = []
    for e in r.get("Events") or []:
        kv = e["kv"]
        rev = kv["mod_revision"]
        if rev < last:
            sys.exit("response %d: revision %d after %d" % (n, rev, last))
        if rev != last and rev in seen_revs:
            sys.exit("revision %d split over two responses" % rev)
        last = rev
        revs.append(rev)
        s = "%s %s %s %d" % ("DELETE" if e.get("type") in (1, "DELETE") else "PUT", dec(kv["key"]), dec(kv.get("value")) or "-", rev)
        if "prev_kv" in e:
            s += " prev=" + (dec(e["prev_kv"].get("value")) or "-")
        if s in out:
            sys.exit("event repeated: " + s)
        out.append(s)
    seen_revs.update(revs)
for s in out:
    print(s)
EOF
}

# wait_lines <name> <n> <secs>: waits until watcher <name> has printed <n> events.
wait_lines() {
	local deadline=$((SECONDS + $3)) got=0
	while :; do
		got=$(events "$IT_TMP/$1.out" 2>/dev/null | wc -l) || got=0
		((got >= $2)) && return 0
		((SECONDS < deadline)) || it_fail "watcher $1: $got events, want $2 within $3 s:
$(cat "$IT_TMP/$1.out" "$IT_TMP/$1.err")"
		sleep 0.1
	done
}

# wait_rev <name> <rev> <secs>: waits until watcher <name> has printed an event of revision
# <rev> or later.
wait_rev() {
	local deadline=$((SECONDS + $3)) got=0
	while :; do
		got=$(events "$IT_TMP/$1.out" 2>/dev/null | tail -n 1 | awk '{print $4}') || got=0
		((${got:-0} >= $2)) && return 0
		((SECONDS < deadline)) || it_fail "watcher $1: at revision ${got:-none}, want $2 within $3 s"
		sleep 0.1
	done
}

# ready <name> <endpoint> <key>: puts <key>=ready until watcher <name> reports it, so that the
# watch is known to be in place before the checked writes.
ready() {
	local deadline=$((SECONDS + 15))
	while ! grep -q . "$IT_TMP/$1.out" 2>/dev/null; do
		it_ctl "$2" put "$3" ready >/dev/null
		((SECONDS < deadline)) || it_fail "watcher $1 saw nothing of $3 within 15 s"
		sleep 0.2
	done
}

L=${IT_EP[$LEADER]} A=${IT_EP[$F1]} B=${IT_EP[$F2]}
r0=$(it_status "$L" revision)

# ---- live watches through the leader and the followers ----
watch_start wkey "$A" w/key
watch_start wprefix "$B" --prefix w/p/
watch_start wrange "$L" w/r/b w/r/d
watch_start wprev "$A" --prev-kv w/key
ready wkey "$L" w/key
ready wprefix "$L" w/p/ready
ready wrange "$L" w/r/b
ready wprev "$L" w/key
rready=$(it_status "$L" revision)

it_put "$L" w/key 1
it_put "$B" w/key 2
it_ctl "$A" del w/key >/dev/null
it_put "$L" w/p/x 1
it_txn_puts "$A" w/p/t 0 3 1
it_put "$L" w/r/a out
it_put "$L" w/r/b in1
it_put "$L" w/r/c in2
it_put "$L" w/r/d out
it_ctl "$L" del --prefix w/p/ >/dev/null
it_put "$L" w/key 3

# w/key: ready, then three puts and the delete between
wait_lines wkey 5 10
it_expect_eq "$(events "$IT_TMP/wkey.out" | awk '{print $1, $2, $3}' | tail -n 4 | tr '\n' ';')" \
	"PUT w/key 1;PUT w/key 2;DELETE w/key -;PUT w/key 3;" "watch of one key"
wait_lines wprev 5 10
got=$(events "$IT_TMP/wprev.out" | tail -n 4 | awk '{print $1, $2, ($5 == "" ? "-" : $5)}' | tr '\n' ';')
it_expect_eq "$got" "PUT w/key prev=ready;PUT w/key prev=1;DELETE w/key prev=2;PUT w/key -;" \
	"watch with --prev-kv"

# the prefix: the txn's three puts in one response, the delete-range's four deletes in one
wait_lines wprefix 9 10
got=$(events "$IT_TMP/wprefix.out" | awk '$2 != "w/p/ready" || $1 == "DELETE" {print $1, $2}' | tr '\n' ';')
it_expect_eq "$got" \
	"PUT w/p/x;PUT w/p/t0;PUT w/p/t1;PUT w/p/t2;DELETE w/p/ready;DELETE w/p/t0;DELETE w/p/t1;DELETE w/p/t2;DELETE w/p/x;" \
	"watch of a prefix"
python3 - "$IT_TMP/wprefix.out" <<'EOF' || it_fail "a txn's or a delete-range's events were split"
import base64, json, sys
for line in open(sys.argv[1]):
    if not line.startswith("{"):
        continue
    keys = [base64.b64decode(e["kv"]["key"]).decode() for e in json.loads(line).get("Events") or []]
    if any(k.startswith("w/p/t") for k in keys) and len(keys) not in (3, 5):
        sys.exit("response with %s" % keys)
EOF
# the range [w/r/b, w/r/d)
wait_lines wrange 3 10
it_expect_eq "$(events "$IT_TMP/wrange.out" | awk '{print $2, $3}' | tail -n 2 | tr '\n' ';')" \
	"w/r/b in1;w/r/c in2;" "watch of a range"
for w in wkey wprefix wrange wprev; do
	watch_stop "$w"
done
it_log "live watches: key, prefix, range and --prev-kv saw exactly their events"

# ---- history: --rev from before the writes, through a follower ----
timeout 20 "$IT_ETCDCTL" --endpoints="$B" watch -w json --prefix w/ --rev "$((rready + 1))" \
	>"$IT_TMP/hist.out" 2>&1 &
IT_PID[hist]=$!
wait_lines hist 13 10
watch_stop hist
it_expect_eq "$(events "$IT_TMP/hist.out" | awk '{print $1, $2}' | head -n 13 | tr '\n' ';')" \
	"PUT w/key;PUT w/key;DELETE w/key;PUT w/p/x;PUT w/p/t0;PUT w/p/t1;PUT w/p/t2;PUT w/r/a;PUT w/r/b;PUT w/r/c;PUT w/r/d;DELETE w/p/ready;DELETE w/p/t0;" \
	"history replayed with --rev"

# ---- a watch from a compacted revision ----
crev=$(it_status "$L" revision)
it_ctl "$L" compact "$crev" --physical >/dev/null || it_fail "compact $crev"
out=$(timeout 10 "$IT_ETCDCTL" --endpoints="$A" watch w/key --rev "$r0" 2>&1) && rc=0 || rc=$?
it_expect_match "$out" "required revision has been compacted" "watch from a compacted revision"
((rc != 0)) || it_fail "etcdctl watch from a compacted revision exited 0"
it_log "a watch from revision $r0, compacted at $crev, is cancelled with the compaction"

# ---- a follower restarted under a watcher ----
start=$(($(it_status "$L" revision) + 1))
watch_start before "${IT_EP[$F1]}" --prefix f/ --rev "$start"
it_writer_start writer "$L,$B" f/ 400 60
it_wait_acked writer 40 20
wait_lines before 20 10
it_stop "$F1" KILL 10
watch_stop before
last=$(events "$IT_TMP/before.out" | tail -n 1 | awk '{print $4}')
it_log "$F1 killed; its watcher saw up to revision $last"
it_wait_acked writer 80 20
it_cluster_args "$F1" "${extra[@]}"
it_start "$F1" "${IT_ARGS[@]}"
it_wait_healthy "$F1" "${IT_EP[$F1]}" 20
watch_start after "${IT_EP[$F1]}" --prefix f/ --rev "$((last + 1))"
it_wait_acked writer 150 30
it_writer_stop writer
# the last write under f/ (keys are written once each, never deleted)
end=$(it_ctl "$L" get f/ --prefix -w json | it_json "max(k['mod_revision'] for k in d['kvs'])")
# everything the cluster holds from start to end, through the other follower
watch_start whole "$B" --prefix f/ --rev "$start"
wait_rev whole "$end" 20
wait_rev after "$end" 20
watch_stop after
watch_stop whole
{
	events "$IT_TMP/before.out"
	events "$IT_TMP/after.out"
} | awk -v e="$end" '$4 <= e' >"$IT_TMP/joined.txt"
events "$IT_TMP/whole.out" | awk -v e="$end" '$4 <= e' >"$IT_TMP/whole.txt"
cmp -s "$IT_TMP/joined.txt" "$IT_TMP/whole.txt" ||
	it_fail "events across the restart differ from the history:
$(diff "$IT_TMP/joined.txt" "$IT_TMP/whole.txt" | head -n 20)"
while read -r k v; do
	grep -q "^PUT $k $v " "$IT_TMP/whole.txt" || it_fail "acknowledged put $k=$v not watched"
done <"$IT_TMP/writer.acked"
total=$(wc -l <"$IT_TMP/whole.txt")
it_log "restart of $F1: $total events from revision $start to $end watched once each across it"

hostport() { echo "${1#http://}"; }

# ---- a snapshot installed under a watcher ----
installed() { grep -c 'event=snapshot-installed' "$IT_TMP/$F2.log" || true; }
before_installs=$(installed)
(cd "$NODE_DIR" && timeout 120 "$NODE" watch_snapshot.js "$(hostport "$B")" "$(hostport "$L")" \
	"${IT_PID[$F2]}") || it_fail "watch_snapshot.js"
if [[ $IT_FLAVOUR == cairn ]]; then
	(($(installed) > before_installs)) || it_fail "$F2 installed no snapshot: the watcher was not resynced"
	it_log "$F2 installed a snapshot under its watcher, which missed nothing"
else
	it_skip_note "etcd keeps 5,000 entries for slow followers: no snapshot is sent here"
fi

# ---- raw gRPC checks ----
(cd "$NODE_DIR" && timeout 90 "$NODE" watch_ids.js "$(hostport "$L")" "$(hostport "$A")") ||
	it_fail "watch_ids.js"
(cd "$NODE_DIR" && timeout 150 "$NODE" watch_random.js "$(hostport "$L")" "$(hostport "$B")") ||
	it_fail "watch_random.js (its first line names the seed that replays it)"
(cd "$NODE_DIR" && timeout 90 "$NODE" watch_fragment.js "$(hostport "$B")") ||
	it_fail "watch_fragment.js"
flavour=""
[[ $IT_FLAVOUR == cairn ]] && flavour=cairn
(cd "$NODE_DIR" && timeout 90 "$NODE" watch_progress.js "$(hostport "$A")" 1000 $flavour) ||
	it_fail "watch_progress.js"
(cd "$NODE_DIR" && timeout 120 "$NODE" watch_slow.js "$(hostport "$B")" 8000 $flavour) ||
	it_fail "watch_slow.js"
it_log "PASS"

#!/usr/bin/env bash
# test_http.sh: HTTP/1.1 beside gRPC on the client port of a three-member cluster. /health,
# /version and /metrics (Prometheus text, checked by a parser and for etcd's metric names); the
# JSON gateway for put, range, txn, deleterange, lease grant, member list and status, each
# answer's shape compared with etcd 3.4's own gateway (started here on the side, ids and
# revisions normalised away); /v3/watch streaming an event to curl -N; keep-alive (several
# requests on one connection); malformed requests get 4xx and the member stays healthy; etcdctl
# keeps working on the same port throughout.
source "$(dirname "$0")/lib.sh"

command -v curl >/dev/null || it_fail "curl not found"
CURL=(curl -sS --max-time 10)

it_cluster_init 3 http
it_cluster_start 20
EP=${IT_EP[m1]}

# ---- etcd 3.4 for reference shapes (Cairn flavour only; skipped when etcd is missing) ----
REF=""
if [[ $IT_FLAVOUR == cairn && -x /usr/bin/etcd ]]; then
	mapfile -t RP < <(it_ports 2)
	REF=http://127.0.0.1:${RP[0]}
	saved_bin=$IT_BIN
	IT_BIN=/usr/bin/etcd
	it_start ref --name ref --data-dir "$IT_TMP/ref.data" \
		--listen-client-urls "$REF" --advertise-client-urls "$REF" \
		--listen-peer-urls "http://127.0.0.1:${RP[1]}" \
		--initial-advertise-peer-urls "http://127.0.0.1:${RP[1]}" \
		--initial-cluster "ref=http://127.0.0.1:${RP[1]}"
	IT_BIN=$saved_bin
	it_wait_healthy ref "$REF" 20
fi

# post <endpoint> <path> <json>: the body of a POST; the HTTP status goes to $IT_TMP/code.
post() {
	"${CURL[@]}" -o "$IT_TMP/body" -w '%{http_code}' -X POST "$1$2" -d "$3" >"$IT_TMP/code"
	cat "$IT_TMP/body"
}

# shape: the JSON on stdin with every scalar replaced by its type, lists cut to their first
# element, and response headers reduced to a mark (their fields are ids and revisions).
shape() {
	python3 -c '
import json, sys
def s(v, k=""):
    if k == "header":
        return "header"
    if isinstance(v, dict):
        return {key: s(x, key) for key, x in sorted(v.items())}
    if isinstance(v, list):
        return [s(v[0])] if v else []
    return type(v).__name__
print(json.dumps(s(json.load(sys.stdin)), sort_keys=True))
'
}

# compare <what> <path> <json>: the same request through Cairn and etcd; same status, same shape.
compare() {
	local what=$1 path=$2 body=$3 got want gc wc
	got=$(post "$EP" "$path" "$body")
	gc=$(cat "$IT_TMP/code")
	[[ $gc == 200 ]] || it_fail "$what: HTTP $gc: $got"
	if [[ -z $REF ]]; then
		it_skip_note "$what: no etcd to compare with"
		return
	fi
	want=$(post "$REF" "$path" "$body")
	wc=$(cat "$IT_TMP/code")
	it_expect_eq "$gc" "$wc" "$what: HTTP status against etcd"
	it_expect_eq "$(shape <<<"$got")" "$(shape <<<"$want")" "$what: JSON shape against etcd"
	it_log "$what: same shape as etcd 3.4"
}

# ---- /health and /version ----
h=$("${CURL[@]}" -w ' %{http_code}' "$EP/health")
it_expect_eq "$h" '{"health":"true"} 200' "/health"
v=$("${CURL[@]}" "$EP/version")
it_expect_match "$v" '^\{"etcdserver":"3\.4\.[0-9]+","etcdcluster":"3\.4\.0"\}$' "/version"
if [[ $IT_FLAVOUR == cairn ]]; then
	st=$(it_status "$EP" version)
	it_expect_eq "$(it_json "d['etcdserver']" <<<"$v")" "$st" "/version against Status"
fi

# ---- the gateway, shapes against etcd ----
compare put /v3/kv/put '{"key":"Zm9v","value":"YmFy"}'
compare "range" /v3/kv/range '{"key":"Zm9v"}'
r=$(post "$EP" /v3/kv/range '{"key":"Zm9v"}')
it_expect_eq "$(it_json "d['kvs'][0]['value']" <<<"$r")" YmFy "range value (base64)"
it_expect_eq "$(it_json "type(d['count']).__name__" <<<"$r")" str "count as a string (int64)"
compare txn /v3/kv/txn '{"compare":[{"target":"VALUE","key":"Zm9v","value":"YmFy"}],"success":[{"request_put":{"key":"Zm9v","value":"YmF6"}}]}'
it_expect_eq "$(it_get "$EP" foo)" baz "the txn's put, through etcdctl"
compare deleterange /v3/kv/deleterange '{"key":"Zm9v","prev_kv":true}'
compare "lease grant" /v3/lease/grant '{"TTL":30}'
compare "member list" /v3/cluster/member/list '{}'
ml=$(post "$EP" /v3/cluster/member/list '{}')
it_expect_eq "$(it_json "len(d['members'])" <<<"$ml")" 3 "member list: three members"
compare status /v3/maintenance/status '{}'

# errors: etcd's body and status
e=$(post "$EP" /v3/kv/put '{"key":"","value":"YmFy"}')
it_expect_eq "$(cat "$IT_TMP/code")" 400 "empty key: status"
it_expect_eq "$e" '{"error":"etcdserver: key is not provided","message":"etcdserver: key is not provided","code":3}' "empty key: body"
e=$(post "$EP" /v3/kv/range '{"key":"Zm9v')
it_expect_eq "$(cat "$IT_TMP/code")" 400 "truncated JSON: status"
it_expect_eq "$e" '{"error":"unexpected EOF","message":"unexpected EOF","code":3}' "truncated JSON: body"
post "$EP" /v3/nope '{}' >/dev/null
it_expect_eq "$(cat "$IT_TMP/code")" 404 "unknown path"
it_expect_eq "$("${CURL[@]}" -o /dev/null -w '%{http_code}' "$EP/v3/kv/range")" 405 "GET on a gateway path"

# ---- /v3/watch: one event streamed to curl -N ----
"${CURL[@]}" -N -X POST "$EP/v3/watch" -d '{"create_request":{"key":"d2F0Y2hlZA=="}}' \
	>"$IT_TMP/watch.out" 2>/dev/null &
watch_pid=$!
deadline=$((SECONDS + 10))
until grep -q '"created":true' "$IT_TMP/watch.out" 2>/dev/null; do
	((SECONDS < deadline)) || it_fail "watch not created: $(cat "$IT_TMP/watch.out")"
	sleep 0.1
done
it_put "$EP" watched yes
until grep -q '"events"' "$IT_TMP/watch.out"; do
	((SECONDS < deadline)) || it_fail "no watch event: $(cat "$IT_TMP/watch.out")"
	sleep 0.1
done
kill "$watch_pid" 2>/dev/null || true
wait "$watch_pid" 2>/dev/null || true
ev=$(grep '"events"' "$IT_TMP/watch.out" | head -1)
it_expect_eq "$(it_json "d['result']['events'][0]['kv']['value']" <<<"$ev")" eWVz "watch event value"
it_log "watch event received"

# ---- keep-alive: three requests, one connection ----
ka=$("${CURL[@]}" -v "$EP/health" "$EP/version" "$EP/health" 2>&1 >/dev/null)
it_expect_match "$ka" 'Re-using existing connection' "keep-alive"
it_expect_eq "$(grep -c 'Connected to' <<<"$ka")" 1 "one TCP connection for three requests"

# pipelined: three puts and a HEAD in one write, answered in order, closed after the last
pl=$(python3 - "${IT_CPORT[m1]}" <<'EOF'
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10)
body = b'{"key":"cGlwZQ==","value":"MQ=="}'
put = b"POST /v3/kv/put HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
s.sendall(put * 3 + b"HEAD /health HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
data = b""
while True:
    chunk = s.recv(65536)
    if not chunk:
        break
    data += chunk
print(data.count(b"HTTP/1.1 "), data.count(b"HTTP/1.1 200 OK"))
EOF
)
if [[ $IT_FLAVOUR == cairn ]]; then
	it_expect_eq "$pl" "4 4" "pipelined requests, answered in order, then closed"
	hd=$("${CURL[@]}" -I "$EP/health" | tr -d '\r')
	it_expect_match "$hd" '^HTTP/1.1 200 OK' "HEAD /health"
	it_expect_match "$hd" 'Content-Length: 17' "HEAD /health: the GET's length, no body"
else
	it_expect_eq "${pl%% *}" 4 "pipelined requests, answered in order, then closed"
fi

# ---- malformed requests: 4xx, the member stays healthy ----
bad() {
	python3 - "${IT_CPORT[m1]}" "$1" <<'EOF'
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5)
s.sendall(sys.argv[2].encode().decode("unicode_escape").encode("latin-1"))
data = b""
while True:
    try:
        chunk = s.recv(4096)
    except socket.timeout:
        break
    if not chunk:
        break
    data += chunk
print(data.split(b"\r\n", 1)[0].decode())
EOF
}
it_expect_match "$(bad 'GET /health HTTP/1.1\r\n\r\n')" '^HTTP/1.1 400 Bad Request' "no Host"
if [[ $IT_FLAVOUR == cairn ]]; then
	it_expect_eq "$(bad 'GET /health HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n')" "HTTP/1.1 400 Bad Request" "folded header"
	it_expect_eq "$(bad 'POST /v3/kv/put HTTP/1.1\r\nHost: a\r\nContent-Length: 999999999\r\n\r\n')" \
		"HTTP/1.1 413 Request Entity Too Large" "body over the bound"
	it_expect_eq "$(bad 'POST /v3/kv/put HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n')" \
		"HTTP/1.1 411 Length Required" "chunked body"
	big=$(python3 -c 'print("X-A: " + "a" * 20000)')
	it_expect_eq "$(bad "GET /health HTTP/1.1\r\nHost: a\r\n$big\r\n\r\n")" \
		"HTTP/1.1 431 Request Header Fields Too Large" "head over the bound"
else
	it_skip_note "Cairn's own bounds (folded headers, 411, 413 and 431 before the body)"
fi
it_expect_eq "$("${CURL[@]}" "$EP/health")" '{"health":"true"}' "healthy after bad requests"
it_running m1 || it_fail "m1 exited after malformed requests"

# ---- /metrics: valid text format 0.0.4 with etcd's names ----
"${CURL[@]}" -D "$IT_TMP/metrics.h" "$EP/metrics" >"$IT_TMP/metrics"
it_expect_match "$(cat "$IT_TMP/metrics.h")" 'Content-Type: text/plain; version=0.0.4' "metrics type"
python3 - "$IT_TMP/metrics" <<'EOF' || it_fail "/metrics is not valid Prometheus text"
import re, sys
text = open(sys.argv[1]).read()
types, samples = {}, {}
line_re = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (-?[0-9.e+-]+|\+Inf|NaN)$')
for ln in text.splitlines():
    if ln.startswith("# HELP "):
        continue
    if ln.startswith("# TYPE "):
        _, _, name, t = ln.split(" ", 3)
        assert t in ("counter", "gauge", "histogram", "summary", "untyped"), ln
        assert name not in types, "TYPE twice: " + name
        types[name] = t
        continue
    m = line_re.match(ln)
    assert m, "bad sample line: " + ln
    samples.setdefault(m.group(1), []).append((m.group(2) or "", float(m.group(3))))
for name in samples:
    base = re.sub(r'_(bucket|sum|count)$', '', name)
    assert name in types or base in types, "sample without TYPE: " + name
for name, t in types.items():
    if t == "histogram":
        b = samples[name + "_bucket"]
        assert b[-1][0] == '{le="+Inf"}', name
        counts = [v for _, v in b]
        assert counts == sorted(counts), "buckets not cumulative: " + name
        assert samples[name + "_count"][0][1] == counts[-1], name
want = ["etcd_server_has_leader", "etcd_server_is_leader", "etcd_server_leader_changes_seen_total",
        "etcd_server_proposals_committed_total", "etcd_server_proposals_applied_total",
        "etcd_server_proposals_pending", "etcd_disk_wal_fsync_duration_seconds",
        "etcd_disk_backend_commit_duration_seconds", "etcd_mvcc_db_total_size_in_bytes",
        "etcd_mvcc_db_total_size_in_use_in_bytes", "etcd_network_client_grpc_received_bytes_total",
        "etcd_network_client_grpc_sent_bytes_total", "process_resident_memory_bytes",
        "process_cpu_seconds_total", "process_open_fds", "process_start_time_seconds"]
missing = [w for w in want if w not in types]
assert not missing, "missing: %s" % missing
assert samples["etcd_server_has_leader"][0][1] == 1
assert samples["etcd_disk_wal_fsync_duration_seconds_count"][0][1] > 0
assert samples["etcd_disk_backend_commit_duration_seconds_count"][0][1] > 0
EOF
leaders=0
for n in "${IT_NAMES[@]}"; do
	l=$("${CURL[@]}" "${IT_EP[$n]}/metrics" | awk '$1 == "etcd_server_is_leader" {print $2}')
	leaders=$((leaders + l))
done
it_expect_eq "$leaders" 1 "exactly one member says etcd_server_is_leader 1"
it_log "metrics valid"

# ---- /health is false while an alarm is raised (etcd 3.4) ----
mid=$(it_status "$EP" member_id)
post "$EP" /v3/maintenance/alarm "{\"action\":\"ACTIVATE\",\"memberID\":\"$mid\",\"alarm\":\"NOSPACE\"}" >/dev/null
it_expect_eq "$(cat "$IT_TMP/code")" 200 "alarm activate through the gateway"
# (etcd ends this body with a newline; the test sets it aside)
it_expect_eq "$("${CURL[@]}" -w ' %{http_code}' "$EP/health" | tr -d '\n')" '{"health":"false"} 503' \
	"/health with an alarm"
it_ctl "$EP" alarm disarm >/dev/null
it_expect_eq "$("${CURL[@]}" -w ' %{http_code}' "$EP/health")" '{"health":"true"} 200' "/health after disarm"

# ---- gRPC on the same port still works ----
it_put "$EP" after http
it_expect_eq "$(it_get "${IT_EP[m2]}" after)" http "etcdctl after the HTTP traffic"

# ---- a graceful stop with HTTP connections open: a watch, a half-sent request ----
"${CURL[@]}" -N -X POST "$EP/v3/watch" -d '{"create_request":{"key":"eA=="}}' \
	>/dev/null 2>&1 &
w2=$!
python3 -c '
import socket, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5)
s.sendall(b"POST /v3/kv/range HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n{")
try:
    s.recv(4096)
except OSError:
    pass
' "${IT_CPORT[m1]}" &
half=$!
sleep 0.5
it_stop m1 TERM 20
it_expect_stopped TERM
wait "$w2" 2>/dev/null || true
wait "$half" 2>/dev/null || true
if grep -q "Sanitizer" "$IT_TMP/m1.log"; then
	it_fail "sanitizer report in m1's log"
fi
it_log "PASS"

#!/usr/bin/env bash
# test_bad_input.sh: bad input thrown at a running three-member cluster (every member started
# with --max-request-bytes 65536), and after each step a well-behaved etcdctl client still
# writes and reads through the member under attack.
#
#   1. Client port (raw sockets): random bytes; the HTTP/2 preface then garbage frames (closed
#      with GOAWAY PROTOCOL_ERROR); half a preface then silence and a preface sent a byte at a
#      time (closed by the preface guard, net/grpc_uv.h: preface_timeout_ms 5000); 200 raw idle
#      connections (closed by the same guard) and 200 idle HTTP/2 connections (kept: etcd sets
#      no idle limit) held while clients are served, well under the listener's max_connections
#      (1024); HTTP/1.1 GET / (404); a TLS ClientHello on the http:// port.
#   2. Requests through etcdctl, on every member (leader and followers): a value over
#      --max-request-bytes ("etcdserver: request is too large") and one over the gRPC receive
#      limit, --max-request-bytes + 512 KiB as in etcd ("grpc: received message larger than
#      max"); get with key > range_end (empty, no error); a txn of 129 operations and one putting
#      a key twice; an unknown lease (revoke, put), an unknown member (remove), a taken peer URL
#      (member add), refused at once;
#      a future revision; a compacted revision; an empty key.
#   3. Peer port (raw sockets), on every member: random bytes, a frame header with a valid CRC
#      and a length of almost 4 GiB, a header with a bad CRC, an HTTP/2 preface, half a header
#      then silence (closed by the hello guard, net/peer.h: hello_timeout_ms 2000). The
#      connection is dropped, and the cluster keeps its leader and term.
#
# At the end every member's VmRSS is under 200 MB, a last write is read through every member,
# and each member exits 0 on SIGTERM.
source "$(dirname "$0")/lib.sh"

MAX_REQ=65536
GRPC_OVERHEAD=$((512 * 1024)) # etcd's grpcOverheadBytes

# --- raw socket clients (python3): one mode per kind of bad input, one result line each ---
RAW=$IT_TMP/raw.py
cat >"$RAW" <<'EOF'
"""raw.py <mode> <port> [args]: sends one kind of bad input to 127.0.0.1:<port> and prints
what the server did: "<eof|reset|timeout> <seconds until then> <bytes received> [details]"."""
import os, random, socket, ssl, struct, sys, time

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
SETTINGS = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"  # an empty SETTINGS frame
LIMIT = 10.0  # seconds to wait for the server to close

def connect(port):
    return socket.create_connection(("127.0.0.1", port), timeout=5)

def send(s, b):
    try:
        s.sendall(b)
    except OSError:  # the server may close before it has read everything
        pass

def drain(s):
    t0, data = time.monotonic(), b""
    while True:
        left = LIMIT - (time.monotonic() - t0)
        if left <= 0:
            return data, time.monotonic() - t0, "timeout"
        s.settimeout(left)
        try:
            b = s.recv(65536)
        except socket.timeout:
            return data, time.monotonic() - t0, "timeout"
        except OSError:
            return data, time.monotonic() - t0, "reset"
        if not b:
            return data, time.monotonic() - t0, "eof"
        data += b

def result(s, details=lambda d: ""):
    d, t, how = drain(s)
    print(f"{how} {t:.2f} {len(d)} {details(d)}".rstrip())

def h2_frames(d):
    """types=<frame types received> goaway=<GOAWAY error codes>"""
    types, codes, i = [], [], 0
    while i + 9 <= len(d):
        n, ty = int.from_bytes(d[i:i + 3], "big"), d[i + 3]
        types.append(str(ty))
        if ty == 7 and n >= 8:
            codes.append(str(struct.unpack(">I", d[i + 13:i + 17])[0]))
        i += 9 + n
    return f"types={','.join(types)} goaway={','.join(codes)}"

def crc32c(b):
    crc = 0xFFFFFFFF
    for x in b:
        crc ^= x
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 & -(crc & 1))
    return crc ^ 0xFFFFFFFF

mode, port = sys.argv[1], int(sys.argv[2])
rng = random.Random(20)  # the same bytes every run
junk = bytes(rng.getrandbits(8) for _ in range(4096))

if mode == "garbage":  # random bytes, on either port
    s = connect(port); send(s, junk); result(s)
elif mode == "h2-garbage":  # the preface, a frame header with every field at its maximum, junk
    s = connect(port); send(s, PREFACE + b"\xff" * 9 + junk[:1024]); result(s, h2_frames)
elif mode == "h2-data0":  # the preface, SETTINGS, then DATA on stream 0 (RFC 9113 6.1)
    s = connect(port)
    send(s, PREFACE + SETTINGS + b"\x00\x00\x04\x00\x00\x00\x00\x00\x00junk")
    result(s, h2_frames)
elif mode == "slowloris":
    # a: half the preface, then silence; b: the preface one byte every 0.25 s (6 s in all).
    a = connect(port); send(a, PREFACE[:12])
    b = connect(port)
    open(sys.argv[4], "w").close()  # connected: the idle connections may start
    a.setblocking(False); b.setblocking(False)
    t0, closed, sent = time.monotonic(), {}, 0
    while len(closed) < 2 and time.monotonic() - t0 < float(sys.argv[3]):
        if "b" not in closed and sent < len(PREFACE):
            try:
                b.send(PREFACE[sent:sent + 1]); sent += 1
            except OSError:
                closed["b"] = time.monotonic() - t0
        for name, s in (("a", a), ("b", b)):
            if name in closed:
                continue
            try:
                if s.recv(4096) == b"":
                    closed[name] = time.monotonic() - t0
            except BlockingIOError:
                pass
            except OSError:
                closed[name] = time.monotonic() - t0
        time.sleep(0.25)
    print(" ".join(f"{n}={closed[n]:.2f}" if n in closed else f"{n}=open" for n in ("a", "b")))
elif mode == "idle":
    # idle <port> <n> <raw|h2> <ready file> <release file>: holds n connections (raw: nothing
    # sent; h2: the preface and SETTINGS, then nothing) until the release file appears, then
    # prints how many the server has closed: h2 at once; raw once all are closed or 10 s
    # later (a burst of connections overflows the listen backlog, and the server accepts some
    # only after the client's SYN retransmits, 1 s or 3 s later, so their guard ends later too).
    n, h2, ready, release = int(sys.argv[3]), sys.argv[4] == "h2", sys.argv[5], sys.argv[6]
    socks = []
    for _ in range(n):
        s = connect(port)
        if h2:
            send(s, PREFACE + SETTINGS)
        socks.append(s)
    open(ready, "w").close()
    t0 = time.monotonic()
    while not os.path.exists(release) and time.monotonic() - t0 < 30:
        time.sleep(0.05)
    for s in socks:
        s.setblocking(False)
    done, t0 = set(), time.monotonic()
    while True:
        for i, s in enumerate(socks):
            if i in done:
                continue
            try:
                while s.recv(65536):
                    pass
                done.add(i)
            except BlockingIOError:
                pass
            except OSError:
                done.add(i)
        if h2 or len(done) == n or time.monotonic() - t0 > 10:
            break
        time.sleep(0.1)
    print(f"held={n} closed={len(done)}")
elif mode == "http1":
    s = connect(port)
    send(s, b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    result(s, lambda d: "status=" + d.split(b"\r\n", 1)[0].decode("latin-1").replace(" ", "_"))
elif mode == "tls-hello":  # a real ClientHello (ALPN h2), made by the ssl module in memory
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    ctx.set_alpn_protocols(["h2"])
    out = ssl.MemoryBIO()
    tls = ctx.wrap_bio(ssl.MemoryBIO(), out, server_hostname="localhost")
    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:
        pass
    s = connect(port); send(s, out.read()); result(s)
elif mode in ("peer-huge", "peer-badcrc"):
    # net/frame.h: u32 length, u8 type (2: MSG), u8 flags, u16 magic 0xCA12, u32 CRC-32C of the
    # first 8 bytes; huge: a correct CRC and a length far over any bound; badcrc: a small length
    # and a CRC off by one bit.
    length = 0xFFFFFFF0 if mode == "peer-huge" else 16
    head = struct.pack(">IBBH", length, 2, 0, 0xCA12)
    crc = crc32c(head) ^ (mode == "peer-badcrc")
    s = connect(port); send(s, head + struct.pack(">I", crc) + junk[:16]); result(s)
elif mode == "peer-h2":  # a gRPC client dialling the peer port by mistake
    s = connect(port); send(s, PREFACE + SETTINGS); result(s)
elif mode == "peer-half":  # half a frame header, then silence
    s = connect(port); send(s, b"\x00\x00\x00\x10\x02\x00"); result(s)
else:
    sys.exit(f"unknown mode {mode}")
EOF

# raw <mode> <port> [args]: one raw client, its result line on stdout.
raw() {
	timeout 40 python3 "$RAW" "$@"
}

# lt <a> <b>: a < b, as decimal numbers.
lt() {
	awk -v a="$1" -v b="$2" 'BEGIN { exit !(a < b) }'
}

# expect_closed <result line> <max seconds> <what>: the server closed (EOF or reset) within
# <max seconds>.
expect_closed() {
	local how secs rest
	read -r how secs rest <<<"$1"
	[[ $how == eof || $how == reset ]] || it_fail "$3: the connection was not closed ($1)"
	lt "$secs" "$2" || it_fail "$3: closed after $secs s, want under $2 s ($1)"
}

# --- three members, every one with a small --max-request-bytes ---
mapfile -t P < <(it_ports 9)
NAMES=(m1 m2 m3)
declare -A EP CPORT PPORT
cluster=""
for i in 0 1 2; do
	n=${NAMES[i]}
	cluster+="${cluster:+,}$n=http://127.0.0.1:${P[3 + i]}"
	EP[$n]=http://127.0.0.1:${P[i]}
	CPORT[$n]=${P[i]}
	PPORT[$n]=${P[3 + i]}
done
for i in 0 1 2; do
	it_member_args "${NAMES[i]}" "${P[i]}" "${P[3 + i]}" "${P[6 + i]}"
	it_gossip_join "${P[6 + i]}" "${P[6]}" "${P[7]}" "${P[8]}"
	IT_ARGS+=(--initial-cluster "$cluster" --initial-cluster-state new
		--initial-cluster-token "it-bad-input-$$" --max-request-bytes "$MAX_REQ")
	it_start "${NAMES[i]}" "${IT_ARGS[@]}"
done
for n in "${NAMES[@]}"; do
	it_wait_healthy "$n" "${EP[$n]}" 15
done

# The leader, once all three agree on it (bounded).
agreed_leader() {
	local deadline=$((SECONDS + 5)) l1 l2 l3
	while :; do
		l1=$(it_status "${EP[m1]}" leader 2>/dev/null || echo 0)
		l2=$(it_status "${EP[m2]}" leader 2>/dev/null || echo 0)
		l3=$(it_status "${EP[m3]}" leader 2>/dev/null || echo 0)
		if [[ $l1 != 0 && $l1 == "$l2" && $l2 == "$l3" ]]; then
			echo "$l1"
			return
		fi
		((SECONDS < deadline)) || it_fail "members do not agree on a leader: $l1 $l2 $l3"
		sleep 0.1
	done
}
LEADER=$(agreed_leader)
TERM0=$(it_status "${EP[m1]}" raft_term)
it_log "leader $LEADER, term $TERM0"

# serving <member> <what>: every member still runs, and a write through <member> is read back
# through it (a fresh etcdctl each time: a new connection, as a new client would make).
STEP=0
serving() {
	local n
	for n in "${NAMES[@]}"; do
		it_running "$n" || it_fail "$n exited after: $2"
	done
	STEP=$((STEP + 1))
	it_put "${EP[$1]}" "alive/$STEP" "$2"
	it_expect_eq "$(it_get "${EP[$1]}" "alive/$STEP")" "$2" "$1 serving after: $2"
}

# Bounds on how fast a bad connection is closed: Cairn closes at once (the preface guard aside);
# etcd's servers may wait for their own read deadlines.
FAST=2
[[ $IT_FLAVOUR == cairn ]] || FAST=9.5

# ===== 1. the client port =====
T=m1
C=${CPORT[$T]}

out=$(raw garbage "$C")
expect_closed "$out" "$FAST" "random bytes on the client port"
serving "$T" "random bytes"

for mode in h2-garbage h2-data0; do
	out=$(raw "$mode" "$C")
	expect_closed "$out" "$FAST" "$mode on the client port"
	if [[ $IT_FLAVOUR == cairn ]]; then
		# Our SETTINGS, then GOAWAY with PROTOCOL_ERROR (1) before the close.
		it_expect_match "$out" 'goaway=1$' "$mode: GOAWAY PROTOCOL_ERROR"
	else
		it_skip_note "the GOAWAY after $mode (grpc-go closes without one)"
	fi
	serving "$T" "$mode"
done

out=$(raw http1 "$C")
expect_closed "$out" "$FAST" "HTTP/1.1 GET / on the client port"
# HTTP/1.1 is served beside gRPC (/health, /version, /metrics, /v3/...): / is not a route.
it_expect_match "$out" 'status=HTTP/1.1_404_' "HTTP/1.1 GET /: 404"
serving "$T" "HTTP/1.1 GET /"

out=$(raw tls-hello "$C")
expect_closed "$out" "$FAST" "a TLS ClientHello on the http:// client port"
serving "$T" "a TLS ClientHello"

# Slowloris and idle connections at once, in the background (registered with the harness so
# they are killed on every exit path), while clients are served.
it_log "slowloris and 2 x 200 idle connections on $T"
SLOW_LIMIT=9
timeout 30 python3 "$RAW" slowloris "$C" "$SLOW_LIMIT" "$IT_TMP/slowloris.ready" \
	>"$IT_TMP/slowloris.out" 2>&1 &
IT_PID["slowloris"]=$!
# Its two connections first: 400 at once overflow the listen backlog (128), and a connection
# accepted late after a SYN retransmit would shift the 5 s it is measured against.
deadline=$((SECONDS + 10))
until [[ -e $IT_TMP/slowloris.ready ]]; do
	it_running slowloris || it_fail "slowloris client: $(cat "$IT_TMP/slowloris.out")"
	((SECONDS < deadline)) || it_fail "slowloris connections not open within 10 s"
	sleep 0.05
done
for kind in raw h2; do
	timeout 40 python3 "$RAW" idle "$C" 200 "$kind" "$IT_TMP/idle-$kind.ready" \
		"$IT_TMP/idle.release" >"$IT_TMP/idle-$kind.out" 2>&1 &
	IT_PID["idle-$kind"]=$!
done
deadline=$((SECONDS + 10))
until [[ -e $IT_TMP/idle-raw.ready && -e $IT_TMP/idle-h2.ready ]]; do
	if ! it_running idle-raw || ! it_running idle-h2; then
		it_fail "idle connections: $(cat "$IT_TMP"/idle-*.out)"
	fi
	((SECONDS < deadline)) || it_fail "400 idle connections not open within 10 s"
	sleep 0.05
done
opened=$EPOCHREALTIME
for n in "${NAMES[@]}"; do
	serving "$n" "400 idle connections and a slowloris held on $T"
done
# Past the preface guard (5 s from the connections' opening) before looking at which are left
# (the raw ones accepted late are waited for, see raw.py's idle).
while lt "$(((${EPOCHREALTIME/./} - ${opened/./}) / 1000))" 6500; do
	serving "$T" "idle connections held"
	sleep 0.5
done
touch "$IT_TMP/idle.release"
it_wait_exit slowloris 20 || it_fail "slowloris client still running"
it_expect_eq "$IT_RC" 0 "slowloris client status"
for kind in raw h2; do
	it_wait_exit "idle-$kind" 20 || it_fail "idle $kind client still running"
	it_expect_eq "$IT_RC" 0 "idle $kind client status ($(cat "$IT_TMP/idle-$kind.out"))"
done
slow=$(cat "$IT_TMP/slowloris.out")
idle_raw=$(cat "$IT_TMP/idle-raw.out")
idle_h2=$(cat "$IT_TMP/idle-h2.out")
it_log "slowloris: $slow; idle raw: $idle_raw; idle h2: $idle_h2"
# Idle HTTP/2 connections are kept, as etcd keeps them (no idle limit on its gRPC port).
it_expect_eq "$idle_h2" "held=200 closed=0" "idle HTTP/2 connections after 6.5 s"
if [[ $IT_FLAVOUR == cairn ]]; then
	# preface_timeout_ms 5000: both slowloris connections closed at 5 s (+ the 0.25 s polls).
	[[ $slow =~ ^a=([0-9.]+)\ b=([0-9.]+)$ ]] || it_fail "slowloris not closed: $slow"
	for t in "${BASH_REMATCH[1]}" "${BASH_REMATCH[2]}"; do
		if ! lt 4.5 "$t" || ! lt "$t" 7; then
			it_fail "slowloris closed after $t s, want 5 s: $slow"
		fi
	done
	it_expect_eq "$idle_raw" "held=200 closed=200" "raw idle connections after the guard"
else
	it_skip_note "the preface guard (slowloris: $slow; idle raw: $idle_raw)"
fi
serving "$T" "the slowloris and idle connections"

# ===== 2. requests =====
VALUES=$IT_TMP/values
mkdir -p "$VALUES"
# Between --max-request-bytes and the gRPC limit; and over the gRPC limit but under etcdctl's
# own 2 MiB send limit. Values go through stdin (a 128 KiB argument is past execve's limit).
head -c $((MAX_REQ + 1024)) /dev/zero | tr '\0' x >"$VALUES/over-request"
head -c $((MAX_REQ + GRPC_OVERHEAD + 65536)) /dev/zero | tr '\0' y >"$VALUES/over-grpc"

# fails <what> <regex> <etcdctl args...>: the command fails and its output matches <regex>.
fails() {
	local what=$1 re=$2 out
	shift 2
	if out=$("$@" 2>&1); then
		it_fail "$what succeeded: $out"
	fi
	it_expect_match "$out" "$re" "$what"
}

# A txn of <n> puts of distinct keys in the success branch, in etcdctl's stdin format.
txn_puts() {
	local i
	echo
	for ((i = 0; i < $1; i++)); do
		echo "put txn/$i v"
	done
	printf '\n\n'
}

for n in "${NAMES[@]}"; do
	ep=${EP[$n]}
	it_log "requests through $n"
	fails "put over --max-request-bytes via $n" 'etcdserver: request is too large' \
		it_ctl "$ep" put big <"$VALUES/over-request"
	serving "$n" "a put over --max-request-bytes"
	fails "put over the gRPC limit via $n" \
		"grpc: received message larger than max \\([0-9]+ vs\\. $((MAX_REQ + GRPC_OVERHEAD))\\)" \
		it_ctl "$ep" put big <"$VALUES/over-grpc"
	serving "$n" "a put over the gRPC limit"
	it_expect_eq "$(it_get "$ep" big)" "" "no value stored by the refused puts"

	# key > range_end: an empty range, as etcd answers it.
	it_put "$ep" a 1
	it_put "$ep" b 2
	out=$(it_ctl "$ep" get b a 2>&1) || it_fail "get b a via $n: $out"
	it_expect_eq "$out" "" "get b a via $n"
	out=$(it_ctl "$ep" get b a -w json) || it_fail "get b a -w json via $n: $out"
	it_expect_eq "$(it_json "(d.get('count', 0), d.get('kvs', []))" <<<"$out")" "(0, [])" \
		"get b a via $n: count and kvs"

	# etcdctl prints a refused txn's error and exits 0 with it: match its output.
	out=$(txn_puts 129 | it_ctl "$ep" txn 2>&1) || true
	it_expect_match "$out" 'etcdserver: too many operations in txn request' "129-op txn via $n"
	out=$(txn_puts 128 | it_ctl "$ep" txn 2>&1) || it_fail "128-op txn via $n: $out"
	it_expect_eq "$(head -n 1 <<<"$out")" SUCCESS "128-op txn via $n"
	out=$(printf '\nput dup 1\nput dup 2\n\n\n' | it_ctl "$ep" txn 2>&1) || true
	it_expect_match "$out" 'etcdserver: duplicate key given in txn request' \
		"txn putting a key twice via $n"
	out=$(printf '\nput dup 1\ndel dup\n\n\n' | it_ctl "$ep" txn 2>&1) || true
	it_expect_match "$out" 'etcdserver: duplicate key given in txn request' \
		"txn putting and deleting a key via $n"
	it_expect_eq "$(it_get "$ep" dup)" "" "no value stored by the refused txns"
	serving "$n" "refused txns"

	fails "get at a future revision via $n" \
		'etcdserver: mvcc: required revision is a future revision' \
		it_ctl "$ep" get foo --rev 999999
	# An empty key: etcdctl sends it as it is, and the server refuses it.
	fails "put of an empty key via $n" 'etcdserver: key is not provided' it_ctl "$ep" put "" v
	fails "get of an empty key via $n" 'etcdserver: key is not provided' it_ctl "$ep" get ""
	fails "del of an empty key via $n" 'etcdserver: key is not provided' it_ctl "$ep" del ""
	serving "$n" "future revision and empty keys"

	# Leases and members that do not exist, and a taken peer URL: etcd's errors, at once.
	t0=$SECONDS
	fails "revoke of an unknown lease via $n" 'etcdserver: requested lease not found' \
		it_ctl "$ep" lease revoke 1234abcd
	fails "put with an unknown lease via $n" 'etcdserver: requested lease not found' \
		it_ctl "$ep" put leased v --lease=1234abcd
	fails "remove of an unknown member via $n" 'etcdserver: member not found' \
		it_ctl "$ep" member remove 1234abcd
	purl=$(it_ctl "$ep" member list | awk -F', ' 'NR == 1 { print $4 }')
	fails "member add of a taken peer URL via $n" 'etcdserver: Peer URLs already exists' \
		it_ctl "$ep" member add extra --peer-urls="$purl"
	((SECONDS - t0 <= 10)) || it_fail "refusals took $((SECONDS - t0)) s via $n"
	serving "$n" "unknown leases and members"
done

# Compaction, then a read below it (once: compaction is cluster-wide).
rev_old=$(it_ctl "${EP[m1]}" put hist v1 -w json | it_json "d['header']['revision']")
rev_new=$(it_ctl "${EP[m1]}" put hist v2 -w json | it_json "d['header']['revision']")
it_expect_eq "$(it_ctl "${EP[m1]}" compaction "$rev_new")" "compacted revision $rev_new" "compaction"
for n in "${NAMES[@]}"; do
	fails "get below the compacted revision via $n" \
		'etcdserver: mvcc: required revision has been compacted' \
		it_ctl "${EP[$n]}" get hist --rev "$rev_old"
	serving "$n" "a read below the compacted revision"
done

# ===== 3. the peer ports =====
for n in "${NAMES[@]}"; do
	p=${PPORT[$n]}
	it_log "bad input on the peer port of $n"
	out=$(raw garbage "$p")
	expect_closed "$out" "$FAST" "random bytes on the peer port of $n"
	serving "$n" "random bytes on its peer port"
	if [[ $IT_FLAVOUR != cairn ]]; then
		# etcd's peer port is HTTP: each of these waits for its 5 s read timeout.
		it_skip_note "frame headers on the peer port of $n"
		continue
	fi
	for mode in peer-huge peer-badcrc peer-h2; do
		out=$(raw "$mode" "$p")
		expect_closed "$out" "$FAST" "$mode on the peer port of $n"
		serving "$n" "$mode on its peer port"
	done
	# hello_timeout_ms 2000.
	out=$(raw peer-half "$p")
	expect_closed "$out" 4 "half a frame header on the peer port of $n"
	read -r _ secs _ <<<"$out"
	lt 1.5 "$secs" || it_fail "half a frame header closed after $secs s, want 2 s"
	serving "$n" "half a frame header on its peer port"
done
# The cluster kept its leader and term through all of it.
it_expect_eq "$(agreed_leader)" "$LEADER" "leader after the bad input"
it_expect_eq "$(it_status "${EP[m1]}" raft_term)" "$TERM0" "raft term after the bad input"

# ===== the end: memory, a last write, SIGTERM =====
rss_limit=$((200 * 1024)) # kB; about 15 MB here, 50 MB under AddressSanitizer
for n in "${NAMES[@]}"; do
	rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/${IT_PID[$n]}/status")
	it_log "$n VmRSS $rss kB"
	((rss < rss_limit)) || it_fail "$n VmRSS $rss kB, over $rss_limit kB"
done
it_put "${EP[m2]}" last write
for n in "${NAMES[@]}"; do
	it_expect_eq "$(it_get "${EP[$n]}" last)" write "the last write through $n"
done
for n in "${NAMES[@]}"; do
	it_stop "$n" TERM 15
	it_expect_stopped TERM
done
it_log PASS

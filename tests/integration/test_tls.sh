#!/usr/bin/env bash
# test_tls.sh: mutual TLS on the client and the peer port, with certificates the test makes
# itself with the openssl command line (EC P-256): a CA, a second unrelated CA, a client-port
# and a peer-port certificate for each member (subjectAltName IP:127.0.0.1), a client
# certificate from the CA and one from the other CA.
#
# 1. Three members with https client and peer URLs, --client-cert-auth and
#    --peer-client-cert-auth, elect a leader (peer TLS works); a put through one member is read
#    through another.
# 2. A client without a certificate, a client with a certificate from the other CA and a client
#    that does not trust the CA are refused (etcdctl exits non-zero, within its timeouts); the
#    member serves the good client afterwards, and logs the refused handshakes.
# 3. A follower restarted with a peer certificate from the other CA cannot rejoin: it never
#    becomes leader, receives none of the writes made meanwhile, the two others keep serving
#    writes, and both they and it log the refusal (event=net). Restarted with its own
#    certificate, it catches up.
# 4. Plain http (h2c, and an HTTP/1.1 request) to an https client port fails at once; the
#    member keeps serving.
# 5. A member with a connection on each port that never starts its TLS handshake stops cleanly
#    on SIGTERM (exit 0); the two others keep serving.
# 6. A learner added with etcdctl member add joins over peer TLS (--initial-cluster-state
#    existing: it asks the members for its identity through their TLS peer port) and receives the
#    data.
# Missing log lines (2, 3) are reported last, once every check of behaviour has run.
source "$(dirname "$0")/lib.sh"

command -v openssl >/dev/null || it_fail "openssl not found"

# ---- certificates -----------------------------------------------------------------------------

PKI=$IT_TMP/pki
mkdir "$PKI"
# openssl's chatter goes to a file, printed with the other logs if the test fails.
OSSL_LOG=$IT_TMP/openssl.log

ossl() {
	openssl "$@" >>"$OSSL_LOG" 2>&1 || it_fail "openssl $*: $(tail -n 5 "$OSSL_LOG")"
}

# pki_key <name>: an EC P-256 key in $PKI/<name>.key (PKCS#8 PEM).
pki_key() {
	ossl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$PKI/$1.key"
}

# pki_ca <name>: a self-signed CA certificate in $PKI/<name>.crt.
pki_ca() {
	pki_key "$1"
	ossl req -x509 -new -sha256 -days 2 -key "$PKI/$1.key" -subj "/O=cairn-it/CN=$1" \
		-out "$PKI/$1.crt"
}

# pki_leaf <name> <ca> <extensions>: a certificate for <name> signed by <ca>, with the given
# X.509 v3 extensions (one per line), in $PKI/<name>.crt; checked against <ca> at once, so
# that a mistake here is not blamed on the server.
pki_leaf() {
	local name=$1 ca=$2
	pki_key "$name"
	printf '%s\n' "$3" >"$PKI/$name.ext"
	ossl req -new -sha256 -key "$PKI/$name.key" -subj "/O=cairn-it/CN=$name" -out "$PKI/$name.csr"
	ossl x509 -req -sha256 -days 2 -in "$PKI/$name.csr" -CA "$PKI/$ca.crt" -CAkey "$PKI/$ca.key" \
		-set_serial "0x$(openssl rand -hex 8)" -extfile "$PKI/$name.ext" -out "$PKI/$name.crt"
	ossl verify -CAfile "$PKI/$ca.crt" "$PKI/$name.crt"
}

# A member certificate serves as the server's on its port and, for the peer port, as the
# client's when it dials the others: both purposes, for 127.0.0.1.
MEMBER_EXT='basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth,clientAuth
subjectAltName=IP:127.0.0.1'
CLIENT_EXT='basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth'

pki_ca ca
pki_ca other-ca
NAMES=(m1 m2 m3)
for n in "${NAMES[@]}"; do
	pki_leaf "$n-client-port" ca "$MEMBER_EXT"
	pki_leaf "$n-peer" ca "$MEMBER_EXT"
done
# The rogue peer certificate: same names and purposes, the wrong CA.
pki_leaf rogue-peer other-ca "$MEMBER_EXT"
pki_leaf client ca "$CLIENT_EXT"
pki_leaf other-client other-ca "$CLIENT_EXT"
it_log "certificates made in $PKI"

# The good client for every etcdctl the harness runs (it_ctl, it_status, it_put, ...), through
# etcdctl's own environment variables; the refused clients below run without them.
export ETCDCTL_CACERT=$PKI/ca.crt ETCDCTL_CERT=$PKI/client.crt ETCDCTL_KEY=$PKI/client.key

# bad_ctl <endpoint> <etcdctl args...>: etcdctl without the good client's settings, with short
# dial and command timeouts (a refusal is immediate); RC is its exit status, OUT its stdout and
# stderr.
bad_ctl() {
	local ep=$1
	shift
	RC=0
	OUT=$(env -u ETCDCTL_CACERT -u ETCDCTL_CERT -u ETCDCTL_KEY timeout 30 "$IT_ETCDCTL" \
		--endpoints="$ep" --dial-timeout=1s --command-timeout=2s "$@" 2>&1) || RC=$?
}

# expect_refused <what> <endpoint> <etcdctl args...>: the command fails on its own (not by the
# 30 s timeout), within its 1 s dial and 2 s command timeouts plus some slack.
expect_refused() {
	local what=$1 t0=$SECONDS
	shift
	bad_ctl "$@"
	((RC != 0)) || it_fail "$what: etcdctl succeeded: $OUT"
	((RC != 124)) || it_fail "$what: etcdctl still running after 30 s"
	((SECONDS - t0 <= 6)) || it_fail "$what: refused only after $((SECONDS - t0)) s"
	it_log "$what: refused (status $RC): $(tail -n 1 <<<"$OUT")"
}

# What the logs lack is collected and reported at the end, once every check of behaviour has
# run, so that one missing log line does not hide the rest.
LOG_MISSING=()

# ---- 1. three members over TLS ----------------------------------------------------------------

mapfile -t P < <(it_ports 12)
declare -A EP
cluster=""
for i in 0 1 2; do
	cluster+="${cluster:+,}${NAMES[i]}=https://127.0.0.1:${P[3 + i]}"
	EP[${NAMES[i]}]=https://127.0.0.1:${P[i]}
done

# tls_args <i> <peer certificate>: IT_ARGS for member i with TLS and client certificate
# authentication on both ports; the peer certificate is $PKI/<peer certificate>.crt.
tls_args() {
	local i=$1 peer=$2 n=${NAMES[$1]}
	local c=https://127.0.0.1:${P[i]} p=https://127.0.0.1:${P[3 + i]}
	IT_ARGS=(--name "$n" --data-dir "$IT_TMP/$n.data"
		--listen-client-urls "$c" --advertise-client-urls "$c"
		--listen-peer-urls "$p" --initial-advertise-peer-urls "$p"
		--initial-cluster "$cluster" --initial-cluster-state new
		--initial-cluster-token "it-tls-$$"
		--cert-file "$PKI/$n-client-port.crt" --key-file "$PKI/$n-client-port.key"
		--trusted-ca-file "$PKI/ca.crt" --client-cert-auth
		--peer-cert-file "$PKI/$peer.crt" --peer-key-file "$PKI/$peer.key"
		--peer-trusted-ca-file "$PKI/ca.crt" --peer-client-cert-auth)
	if [[ $IT_FLAVOUR == cairn ]]; then
		IT_ARGS+=(--gossip-listen "127.0.0.1:${P[6 + i]}")
	fi
	it_gossip_join "${P[6 + i]}" "${P[6]}" "${P[7]}" "${P[8]}"
}
for i in 0 1 2; do
	tls_args "$i" "${NAMES[i]}-peer"
	it_start "${NAMES[i]}" "${IT_ARGS[@]}"
done
# Healthy means a quorum read succeeded, so the members talk to each other over peer TLS.
for n in "${NAMES[@]}"; do
	it_wait_healthy "$n" "${EP[$n]}" 15
done

declare -A ID
for n in "${NAMES[@]}"; do
	ID[$n]=$(it_status "${EP[$n]}" member_id)
done
leader_of() { it_status "$1" leader 2>/dev/null || echo 0; }
leader=""
deadline=$((SECONDS + 5))
while :; do
	l1=$(leader_of "${EP[m1]}") l2=$(leader_of "${EP[m2]}") l3=$(leader_of "${EP[m3]}")
	if [[ $l1 != 0 && $l1 == "$l2" && $l2 == "$l3" ]]; then
		leader=$l1
		break
	fi
	((SECONDS < deadline)) || it_fail "members do not agree on a leader: $l1 $l2 $l3"
	sleep 0.1
done
lname=""
for n in "${NAMES[@]}"; do
	[[ ${ID[$n]} == "$leader" ]] && lname=$n
done
[[ -n $lname ]] || it_fail "leader $leader is not one of the members ${ID[*]}"
it_log "leader: $lname ($leader)"

it_put "${EP[m1]}" tls/a one
it_expect_eq "$(it_get "${EP[m2]}" tls/a)" one "tls/a put through m1, read through m2"
it_put "${EP[m3]}" tls/b three
it_expect_eq "$(it_get "${EP[m1]}" tls/b)" three "tls/b put through m3, read through m1"

# ---- 2. clients the client port refuses --------------------------------------------------------

ep=${EP[m2]}
expect_refused "client without a certificate" "$ep" --cacert "$PKI/ca.crt" put tls/nocert x
it_put "$ep" tls/after-nocert ok
expect_refused "client with a certificate from the other CA" "$ep" --cacert "$PKI/ca.crt" \
	--cert "$PKI/other-client.crt" --key "$PKI/other-client.key" put tls/othercert x
it_put "$ep" tls/after-othercert ok
expect_refused "client that does not trust the CA" "$ep" \
	--cert "$PKI/client.crt" --key "$PKI/client.key" put tls/notrust x
it_put "$ep" tls/after-notrust ok
# None of the refused puts went through.
for k in tls/nocert tls/othercert tls/notrust; do
	it_expect_eq "$(it_get "${EP[m1]}" "$k")" "" "$k, put by a refused client"
done
it_expect_eq "$(it_get "${EP[m3]}" tls/after-notrust)" ok "tls/after-notrust through m3"
if [[ $IT_FLAVOUR == cairn ]]; then
	if line=$(grep -E -m 1 'event=net .*TLS handshake failed' "$IT_TMP/m2.log"); then
		it_log "m2 logs: $line"
	else
		LOG_MISSING+=("m2 does not log the refused client handshakes")
	fi
else
	it_skip_note "the client-port refusal in the log"
fi

# ---- 3. a member with a peer certificate from the other CA -------------------------------------

# A follower is restarted with the rogue peer certificate (still trusting the CA, so the only
# fault is its own certificate): the others refuse its connections (client certificate
# authentication) and it refuses nothing of theirs, but the others also refuse its server
# certificate when they dial it.
rogue=""
for n in "${NAMES[@]}"; do
	[[ $n == "$lname" ]] || { rogue=$n && break; }
done
others=()
for n in "${NAMES[@]}"; do
	[[ $n == "$rogue" ]] || others+=("$n")
done
ri=$((${rogue#m} - 1))
it_stop "$rogue" TERM 10
it_expect_stopped TERM
mark=()
for n in "${others[@]}"; do
	mark+=("$(wc -l <"$IT_TMP/$n.log")") # log lines before the rogue start
done
tls_args "$ri" rogue-peer
it_start "$rogue" "${IT_ARGS[@]}"
# Its client port is up (Status is answered locally, without a leader). etcd serves clients
# only once it has joined its cluster, so under etcd the rogue is judged by the others alone.
rogue_serves=1
if [[ $IT_FLAVOUR == etcd ]]; then
	rogue_serves=0
	it_skip_note "the rogue member's own answers (etcd serves no client before it joins)"
fi
deadline=$((SECONDS + 15))
while ((rogue_serves)) && ! it_status "${EP[$rogue]}" member_id >/dev/null 2>&1; do
	it_running "$rogue" || it_fail "$rogue exited with the rogue peer certificate"
	((SECONDS < deadline)) || it_fail "$rogue's client port not answering within 15 s"
	sleep 0.1
done
it_log "$rogue restarted with a peer certificate from the other CA"

# For 3 s (three election timeouts) it is never leader and the others keep their leader; the
# others take writes all along.
i=0
end=$((SECONDS + 3))
while ((SECONDS < end)); do
	it_running "$rogue" || it_fail "$rogue exited with the rogue peer certificate"
	if ((rogue_serves)); then
		r=$(leader_of "${EP[$rogue]}")
		[[ $r != "${ID[$rogue]}" ]] || it_fail "$rogue became leader with a rogue peer certificate"
	fi
	for n in "${others[@]}"; do
		l=$(leader_of "${EP[$n]}")
		it_expect_eq "$l" "$leader" "leader seen by $n while $rogue is rogue"
	done
	it_put "${EP[${others[i % 2]}]}" "tls/while-rogue/$i" "v$i"
	i=$((i + 1))
	sleep 0.2
done
it_log "$i writes through ${others[*]} while $rogue ran with the rogue certificate"
# None of those writes reached it: its own store (a serializable read) does not have them,
# while the others do.
if ((rogue_serves)); then
	it_expect_eq "$(it_get "${EP[$rogue]}" tls/while-rogue/0 --consistency=s)" "" \
		"tls/while-rogue/0 in $rogue's store"
fi
for n in "${others[@]}"; do
	it_expect_eq "$(it_get "${EP[$n]}" tls/while-rogue/0 --consistency=s)" v0 \
		"tls/while-rogue/0 in $n's store"
done

# The refusal is in the logs of the members that refuse its certificate. Waited for 5 s at most. The
# reason must be named ("handshake" alone is not enough: the client port logs a "TLS handshake
# failed ... unexpected eof" line whenever a client drops a connection mid-handshake, and only
# good clients connect from here on).
if [[ $IT_FLAVOUR == cairn ]]; then
	refusal='event=net .*(certificate|unknown ca)'
	# refusal_since <log> <first line>: the first refusal line from that line on. (No grep -m:
	# it would end the pipe early, which pipefail can count as a failure.)
	refusal_since() {
		local found
		found=$(tail -n "+$2" "$1" | grep -Ei "$refusal") || return 1
		echo "${found%%$'\n'*}"
	}
	starts=("$IT_TMP/${others[0]}.log" "$IT_TMP/${others[1]}.log" "$IT_TMP/$rogue.log")
	rogue_mark=$(grep -n -m 1 '^===== start: .*rogue-peer' "$IT_TMP/$rogue.log" | cut -d: -f1)
	firsts=($((mark[0] + 1)) $((mark[1] + 1)) "$rogue_mark")
	who=("${others[0]} (refusing $rogue)" "${others[1]} (refusing $rogue)" "$rogue (refused)")
	# A member that dials the rogue names the refused certificate; inbound refusals on the peer
	# port, and the rogue's own view (it hears only that the connection failed), are not named
	# yet: one line from either of the others is required, the rest is reported.
	deadline=$((SECONDS + 5))
	named=0
	for k in 0 1 2; do
		line=
		until line=$(refusal_since "${starts[k]}" "${firsts[k]}"); do
			((SECONDS < deadline)) || break
			sleep 0.1
		done
		if [[ -n $line ]]; then
			it_log "${who[k]} logs: $line"
			((k < 2)) && named=$((named + 1))
		else
			it_log "${who[k]}: no event=net line naming the certificate refusal"
		fi
	done
	if ((named == 0)); then
		LOG_MISSING+=("neither ${others[0]} nor ${others[1]} names the refused certificate")
	fi
else
	it_skip_note "the peer refusal in the logs"
fi

# Back with its own certificate, it rejoins and catches up: the refusal was the certificate's.
it_stop "$rogue" TERM 10
it_expect_stopped TERM
tls_args "$ri" "$rogue-peer"
it_start "$rogue" "${IT_ARGS[@]}"
it_wait_healthy "$rogue" "${EP[$rogue]}" 15
last=$((i - 1))
deadline=$((SECONDS + 10))
until [[ $(it_get "${EP[$rogue]}" "tls/while-rogue/$last" --consistency=s 2>/dev/null) == "v$last" ]]; do
	((SECONDS < deadline)) || it_fail "$rogue has not caught up within 10 s of its restart"
	sleep 0.1
done
it_log "$rogue rejoined with its own certificate and caught up"

# ---- 4. plain http to an https client port -----------------------------------------------------

port=${P[0]}
# etcdctl with an http:// endpoint speaks h2c (HTTP/2 with prior knowledge) over plain TCP.
expect_refused "h2c to the https client port" "http://127.0.0.1:$port" put tls/plain x
# An HTTP/1.1 request over plain TCP: the member ends the connection within 5 s (with a TLS
# alert, an HTTP error or nothing; never a hang or a served request).
answer=$(python3 - "$port" <<'EOF'
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5)
s.sendall(b"GET /etcdserverpb.KV/Range HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
got = b""
try:
    while True:
        b = s.recv(4096)
        if not b:
            break
        got += b
except socket.timeout:
    print("timeout")
    sys.exit(0)
except ConnectionResetError:
    pass
print("served" if got[:10] in (b"HTTP/1.1 2", b"HTTP/1.0 2") else "closed")
EOF
)
it_expect_eq "$answer" closed "an HTTP/1.1 request over plain TCP to the https port"
it_running m1 || it_fail "m1 exited after plain http on its client port"
it_put "${EP[m1]}" tls/after-plain ok
it_expect_eq "$(it_get "${EP[m2]}" tls/after-plain)" ok "tls/after-plain through m2"
it_expect_eq "$(it_get "${EP[m1]}" tls/plain)" "" "tls/plain, put over h2c"

# ---- 5. stopping with handshakes pending -------------------------------------------------------

# A TCP connection to each port of a follower that never starts its TLS handshake, then SIGTERM:
# the member stops in time and cleanly (exit 0), and the two others keep serving.
python3 - "$IT_TMP/idle.ready" "${P[ri]}" "${P[3 + ri]}" <<'PY' &
import socket, sys, time
held = [socket.create_connection(("127.0.0.1", int(p)), timeout=5) for p in sys.argv[2:]]
open(sys.argv[1], "w").close()
time.sleep(60)
PY
IT_PID[idle]=$!
deadline=$((SECONDS + 5))
until [[ -e $IT_TMP/idle.ready ]]; do
	it_running idle || it_fail "the idle connections could not be opened"
	((SECONDS < deadline)) || it_fail "the idle connections not open within 5 s"
	sleep 0.05
done
it_stop "$rogue" TERM 10
it_expect_stopped TERM
kill "${IT_PID[idle]}"
it_wait_exit idle 5 || it_fail "the idle connections' process did not exit"
for n in "${others[@]}"; do
	it_put "${EP[$n]}" "tls/after-stop/$n" ok
done
it_expect_eq "$(it_get "${EP[${others[0]}]}" "tls/after-stop/${others[1]}")" ok \
	"tls/after-stop/${others[1]} through ${others[0]}"

# ---- 6. a member that joins over peer TLS -----------------------------------------------------

pki_leaf m4-client-port ca "$MEMBER_EXT"
pki_leaf m4-peer ca "$MEMBER_EXT"
c4=https://127.0.0.1:${P[9]} p4=https://127.0.0.1:${P[10]}
ep=${EP[${others[0]}]}
out=$(it_ctl "$ep" member add m4 --learner --peer-urls="$p4" 2>&1) ||
	it_fail "member add m4 over TLS: $out"
init=$(sed -n 's/^ETCD_INITIAL_CLUSTER="\(.*\)"$/\1/p' <<<"$out")
[[ -n $init ]] || it_fail "member add printed no ETCD_INITIAL_CLUSTER: $out"
IT_ARGS=(--name m4 --data-dir "$IT_TMP/m4.data"
	--listen-client-urls "$c4" --advertise-client-urls "$c4"
	--listen-peer-urls "$p4" --initial-advertise-peer-urls "$p4"
	--initial-cluster "$init" --initial-cluster-state existing
	--initial-cluster-token "it-tls-$$"
	--cert-file "$PKI/m4-client-port.crt" --key-file "$PKI/m4-client-port.key"
	--trusted-ca-file "$PKI/ca.crt" --client-cert-auth
	--peer-cert-file "$PKI/m4-peer.crt" --peer-key-file "$PKI/m4-peer.key"
	--peer-trusted-ca-file "$PKI/ca.crt" --peer-client-cert-auth)
if [[ $IT_FLAVOUR == cairn ]]; then
	IT_ARGS+=(--gossip-listen "127.0.0.1:${P[11]}")
fi
it_gossip_join "${P[11]}" "${P[6]}" "${P[7]}" "${P[8]}"
it_start m4 "${IT_ARGS[@]}"
deadline=$((SECONDS + 20))
until [[ $(it_get "$c4" tls/after-plain --consistency=s 2>/dev/null) == ok ]]; do
	it_running m4 || it_fail "m4 exited while joining over TLS"
	((SECONDS < deadline)) || it_fail "m4 has not the data 20 s after joining over TLS"
	sleep 0.2
done
it_log "m4 joined over peer TLS and has the data"

if ((${#LOG_MISSING[@]} > 0)); then
	it_log "every check of behaviour passed; the logs lack:"
	printf '  %s\n' "${LOG_MISSING[@]}" >&2
	it_fail "TLS refusals missing from the logs (${#LOG_MISSING[@]})"
fi
it_log PASS

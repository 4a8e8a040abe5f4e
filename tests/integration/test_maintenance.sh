#!/usr/bin/env bash
# test_maintenance.sh: etcd's Maintenance and Auth services and the gRPC health service on a
# three-member cluster started with a 1 MiB --quota-backend-bytes, driven by etcdctl:
#  (1) endpoint health, endpoint status on every member; grpc.health.v1.Health/Check SERVING
#      (through curl's HTTP/2, when curl is there);
#  (2) endpoint hashkv: one hash on every member once they hold the same revision; a compacted
#      revision and a future one refused with etcd's errors; defrag on every member;
#  (3) the Auth calls as etcd 3.4 answers them with authentication disabled and no users;
#  (4) move-leader to a named member, and to an id that is no member;
#  (5) snapshot save; `cairn snapshot status` of the file; a corrupt and a cut copy refused by
#      `cairn snapshot restore`; the file restored into a new one-member cluster that serves the
#      same keys and lease under a new cluster id and member table, and passes `etcdctl check
#      datascale`; a snapshot of it larger than a call's send queue;
#  (6) NOSPACE: big puts until the quota refuses one; the alarm on every member's alarm list
#      and in endpoint status; puts refused, deletes go on; the alarm still raised after a
#      member restarts; delete, compact and disarm make puts work again;
#  (7) every member stops with status 0.
source "$(dirname "$0")/lib.sh"

if [[ $IT_FLAVOUR == etcd ]]; then
	it_skip_note "cairn snapshot and Cairn's texts: this test is Cairn's own"
	exit 0
fi

QUOTA=1048576
it_cluster_init 3 it-maint
it_cluster_start 20 --quota-backend-bytes "$QUOTA"
it_wait_leader 10 0 "${IT_EP[@]}"

# ---- (1) health and status ------------------------------------------------------------------
out=$(it_ctl "$IT_ALL" endpoint health 2>&1) || it_fail "endpoint health: $out"
it_expect_eq "$(grep -c 'is healthy' <<<"$out")" 3 "healthy members"
out=$(it_ctl "$IT_ALL" endpoint status) || it_fail "endpoint status: $out"
it_expect_eq "$(wc -l <<<"$out")" 3 "endpoint status lines"
it_expect_eq "$(it_status "${IT_EP[m1]}" leader)" "$IT_LEADER" "leader in status"
# grpc_raw <endpoint> <method path> <printf format of the framed request>: the response body in
# hex, or with -D the headers and trailers (curl speaks gRPC's framing over h2c well enough).
grpc_raw() {
	local dump=""
	if [[ $1 == -D ]]; then
		dump=1
		shift
	fi
	# shellcheck disable=SC2059 # the format is the request's bytes
	printf "$3" | if [[ -n $dump ]]; then
		timeout 10 curl -s --http2-prior-knowledge -X POST -H 'content-type: application/grpc' \
			-H 'te: trailers' --data-binary @- -D - -o /dev/null "$1$2"
	else
		timeout 10 curl -s --http2-prior-knowledge -X POST -H 'content-type: application/grpc' \
			-H 'te: trailers' --data-binary @- "$1$2" | od -An -tx1 | tr -d ' \n'
	fi
}
HAVE_CURL=""
if command -v curl >/dev/null; then
	HAVE_CURL=1
	# an empty HealthCheckRequest; the answer 0x08 0x01 is status SERVING
	got=$(grpc_raw "${IT_EP[m2]}" /grpc.health.v1.Health/Check '\0\0\0\0\0')
	it_expect_eq "$got" 00000000020801 "grpc health Check"
else
	it_skip_note "curl not installed: grpc.health.v1.Health/Check not probed"
fi

# ---- (2) hashkv, defrag --------------------------------------------------------------------
for i in $(seq 1 20); do
	it_put "$IT_ALL" "hk/$i" "v$i"
done
rev=$(it_status "${IT_EP[m1]}" revision)
hashes=""
for n in "${IT_NAMES[@]}"; do
	h=""
	for _ in $(seq 1 50); do
		if h=$(it_ctl "${IT_EP[$n]}" endpoint hashkv --rev "$rev" 2>/dev/null); then
			break
		fi
		h=""
		sleep 0.1
	done
	[[ -n $h ]] || it_fail "hashkv --rev $rev on $n"
	hashes+="${h##*, }"$'\n'
done
it_expect_eq "$(sort -u <<<"$hashes" | grep -c .)" 1 "hashkv at revision $rev on 3 members"
it_ctl "$IT_ALL" compact "$rev" >/dev/null
out=$(it_ctl "${IT_EP[m1]}" endpoint hashkv --rev "$((rev - 1))" 2>&1) && it_fail "hashkv below compaction: $out"
it_expect_match "$out" "required revision has been compacted" "hashkv of a compacted revision"
out=$(it_ctl "${IT_EP[m1]}" endpoint hashkv --rev 999999 2>&1) && it_fail "hashkv future: $out"
it_expect_match "$out" "required revision is a future revision" "hashkv of a future revision"
out=$(it_ctl "$IT_ALL" defrag 2>&1) || it_fail "defrag: $out"
it_expect_eq "$(grep -c 'Finished defragmenting etcd member' <<<"$out")" 3 "defrag lines"

# ---- (3) auth, disabled ----------------------------------------------------------------------
it_expect_eq "$(it_ctl "$IT_ALL" user list)" "" "user list"
it_expect_eq "$(it_ctl "$IT_ALL" role list)" "" "role list"
out=$(it_ctl "$IT_ALL" auth disable) || it_fail "auth disable: $out"
it_expect_eq "$out" "Authentication Disabled" "auth disable"
for probe in "auth enable|root user does not exist" "user get bob|user name not found" \
	"user delete bob|user name not found" "role get r|role name not found" \
	"role delete r|role name not found" "user grant-role bob r|user name not found" \
	"role grant-permission r read k|role name not found" \
	"user add --no-password bob|users and roles are not supported"; do
	cmd=${probe%%|*}
	# shellcheck disable=SC2086 # the probe's words are etcdctl's arguments
	out=$(it_ctl "$IT_ALL" $cmd 2>&1) && it_fail "$cmd succeeded: $out"
	it_expect_match "$out" "${probe#*|}" "$cmd"
done
# etcd's client goes on without a token when Authenticate says so
out=$(it_ctl "$IT_ALL" --user root:x get k 2>&1) || it_fail "get with --user: $out"
it_expect_match "$out" "authentication is not enabled" "get with --user"

# ---- (4) move-leader -----------------------------------------------------------------------------
target="" target_name=""
for n in "${IT_NAMES[@]}"; do
	id=$(it_status "${IT_EP[$n]}" member_id)
	if [[ $id != "$IT_LEADER" ]]; then
		target=$id target_name=$n
	fi
done
hex=$(printf '%x' "$target")
out=$(it_ctl "$IT_ALL" move-leader "$hex" 2>&1) || it_fail "move-leader $hex: $out"
it_expect_match "$out" "Leadership transferred from [0-9a-f]+ to $hex" "move-leader"
it_wait_leader 10 0 "${IT_EP[@]}"
it_expect_eq "$IT_LEADER" "$target" "leader after move-leader to $target_name"
if [[ -n $HAVE_CURL ]]; then
	# MoveLeader sent to a follower (etcdctl always finds the leader first)
	for n in "${IT_NAMES[@]}"; do
		if [[ $(it_status "${IT_EP[$n]}" member_id) != "$IT_LEADER" ]]; then
			out=$(grpc_raw -D "${IT_EP[$n]}" /etcdserverpb.Maintenance/MoveLeader '\0\0\0\0\x02\x08\x01')
			it_expect_match "$out" "grpc-message: etcdserver: not leader" "MoveLeader on $n"
			break
		fi
	done
fi
out=$(it_ctl "$IT_ALL" move-leader 12345 2>&1) && it_fail "move-leader to no member: $out"
it_expect_match "$out" "etcdserver: bad leader transferee" "move-leader to no member"

# ---- (5) snapshot save, status, restore ----------------------------------------------------------
for i in $(seq 1 10); do
	it_put "$IT_ALL" "snap/$i" "s$i"
done
out=$(it_ctl "$IT_ALL" lease grant 600) || it_fail "lease grant: $out"
lease=$(awk '{ print $2 }' <<<"$out")
it_expect_eq "$(it_ctl "$IT_ALL" put --lease="$lease" snap/leased l)" OK "put with a lease"
SNAP=$IT_TMP/snap.db
out=$(it_ctl "${IT_EP[m3]}" snapshot save "$SNAP" 2>&1) || it_fail "snapshot save: $out"
it_expect_match "$out" "Snapshot saved at" "snapshot save"
size=$(stat -c %s "$SNAP")
it_expect_eq $((size % 512)) 32 "snapshot size: a copy of whole pages and a SHA-256"
rev=$(it_status "${IT_EP[m3]}" revision)
out=$("$IT_BIN" snapshot status "$SNAP" -w simple) || it_fail "cairn snapshot status: $out"
it_expect_match "$out" "^[0-9a-f]+, $rev, 31, " "cairn snapshot status"
out=$(it_ctl "${IT_EP[m3]}" snapshot status "$SNAP" 2>&1) && it_fail "etcdctl snapshot status accepted it: $out"

RP=$(it_ports 3 | tr '\n' ' ')
read -r rc rp rg <<<"$RP"
restore_args=(--name r1 --initial-cluster "r1=http://127.0.0.1:$rp"
	--initial-advertise-peer-urls "http://127.0.0.1:$rp" --initial-cluster-token restored)
cp "$SNAP" "$IT_TMP/bad.db"
printf 'X' | dd of="$IT_TMP/bad.db" bs=1 seek=5000 conv=notrunc 2>/dev/null
out=$("$IT_BIN" snapshot restore "$IT_TMP/bad.db" --data-dir "$IT_TMP/bad.data" \
	"${restore_args[@]}" 2>&1) && it_fail "corrupt snapshot restored: $out"
it_expect_match "$out" "integrity check failed" "corrupt snapshot"
[[ ! -e $IT_TMP/bad.data ]] || it_fail "a refused restore left $IT_TMP/bad.data"
head -c 8192 "$SNAP" >"$IT_TMP/cut.db"
out=$("$IT_BIN" snapshot restore "$IT_TMP/cut.db" --data-dir "$IT_TMP/cut.data" \
	"${restore_args[@]}" 2>&1) && it_fail "cut snapshot restored: $out"
it_expect_match "$out" "no SHA-256" "cut snapshot"
out=$("$IT_BIN" snapshot restore "$SNAP" --data-dir "$IT_TMP/r1.data" "${restore_args[@]}" 2>&1) ||
	it_fail "snapshot restore: $out"
it_log "$out"
it_start r1 "${restore_args[@]}" --data-dir "$IT_TMP/r1.data" \
	--listen-client-urls "http://127.0.0.1:$rc" --advertise-client-urls "http://127.0.0.1:$rc" \
	--listen-peer-urls "http://127.0.0.1:$rp" --gossip-listen "127.0.0.1:$rg"
REP=http://127.0.0.1:$rc
it_wait_healthy r1 "$REP" 20
for i in 1 5 10; do
	it_expect_eq "$(it_get "$REP" "snap/$i")" "s$i" "restored snap/$i"
done
it_expect_eq "$(it_ctl "$REP" get hk/ --prefix --keys-only | grep -c .)" 20 "restored hk/ keys"
it_expect_match "$(it_ctl "$REP" lease timetolive "$lease" --keys)" "attached keys\(\[snap/leased\]\)" \
	"restored lease"
members=$(it_ctl "$REP" member list)
it_expect_eq "$(wc -l <<<"$members")" 1 "restored member list"
it_expect_match "$members" ", r1, http://127.0.0.1:$rp," "restored member"
[[ $(it_status "$REP" cluster_id) != "$(it_status "${IT_EP[m1]}" cluster_id)" ]] ||
	it_fail "the restored cluster kept the old cluster id"
it_put "$REP" after/restore yes
# etcdctl's data scale check (10,000 puts of 1 KiB, memory read from /metrics) on the restored
# member, whose quota is the default
out=$(timeout 120 "$IT_ETCDCTL" --endpoints="$REP" check datascale 2>&1) ||
	it_fail "check datascale: $out"
it_expect_match "$out" "PASS: Approximate system memory used" "check datascale"
# a snapshot larger than a call's send queue (8 MiB): sent as the client reads it, SHA-256 whole
out=$(it_ctl "$REP" snapshot save "$IT_TMP/big.db" 2>&1) || it_fail "snapshot save (big): $out"
size=$(stat -c %s "$IT_TMP/big.db")
((size > 8 * 1024 * 1024)) || it_fail "the big snapshot has only $size bytes"
out=$("$IT_BIN" snapshot status "$IT_TMP/big.db" -w json) || it_fail "status of the big snapshot: $out"
it_expect_eq "$(it_json "d['totalSize']" <<<"$out")" $((size - 32)) "big snapshot size"
it_stop r1 TERM 20

# ---- (6) NOSPACE -------------------------------------------------------------------------------
big=$(head -c 100000 /dev/zero | tr '\0' x)
refused=""
for i in $(seq 1 40); do
	if ! out=$(it_ctl "$IT_ALL" put "big/$i" "$big" 2>&1); then
		refused=$out
		break
	fi
done
it_expect_match "$refused" "etcdserver: mvcc: database space exceeded" "put past the quota"
for n in "${IT_NAMES[@]}"; do
	al=""
	for _ in $(seq 1 50); do
		al=$(it_ctl "${IT_EP[$n]}" alarm list 2>/dev/null || true)
		[[ -n $al ]] && break
		sleep 0.1
	done
	it_expect_match "$al" "^memberID:[0-9]+ alarm:NOSPACE $" "alarm list on $n"
done
it_expect_match "$(it_ctl "${IT_EP[m1]}" endpoint status)" "alarm:NOSPACE" "status errors"
if [[ -n $HAVE_CURL ]]; then
	got=$(grpc_raw "${IT_EP[m1]}" /grpc.health.v1.Health/Check '\0\0\0\0\0')
	it_expect_eq "$got" 00000000020802 "grpc health Check while NOSPACE (NOT_SERVING)"
fi
out=$(it_ctl "$IT_ALL" put small v 2>&1) && it_fail "put while NOSPACE is raised: $out"
it_expect_match "$out" "database space exceeded" "put while NOSPACE"
out=$(it_ctl "$IT_ALL" txn <<<$'\nput t v\n\n' 2>&1) && it_fail "txn put while NOSPACE: $out"
it_expect_eq "$(it_ctl "$IT_ALL" del big/1)" 1 "delete while NOSPACE"

# the alarm is in the store: a restarted member still has it
it_stop m2 TERM 20
it_cluster_args m2 --quota-backend-bytes "$QUOTA"
it_start m2 "${IT_ARGS[@]}"
it_wait_healthy m2 "${IT_EP[m2]}" 20
it_expect_match "$(it_ctl "${IT_EP[m2]}" alarm list)" "alarm:NOSPACE" "alarm after a restart"

it_ctl "$IT_ALL" del big/ --prefix >/dev/null
rev=$(it_status "${IT_EP[m1]}" revision)
it_ctl "$IT_ALL" compact "$rev" --physical >/dev/null
out=$(it_ctl "$IT_ALL" alarm disarm) || it_fail "alarm disarm: $out"
it_expect_match "$out" "alarm:NOSPACE" "alarm disarm"
it_expect_eq "$(it_ctl "$IT_ALL" alarm list)" "" "alarm list after disarm"
ok=""
for _ in $(seq 1 50); do
	if out=$(it_ctl "$IT_ALL" put small v 2>&1); then
		ok=$out
		break
	fi
	sleep 0.2
done
it_expect_eq "$ok" OK "put after disarm"

# every member stops cleanly (under ASan: no leak from the streams and transfers above)
for n in "${IT_NAMES[@]}"; do
	it_stop "$n" TERM 30
	it_expect_stopped TERM
done
it_log "PASS"

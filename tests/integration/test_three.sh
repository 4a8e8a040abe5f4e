#!/usr/bin/env bash
# test_three.sh: three members formed with --initial-cluster. A write through one member is
# read through each other; every member agrees on one leader. kill -9 of the leader while a
# client writes: the two others elect a new leader within 5 s, writes succeed again, every
# acknowledged write is readable through both; the old leader, restarted, rejoins, follows the
# new leader and serves every key.
source "$(dirname "$0")/lib.sh"

mapfile -t P < <(it_ports 9)
NAMES=(m1 m2 m3)
declare -A EP
cluster=""
for i in 0 1 2; do
	cluster+="${cluster:+,}${NAMES[i]}=http://127.0.0.1:${P[3 + i]}"
	EP[${NAMES[i]}]=http://127.0.0.1:${P[i]}
done
# three_args <i>: IT_ARGS for member i, the same at its first start and at a restart.
three_args() {
	it_member_args "${NAMES[$1]}" "${P[$1]}" "${P[3 + $1]}" "${P[6 + $1]}"
	IT_ARGS+=(--initial-cluster "$cluster" --initial-cluster-state new
		--initial-cluster-token "it-three-$$")
}
for i in 0 1 2; do
	three_args "$i"
	it_start "${NAMES[i]}" "${IT_ARGS[@]}"
done
for n in "${NAMES[@]}"; do
	it_wait_healthy "$n" "${EP[$n]}" 15
done
ALL="${EP[m1]},${EP[m2]},${EP[m3]}"

# One leader, the same for all; member ids distinct; member list shows the three.
leader_of() { it_status "$1" leader 2>/dev/null || echo 0; }
declare -A ID
for n in "${NAMES[@]}"; do
	ID[$n]=$(it_status "${EP[$n]}" member_id)
done
[[ ${ID[m1]} != "${ID[m2]}" && ${ID[m2]} != "${ID[m3]}" && ${ID[m1]} != "${ID[m3]}" ]] ||
	it_fail "member ids not distinct: ${ID[*]}"
members=$(it_ctl "${EP[m2]}" member list -w json)
it_expect_eq "$(it_json "sorted(m['name'] for m in d['members'])" <<<"$members")" \
	'["m1", "m2", "m3"]' "member list names"
it_expect_eq "$(it_json "sorted(str(m['ID']) for m in d['members'])" <<<"$members")" \
	"$(printf '%s\n' "${ID[@]}" | sort | python3 -c 'import json,sys; print(json.dumps(sys.stdin.read().split()))')" \
	"member list ids"
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
old=""
for n in "${NAMES[@]}"; do
	[[ ${ID[$n]} == "$leader" ]] && old=$n
done
[[ -n $old ]] || it_fail "leader $leader is not one of the members ${ID[*]}"
it_log "leader: $old ($leader)"

# A write through one member, read through each other (linearizable and, once applied,
# serializable).
it_put "${EP[m1]}" x/through-m1 one
it_put "${EP[m3]}" x/through-m3 three
for n in m2 m3; do
	it_expect_eq "$(it_get "${EP[$n]}" x/through-m1)" one "x/through-m1 read through $n"
done
it_expect_eq "$(it_get "${EP[m1]}" x/through-m3)" three "x/through-m3 read through m1"
it_expect_eq "$(it_get "${EP[m2]}" x/through-m3 --consistency=s)" three \
	"x/through-m3 read through m2 (serializable)"

# A client writing w/<n> through all three endpoints, one put at a time, recording each key
# etcdctl acknowledged (printed OK for). It stops when $IT_TMP/writer.stop appears.
ACKED=$IT_TMP/acked
: >"$ACKED"
writer() {
	local i=0
	while [[ ! -e $IT_TMP/writer.stop ]]; do
		local k
		k=$(printf 'w/%06d' "$i")
		if [[ $(timeout 10 "$IT_ETCDCTL" --endpoints="$ALL" --dial-timeout=1s \
			--command-timeout=2s put "$k" "v$i" 2>>"$IT_TMP/writer.log") == OK ]]; then
			echo "$k" >>"$ACKED"
		fi
		i=$((i + 1))
	done
}
writer &
IT_PID[writer]=$!
acked() { wc -l <"$ACKED"; }
wait_acked() { # <count> <seconds>
	local deadline=$((SECONDS + $2))
	while (($(acked) < $1)); do
		((SECONDS < deadline)) || it_fail "only $(acked) writes acknowledged, want $1 within $2 s"
		sleep 0.05
	done
}
wait_acked 20 20

# kill -9 of the leader; a new leader among the two others within 5 s.
survivors=()
for n in "${NAMES[@]}"; do
	[[ $n == "$old" ]] || survivors+=("$n")
done
t0=${EPOCHREALTIME/./}
it_stop "$old" KILL 5
n_before=$(acked)
new=""
deadline=$((t0 + 5000000))
while :; do
	a=$(leader_of "${EP[${survivors[0]}]}") b=$(leader_of "${EP[${survivors[1]}]}")
	if [[ $a != 0 && $a != "$leader" && $a == "$b" ]]; then
		new=$a
		break
	fi
	((${EPOCHREALTIME/./} < deadline)) ||
		it_fail "no new leader within 5 s of the kill (the survivors report $a and $b)"
	sleep 0.05
done
it_log "new leader $new, $(((${EPOCHREALTIME/./} - t0) / 1000)) ms after the kill"
[[ $new == "${ID[${survivors[0]}]}" || $new == "${ID[${survivors[1]}]}" ]] ||
	it_fail "new leader $new is not a survivor"

# Writes succeed again: the writer gets 20 more acknowledgements, and direct puts through
# each survivor succeed.
wait_acked $((n_before + 20)) 20
for n in "${survivors[@]}"; do
	it_put "${EP[$n]}" "after/$n" ok
done
touch "$IT_TMP/writer.stop"
it_wait_exit writer 30 || it_fail "the writer did not stop"
it_log "$(acked) writes acknowledged"

# Every acknowledged write is readable, with its value, through each survivor.
check_acked() { # <endpoint> <what>
	local missing
	missing=$(it_ctl "$1" get w/ --prefix -w json | python3 -c '
import base64, json, sys
d = json.load(sys.stdin)
have = {base64.b64decode(k["key"]).decode(): base64.b64decode(k["value"]).decode()
        for k in d.get("kvs", [])}
missing = []
for line in open(sys.argv[1]):
    k = line.strip()
    if have.get(k) != "v" + str(int(k[2:])):
        missing.append(k)
print(" ".join(missing))
' "$ACKED")
	[[ -z $missing ]] || it_fail "$2: acknowledged writes missing: $missing"
}
for n in "${survivors[@]}"; do
	check_acked "${EP[$n]}" "read through $n"
	it_expect_eq "$(it_get "${EP[$n]}" x/through-m1)" one "x/through-m1 through $n"
done

# The old leader restarts with the same flags (ignored but --name and --data-dir, since its
# data directory holds a member), rejoins and serves every key.
three_args $((${old#m} - 1))
it_start "$old" "${IT_ARGS[@]}"
it_wait_healthy "$old" "${EP[$old]}" 15
deadline=$((SECONDS + 10))
while [[ $(leader_of "${EP[$old]}") != "$new" ]]; do
	((SECONDS < deadline)) || it_fail "$old does not follow the new leader $new"
	sleep 0.1
done
check_acked "${EP[$old]}" "read through the restarted $old"
for n in "${survivors[@]}"; do
	it_expect_eq "$(it_get "${EP[$old]}" "after/$n")" ok "after/$n through $old"
done
# Serializable: from its own store, so it has caught up.
check_acked_serializable() {
	local want got
	want=$(it_ctl "${EP[${survivors[0]}]}" get w/ --prefix --keys-only -w json |
		it_json "d.get('count', 0)")
	got=$(it_ctl "${EP[$old]}" get w/ --prefix --keys-only --consistency=s -w json |
		it_json "d.get('count', 0)")
	[[ $got == "$want" ]]
}
deadline=$((SECONDS + 10))
until check_acked_serializable; do
	((SECONDS < deadline)) || it_fail "$old has not caught up in its own store within 10 s"
	sleep 0.1
done
it_put "${EP[$old]}" after/rejoined ok
for n in "${survivors[@]}"; do
	it_expect_eq "$(it_get "${EP[$n]}" after/rejoined)" ok "after/rejoined through $n"
done
it_log PASS

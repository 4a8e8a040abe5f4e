#!/usr/bin/env bash
# test_membership.sh: membership at run time through etcdctl's member commands. Three members;
# a learner m4 added, started with --initial-cluster-state existing, caught up (a serializable
# read through it), refused promotion of a voter, promoted; a follower removed; the leader
# removed (the cluster keeps serving, the removed members exit); a member replaced at a new
# data directory; a peer URL updated; every member lists the same members.
source "$(dirname "$0")/lib.sh"

mapfile -t P < <(it_ports 21)
declare -A EP PEER GOS
names=(m1 m2 m3 m4 m5 m6 m7)
for i in "${!names[@]}"; do
	n=${names[i]}
	EP[$n]=http://127.0.0.1:${P[3 * i]}
	PEER[$n]=http://127.0.0.1:${P[3 * i + 1]}
	GOS[$n]=${P[3 * i + 2]}
done
args() { # <name> <initial-cluster> <state>
	local n=$1 i
	for i in "${!names[@]}"; do [[ ${names[i]} == "$n" ]] && break; done
	it_member_args "$n" "${P[3 * i]}" "${P[3 * i + 1]}" "${P[3 * i + 2]}"
	it_gossip_join "${GOS[$n]}" "${GOS[m1]}" "${GOS[m2]}" "${GOS[m3]}"
	IT_ARGS+=(--initial-cluster "$2" --initial-cluster-state "$3"
		--initial-cluster-token "it-membership-$$")
}
initial="m1=${PEER[m1]},m2=${PEER[m2]},m3=${PEER[m3]}"
for n in m1 m2 m3; do
	args "$n" "$initial" new
	it_start "$n" "${IT_ARGS[@]}"
done
for n in m1 m2 m3; do
	it_wait_healthy "$n" "${EP[$n]}" 15
done
it_put "${EP[m1]}" k/before one

id_of() { # <endpoint> <name>: the member id (hex) named so in that member's list
	it_ctl "$1" member list -w json |
		it_json "[format(m['ID'], 'x') for m in d['members'] if m.get('name', '') == '$2'][0]"
}
id_by_url() { # <endpoint> <peer url>
	it_ctl "$1" member list -w json |
		it_json "[format(m['ID'], 'x') for m in d['members'] if '$2' in m.get('peerURLs', [])][0]"
}
listing() { # <endpoint>: sorted "name peer client learner" lines, as JSON
	it_ctl "$1" member list -w json | it_json "sorted((m.get('name',''), m.get('peerURLs',[]),
		m.get('clientURLs',[]), bool(m.get('isLearner', False))) for m in d['members'])"
}
agree() { # <seconds> <names...>: every member lists the same table, with every name set
	local secs=$1 first want got n deadline=$((SECONDS + $1))
	shift
	while :; do
		first=$(listing "${EP[$1]}" 2>/dev/null || echo none)
		got=ok
		for n in "$@"; do
			[[ $(listing "${EP[$n]}" 2>/dev/null || echo none) == "$first" ]] || got=differ
		done
		[[ $got == ok && $first != none && $first != *"('', "* ]] && return 0
		((SECONDS < deadline)) || it_fail "member lists differ or lack names after $secs s: $first"
		sleep 0.2
	done
}
agree 15 m1 m2 m3

# Add a learner; etcdctl prints the environment of the new member.
out=$(it_ctl "${EP[m2]}" member add m4 --peer-urls="${PEER[m4]}" --learner)
it_expect_match "$out" 'ETCD_INITIAL_CLUSTER_STATE="existing"' "member add output"
cluster4=$(sed -n 's/^ETCD_INITIAL_CLUSTER="\(.*\)"$/\1/p' <<<"$out")
it_expect_match "$cluster4" "m4=${PEER[m4]}" "ETCD_INITIAL_CLUSTER"
# A second learner is refused (etcd's limit is one); a taken peer URL too.
err=$(it_ctl "${EP[m1]}" member add m5 --peer-urls="${PEER[m5]}" --learner 2>&1 || true)
it_expect_match "$err" 'too many learner members in cluster' "second learner"
err=$(it_ctl "${EP[m1]}" member add m5 --peer-urls="${PEER[m1]}" 2>&1 || true)
it_expect_match "$err" 'Peer URLs already exists' "taken peer URL"
# Not started yet: listed with an empty name.
it_expect_eq "$(it_ctl "${EP[m3]}" member list -w json |
	it_json "[m.get('name','') for m in d['members'] if m.get('isLearner')]")" '[""]' \
	"the unstarted learner"

args m4 "$cluster4" existing
it_start m4 "${IT_ARGS[@]}"
deadline=$((SECONDS + 20))
until [[ $(it_get "${EP[m4]}" k/before --consistency=s 2>/dev/null) == one ]]; do
	((SECONDS < deadline)) || it_fail "m4 has not caught up within 20 s"
	sleep 0.2
done
# A learner serves Status and serializable reads only, as in etcd 3.4, once it has applied the
# change that made it one.
deadline=$((SECONDS + 15))
until it_ctl "${EP[m4]}" endpoint status -w json 2>/dev/null | grep -q '"isLearner":true'; do
	((SECONDS < deadline)) || it_fail "m4 does not report itself a learner within 15 s"
	sleep 0.2
done
for cmd in "put k/learner x" "get k/before" "member list" "lease grant 10"; do
	# shellcheck disable=SC2086 # the words of cmd are etcdctl's arguments
	err=$(it_ctl "${EP[m4]}" $cmd 2>&1) && it_fail "'$cmd' on the learner succeeded: $err"
	it_expect_match "$err" 'etcdserver: rpc not supported for learner' "'$cmd' on the learner"
done
ID4=$(id_by_url "${EP[m1]}" "${PEER[m4]}")
ID1=$(id_of "${EP[m1]}" m1)
err=$(it_ctl "${EP[m1]}" member promote "$ID1" 2>&1 || true)
it_expect_match "$err" 'can only promote a learner member$' "promoting a voter"
deadline=$((SECONDS + 15))
until out=$(it_ctl "${EP[m3]}" member promote "$ID4" 2>&1); do
	it_expect_match "$out" 'in sync with leader' "promotion refused"
	((SECONDS < deadline)) || it_fail "promotion of m4 refused for 15 s: $out"
	sleep 0.5
done
it_expect_match "$out" "promoted" "member promote output"
agree 15 m1 m2 m3 m4
it_put "${EP[m4]}" k/after-promote two
it_expect_eq "$(it_get "${EP[m1]}" k/after-promote)" two "write through the promoted m4"

# Remove a follower, then the leader.
leader=$(it_status "${EP[m1]}" leader)
follower=""
for n in m1 m2 m3; do
	[[ $(id_of "${EP[m4]}" "$n") != "$(printf '%x' "$leader")" ]] && follower=$n && break
done
it_ctl "${EP[m4]}" member remove "$(id_of "${EP[m4]}" "$follower")" >/dev/null
it_wait_exit "$follower" 20 || it_fail "removed $follower did not exit"
grep -q removed-from-cluster "$IT_TMP/$follower.log" || it_fail "no removal line in $follower's log"
left=()
for n in m1 m2 m3 m4; do [[ $n == "$follower" ]] || left+=("$n"); done
agree 15 "${left[@]}"
lname=""
for n in "${left[@]}"; do
	[[ $(id_of "${EP[m4]}" "$n") == "$(printf '%x' "$(it_status "${EP[m4]}" leader)")" ]] && lname=$n
done
[[ -n $lname ]] || it_fail "no leader among ${left[*]}"
other=""
for n in "${left[@]}"; do [[ $n == "$lname" ]] || other=$n; done
it_ctl "${EP[$other]}" member remove "$(id_of "${EP[$other]}" "$lname")" >/dev/null
it_wait_exit "$lname" 20 || it_fail "removed leader $lname did not exit"
rest=()
for n in "${left[@]}"; do [[ $n == "$lname" ]] || rest+=("$n"); done
it_put "${EP[${rest[0]}]}" k/after-removals three
it_expect_eq "$(it_get "${EP[${rest[1]}]}" k/after-removals)" three "writes after the removals"
agree 15 "${rest[@]}"

# Replace: a new member m5 at a new data directory, added as a voter, started.
cur=""
for n in "${rest[@]}"; do cur+="${cur:+,}$n=${PEER[$n]}"; done
out=$(it_ctl "${EP[${rest[0]}]}" member add m5 --peer-urls="${PEER[m5]}")
cluster5=$(sed -n 's/^ETCD_INITIAL_CLUSTER="\(.*\)"$/\1/p' <<<"$out")
args m5 "$cluster5" existing
it_start m5 "${IT_ARGS[@]}"
it_wait_healthy m5 "${EP[m5]}" 20
rest+=(m5)
agree 20 "${rest[@]}"
it_expect_eq "$(it_get "${EP[m5]}" k/after-removals)" three "m5 reads"

# Update m5's peer URL to one it does not listen on, then back; a removed id is refused.
ID5=$(id_of "${EP[m5]}" m5)
it_ctl "${EP[${rest[0]}]}" member update "$ID5" --peer-urls="${PEER[m6]}" >/dev/null
it_expect_match "$(listing "${EP[${rest[1]}]}")" "${PEER[m6]}" "updated peer URL"
it_ctl "${EP[${rest[0]}]}" member update "$ID5" --peer-urls="${PEER[m5]}" >/dev/null
err=$(it_ctl "${EP[m5]}" member update "$ID1" --peer-urls="${PEER[m7]}" 2>&1 || true)
[[ $lname == m1 || $follower == m1 ]] && it_expect_match "$err" 'member not found' "update of a removed id"
agree 15 "${rest[@]}"
it_put "${EP[m5]}" k/end four
for n in "${rest[@]}"; do
	it_expect_eq "$(it_get "${EP[$n]}" k/end)" four "k/end through $n"
done
it_log PASS

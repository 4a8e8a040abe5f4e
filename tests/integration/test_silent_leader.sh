#!/usr/bin/env bash
# test_silent_leader.sh: a leader that stops without refusing anything is replaced before the
# election timeout. Three members with a 10 s election timeout; the leader gets SIGSTOP, so its
# sockets stay open and nothing is refused. The followers, hearing nothing from it for a quarter
# of the election timeout, report it down (event=leader-unreachable reason=silent) and elect one
# of themselves; a put acknowledged by the new leader reads back from both survivors. After
# SIGCONT the old leader follows the new one and has the put too. Gossip is slowed down so that
# it cannot be what notices first.
source "$(dirname "$0")/lib.sh"

if [[ $IT_FLAVOUR != cairn ]]; then
	it_skip_note "Cairn's silent-leader detection"
	exit 0
fi

it_cluster_init 3 it-silent
# The first election comes when the earliest of the three randomized timeouts (10 to 20 s) runs
# out: up to 20 s, so the members are given 30 to become healthy.
it_cluster_start 30 --heartbeat-interval 100 --election-timeout 10000 \
	--gossip-probe-interval 30000 --gossip-probe-timeout 20000
it_wait_leader 30 0 "${IT_EP[@]}"
leader=$IT_LEADER
it_leader_split
old=$IT_LEADER_NAME survivors=("${IT_OTHERS[@]}")
it_log "leader: $old ($leader); SIGSTOP"
kill -STOP "${IT_PID[$old]}"
it_wait_leader 30 "$leader" "${IT_EP[${survivors[0]}]}" "${IT_EP[${survivors[1]}]}"
new=$IT_LEADER
it_log "new leader: $new"
found=0
for n in "${survivors[@]}"; do
	if grep -q "event=leader-unreachable.*reason=silent" "$IT_TMP/$n.log"; then
		found=1
	fi
	if grep -q "event=leader-unreachable.*reason=gossip" "$IT_TMP/$n.log"; then
		it_fail "$n learned of the stopped leader from gossip, not from its silence"
	fi
done
((found)) || it_fail "no survivor logged event=leader-unreachable reason=silent"

it_put "${IT_EP[${survivors[0]}]}" silent/after v1
for n in "${survivors[@]}"; do
	it_expect_eq "$(it_get "${IT_EP[$n]}" silent/after)" v1 "silent/after through $n"
done

kill -CONT "${IT_PID[$old]}"
it_log "SIGCONT $old"
deadline=$((SECONDS + 30))
until [[ $(it_get "${IT_EP[$old]}" silent/after --consistency=s 2>/dev/null) == v1 ]]; do
	((SECONDS < deadline)) || it_fail "$old does not have silent/after within 30 s of SIGCONT"
	sleep 0.2
done
it_expect_eq "$(it_leader_of "${IT_EP[$old]}")" "$new" "the leader as $old sees it"
it_log "ok"

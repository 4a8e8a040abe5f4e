#!/usr/bin/env bash
# test_kill.sh: kill -9 under load, three members.
#  (a) Two clients write (etcdctl put, through every endpoint, each put recorded once
#      acknowledged) while the leader is killed with SIGKILL. The two survivors agree on a new
#      leader (endpoint status, bounded wait), the clients get writes acknowledged again, and
#      every acknowledged write reads back through each survivor. The old leader, restarted
#      with only --name, --data-dir and its listen/advertise flags (no --initial-* flag), rejoins
#      and catches up: a serializable get on it, from its own store, sees the last acknowledged
#      write of each client, and then every acknowledged write.
#  (b) kill -9 of all three members at once while a client's writes are being acknowledged;
#      all three restarted: every acknowledged write, from before and after (a), is there.
source "$(dirname "$0")/lib.sh"

it_cluster_init 3 it-kill
it_cluster_start 15
it_wait_leader 10 0 "${IT_EP[@]}"
leader=$IT_LEADER
it_leader_split
old=$IT_LEADER_NAME survivors=("${IT_OTHERS[@]}")
it_log "leader: $old ($leader)"

# restart_args <name>: what a member restarted from its data directory is given: its name, its
# data directory and the URLs it listens on and advertises to clients, no --initial-* flag.
restart_args() {
	local n=$1
	IT_ARGS=(--name "$n" --data-dir "$IT_TMP/$n.data"
		--listen-client-urls "${IT_EP[$n]}" --advertise-client-urls "${IT_EP[$n]}"
		--listen-peer-urls "${IT_PEER[$n]}")
	if [[ $IT_FLAVOUR == cairn ]]; then
		IT_ARGS+=(--gossip-listen "127.0.0.1:${IT_GPORT[$n]}")
	fi
}

# --- (a) kill -9 of the leader under load ---
it_writer_start wa "$IT_ALL" a/0/ 4000 90
it_writer_start wb "$IT_ALL" a/1/ 4000 90
it_wait_acked wa 20 30
it_wait_acked wb 20 30
it_stop "$old" KILL 5
acked_at_kill=$(($(it_acked wa) + $(it_acked wb)))
survivor_eps=()
for n in "${survivors[@]}"; do
	survivor_eps+=("${IT_EP[$n]}")
done
it_wait_leader 15 "$leader" "${survivor_eps[@]}"
new=$IT_LEADER
[[ $new == "${IT_ID[${survivors[0]}]}" || $new == "${IT_ID[${survivors[1]}]}" ]] ||
	it_fail "new leader $new is not a survivor"
it_log "new leader: $new, $acked_at_kill puts acknowledged at the kill"
it_wait_acked wa $(($(it_acked wa) + 20)) 30
it_wait_acked wb $(($(it_acked wb) + 20)) 30
it_writer_stop wa
it_writer_stop wb
for n in "${survivors[@]}"; do
	it_check_acked "${IT_EP[$n]}" wa "through $n"
	it_check_acked "${IT_EP[$n]}" wb "through $n"
done

# The old leader rejoins from its data directory alone.
restart_args "$old"
it_start "$old" "${IT_ARGS[@]}"
it_wait_healthy "$old" "${IT_EP[$old]}" 20
for w in wa wb; do
	read -r last_key last_value < <(tail -n 1 "$IT_TMP/$w.acked")
	deadline=$((SECONDS + 20))
	until [[ $(it_get "${IT_EP[$old]}" "$last_key" --consistency=s 2>/dev/null) == "$last_value" ]]; do
		((SECONDS < deadline)) ||
			it_fail "the restarted $old does not have $last_key=$last_value in its own store within 20 s"
		sleep 0.2
	done
	it_log "the restarted $old has $last_key (serializable)"
	it_check_acked "${IT_EP[$old]}" "$w" "through the restarted $old (serializable)" --consistency=s
	it_check_acked "${IT_EP[$old]}" "$w" "through the restarted $old"
done
it_wait_leader 10 0 "${IT_EP[@]}"
it_expect_eq "$IT_LEADER" "$new" "the leader once $old is back"
it_put "${IT_EP[$old]}" a/rejoined ok
for n in "${survivors[@]}"; do
	it_expect_eq "$(it_get "${IT_EP[$n]}" a/rejoined)" ok "a/rejoined through $n"
done

# --- (b) kill -9 of every member while writes are acknowledged ---
it_writer_start wc "$IT_ALL" b/ 4000 90
it_wait_acked wc 30 30
pids=()
for n in "${IT_NAMES[@]}"; do
	pids+=("${IT_PID[$n]}")
done
it_log "kill -9 of all three (pids ${pids[*]}) with $(it_acked wc) puts acknowledged"
kill -9 "${pids[@]}"
for n in "${IT_NAMES[@]}"; do
	it_wait_exit "$n" 5 || it_fail "$n still running 5 s after SIGKILL"
done
# The writer's put in flight at the kill fails or was acknowledged: either way it ends.
it_writer_stop wc
for n in "${IT_NAMES[@]}"; do
	restart_args "$n"
	it_start "$n" "${IT_ARGS[@]}"
done
for n in "${IT_NAMES[@]}"; do
	it_wait_healthy "$n" "${IT_EP[$n]}" 20
done
it_wait_leader 10 0 "${IT_EP[@]}"
for n in "${IT_NAMES[@]}"; do
	for w in wa wb wc; do
		it_check_acked "${IT_EP[$n]}" "$w" "after the restart of all, through $n"
		it_check_acked "${IT_EP[$n]}" "$w" "after the restart of all, through $n (serializable)" \
			--consistency=s
	done
done
it_put "${IT_EP[m1]}" b/after ok
it_expect_eq "$(it_get "${IT_EP[m3]}" b/after)" ok "a write after the restart of all"
it_log PASS

#!/usr/bin/env bash
# test_examples.sh: libcairn's examples (examples/) against a 3-member cluster whose leader
# records the gossip view under /cairn/members/ (cairn_members_follow() reads it for real here).
# Three node agents n1, n2, n3 (bin/cairn-example-node-agent, leases of 30 s, 1 s a job); n1
# and n2 also run `cairn agent` under the same names, n3 does not; one scheduler
# (bin/cairn-example-scheduler).
#  (a) Nine jobs put in one Txn are all assigned, three to each node (fewest unfinished first).
#      kill -9 of n1's node agent and of its `cairn agent`: gossip declares n1 dead, and the
#      scheduler moves n1's unfinished jobs to the others long before n1's lease (30 s) could
#      expire: /nodes/n1 is still there when they have moved. Every job ends done, by its
#      owner, and no assignment is left.
#  (b) Six more jobs. SIGTERM of n3 (no gossip agent) while it runs one: it revokes its lease
#      and exits 0, /nodes/n3 goes, and the scheduler moves n3's jobs to n2. Every job done.
#  (c) The scheduler is paused (SIGSTOP) and m3, the member it talks to, killed; meanwhile a node
#      agent n4 registers, four jobs are put and the store is compacted up to the newest
#      revision. Resumed, the scheduler fails over; its watches find their revision compacted
#      and it reads each prefix again, its /nodes/ follower lists again and reports n4 (and
#      not n2 a second time, unchanged), and the four jobs are done.
# Then the scheduler, n2 and n4 stop on SIGTERM with status 0 (under ASan: nothing leaked).
source "$(dirname "$0")/lib.sh"

if [[ $IT_FLAVOUR != cairn ]]; then
	it_skip_note "the examples follow /cairn/members/, which only Cairn writes"
	exit 0
fi
unset CAIRN_GOSSIP_STORE_MEMBERS # the leader writes /cairn/members/ here

BIN_DIR=$(dirname "$IT_BIN")
SCHED=$BIN_DIR/cairn-example-scheduler
AGENT=$BIN_DIR/cairn-example-node-agent
for b in "$SCHED" "$AGENT"; do
	[[ -x $b ]] || it_fail "$b is not built"
done

# Fast gossip, as in test_gossip.sh, so that a crash shows as dead in seconds.
TIMING=(--gossip-probe-interval 250 --gossip-probe-timeout 150 --gossip-interval 50
	--gossip-suspicion-mult 3 --gossip-pushpull-interval 2000)
TTL=30
WORK_MS=1000

# ex_start <name> <binary> <args...>: like it_start, for another binary.
ex_start() {
	local name=$1 bin=$2
	shift 2
	echo "===== start: $bin $*" >>"$IT_TMP/$name.log"
	"$bin" "$@" >>"$IT_TMP/$name.log" 2>&1 &
	IT_PID[$name]=$!
	it_log "started $name (pid ${IT_PID[$name]})"
}

# keys <prefix>: the keys under it, without the prefix, one a line.
keys() {
	it_ctl "$IT_ALL" get "$1" --prefix --keys-only | sed -n "s|^$1||p"
}

# count <prefix>
count() {
	it_ctl "$IT_ALL" get "$1" --prefix --keys-only -w json | it_json "d.get('count', 0)"
}

# wait_for <seconds> <what> <command...>: polls the command until it succeeds.
wait_for() {
	local secs=$1 what=$2
	shift 2
	local deadline=$((SECONDS + secs))
	until "$@"; do
		((SECONDS < deadline)) || it_fail "$what: not within $secs s"
		sleep 0.2
	done
	it_log "$what"
}

count_is() { [[ $(count "$1") == "$2" ]]; }
alive_in_gossip() {
	local v
	v=$(it_get "$IT_ALL" "/cairn/members/$1" 2>/dev/null) || return 1
	[[ $v == *'"state":"alive"'* ]]
}
logged() { grep -q -- "$2" "$IT_TMP/$1.log"; }

# check_done <jobs...>: each is done by its owner, and not assigned any more.
check_done() {
	local j owner done
	for j in "$@"; do
		owner=$(it_get "$IT_ALL" "/owner/$j")
		done=$(it_get "$IT_ALL" "/done/$j")
		[[ -n $done && $done == "$owner" ]] || it_fail "job $j: owner [$owner], done by [$done]"
	done
	[[ $(count /assign/) == 0 ]] || it_fail "assignments left: $(keys /assign/ | tr '\n' ' ')"
}

# ---- the cluster, the gossip agents, the node agents, the scheduler ----
it_cluster_init 3 it-examples
it_cluster_start 30 "${TIMING[@]}"
it_wait_leader 15 0 "${IT_EP[@]}"

mapfile -t gports < <(it_ports 2)
((${#gports[@]} == 2)) || it_fail "no free ports for the gossip agents"
join="127.0.0.1:${IT_GPORT[m1]},127.0.0.1:${IT_GPORT[m2]}"
it_start g1 agent --name n1 --gossip-listen "127.0.0.1:${gports[0]}" --gossip-join "$join" \
	"${TIMING[@]}"
it_start g2 agent --name n2 --gossip-listen "127.0.0.1:${gports[1]}" --gossip-join "$join" \
	"${TIMING[@]}"
wait_for 30 "gossip: n1 and n2 alive under /cairn/members/" \
	eval 'alive_in_gossip n1 && alive_in_gossip n2'

for n in n1 n2 n3; do
	ex_start "$n" "$AGENT" --endpoints "$IT_ALL" --name "$n" --ttl "$TTL" --work-ms "$WORK_MS" \
		--tag role=worker
done
wait_for 15 "n1, n2, n3 registered under /nodes/" count_is /nodes/ 3
# m3 first: the scheduler's one connection goes to m3 while m3 lives ((c) kills it)
ex_start sched "$SCHED" --endpoints "${IT_EP[m3]},${IT_EP[m1]},${IT_EP[m2]}"
wait_for 15 "the scheduler has read the jobs" logged sched "read at revision"
wait_for 15 "the scheduler sees n1, n2, n3 live" \
	eval '[[ $(grep -c "is live" "$IT_TMP/sched.log") -ge 3 ]]'
logged sched "gossip: n1 alive" || it_fail "the scheduler did not follow n1 in gossip"

# ---- (a) nine jobs; n1 killed ----
it_txn_puts "$IT_ALL" /jobs/j 1 9 1
wait_for 15 "nine jobs assigned" count_is /owner/ 9
for n in n1 n2 n3; do
	got=$(it_ctl "$IT_ALL" get /owner/ --prefix --print-value-only | grep -cx "$n" || true)
	it_expect_eq "$got" 3 "jobs given to $n"
done
it_stop n1 KILL 5
it_stop g1 KILL 5
mapfile -t lost < <(keys /assign/n1/)
it_log "n1 killed with ${#lost[@]} unfinished jobs: ${lost[*]}"
((${#lost[@]} >= 1)) || it_fail "n1 had finished everything before it was killed"
moved() {
	local j
	for j in "${lost[@]}"; do
		[[ $(it_get "$IT_ALL" "/owner/$j") != n1 ]] || return 1
	done
}
wait_for 25 "n1's unfinished jobs moved to other nodes" moved
[[ -n $(it_get "$IT_ALL" /nodes/n1) ]] ||
	it_fail "/nodes/n1 is gone already: the jobs moved on the lease, not on gossip"
logged sched "gossip: n1 dead" || it_fail "the scheduler did not see n1 dead in gossip"
logged sched "its node n1 is down (gossip says dead)" || it_fail "no reassignment logged"
wait_for 30 "all nine jobs done" count_is /done/ 9
check_done j{1..9}
for j in "${lost[@]}"; do
	[[ $(it_get "$IT_ALL" "/done/$j") != n1 ]] || it_fail "job $j done by n1, which was killed"
done

# ---- (b) six more jobs; n3 stops gracefully ----
it_txn_puts "$IT_ALL" /jobs/k 1 6 1
wait_for 15 "six more jobs assigned" count_is /owner/ 15
got=$(it_ctl "$IT_ALL" get /owner/k --prefix --print-value-only | grep -cx n1 || true)
it_expect_eq "$got" 0 "new jobs given to n1, dead in gossip"
wait_for 10 "n3 runs one of them" logged n3 "running job k"
mapfile -t lost < <(keys /assign/n3/)
((${#lost[@]} >= 1)) || it_fail "n3 has no unfinished job"
it_stop n3 TERM 15
it_expect_eq "$IT_RC" 0 "node agent exit status after SIGTERM"
logged n3 "revoked" || it_fail "n3 did not revoke its lease"
[[ -z $(it_get "$IT_ALL" /nodes/n3) ]] || it_fail "/nodes/n3 still there after n3 stopped"
it_log "n3 stopped with ${#lost[@]} unfinished jobs: ${lost[*]}"
wait_for 30 "all fifteen jobs done" count_is /done/ 15
check_done j{1..9} k{1..6}
for j in "${lost[@]}"; do
	# (unless n3 finished it between the read above and its stop)
	logged n3 "job $j done" ||
		it_expect_eq "$(it_get "$IT_ALL" "/done/$j")" n2 "job $j, taken from n3, done by"
done
logged sched "its node n3 is down (its registration is gone)" ||
	it_fail "no reassignment of n3's jobs logged"

# ---- (c) the scheduler cut off while the revisions it would resume from are compacted ----
kill -STOP "${IT_PID[sched]}"
it_log "scheduler stopped (SIGSTOP)"
it_stop m3 KILL 5
IT_ALL="${IT_EP[m1]},${IT_EP[m2]}"
ex_start n4 "$AGENT" --endpoints "$IT_ALL" --name n4 --ttl "$TTL" --work-ms "$WORK_MS"
wait_for 15 "n4 registered under /nodes/" eval '[[ -n $(it_get "$IT_ALL" /nodes/n4) ]]'
it_txn_puts "$IT_ALL" /jobs/c 1 4 1
rev=$(it_status "${IT_EP[m1]}" revision)
it_ctl "$IT_ALL" compaction "$rev" >/dev/null || it_fail "compaction at $rev"
it_log "compacted at revision $rev"
kill -CONT "${IT_PID[sched]}"
wait_for 20 "the scheduler read /jobs/ again after its watch was compacted" \
	logged sched "read /jobs/ again"
wait_for 30 "all nineteen jobs done" count_is /done/ 19
check_done j{1..9} k{1..6} c{1..4}
logged sched "node n4 registered" ||
	it_fail "the /nodes/ follower missed n4, registered while its watch was compacted"
it_expect_eq "$(grep -c "node n2 registered" "$IT_TMP/sched.log")" 1 \
	"times the /nodes/ follower reported n2, unchanged, across the relist"

# ---- clean stops ----
it_stop sched TERM 15
it_expect_eq "$IT_RC" 0 "scheduler exit status after SIGTERM"
for n in n2 n4; do
	it_stop "$n" TERM 15
	it_expect_eq "$IT_RC" 0 "node agent exit status after SIGTERM"
done
it_log "PASS"

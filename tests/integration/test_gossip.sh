#!/usr/bin/env bash
# test_gossip.sh: gossip liveness in the store. Three servers and twenty `cairn agent`s on
# 127.0.0.1 with fast gossip timings; a background `etcdctl watch --prefix /cairn/members/`
# records every change the Raft leader writes.
#  (a) Plain gossip. All 23 members show up under /cairn/members/ as alive, the agents with
#      their tag. kill -9 of an agent shows it dead within the bound below; SIGTERM of another
#      shows it left; the killed agent restarted shows alive with a higher incarnation. The
#      watcher saw each member's changes in SWIM's order: for one member, (incarnation, state)
#      never goes back (alive < suspect < dead < left within an incarnation), the killed agent
#      went dead then alive again, the other ended left, and its key was deleted once gossip
#      reaped it (--gossip-reap-left).
#  (b) The same pool, fresh, encrypted (--gossip-key-file on everyone). A second key is rotated
#      in while everything runs (added on every member and SIGHUP, made primary and SIGHUP, the
#      old one removed and SIGHUP): nobody is declared dead meanwhile, a kill -9 is still
#      detected, and a new agent holding only the new key joins. Agents with a wrong key or a
#      wrong --gossip-label never appear. Then kill -9 of the Raft leader: the new leader's
#      sweep writes the right view (the old leader dead, everyone else as before, a key of an
#      unknown name deleted and a member's value that was overwritten by a client written
#      again), and the watcher's order holds across the change of leader. The old leader,
#      restarted, shows alive again with a higher incarnation.
source "$(dirname "$0")/lib.sh"

if [[ $IT_FLAVOUR != cairn ]]; then
	it_skip_note "gossip and cairn agent are Cairn's own"
	exit 0
fi
unset CAIRN_GOSSIP_STORE_MEMBERS # the leader writes /cairn/members/ here, whatever the caller set

N_AGENTS=20
PREFIX=/cairn/members/

# Timings, in ms, shared by every member: fast, so the test takes seconds, not minutes.
PROBE=250
PROBE_TIMEOUT=150
GOSSIP_INTERVAL=50
SUSPICION_MULT=3
PUSHPULL=2000
REAP_DEAD=120000 # longer than the test: the dead stay
REAP_LEFT_A=6000 # (a): a member that left is forgotten, and its key deleted, soon
REAP_LEFT_B=120000
TIMING=(--gossip-probe-interval "$PROBE" --gossip-probe-timeout "$PROBE_TIMEOUT"
	--gossip-interval "$GOSSIP_INTERVAL" --gossip-suspicion-mult "$SUSPICION_MULT"
	--gossip-pushpull-interval "$PUSHPULL" --gossip-reap-dead "$REAP_DEAD"
	--gossip-reap-left "$REAP_LEFT_A")

# The liveness bound for a crash to show as dead in the store, in seconds. Not a timing
# assertion: a bound generous enough for a loaded machine (or ASan), that a member never
# detected would still miss.
#   probe detection      every live member probes the crashed one at least once per round of
#                        its randomized round-robin: (n - 1) probe intervals at worst (SWIM
#                        expects e/(e-1) intervals to the first detection)
#   suspicion            Lifeguard's longest suspicion timeout, with no confirmation:
#                        6 (suspicion_max_mult) * mult * max(1, log10 n) * probe interval
#   margin               20 s for a shared machine: Lifeguard's health multiplier stretching
#                        probes, dissemination to the leader, the Raft commit, our polling
DEAD_BOUND=$(python3 -c '
import math, sys
n, p, mult = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
detect = (n - 1) * p
suspicion = 6 * mult * max(1.0, math.log10(n)) * p
print(math.ceil((detect + suspicion) / 1000 + 20))
' $((N_AGENTS + 3)) "$PROBE" "$SUSPICION_MULT")
it_log "dead bound: $DEAD_BOUND s"

# ---- functions ----

declare -A GPORT=() # agent name -> gossip port
mapfile -t aports < <(it_ports $((N_AGENTS + 4)))
((${#aports[@]} == N_AGENTS + 4)) || it_fail "no free ports for the agents"
AGENTS=()
for ((i = 1; i <= N_AGENTS + 4; i++)); do
	GPORT[a$i]=${aports[i - 1]}
	((i > N_AGENTS)) || AGENTS+=("a$i")
done

# server_join <name>: the other servers' gossip addresses.
server_join() {
	local n j=""
	for n in "${IT_NAMES[@]}"; do
		[[ $n == "$1" ]] || j+="${j:+,}127.0.0.1:${IT_GPORT[$n]}"
	done
	echo "$j"
}

# servers_start <extra flags per member: a function name or ""> : every server, with gossip.
servers_start() {
	local keyfn=$1 n
	local -a extra
	for n in "${IT_NAMES[@]}"; do
		extra=()
		[[ -z $keyfn ]] || extra=(--gossip-key-file "$("$keyfn" "$n")")
		it_cluster_args "$n" --gossip-join "$(server_join "$n")" "${TIMING[@]}" "${extra[@]}"
		it_start "$n" "${IT_ARGS[@]}"
	done
	for n in "${IT_NAMES[@]}"; do
		it_wait_healthy "$n" "${IT_EP[$n]}" 30
	done
}

# agent_start <name> [flags]: a node agent joining through two of the servers.
agent_start() {
	local name=$1
	shift
	it_start "$name" agent --name "$name" --gossip-listen "127.0.0.1:${GPORT[$name]}" \
		--gossip-join "127.0.0.1:${IT_GPORT[m1]},127.0.0.1:${IT_GPORT[m2]}" \
		--gossip-tag role=worker "${TIMING[@]}" "$@"
}

# watch_start <name>: etcdctl watch of the prefix in the background, from revision 1 (so it
# sees the keys the leader wrote before it started too), one JSON line per watch response in
# $IT_TMP/<name>.json; IT_PID[<name>] so it is killed on every exit path.
watch_start() {
	local name=$1
	"$IT_ETCDCTL" --endpoints="$IT_ALL" --dial-timeout=2s watch --prefix "$PREFIX" --rev=1 -w json \
		>"$IT_TMP/$name.json" 2>>"$IT_TMP/$name.log" &
	IT_PID[$name]=$!
	it_log "started watcher $name (pid ${IT_PID[$name]})"
}

# view: the values under the prefix as one JSON object, name -> value ({} on error).
view() {
	local out
	out=$(it_ctl "$IT_ALL" --command-timeout=3s get "$PREFIX" --prefix -w json 2>/dev/null) ||
		out='{}'
	python3 -c '
import base64, json, sys
d = json.loads(sys.stdin.read() or "{}")
v = {}
for kv in d.get("kvs", []):
    k = base64.b64decode(kv["key"]).decode()[len(sys.argv[1]):]
    try:
        v[k] = json.loads(base64.b64decode(kv.get("value", "")))
    except ValueError:
        v[k] = {"state": "unparsable"}
print(json.dumps(v))
' "$PREFIX" <<<"$out"
}

# summary <view>: "name:state/incarnation ..." for the log.
summary() {
	python3 -c '
import json, sys
v = json.loads(sys.argv[1])
print(" ".join("%s:%s/%s" % (k, x.get("state"), x.get("incarnation")) for k, x in sorted(v.items())))
' "$1"
}

# wait_view <seconds> <what> <python expression over v, the view>: polls until it holds.
# VIEW is the last view read; WAITED the seconds it took (with milliseconds).
VIEW="{}" WAITED=0
wait_view() {
	local secs=$1 what=$2 expr=$3
	local t0=${EPOCHREALTIME/./} deadline=$((SECONDS + secs))
	while :; do
		VIEW=$(view)
		if python3 -c '
import json, sys
v = json.loads(sys.argv[2])
sys.exit(0 if eval("(" + sys.argv[1] + ")") else 1)
' "$expr" "$VIEW"; then
			break
		fi
		((SECONDS < deadline)) ||
			it_fail "$what: not within $secs s; members: $(summary "$VIEW");" \
				"processes not running: $(not_running)"
		sleep 0.2
	done
	local us=$((${EPOCHREALTIME/./} - t0))
	WAITED=$(printf '%d.%03d' $((us / 1000000)) $((us / 1000 % 1000)))
	it_log "$what (after ${WAITED} s)"
}

# not_running: the names of the started processes that have exited ("none" if every one runs).
not_running() {
	local n out=""
	for n in "${!IT_PID[@]}"; do
		it_running "$n" || out+="${out:+ }$n"
	done
	echo "${out:-none}"
}

# names_expr <names...>: a Python list of the names.
names_expr() {
	local n s=""
	for n in "$@"; do
		s+="${s:+,}'$n'"
	done
	echo "[$s]"
}

# state_of <name>: its state and incarnation in VIEW, "state incarnation".
state_of() {
	python3 -c '
import json, sys
x = json.loads(sys.argv[1]).get(sys.argv[2], {})
print(x.get("state"), x.get("incarnation"))
' "$VIEW" "$1"
}

# check_order <watch name> <restarted or -> <left or -> [<dead>...]: reads the watcher's
# record. For every key, between deletions, (incarnation, state) never goes back; <restarted>
# went from alive to dead, then alive again with a higher incarnation (its last state);
# <left> went from alive to left; each <dead> went from alive to dead and stayed dead.
check_order() {
	python3 - "$IT_TMP/$1.json" "$PREFIX" "$2" "$3" "${@:4}" <<'EOF' || it_fail "watch order ($1)"
import base64, json, sys
path, prefix, killed, left, dead = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:]
rank = {"alive": 1, "suspect": 2, "dead": 3, "left": 4}
seq = {}
revs = []
for line in open(path):
    line = line.strip()
    if not line.startswith("{"):
        continue
    resp = json.loads(line)
    for ev in resp.get("Events") or []:
        kv = ev["kv"]
        revs.append(kv.get("mod_revision", 0))
        name = base64.b64decode(kv["key"]).decode()[len(prefix):]
        if ev.get("type") == 1:
            seq.setdefault(name, []).append(("deleted", None))
            continue
        try:
            x = json.loads(base64.b64decode(kv["value"]))
            assert x["name"] == name, (name, x)
            seq.setdefault(name, []).append((x["state"], x["incarnation"]))
        except ValueError:  # not written by the leader (the test's own): starts over
            seq.setdefault(name, []).append(("foreign", None))
bad = []
if revs != sorted(revs):
    bad.append("revisions out of order")
for name, s in sorted(seq.items()):
    last = None
    for st, inc in s:
        if st in ("deleted", "foreign"):
            last = None
            continue
        cur = (inc, rank[st])
        if last is not None and cur < last:
            bad.append("%s went back: %s" % (name, s))
            break
        last = cur
def states(name):
    out = []
    for st, inc in seq.get(name, []):
        if st == "deleted" and name == left:
            continue  # reaped after it left
        if not out or out[-1] != (st, inc):
            out.append((st, inc))
    return out
def show(name):
    return " ".join("%s/%s" % x for x in states(name))
if killed != "-":
    k = states(killed)
    d = [i for i, (st, _) in enumerate(k) if st == "dead"]
    if not d or k[0][0] != "alive":
        bad.append("%s not alive then dead: %s" % (killed, show(killed)))
    elif not (k[-1][0] == "alive" and k[-1][1] > k[d[0]][1]):
        bad.append("%s not alive again after dead: %s" % (killed, show(killed)))
if left != "-":
    l = states(left)
    if not l or l[-1][0] != "left" or l[0][0] != "alive":
        bad.append("%s not alive then left: %s" % (left, show(left)))
    if not seq[left] or seq[left][-1][0] != "deleted":
        bad.append("%s not deleted after it left: %s" % (left, seq[left]))
for name in dead:
    s = states(name)
    if not s or s[-1][0] != "dead" or s[0][0] != "alive":
        bad.append("%s not alive then dead: %s" % (name, show(name)))
for name in [killed, left] + dead:
    if name != "-":
        print("watch: %s: %s" % (name, show(name)), file=sys.stderr)
print("watch: %d events, %d keys" % (len(revs), len(seq)), file=sys.stderr)
if bad:
    print("\n".join(bad), file=sys.stderr)
    sys.exit(1)
EOF
}

# all_alive_expr <names...>: each name present and alive, agents with their tag.
all_alive_expr() {
	echo "all(v.get(n, {}).get('state') == 'alive' for n in $(names_expr "$@")) and" \
		"all(v[n].get('tags', {}).get('role') == 'worker' for n in $(names_expr "$@") if n.startswith('a'))"
}

# stop_all: every process of the test, by pid (kill -9), bounded.
stop_all() {
	local n
	for n in "${!IT_PID[@]}"; do
		kill -9 "${IT_PID[$n]}" 2>/dev/null || true
		it_wait_exit "$n" 10 || it_fail "$n still running after SIGKILL"
	done
}

# ---- (a) plain gossip ----
it_log "(a) plain gossip, 3 servers and $N_AGENTS agents"
it_cluster_init 3 it-gossip-a
servers_start ""
it_wait_leader 15 0 "${IT_EP[@]}"
watch_start watch-a
for a in "${AGENTS[@]}"; do
	agent_start "$a"
done
wait_view 60 "all $((N_AGENTS + 3)) members alive, agents tagged role=worker" \
	"$(all_alive_expr "${IT_NAMES[@]}" "${AGENTS[@]}")"
# the value's shape, for one agent
python3 -c '
import json, re, sys
x = json.loads(sys.argv[1])["a1"]
assert sorted(x) == ["address", "incarnation", "name", "since", "state", "tags"], x
assert x["address"] == "127.0.0.1:" + sys.argv[2], x
assert x["tags"] == {"role": "worker"}, x
assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", x["since"]), x
' "$VIEW" "${GPORT[a1]}" || it_fail "the value of a1: $(view)"
# /metrics: the gossip view by state as a server sees it (bounded wait: m1's view may lag the
# leader's by a gossip round)
want="cairn_gossip_members{state=\"alive\"} $((N_AGENTS + 3))"
ok=0
for _ in $(seq 1 50); do
	if curl -sS --max-time 5 "${IT_EP[m1]}/metrics" | grep -qxF "$want"; then
		ok=1
		break
	fi
	sleep 0.2
done
[ "$ok" = 1 ] || it_fail "/metrics on m1 has no line '$want'"

killed=a5 left=a6
kill_wall=$EPOCHREALTIME
it_stop "$killed" KILL 5
wait_view "$DEAD_BOUND" "$killed (kill -9) dead" "v.get('$killed', {}).get('state') == 'dead'"
# since: the leader's wall clock when its gossip saw the death, after the kill and before now
python3 -c '
import datetime, json, sys
x = json.loads(sys.argv[1])[sys.argv[2]]
t = datetime.datetime.strptime(x["since"], "%Y-%m-%dT%H:%M:%S.%fZ")
t = t.replace(tzinfo=datetime.timezone.utc).timestamp()
now = datetime.datetime.now(datetime.timezone.utc).timestamp()
sys.exit(0 if float(sys.argv[3]) - 0.5 <= t <= now + 0.5 else 1)
' "$VIEW" "$killed" "$kill_wall" || it_fail "since of $killed dead, killed at $kill_wall: $(view)"
read -r _ dead_inc < <(state_of "$killed")
it_stop "$left" TERM 15
it_expect_eq "$IT_RC" 0 "agent exit status after SIGTERM"
wait_view 20 "$left (SIGTERM) left" "v.get('$left', {}).get('state') == 'left'"
left_at=$SECONDS
agent_start "$killed"
wait_view 30 "$killed restarted: alive with an incarnation above $dead_inc" \
	"v.get('$killed', {}).get('state') == 'alive' and v['$killed']['incarnation'] > $dead_inc"
others=()
for a in "${AGENTS[@]}"; do
	[[ $a == "$left" ]] || others+=("$a")
done
wait_view 10 "every other member still alive" "$(all_alive_expr "${IT_NAMES[@]}" "${others[@]}")"
# gossip forgets a member that left after --gossip-reap-left: its key goes
wait_view $((REAP_LEFT_A / 1000 + 20 - (SECONDS - left_at))) \
	"$left reaped ${REAP_LEFT_A} ms after it left: its key deleted" "'$left' not in v"
sleep 1 # the watcher's last events
check_order watch-a "$killed" "$left"
stop_all
rm -rf "$IT_TMP"/m?.data

# ---- (b) encrypted gossip, a key rotated while running, the leader killed ----
it_log "(b) encrypted gossip"
TIMING[${#TIMING[@]} - 1]=$REAP_LEFT_B
mkdir -p "$IT_TMP/keys"
key1=$(head -c 32 /dev/urandom | base64)
key2=$(head -c 32 /dev/urandom | base64)
key3=$(head -c 32 /dev/urandom | base64)
keyfile() { echo "$IT_TMP/keys/$1.key"; }
for n in m1 m2 m3 "${AGENTS[@]}"; do
	printf '%s\n' "$key1" >"$(keyfile "$n")"
done

it_cluster_init 3 it-gossip-b
servers_start keyfile
it_wait_leader 15 0 "${IT_EP[@]}"
watch_start watch-b
for a in "${AGENTS[@]}"; do
	agent_start "$a" --gossip-key-file "$(keyfile "$a")"
done
wait_view 60 "encrypted: all $((N_AGENTS + 3)) members alive" \
	"$(all_alive_expr "${IT_NAMES[@]}" "${AGENTS[@]}")"

# rotate <contents...>: every member's key file holds these lines, then SIGHUP to everyone.
rotate() {
	local n
	for n in m1 m2 m3 "${AGENTS[@]}"; do
		printf '%s\n' "$@" >"$(keyfile "$n").new"
		mv "$(keyfile "$n").new" "$(keyfile "$n")"
	done
	for n in m1 m2 m3 "${AGENTS[@]}"; do
		kill -HUP "${IT_PID[$n]}"
	done
	sleep 1 # every member has read its file again before the next step
}
rotate "$key1" "$key2"
rotate "$key2" "$key1"
rotate "$key2"
it_log "key rotated on every member"
sleep 2 # long enough for a member that could not talk any more to be suspected
wait_view 5 "after the rotation, every member still alive" \
	"$(all_alive_expr "${IT_NAMES[@]}" "${AGENTS[@]}")"

killed=a7
it_stop "$killed" KILL 5
wait_view "$DEAD_BOUND" "encrypted: $killed (kill -9) dead" "v.get('$killed', {}).get('state') == 'dead'"

new=a$((N_AGENTS + 1)) wrongkey=a$((N_AGENTS + 2)) wronglabel=a$((N_AGENTS + 3))
printf '%s\n' "$key2" >"$(keyfile "$new")"
printf '%s\n' "$key3" >"$(keyfile "$wrongkey")"
printf '%s\n' "$key2" >"$(keyfile "$wronglabel")"
agent_start "$new" --gossip-key-file "$(keyfile "$new")"
agent_start "$wrongkey" --gossip-key-file "$(keyfile "$wrongkey")"
agent_start "$wronglabel" --gossip-key-file "$(keyfile "$wronglabel")" --gossip-label other-pool
wait_view 30 "$new, with only the new key, alive" "v.get('$new', {}).get('state') == 'alive'"
sleep $((2 * PUSHPULL / 1000 + 2)) # two push-pull rounds: time enough to have joined
it_running "$wrongkey" || it_fail "$wrongkey exited"
it_running "$wronglabel" || it_fail "$wronglabel exited"
wait_view 5 "$wrongkey (wrong key) and $wronglabel (wrong label) absent" \
	"'$wrongkey' not in v and '$wronglabel' not in v"

# kill -9 of the Raft leader
it_wait_leader 15 0 "${IT_EP[@]}"
declare -A ID=()
old=""
for n in "${IT_NAMES[@]}"; do
	ID[$n]=$(it_status "${IT_EP[$n]}" member_id)
	[[ ${ID[$n]} != "$IT_LEADER" ]] || old=$n
done
[[ -n $old ]] || it_fail "leader $IT_LEADER is not one of the members ${ID[*]}"
survivors=() survivor_eps=()
for n in "${IT_NAMES[@]}"; do
	[[ $n == "$old" ]] && continue
	survivors+=("$n")
	survivor_eps+=("${IT_EP[$n]}")
done
it_log "leader: $old"
# keys the leader did not write: a name gossip does not know, and a member's value replaced;
# the leader's cache does not follow them, the next leader's first sweep does
it_put "$IT_ALL" "${PREFIX}ghost" not-a-member
it_put "$IT_ALL" "${PREFIX}a1" garbage
it_stop "$old" KILL 5
it_wait_leader 20 "${ID[$old]}" "${survivor_eps[@]}"
live=()
for a in "${AGENTS[@]}" "$new"; do
	[[ $a == "$killed" ]] || live+=("$a")
done
wait_view "$DEAD_BOUND" "new leader's view: $old and $killed dead, every other member alive" \
	"v.get('$old', {}).get('state') == 'dead' and v.get('$killed', {}).get('state') == 'dead' and
	 '$wrongkey' not in v and '$wronglabel' not in v and 'ghost' not in v and
	 $(all_alive_expr "${survivors[@]}" "${live[@]}")"
for n in "${survivors[@]}"; do
	if [[ ${ID[$n]} == "$IT_LEADER" ]]; then
		grep -q "event=gossip-store-swept" "$IT_TMP/$n.log" ||
			it_fail "the new leader $n logged no sweep of the members prefix"
		it_log "new leader $n swept the members prefix"
	fi
done
python3 -c '
import sys
bad = [l for l in open(sys.argv[1]) if sys.argv[2] in l or sys.argv[3] in l]
sys.exit(1 if bad else 0)
' "$IT_TMP/watch-b.json" "$(printf '%s' "$PREFIX$wrongkey" | base64)" \
	"$(printf '%s' "$PREFIX$wronglabel" | base64)" ||
	it_fail "the watcher saw $wrongkey or $wronglabel"
# the old leader restarted from its data directory: alive again, with a higher incarnation
read -r _ dead_inc < <(state_of "$old")
it_member_args "$old" "${IT_CPORT[$old]}" "${IT_PPORT[$old]}" "${IT_GPORT[$old]}"
it_start "$old" "${IT_ARGS[@]}" --gossip-join "$(server_join "$old")" "${TIMING[@]}" \
	--gossip-key-file "$(keyfile "$old")"
it_wait_healthy "$old" "${IT_EP[$old]}" 30
wait_view 30 "$old restarted: alive with an incarnation above $dead_inc" \
	"v.get('$old', {}).get('state') == 'alive' and v['$old']['incarnation'] > $dead_inc"
sleep 1 # the watcher's last events
check_order watch-b "$old" - "$killed"
# every server stops gracefully (under ASan: nothing leaked)
for n in "${IT_NAMES[@]}"; do
	it_stop "$n" TERM 30
	it_expect_stopped TERM
done
it_log "PASS"

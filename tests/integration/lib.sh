# shellcheck shell=bash
# lib.sh: the integration harness, sourced by every tests/integration/test_*.sh.
#
#   bash test_<name>.sh <server binary> [etcdctl]
#
# Runs real server processes on 127.0.0.1 and drives them with etcdctl (etcd-client 3.4). Every
# process started with it_start is killed by pid on every exit path (EXIT trap); every wait is
# bounded; each member's output goes to $IT_TMP/<name>.log, and all logs are printed when the
# test fails. Ports are picked at random in 20000-32767 (below Linux's ephemeral range, so
# outgoing connections do not take them), checked free by binding them, and claimed so that a
# concurrent test does not pick them too (it_ports).
#
# The server binary is normally build/bin/cairn. Pointed at Debian's etcd 3.4, which takes the
# same flags, the same tests check the harness itself (IT_FLAVOUR=etcd): the few assertions
# about Cairn's own texts and files are then skipped, each with a line saying so.
#
# Environment: IT_KEEP=1 keeps $IT_TMP (data dirs and logs) after the test.
#
# Helpers for clusters and clients under faults (test_five, test_kill, test_snapshot):
#   it_cluster_init <n> <token>          ports and names of an n-member cluster formed with
#                                        --initial-cluster: IT_NAMES (m1 .. mn), IT_EP[name]
#                                        (client URL), IT_PEER[name] (peer URL), IT_CPORT,
#                                        IT_PPORT, IT_GPORT[name] (client, peer, gossip ports),
#                                        IT_ALL (every client URL, comma-separated)
#   it_cluster_args <name> [flags]       IT_ARGS of that member, the same at first start and at
#                                        a restart, extra flags appended
#   it_cluster_start <secs> [flags]      starts every member, waits until each is healthy
#   it_leader_of <endpoint>              the leader id a member reports (0: none, or no answer)
#   it_wait_leader <secs> <not> <ep...>  waits until every endpoint names one leader, other than
#                                        <not> (an id, or 0); sets IT_LEADER
#   it_leader_split                      which member IT_LEADER is: IT_LEADER_NAME, the others
#                                        in IT_OTHERS, every member's id in IT_ID[name]
#   it_writer_start <name> <endpoints> <prefix> <count> <secs>
#                                        a background client: etcdctl put <prefix>k<i> v<i>, one
#                                        at a time, bounded in count and time; each acknowledged
#                                        put is appended to $IT_TMP/<name>.acked ("key value")
#   it_writer_stop <name>                stops it (bounded) and waits for its exit
#   it_acked <name>                      how many puts it has had acknowledged
#   it_wait_acked <name> <n> <secs>      waits for n acknowledgements
#   it_check_acked <endpoint> <name> <what> [etcdctl get flags]
#                                        every acknowledged put reads back with its value
#   it_txn_puts <endpoint> <prefix> <from> <n> [width]
#                                        one txn (etcdctl's stdin form) of n <= 128 puts,
#                                        <prefix><i> = v<i> for i in [from, from+n), i padded
#                                        to width digits (default 6)

set -euo pipefail

IT_BIN=${1:?usage: $0 <server binary> [etcdctl]}
IT_ETCDCTL=${2:-etcdctl}
export ETCDCTL_API=3

if [[ ! -x $IT_BIN ]]; then
	echo "FAIL: $IT_BIN is not an executable" >&2
	exit 1
fi
command -v "$IT_ETCDCTL" >/dev/null || {
	echo "FAIL: $IT_ETCDCTL not found (scripts/deps.sh installs etcd-client)" >&2
	exit 1
}
IT_FLAVOUR=cairn
# Captured first: `| grep -q` could end the pipe early and, under pipefail, fail it.
if [[ $(timeout 10 "$IT_BIN" --version 2>/dev/null || true) == "etcd Version"* ]]; then
	IT_FLAVOUR=etcd
fi
# The leader's record of the gossip view (/cairn/members/) is written whenever gossip sees a
# change, at moments a test does not control; the tests that count keys or compare revisions
# would see it. test_gossip.sh, which tests it, turns it back on.
export CAIRN_GOSSIP_STORE_MEMBERS=false

IT_TMP=$(mktemp -d "${TMPDIR:-/tmp}/cairn-it.XXXXXX")
IT_LIBDIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
IT_START=${EPOCHREALTIME/./} # microseconds (bash 5)
declare -A IT_PID=() # member name -> pid of its running process
IT_RC=0              # exit status collected by the last it_wait_exit
IT_LEADER=""         # the leader's member id found by the last it_wait_leader

it_log() {
	local us=$((${EPOCHREALTIME/./} - IT_START))
	printf '[%3d.%03ds] %s\n' $((us / 1000000)) $((us / 1000 % 1000)) "$*" >&2
}

it_cleanup() {
	local rc=$?
	local name pid
	for name in "${!IT_PID[@]}"; do
		pid=${IT_PID[$name]}
		# Its children first (a background client loop's etcdctl), by parent pid.
		pkill -9 -P "$pid" 2>/dev/null || true
		kill -9 "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	done
	if [[ $rc -ne 0 ]]; then
		local f
		for f in "$IT_TMP"/*.log; do
			[[ -e $f ]] || continue
			echo "----- $(basename "$f") -----" >&2
			tail -n 200 "$f" >&2
		done
		echo "FAILED (status $rc)" >&2
	fi
	python3 "$IT_LIBDIR/../lib/ports.py" release "$$" || true
	if [[ ${IT_KEEP:-0} == 1 ]]; then
		echo "data directories and logs kept in $IT_TMP" >&2
	else
		rm -rf "$IT_TMP"
	fi
	exit "$rc"
}
trap it_cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

it_fail() {
	echo "FAIL: $*" >&2
	exit 1
}

it_skip_note() {
	it_log "skipped under $IT_FLAVOUR: $*"
}

# it_expect_eq <got> <want> <what>
it_expect_eq() {
	if [[ $1 != "$2" ]]; then
		it_fail "$3: got [$1], want [$2]"
	fi
}

# it_expect_match <text> <extended regex> <what>
it_expect_match() {
	if ! grep -Eq -- "$2" <<<"$1"; then
		it_fail "$3: [$1] does not match /$2/"
	fi
}

# it_ports <n>: n distinct free ports on 127.0.0.1 (TCP and UDP: gossip uses both), one per line,
# claimed for this test so that a concurrent test does not pick them before our members bind
# them (tests/lib/ports.py); it_cleanup removes the claims.
it_ports() {
	python3 "$IT_LIBDIR/../lib/ports.py" claim "$1" "$$"
}

# it_port_free <port>: whether 127.0.0.1:<port> can be bound now.
it_port_free() {
	python3 -c '
import socket, sys
s = socket.socket()
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(1)
' "$1"
}

# it_member_args <name> <client port> <peer port> <gossip port>: sets IT_ARGS to the flags of
# one member listening on 127.0.0.1 (no --initial-cluster: a one-member cluster derives it).
it_member_args() {
	local name=$1 c=$2 p=$3 g=$4
	IT_ARGS=(--name "$name" --data-dir "$IT_TMP/$name.data"
		--listen-client-urls "http://127.0.0.1:$c" --advertise-client-urls "http://127.0.0.1:$c"
		--listen-peer-urls "http://127.0.0.1:$p" --initial-advertise-peer-urls "http://127.0.0.1:$p")
	if [[ $IT_FLAVOUR == cairn ]]; then
		# Every member gossips (7946 by default): members on one host need their own port.
		IT_ARGS+=(--gossip-listen "127.0.0.1:$g")
	fi
}

# it_gossip_join <own gossip port> <gossip port...>: appends --gossip-join with every other port
# on 127.0.0.1 to IT_ARGS (Cairn only), so that members started together form one gossip pool.
it_gossip_join() {
	[[ $IT_FLAVOUR == cairn ]] || return 0
	local self=$1 p j=""
	shift
	for p in "$@"; do
		[[ $p == "$self" ]] || j+="${j:+,}127.0.0.1:$p"
	done
	[[ -z $j ]] || IT_ARGS+=(--gossip-join "$j")
}

# it_start <name> <args...>: starts the server with args, output appended to $IT_TMP/<name>.log.
it_start() {
	local name=$1
	shift
	if [[ -n ${IT_PID[$name]:-} ]]; then
		it_fail "it_start $name: already running as pid ${IT_PID[$name]}"
	fi
	echo "===== start: $IT_BIN $*" >>"$IT_TMP/$name.log"
	"$IT_BIN" "$@" >>"$IT_TMP/$name.log" 2>&1 &
	IT_PID[$name]=$!
	it_log "started $name (pid ${IT_PID[$name]})"
}

# it_alive <pid>: the process exists and is not a zombie (kill -0 succeeds on a zombie).
it_alive() {
	local state
	state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
	[[ -n $state && $state != Z ]]
}

# it_running <name>: its process is running.
it_running() {
	[[ -n ${IT_PID[$1]:-} ]] && it_alive "${IT_PID[$1]}"
}

# it_wait_exit <name> <seconds>: waits for the process to exit; IT_RC is its exit status.
# Returns 1, with the process still running, after <seconds>.
it_wait_exit() {
	local name=$1 secs=$2
	local pid=${IT_PID[$name]:?it_wait_exit: $name is not running}
	local deadline=$((SECONDS + secs))
	while it_alive "$pid"; do
		if ((SECONDS >= deadline)); then
			return 1
		fi
		sleep 0.05
	done
	IT_RC=0
	wait "$pid" 2>/dev/null || IT_RC=$?
	unset "IT_PID[$name]"
	it_log "$name exited with status $IT_RC"
}

# it_stop <name> <signal> <seconds>: sends the signal and waits for the exit (fails the test
# if the process outlives <seconds>); IT_RC is its exit status.
it_stop() {
	local name=$1 sig=$2 secs=$3
	local pid=${IT_PID[$name]:?it_stop: $name is not running}
	it_log "kill -$sig $name (pid $pid)"
	kill "-$sig" "$pid"
	it_wait_exit "$name" "$secs" || it_fail "$name still running $secs s after SIG$sig"
}

# it_expect_stopped <signal name>: IT_RC is the status of a graceful stop by that signal: 0 for
# Cairn; etcd 3.4 re-raises the signal after its own graceful stop (128 + the signal number).
it_expect_stopped() {
	local want=0
	if [[ $IT_FLAVOUR == etcd ]]; then
		want=$((128 + $(kill -l "$1")))
	fi
	it_expect_eq "$IT_RC" "$want" "exit status after SIG$1"
}

# it_ctl <endpoints> <etcdctl args...>: etcdctl with bounded dial, command and process time.
it_ctl() {
	local ep=$1
	shift
	timeout 30 "$IT_ETCDCTL" --endpoints="$ep" --dial-timeout=2s --command-timeout=5s "$@"
}

# it_wait_healthy <name> <endpoint> <seconds>: `endpoint health` succeeds within <seconds>;
# fails the test if it does not, or if the process exits meanwhile.
it_wait_healthy() {
	local name=$1 ep=$2 secs=$3
	local deadline=$((SECONDS + secs))
	while ! it_ctl "$ep" --dial-timeout=1s --command-timeout=1s endpoint health \
		>/dev/null 2>&1; do
		it_running "$name" || it_fail "$name exited before it was healthy"
		((SECONDS < deadline)) || it_fail "$name ($ep) not healthy within $secs s"
		sleep 0.1
	done
	it_log "$name healthy at $ep"
}

# it_json <python expression>: evaluates it with d bound to the JSON read from stdin.
it_json() {
	python3 -c '
import json, sys
d = json.load(sys.stdin)
v = eval(sys.argv[1])
print(json.dumps(v) if isinstance(v, (dict, list)) else v)
' "$1"
}

# it_status <endpoint> <field>: a field of `endpoint status -w json`: member_id, leader,
# raft_term, revision (from etcd's Status message).
it_status() {
	local out
	out=$(it_ctl "$1" --command-timeout=2s endpoint status -w json) || return 1
	case $2 in
	member_id | raft_term | revision | cluster_id) it_json "d[0]['Status']['header']['$2']" <<<"$out" ;;
	*) it_json "d[0]['Status']['$2']" <<<"$out" ;;
	esac
}

# it_get <endpoint> <key> [etcdctl get flags]: the value alone ("" when the key is absent).
it_get() {
	local ep=$1 key=$2
	shift 2
	it_ctl "$ep" get "$key" --print-value-only "$@"
}

# it_put <endpoint> <key> <value>: fails the test unless etcdctl prints OK.
it_put() {
	local out
	out=$(it_ctl "$1" put "$2" "$3") || it_fail "put $2 through $1 failed: $out"
	it_expect_eq "$out" OK "put $2 through $1"
}

# it_leader_of <endpoint>: the leader id the member reports; 0 when it names none or does not
# answer.
it_leader_of() {
	it_status "$1" leader 2>/dev/null || echo 0
}

# it_wait_leader <seconds> <excluded id> <endpoint...>: waits until every endpoint reports the
# same leader, non-zero and other than <excluded id> (0 excludes nothing); IT_LEADER is its id.
# Fails the test after <seconds>.
it_wait_leader() {
	local secs=$1 not=$2
	shift 2
	local deadline=$((SECONDS + secs))
	local ep first got all
	while :; do
		first="" all=""
		for ep in "$@"; do
			got=$(it_leader_of "$ep")
			all+="${all:+ }$got"
			if [[ $got == 0 || $got == "$not" ]] || [[ -n $first && $got != "$first" ]]; then
				first=none
			fi
			[[ -n $first ]] || first=$got
		done
		if [[ $first != none ]]; then
			# shellcheck disable=SC2034 # read by the tests
			IT_LEADER=$first
			return 0
		fi
		((SECONDS < deadline)) ||
			it_fail "no common leader (other than $not) within $secs s; members report: $all"
		sleep 0.1
	done
}

# it_leader_split: which member IT_LEADER (from it_wait_leader) is: IT_LEADER_NAME, the other
# members in IT_OTHERS, and every member's id in IT_ID[name].
declare -A IT_ID=()
it_leader_split() {
	local n
	IT_LEADER_NAME="" IT_OTHERS=()
	for n in "${IT_NAMES[@]}"; do
		IT_ID[$n]=$(it_status "${IT_EP[$n]}" member_id)
		if [[ ${IT_ID[$n]} == "$IT_LEADER" ]]; then
			IT_LEADER_NAME=$n
		else
			IT_OTHERS+=("$n")
		fi
	done
	[[ -n $IT_LEADER_NAME ]] || it_fail "leader $IT_LEADER is not one of the members ${IT_ID[*]}"
}

# it_writer_start <name> <endpoints> <prefix> <count> <seconds>: a background client putting
# <prefix>k<i> = v<i> for i = 0, 1, ... through etcdctl (every endpoint given, so it fails over),
# one put at a time. Each put etcdctl acknowledged (printed OK for) is appended to
# $IT_TMP/<name>.acked as "key value", after the acknowledgement. It stops after <count> puts,
# after <seconds>, or once $IT_TMP/<name>.stop exists; its pid is IT_PID[<name>], so the EXIT
# trap kills it (and its etcdctl) on every path.
it_writer_start() {
	local name=$1 eps=$2 prefix=$3 count=$4 secs=$5
	: >"$IT_TMP/$name.acked"
	printf '%s\n' "$prefix" >"$IT_TMP/$name.prefix"
	rm -f "$IT_TMP/$name.stop"
	(
		deadline=$((SECONDS + secs))
		for ((i = 0; i < count && SECONDS < deadline; i++)); do
			[[ ! -e $IT_TMP/$name.stop ]] || break
			if [[ $(timeout 10 "$IT_ETCDCTL" --endpoints="$eps" --dial-timeout=1s \
				--command-timeout=2s put "${prefix}k$i" "v$i" 2>>"$IT_TMP/$name.log") == OK ]]; then
				echo "${prefix}k$i v$i" >>"$IT_TMP/$name.acked"
			fi
		done
	) &
	IT_PID[$name]=$!
	it_log "started writer $name (pid ${IT_PID[$name]}): ${prefix}k<i>, at most $count puts, $secs s"
}

# it_writer_stop <name>: asks the writer to stop and waits for it (its put in flight ends
# within etcdctl's own timeouts).
it_writer_stop() {
	touch "$IT_TMP/$1.stop"
	it_wait_exit "$1" 30 || it_fail "writer $1 did not stop within 30 s"
	it_log "writer $1: $(it_acked "$1") puts acknowledged"
}

# it_acked <name>: the number of puts writer <name> has had acknowledged.
it_acked() {
	wc -l <"$IT_TMP/$1.acked"
}

# it_wait_acked <name> <count> <seconds>: waits until the writer has <count> acknowledgements;
# fails the test after <seconds>, or if the writer ended first.
it_wait_acked() {
	local name=$1 want=$2 secs=$3
	local deadline=$((SECONDS + secs))
	while (($(it_acked "$name") < want)); do
		((SECONDS < deadline)) ||
			it_fail "writer $name: $(it_acked "$name") puts acknowledged, want $want within $secs s"
		if ! it_running "$name" && (($(it_acked "$name") < want)); then
			it_fail "writer $name ended with $(it_acked "$name") puts acknowledged, want $want"
		fi
		sleep 0.05
	done
}

# it_check_acked <endpoint> <name> <what> [etcdctl get flags]: every put writer <name> had
# acknowledged reads back through <endpoint> with its value (one get of the writer's prefix
# range, so its keys are compared to the file, not fetched one by one).
it_check_acked() {
	local ep=$1 name=$2 what=$3
	shift 3
	local acked=$IT_TMP/$name.acked
	[[ -s $acked ]] || it_fail "$what: writer $name has no acknowledged put to check"
	local prefix out missing
	prefix=$(<"$IT_TMP/$name.prefix")
	out=$(it_ctl "$ep" --command-timeout=20s get "${prefix}k" --prefix -w json "$@") ||
		it_fail "$what: get --prefix ${prefix}k through $ep failed"
	missing=$(python3 -c '
import base64, json, sys
d = json.loads(sys.stdin.read())
have = {base64.b64decode(k["key"]).decode(): base64.b64decode(k["value"]).decode()
        for k in d.get("kvs", [])}
bad = []
for line in open(sys.argv[1]):
    k, v = line.split()
    if have.get(k) != v:
        bad.append("%s(%s)" % (k, have.get(k, "absent")))
print(" ".join(bad[:20]) + (" and %d more" % (len(bad) - 20) if len(bad) > 20 else ""))
' "$acked" <<<"$out")
	[[ -z $missing ]] || it_fail "$what: acknowledged puts not read back: $missing"
	it_log "$what: all $(it_acked "$name") acknowledged puts of $name read back"
}

# it_txn_puts <endpoint> <prefix> <from> <n> [width]: one txn in etcdctl's stdin form (no
# compare, n puts on success, none on failure): <prefix><i> = v<i> for i in [from, from + n),
# i zero-padded to <width> digits (default 6). n is at most 128 (etcd's --max-txn-ops). Fails the
# test unless etcdctl reports SUCCESS.
it_txn_puts() {
	local ep=$1 prefix=$2 from=$3 n=$4 width=${5:-6}
	local out i
	((n >= 1 && n <= 128)) || it_fail "it_txn_puts: $n puts (1 to 128)"
	out=$({
		echo
		for ((i = from; i < from + n; i++)); do
			printf 'put %s%0*d v%d\n' "$prefix" "$width" "$i" "$i"
		done
		printf '\n\n'
	} | it_ctl "$ep" --command-timeout=20s txn 2>&1) ||
		it_fail "txn of $n puts from $prefix$from through $ep failed: ${out:0:300}"
	[[ $out == SUCCESS* ]] || it_fail "txn of $n puts from $prefix$from: ${out:0:300}"
}

# it_cluster_init <n> <token>: picks the ports of an n-member cluster and sets IT_NAMES (m1 ..
# mn), IT_EP[<name>] (its client URL), IT_PEER[<name>] (its peer URL), IT_ALL (every client URL,
# comma-separated) and IT_CLUSTER (the --initial-cluster value). <token> is appended with the
# test's pid to make --initial-cluster-token.
declare -a IT_NAMES=()
declare -A IT_EP=() IT_PEER=() IT_CPORT=() IT_PPORT=() IT_GPORT=()
IT_ALL="" IT_CLUSTER="" IT_TOKEN=""
it_cluster_init() {
	local n=$1 i name
	local -a ports
	mapfile -t ports < <(it_ports $((3 * n)))
	((${#ports[@]} == 3 * n)) || it_fail "it_cluster_init: no free ports"
	IT_NAMES=() IT_ALL="" IT_CLUSTER="" IT_TOKEN="$2-$$"
	for ((i = 0; i < n; i++)); do
		name=m$((i + 1))
		IT_NAMES+=("$name")
		IT_CPORT[$name]=${ports[i]}
		IT_PPORT[$name]=${ports[n + i]}
		IT_GPORT[$name]=${ports[2 * n + i]}
		IT_EP[$name]=http://127.0.0.1:${ports[i]}
		IT_PEER[$name]=http://127.0.0.1:${ports[n + i]}
		IT_ALL+="${IT_ALL:+,}${IT_EP[$name]}"
		IT_CLUSTER+="${IT_CLUSTER:+,}$name=${IT_PEER[$name]}"
	done
}

# it_cluster_args <name> [extra flags]: IT_ARGS of that member of the it_cluster_init cluster,
# which joins the gossip pool through the others (an extra --gossip-join replaces that).
it_cluster_args() {
	local name=$1 other
	local -a gports=()
	shift
	it_member_args "$name" "${IT_CPORT[$name]}" "${IT_PPORT[$name]}" "${IT_GPORT[$name]}"
	for other in "${IT_NAMES[@]}"; do
		gports+=("${IT_GPORT[$other]}")
	done
	it_gossip_join "${IT_GPORT[$name]}" "${gports[@]}"
	IT_ARGS+=(--initial-cluster "$IT_CLUSTER" --initial-cluster-state new
		--initial-cluster-token "$IT_TOKEN" "$@")
}

# it_cluster_start <seconds> [extra flags]: starts every member of the it_cluster_init cluster
# and waits (each at most <seconds>) until each is healthy.
it_cluster_start() {
	local secs=$1 name
	shift
	for name in "${IT_NAMES[@]}"; do
		it_cluster_args "$name" "$@"
		it_start "$name" "${IT_ARGS[@]}"
	done
	for name in "${IT_NAMES[@]}"; do
		it_wait_healthy "$name" "${IT_EP[$name]}" "$secs"
	done
}

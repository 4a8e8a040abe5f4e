# shellcheck shell=bash
# lib.sh: the integration harness, sourced by every tests/integration/test_*.sh.
#
#   bash test_<name>.sh <server binary> [etcdctl]
#
# Runs real server processes on 127.0.0.1 and drives them with etcdctl (etcd-client 3.4). Every
# process started with it_start is killed by pid on every exit path (EXIT trap); every wait is
# bounded; each member's output goes to $IT_TMP/<name>.log, and all logs are printed when the
# test fails. Ports are picked at random in 20000-32767 (below Linux's ephemeral range, so
# outgoing connections do not take them) and checked free by binding them.
#
# The server binary is normally build/bin/cairn. Pointed at Debian's etcd 3.4, which takes the
# same flags, the same tests check the harness itself (IT_FLAVOUR=etcd): the few assertions
# about Cairn's own texts and files are then skipped, each with a line saying so.
#
# Environment: IT_KEEP=1 keeps $IT_TMP (data dirs and logs) after the test.

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

IT_TMP=$(mktemp -d "${TMPDIR:-/tmp}/cairn-it.XXXXXX")
IT_START=${EPOCHREALTIME/./} # microseconds (bash 5)
declare -A IT_PID=() # member name -> pid of its running process
IT_RC=0              # exit status collected by the last it_wait_exit

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

# it_ports <n>: n distinct free TCP ports on 127.0.0.1, one per line.
it_ports() {
	python3 - "$1" <<'EOF'
import random, socket, sys
n = int(sys.argv[1])
held, tries = [], 0
while len(held) < n:
    tries += 1
    if tries > 5000:
        sys.exit("no free ports found")
    port = random.randint(20000, 32767)
    if any(p == port for p, _ in held):
        continue
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", port))
    except OSError:
        s.close()
        continue
    held.append((port, s))
for port, s in held:
    print(port)
    s.close()
EOF
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
		# Gossip is off the tests' path, but members on one host must not share its port.
		IT_ARGS+=(--gossip-listen "127.0.0.1:$g")
	fi
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

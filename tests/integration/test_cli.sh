#!/usr/bin/env bash
# test_cli.sh: the command line. --help and --version exit 0 with their texts on stdout; an
# unknown flag or a malformed value exits 2 with etcd's message; a configuration that cannot
# run exits 1; `cairn agent` and `cairn gossip-keygen` answer the same way (the agent's
# refusals, its help, a bad key file, a new key); a second process on a running member's
# --data-dir fails with a message about the lock while the first keeps serving.
source "$(dirname "$0")/lib.sh"

OUT=$IT_TMP/out
ERR=$IT_TMP/err

# run <args...>: runs the binary (10 s at most); RC, and stdout and stderr in $OUT and $ERR.
run() {
	RC=0
	timeout 10 "$IT_BIN" "$@" >"$OUT" 2>"$ERR" || RC=$?
	((RC != 124)) || it_fail "$IT_BIN $* did not exit within 10 s"
}

# --- help and version ---
for flag in --help -h; do
	run "$flag"
	it_expect_eq "$RC" 0 "exit status of $flag"
	if [[ $IT_FLAVOUR == cairn ]]; then
		it_expect_eq "$(head -n 3 "$OUT")" $'Usage:\n\n  cairn [flags]' "start of $flag"
		for f in --name --data-dir --listen-client-urls --advertise-client-urls \
			--listen-peer-urls --initial-advertise-peer-urls --initial-cluster \
			--initial-cluster-state --initial-cluster-token --heartbeat-interval \
			--election-timeout --log-level --config-file; do
			grep -q -- "^  $f '" "$OUT" || it_fail "$flag does not describe $f"
		done
		[[ ! -s $ERR ]] || it_fail "$flag wrote to stderr: $(cat "$ERR")"
	else
		it_skip_note "the text of $flag"
	fi
done

run --version
it_expect_eq "$RC" 0 "exit status of --version"
if [[ $IT_FLAVOUR == cairn ]]; then
	it_expect_match "$(cat "$OUT")" $'^cairn Version: [0-9]+\\.[0-9]+\\.[0-9]+' \
		"first line of --version"
	it_expect_eq "$(sed -n 2p "$OUT")" "API version: 3.4" "second line of --version"
	it_expect_eq "$(wc -l <"$OUT")" 2 "lines of --version"
else
	it_expect_match "$(cat "$OUT")" '^etcd Version: 3\.4\.' "--version"
fi

# --- command line mistakes: exit 2, etcd's message, nothing started ---
run --no-such-flag --data-dir "$IT_TMP/never"
it_expect_eq "$RC" 2 "exit status for an unknown flag"
it_expect_match "$(cat "$ERR")" 'flag provided but not defined: -no-such-flag' \
	"message for an unknown flag"
run --heartbeat-interval abc --data-dir "$IT_TMP/never"
it_expect_eq "$RC" 2 "exit status for a malformed value"
it_expect_match "$(cat "$ERR")" 'invalid value "abc" for flag -?-heartbeat-interval' \
	"message for a malformed value"
[[ ! -e $IT_TMP/never ]] || it_fail "a refused command line created the data directory"

# --- a configuration that cannot run: exit 1 ---
run --election-timeout 100 --data-dir "$IT_TMP/never"
it_expect_eq "$RC" 1 "exit status for --election-timeout below 5 heartbeats"
it_expect_match "$(cat "$ERR")" \
	'--election-timeout\[100ms\] should be at least as 5 times as --heartbeat-interval\[100ms\]' \
	"message for --election-timeout below 5 heartbeats"
mapfile -t P < <(it_ports 3)
run --name a --data-dir "$IT_TMP/never" --initial-cluster "b=http://127.0.0.1:${P[1]}" \
	--listen-client-urls "http://127.0.0.1:${P[0]}" \
	--advertise-client-urls "http://127.0.0.1:${P[0]}" \
	--listen-peer-urls "http://127.0.0.1:${P[1]}"
it_expect_eq "$RC" 1 "exit status for a name missing from --initial-cluster"
it_expect_match "$(cat "$ERR")" 'find local name .{0,2}a.{0,2} in the initial cluster' \
	"message for a name missing from --initial-cluster"

# --- cairn agent and cairn gossip-keygen (a running agent: test_gossip.sh) ---
if [[ $IT_FLAVOUR == cairn ]]; then
	run agent
	it_expect_eq "$RC" 2 "exit status of cairn agent without --name"
	it_expect_match "$(cat "$ERR")" '^cairn agent: --name is required' "cairn agent without --name"
	run agent --name x --data-dir "$IT_TMP/x"
	it_expect_eq "$RC" 2 "exit status of cairn agent with a server's flag"
	it_expect_match "$(cat "$ERR")" 'flag provided but not defined: -data-dir' \
		"cairn agent with a server's flag"
	run agent --help
	it_expect_eq "$RC" 0 "exit status of cairn agent --help"
	it_expect_match "$(cat "$OUT")" 'cairn agent --name NAME' "cairn agent --help"
	run agent --name x --gossip-key-file "$IT_TMP/none.key"
	it_expect_eq "$RC" 1 "exit status of cairn agent with a missing key file"
	it_expect_match "$(cat "$ERR")" 'gossip key file .*none.key: No such file' \
		"cairn agent with a missing key file"
	run gossip-keygen
	it_expect_eq "$RC" 0 "exit status of cairn gossip-keygen"
	it_expect_match "$(cat "$OUT")" '^[A-Za-z0-9+/]{43}=$' "cairn gossip-keygen"
else
	it_skip_note "cairn agent"
fi

# --- the data directory's lock ---
it_member_args m1 "${P[0]}" "${P[1]}" "${P[2]}"
it_start m1 "${IT_ARGS[@]}"
EP=http://127.0.0.1:${P[0]}
it_wait_healthy m1 "$EP" 10
it_put "$EP" k v
if [[ $IT_FLAVOUR == cairn ]]; then
	mapfile -t Q < <(it_ports 3)
	it_member_args m1 "${Q[0]}" "${Q[1]}" "${Q[2]}" # same name, same data dir, other ports
	run "${IT_ARGS[@]}"
	it_expect_eq "$RC" 1 "exit status of a second process on the same data directory"
	it_expect_match "$(cat "$ERR")" "$IT_TMP/m1.data.*in use by another process" \
		"message of a second process on the same data directory"
	it_running m1 || it_fail "the first member exited after the second was refused"
	it_expect_eq "$(it_get "$EP" k)" v "the first member after the second was refused"
else
	# etcd 3.4 waits for bbolt's file lock instead of failing.
	it_skip_note "the data directory's lock"
fi
it_stop m1 TERM 10
it_expect_stopped TERM
it_log PASS

#!/usr/bin/env bash
# test_sigterm.sh: SIGTERM, and SIGINT, make a running member exit 0 within 5 s, after a write,
# and the write is there when it starts again. Also what the member logs (Cairn only): every
# line structured (server/log.h), the stop logged with its signal, and nothing per request at
# the default level.
source "$(dirname "$0")/lib.sh"

mapfile -t P < <(it_ports 3)
EP=http://127.0.0.1:${P[0]}
it_member_args m1 "${P[0]}" "${P[1]}" "${P[2]}"
ARGS=("${IT_ARGS[@]}")

LOG=$IT_TMP/m1.log
it_start m1 "${ARGS[@]}"
it_wait_healthy m1 "$EP" 10
lines=$(wc -l <"$LOG")
for i in $(seq 1 50); do
	it_put "$EP" "k$i" "$i"
done
it_expect_eq "$(it_get "$EP" k50)" 50 "the last of 50 puts"
added=$(($(wc -l <"$LOG") - lines))
if [[ $IT_FLAVOUR == cairn ]]; then
	((added < 10)) || it_fail "$added log lines for 50 puts at the default level"
else
	it_skip_note "log lines per request ($added for 50 puts)"
fi
it_put "$EP" before-term 1
it_stop m1 TERM 5
it_expect_stopped TERM
if [[ $IT_FLAVOUR == cairn ]]; then
	stamp='[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z'
	bad=$(grep -v '^===== start: ' "$LOG" | grep -Ev "^$stamp (DEBUG|INFO |WARN |ERROR) " || true)
	[[ -z $bad ]] || it_fail "log lines not in the structured format: $bad"
	grep -Eq "^$stamp INFO  member=m1 event=stopping signal=SIGTERM\$" "$LOG" ||
		it_fail "no event=stopping signal=SIGTERM line in the log"
else
	it_skip_note "the log's format"
fi

it_start m1 "${ARGS[@]}"
it_wait_healthy m1 "$EP" 10
it_expect_eq "$(it_get "$EP" before-term)" 1 "the write before SIGTERM"
it_put "$EP" before-int 2
it_stop m1 INT 5
it_expect_stopped INT

it_start m1 "${ARGS[@]}"
it_wait_healthy m1 "$EP" 10
it_expect_eq "$(it_get "$EP" before-int)" 2 "the write before SIGINT"
it_stop m1 TERM 5
it_expect_stopped TERM
it_log PASS

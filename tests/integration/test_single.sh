#!/usr/bin/env bash
# test_single.sh: one member on free ports. Healthy within 10 s; put/get/del, txn (etcdctl's
# stdin format), get --prefix, get --rev, compaction; endpoint status names the member and a
# leader; member list shows one member; after SIGTERM and a restart with no cluster flags every
# key is still there (and once more with only --data-dir and --name, when the default ports are
# free).
source "$(dirname "$0")/lib.sh"

mapfile -t P < <(it_ports 3)
EP=http://127.0.0.1:${P[0]}
PEER=http://127.0.0.1:${P[1]}
it_member_args m1 "${P[0]}" "${P[1]}" "${P[2]}"
it_start m1 "${IT_ARGS[@]}"
it_wait_healthy m1 "$EP" 10

# --- put, get, del ---
it_put "$EP" foo bar
it_expect_eq "$(it_ctl "$EP" get foo)" $'foo\nbar' "get foo"
it_expect_eq "$(it_get "$EP" missing)" "" "get of an absent key"
it_put "$EP" gone soon
it_expect_eq "$(it_ctl "$EP" del gone)" 1 "del gone"
it_expect_eq "$(it_ctl "$EP" del gone)" 0 "del of an absent key"
it_expect_eq "$(it_get "$EP" gone)" "" "get after del"

# --- txn: compares, blank line, success ops, blank line, failure ops ---
out=$(printf 'value("foo") = "bar"\n\nput t1 yes\nget foo\n\nput t1 no\n\n' | it_ctl "$EP" txn)
it_expect_eq "$out" $'SUCCESS\n\nOK\n\nfoo\nbar' "txn whose compare holds"
out=$(printf 'value("foo") = "nope"\n\nput t2 yes\n\nput t2 no\n\n' | it_ctl "$EP" txn)
it_expect_eq "$out" $'FAILURE\n\nOK' "txn whose compare fails"
it_expect_eq "$(it_get "$EP" t1)" yes "t1 after the successful txn"
it_expect_eq "$(it_get "$EP" t2)" no "t2 after the failed txn"

# --- get --prefix ---
it_put "$EP" dir/a 1
it_put "$EP" dir/b 2
it_put "$EP" dir0 outside
it_expect_eq "$(it_ctl "$EP" get --prefix dir/)" $'dir/a\n1\ndir/b\n2' "get --prefix dir/"
it_expect_eq "$(it_ctl "$EP" get --prefix dir/ --keys-only | sed '/^$/d')" $'dir/a\ndir/b' \
	"get --prefix --keys-only"

# --- get --rev, compaction ---
rev1=$(it_ctl "$EP" put hist v1 -w json | it_json "d['header']['revision']")
rev2=$(it_ctl "$EP" put hist v2 -w json | it_json "d['header']['revision']")
((rev2 == rev1 + 1)) || it_fail "revisions of two puts: $rev1 then $rev2"
it_expect_eq "$(it_get "$EP" hist --rev="$rev1")" v1 "get hist --rev=$rev1"
it_expect_eq "$(it_get "$EP" hist --rev="$rev2")" v2 "get hist --rev=$rev2"
it_expect_eq "$(it_get "$EP" hist)" v2 "get hist"
it_expect_eq "$(it_ctl "$EP" compaction "$rev2")" "compacted revision $rev2" "compaction"
if out=$(it_ctl "$EP" get hist --rev="$rev1" 2>&1); then
	it_fail "get --rev=$rev1 after compaction at $rev2 succeeded: $out"
fi
it_expect_match "$out" 'etcdserver: mvcc: required revision has been compacted' \
	"get below the compacted revision"
it_expect_eq "$(it_get "$EP" hist --rev="$rev2")" v2 "get at the compacted revision"

# --- endpoint status and member list ---
status=$(it_ctl "$EP" endpoint status -w json)
id=$(it_json "d[0]['Status']['header']['member_id']" <<<"$status")
leader=$(it_json "d[0]['Status']['leader']" <<<"$status")
[[ $id =~ ^[1-9][0-9]*$ ]] || it_fail "endpoint status member_id: $id"
it_expect_eq "$leader" "$id" "endpoint status: a one-member cluster leads itself"
cluster_id=$(it_json "d[0]['Status']['header']['cluster_id']" <<<"$status")
[[ $cluster_id =~ ^[1-9][0-9]*$ ]] || it_fail "endpoint status cluster_id: $cluster_id"
term=$(it_json "d[0]['Status']['header']['raft_term']" <<<"$status")
((term >= 1)) || it_fail "endpoint status raft_term: $term"
it_expect_eq "$(it_json "d[0]['Status']['raftTerm']" <<<"$status")" "$term" \
	"endpoint status raftTerm and header.raft_term"
it_expect_eq "$(it_json "d[0]['Status']['header']['revision']" <<<"$status")" "$rev2" \
	"endpoint status revision (the last write)"
it_expect_eq "$(it_json "d[0]['Endpoint']" <<<"$status")" "$EP" "endpoint status Endpoint"
members=$(it_ctl "$EP" member list -w json)
it_expect_eq "$(it_json "len(d['members'])" <<<"$members")" 1 "member list: count"
it_expect_eq "$(it_json "d['members'][0]['ID']" <<<"$members")" "$id" "member list: ID"
it_expect_eq "$(it_json "d['members'][0]['name']" <<<"$members")" m1 "member list: name"
it_expect_eq "$(it_json "d['members'][0]['peerURLs']" <<<"$members")" "[\"$PEER\"]" \
	"member list: peerURLs"
it_expect_eq "$(it_json "d['members'][0]['clientURLs']" <<<"$members")" "[\"$EP\"]" \
	"member list: clientURLs"
# etcdctl's table prints the id with %x (no leading zeros); ids use all 64 bits, past bash's
# signed arithmetic.
hexid=$(python3 -c 'import sys; print("%x" % int(sys.argv[1]))' "$id")
it_expect_eq "$(it_ctl "$EP" member list)" "$hexid, started, m1, $PEER, $EP, false" \
	"member list (table)"

# Every key and value in the store, for comparison after the restarts.
dump() {
	it_ctl "$1" get "" --from-key -w json |
		it_json "sorted((__import__('base64').b64decode(k['key']).decode(), __import__('base64').b64decode(k['value']).decode()) for k in d.get('kvs', []))"
}
before=$(dump "$EP")
it_expect_match "$before" '"dir/b", "2"' "the keys before the restart"

# --- restart from the data directory: no --initial-* flags ---
it_stop m1 TERM 10
it_expect_stopped TERM
# Listen URLs are not kept in the data directory (as in etcd): they are given again.
extra=()
if [[ $IT_FLAVOUR == cairn ]]; then
	extra=(--gossip-listen "127.0.0.1:${P[2]}")
fi
it_start m1 --name m1 --data-dir "$IT_TMP/m1.data" \
	--listen-client-urls "$EP" --advertise-client-urls "$EP" --listen-peer-urls "$PEER" "${extra[@]}"
it_wait_healthy m1 "$EP" 10
it_expect_eq "$(dump "$EP")" "$before" "every key after the restart"
it_expect_eq "$(it_status "$EP" member_id)" "$id" "member id after the restart"
it_expect_eq "$(it_status "$EP" cluster_id)" "$cluster_id" "cluster id after the restart"
it_expect_eq "$(it_status "$EP" leader)" "$id" "leader after the restart"
it_expect_eq "$(it_ctl "$EP" member list)" "$hexid, started, m1, $PEER, $EP, false" \
	"member list after the restart"
rev=$(it_status "$EP" revision)
((rev >= rev2)) || it_fail "revision went back after the restart: $rev < $rev2"
it_put "$EP" after restart
it_expect_eq "$(it_get "$EP" after)" restart "a write after the restart"
before=$(dump "$EP")

# --- restart with only --data-dir and --name: the default URLs, 127.0.0.1:2379/2380 ---
it_stop m1 TERM 10
it_expect_stopped TERM
if it_port_free 2379 && it_port_free 2380 && it_port_free 7946; then
	it_start m1 --data-dir "$IT_TMP/m1.data" --name m1
	it_wait_healthy m1 http://127.0.0.1:2379 10
	it_expect_eq "$(dump http://127.0.0.1:2379)" "$before" "every key, restarted on the defaults"
	it_expect_eq "$(it_status http://127.0.0.1:2379 member_id)" "$id" \
		"member id, restarted on the defaults"
	it_stop m1 TERM 10
	it_expect_stopped TERM
else
	it_log "ports 2379, 2380 or 7946 in use: the restart on the defaults is not run"
fi
it_log PASS

#!/usr/bin/env bash
# test_five.sh: five members formed from scratch with --initial-cluster. Every member answers
# endpoint status (one leader for all, one cluster id, distinct member ids) and member list (the
# five, with their peer URLs). put, get, del, txn (etcdctl's stdin form) and compaction, each
# through a different member, and after each write every member agrees: a linearizable read on
# it sees the write, and then so does a serializable read, served from its own store. At the end
# every member's whole store, read serializably, is the same, at the same revision.
source "$(dirname "$0")/lib.sh"

it_cluster_init 5 it-five
it_cluster_start 20
it_wait_leader 10 0 "${IT_EP[@]}"
leader=$IT_LEADER

# --- endpoint status against every member ---
declare -A ID
cluster_id=""
for n in "${IT_NAMES[@]}"; do
	status=$(it_ctl "${IT_EP[$n]}" endpoint status -w json)
	ID[$n]=$(it_json "d[0]['Status']['header']['member_id']" <<<"$status")
	[[ ${ID[$n]} =~ ^[1-9][0-9]*$ ]] || it_fail "endpoint status of $n: member_id ${ID[$n]}"
	it_expect_eq "$(it_json "d[0]['Endpoint']" <<<"$status")" "${IT_EP[$n]}" \
		"endpoint status of $n: Endpoint"
	c=$(it_json "d[0]['Status']['header']['cluster_id']" <<<"$status")
	[[ -n $cluster_id ]] || cluster_id=$c
	it_expect_eq "$c" "$cluster_id" "endpoint status of $n: cluster_id"
	it_expect_eq "$(it_json "d[0]['Status']['leader']" <<<"$status")" "$leader" \
		"endpoint status of $n: leader"
done
ids_sorted=$(printf '%s\n' "${ID[@]}" | sort -u)
it_expect_eq "$(wc -l <<<"$ids_sorted")" 5 "distinct member ids among ${ID[*]}"
leader_name=""
for n in "${IT_NAMES[@]}"; do
	[[ ${ID[$n]} == "$leader" ]] && leader_name=$n
done
[[ -n $leader_name ]] || it_fail "leader $leader is not one of the members ${ID[*]}"
it_log "leader: $leader_name ($leader)"
# All five in one call: five rows, one of them the leader.
all_status=$(it_ctl "$IT_ALL" endpoint status -w json)
it_expect_eq "$(it_json "len(d)" <<<"$all_status")" 5 "endpoint status of all five: rows"
it_expect_eq "$(it_json "sum(1 for e in d if e['Status']['leader'] == e['Status']['header']['member_id'])" \
	<<<"$all_status")" 1 "endpoint status of all five: members that lead"

# --- member list through every member ---
want_ids=$(python3 -c 'import json,sys; print(json.dumps(sorted(sys.argv[1:])))' "${ID[@]}")
want_peers=$(for n in "${IT_NAMES[@]}"; do echo "$n ${IT_PEER[$n]}"; done |
	python3 -c 'import json,sys; print(json.dumps(sorted(l.split() for l in sys.stdin)))')
for n in "${IT_NAMES[@]}"; do
	members=$(it_ctl "${IT_EP[$n]}" member list -w json)
	it_expect_eq "$(it_json "len(d['members'])" <<<"$members")" 5 "member list through $n: count"
	it_expect_eq "$(it_json "sorted(str(m['ID']) for m in d['members'])" <<<"$members")" \
		"$want_ids" "member list through $n: ids"
	it_expect_eq "$(it_json "sorted([m['name']] + m['peerURLs'] for m in d['members'])" \
		<<<"$members")" "$want_peers" "member list through $n: names and peer URLs"
	# Cairn fills in client URLs only for the member that answers; etcd for all.
	it_expect_eq "$(it_json "[m.get('clientURLs') for m in d['members'] if m['name'] == '$n'][0]" \
		<<<"$members")" "[\"${IT_EP[$n]}\"]" "member list through $n: its own client URLs"
	it_expect_eq "$(it_json "d['header']['member_id']" <<<"$members")" "${ID[$n]}" \
		"member list through $n: header member_id"
done

# agree <key> <value> <what>: through every member, a linearizable get returns <value> ("" for
# absent), and then a serializable get from the member's own store does too (the linearizable
# read waited until the member had applied the write).
agree() {
	local key=$1 want=$2 what=$3 n
	for n in "${IT_NAMES[@]}"; do
		it_expect_eq "$(it_get "${IT_EP[$n]}" "$key")" "$want" "$what: $key through $n"
		it_expect_eq "$(it_get "${IT_EP[$n]}" "$key" --consistency=s)" "$want" \
			"$what: $key through $n (serializable)"
	done
}

# --- put through each member, read through all ---
for n in "${IT_NAMES[@]}"; do
	it_put "${IT_EP[$n]}" "five/put-$n" "from-$n"
done
for n in "${IT_NAMES[@]}"; do
	agree "five/put-$n" "from-$n" "put"
done
it_expect_eq "$(it_ctl "${IT_EP[m3]}" get five/put- --prefix --keys-only | sed '/^$/d')" \
	$'five/put-m1\nfive/put-m2\nfive/put-m3\nfive/put-m4\nfive/put-m5' "get --prefix five/put-"

# --- del through a follower ---
follower=m1
[[ $leader_name != m1 ]] || follower=m2
it_put "${IT_EP[$leader_name]}" five/gone soon
agree five/gone soon "put before del"
it_expect_eq "$(it_ctl "${IT_EP[$follower]}" del five/gone)" 1 "del five/gone through $follower"
agree five/gone "" "del"
it_expect_eq "$(it_ctl "${IT_EP[$follower]}" del five/gone)" 0 "del of an absent key"

# --- txn in etcdctl's interactive form (stdin), through members in turn ---
out=$(printf 'value("five/put-m1") = "from-m1"\n\nput five/t1 yes\nget five/put-m2\n\nput five/t1 no\n\n' |
	it_ctl "${IT_EP[m2]}" txn)
it_expect_eq "$out" $'SUCCESS\n\nOK\n\nfive/put-m2\nfrom-m2' "txn whose compare holds, through m2"
agree five/t1 yes "txn success branch"
out=$(printf 'value("five/put-m1") = "nope"\n\nput five/t2 yes\n\nput five/t2 no\ndel five/put-m5\n\n' |
	it_ctl "${IT_EP[m4]}" txn)
it_expect_eq "$out" $'FAILURE\n\nOK\n\n1' "txn whose compare fails, through m4"
agree five/t2 no "txn failure branch"
agree five/put-m5 "" "txn failure branch's del"
# A compare on a version and a mod revision, and a put of several keys at one revision.
rev=$(it_ctl "${IT_EP[m5]}" get five/t1 -w json | it_json "d['kvs'][0]['mod_revision']")
out=$(printf 'mod("five/t1") = "%s"\nver("five/t2") = "1"\n\nput five/t3 a\nput five/t4 b\n\n\n' "$rev" |
	it_ctl "${IT_EP[m5]}" txn)
it_expect_eq "$out" $'SUCCESS\n\nOK\n\nOK' "txn on mod and version, through m5"
agree five/t3 a "txn of two puts"
agree five/t4 b "txn of two puts"
r3=$(it_ctl "${IT_EP[m1]}" get five/t3 -w json | it_json "d['kvs'][0]['mod_revision']")
r4=$(it_ctl "${IT_EP[m1]}" get five/t4 -w json | it_json "d['kvs'][0]['mod_revision']")
it_expect_eq "$r3" "$r4" "the two puts of one txn share a revision"

# --- compaction through one member, seen by every member ---
rev1=$(it_ctl "${IT_EP[m1]}" put five/hist v1 -w json | it_json "d['header']['revision']")
rev2=$(it_ctl "${IT_EP[m2]}" put five/hist v2 -w json | it_json "d['header']['revision']")
((rev2 > rev1)) || it_fail "revisions of two puts: $rev1 then $rev2"
for n in "${IT_NAMES[@]}"; do
	it_expect_eq "$(it_get "${IT_EP[$n]}" five/hist --rev="$rev1")" v1 "five/hist at $rev1 through $n"
done
it_expect_eq "$(it_ctl "${IT_EP[m3]}" compaction "$rev2")" "compacted revision $rev2" \
	"compaction through m3"
for n in "${IT_NAMES[@]}"; do
	# Linearizable first: the member has applied the compaction once it answers.
	it_expect_eq "$(it_get "${IT_EP[$n]}" five/hist --rev="$rev2")" v2 "five/hist at $rev2 through $n"
	for consistency in l s; do
		if out=$(it_ctl "${IT_EP[$n]}" get five/hist --rev="$rev1" --consistency=$consistency 2>&1); then
			it_fail "get --rev=$rev1 through $n ($consistency) after compaction at $rev2: $out"
		fi
		it_expect_match "$out" 'required revision has been compacted' \
			"get below the compacted revision through $n ($consistency)"
	done
done

# --- every member's whole store, from its own store, is the same at the same revision ---
last=$(it_ctl "${IT_EP[m4]}" put five/last "done" -w json | it_json "d['header']['revision']")
agree five/last "done" "the last put"
dump() { # <endpoint>: every key, value and mod revision, and the header's revision
	it_ctl "$1" get "" --from-key --consistency=s -w json |
		it_json "[d['header']['revision']] + sorted((__import__('base64').b64decode(k['key']).decode(), __import__('base64').b64decode(k['value']).decode(), k['mod_revision']) for k in d.get('kvs', []))"
}
ref=$(dump "${IT_EP[$leader_name]}")
it_expect_match "$ref" "^\[$last, " "the leader's store at the last revision"
for n in "${IT_NAMES[@]}"; do
	it_expect_eq "$(dump "${IT_EP[$n]}")" "$ref" "$n's whole store (serializable)"
	it_expect_eq "$(it_status "${IT_EP[$n]}" revision)" "$last" "endpoint status of $n: revision"
	it_expect_eq "$(it_status "${IT_EP[$n]}" leader)" "$leader" "endpoint status of $n: leader at the end"
done
it_log PASS

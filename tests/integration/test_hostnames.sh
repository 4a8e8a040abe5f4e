#!/usr/bin/env bash
# test_hostnames.sh: three members whose URLs name their host ("localhost") instead of giving an
# address, as in clusters addressed through DNS. They listen, dial each other (the name is
# resolved without blocking the member's loop), elect a leader and replicate: a write through
# one member is read through the two others.
source "$(dirname "$0")/lib.sh"

mapfile -t P < <(it_ports 9)
NAMES=(m1 m2 m3)
declare -A EP
cluster=""
for i in 0 1 2; do
	cluster+="${cluster:+,}${NAMES[i]}=http://localhost:${P[3 + i]}"
	EP[${NAMES[i]}]=http://localhost:${P[i]}
done
for i in 0 1 2; do
	n=${NAMES[i]} c=http://localhost:${P[i]} p=http://localhost:${P[3 + i]}
	IT_ARGS=(--name "$n" --data-dir "$IT_TMP/$n.data"
		--listen-client-urls "$c" --advertise-client-urls "$c"
		--listen-peer-urls "$p" --initial-advertise-peer-urls "$p"
		--initial-cluster "$cluster" --initial-cluster-state new
		--initial-cluster-token "it-hostnames-$$")
	if [[ $IT_FLAVOUR == cairn ]]; then
		IT_ARGS+=(--gossip-listen "127.0.0.1:${P[6 + i]}")
	fi
	it_gossip_join "${P[6 + i]}" "${P[6]}" "${P[7]}" "${P[8]}"
	it_start "$n" "${IT_ARGS[@]}"
done
for n in "${NAMES[@]}"; do
	it_wait_healthy "$n" "${EP[$n]}" 15
done
it_put "${EP[m1]}" named/a one
for n in m2 m3; do
	it_expect_eq "$(it_get "${EP[$n]}" named/a)" one "named/a read through $n"
done
members=$(it_ctl "${EP[m3]}" member list -w json)
it_expect_eq "$(it_json "sorted(m['peerURLs'][0] for m in d['members'])" <<<"$members")" \
	"$(printf '%s\n' "http://localhost:${P[3]}" "http://localhost:${P[4]}" \
		"http://localhost:${P[5]}" | sort | python3 -c 'import json,sys; print(json.dumps(sys.stdin.read().split()))')" \
	"member list peer URLs"
it_log PASS

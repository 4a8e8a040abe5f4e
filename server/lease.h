/* lease.h: the parts of the Lease service (lease.c) that do no I/O, for the
 * member and its tests: the leader's lease table (deadlines, expiry order,
 * the checkpoint rule, promotion) and the encoding of the questions a
 * follower puts to the leader over the peer transport (net/frame.h, ASK and
 * ANSWER).
 *
 * Times are milliseconds of one monotonic clock the caller owns (the
 * member's loop clock); TTLs are seconds, as in etcd's API. Nothing here
 * allocates behind the caller's back except the table's own arrays, which
 * grow with the number of leases (bounded by the caller, LEASE_MAX). */
#ifndef CAIRN_SERVER_LEASE_H
#define CAIRN_SERVER_LEASE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kvstore.h"

/* etcd's MaxLeaseTTL: a longer TTL gets "etcdserver: too large lease TTL". */
#define LEASE_MAX_TTL 9000000000LL
/* Leases a cluster may hold: a grant beyond it is refused. */
#define LEASE_MAX 100000

/* One lease as the leader knows it. */
struct lease_ent {
	int64_t id;
	int64_t ttl;        /* granted, seconds */
	uint64_t expiry;    /* ms: the deadline */
	int64_t cp;         /* seconds a new leader would give it: the last checkpoint, or ttl */
	uint64_t revoke_at; /* ms of the last revocation proposed for it; 0: none */
	bool seen;          /* lease_tab_sync's mark */
};

struct lease_tab {
	struct lease_ent *v; /* dense, in no order */
	size_t n, cap;
	uint32_t *slots;   /* open addressing by id: index in v plus 1; 0 is empty */
	size_t n_slots;    /* a power of two, at least twice n */
	uint64_t theta_ms; /* the checkpoint threshold (lease.c) */
	size_t cursor;     /* where the next checkpoint scan starts, for fairness */
};

/* A checkpoint the table wants proposed: a lease and its remaining TTL. */
struct lease_cp {
	int64_t id;
	int64_t remaining; /* seconds, >= 1 */
};

/* Initialises an empty table with the checkpoint threshold theta_ms. */
void lease_tab_init(struct lease_tab *t, uint64_t theta_ms);
/* Frees the arrays; the table is empty and may be used again. */
void lease_tab_free(struct lease_tab *t);
/* Empties the table, keeping its arrays. */
void lease_tab_clear(struct lease_tab *t);

struct lease_ent *lease_tab_find(struct lease_tab *t, int64_t id);
/* Adds lease id (not present) with deadline now + cp seconds (cp 0: ttl).
 * 0, or -1 when out of memory. */
int lease_tab_add(struct lease_tab *t, int64_t id, int64_t ttl, int64_t cp, uint64_t now);
void lease_tab_remove(struct lease_tab *t, int64_t id);

/* The table follows the store's lease list (by id): leases not in it go, new
 * ones come in with deadline now + (their checkpoint, or their TTL). A whole
 * build at promotion is lease_tab_clear then lease_tab_sync. 0 or -1 (memory:
 * the table then holds what it could add). */
int lease_tab_sync(struct lease_tab *t, const struct kv_lease *list, size_t n, uint64_t now);

/* etcd Renew at the leader: deadline now + TTL; returns the TTL, 0 for a
 * lease past its deadline (it is being revoked), -1 for an unknown lease. */
int64_t lease_tab_renew(struct lease_tab *t, int64_t id, uint64_t now);
/* Seconds left (truncated, as etcd), 0 past the deadline, -1 if unknown. */
int64_t lease_tab_remaining(struct lease_tab *t, int64_t id, uint64_t now);

/* Up to max leases past their deadline whose last revocation (if any) was
 * proposed at least retry_ms ago, earliest deadline first, into out; their
 * revoke_at becomes now. Returns how many. Cost O(n log max). */
size_t lease_tab_expired(struct lease_tab *t, uint64_t now, uint64_t retry_ms, size_t max,
			 int64_t *out);

/* Up to max checkpoints due by the rule in lease.c, into out, starting after
 * where the last call stopped. The table is not changed: once the
 * checkpoints are proposed, lease_tab_checkpointed records each. */
size_t lease_tab_checkpoints(struct lease_tab *t, uint64_t now, size_t max, struct lease_cp *out);
void lease_tab_checkpointed(struct lease_tab *t, const struct lease_cp *cps, size_t n);

/* ---- forwarding to the leader (ASK and ANSWER payloads) ----
 * ASK:    kind u8 | seq u64 | lease id i64                      (17 bytes)
 * ANSWER: kind u8 | seq u64 | status u8 | ttl i64 | granted i64 (26 bytes)
 * big-endian. kind says what is asked: a renewal (the answer's ttl is the
 * granted TTL, 0 for a lease the leader does not know), or the time left
 * (ttl: seconds left, granted: the granted TTL). seq pairs the answer with
 * the question at the asker. */
enum { LEASE_ASK_RENEW = 1, LEASE_ASK_TTL = 2 };
enum { LEASE_ANS_OK = 0, LEASE_ANS_NOT_FOUND = 1, LEASE_ANS_NOT_LEADER = 2 };
#define LEASE_ASK_SIZE 17
#define LEASE_ANSWER_SIZE 26

struct lease_ask_msg {
	uint8_t kind;
	uint64_t seq;
	int64_t id;
};
struct lease_answer_msg {
	uint8_t kind;
	uint64_t seq;
	uint8_t status;
	int64_t ttl, granted;
};

void lease_ask_encode(const struct lease_ask_msg *a, uint8_t out[LEASE_ASK_SIZE]);
/* 0, or -1 for a payload of another size or kind. */
int lease_ask_decode(const uint8_t *buf, size_t len, struct lease_ask_msg *out);
void lease_answer_encode(const struct lease_answer_msg *a, uint8_t out[LEASE_ANSWER_SIZE]);
int lease_answer_decode(const uint8_t *buf, size_t len, struct lease_answer_msg *out);

#endif /* CAIRN_SERVER_LEASE_H */

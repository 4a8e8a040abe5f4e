/* gossip_core.h: the core's private state, shared by its files (gossip.c: the public entry
 * points; member.c: the member table and events; broadcast.c: packets and the broadcast queue;
 * rules.c: the ordering rules, refutation and suspicion; probe.c: probing, relays and gossip
 * rounds). Nothing here is exported from cairn_gossip.
 */
#ifndef CAIRN_GOSSIP_CORE_H
#define CAIRN_GOSSIP_CORE_H

#include "gossip_int.h"

/* Lifeguard caps confirmations at k = indirect_checks; more are never counted. */
#define MAX_CONFIRM 16u
/* Ping-reqs this member relays at once; more are ignored (the requester counts a missing
 * nack, which is right: we could not help in time). */
#define MAX_RELAYS 128u
/* Datagrams and push-pulls in one update; the caller drains after every call. */
#define MAX_SENDS 4096u
#define MAX_PUSHPULLS 256u
/* A relay never waits longer than this for the target before sending its nack. */
#define MAX_NACK_MS 60000u
/* Probes of a suspect, each carrying the suspicion, that go before the round-robin order. */
#define SUSPECT_PROBES 3u

/* Suspicion of one member (Lifeguard §IV-B). Accusers are kept as name hashes: the first
 * accuser, then up to k independent confirmations. */
struct suspicion {
	uint64_t start, deadline;
	uint64_t min_ms, max_ms;
	uint32_t k, c;
	uint32_t probes; /* our probes of the suspect since the suspicion began */
	uint64_t from[1 + MAX_CONFIRM];
};

struct bcast;
struct member;

/* A slot of the name index: the hash beside the pointer, so a probe of the table touches a
 * member only when the hashes match (one cache miss per lookup, not one per slot). */
struct gossip__slot {
	uint64_t hash;
	struct member *m;
};

struct member {
	char *name; /* NUL-terminated, name_len bytes */
	uint8_t name_len;
	uint64_t hash;
	struct gossip_addr addr;
	uint32_t state;
	uint32_t inc;
	uint8_t *meta;
	uint32_t meta_len;
	uint64_t since;
	bool self;
	struct suspicion *susp; /* while suspect */
	struct bcast *bc;       /* its pending broadcast, at most one */
};

/* One pending broadcast: an encoded alive, suspect or dead message about m. */
struct bcast {
	struct member *m;
	uint64_t id; /* larger is newer */
	uint32_t transmits;
	uint16_t len;
	bool taken; /* in the packet being filled */
	uint8_t data[];
};

struct relay {
	bool used;
	uint32_t seq, orig_seq;
	struct gossip_addr requester;
	uint64_t nack_at;
};

struct out {
	struct gossip_addr to;
	size_t off;
	uint32_t len;
};

struct ev {
	uint32_t type, prev;
	struct gossip_addr addr;
	uint32_t state, inc;
	size_t name_off, meta_off;
	uint32_t name_len, meta_len;
	uint64_t since;
	bool self;
};

struct probe {
	bool active, acked, indirect;
	bool repeat; /* a repeated probe of a suspect: a failure does not count against us */
	uint32_t seq;
	struct member *target;
	uint64_t t_indirect, t_end;
	uint32_t nacks_expected, nacks;
};

struct gossip {
	struct gossip_config cfg; /* name and meta cleared: self holds them */
	struct gossip__rng rng;
	uint64_t now;

	struct member **mem; /* the view, in probe order */
	uint32_t n_mem, cap_mem;
	struct gossip__slot *ht; /* open addressing by name hash; ht_cap a power of two */
	uint32_t ht_cap;
	struct member *self;
	uint32_t n_live; /* alive or suspect, self included */
	uint32_t n_suspects;

	uint32_t seq;
	uint32_t probe_idx;
	bool probe_was_suspect; /* the last probe went to a suspect, out of the round robin */
	struct probe probe;
	uint64_t next_probe, next_gossip, next_pushpull, next_scan;
	uint32_t lhm;
	struct relay relays[MAX_RELAYS];
	uint64_t relay_next; /* earliest nack_at of the relays in use, UINT64_MAX if none */

	struct bcast **q;
	uint32_t qn, qcap;
	struct bcast **qtmp; /* bc_fill's merge space */
	size_t qtmp_cap;
	uint64_t bc_id;

	struct out *out;
	uint32_t n_out, cap_out;
	uint8_t *obuf;
	size_t olen, ocap;
	struct gossip_pushpull pp[MAX_PUSHPULLS];
	uint32_t n_pp;
	struct ev *ev;
	size_t n_ev, cap_ev;
	uint8_t *ebuf;
	size_t elen, ecap;
	struct gossip_send *v_sends;
	uint32_t cap_v_sends;
	struct gossip_event *v_ev;
	size_t cap_v_ev;

	uint8_t *pkt;             /* packet_size scratch */
	struct gossip__msg *msgs; /* GOSSIP__MAX_PARTS decoded messages */
	uint32_t *pick;           /* cap_mem scratch for random choices */

	bool leaving;
	bool stale_self; /* this packet accused us at an old incarnation: answer with alive */
	struct gossip_stats st;
};

/* A packet under construction: a compound whose header is written at the end; a packet of
 * one message is sent without the compound wrapper. */
struct pb {
	uint8_t *buf;
	size_t cap, len;
	uint32_t parts;
};

static inline uint64_t gossip__min_u64(uint64_t a, uint64_t b)
{
	return a < b ? a : b;
}

static inline bool gossip__is_live(uint32_t state)
{
	return state == GOSSIP_ALIVE || state == GOSSIP_SUSPECT;
}

/* broadcast.c */
void gossip__bc_drop(struct gossip *g, struct member *m);
void gossip__bc_fill(struct gossip *g, struct pb *b);
void gossip__bc_queue(struct gossip *g, struct member *m, const struct gossip__msg *msg);
bool gossip__pb_add(struct pb *b, const struct gossip__msg *m);
void gossip__pb_init(struct gossip *g, struct pb *b);
void gossip__pb_send(struct gossip *g, struct pb *b, const struct gossip_addr *to);

/* member.c */
struct member *gossip__find(const struct gossip *g, const uint8_t *name, size_t len);
bool gossip__grow(void **p, size_t *cap, size_t need, size_t size);
struct member *gossip__member_add(struct gossip *g, const uint8_t *name, uint8_t len,
				  const struct gossip_addr *addr, uint32_t inc, const uint8_t *meta,
				  uint32_t meta_len, uint64_t now);
void gossip__member_free(struct member *m);
void gossip__member_remove(struct gossip *g, uint32_t i);
uint64_t gossip__name_hash(const uint8_t *s, size_t n);
bool gossip__set_meta(struct member *m, const uint8_t *meta, uint32_t len);
void gossip__set_state(struct gossip *g, struct member *m, uint32_t state, uint32_t inc,
		       uint64_t now);

/* probe.c */
void gossip__round(struct gossip *g);
void gossip__lhm_add(struct gossip *g, int delta);
void gossip__on_ack(struct gossip *g, const struct gossip__msg *msg);
void gossip__on_nack(struct gossip *g, const struct gossip__msg *msg);
void gossip__on_ping(struct gossip *g, const struct gossip_addr *from,
		     const struct gossip__msg *msg);
void gossip__on_pingreq(struct gossip *g, const struct gossip_addr *from,
			const struct gossip__msg *msg, uint64_t now);
void gossip__probe_tick(struct gossip *g, uint64_t now);
void gossip__pushpull_round(struct gossip *g);
void gossip__relay_tick(struct gossip *g, uint64_t now);

/* rules.c */
struct gossip__msg gossip__msg_accuse(uint8_t type, const struct member *m, const uint8_t *from,
				      uint8_t from_len);
struct gossip__msg gossip__msg_alive(const struct member *m);
void gossip__on_alive(struct gossip *g, const struct gossip__msg *msg, uint64_t now);
void gossip__on_dead(struct gossip *g, const struct gossip__msg *msg, uint64_t now);
void gossip__on_suspect(struct gossip *g, const struct gossip__msg *msg, uint64_t now);
void gossip__refute(struct gossip *g, uint32_t inc, bool accused, uint64_t now);
void gossip__scan(struct gossip *g, uint64_t now);
void gossip__suspect_local(struct gossip *g, struct member *m, uint64_t now);

#endif

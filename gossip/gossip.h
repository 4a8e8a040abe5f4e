/* gossip.h: Cairn's membership core, SWIM with Lifeguard, a state machine without I/O.
 *
 * The core owns no clock, socket, thread or global state; it includes libc and itself only.
 * Time comes in as milliseconds on a monotonic clock the caller owns, randomness from a
 * generator seeded in the configuration, packets come in and go out as bytes. One seed and one
 * sequence of calls replay a run exactly (tests/sim/gossip relies on it).
 *
 *   events in   gossip_tick()            timers: probes, gossip rounds, suspicion, reaping
 *               gossip_recv()            one datagram payload from another member
 *               gossip_state_encode()    our full state, for a push-pull stream
 *               gossip_state_merge()     a remote member's full state from a push-pull stream
 *               gossip_join()            contact these addresses (a push-pull to each)
 *               gossip_leave()           leave gracefully
 *               gossip_set_meta()        new metadata (tags) for this member
 *   update out  gossip_ready() fills a struct gossip_update; gossip_advance() releases it.
 *
 * THE LOOP CONTRACT. After any event, while gossip_has_update(): take the update with
 * gossip_ready(), send u.sends as datagrams, start a push-pull stream to each u.pushpulls
 * (see below), act on u.events, then call gossip_advance(). Call gossip_tick() no later than
 * gossip_next_deadline() (earlier is harmless).
 *
 * PUSH-PULL. The initiator connects to the address, sends gossip_state_encode(join) and reads
 * the answer; the acceptor reads the initiator's state, merges it with gossip_state_merge(),
 * answers with its own gossip_state_encode(false), and the initiator merges that. A stream
 * that fails or times out is reported with gossip_pushpull_failed() (a join that reaches nobody
 * is retried by the caller). The transport bounds how many streams run at once.
 *
 * Framing that is not SWIM (the cluster label, the CRC, encryption with the keyring) belongs to
 * the transport (net/gossip_seal.h): the core sees and makes plain payloads, at most
 * cfg.packet_size bytes each, so the caller sets packet_size to the datagram size minus its
 * own overhead.
 *
 * OWNERSHIP. Everything a struct gossip_update or struct gossip_member points to is owned by
 * the core and valid until the next call into the core. Data passed in is copied.
 *
 * Errors are negative codes from GOSSIP_ERRNO_MAP; 0 is success.
 */
#ifndef CAIRN_GOSSIP_H
#define CAIRN_GOSSIP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define GOSSIP_API __attribute__((visibility("default")))

#define GOSSIP_ERRNO_MAP(X)                                        \
	X(NOMEM, 1, "out of memory")                               \
	X(INVAL, 2, "invalid argument")                            \
	X(MALFORMED, 3, "malformed message")                       \
	X(TOOBIG, 4, "message too large")                          \
	X(FULL, 5, "too many members")                             \
	X(LEFT, 6, "this member has left")                         \
	X(CONFLICT, 7, "another live member has this name")

enum gossip_errno {
#define GOSSIP__ERRNO_ENUM(name, num, msg) GOSSIP_E##name = -(num),
	GOSSIP_ERRNO_MAP(GOSSIP__ERRNO_ENUM)
#undef GOSSIP__ERRNO_ENUM
};

/* Message for an error code; never NULL. */
GOSSIP_API const char *gossip_strerror(int err);

/* Longest member name and metadata, in bytes (a name is nonempty and has no NUL). */
#define GOSSIP_MAX_NAME 128
#define GOSSIP_MAX_META 512
/* Smallest cfg.packet_size accepted: the largest single message (an alive with the longest name
 * and metadata, 667 bytes) must fit one packet with room to spare. */
#define GOSSIP_MIN_PACKET 768
#define GOSSIP_MAX_PACKET 65507

/* A member's address, as plain bytes: IPv4 in ip[0..3] when family is 4. */
struct gossip_addr {
	uint8_t family; /* 4 or 6 */
	uint8_t ip[16];
	uint16_t port; /* host order; one port for UDP and TCP */
};

GOSSIP_API bool gossip_addr_equal(const struct gossip_addr *a, const struct gossip_addr *b);

/* The states of the SWIM paper, plus left (a graceful leave, never refuted). Order matters:
 * for one incarnation, suspect overrides alive, and dead or left override both. */
enum gossip_state {
	GOSSIP_ALIVE = 1,
	GOSSIP_SUSPECT = 2,
	GOSSIP_DEAD = 3,
	GOSSIP_LEFT = 4,
};

/* "alive", "suspect", "dead", "left"; "unknown" otherwise. */
GOSSIP_API const char *gossip_state_name(uint32_t state);

/* Defaults are memberlist's LAN configuration. */
struct gossip_config {
	const char *name;        /* this member's name, copied */
	struct gossip_addr addr; /* where others reach this member */
	const uint8_t *meta;     /* tags, opaque to the core, copied; at most GOSSIP_MAX_META */
	uint32_t meta_len;
	uint64_t seed; /* for the core's generator; the same seed replays the same run */

	uint32_t probe_interval_ms;    /* 1000 */
	uint32_t probe_timeout_ms;     /* 500: direct ack deadline before indirect probes */
	uint32_t indirect_checks;      /* 3: k members asked to ping-req */
	uint32_t suspicion_mult;       /* 4: min suspicion = mult * log10(n) * probe interval */
	uint32_t suspicion_max_mult;   /* 6: max suspicion = this * min suspicion */
	uint32_t retransmit_mult;      /* 4: each update sent mult * ceil(log10(n + 1)) times */
	uint32_t gossip_interval_ms;   /* 200 */
	uint32_t gossip_nodes;         /* 3 members per gossip round */
	uint32_t gossip_to_dead_ms;    /* 30000: dead members still get gossip this long */
	uint32_t pushpull_interval_ms; /* 30000, scaled up above 32 members; 0: never */
	uint32_t awareness_max;        /* 8: local health multiplier bound (Lifeguard) */
	uint32_t packet_size;          /* 1400: largest payload the core makes */
	uint64_t reap_dead_ms;         /* 86400000: forget a dead member after this */
	uint64_t reap_left_ms;         /* 3600000: forget a member that left after this */
	uint32_t max_members;          /* 65536: members beyond this are refused */
	uint32_t max_queue;            /* 4096: pending broadcasts kept; oldest dropped beyond */
};

GOSSIP_API void gossip_config_init(struct gossip_config *cfg);

struct gossip;

GOSSIP_API int gossip_new(const struct gossip_config *cfg, uint64_t now_ms, struct gossip **out);
GOSSIP_API void gossip_free(struct gossip *g);

/* Timers. */
GOSSIP_API void gossip_tick(struct gossip *g, uint64_t now_ms);
/* When gossip_tick() is next needed (absolute ms). */
GOSSIP_API uint64_t gossip_next_deadline(const struct gossip *g);

/* One datagram payload from `from`. GOSSIP_EMALFORMED (counted in stats) if it does not
 * parse; nothing in a packet that fails to parse is acted on. */
GOSSIP_API int gossip_recv(struct gossip *g, uint64_t now_ms, const struct gossip_addr *from,
			   const uint8_t *buf, size_t len);

/* Our full state for a push-pull stream: gossip_state_size() bytes at most, written to buf.
 * Returns the length written, or GOSSIP_ETOOBIG if cap is too small. */
GOSSIP_API size_t gossip_state_size(const struct gossip *g);
GOSSIP_API int gossip_state_encode(struct gossip *g, bool join, uint8_t *buf, size_t cap);
/* A remote state read from a push-pull stream; *join tells whether the remote is joining. */
GOSSIP_API int gossip_state_merge(struct gossip *g, uint64_t now_ms, const uint8_t *buf,
				  size_t len, bool *join);
/* A push-pull the core asked for did not complete. */
GOSSIP_API void gossip_pushpull_failed(struct gossip *g, uint64_t now_ms,
				       const struct gossip_addr *to);

/* Contact these addresses: the next update asks for a join push-pull to each (our own address
 * is skipped). At most 256 push-pulls wait in one update: GOSSIP_EINVAL beyond, and
 * GOSSIP_ELEFT after gossip_leave(). */
GOSSIP_API int gossip_join(struct gossip *g, uint64_t now_ms, const struct gossip_addr *addrs,
			   size_t n);
/* Leave: broadcast that this member left (others mark it left, not dead). Keep running the
 * core until gossip_leave_done() (the news has been sent enough times) or a deadline of the
 * caller's; afterwards the core answers nothing. */
GOSSIP_API int gossip_leave(struct gossip *g, uint64_t now_ms);
GOSSIP_API bool gossip_leave_done(const struct gossip *g);
/* New metadata: a new incarnation is announced with it. */
GOSSIP_API int gossip_set_meta(struct gossip *g, uint64_t now_ms, const uint8_t *meta,
			       uint32_t len);

/* ------------------------------------------------------------------------------------------ */
/* Updates.                                                                                   */

struct gossip_send {
	struct gossip_addr to;
	uint32_t len;
	const uint8_t *data;
};

struct gossip_pushpull {
	struct gossip_addr to;
	bool join;
};

/* A member as this core sees it. */
struct gossip_member {
	const char *name; /* NUL-terminated */
	struct gossip_addr addr;
	uint32_t state; /* enum gossip_state */
	uint32_t incarnation;
	const uint8_t *meta;
	uint32_t meta_len;
	uint64_t since_ms; /* when this core last saw the state change (its clock) */
	bool self;
};

enum gossip_event_type {
	GOSSIP_EV_UPDATE = 1, /* new member, or a change of state, incarnation, address or meta */
	GOSSIP_EV_REMOVE = 2, /* reaped: forgotten after reap_dead_ms / reap_left_ms */
};

struct gossip_event {
	uint32_t type; /* enum gossip_event_type */
	uint32_t prev_state; /* 0 for a new member */
	struct gossip_member member;
};

struct gossip_update {
	const struct gossip_send *sends;
	size_t n_sends;
	const struct gossip_pushpull *pushpulls;
	size_t n_pushpulls;
	const struct gossip_event *events; /* in the order the changes happened */
	size_t n_events;
};

GOSSIP_API bool gossip_has_update(const struct gossip *g);
GOSSIP_API void gossip_ready(struct gossip *g, struct gossip_update *u);
GOSSIP_API void gossip_advance(struct gossip *g);

/* ------------------------------------------------------------------------------------------ */
/* The view.                                                                                  */

/* Members known, this one included, in no particular order; stable between calls that
 * change the view. gossip_member_at() returns false past the end. */
GOSSIP_API uint32_t gossip_member_count(const struct gossip *g);
GOSSIP_API bool gossip_member_at(const struct gossip *g, uint32_t i, struct gossip_member *out);
GOSSIP_API bool gossip_member_find(const struct gossip *g, const char *name,
				   struct gossip_member *out);
/* Members alive or suspect, this one included. */
GOSSIP_API uint32_t gossip_live_count(const struct gossip *g);

struct gossip_stats {
	uint64_t packets_in, packets_out, bytes_in, bytes_out;
	uint64_t malformed;      /* packets dropped because they did not parse */
	uint64_t probes, probes_failed, indirect_probes, nacks_sent;
	uint64_t suspicions;     /* members this core began to suspect */
	uint64_t refutations;    /* times this member refuted a suspicion of itself */
	uint64_t deaths;         /* members this core marked dead */
	uint64_t pushpulls;      /* push-pulls merged */
	uint64_t queue_dropped;  /* broadcasts dropped at max_queue */
	uint32_t health;         /* Lifeguard's local health multiplier, 0 is healthy */
	uint32_t queue_len;      /* broadcasts pending */
	uint64_t conflicts;      /* alive messages ignored: a live member has that name elsewhere */
	uint64_t dropped;        /* sends, ping-req relays or members refused at a bound */
};

GOSSIP_API void gossip_stats(const struct gossip *g, struct gossip_stats *out);

/* Lifeguard's suspicion timeout, in ms, for a cluster of n live members after c independent
 * confirmations: min = suspicion_mult * max(1, log10(n)) * probe_interval, max =
 * suspicion_max_mult * min, timeout = max - (max - min) * log(c + 1) / log(k + 1) with
 * k = min(indirect_checks, n - 2), never below min (min itself when k < 1). */
GOSSIP_API uint64_t gossip_suspicion_timeout(const struct gossip_config *cfg, uint32_t n,
					     uint32_t c);
/* Retransmissions of each broadcast for n live members: retransmit_mult * ceil(log10(n + 1)). */
GOSSIP_API uint32_t gossip_retransmit_limit(const struct gossip_config *cfg, uint32_t n);
/* The push-pull interval for n live members: pushpull_interval_ms up to 32 members, then
 * multiplied by ceil(log2(n) - log2(32)) + 1, as memberlist does. */
GOSSIP_API uint64_t gossip_pushpull_interval(const struct gossip_config *cfg, uint32_t n);

#endif

/* gossip_int.h: the gossip core's private declarations: the wire codec and the generator
 * (both in wire.c). Nothing here is exported from cairn_gossip.
 *
 * The codec lives in gossip/ rather than proto/ because the core must know the exact encoded
 * size of every message to pack compound packets under cfg.packet_size (docs/architecture.md,
 * "Gossip: SWIM with Lifeguard", wire format).
 */
#ifndef CAIRN_GOSSIP_INT_H
#define CAIRN_GOSSIP_INT_H

#include "gossip.h"

/* Message types: the first byte of every message. */
enum {
	GOSSIP__PING = 1,
	GOSSIP__ACK = 2,
	GOSSIP__NACK = 3,
	GOSSIP__PINGREQ = 4,
	GOSSIP__ALIVE = 5,
	GOSSIP__SUSPECT = 6,
	GOSSIP__DEAD = 7,
	GOSSIP__COMPOUND = 8,
	GOSSIP__STATE = 9, /* push-pull streams only, never in a datagram */
};

/* Wire sizes. A name is u8 length + bytes, an address u8 family + 4 or 16 bytes + u16 port,
 * metadata u16 length + bytes; integers are little-endian. */
#define GOSSIP__ADDR_MAX 19u
#define GOSSIP__NAME_WIRE_MAX (1u + GOSSIP_MAX_NAME)
#define GOSSIP__META_WIRE_MAX (2u + GOSSIP_MAX_META)
/* The largest message: alive = type + inc + name + addr + meta. */
#define GOSSIP__MSG_MAX (1u + 4u + GOSSIP__NAME_WIRE_MAX + GOSSIP__ADDR_MAX + GOSSIP__META_WIRE_MAX)
/* A compound: type, u8 count, then per part a u16 length and the part. */
#define GOSSIP__COMPOUND_HDR 2u
#define GOSSIP__PART_HDR 2u
#define GOSSIP__MAX_PARTS 255u

_Static_assert(GOSSIP_MAX_NAME <= 255, "names are u8-length-prefixed");
_Static_assert(GOSSIP_MAX_META <= 65535, "metadata is u16-length-prefixed");
_Static_assert(GOSSIP__MSG_MAX == 667, "alive message size");

/* One decoded message. Names and metadata point into the packet (not NUL-terminated). */
struct gossip__msg {
	uint8_t type;
	uint32_t num; /* seq (ping, ack, nack, ping-req) or incarnation (alive, suspect, dead) */
	uint32_t nack_ms;    /* ping-req: send a nack after this long without an ack */
	const uint8_t *name; /* ping/ping-req: target; alive/suspect/dead: the member */
	uint8_t name_len;
	const uint8_t *from; /* suspect/dead: who says so */
	uint8_t from_len;
	struct gossip_addr addr; /* ping-req: target; alive: the member */
	const uint8_t *meta;
	uint16_t meta_len;
};

size_t gossip__addr_size(const struct gossip_addr *a);
size_t gossip__msg_size(const struct gossip__msg *m);
/* Encodes m into buf; returns the size written (gossip__msg_size(m)), 0 if cap is too small. */
size_t gossip__msg_encode(const struct gossip__msg *m, uint8_t *buf, size_t cap);
/* Decodes one whole packet (a message or a compound) into out[0..*n); every byte must belong to
 * a message. Returns 0 or GOSSIP_EMALFORMED. */
int gossip__packet_decode(const uint8_t *buf, size_t len, struct gossip__msg *out, size_t *n);

/* A push-pull state: header then entries. */
struct gossip__state_entry {
	const uint8_t *name;
	uint8_t name_len;
	struct gossip_addr addr;
	uint8_t state;
	uint32_t incarnation;
	const uint8_t *meta;
	uint16_t meta_len;
};

struct gossip__state_reader {
	const uint8_t *p, *end;
	bool join;
	const uint8_t *sender;
	uint8_t sender_len;
	uint32_t count, left;
};

/* Validates the whole state, then positions r on the first entry. Returns 0 or
 * GOSSIP_EMALFORMED. */
int gossip__state_open(struct gossip__state_reader *r, const uint8_t *buf, size_t len);
/* The next entry of a validated state; false at the end. */
bool gossip__state_next(struct gossip__state_reader *r, struct gossip__state_entry *e);

size_t gossip__state_hdr_size(size_t sender_len);
size_t gossip__state_entry_size(const struct gossip__state_entry *e);
size_t gossip__state_hdr_encode(uint8_t *buf, bool join, const uint8_t *sender, size_t sender_len,
				uint32_t count);
size_t gossip__state_entry_encode(uint8_t *buf, const struct gossip__state_entry *e);

/* A name as the core accepts it: 1..GOSSIP_MAX_NAME bytes, no NUL. */
bool gossip__name_valid(const uint8_t *name, size_t len);

/* xoshiro256** seeded through splitmix64: small, fast, and the same everywhere. */
struct gossip__rng {
	uint64_t s[4];
};
void gossip__rng_seed(struct gossip__rng *r, uint64_t seed);
uint64_t gossip__rng_next(struct gossip__rng *r);
/* Uniform in [0, n); n > 0. */
uint64_t gossip__rng_below(struct gossip__rng *r, uint64_t n);

#endif

/* wire.c: the gossip wire codec: fixed-width little-endian integers, length-prefixed names and
 * metadata, one type byte per message, compounds of several messages in one datagram, and the
 * push-pull state. Decoding is strict: every length is checked against the bytes left, every
 * byte of a packet must belong to a message, and a packet that fails anywhere yields nothing.
 */
#include <assert.h>
#include <string.h>

#include "gossip_int.h"

/* --- writing --------------------------------------------------------------------------- */

static uint8_t *put_u8(uint8_t *p, uint8_t v)
{
	*p = v;
	return p + 1;
}

static uint8_t *put_u16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
	return p + 2;
}

static uint8_t *put_u32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
	return p + 4;
}

static uint8_t *put_name(uint8_t *p, const uint8_t *s, uint8_t len)
{
	p = put_u8(p, len);
	memcpy(p, s, len);
	return p + len;
}

static uint8_t *put_addr(uint8_t *p, const struct gossip_addr *a)
{
	size_t n = a->family == 6 ? 16 : 4;
	p = put_u8(p, a->family == 6 ? 6 : 4);
	memcpy(p, a->ip, n);
	return put_u16(p + n, a->port);
}

static uint8_t *put_meta(uint8_t *p, const uint8_t *m, uint16_t len)
{
	p = put_u16(p, len);
	if (len)
		memcpy(p, m, len);
	return p + len;
}

size_t gossip__addr_size(const struct gossip_addr *a)
{
	return a->family == 6 ? 19u : 7u;
}

size_t gossip__msg_size(const struct gossip__msg *m)
{
	switch (m->type) {
	case GOSSIP__PING:
		return 1 + 4 + 1 + (size_t)m->name_len;
	case GOSSIP__ACK:
	case GOSSIP__NACK:
		return 1 + 4;
	case GOSSIP__PINGREQ:
		return 1 + 4 + 4 + 1 + (size_t)m->name_len + gossip__addr_size(&m->addr);
	case GOSSIP__ALIVE:
		return 1 + 4 + 1 + (size_t)m->name_len + gossip__addr_size(&m->addr) + 2 +
		       (size_t)m->meta_len;
	case GOSSIP__SUSPECT:
	case GOSSIP__DEAD:
		return 1 + 4 + 1 + (size_t)m->name_len + 1 + (size_t)m->from_len;
	default:
		assert(0 && "not a datagram message");
		return 0;
	}
}

size_t gossip__msg_encode(const struct gossip__msg *m, uint8_t *buf, size_t cap)
{
	size_t need = gossip__msg_size(m);
	if (need == 0 || need > cap)
		return 0;
	uint8_t *p = put_u8(buf, m->type);
	p = put_u32(p, m->num);
	switch (m->type) {
	case GOSSIP__PING:
		p = put_name(p, m->name, m->name_len);
		break;
	case GOSSIP__ACK:
	case GOSSIP__NACK:
		break;
	case GOSSIP__PINGREQ:
		p = put_u32(p, m->nack_ms);
		p = put_name(p, m->name, m->name_len);
		p = put_addr(p, &m->addr);
		break;
	case GOSSIP__ALIVE:
		p = put_name(p, m->name, m->name_len);
		p = put_addr(p, &m->addr);
		p = put_meta(p, m->meta, m->meta_len);
		break;
	case GOSSIP__SUSPECT:
	case GOSSIP__DEAD:
		p = put_name(p, m->name, m->name_len);
		p = put_name(p, m->from, m->from_len);
		break;
	default:
		return 0;
	}
	assert((size_t)(p - buf) == need);
	return need;
}

/* --- reading --------------------------------------------------------------------------- */

/* A cursor that turns `bad` on the first read past the end and then reads zeros. */
struct rd {
	const uint8_t *p, *end;
	bool bad;
};

static bool rd_need(struct rd *r, size_t n)
{
	if (r->bad || (size_t)(r->end - r->p) < n) {
		r->bad = true;
		return false;
	}
	return true;
}

static uint8_t get_u8(struct rd *r)
{
	if (!rd_need(r, 1))
		return 0;
	return *r->p++;
}

static uint16_t get_u16(struct rd *r)
{
	if (!rd_need(r, 2))
		return 0;
	uint16_t v = (uint16_t)(r->p[0] | (r->p[1] << 8));
	r->p += 2;
	return v;
}

static uint32_t get_u32(struct rd *r)
{
	if (!rd_need(r, 4))
		return 0;
	uint32_t v = 0;
	for (int i = 0; i < 4; i++)
		v |= (uint32_t)r->p[i] << (8 * i);
	r->p += 4;
	return v;
}

bool gossip__name_valid(const uint8_t *name, size_t len)
{
	return len >= 1 && len <= GOSSIP_MAX_NAME && memchr(name, 0, len) == NULL;
}

static void get_name(struct rd *r, const uint8_t **s, uint8_t *len)
{
	uint8_t n = get_u8(r);
	*s = NULL;
	*len = 0;
	if (r->bad || !rd_need(r, n))
		return;
	if (!gossip__name_valid(r->p, n)) {
		r->bad = true;
		return;
	}
	*s = r->p;
	*len = n;
	r->p += n;
}

static void get_addr(struct rd *r, struct gossip_addr *a)
{
	memset(a, 0, sizeof(*a));
	uint8_t fam = get_u8(r);
	if (r->bad)
		return;
	if (fam != 4 && fam != 6) {
		r->bad = true;
		return;
	}
	size_t n = fam == 6 ? 16 : 4;
	if (!rd_need(r, n))
		return;
	a->family = fam;
	memcpy(a->ip, r->p, n);
	r->p += n;
	a->port = get_u16(r);
}

static void get_meta(struct rd *r, const uint8_t **m, uint16_t *len)
{
	uint16_t n = get_u16(r);
	*m = NULL;
	*len = 0;
	if (r->bad)
		return;
	if (n > GOSSIP_MAX_META || !rd_need(r, n)) {
		r->bad = true;
		return;
	}
	*m = r->p;
	*len = n;
	r->p += n;
}

/* One non-compound message that must fill [p, end) exactly. */
static int msg_decode(const uint8_t *p, size_t len, struct gossip__msg *m)
{
	struct rd r = { p, p + len, false };
	memset(m, 0, sizeof(*m));
	m->type = get_u8(&r);
	m->num = get_u32(&r);
	switch (m->type) {
	case GOSSIP__PING:
		get_name(&r, &m->name, &m->name_len);
		break;
	case GOSSIP__ACK:
	case GOSSIP__NACK:
		break;
	case GOSSIP__PINGREQ:
		m->nack_ms = get_u32(&r);
		get_name(&r, &m->name, &m->name_len);
		get_addr(&r, &m->addr);
		break;
	case GOSSIP__ALIVE:
		get_name(&r, &m->name, &m->name_len);
		get_addr(&r, &m->addr);
		get_meta(&r, &m->meta, &m->meta_len);
		break;
	case GOSSIP__SUSPECT:
	case GOSSIP__DEAD:
		get_name(&r, &m->name, &m->name_len);
		get_name(&r, &m->from, &m->from_len);
		break;
	default:
		return GOSSIP_EMALFORMED;
	}
	if (r.bad || r.p != r.end)
		return GOSSIP_EMALFORMED;
	return 0;
}

int gossip__packet_decode(const uint8_t *buf, size_t len, struct gossip__msg *out, size_t *n)
{
	*n = 0;
	if (buf == NULL || len == 0)
		return GOSSIP_EMALFORMED;
	if (buf[0] != GOSSIP__COMPOUND) {
		if (msg_decode(buf, len, &out[0]) != 0)
			return GOSSIP_EMALFORMED;
		*n = 1;
		return 0;
	}
	struct rd r = { buf + 1, buf + len, false };
	uint8_t count = get_u8(&r);
	if (r.bad || count == 0)
		return GOSSIP_EMALFORMED;
	for (size_t i = 0; i < count; i++) {
		uint16_t plen = get_u16(&r);
		if (r.bad || plen == 0 || !rd_need(&r, plen))
			return GOSSIP_EMALFORMED;
		/* Compounds do not nest: msg_decode rejects the compound type. */
		if (msg_decode(r.p, plen, &out[i]) != 0)
			return GOSSIP_EMALFORMED;
		r.p += plen;
	}
	if (r.p != r.end)
		return GOSSIP_EMALFORMED;
	*n = count;
	return 0;
}

/* --- push-pull state ------------------------------------------------------------------- */

/* STATE: type, u8 flags (bit 0: join), sender name, u32 count, then per member: name, address,
 * u8 state, u32 incarnation, metadata. */
#define STATE_ENTRY_MIN (2u + 7u + 1u + 4u + 2u)

size_t gossip__state_hdr_size(size_t sender_len)
{
	return 1 + 1 + 1 + sender_len + 4;
}

size_t gossip__state_entry_size(const struct gossip__state_entry *e)
{
	return 1 + (size_t)e->name_len + gossip__addr_size(&e->addr) + 1 + 4 + 2 +
	       (size_t)e->meta_len;
}

size_t gossip__state_hdr_encode(uint8_t *buf, bool join, const uint8_t *sender, size_t sender_len,
				uint32_t count)
{
	uint8_t *p = put_u8(buf, GOSSIP__STATE);
	p = put_u8(p, join ? 1 : 0);
	p = put_name(p, sender, (uint8_t)sender_len);
	p = put_u32(p, count);
	assert((size_t)(p - buf) == gossip__state_hdr_size(sender_len));
	return (size_t)(p - buf);
}

size_t gossip__state_entry_encode(uint8_t *buf, const struct gossip__state_entry *e)
{
	uint8_t *p = put_name(buf, e->name, e->name_len);
	p = put_addr(p, &e->addr);
	p = put_u8(p, e->state);
	p = put_u32(p, e->incarnation);
	p = put_meta(p, e->meta, e->meta_len);
	assert((size_t)(p - buf) == gossip__state_entry_size(e));
	return (size_t)(p - buf);
}

static void entry_read(struct rd *r, struct gossip__state_entry *e)
{
	get_name(r, &e->name, &e->name_len);
	get_addr(r, &e->addr);
	e->state = get_u8(r);
	e->incarnation = get_u32(r);
	get_meta(r, &e->meta, &e->meta_len);
	if (!r->bad && (e->state < GOSSIP_ALIVE || e->state > GOSSIP_LEFT))
		r->bad = true;
}

int gossip__state_open(struct gossip__state_reader *sr, const uint8_t *buf, size_t len)
{
	memset(sr, 0, sizeof(*sr));
	if (buf == NULL || len == 0)
		return GOSSIP_EMALFORMED;
	struct rd r = { buf, buf + len, false };
	uint8_t type = get_u8(&r);
	uint8_t flags = get_u8(&r);
	if (r.bad || type != GOSSIP__STATE || (flags & ~1u) != 0)
		return GOSSIP_EMALFORMED;
	get_name(&r, &sr->sender, &sr->sender_len);
	uint32_t count = get_u32(&r);
	if (r.bad || count > (size_t)(r.end - r.p) / STATE_ENTRY_MIN)
		return GOSSIP_EMALFORMED;
	const uint8_t *first = r.p;
	for (uint32_t i = 0; i < count; i++) {
		struct gossip__state_entry e;
		entry_read(&r, &e);
		if (r.bad)
			return GOSSIP_EMALFORMED;
	}
	if (r.p != r.end)
		return GOSSIP_EMALFORMED;
	sr->join = (flags & 1u) != 0;
	sr->count = count;
	sr->left = count;
	sr->p = first;
	sr->end = r.end;
	return 0;
}

bool gossip__state_next(struct gossip__state_reader *sr, struct gossip__state_entry *e)
{
	if (sr->left == 0)
		return false;
	struct rd r = { sr->p, sr->end, false };
	entry_read(&r, e);
	assert(!r.bad); /* validated by gossip__state_open */
	sr->p = r.p;
	sr->left--;
	return true;
}

/* --- generator ------------------------------------------------------------------------- */

static uint64_t splitmix64(uint64_t *x)
{
	uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

void gossip__rng_seed(struct gossip__rng *r, uint64_t seed)
{
	for (int i = 0; i < 4; i++)
		r->s[i] = splitmix64(&seed);
}

static uint64_t rotl(uint64_t x, int k)
{
	return (x << k) | (x >> (64 - k));
}

uint64_t gossip__rng_next(struct gossip__rng *r)
{
	uint64_t *s = r->s;
	uint64_t result = rotl(s[1] * 5, 7) * 9;
	uint64_t t = s[1] << 17;
	s[2] ^= s[0];
	s[3] ^= s[1];
	s[1] ^= s[2];
	s[0] ^= s[3];
	s[2] ^= t;
	s[3] = rotl(s[3], 45);
	return result;
}

uint64_t gossip__rng_below(struct gossip__rng *r, uint64_t n)
{
	assert(n > 0);
	/* Rejection keeps the draw uniform; the loop ends with probability >= 1/2 per turn. */
	uint64_t limit = UINT64_MAX - (UINT64_MAX % n);
	for (;;) {
		uint64_t x = gossip__rng_next(r);
		if (x < limit)
			return x % n;
	}
}

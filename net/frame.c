/* frame.c: the peer frame codec and hello (frame.h), without I/O. Every length and field read
 * from the wire is checked before use; tests/fuzz/fuzz_peer_frame.c drives the decoder. */
#include "frame.h"

#include "crc32c.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

/* ---- big-endian integers ---- */

static void put_u16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

static void put_u32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

static void put_u64(uint8_t *p, uint64_t v)
{
	put_u32(p, (uint32_t)(v >> 32));
	put_u32(p + 4, (uint32_t)v);
}

static uint16_t get_u16(const uint8_t *p)
{
	return (uint16_t)((unsigned)p[0] << 8 | p[1]);
}

static uint32_t get_u32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint64_t get_u64(const uint8_t *p)
{
	return (uint64_t)get_u32(p) << 32 | get_u32(p + 4);
}

/* ---- frames ---- */

static bool type_valid(unsigned type)
{
	return type >= NET_FRAME_HELLO && type <= NET_FRAME_TYPE_MAX;
}

void net_frame_header(uint8_t hdr[NET_FRAME_HEADER], uint8_t type, const uint8_t *payload,
		      uint32_t len)
{
	assert(type_valid(type));
	assert(len <= NET_FRAME_MAX_PAYLOAD);
	assert(payload != NULL || len == 0);
	put_u32(hdr, len);
	hdr[4] = type;
	hdr[5] = 0;
	put_u16(hdr + 6, NET_FRAME_MAGIC);
	uint32_t crc = cairn_crc32c(0, hdr, 8);
	if (len > 0) {
		crc = cairn_crc32c(crc, payload, len);
	}
	put_u32(hdr + 8, crc);
}

int net_frame_encode(uint8_t type, const uint8_t *payload, size_t len, uint8_t *out, size_t cap,
		     size_t *n)
{
	assert(out != NULL && n != NULL);
	if (!type_valid(type) || (payload == NULL && len > 0)) {
		return NET_EINVAL;
	}
	if (len > NET_FRAME_MAX_PAYLOAD) {
		return NET_ETOOBIG;
	}
	if (cap < NET_FRAME_HEADER || cap - NET_FRAME_HEADER < len) {
		return NET_ELIMIT;
	}
	net_frame_header(out, type, payload, (uint32_t)len);
	if (len > 0) {
		memcpy(out + NET_FRAME_HEADER, payload, len);
	}
	*n = NET_FRAME_HEADER + len;
	return 0;
}

/* Buffers up to this size are kept between frames; larger ones are freed after delivery. */
#define DECODER_KEEP_BYTES ((uint32_t)64 << 10)

void net_frame_decoder_init(struct net_frame_decoder *d, uint32_t max_payload)
{
	assert(d != NULL);
	memset(d, 0, sizeof *d);
	if (max_payload == 0) {
		max_payload = NET_FRAME_DEFAULT_MAX_PAYLOAD;
	}
	d->max_payload = max_payload > NET_FRAME_MAX_PAYLOAD ? NET_FRAME_MAX_PAYLOAD : max_payload;
}

void net_frame_decoder_free(struct net_frame_decoder *d)
{
	assert(d != NULL);
	free(d->buf);
	d->buf = NULL;
	d->cap = 0;
}

/* Starts the next frame: forget the header, drop a large buffer. */
static void decoder_reset(struct net_frame_decoder *d)
{
	d->hdr_have = 0;
	d->len = 0;
	d->have = 0;
	d->delivered = false;
	if (d->cap > DECODER_KEEP_BYTES) {
		free(d->buf);
		d->buf = NULL;
		d->cap = 0;
	}
}

/* The header is complete: check it and make room for the payload. */
static int decoder_header(struct net_frame_decoder *d)
{
	uint32_t len = get_u32(d->hdr);
	uint8_t type = d->hdr[4];
	/* Magic, flags and type first: a stranger's bytes are a protocol error, not "too big". */
	if (get_u16(d->hdr + 6) != NET_FRAME_MAGIC || d->hdr[5] != 0 || !type_valid(type)) {
		return NET_EPROTO;
	}
	if (len > d->max_payload) {
		return NET_ETOOBIG;
	}
	if (len > d->cap) {
		/* No realloc: the old contents are not needed, and free+malloc avoids a copy. */
		free(d->buf);
		d->buf = malloc(len);
		d->cap = d->buf != NULL ? len : 0;
		if (d->buf == NULL) {
			return NET_ENOMEM;
		}
	}
	d->type = type;
	d->len = len;
	d->have = 0;
	d->crc = get_u32(d->hdr + 8);
	return 0;
}

int net_frame_decode(struct net_frame_decoder *d, const uint8_t *buf, size_t len, size_t *used,
		     struct net_frame *out)
{
	assert(d != NULL && used != NULL && out != NULL);
	assert(buf != NULL || len == 0);
	*used = 0;
	if (d->err != 0) {
		return d->err;
	}
	if (d->delivered) {
		decoder_reset(d);
	}
	size_t off = 0;
	if (d->hdr_have < NET_FRAME_HEADER) {
		size_t want = NET_FRAME_HEADER - d->hdr_have;
		size_t n = len < want ? len : want;
		if (n > 0) {
			memcpy(d->hdr + d->hdr_have, buf, n);
		}
		d->hdr_have += (uint32_t)n;
		off += n;
		if (d->hdr_have < NET_FRAME_HEADER) {
			*used = off;
			return 0;
		}
		int rv = decoder_header(d);
		if (rv != 0) {
			*used = off;
			d->err = rv;
			return rv;
		}
	}
	assert(d->have <= d->len && d->len <= d->cap);
	size_t want = d->len - d->have;
	size_t n = len - off < want ? len - off : want;
	if (n > 0) {
		memcpy(d->buf + d->have, buf + off, n);
		d->have += (uint32_t)n;
		off += n;
	}
	*used = off;
	assert(off <= len);
	if (d->have < d->len) {
		return 0;
	}
	uint32_t crc = cairn_crc32c(0, d->hdr, 8);
	if (d->len > 0) {
		crc = cairn_crc32c(crc, d->buf, d->len);
	}
	if (crc != d->crc) {
		d->err = NET_EPROTO;
		return d->err;
	}
	out->type = d->type;
	out->len = d->len;
	out->payload = d->len > 0 ? d->buf : NULL;
	d->delivered = true;
	return 1;
}

/* ---- hello and refuse ---- */

void net_hello_encode(const struct net_hello *h, uint8_t out[NET_HELLO_SIZE])
{
	assert(h != NULL && out != NULL);
	assert(h->channel == NET_CHANNEL_MSG || h->channel == NET_CHANNEL_SNAP);
	assert(h->from != 0 && h->to != 0);
	put_u32(out, NET_HELLO_MAGIC);
	put_u16(out + 4, h->version);
	out[6] = h->channel;
	out[7] = 0;
	put_u64(out + 8, h->cluster_id);
	put_u64(out + 16, h->from);
	put_u64(out + 24, h->to);
}

int net_hello_decode(const uint8_t *buf, size_t len, struct net_hello *out)
{
	assert(out != NULL);
	if (buf == NULL || len != NET_HELLO_SIZE) {
		return NET_EPROTO;
	}
	if (get_u32(buf) != NET_HELLO_MAGIC || buf[7] != 0 ||
	    (buf[6] != NET_CHANNEL_MSG && buf[6] != NET_CHANNEL_SNAP)) {
		return NET_EPROTO;
	}
	struct net_hello h = {
		.version = get_u16(buf + 4),
		.channel = buf[6],
		.cluster_id = get_u64(buf + 8),
		.from = get_u64(buf + 16),
		.to = get_u64(buf + 24),
	};
	if (h.from == 0 || h.to == 0) {
		return NET_EPROTO;
	}
	*out = h;
	return 0;
}

void net_refuse_text(const uint8_t *payload, size_t len, char *out, size_t cap)
{
	assert(out != NULL && cap >= 1);
	size_t n = len;
	if (n > NET_REFUSE_MAX) {
		n = NET_REFUSE_MAX;
	}
	if (n > cap - 1) {
		n = cap - 1;
	}
	for (size_t i = 0; i < n; i++) {
		uint8_t c = payload[i];
		out[i] = (c >= 0x20 && c < 0x7f) ? (char)c : '?';
	}
	out[n] = '\0';
}

/* ---- join ---- */

static bool url_ok(const char *url, size_t n)
{
	if (n == 0 || n > NET_JOIN_URL_MAX)
		return false;
	for (size_t i = 0; i < n; i++)
		if (url[i] <= 0x20 || url[i] >= 0x7f)
			return false;
	return true;
}

int net_join_encode(const char *url, uint8_t *out, size_t cap, size_t *n)
{
	assert(out != NULL && n != NULL);
	size_t len = url ? strlen(url) : 0;
	if (url == NULL || !url_ok(url, len))
		return NET_EINVAL;
	if (cap < 8 + len)
		return NET_ELIMIT;
	put_u32(out, NET_JOIN_MAGIC);
	put_u16(out + 4, NET_PROTOCOL_VERSION);
	put_u16(out + 6, (uint16_t)len);
	memcpy(out + 8, url, len);
	*n = 8 + len;
	return 0;
}

int net_join_decode(const uint8_t *buf, size_t len, uint16_t *version,
		    char url[NET_JOIN_URL_MAX + 1])
{
	if (buf == NULL || len < 8 || get_u32(buf) != NET_JOIN_MAGIC)
		return NET_EPROTO;
	size_t ul = get_u16(buf + 6);
	if (len != 8 + ul || !url_ok((const char *)buf + 8, ul))
		return NET_EPROTO;
	*version = get_u16(buf + 4);
	memcpy(url, buf + 8, ul);
	url[ul] = '\0';
	return 0;
}

int net_join_answer_encode(const struct net_join_answer *a, uint8_t *out, size_t cap, size_t *n)
{
	assert(a != NULL && out != NULL && n != NULL);
	if (a->cluster_id == 0 || a->member_id == 0 || a->n > NET_JOIN_MAX_MEMBERS)
		return NET_EINVAL;
	size_t need = 22;
	for (uint32_t i = 0; i < a->n; i++) {
		size_t ul = strnlen(a->members[i].url, NET_JOIN_URL_MAX + 1);
		if (a->members[i].id == 0 || !url_ok(a->members[i].url, ul))
			return NET_EINVAL;
		need += 10 + ul;
	}
	if (cap < need)
		return NET_ELIMIT;
	put_u32(out, NET_JOIN_MAGIC);
	put_u64(out + 4, a->cluster_id);
	put_u64(out + 12, a->member_id);
	put_u16(out + 20, (uint16_t)a->n);
	size_t off = 22;
	for (uint32_t i = 0; i < a->n; i++) {
		size_t ul = strlen(a->members[i].url);
		put_u64(out + off, a->members[i].id);
		out[off + 8] = a->members[i].learner ? 1 : 0;
		out[off + 9] = (uint8_t)ul;
		memcpy(out + off + 10, a->members[i].url, ul);
		off += 10 + ul;
	}
	assert(off == need);
	*n = off;
	return 0;
}

int net_join_answer_decode(const uint8_t *buf, size_t len, struct net_join_answer *out)
{
	assert(out != NULL);
	if (buf == NULL || len < 22 || get_u32(buf) != NET_JOIN_MAGIC)
		return NET_EPROTO;
	uint64_t cid = get_u64(buf + 4), mid = get_u64(buf + 12);
	uint32_t cnt = get_u16(buf + 20);
	if (cid == 0 || mid == 0 || cnt > NET_JOIN_MAX_MEMBERS)
		return NET_EPROTO;
	size_t off = 22;
	for (uint32_t i = 0; i < cnt; i++) {
		if (len - off < 10)
			return NET_EPROTO;
		uint64_t id = get_u64(buf + off);
		uint8_t learner = buf[off + 8];
		size_t ul = buf[off + 9];
		if (id == 0 || learner > 1 || len - off - 10 < ul ||
		    !url_ok((const char *)buf + off + 10, ul))
			return NET_EPROTO;
		out->members[i].id = id;
		out->members[i].learner = learner == 1;
		memcpy(out->members[i].url, buf + off + 10, ul);
		out->members[i].url[ul] = '\0';
		off += 10 + ul;
	}
	if (off != len)
		return NET_EPROTO;
	out->cluster_id = cid;
	out->member_id = mid;
	out->n = cnt;
	return 0;
}

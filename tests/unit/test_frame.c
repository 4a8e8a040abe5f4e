/* test_frame.c: the peer frame codec (net/frame.h), no I/O: CRC-32C against its check value,
 * encode/decode round trips of packed Raft messages split at every byte offset, the payload
 * bound, garbage and single-bit corruption, the hello and refusal payloads. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "frame.h"
#include "crc32c.h"
#include "raft.pb-c.h"

/* ---- payloads and feeding ---- */

/* A packed AppendEntries with two entries: a realistic payload. Returns a malloc'd buffer. */
static uint8_t *pack_append(size_t *len, uint64_t index)
{
	Cairn__Raftpb__Entry e[2];
	Cairn__Raftpb__Entry *ep[2] = { &e[0], &e[1] };
	uint8_t data0[] = "put /a 1";
	uint8_t data1[300];
	memset(data1, 0xab, sizeof data1);
	for (int i = 0; i < 2; i++) {
		cairn__raftpb__entry__init(&e[i]);
		e[i].term = 7;
		e[i].index = index + (uint64_t)i;
	}
	e[0].data.data = data0;
	e[0].data.len = sizeof data0;
	e[1].data.data = data1;
	e[1].data.len = sizeof data1;
	Cairn__Raftpb__Message m = CAIRN__RAFTPB__MESSAGE__INIT;
	m.type = CAIRN__RAFTPB__MESSAGE_TYPE__MSG_APPEND;
	m.from = 1;
	m.to = 2;
	m.term = 7;
	m.log_term = 6;
	m.index = index - 1;
	m.commit = index - 2;
	m.n_entries = 2;
	m.entries = ep;
	*len = cairn__raftpb__message__get_packed_size(&m);
	uint8_t *buf = malloc(*len);
	assert_non_null(buf);
	assert_int_equal(cairn__raftpb__message__pack(&m, buf), *len);
	return buf;
}

static void check_append(const uint8_t *buf, size_t len, uint64_t index)
{
	Cairn__Raftpb__Message *m = cairn__raftpb__message__unpack(NULL, len, buf);
	assert_non_null(m);
	assert_int_equal(m->type, CAIRN__RAFTPB__MESSAGE_TYPE__MSG_APPEND);
	assert_int_equal(m->term, 7);
	assert_int_equal(m->index, index - 1);
	assert_int_equal(m->n_entries, 2);
	assert_int_equal(m->entries[1]->index, index + 1);
	assert_int_equal(m->entries[1]->data.len, 300);
	assert_int_equal(m->entries[1]->data.data[299], 0xab);
	cairn__raftpb__message__free_unpacked(m, NULL);
}

/* Encodes frames of the given payloads back to back into a malloc'd buffer. */
static uint8_t *encode_all(const uint8_t *const *payloads, const size_t *lens, const uint8_t *types,
			   int n, size_t *total)
{
	size_t cap = 0;
	for (int i = 0; i < n; i++) {
		cap += NET_FRAME_HEADER + lens[i];
	}
	uint8_t *out = malloc(cap);
	assert_non_null(out);
	size_t off = 0;
	for (int i = 0; i < n; i++) {
		size_t w = 0;
		assert_int_equal(
			net_frame_encode(types[i], payloads[i], lens[i], out + off, cap - off, &w),
			0);
		assert_int_equal(w, NET_FRAME_HEADER + lens[i]);
		off += w;
	}
	assert_int_equal(off, cap);
	*total = cap;
	return out;
}

/* Feeds buf in pieces of sizes given by cut points; collects frames; checks them. */
struct seen {
	int n;
	uint8_t type[8];
	size_t len[8];
	uint8_t *copy[8];
};

static void feed(struct net_frame_decoder *d, const uint8_t *buf, size_t len, struct seen *s)
{
	while (len > 0) {
		size_t used = 0;
		struct net_frame f;
		int rv = net_frame_decode(d, buf, len, &used, &f);
		assert_true(rv >= 0);
		assert_true(used <= len);
		buf += used;
		len -= used;
		if (rv == 1) {
			assert_true(s->n < 8);
			s->type[s->n] = f.type;
			s->len[s->n] = f.len;
			s->copy[s->n] = f.len > 0 ? malloc(f.len) : NULL;
			if (f.len > 0) {
				memcpy(s->copy[s->n], f.payload, f.len);
			}
			s->n++;
		} else {
			assert_int_equal(len, 0);
		}
	}
}

static void seen_free(struct seen *s)
{
	for (int i = 0; i < s->n; i++) {
		free(s->copy[i]);
	}
	memset(s, 0, sizeof *s);
}

/* ---- tests ---- */

static void test_crc32c_check_value(void **state)
{
	(void)state;
	/* The CRC-32C check value (RFC 3720 §B.4, and every CRC catalogue). */
	assert_int_equal(cairn_crc32c(0, "123456789", 9), 0xE3069283u);
	/* Continuation equals one pass, at every split and alignment. */
	uint8_t buf[100];
	for (size_t i = 0; i < sizeof buf; i++) {
		buf[i] = (uint8_t)(i * 31 + 7);
	}
	uint32_t whole = cairn_crc32c(0, buf, sizeof buf);
	for (size_t cut = 0; cut <= sizeof buf; cut++) {
		assert_int_equal(
			cairn_crc32c(cairn_crc32c(0, buf, cut), buf + cut, sizeof buf - cut),
			whole);
	}
	/* RFC 3720 §B.4: 32 bytes of zeros. */
	uint8_t zeros[32] = { 0 };
	assert_int_equal(cairn_crc32c(0, zeros, sizeof zeros), 0x8A9136AAu);
}

/* Three frames (a packed AppendEntries, an empty message, a hello) split into two pieces at
 * every byte offset, then fed one byte at a time. */
static void test_split_every_offset(void **state)
{
	(void)state;
	size_t alen;
	uint8_t *append = pack_append(&alen, 100);
	struct net_hello h = { .version = NET_PROTOCOL_VERSION,
			       .channel = NET_CHANNEL_MSG,
			       .cluster_id = 9,
			       .from = 1,
			       .to = 2 };
	uint8_t hello[NET_HELLO_SIZE];
	net_hello_encode(&h, hello);
	const uint8_t *payloads[3] = { hello, append, NULL };
	size_t lens[3] = { NET_HELLO_SIZE, alen, 0 };
	uint8_t types[3] = { NET_FRAME_HELLO, NET_FRAME_MSG, NET_FRAME_MSG };
	size_t total;
	uint8_t *wire = encode_all(payloads, lens, types, 3, &total);

	for (size_t cut = 0; cut <= total; cut++) {
		struct net_frame_decoder d;
		net_frame_decoder_init(&d, 0);
		struct seen s = { 0 };
		feed(&d, wire, cut, &s);
		feed(&d, wire + cut, total - cut, &s);
		assert_int_equal(s.n, 3);
		assert_int_equal(s.type[0], NET_FRAME_HELLO);
		struct net_hello got;
		assert_int_equal(net_hello_decode(s.copy[0], s.len[0], &got), 0);
		assert_int_equal(got.cluster_id, 9);
		assert_int_equal(s.type[1], NET_FRAME_MSG);
		assert_int_equal(s.len[1], alen);
		assert_memory_equal(s.copy[1], append, alen);
		assert_int_equal(s.len[2], 0);
		seen_free(&s);
		net_frame_decoder_free(&d);
	}

	struct net_frame_decoder d;
	net_frame_decoder_init(&d, 0);
	struct seen s = { 0 };
	for (size_t i = 0; i < total; i++) {
		feed(&d, wire + i, 1, &s);
	}
	assert_int_equal(s.n, 3);
	check_append(s.copy[1], s.len[1], 100);
	seen_free(&s);
	net_frame_decoder_free(&d);
	free(wire);
	free(append);
}

/* A frame of exactly the bound passes; one byte more is NET_ETOOBIG from the header alone, and
 * the error sticks. */
static void test_oversize(void **state)
{
	(void)state;
	const uint32_t bound = 1000;
	uint8_t *payload = calloc(1, bound + 1);
	assert_non_null(payload);
	uint8_t hdr[NET_FRAME_HEADER];

	struct net_frame_decoder d;
	net_frame_decoder_init(&d, bound);
	net_frame_header(hdr, NET_FRAME_SNAP, payload, bound);
	size_t used;
	struct net_frame f;
	assert_int_equal(net_frame_decode(&d, hdr, sizeof hdr, &used, &f), 0);
	assert_int_equal(net_frame_decode(&d, payload, bound, &used, &f), 1);
	assert_int_equal(f.len, bound);

	net_frame_header(hdr, NET_FRAME_SNAP, payload, bound + 1);
	assert_int_equal(net_frame_decode(&d, hdr, sizeof hdr, &used, &f), NET_ETOOBIG);
	assert_int_equal(used, sizeof hdr);
	assert_int_equal(net_frame_decode(&d, payload, 1, &used, &f), NET_ETOOBIG);
	assert_int_equal(used, 0);
	net_frame_decoder_free(&d);

	/* A length near 4 GiB is refused before any allocation, whatever the bound asked. */
	net_frame_decoder_init(&d, UINT32_MAX);
	assert_int_equal(d.max_payload, NET_FRAME_MAX_PAYLOAD);
	uint8_t big[NET_FRAME_HEADER];
	net_frame_header(big, NET_FRAME_MSG, NULL, 0);
	big[0] = big[1] = big[2] = big[3] = 0xff;
	assert_int_equal(net_frame_decode(&d, big, sizeof big, &used, &f), NET_ETOOBIG);
	assert_null(d.buf);
	net_frame_decoder_free(&d);

	/* The encoder refuses what no decoder would take, and a short buffer. */
	size_t n;
	uint8_t out[NET_FRAME_HEADER + 4];
	assert_int_equal(net_frame_encode(NET_FRAME_MSG, payload, (size_t)NET_FRAME_MAX_PAYLOAD + 1,
					  out, sizeof out, &n),
			 NET_ETOOBIG);
	assert_int_equal(net_frame_encode(NET_FRAME_MSG, payload, 5, out, sizeof out, &n),
			 NET_ELIMIT);
	assert_int_equal(net_frame_encode(0, payload, 1, out, sizeof out, &n), NET_EINVAL);
	assert_int_equal(net_frame_encode(9, payload, 1, out, sizeof out, &n), NET_EINVAL);
	assert_int_equal(net_frame_encode(NET_FRAME_MSG, payload, 4, out, sizeof out, &n), 0);
	assert_int_equal(n, sizeof out);
	free(payload);
}

/* Strangers' bytes (HTTP/2 preface, TLS ClientHello start, random) fail on the header; a
 * single flipped bit anywhere in a valid frame fails (header fields or CRC). */
static void test_garbage_and_corruption(void **state)
{
	(void)state;
	static const char *const strangers[] = {
		"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
		"\x16\x03\x01\x02\x10\x01\x11\x01\xfc\x03\x03\x01", /* no NUL: strlen is used */
		"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
	};
	for (size_t i = 0; i < sizeof strangers / sizeof strangers[0]; i++) {
		struct net_frame_decoder d;
		net_frame_decoder_init(&d, 0);
		size_t used;
		struct net_frame f;
		int rv = net_frame_decode(&d, (const uint8_t *)strangers[i], strlen(strangers[i]),
					  &used, &f);
		assert_true(rv == NET_EPROTO || rv == NET_ETOOBIG);
		assert_null(d.buf);
		net_frame_decoder_free(&d);
	}

	/* Pseudo-random garbage, fixed seed: never a crash, never a frame. */
	uint64_t x = 0x9e3779b97f4a7c15u;
	for (int round = 0; round < 2000; round++) {
		uint8_t junk[64];
		for (size_t i = 0; i < sizeof junk; i++) {
			x ^= x << 13;
			x ^= x >> 7;
			x ^= x << 17;
			junk[i] = (uint8_t)x;
		}
		struct net_frame_decoder d;
		net_frame_decoder_init(&d, 4096);
		size_t used;
		struct net_frame f;
		int rv = net_frame_decode(&d, junk, sizeof junk, &used, &f);
		assert_true(rv <= 0);
		net_frame_decoder_free(&d);
	}

	size_t alen;
	uint8_t *append = pack_append(&alen, 5);
	size_t total = NET_FRAME_HEADER + alen;
	uint8_t *wire = malloc(total);
	assert_non_null(wire);
	size_t n;
	assert_int_equal(net_frame_encode(NET_FRAME_MSG, append, alen, wire, total, &n), 0);
	for (size_t byte = 0; byte < total; byte++) {
		for (int bit = 0; bit < 8; bit++) {
			wire[byte] ^= (uint8_t)(1u << bit);
			struct net_frame_decoder d;
			net_frame_decoder_init(&d, 0);
			size_t used;
			struct net_frame f;
			int rv = net_frame_decode(&d, wire, total, &used, &f);
			/* A flipped length bit may ask for more bytes than there are: no frame. */
			assert_true(rv < 0 || (rv == 0 && used == total));
			net_frame_decoder_free(&d);
			wire[byte] ^= (uint8_t)(1u << bit);
		}
	}
	free(wire);
	free(append);
}

static void test_hello(void **state)
{
	(void)state;
	struct net_hello h = {
		.version = NET_PROTOCOL_VERSION,
		.channel = NET_CHANNEL_SNAP,
		.cluster_id = 0x1122334455667788u,
		.from = 3,
		.to = 0xfffffffffffffff1u,
	};
	uint8_t buf[NET_HELLO_SIZE + 1];
	net_hello_encode(&h, buf);
	struct net_hello got;
	assert_int_equal(net_hello_decode(buf, NET_HELLO_SIZE, &got), 0);
	assert_int_equal(got.version, h.version);
	assert_int_equal(got.channel, h.channel);
	assert_int_equal(got.cluster_id, h.cluster_id);
	assert_int_equal(got.from, h.from);
	assert_int_equal(got.to, h.to);

	assert_int_equal(net_hello_decode(buf, NET_HELLO_SIZE - 1, &got), NET_EPROTO);
	assert_int_equal(net_hello_decode(buf, NET_HELLO_SIZE + 1, &got), NET_EPROTO);
	assert_int_equal(net_hello_decode(NULL, NET_HELLO_SIZE, &got), NET_EPROTO);
	uint8_t bad[NET_HELLO_SIZE];
	memcpy(bad, buf, sizeof bad);
	bad[0] ^= 1; /* magic */
	assert_int_equal(net_hello_decode(bad, sizeof bad, &got), NET_EPROTO);
	memcpy(bad, buf, sizeof bad);
	bad[6] = 3; /* channel */
	assert_int_equal(net_hello_decode(bad, sizeof bad, &got), NET_EPROTO);
	memcpy(bad, buf, sizeof bad);
	bad[7] = 1; /* reserved */
	assert_int_equal(net_hello_decode(bad, sizeof bad, &got), NET_EPROTO);
	memcpy(bad, buf, sizeof bad);
	memset(bad + 16, 0, 8); /* from = 0 */
	assert_int_equal(net_hello_decode(bad, sizeof bad, &got), NET_EPROTO);
	/* Another version decodes; refusing it is the transport's decision. */
	memcpy(bad, buf, sizeof bad);
	bad[5] = 9;
	assert_int_equal(net_hello_decode(bad, sizeof bad, &got), 0);
	assert_int_equal(got.version, 9);
}

static void test_refuse_text(void **state)
{
	(void)state;
	char out[NET_REFUSE_MAX + 1];
	const uint8_t evil[] = "bad\nlevel=error msg=\x01x";
	net_refuse_text(evil, sizeof evil - 1, out, sizeof out);
	assert_string_equal(out, "bad?level=error msg=?x");
	char small[4];
	net_refuse_text((const uint8_t *)"abcdef", 6, small, sizeof small);
	assert_string_equal(small, "abc");
	uint8_t longer[NET_REFUSE_MAX + 50];
	memset(longer, 'z', sizeof longer);
	net_refuse_text(longer, sizeof longer, out, sizeof out);
	assert_int_equal(strlen(out), NET_REFUSE_MAX);
	net_refuse_text(NULL, 0, out, sizeof out);
	assert_string_equal(out, "");
}

/* A large frame's buffer is released after delivery; a small one is kept for reuse. */
static void test_decoder_buffer(void **state)
{
	(void)state;
	size_t big = 1 << 20;
	uint8_t *payload = malloc(big);
	assert_non_null(payload);
	for (size_t i = 0; i < big; i++) {
		payload[i] = (uint8_t)(i >> 3);
	}
	uint8_t hdr[NET_FRAME_HEADER];
	net_frame_header(hdr, NET_FRAME_SNAP, payload, (uint32_t)big);
	struct net_frame_decoder d;
	net_frame_decoder_init(&d, 0);
	size_t used;
	struct net_frame f;
	assert_int_equal(net_frame_decode(&d, hdr, sizeof hdr, &used, &f), 0);
	assert_int_equal(net_frame_decode(&d, payload, big, &used, &f), 1);
	assert_memory_equal(f.payload, payload, big);
	uint8_t small[NET_FRAME_HEADER + 3];
	size_t n;
	assert_int_equal(
		net_frame_encode(NET_FRAME_MSG, (const uint8_t *)"abc", 3, small, sizeof small, &n),
		0);
	assert_int_equal(net_frame_decode(&d, small, sizeof small, &used, &f), 1);
	assert_true(d.cap < big);
	assert_memory_equal(f.payload, "abc", 3);
	net_frame_decoder_free(&d);
	free(payload);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_crc32c_check_value),
		cmocka_unit_test(test_split_every_offset),
		cmocka_unit_test(test_oversize),
		cmocka_unit_test(test_garbage_and_corruption),
		cmocka_unit_test(test_hello),
		cmocka_unit_test(test_refuse_text),
		cmocka_unit_test(test_decoder_buffer),
	};
	return cmocka_run_group_tests_name("frame", tests, NULL, NULL);
}

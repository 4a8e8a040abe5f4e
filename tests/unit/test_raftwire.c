/* test_raftwire.c: struct raft_msg on the peer wire (server/raftwire.h): round trips of every
 * message type with realistic contents, one encoding checked byte for byte against the field
 * numbers of proto/raft.proto, every decode limit at and one past its bound, schema violations
 * built by hand with protobuf-c, garbage and truncated input, and the decoder's memory budget. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "raft.h"
#include "raft.pb-c.h"
#include "raftwire.h"

/* Generous limits: what a default-configured core sends. */
static struct srv_raftwire_limits wide(void)
{
	struct raft_config cfg;
	struct srv_raftwire_limits lim;
	raft_config_init(&cfg);
	srv_raftwire_limits_init(&lim, &cfg);
	return lim;
}

static void assert_msg_equal(const struct raft_msg *a, const struct raft_msg *b)
{
	assert_int_equal(a->type, b->type);
	assert_int_equal(a->from, b->from);
	assert_int_equal(a->to, b->to);
	assert_int_equal(a->term, b->term);
	assert_int_equal(a->log_term, b->log_term);
	assert_int_equal(a->index, b->index);
	assert_int_equal(a->commit, b->commit);
	assert_int_equal(a->reject, b->reject);
	assert_int_equal(a->last, b->last);
	assert_int_equal(a->hint_index, b->hint_index);
	assert_int_equal(a->hint_term, b->hint_term);
	assert_int_equal(a->context, b->context);
	assert_int_equal(a->n_entries, b->n_entries);
	for (uint32_t i = 0; i < a->n_entries; i++) {
		const struct raft_entry *x = &a->entries[i];
		const struct raft_entry *y = &b->entries[i];
		assert_int_equal(x->term, y->term);
		assert_int_equal(x->index, y->index);
		assert_int_equal(x->type, y->type);
		assert_int_equal(x->len, y->len);
		if (x->len > 0) {
			assert_non_null(y->data);
			assert_memory_equal(x->data, y->data, x->len);
		}
	}
	assert_int_equal(a->len, b->len);
	if (a->len > 0) {
		assert_non_null(b->data);
		assert_memory_equal(a->data, b->data, a->len);
	}
	assert_int_equal(a->snap.index, b->snap.index);
	assert_int_equal(a->snap.term, b->snap.term);
	assert_int_equal(a->snap.size, b->snap.size);
	assert_int_equal(a->snap.conf.n, b->snap.conf.n);
	for (uint32_t i = 0; i < a->snap.conf.n; i++) {
		assert_int_equal(a->snap.conf.members[i].id, b->snap.conf.members[i].id);
		assert_int_equal(a->snap.conf.members[i].role, b->snap.conf.members[i].role);
	}
}

/* Encode m, decode it under lim, check equality; the input buffer is scribbled over before the
 * comparison, so the decoded message must not point into it. */
static void roundtrip_with(const struct raft_msg *m, const struct srv_raftwire_limits *lim)
{
	uint8_t *buf = NULL;
	size_t len = 0;
	assert_int_equal(srv_raftwire_encode(m, &buf, &len), 0);
	assert_non_null(buf);
	assert_true(len > 0);

	struct srv_raftwire_msg d;
	int rv = srv_raftwire_decode(buf, len, lim, &d);
	if (rv != 0) {
		fail_msg("decode: %s: %s", raft_strerror(rv), d.err);
	}
	memset(buf, 0xa5, len);
	free(buf);
	assert_msg_equal(m, &d.msg);
	srv_raftwire_msg_free(&d);
	srv_raftwire_msg_free(&d); /* twice is harmless */
}

static void roundtrip(const struct raft_msg *m)
{
	struct srv_raftwire_limits lim = wide();
	roundtrip_with(m, &lim);
}

/* Decode under lim and expect code rv. */
static void expect_refused(const uint8_t *buf, size_t len, const struct srv_raftwire_limits *lim,
			   int rv)
{
	struct srv_raftwire_msg d;
	int got = srv_raftwire_decode(buf, len, lim, &d);
	if (got != rv) {
		fail_msg("got %d (%s), want %d (%s)", got, d.err, rv, raft_strerror(rv));
	}
	assert_true(d.err[0] != '\0');
	assert_int_equal(d.msg.type, 0);
	assert_null(d.msg.entries);
	srv_raftwire_msg_free(&d);
}

/* Encode m (which must be encodable) and expect the decode under lim to return rv. */
static void expect_msg_refused(const struct raft_msg *m, const struct srv_raftwire_limits *lim,
			       int rv)
{
	uint8_t *buf = NULL;
	size_t len = 0;
	assert_int_equal(srv_raftwire_encode(m, &buf, &len), 0);
	expect_refused(buf, len, lim, rv);
	free(buf);
}

/* Pack a hand-built protobuf message (for inputs the encoder refuses to produce). */
static uint8_t *pack_pb(const Cairn__Raftpb__Message *pb, size_t *len)
{
	*len = cairn__raftpb__message__get_packed_size(pb);
	uint8_t *buf = malloc(*len > 0 ? *len : 1);
	assert_non_null(buf);
	assert_int_equal(cairn__raftpb__message__pack(pb, buf), *len);
	return buf;
}

static void expect_pb_refused(const Cairn__Raftpb__Message *pb, int rv)
{
	struct srv_raftwire_limits lim = wide();
	size_t len;
	uint8_t *buf = pack_pb(pb, &len);
	expect_refused(buf, len, &lim, rv);
	free(buf);
}

static const uint8_t URLS[] = "http://10.0.0.4:2380,http://10.0.0.4:2381";

/* ---- round trips ---------------------------------------------------------------------------- */

static void test_append(void **state)
{
	(void)state;
	static const uint8_t put1[] = "\x0a\x03"
				      "foo"
				      "\x12\x03"
				      "bar";
	static const uint8_t put2[] = "a somewhat longer proposal payload, 48 bytes ...";
	uint8_t cc_buf[RAFT_CONF_CHANGE_HEADER + sizeof URLS];
	struct raft_conf_change cc = {
		.type = RAFT_CC_ADD_LEARNER,
		.id = 0x5eed0004,
		.context_len = (uint32_t)(sizeof URLS - 1),
		.context = URLS,
	};
	int cc_len = raft_conf_change_encode(&cc, cc_buf, sizeof cc_buf);
	assert_true(cc_len > 0);

	struct raft_entry ents[] = {
		{ .term = 7, .index = 101, .type = RAFT_ENTRY_NOOP },
		{ .term = 7,
		  .index = 102,
		  .type = RAFT_ENTRY_NORMAL,
		  .len = sizeof put1 - 1,
		  .data = put1 },
		{ .term = 7,
		  .index = 103,
		  .type = RAFT_ENTRY_CONF_CHANGE,
		  .len = (uint32_t)cc_len,
		  .data = cc_buf },
		{ .term = 7,
		  .index = 104,
		  .type = RAFT_ENTRY_NORMAL,
		  .len = sizeof put2 - 1,
		  .data = put2 },
		{ .term = 7, .index = 105, .type = RAFT_ENTRY_NORMAL }, /* empty proposal */
	};
	struct raft_msg m = {
		.type = RAFT_MSG_APPEND,
		.from = 0x8e9e05c52164694d,
		.to = 0x91bc3c398fb3c146,
		.term = 7,
		.log_term = 6,
		.index = 100,
		.commit = 99,
		.n_entries = 5,
		.entries = ents,
	};
	roundtrip(&m);

	/* and the decoded conf change still decodes to the same change */
	uint8_t *buf;
	size_t len;
	struct srv_raftwire_limits lim = wide();
	struct srv_raftwire_msg d;
	assert_int_equal(srv_raftwire_encode(&m, &buf, &len), 0);
	assert_int_equal(srv_raftwire_decode(buf, len, &lim, &d), 0);
	free(buf);
	struct raft_conf_change back;
	assert_int_equal(
		raft_conf_change_decode(d.msg.entries[2].data, d.msg.entries[2].len, &back), 0);
	assert_int_equal(back.type, RAFT_CC_ADD_LEARNER);
	assert_int_equal(back.id, 0x5eed0004);
	assert_int_equal(back.context_len, sizeof URLS - 1);
	assert_memory_equal(back.context, URLS, sizeof URLS - 1);
	assert_null(d.msg.entries[0].data); /* empty data decodes as NULL, len 0 */
	srv_raftwire_msg_free(&d);

	/* an empty APPEND (a probe) */
	m.n_entries = 0;
	m.entries = NULL;
	roundtrip(&m);
}

static void test_append_resp(void **state)
{
	(void)state;
	struct raft_msg m = {
		.type = RAFT_MSG_APPEND_RESP,
		.from = 2,
		.to = 1,
		.term = 9,
		.index = 412,
		.reject = true,
		.hint_index = 388,
		.hint_term = 5,
	};
	roundtrip(&m);
	m.reject = false;
	m.hint_index = m.hint_term = 0;
	roundtrip(&m);
}

static void test_votes(void **state)
{
	(void)state;
	static const uint32_t types[] = { RAFT_MSG_VOTE, RAFT_MSG_PREVOTE };
	for (size_t i = 0; i < 2; i++) {
		struct raft_msg m = {
			.type = types[i],
			.from = 3,
			.to = 1,
			.term = 12,
			.log_term = 11,
			.index = 5000,
			.context = 1, /* leadership transfer */
		};
		roundtrip(&m);
		struct raft_msg r = {
			.type = types[i] + 1, .from = 1, .to = 3, .term = 12, .reject = true
		};
		roundtrip(&r);
		r.reject = false;
		roundtrip(&r);
	}
}

static void test_heartbeat(void **state)
{
	(void)state;
	struct raft_msg m = {
		.type = RAFT_MSG_HEARTBEAT,
		.from = 1,
		.to = 2,
		.term = 4,
		.commit = 77,
		.context = 0x1234567890,
	};
	roundtrip(&m);
	struct raft_msg r = { .type = RAFT_MSG_HEARTBEAT_RESP,
			      .from = 2,
			      .to = 1,
			      .term = 4,
			      .context = 0x1234567890 };
	roundtrip(&r);
}

static void fill_conf(struct raft_conf *c, uint32_t voters, uint32_t learners)
{
	c->n = voters + learners;
	for (uint32_t i = 0; i < c->n; i++) {
		c->members[i].id = 0x1000 + i * 0x10001;
		c->members[i].role = i < voters ? RAFT_VOTER : RAFT_LEARNER;
	}
}

static void test_snapshot(void **state)
{
	(void)state;
	enum { CHUNK = 64 * 1024 };
	uint8_t *chunk = malloc(CHUNK);
	assert_non_null(chunk);
	for (size_t i = 0; i < CHUNK; i++) {
		chunk[i] = (uint8_t)(i * 31 + (i >> 8));
	}
	struct raft_msg m = {
		.type = RAFT_MSG_SNAPSHOT,
		.from = 1,
		.to = 5,
		.term = 8,
		.index = 3 * CHUNK, /* offset of this chunk */
		.last = true,
		.len = CHUNK,
		.data = chunk,
		.snap = { .index = 90210, .term = 8, .size = 4 * CHUNK },
	};
	fill_conf(&m.snap.conf, 3, 2);
	roundtrip(&m);

	/* the first chunk: offset 0, not last */
	m.index = 0;
	m.last = false;
	roundtrip(&m);
	free(chunk);

	struct raft_msg r = {
		.type = RAFT_MSG_SNAPSHOT_RESP, .from = 5, .to = 1, .term = 8, .index = 4 * CHUNK
	};
	roundtrip(&r);
	r.reject = true;
	r.index = 0;
	roundtrip(&r);
}

static void test_propose(void **state)
{
	(void)state;
	static const uint8_t a[] = "put k1 v1", b[] = "put k2 v2";
	struct raft_entry ents[] = {
		{ .type = RAFT_ENTRY_NORMAL, .len = sizeof a - 1, .data = a },
		{ .type = RAFT_ENTRY_NORMAL, .len = sizeof b - 1, .data = b },
	};
	struct raft_msg m = { .type = RAFT_MSG_PROPOSE,
			      .from = 4,
			      .to = 1,
			      .term = 3,
			      .n_entries = 2,
			      .entries = ents };
	roundtrip(&m);
}

static void test_reads_and_transfer(void **state)
{
	(void)state;
	struct raft_msg ri = { .type = RAFT_MSG_READ_INDEX, .from = 2, .to = 1, .context = 991 };
	roundtrip(&ri);
	struct raft_msg rr = { .type = RAFT_MSG_READ_INDEX_RESP,
			       .from = 1,
			       .to = 2,
			       .term = 3,
			       .context = 991,
			       .index = 12345 };
	roundtrip(&rr);
	rr.reject = true;
	rr.index = 0;
	roundtrip(&rr);
	struct raft_msg tn = { .type = RAFT_MSG_TIMEOUT_NOW, .from = 1, .to = 3, .term = 6 };
	roundtrip(&tn);
	struct raft_msg tr = {
		.type = RAFT_MSG_TRANSFER, .from = 2, .to = 1, .term = 6, .context = 3
	};
	roundtrip(&tr);
}

/* Every type with every field at its extreme: the encoder packs all fields, whatever the
 * type, so nothing is lost even where a type does not use a field. */
static void test_every_type_every_field(void **state)
{
	(void)state;
	static const uint8_t blob[] = { 0, 1, 2, 0xff };
	struct raft_entry e = { .term = UINT64_MAX,
				.index = UINT64_MAX - 1,
				.type = RAFT_ENTRY_NOOP,
				.len = sizeof blob,
				.data = blob };
	for (uint32_t t = 1; t <= RAFT_MSG_TYPE_MAX; t++) {
		struct raft_msg m = {
			.type = t,
			.from = UINT64_MAX,
			.to = UINT64_MAX - 1,
			.term = UINT64_MAX - 2,
			.log_term = UINT64_MAX - 3,
			.index = UINT64_MAX - 4,
			.commit = UINT64_MAX - 5,
			.reject = true,
			.last = true,
			.hint_index = UINT64_MAX - 6,
			.hint_term = UINT64_MAX - 7,
			.context = UINT64_MAX - 8,
			.n_entries = 1,
			.entries = &e,
			.len = sizeof blob,
			.data = blob,
			.snap = { .index = UINT64_MAX - 9,
				  .term = UINT64_MAX - 10,
				  .size = UINT64_MAX },
		};
		fill_conf(&m.snap.conf, 9, RAFT_MAX_MEMBERS - 9);
		m.snap.conf.members[0].id = UINT64_MAX;
		roundtrip(&m);
		/* and with everything zero but the type */
		struct raft_msg z = { .type = t };
		roundtrip(&z);
	}
}

/* ---- the wire format itself ---------------------------------------------------------------- */

/* Each field gets a distinct value, so a wrong field number or wire type changes the bytes.
 * Hand-computed: tag = field_number << 3 | wire_type (0 varint, 2 length-delimited). */
static void test_bytes_exact(void **state)
{
	(void)state;
	static const uint8_t x[] = "x", yz[] = "yz";
	struct raft_entry e = {
		.term = 12, .index = 13, .type = RAFT_ENTRY_NOOP, .len = 1, .data = x
	};
	struct raft_msg m = {
		.type = RAFT_MSG_APPEND_RESP,
		.from = 1,
		.to = 2,
		.term = 3,
		.log_term = 4,
		.index = 5,
		.commit = 6,
		.reject = true,
		.last = true,
		.hint_index = 9,
		.hint_term = 10,
		.context = 11,
		.n_entries = 1,
		.entries = &e,
		.len = 2,
		.data = yz,
		.snap = { .index = 14,
			  .term = 15,
			  .size = 16,
			  .conf = { .n = 1, .members = { { .id = 17, .role = RAFT_LEARNER } } } },
	};
	static const uint8_t want[] = {
		0x08, 0x02,           /* 1 type = MSG_APPEND_RESP */
		0x10, 0x01,           /* 2 from */
		0x18, 0x02,           /* 3 to */
		0x20, 0x03,           /* 4 term */
		0x28, 0x04,           /* 5 log_term */
		0x30, 0x05,           /* 6 index */
		0x38, 0x06,           /* 7 commit */
		0x40, 0x01,           /* 8 reject */
		0x48, 0x01,           /* 9 last */
		0x50, 0x09,           /* 10 hint_index */
		0x58, 0x0a,           /* 11 hint_term */
		0x60, 0x0b,           /* 12 context */
		0x6a, 0x09,           /* 13 entries, 9 bytes: */
		0x08, 0x0c,           /*   Entry 1 term */
		0x10, 0x0d,           /*   Entry 2 index */
		0x18, 0x02,           /*   Entry 3 type = ENTRY_NOOP */
		0x22, 0x01, 'x',      /* Entry 4 data */
		0x72, 0x02, 'y', 'z', /* 14 data */
		0x7a, 0x0e,           /* 15 snap, 14 bytes: */
		0x08, 0x0e,           /*   SnapshotMeta 1 index */
		0x10, 0x0f,           /*   SnapshotMeta 2 term */
		0x18, 0x10,           /*   SnapshotMeta 3 size */
		0x22, 0x06,           /*   SnapshotMeta 4 conf, 6 bytes: */
		0x0a, 0x04,           /*     Conf 1 members, 4 bytes: */
		0x08, 0x11,           /*       Member 1 id */
		0x10, 0x02,           /*       Member 2 role = ROLE_LEARNER */
	};
	uint8_t *buf;
	size_t len;
	assert_int_equal(srv_raftwire_encode(&m, &buf, &len), 0);
	assert_int_equal(len, sizeof want);
	assert_memory_equal(buf, want, sizeof want);
	free(buf);

	/* and the hand-written bytes decode to m */
	struct srv_raftwire_limits lim = wide();
	struct srv_raftwire_msg d;
	assert_int_equal(srv_raftwire_decode(want, sizeof want, &lim, &d), 0);
	assert_msg_equal(&m, &d.msg);
	srv_raftwire_msg_free(&d);
}

/* ---- the encoder's refusals ------------------------------------------------------------------ */

static void test_encode_refuses(void **state)
{
	(void)state;
	uint8_t *buf = (uint8_t *)1;
	size_t len = 1;
	struct raft_entry e = { .type = RAFT_ENTRY_NORMAL, .len = 3, .data = NULL };
	struct raft_msg m = { .type = RAFT_MSG_APPEND };

	assert_int_equal(srv_raftwire_encode(NULL, &buf, &len), RAFT_EINVAL);
	assert_null(buf);
	assert_int_equal(len, 0);
	assert_int_equal(srv_raftwire_encode(&m, NULL, &len), RAFT_EINVAL);
	assert_int_equal(srv_raftwire_encode(&m, &buf, NULL), RAFT_EINVAL);

	m.type = 0;
	assert_int_equal(srv_raftwire_encode(&m, &buf, &len), RAFT_EINVAL);
	m.type = RAFT_MSG_TYPE_MAX + 1;
	assert_int_equal(srv_raftwire_encode(&m, &buf, &len), RAFT_EINVAL);
	m.type = RAFT_MSG_APPEND;
	m.n_entries = 1; /* entries NULL */
	assert_int_equal(srv_raftwire_encode(&m, &buf, &len), RAFT_EINVAL);
	m.entries = &e; /* entry data NULL */
	assert_int_equal(srv_raftwire_encode(&m, &buf, &len), RAFT_EINVAL);
	e.len = 0;
	e.type = RAFT_ENTRY_NOOP + 1;
	assert_int_equal(srv_raftwire_encode(&m, &buf, &len), RAFT_EINVAL);
	m.n_entries = 0;
	m.len = 5; /* chunk data NULL */
	assert_int_equal(srv_raftwire_encode(&m, &buf, &len), RAFT_EINVAL);
	m.len = 0;
	fill_conf(&m.snap.conf, 3, 0);
	m.snap.conf.members[1].role = 0;
	assert_int_equal(srv_raftwire_encode(&m, &buf, &len), RAFT_EINVAL);
	m.snap.conf.members[1].role = RAFT_LEARNER + 1;
	assert_int_equal(srv_raftwire_encode(&m, &buf, &len), RAFT_EINVAL);
	fill_conf(&m.snap.conf, RAFT_MAX_MEMBERS, 0);
	m.snap.conf.n = RAFT_MAX_MEMBERS + 1;
	assert_int_equal(srv_raftwire_encode(&m, &buf, &len), RAFT_EINVAL);
	assert_null(buf);
	assert_int_equal(len, 0);
}

/* ---- limits ---------------------------------------------------------------------------------- */

static const struct srv_raftwire_limits tight = {
	.max_entries = 4,
	.max_entry_bytes = 100,
	.max_msg_bytes = 250,
	.max_chunk_bytes = 1000,
};

static void test_limit_entry_bytes(void **state)
{
	(void)state;
	uint8_t data[101];
	memset(data, 'e', sizeof data);
	struct raft_entry e = { .term = 1, .index = 1, .len = 100, .data = data };
	struct raft_msg m = { .type = RAFT_MSG_APPEND, .term = 1, .n_entries = 1, .entries = &e };
	roundtrip_with(&m, &tight); /* at the bound */
	e.len = 101;
	expect_msg_refused(&m, &tight, RAFT_ETOOBIG);
}

static void test_limit_entries(void **state)
{
	(void)state;
	struct raft_entry ents[5] = { { .term = 1 } };
	struct raft_msg m = { .type = RAFT_MSG_APPEND, .term = 1, .n_entries = 4, .entries = ents };
	roundtrip_with(&m, &tight);
	m.n_entries = 5;
	expect_msg_refused(&m, &tight, RAFT_ETOOBIG);

	struct srv_raftwire_limits none = tight;
	none.max_entries = 0; /* 0 allows none */
	m.n_entries = 1;
	expect_msg_refused(&m, &none, RAFT_ETOOBIG);
}

static void test_limit_total_bytes(void **state)
{
	(void)state;
	uint8_t data[100];
	memset(data, 't', sizeof data);
	struct raft_entry ents[3] = {
		{ .len = 100, .data = data },
		{ .len = 100, .data = data },
		{ .len = 50, .data = data },
	};
	struct raft_msg m = { .type = RAFT_MSG_PROPOSE, .n_entries = 3, .entries = ents };
	roundtrip_with(&m, &tight); /* 250: at the bound */
	ents[2].len = 51;
	expect_msg_refused(&m, &tight, RAFT_ETOOBIG);
}

static void test_limit_chunk(void **state)
{
	(void)state;
	uint8_t data[1001];
	memset(data, 'c', sizeof data);
	struct raft_msg m = { .type = RAFT_MSG_SNAPSHOT,
			      .term = 2,
			      .len = 1000,
			      .data = data,
			      .snap = { .index = 10, .term = 2, .size = 1000 } };
	fill_conf(&m.snap.conf, 1, 0);
	roundtrip_with(&m, &tight);
	m.len = 1001;
	expect_msg_refused(&m, &tight, RAFT_ETOOBIG);
}

static void test_limits_init(void **state)
{
	(void)state;
	struct raft_config cfg;
	raft_config_init(&cfg);
	cfg.max_entry_bytes = 1000;
	cfg.max_msg_bytes = 5000;
	cfg.snapshot_chunk_bytes = 7000;
	struct srv_raftwire_limits lim;
	srv_raftwire_limits_init(&lim, &cfg);
	assert_int_equal(lim.max_entries, SRV_RAFTWIRE_MAX_SLICE_ENTRIES);
	assert_int_equal(lim.max_entry_bytes, 1000);
	assert_int_equal(lim.max_msg_bytes, 6000); /* one entry past max_msg_bytes */
	assert_int_equal(lim.max_chunk_bytes, 7000);

	/* zero fields stand for the core's defaults */
	struct raft_config zero = { 0 };
	struct raft_config d;
	raft_config_init(&d);
	srv_raftwire_limits_init(&lim, &zero);
	assert_int_equal(lim.max_entry_bytes, d.max_entry_bytes);
	assert_int_equal(lim.max_msg_bytes, d.max_msg_bytes + d.max_entry_bytes);
	assert_int_equal(lim.max_chunk_bytes, d.snapshot_chunk_bytes);

	struct srv_raftwire_limits huge = { UINT32_MAX, UINT32_MAX, UINT64_MAX, UINT32_MAX };
	assert_int_equal(srv_raftwire_budget(&huge), SIZE_MAX); /* saturates */
	assert_true(srv_raftwire_budget(&tight) >= 1000 + 250);
}

/* The most a legitimate message may hold under the limits decodes within the budget. */
static void test_budget_fits_full_message(void **state)
{
	(void)state;
	enum { N = 2048, EACH = 64 };
	struct srv_raftwire_limits lim = { .max_entries = N,
					   .max_entry_bytes = EACH,
					   .max_msg_bytes = N * EACH,
					   .max_chunk_bytes = 4096 };
	static uint8_t data[EACH];
	static struct raft_entry ents[N];
	static uint8_t chunk[4096];
	for (uint32_t i = 0; i < N; i++) {
		ents[i] = (struct raft_entry){ .term = UINT64_MAX,
					       .index = UINT64_MAX - i,
					       .type = RAFT_ENTRY_NORMAL,
					       .len = EACH,
					       .data = data };
	}
	struct raft_msg m = { .type = RAFT_MSG_APPEND,
			      .term = 1,
			      .n_entries = N,
			      .entries = ents,
			      .len = sizeof chunk,
			      .data = chunk,
			      .snap = { .index = 1, .term = 1, .size = 1 } };
	fill_conf(&m.snap.conf, 9, RAFT_MAX_MEMBERS - 9);
	roundtrip_with(&m, &lim);

	/* N empty entries: the per-entry overhead alone also fits */
	for (uint32_t i = 0; i < N; i++) {
		ents[i].len = 0;
	}
	lim.max_msg_bytes = 0;
	lim.max_chunk_bytes = 0;
	m.len = 0;
	roundtrip_with(&m, &lim);
}

/* Input that is small on the wire but large unpacked (a flood of tiny repeated fields) is
 * refused by the budget instead of being allocated. */
static void test_budget_refuses_flood(void **state)
{
	(void)state;
	enum { REPS = 200000 };
	size_t len = 2 + 3 * (size_t)REPS;
	uint8_t *buf = malloc(len);
	assert_non_null(buf);
	buf[0] = 0x08; /* type = MSG_HEARTBEAT */
	buf[1] = 0x07;
	for (size_t i = 0; i < REPS; i++) {
		/* unknown field 100, varint 0: tag 800 = a0 06 */
		buf[2 + 3 * i] = 0xa0;
		buf[3 + 3 * i] = 0x06;
		buf[4 + 3 * i] = 0x00;
	}
	expect_refused(buf, len, &tight, RAFT_ETOOBIG);
	free(buf);

	/* the same with empty members in the snapshot's conf: 15 { 4 { 1 {} ... } } */
	enum { MEMBERS = 100000 };
	size_t conf_len = 2 * (size_t)MEMBERS; /* 0a 00 each */
	len = 2 + 1 + 3 + 1 + 3 + conf_len;    /* type, snap tag+len, conf tag+len */
	buf = malloc(len);
	assert_non_null(buf);
	size_t p = 0;
	buf[p++] = 0x08;
	buf[p++] = 0x09; /* MSG_SNAPSHOT */
	buf[p++] = 0x7a; /* 15 snap */
	size_t snap_len = 1 + 3 + conf_len;
	buf[p++] = (uint8_t)(0x80 | (snap_len & 0x7f));
	buf[p++] = (uint8_t)(0x80 | ((snap_len >> 7) & 0x7f));
	buf[p++] = (uint8_t)(snap_len >> 14);
	buf[p++] = 0x22; /* 4 conf */
	buf[p++] = (uint8_t)(0x80 | (conf_len & 0x7f));
	buf[p++] = (uint8_t)(0x80 | ((conf_len >> 7) & 0x7f));
	buf[p++] = (uint8_t)(conf_len >> 14);
	for (size_t i = 0; i < MEMBERS; i++) {
		buf[p++] = 0x0a;
		buf[p++] = 0x00;
	}
	assert_int_equal(p, len);
	expect_refused(buf, len, &tight, RAFT_ETOOBIG);
	/* with room for it, the schema check names the real fault */
	struct srv_raftwire_limits roomy = tight;
	roomy.max_msg_bytes = 64u * 1024 * 1024;
	expect_refused(buf, len, &roomy, RAFT_ETOOMANYMEMBERS);
	free(buf);
}

/* ---- schema violations ---------------------------------------------------------------------- */

static void test_bad_message_type(void **state)
{
	(void)state;
	Cairn__Raftpb__Message pb = CAIRN__RAFTPB__MESSAGE__INIT;
	pb.from = 1;                           /* so that the message is not empty */
	expect_pb_refused(&pb, RAFT_ECORRUPT); /* MSG_UNSPECIFIED */
	pb.type = (Cairn__Raftpb__MessageType)(RAFT_MSG_TYPE_MAX + 1);
	expect_pb_refused(&pb, RAFT_ECORRUPT);
	pb.type = (Cairn__Raftpb__MessageType)-1;
	expect_pb_refused(&pb, RAFT_ECORRUPT);

	/* the empty input is a Message of type 0 */
	struct srv_raftwire_limits lim = wide();
	expect_refused((const uint8_t *)"", 0, &lim, RAFT_ECORRUPT);
	expect_refused(NULL, 0, &lim, RAFT_ECORRUPT);
	struct srv_raftwire_msg d;
	assert_int_equal(srv_raftwire_decode(NULL, 3, &lim, &d), RAFT_EINVAL);
	assert_int_equal(srv_raftwire_decode((const uint8_t *)"\x08\x01", 2, NULL, &d),
			 RAFT_EINVAL);
	assert_int_equal(srv_raftwire_decode((const uint8_t *)"\x08\x01", 2, &lim, NULL),
			 RAFT_EINVAL);
}

static void test_bad_entry_type(void **state)
{
	(void)state;
	static const int bad[] = { 3, -1, 1000 };
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		Cairn__Raftpb__Entry e = CAIRN__RAFTPB__ENTRY__INIT;
		Cairn__Raftpb__Entry *ep = &e;
		e.type = (Cairn__Raftpb__EntryType)bad[i];
		Cairn__Raftpb__Message pb = CAIRN__RAFTPB__MESSAGE__INIT;
		pb.type = CAIRN__RAFTPB__MESSAGE_TYPE__MSG_APPEND;
		pb.n_entries = 1;
		pb.entries = &ep;
		expect_pb_refused(&pb, RAFT_ECORRUPT);
	}
}

/* A message with a snapshot whose conf has these members. */
static void expect_conf_refused(const uint64_t *ids, const int *roles, size_t n, int rv)
{
	Cairn__Raftpb__Member ms[RAFT_MAX_MEMBERS + 1];
	Cairn__Raftpb__Member *mp[RAFT_MAX_MEMBERS + 1];
	assert_true(n <= RAFT_MAX_MEMBERS + 1);
	for (size_t i = 0; i < n; i++) {
		cairn__raftpb__member__init(&ms[i]);
		ms[i].id = ids[i];
		ms[i].role = (Cairn__Raftpb__Role)roles[i];
		mp[i] = &ms[i];
	}
	Cairn__Raftpb__Conf conf = CAIRN__RAFTPB__CONF__INIT;
	conf.n_members = n;
	conf.members = mp;
	Cairn__Raftpb__SnapshotMeta snap = CAIRN__RAFTPB__SNAPSHOT_META__INIT;
	snap.index = 10;
	snap.term = 1;
	snap.conf = &conf;
	Cairn__Raftpb__Message pb = CAIRN__RAFTPB__MESSAGE__INIT;
	pb.type = CAIRN__RAFTPB__MESSAGE_TYPE__MSG_SNAPSHOT;
	pb.snap = &snap;
	expect_pb_refused(&pb, rv);
}

static void test_bad_conf(void **state)
{
	(void)state;
	uint64_t ids[RAFT_MAX_MEMBERS + 1];
	int roles[RAFT_MAX_MEMBERS + 1];
	for (size_t i = 0; i < RAFT_MAX_MEMBERS + 1; i++) {
		ids[i] = 100 + i;
		roles[i] = RAFT_VOTER;
	}
	expect_conf_refused(ids, roles, RAFT_MAX_MEMBERS + 1, RAFT_ETOOMANYMEMBERS);

	ids[2] = ids[0]; /* duplicate */
	expect_conf_refused(ids, roles, 3, RAFT_ECORRUPT);
	ids[2] = 102;
	ids[1] = 0; /* zero id */
	expect_conf_refused(ids, roles, 3, RAFT_ECORRUPT);
	ids[1] = 101;
	roles[2] = 0; /* ROLE_UNSPECIFIED */
	expect_conf_refused(ids, roles, 3, RAFT_ECORRUPT);
	roles[2] = 3;
	expect_conf_refused(ids, roles, 3, RAFT_ECORRUPT);
	roles[2] = -2;
	expect_conf_refused(ids, roles, 3, RAFT_ECORRUPT);
}

static void test_bad_conf_change_entry(void **state)
{
	(void)state;
	/* A context one byte over RAFT_MAX_CONF_CONTEXT, in raft_conf_change_encode's layout
	 * (type, context_len as 32-bit, id as 64-bit, little-endian, then the context), which the
	 * encoder itself refuses to write: check that layout with a valid change first. */
	enum { CLEN = RAFT_MAX_CONF_CONTEXT + 1 };
	static uint8_t data[RAFT_CONF_CHANGE_HEADER + CLEN];
	struct raft_conf_change cc = { .type = RAFT_CC_ADD_VOTER, .id = 7 };
	assert_int_equal(raft_conf_change_encode(&cc, data, sizeof data), RAFT_CONF_CHANGE_HEADER);
	struct raft_conf_change back;
	memcpy(data + 4, (const uint8_t[]){ CLEN & 0xff, CLEN >> 8, 0, 0 }, 4);
	assert_int_equal(raft_conf_change_decode(data, sizeof data, &back), RAFT_ECORRUPT);
	memset(data + RAFT_CONF_CHANGE_HEADER, 'u', CLEN);

	struct raft_entry e = { .term = 1,
				.index = 5,
				.type = RAFT_ENTRY_CONF_CHANGE,
				.len = sizeof data,
				.data = data };
	struct raft_msg m = { .type = RAFT_MSG_APPEND, .term = 1, .n_entries = 1, .entries = &e };
	struct srv_raftwire_limits lim = wide();
	expect_msg_refused(&m, &lim, RAFT_ECORRUPT);

	/* the same bytes in a NORMAL entry are opaque: accepted */
	e.type = RAFT_ENTRY_NORMAL;
	roundtrip(&m);

	/* a conf-change entry too short for the header */
	e.type = RAFT_ENTRY_CONF_CHANGE;
	e.len = RAFT_CONF_CHANGE_HEADER - 1;
	expect_msg_refused(&m, &lim, RAFT_ECORRUPT);
	e.len = 0;
	expect_msg_refused(&m, &lim, RAFT_ECORRUPT);
}

/* ---- garbage and truncation ------------------------------------------------------------------ */

static void test_garbage(void **state)
{
	(void)state;
	struct srv_raftwire_limits lim = wide();
	static const struct {
		const char *bytes;
		size_t len;
	} cases[] = {
		{ "\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff", 11 }, /* varint of 11 bytes */
		{ "\x08", 1 },                                          /* tag without its value */
		{ "\x0f\x01", 2 },                                      /* wire type 7 */
		{ "\x00\x01", 2 },                                      /* field number 0 */
		{ "\x08\x01\x6a\x05\x08", 5 },             /* entry longer than input */
		{ "\x08\x01\x72\xff\xff\xff\xff\x0f", 8 }, /* 4 GiB chunk length */
		{ "\x08\x01\x6a\x02\x22\x05", 6 },         /* entry data past entry */
		{ "GET / HTTP/1.1\r\n\r\n", 18 },
		{ "\x08\x01\xa3\x06\xa4\x06", 6 }, /* unknown field 100 as a group */
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		struct srv_raftwire_msg d;
		int rv = srv_raftwire_decode((const uint8_t *)cases[i].bytes, cases[i].len, &lim,
					     &d);
		if (rv != RAFT_ECORRUPT) {
			fail_msg("case %zu: got %d (%s)", i, rv, d.err);
		}
		srv_raftwire_msg_free(&d);
	}

	/* seeded random bytes: never a crash; whatever is accepted re-encodes and decodes equal */
	uint64_t x = 0x9e3779b97f4a7c15u;
	uint8_t buf[64];
	for (int round = 0; round < 20000; round++) {
		size_t len = 1 + (size_t)(round % (int)sizeof buf);
		for (size_t i = 0; i < len; i++) {
			x ^= x << 13;
			x ^= x >> 7;
			x ^= x << 17;
			buf[i] = (uint8_t)x;
		}
		struct srv_raftwire_msg d;
		if (srv_raftwire_decode(buf, len, &lim, &d) == 0) {
			roundtrip(&d.msg);
		}
		srv_raftwire_msg_free(&d);
	}
}

static void test_truncated(void **state)
{
	(void)state;
	enum { CHUNK = 4096 };
	static uint8_t chunk[CHUNK];
	memset(chunk, 's', sizeof chunk);
	static const uint8_t data[] = "some entry";
	struct raft_entry e = { .term = 2, .index = 3, .len = sizeof data - 1, .data = data };
	struct raft_msg m = { .type = RAFT_MSG_SNAPSHOT,
			      .from = 1,
			      .to = 2,
			      .term = 2,
			      .n_entries = 1,
			      .entries = &e,
			      .len = CHUNK,
			      .data = chunk,
			      .snap = { .index = 9, .term = 2, .size = CHUNK } };
	fill_conf(&m.snap.conf, 3, 2);
	uint8_t *buf;
	size_t len;
	assert_int_equal(srv_raftwire_encode(&m, &buf, &len), 0);
	struct srv_raftwire_limits lim = wide();

	/* the snapshot meta is last: one byte short cuts it */
	expect_refused(buf, len - 1, &lim, RAFT_ECORRUPT);
	/* in the middle of the chunk */
	expect_refused(buf, len / 2, &lim, RAFT_ECORRUPT);

	/* every prefix: either refused or a shorter valid message (a cut between fields), never
	 * the whole message */
	for (size_t n = 1; n < len; n++) {
		uint8_t *copy = malloc(n); /* exact size: ASan sees any read past the end */
		assert_non_null(copy);
		memcpy(copy, buf, n);
		struct srv_raftwire_msg d;
		if (srv_raftwire_decode(copy, n, &lim, &d) == 0) {
			assert_true(d.msg.len < CHUNK || d.msg.snap.conf.n < 5);
		}
		srv_raftwire_msg_free(&d);
		free(copy);
	}
	free(buf);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_append),
		cmocka_unit_test(test_append_resp),
		cmocka_unit_test(test_votes),
		cmocka_unit_test(test_heartbeat),
		cmocka_unit_test(test_snapshot),
		cmocka_unit_test(test_propose),
		cmocka_unit_test(test_reads_and_transfer),
		cmocka_unit_test(test_every_type_every_field),
		cmocka_unit_test(test_bytes_exact),
		cmocka_unit_test(test_encode_refuses),
		cmocka_unit_test(test_limit_entry_bytes),
		cmocka_unit_test(test_limit_entries),
		cmocka_unit_test(test_limit_total_bytes),
		cmocka_unit_test(test_limit_chunk),
		cmocka_unit_test(test_limits_init),
		cmocka_unit_test(test_budget_fits_full_message),
		cmocka_unit_test(test_budget_refuses_flood),
		cmocka_unit_test(test_bad_message_type),
		cmocka_unit_test(test_bad_entry_type),
		cmocka_unit_test(test_bad_conf),
		cmocka_unit_test(test_bad_conf_change_entry),
		cmocka_unit_test(test_garbage),
		cmocka_unit_test(test_truncated),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

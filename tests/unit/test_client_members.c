/* test_client_members.c: cairn_node_parse(), libcairn's reader of the member records the Raft
 * leader writes under /cairn/members/ (client/member_record.c): the server's own records read
 * back field for field (every state, IPv4 and IPv6, tags, escapes, bytes that are not UTF-8),
 * the JSON it must also take (whitespace, any field order, unknown fields, every escape,
 * surrogate pairs, RFC 3339 variants, the limits exactly met), every malformed case refused
 * with CAIRN_EINVAL and the node left untouched, and random mutations of a record that either
 * parse into valid UTF-8 within the scratch or are refused. cairn_members_follow() itself is
 * exercised against a cluster by tests/integration/test_examples.sh. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cairn.h"
#include "gossip_store_json.h"

#define MAX_TAGS 300
#define SCRATCH 16384

/* 2026-11-28T09:30:00.123Z */
#define WALL UINT64_C(1795858200123)

static const char good[] =
	"{\"name\":\"node-7\",\"address\":\"127.0.0.1:7946\",\"state\":\"alive\","
	"\"incarnation\":3,\"tags\":{\"role\":\"worker\",\"zone\":\"a\"},"
	"\"since\":\"2026-11-28T09:30:00.123Z\"}";

struct parsed {
	struct cairn_node node;
	struct cairn_tag tags[MAX_TAGS];
	char scratch[SCRATCH];
};

static int parse_n(struct parsed *p, const void *json, size_t len)
{
	memset(p, 0, sizeof *p);
	return cairn_node_parse(json, len, &p->node, p->tags, MAX_TAGS, p->scratch,
				sizeof p->scratch);
}

static int parse(struct parsed *p, const char *json)
{
	return parse_n(p, json, strlen(json));
}

/* A refused record leaves the node as it was. */
static void expect_bad_n(const void *json, size_t len)
{
	struct cairn_node node;
	struct cairn_tag tags[MAX_TAGS];
	char scratch[SCRATCH];
	memset(&node, 0x5a, sizeof node);
	struct cairn_node before = node;
	int rc = cairn_node_parse(json, len, &node, tags, MAX_TAGS, scratch, sizeof scratch);
	if (rc != CAIRN_EINVAL)
		fail_msg("accepted (%d): %.*s", rc, (int)len, (const char *)json);
	assert_memory_equal(&node, &before, sizeof node);
}

static void expect_bad(const char *json)
{
	expect_bad_n(json, strlen(json));
}

/* good with the text `from` (which occurs once) replaced by `to`. */
static void expect_bad_swap(const char *from, const char *to)
{
	char buf[1024];
	const char *at = strstr(good, from);
	assert_non_null(at);
	assert_null(strstr(at + 1, from));
	int n = snprintf(buf, sizeof buf, "%.*s%s%s", (int)(at - good), good, to,
			 at + strlen(from));
	assert_true(n > 0 && (size_t)n < sizeof buf);
	expect_bad(buf);
}

static void expect_good_swap(struct parsed *p, const char *from, const char *to)
{
	char buf[1024];
	const char *at = strstr(good, from);
	assert_non_null(at);
	int n = snprintf(buf, sizeof buf, "%.*s%s%s", (int)(at - good), good, to,
			 at + strlen(from));
	assert_true(n > 0 && (size_t)n < sizeof buf);
	if (parse(p, buf) != 0)
		fail_msg("refused: %s", buf);
}

static void test_good_record(void **state)
{
	(void)state;
	struct parsed p;
	assert_int_equal(parse(&p, good), 0);
	assert_string_equal(p.node.name, "node-7");
	assert_string_equal(p.node.address, "127.0.0.1:7946");
	assert_int_equal(p.node.state, CAIRN_NODE_ALIVE);
	assert_int_equal(p.node.incarnation, 3);
	assert_int_equal(p.node.n_tags, 2);
	assert_ptr_equal(p.node.tags, p.tags);
	assert_string_equal(p.node.tags[0].name, "role");
	assert_string_equal(p.node.tags[0].value, "worker");
	assert_string_equal(p.node.tags[1].name, "zone");
	assert_string_equal(p.node.tags[1].value, "a");
	assert_string_equal(p.node.since, "2026-11-28T09:30:00.123Z");
	assert_false(p.node.removed);
	assert_int_equal(p.node.mod_revision, 0);
	/* every string lives in the scratch */
	const char *strs[] = { p.node.name, p.node.address, p.node.since, p.node.tags[0].name,
			       p.node.tags[1].value };
	for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++)
		assert_true(strs[i] >= p.scratch && strs[i] < p.scratch + sizeof p.scratch);

	static const char *const states[] = { "alive", "suspect", "dead", "left" };
	for (int s = 0; s < 4; s++) {
		char from[32], to[32];
		snprintf(from, sizeof from, "\"state\":\"alive\"");
		snprintf(to, sizeof to, "\"state\":\"%s\"", states[s]);
		expect_good_swap(&p, from, to);
		assert_int_equal(p.node.state, s);
		assert_string_equal(cairn_node_state_name(s), states[s]);
	}
	assert_string_equal(cairn_node_state_name(4), "unknown");
	assert_string_equal(cairn_node_state_name(-1), "unknown");

	/* no tags, no address (the server knew no address family) */
	expect_good_swap(&p, "{\"role\":\"worker\",\"zone\":\"a\"}", "{}");
	assert_int_equal(p.node.n_tags, 0);
	assert_null(p.node.tags);
	expect_good_swap(&p, "\"127.0.0.1:7946\"", "\"\"");
	assert_string_equal(p.node.address, "");
	/* incarnation: 0 and 2^64 - 1 */
	expect_good_swap(&p, ":3,", ":0,");
	assert_int_equal(p.node.incarnation, 0);
	expect_good_swap(&p, ":3,", ":18446744073709551615,");
	assert_true(p.node.incarnation == UINT64_MAX);
	/* one tag name twice: metadata comes from the node as it wrote it */
	expect_good_swap(&p, "\"zone\":\"a\"", "\"role\":\"db\"");
	assert_int_equal(p.node.n_tags, 2);
	assert_string_equal(p.node.tags[1].name, "role");
	assert_string_equal(p.node.tags[1].value, "db");
	/* empty tag name and value ("=\n" in the metadata) */
	expect_good_swap(&p, "\"zone\":\"a\"", "\"\":\"\"");
	assert_string_equal(p.node.tags[1].name, "");
	assert_string_equal(p.node.tags[1].value, "");
}

/* The JSON a reader must take besides the server's exact form. */
static void test_json_forms(void **state)
{
	(void)state;
	struct parsed p;
	/* whitespace everywhere it may go, fields in another order */
	assert_int_equal(parse(&p, " \r\n\t{ \"since\" : \"2026-11-28T09:30:00Z\" ,\n"
				   "  \"tags\" : { \"a\" : \"1\" , \"b\" : \"2\" } ,\n"
				   "  \"incarnation\" : 12 , \"state\" : \"dead\" ,\n"
				   "  \"address\" : \"[::1]:7946\" , \"name\" : \"n\" } \n"),
			 0);
	assert_string_equal(p.node.name, "n");
	assert_string_equal(p.node.address, "[::1]:7946");
	assert_int_equal(p.node.state, CAIRN_NODE_DEAD);
	assert_int_equal(p.node.incarnation, 12);
	assert_int_equal(p.node.n_tags, 2);
	assert_string_equal(p.node.tags[1].value, "2");
	assert_string_equal(p.node.since, "2026-11-28T09:30:00Z");

	/* fields this version does not know are skipped, whatever JSON they hold */
	static const char *const unknown[] = {
		"\"x\":1",
		"\"x\":-0.5e+10",
		"\"x\":0",
		"\"x\":1E3",
		"\"x\":true",
		"\"x\":false",
		"\"x\":null",
		"\"x\":\"s\\u00e9\"",
		"\"x\":[]",
		"\"x\":{}",
		"\"x\":[1,\"a\",{\"b\":[null,{}]},[[[]]]]",
		"\"x\":{\"name\":5,\"state\":[]}",
		"\"name2\":\"y\"",
		"\"Name\":\"y\"",
	};
	for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
		char to[256];
		snprintf(to, sizeof to, "{%s,\"name\"", unknown[i]);
		expect_good_swap(&p, "{\"name\"", to);
		assert_string_equal(p.node.name, "node-7");
	}
	/* unknown nesting up to 16 levels */
	char deep[256];
	snprintf(deep, sizeof deep, "{\"x\":%.*s%.*s,\"name\"", 16, "[[[[[[[[[[[[[[[[", 16,
		 "]]]]]]]]]]]]]]]]");
	expect_good_swap(&p, "{\"name\"", deep);

	/* a key written with an escape is the same key */
	expect_good_swap(&p, "\"name\":", "\"n\\u0061me\":");
	assert_string_equal(p.node.name, "node-7");

	/* RFC 3339 forms */
	static const char *const times[] = {
		"2026-11-28T09:30:00Z",      "2026-11-28t09:30:00z",
		"2026-11-28T09:30:00.1Z",    "2026-11-28T09:30:00.123456789Z",
		"2026-11-28T09:30:00+02:00", "2026-11-28T23:59:60-11:30",
		"0000-01-01T00:00:00Z",
	};
	for (size_t i = 0; i < sizeof times / sizeof times[0]; i++) {
		char to[64];
		snprintf(to, sizeof to, "\"%s\"", times[i]);
		expect_good_swap(&p, "\"2026-11-28T09:30:00.123Z\"", to);
		assert_string_equal(p.node.since, times[i]);
	}
}

static void test_escapes_and_utf8(void **state)
{
	(void)state;
	struct parsed p;
	/* every short escape, in a tag value */
	expect_good_swap(&p, "\"worker\"", "\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"");
	assert_string_equal(p.node.tags[0].value, "\"\\/\b\f\n\r\t");
	/* \u escapes: 1, 2 and 3 UTF-8 bytes, either hex case, and a surrogate pair */
	expect_good_swap(&p, "\"node-7\"", "\"\\u0041\\u00e9\\u00E9\\u20AC\\ud83d\\ude00\"");
	assert_string_equal(p.node.name, "A\xc3\xa9\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80");
	/* a control byte the server escaped as \u00XX */
	expect_good_swap(&p, "\"node-7\"", "\"a\\u0001b\\u001f\"");
	assert_string_equal(p.node.name, "a\x01"
					 "b\x1f");
	/* raw UTF-8 of 2, 3 and 4 bytes, at the edges of their ranges */
	expect_good_swap(&p, "\"node-7\"",
			 "\"\xc2\x80\xdf\xbf\xe0\xa0\x80\xed\x9f\xbf\xee\x80\x80\xef\xbf\xbf"
			 "\xf0\x90\x80\x80\xf4\x8f\xbf\xbf\"");
	assert_string_equal(p.node.name, "\xc2\x80\xdf\xbf\xe0\xa0\x80\xed\x9f\xbf\xee\x80\x80"
					 "\xef\xbf\xbf\xf0\x90\x80\x80\xf4\x8f\xbf\xbf");
	/* DEL and the highest code point by escape */
	expect_good_swap(&p, "\"node-7\"", "\"\x7f\\udbff\\udfff\"");
	assert_string_equal(p.node.name, "\x7f\xf4\x8f\xbf\xbf");
}

/* UTF-8 of what the server's JSON string of n bytes decodes to: valid UTF-8 as is, any other
 * byte as the code point of its value. Returns the length. */
static size_t expected_decoding(const uint8_t *s, size_t n, char *out)
{
	size_t o = 0;
	for (size_t i = 0; i < n;) {
		uint8_t c = s[i];
		size_t len = 0;
		if (c < 0x80)
			len = 1;
		else if (c >= 0xc2 && c <= 0xdf)
			len = 2;
		else if (c >= 0xe0 && c <= 0xef)
			len = 3;
		else if (c >= 0xf0 && c <= 0xf4)
			len = 4;
		bool ok = len > 0 && i + len <= n;
		for (size_t k = 1; ok && k < len; k++)
			ok = (s[i + k] & 0xc0) == 0x80;
		if (ok && len == 3)
			ok = !(c == 0xe0 && s[i + 1] < 0xa0) && !(c == 0xed && s[i + 1] > 0x9f);
		if (ok && len == 4)
			ok = !(c == 0xf0 && s[i + 1] < 0x90) && !(c == 0xf4 && s[i + 1] > 0x8f);
		if (ok) {
			memcpy(out + o, s + i, len);
			o += len;
			i += len;
		} else {
			out[o++] = (char)(0xc0 | (c >> 6));
			out[o++] = (char)(0x80 | (c & 0x3f));
			i++;
		}
	}
	out[o] = '\0';
	return o;
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rng(void)
{
	/* xorshift64*: a fixed seed, so a failure replays */
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * 0x2545f4914f6cdd1dull;
}

/* Random bytes from an alphabet that hits every escaping path: ASCII, controls, quote and
 * backslash, valid multibyte UTF-8, and stray bytes above 0x7f; never NUL, '=' or '\n'. */
static size_t random_text(uint8_t *out, size_t max)
{
	static const char *const pieces[] = { "a",
					      "Z",
					      "0",
					      "-",
					      " ",
					      "\"",
					      "\\",
					      "/",
					      "\t",
					      "\r",
					      "\x01",
					      "\x1f",
					      "\x7f",
					      "\xc3\xa9",
					      "\xe2\x82\xac",
					      "\xf0\x9f\x98\x80",
					      "\xff",
					      "\x80",
					      "\xc0",
					      "\xed\xa0",
					      "\xf4\x90" };
	size_t n = 0, want = (size_t)(rng() % (max + 1));
	while (n < want) {
		const char *pc = pieces[rng() % (sizeof pieces / sizeof pieces[0])];
		size_t l = strlen(pc);
		if (n + l > max)
			break;
		memcpy(out + n, pc, l);
		n += l;
	}
	return n;
}

/* Records written by the server's own encoder (gstore_json_member) read back field for field. */
static void test_server_round_trip(void **state)
{
	(void)state;
	static struct parsed p;
	static char json[GSTORE_JSON_MAX];
	for (int iter = 0; iter < 3000; iter++) {
		uint8_t name[GOSSIP_MAX_NAME + 1];
		uint8_t meta[GOSSIP_MAX_META];
		size_t name_len = 0;
		while (name_len == 0)
			name_len = random_text(name, GOSSIP_MAX_NAME);
		name[name_len] = 0;
		/* tags: "key=value\n" lines */
		size_t meta_len = 0, n_tags = 0;
		uint8_t keys[64][48], vals[64][48];
		size_t kl[64], vl[64];
		while (n_tags < 64 && rng() % 4 != 0) {
			uint8_t k[48], v[48];
			size_t a = random_text(k, 40), b = random_text(v, 40);
			if (meta_len + a + b + 2 > GOSSIP_MAX_META)
				break;
			memcpy(meta + meta_len, k, a);
			meta[meta_len + a] = '=';
			memcpy(meta + meta_len + a + 1, v, b);
			meta[meta_len + a + 1 + b] = '\n';
			meta_len += a + b + 2;
			memcpy(keys[n_tags], k, a);
			kl[n_tags] = a;
			memcpy(vals[n_tags], v, b);
			vl[n_tags] = b;
			n_tags++;
		}
		struct gossip_member m;
		memset(&m, 0, sizeof m);
		m.name = (const char *)name;
		if (iter % 2 == 0) {
			m.addr.family = 4;
			m.addr.ip[0] = 10;
			m.addr.ip[3] = (uint8_t)iter;
		} else {
			m.addr.family = 6;
			m.addr.ip[15] = 1;
		}
		m.addr.port = (uint16_t)(1 + iter);
		m.state = (uint32_t)(GOSSIP_ALIVE + iter % 4);
		m.incarnation = (uint32_t)rng();
		m.meta = meta;
		m.meta_len = (uint32_t)meta_len;
		size_t len = gstore_json_member(&m, WALL + (uint64_t)iter, json, sizeof json);
		assert_true(len > 0);
		if (parse_n(&p, json, len) != 0)
			fail_msg("iteration %d: the server's record refused: %.*s", iter, (int)len,
				 json);
		char want[6 * GOSSIP_MAX_META];
		expected_decoding(name, name_len, want);
		assert_string_equal(p.node.name, want);
		char addr[64];
		gstore_addr_format(&m.addr, addr, sizeof addr);
		assert_string_equal(p.node.address, addr);
		assert_int_equal(p.node.state, (int)m.state - GOSSIP_ALIVE);
		assert_int_equal(p.node.incarnation, m.incarnation);
		assert_int_equal(p.node.n_tags, n_tags);
		for (size_t t = 0; t < n_tags; t++) {
			expected_decoding(keys[t], kl[t], want);
			assert_string_equal(p.node.tags[t].name, want);
			expected_decoding(vals[t], vl[t], want);
			assert_string_equal(p.node.tags[t].value, want);
		}
		char ts[25];
		gstore_rfc3339_ms(WALL + (uint64_t)iter, ts);
		assert_string_equal(p.node.since, ts);
		/* the documented scratch bound: len + 1 always holds the strings */
		struct cairn_node node;
		static char tight[GSTORE_JSON_MAX + 1];
		assert_int_equal(cairn_node_parse((const uint8_t *)json, len, &node, p.tags,
						  MAX_TAGS, tight, len + 1),
				 0);
	}
}

/* The largest record the server can write: the longest name and 256 tags, every byte escaped
 * the longest way. */
static void test_limits(void **state)
{
	(void)state;
	static struct parsed p;
	static char json[GSTORE_JSON_MAX];
	uint8_t name[GOSSIP_MAX_NAME + 1], meta[GOSSIP_MAX_META];
	memset(name, 0xff, GOSSIP_MAX_NAME);
	name[GOSSIP_MAX_NAME] = 0;
	for (size_t i = 0; i < GOSSIP_MAX_META; i += 2) {
		meta[i] = '=';
		meta[i + 1] = '\n';
	}
	struct gossip_member m;
	memset(&m, 0, sizeof m);
	m.name = (const char *)name;
	m.addr.family = 4;
	m.addr.port = 1;
	m.state = GOSSIP_ALIVE;
	m.meta = meta;
	m.meta_len = GOSSIP_MAX_META;
	size_t len = gstore_json_member(&m, WALL, json, sizeof json);
	assert_true(len > 0);
	assert_int_equal(parse_n(&p, json, len), 0);
	assert_int_equal(strlen(p.node.name), 2 * GOSSIP_MAX_NAME);
	assert_int_equal(p.node.n_tags, GOSSIP_MAX_META / 2);

	/* tags: exactly max_tags fit, one more does not */
	struct cairn_node node;
	struct cairn_tag tags[GOSSIP_MAX_META / 2];
	static char scratch[SCRATCH];
	assert_int_equal(cairn_node_parse((const uint8_t *)json, len, &node, tags,
					  GOSSIP_MAX_META / 2, scratch, sizeof scratch),
			 0);
	memset(&node, 0x5a, sizeof node);
	struct cairn_node before = node;
	assert_int_equal(cairn_node_parse((const uint8_t *)json, len, &node, tags,
					  GOSSIP_MAX_META / 2 - 1, scratch, sizeof scratch),
			 CAIRN_EINVAL);
	assert_memory_equal(&node, &before, sizeof node);
	/* no tags room at all is fine for a record without tags */
	assert_int_equal(
		cairn_node_parse((const uint8_t *)"{\"name\":\"a\",\"address\":\"\","
						  "\"state\":\"left\",\"incarnation\":1,"
						  "\"tags\":{},\"since\":\"2026-11-28T"
						  "09:30:00Z\"}",
				 strlen("{\"name\":\"a\",\"address\":\"\",\"state\":\"left\","
					"\"incarnation\":1,\"tags\":{},\"since\":\"2026-"
					"11-28T09:30:00Z\"}"),
				 &node, NULL, 0, scratch, sizeof scratch),
		0);
	assert_int_equal(node.state, CAIRN_NODE_LEFT);

	/* scratch: the exact need fits, one byte less does not */
	size_t need = strlen("node-7") + strlen("127.0.0.1:7946") + strlen("role") +
		      strlen("worker") + strlen("zone") + strlen("a") +
		      strlen("2026-11-28T09:30:00.123Z") + 7 /* NULs */;
	/* the state string and the keys pass through the scratch too */
	size_t peak = need + strlen("alive") + 1;
	for (size_t cap = 0; cap < peak + 8; cap++) {
		int rc = cairn_node_parse((const uint8_t *)good, strlen(good), &node, tags, 4,
					  scratch, cap);
		if (cap >= peak)
			assert_int_equal(rc, 0);
		else
			assert_int_equal(rc, CAIRN_EINVAL);
	}

	/* NULL arguments */
	assert_int_equal(cairn_node_parse(NULL, 0, &node, tags, 4, scratch, sizeof scratch),
			 CAIRN_EINVAL);
	assert_int_equal(cairn_node_parse((const uint8_t *)good, strlen(good), NULL, tags, 4,
					  scratch, sizeof scratch),
			 CAIRN_EINVAL);
	assert_int_equal(cairn_node_parse((const uint8_t *)good, strlen(good), &node, NULL, 4,
					  scratch, sizeof scratch),
			 CAIRN_EINVAL);
	assert_int_equal(cairn_node_parse((const uint8_t *)good, strlen(good), &node, tags, 4, NULL,
					  sizeof scratch),
			 CAIRN_EINVAL);
}

static void test_malformed(void **state)
{
	(void)state;
	/* not an object, or not the record */
	static const char *const whole[] = {
		"",
		" ",
		"null",
		"true",
		"0",
		"\"x\"",
		"[]",
		"{}",
		"{ }",
		"["
		"{}"
		"]",
		"{\"name\":\"a\"}",
	};
	for (size_t i = 0; i < sizeof whole / sizeof whole[0]; i++)
		expect_bad(whole[i]);
	/* every strict prefix of a good record */
	for (size_t n = 0; n < strlen(good); n++)
		expect_bad_n(good, n);
	/* after the object: nothing but whitespace */
	expect_bad_swap("Z\"}", "Z\"}x");
	expect_bad_swap("Z\"}", "Z\"}{}");
	expect_bad_swap("Z\"}", "Z\"},");
	char tail[512];
	snprintf(tail, sizeof tail, "%s ", good);
	expect_bad_n(tail, strlen(good) + 2); /* a NUL after the object */
	/* a byte-order mark is not JSON whitespace */
	char bom[512];
	snprintf(bom, sizeof bom, "\xef\xbb\xbf%s", good);
	expect_bad(bom);

	/* each field missing, or twice */
	static const char *const fields[] = { "\"name\":\"node-7\",",
					      "\"address\":\"127.0.0.1:7946\",",
					      "\"state\":\"alive\",", "\"incarnation\":3,",
					      "\"tags\":{\"role\":\"worker\",\"zone\":\"a\"}," };
	for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
		char twice[512];
		expect_bad_swap(fields[i], "");
		snprintf(twice, sizeof twice, "%s%s", fields[i], fields[i]);
		expect_bad_swap(fields[i], twice);
	}
	expect_bad_swap(",\"since\":\"2026-11-28T09:30:00.123Z\"", "");
	expect_bad_swap("\"since\":", "\"since\":\"2026-11-28T09:30:00Z\",\"since\":");
	expect_bad_swap("\"name\":", "\"n\\u0061me\":\"x\",\"name\":"); /* twice, once escaped */

	/* syntax */
	expect_bad_swap("\"name\":", "\"name\"");
	expect_bad_swap("\"name\":", "\"name\"=");
	expect_bad_swap(",\"address\"", "\"address\"");
	expect_bad_swap(",\"address\"", ",,\"address\"");
	expect_bad_swap("\"a\"}", "\"a\",}");
	expect_bad_swap("\"a\"}", "\"a\"");
	expect_bad_swap("Z\"}", "Z\",}");
	expect_bad_swap("{\"name\"", "{name");
	expect_bad_swap("{\"name\"", "{'name'");
	expect_bad_swap("\"node-7\"", "'node-7'");
	expect_bad_swap("\"node-7\"", "node-7");

	/* field values of the wrong kind */
	static const char *const names[] = { "\"\"", "7", "null", "[\"a\"]", "{}", "true" };
	for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
		expect_bad_swap("\"node-7\"", names[i]);
	expect_bad_swap("\"127.0.0.1:7946\"", "null");
	expect_bad_swap("\"127.0.0.1:7946\"", "7946");
	static const char *const states[] = { "\"Alive\"",  "\"zombie\"",       "\"\"",
					      "\"alive \"", "\"alive\\u0000\"", "0",
					      "null" };
	for (size_t i = 0; i < sizeof states / sizeof states[0]; i++)
		expect_bad_swap("\"alive\"", states[i]);
	static const char *const incs[] = {
		"-1",
		"1.5",
		"1e3",
		"1E3",
		"03",
		"00",
		"\"3\"",
		"",
		"18446744073709551616",
		"99999999999999999999",
		"3.",
		"-0",
		"+3",
		"null",
		"0x3",
		"3 3",
	};
	for (size_t i = 0; i < sizeof incs / sizeof incs[0]; i++) {
		char to[64];
		snprintf(to, sizeof to, ":%s,", incs[i]);
		expect_bad_swap(":3,", to);
	}
	static const char *const tags[] = {
		"[]",
		"\"role=worker\"",
		"null",
		"{\"role\":1}",
		"{\"role\":null}",
		"{\"role\":{}}",
		"{\"role\":[\"w\"]}",
		"{role:\"w\"}",
		"{\"role\"}",
		"{\"role\":\"w\",}",
		"{,}",
		"{\"role\":\"w\"",
		"{\"role\":\"w\"]",
	};
	for (size_t i = 0; i < sizeof tags / sizeof tags[0]; i++)
		expect_bad_swap("{\"role\":\"worker\",\"zone\":\"a\"}", tags[i]);
	static const char *const times[] = {
		"",
		"2026-11-28",
		"2026-11-28T09:30:00",
		"2026-11-28 09:30:00Z",
		"2026-13-28T09:30:00Z",
		"2026-00-28T09:30:00Z",
		"2026-11-32T09:30:00Z",
		"2026-11-00T09:30:00Z",
		"2026-11-28T24:00:00Z",
		"2026-11-28T09:60:00Z",
		"2026-11-28T09:30:61Z",
		"2026-11-28T09:30:00.Z",
		"2026-11-28T09:30:00.123",
		"2026-11-28T09:30:00+0200",
		"2026-11-28T09:30:00+02",
		"2026-11-28T09:30:00+24:00",
		"2026-11-28T09:30:00+02:60",
		"2026-11-28T09:30:00ZZ",
		"26-11-28T09:30:00Z",
		"2026-1-28T09:30:00Z",
		"2026/11/28T09:30:00Z",
		"2026-11-28T9:30:00Z",
		"yesterday",
		"2026-11-28T09:30:00.123Z ",
	};
	for (size_t i = 0; i < sizeof times / sizeof times[0]; i++) {
		char to[64];
		snprintf(to, sizeof to, "\"%s\"", times[i]);
		expect_bad_swap("\"2026-11-28T09:30:00.123Z\"", to);
	}
	expect_bad_swap("\"2026-11-28T09:30:00.123Z\"", "1795858200");

	/* escapes */
	static const char *const escapes[] = {
		"\\x41",
		"\\a",
		"\\'",
		"\\u12",
		"\\u004",
		"\\u00G0",
		"\\u",
		"\\",
		"\\ud800",
		"\\udbff",
		"\\udc00",
		"\\udfff",
		"\\ud800\\u0041",
		"\\ud800x",
		"\\ud800\\ud800",
		"\\udc00\\ud800",
		"\\u0000",
		"a\\u0000b",
		"\\U0041",
	};
	for (size_t i = 0; i < sizeof escapes / sizeof escapes[0]; i++) {
		char to[64];
		snprintf(to, sizeof to, "\"%s\"", escapes[i]);
		expect_bad_swap("\"node-7\"", to);
		expect_bad_swap("\"worker\"", to);
	}
	/* raw bytes: controls, and sequences that are not UTF-8 */
	static const char *const raw[] = {
		"\x01",
		"\n",
		"\t",
		"\x1f",
		"\xff",
		"\xfe",
		"\x80",
		"\xbf",
		"\xc0\x80",
		"\xc1\xbf",
		"\xc2",
		"\xc2\x41",
		"\xe0\x80\x80",
		"\xe0\x9f\xbf",
		"\xe2\x82",
		"\xed\xa0\x80",
		"\xed\xbf\xbf",
		"\xf0\x80\x80\x80",
		"\xf0\x8f\xbf\xbf",
		"\xf4\x90\x80\x80",
		"\xf5\x80\x80\x80",
		"\xf8\x88\x80\x80\x80",
		"\xf0\x9f\x98",
	};
	for (size_t i = 0; i < sizeof raw / sizeof raw[0]; i++) {
		char to[64];
		snprintf(to, sizeof to, "\"a%sb\"", raw[i]);
		expect_bad_swap("\"node-7\"", to);
		expect_bad_swap("\"worker\"", to);
		snprintf(to, sizeof to, "{\"x\":\"%s\",\"name\"", raw[i]);
		expect_bad_swap("{\"name\"", to); /* in a skipped field too */
	}
	/* a NUL byte, in a string and between tokens */
	char withnul[512];
	size_t gl = strlen(good);
	memcpy(withnul, good, gl);
	withnul[10] = '\0'; /* inside "node-7" */
	expect_bad_n(withnul, gl);
	memcpy(withnul, good, gl);
	memmove(withnul + 2, withnul + 1, gl - 1);
	withnul[1] = '\0';
	expect_bad_n(withnul, gl + 1);

	/* unknown fields must still be JSON */
	static const char *const unknown[] = {
		"\"x\":",        "\"x\":01",   "\"x\":1.",   "\"x\":.5",        "\"x\":-",
		"\"x\":+1",      "\"x\":1e",   "\"x\":1e+",  "\"x\":tru",       "\"x\":nul",
		"\"x\":True",    "\"x\":[1,]", "\"x\":[,1]", "\"x\":{\"a\"}",   "\"x\":{\"a\":1,}",
		"\"x\":{1:2}",   "\"x\":[",    "\"x\":{",    "\"x\":undefined", "\"x\":NaN",
		"\"x\":\"\\q\"", "x:1",
	};
	for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
		char to[128];
		snprintf(to, sizeof to, "{%s,\"name\"", unknown[i]);
		expect_bad_swap("{\"name\"", to);
	}
	/* nesting beyond 16 levels */
	char deep[256];
	snprintf(deep, sizeof deep, "{\"x\":%.*s%.*s,\"name\"", 17, "[[[[[[[[[[[[[[[[[", 17,
		 "]]]]]]]]]]]]]]]]]");
	expect_bad_swap("{\"name\"", deep);
}

/* Every string of a node that parsed is valid UTF-8 and inside the scratch. */
static void check_utf8(const char *s, const char *lo, const char *hi)
{
	assert_true(s >= lo && s < hi);
	const uint8_t *p = (const uint8_t *)s;
	while (*p != 0) {
		size_t len = *p < 0x80                ? 1 :
			     *p >= 0xc2 && *p <= 0xdf ? 2 :
			     *p >= 0xe0 && *p <= 0xef ? 3 :
			     *p >= 0xf0 && *p <= 0xf4 ? 4 :
							0;
		assert_true(len > 0);
		for (size_t k = 1; k < len; k++)
			assert_true((p[k] & 0xc0) == 0x80);
		p += len;
	}
	assert_true((const char *)p < hi);
}

static void test_mutations(void **state)
{
	(void)state;
	static const char alphabet[] = "{}[]\":,\\u0aZ \x01\x80\xff\xc3\xed";
	static struct parsed p;
	size_t gl = strlen(good), accepted = 0;
	rng_state = 42;
	for (int iter = 0; iter < 50000; iter++) {
		uint8_t buf[512];
		size_t n = gl;
		memcpy(buf, good, gl);
		int edits = 1 + (int)(rng() % 4);
		for (int e = 0; e < edits; e++) {
			size_t at = (size_t)(rng() % n);
			uint8_t c = (uint8_t)alphabet[rng() % (sizeof alphabet - 1)];
			switch (rng() % 3) {
			case 0: /* replace */
				buf[at] = c;
				break;
			case 1: /* insert */
				if (n < sizeof buf) {
					memmove(buf + at + 1, buf + at, n - at);
					buf[at] = c;
					n++;
				}
				break;
			default: /* delete */
				if (n > 1) {
					memmove(buf + at, buf + at + 1, n - at - 1);
					n--;
				}
				break;
			}
		}
		/* parsed from a heap copy of exactly n bytes: ASan sees any read past the end */
		uint8_t *heap = malloc(n);
		assert_non_null(heap);
		memcpy(heap, buf, n);
		int rc = parse_n(&p, heap, n);
		free(heap);
		if (rc != 0) {
			assert_int_equal(rc, CAIRN_EINVAL);
			continue;
		}
		accepted++;
		const char *lo = p.scratch, *hi = p.scratch + sizeof p.scratch;
		check_utf8(p.node.name, lo, hi);
		assert_true(p.node.name[0] != '\0');
		check_utf8(p.node.address, lo, hi);
		check_utf8(p.node.since, lo, hi);
		assert_true(p.node.state >= CAIRN_NODE_ALIVE && p.node.state <= CAIRN_NODE_LEFT);
		for (size_t t = 0; t < p.node.n_tags; t++) {
			check_utf8(p.node.tags[t].name, lo, hi);
			check_utf8(p.node.tags[t].value, lo, hi);
		}
	}
	/* some mutations keep a record (a changed letter in a string) */
	assert_true(accepted > 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_good_record),      cmocka_unit_test(test_json_forms),
		cmocka_unit_test(test_escapes_and_utf8), cmocka_unit_test(test_server_round_trip),
		cmocka_unit_test(test_limits),           cmocka_unit_test(test_malformed),
		cmocka_unit_test(test_mutations),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

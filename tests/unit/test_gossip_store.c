/* test_gossip_store.c: the value the leader writes under /cairn/members/<name>
 * (server/gossip_store_json.h): the exact JSON of a member, IPv4 and IPv6 addresses, the
 * parsing of the "key=value\n" tags, JSON escaping (controls, quotes, UTF-8 kept, invalid bytes
 * as U+00XX), the RFC 3339 time, the comparison that ignores since, reading a stored value's
 * incarnation and state back (SWIM's order between a key and the view), and the worst-case
 * bound. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "gossip_store_json.h"

static struct gossip_member member4(const char *name, const char *meta)
{
	struct gossip_member m;
	memset(&m, 0, sizeof m);
	m.name = name;
	m.addr.family = 4;
	m.addr.ip[0] = 127;
	m.addr.ip[3] = 1;
	m.addr.port = 7946;
	m.state = GOSSIP_ALIVE;
	m.incarnation = 3;
	m.meta = (const uint8_t *)meta;
	m.meta_len = (uint32_t)strlen(meta);
	return m;
}

/* 2026-11-28T09:30:00.123Z */
#define WALL 1795858200123ull

static void test_member_json(void **state)
{
	(void)state;
	char out[GSTORE_JSON_MAX];
	struct gossip_member m = member4("node-7", "role=worker\nzone=a\n");
	size_t n = gstore_json_member(&m, WALL, out, sizeof out);
	assert_int_not_equal(n, 0);
	out[n] = '\0';
	assert_string_equal(out, "{\"name\":\"node-7\",\"address\":\"127.0.0.1:7946\","
				 "\"state\":\"alive\",\"incarnation\":3,"
				 "\"tags\":{\"role\":\"worker\",\"zone\":\"a\"},"
				 "\"since\":\"2026-11-28T09:30:00.123Z\"}");

	m.state = GOSSIP_SUSPECT;
	m.incarnation = 4294967295u;
	m.meta_len = 0;
	n = gstore_json_member(&m, 0, out, sizeof out);
	out[n] = '\0';
	assert_string_equal(out, "{\"name\":\"node-7\",\"address\":\"127.0.0.1:7946\","
				 "\"state\":\"suspect\",\"incarnation\":4294967295,"
				 "\"tags\":{},\"since\":\"1970-01-01T00:00:00.000Z\"}");
	m.state = GOSSIP_DEAD;
	n = gstore_json_body(&m, out, sizeof out);
	out[n] = '\0';
	assert_non_null(strstr(out, "\"state\":\"dead\""));
	m.state = GOSSIP_LEFT;
	n = gstore_json_body(&m, out, sizeof out);
	out[n] = '\0';
	assert_non_null(strstr(out, "\"state\":\"left\""));
	assert_string_equal(gossip_state_name(0), "unknown");
}

static void test_addresses(void **state)
{
	(void)state;
	char buf[64];
	struct gossip_addr a;
	memset(&a, 0, sizeof a);
	a.family = 6;
	a.ip[15] = 1;
	a.port = 7946;
	assert_int_equal(gstore_addr_format(&a, buf, sizeof buf), strlen("[::1]:7946"));
	assert_string_equal(buf, "[::1]:7946");
	static const uint8_t v6[16] = { 0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0,
					0,    0,    0,    0,    0, 0, 0, 0x2a };
	memcpy(a.ip, v6, 16);
	a.port = 65535;
	gstore_addr_format(&a, buf, sizeof buf);
	assert_string_equal(buf, "[2001:db8::2a]:65535");
	memset(&a, 0, sizeof a);
	a.family = 4;
	a.ip[0] = 10;
	a.ip[1] = 255;
	a.ip[2] = 0;
	a.ip[3] = 9;
	a.port = 0;
	gstore_addr_format(&a, buf, sizeof buf);
	assert_string_equal(buf, "10.255.0.9:0");
}

static const char *tags(const char *meta, size_t n, char *out, size_t cap)
{
	size_t len = 0;
	if (!gstore_json_tags(out, cap, &len, (const uint8_t *)meta, n))
		return NULL;
	out[len] = '\0';
	return out;
}

static void test_tags(void **state)
{
	(void)state;
	char out[1024];
	assert_string_equal(tags("", 0, out, sizeof out), "{}");
	assert_string_equal(tags("a=1\n", 4, out, sizeof out), "{\"a\":\"1\"}");
	/* empty lines, lines without '=' and bytes after the last newline are skipped */
	assert_string_equal(tags("a=1\n\nb=2\nc=3", 12, out, sizeof out),
			    "{\"a\":\"1\",\"b\":\"2\"}");
	assert_string_equal(tags("flag\nx=y=z\n", 11, out, sizeof out), "{\"x\":\"y=z\"}");
	assert_string_equal(tags("no-newline", 10, out, sizeof out), "{}");
	/* an empty value */
	assert_string_equal(tags("k=\n", 3, out, sizeof out), "{\"k\":\"\"}");
	/* empty key and empty value */
	assert_string_equal(tags("=\n", 2, out, sizeof out), "{\"\":\"\"}");
	/* order as given */
	assert_string_equal(tags("z=1\na=2\n", 8, out, sizeof out), "{\"z\":\"1\",\"a\":\"2\"}");
	/* too small: false, nothing half-written counted */
	size_t len = 3;
	memcpy(out, "abc", 3);
	assert_false(gstore_json_tags(out, 8, &len, (const uint8_t *)"key=value\n", 10));
	assert_int_equal(len, 3);
}

static const char *str(const void *s, size_t n, char *out, size_t cap)
{
	size_t len = 0;
	if (!gstore_json_string(out, cap, &len, s, n))
		return NULL;
	out[len] = '\0';
	return out;
}

static void test_escaping(void **state)
{
	(void)state;
	char out[256];
	assert_string_equal(str("", 0, out, sizeof out), "\"\"");
	assert_string_equal(str("a\"b\\c", 5, out, sizeof out), "\"a\\\"b\\\\c\"");
	assert_string_equal(str("\n\r\t\b\f", 5, out, sizeof out), "\"\\n\\r\\t\\b\\f\"");
	assert_string_equal(str("\x01\x1f\x7f/", 4, out, sizeof out), "\"\\u0001\\u001f\x7f/\"");
	assert_string_equal(str("x\0y", 3, out, sizeof out), "\"x\\u0000y\"");
	/* valid UTF-8 is kept: é, €, U+1F600 */
	assert_string_equal(str("\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", 9, out, sizeof out),
			    "\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\"");
	/* invalid: a lone continuation, an overlong form, a surrogate, a cut sequence, 0xff */
	assert_string_equal(str("\x80", 1, out, sizeof out), "\"\\u0080\"");
	assert_string_equal(str("\xc0\xaf", 2, out, sizeof out), "\"\\u00c0\\u00af\"");
	assert_string_equal(str("\xed\xa0\x80", 3, out, sizeof out), "\"\\u00ed\\u00a0\\u0080\"");
	assert_string_equal(str("\xe2\x82", 2, out, sizeof out), "\"\\u00e2\\u0082\"");
	assert_string_equal(str("\xff", 1, out, sizeof out), "\"\\u00ff\"");
	assert_string_equal(str("\xf4\x90\x80\x80", 4, out, sizeof out),
			    "\"\\u00f4\\u0090\\u0080\\u0080\"");
	/* exact fit and one short */
	assert_non_null(str("ab", 2, out, 4));
	assert_null(str("ab", 2, out, 3));
	assert_null(str("\x01", 1, out, 7));
	assert_non_null(str("\x01", 1, out, 8));

	/* a name and tags with every kind of byte make valid JSON the test can read back */
	char json[GSTORE_JSON_MAX];
	struct gossip_member m = member4("we\"ird\\name\n", "k\t=v\"1\n\xff=\xc3\xa9\n");
	size_t n = gstore_json_member(&m, WALL, json, sizeof json);
	json[n] = '\0';
	assert_string_equal(json,
			    "{\"name\":\"we\\\"ird\\\\name\\n\",\"address\":\"127.0.0.1:7946\","
			    "\"state\":\"alive\",\"incarnation\":3,"
			    "\"tags\":{\"k\\t\":\"v\\\"1\",\"\\u00ff\":\"\xc3\xa9\"},"
			    "\"since\":\"2026-11-28T09:30:00.123Z\"}");
}

static void test_rfc3339(void **state)
{
	(void)state;
	char ts[25];
	gstore_rfc3339_ms(0, ts);
	assert_string_equal(ts, "1970-01-01T00:00:00.000Z");
	gstore_rfc3339_ms(WALL, ts);
	assert_string_equal(ts, "2026-11-28T09:30:00.123Z");
	gstore_rfc3339_ms(951782400007ull, ts); /* a leap day */
	assert_string_equal(ts, "2000-02-29T00:00:00.007Z");
	gstore_rfc3339_ms(UINT64_MAX, ts); /* beyond year 9999: the epoch, never 25+ bytes */
	assert_int_equal(strlen(ts), 24);
}

static void test_since_wall(void **state)
{
	(void)state;
	assert_int_equal(gstore_since_wall(WALL, 50000, 40000), WALL - 10000);
	assert_int_equal(gstore_since_wall(WALL, 50000, 50000), WALL);
	assert_int_equal(gstore_since_wall(WALL, 50000, 60000), WALL); /* not in the future */
	assert_int_equal(gstore_since_wall(5, 50000, 0), 0);           /* not before the epoch */
}

static void test_same_ignores_since(void **state)
{
	(void)state;
	char a[GSTORE_JSON_MAX], b[GSTORE_JSON_MAX], body[GSTORE_JSON_MAX];
	struct gossip_member m = member4("n1", "role=worker\n");
	size_t na = gstore_json_member(&m, WALL, a, sizeof a);
	size_t nb = gstore_json_member(&m, WALL + 86400000, b, sizeof b);
	size_t nbody = gstore_json_body(&m, body, sizeof body);
	assert_true(nbody > 0 && nbody < na);
	assert_true(gstore_json_same(a, na, body, nbody));
	assert_true(gstore_json_same(b, nb, body, nbody));
	assert_memory_equal(a, body, nbody);
	/* finish() completes a body into the full value */
	char c[GSTORE_JSON_MAX];
	memcpy(c, body, nbody);
	assert_int_equal(gstore_json_finish(c, sizeof c, nbody, WALL), na);
	assert_memory_equal(a, c, na);

	/* a change of state, incarnation, address or tags is not the same */
	struct gossip_member x = m;
	x.state = GOSSIP_SUSPECT;
	size_t nx = gstore_json_body(&x, body, sizeof body);
	assert_false(gstore_json_same(a, na, body, nx));
	x = m;
	x.incarnation = 4;
	nx = gstore_json_body(&x, body, sizeof body);
	assert_false(gstore_json_same(a, na, body, nx));
	x = m;
	x.addr.port = 7947;
	nx = gstore_json_body(&x, body, sizeof body);
	assert_false(gstore_json_same(a, na, body, nx));
	x = m;
	x.meta = (const uint8_t *)"role=worker\nzone=b\n";
	x.meta_len = 19;
	nx = gstore_json_body(&x, body, sizeof body);
	assert_false(gstore_json_same(a, na, body, nx));
	/* a tag value that extends another is not mistaken for it */
	x = m;
	x.meta = (const uint8_t *)"role=worker2\n";
	x.meta_len = 13;
	nx = gstore_json_body(&x, body, sizeof body);
	assert_false(gstore_json_same(a, na, body, nx));

	/* stored values not in the exact shape are not the same (they get rewritten) */
	nbody = gstore_json_body(&m, body, sizeof body);
	assert_false(gstore_json_same(a, na - 1, body, nbody)); /* no closing brace */
	assert_false(gstore_json_same(a, nbody, body, nbody));  /* no since */
	assert_false(gstore_json_same("", 0, body, nbody));
	char d[GSTORE_JSON_MAX + 16];
	memcpy(d, a, na);
	memcpy(d + na, " ", 1); /* trailing bytes */
	assert_false(gstore_json_same(d, na + 1, body, nbody));
	memcpy(d, body, nbody);
	static const char tail[] = ",\"since\":\"x\",\"y\":\"z\"}";
	memcpy(d + nbody, tail, sizeof tail - 1);
	assert_false(gstore_json_same(d, nbody + sizeof tail - 1, body, nbody));
	static const char extra[] = ",\"since\":\"\",\"more\":1}";
	memcpy(d + nbody, extra, sizeof extra - 1);
	assert_false(gstore_json_same(d, nbody + sizeof extra - 1, body, nbody));
}

static void test_order(void **state)
{
	(void)state;
	char v[GSTORE_JSON_MAX];
	uint32_t inc = 0, st = 0;
	/* a name that holds the field names does not confuse the reader */
	struct gossip_member m = member4("x\",\"state\":\"left\",\"incarnation\":9,", "s=dead\n");
	m.state = GOSSIP_SUSPECT;
	m.incarnation = 7;
	size_t n = gstore_json_member(&m, WALL, v, sizeof v);
	assert_true(gstore_json_order(v, n, &inc, &st));
	assert_int_equal(inc, 7);
	assert_int_equal(st, GOSSIP_SUSPECT);
	m.state = GOSSIP_LEFT;
	m.incarnation = UINT32_MAX;
	n = gstore_json_member(&m, WALL, v, sizeof v);
	assert_true(gstore_json_order(v, n, &inc, &st));
	assert_int_equal(inc, UINT32_MAX);
	assert_int_equal(st, GOSSIP_LEFT);
	/* not our shape */
	assert_false(gstore_json_order("", 0, &inc, &st));
	assert_false(gstore_json_order("{\"state\":\"alive\"}", 17, &inc, &st));
	static const char big[] = "{\"name\":\"a\",\"state\":\"dead\",\"incarnation\":4294967296,}";
	assert_false(gstore_json_order(big, sizeof big - 1, &inc, &st));
	static const char odd[] = "{\"name\":\"a\",\"state\":\"deadish\",\"incarnation\":1,}";
	assert_false(gstore_json_order(odd, sizeof odd - 1, &inc, &st));
	static const char cut[] = "{\"name\":\"a\",\"state\":\"dead\",\"incarnation\":12";
	assert_false(gstore_json_order(cut, sizeof cut - 1, &inc, &st));

	/* newer: a higher incarnation, or the same with a state that overrides */
	m = member4("n", "");
	m.incarnation = 3;
	m.state = GOSSIP_DEAD;
	n = gstore_json_member(&m, WALL, v, sizeof v);
	struct gossip_member view = m;
	view.state = GOSSIP_SUSPECT;
	assert_true(gstore_json_newer(v, n, &view));
	view.state = GOSSIP_ALIVE;
	assert_true(gstore_json_newer(v, n, &view));
	view.state = GOSSIP_DEAD;
	assert_false(gstore_json_newer(v, n, &view)); /* the same */
	view.state = GOSSIP_LEFT;
	assert_false(gstore_json_newer(v, n, &view));
	view.state = GOSSIP_ALIVE;
	view.incarnation = 4; /* came back */
	assert_false(gstore_json_newer(v, n, &view));
	view.incarnation = 2;
	view.state = GOSSIP_LEFT;
	assert_true(gstore_json_newer(v, n, &view));
	assert_false(gstore_json_newer("garbage", 7, &view));
}

/* The worst case of each field fits in GSTORE_JSON_MAX. */
static void test_bound(void **state)
{
	(void)state;
	static char name[GOSSIP_MAX_NAME + 1];
	static uint8_t meta[GOSSIP_MAX_META];
	static char out[GSTORE_JSON_MAX];
	memset(name, 0x01, GOSSIP_MAX_NAME);
	memset(meta, 'a', sizeof meta);
	for (size_t i = 0; i + 3 <= GOSSIP_MAX_META; i += 3) { /* "\xff=\n": 3 bytes, 15 of JSON */
		meta[i] = 0xff;
		meta[i + 1] = '=';
		meta[i + 2] = '\n';
	}
	struct gossip_member m = member4(name, "");
	m.meta = meta;
	m.meta_len = GOSSIP_MAX_META;
	m.state = GOSSIP_SUSPECT;
	m.incarnation = UINT32_MAX;
	memset(&m.addr, 0, sizeof m.addr);
	m.addr.family = 6;
	memset(m.addr.ip, 0xff, 16);
	m.addr.port = 65535;
	size_t n = gstore_json_member(&m, UINT64_MAX / 2, out, sizeof out);
	assert_true(n > 0 && n <= sizeof out);
	memset(meta, 0x01, sizeof meta); /* one long tag of control bytes */
	meta[1] = '=';
	meta[sizeof meta - 1] = '\n';
	n = gstore_json_member(&m, WALL, out, sizeof out);
	assert_true(n > 0 && n <= sizeof out);
	/* too small a buffer: 0, never an overrun */
	assert_int_equal(gstore_json_member(&m, WALL, out, 100), 0);
	assert_int_equal(gstore_json_finish(out, 10, 9, WALL), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_member_json),
		cmocka_unit_test(test_addresses),
		cmocka_unit_test(test_tags),
		cmocka_unit_test(test_escaping),
		cmocka_unit_test(test_rfc3339),
		cmocka_unit_test(test_since_wall),
		cmocka_unit_test(test_same_ignores_since),
		cmocka_unit_test(test_order),
		cmocka_unit_test(test_bound),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

/* gossip_store_json.c: the JSON value of a member under /cairn/members/ (gossip_store_json.h). */
#include "gossip_store_json.h"

#include <assert.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "srv_gossip.h"

_Static_assert(GSTORE_JSON_MAX >= 2 + 6 * GOSSIP_MAX_NAME + 2 + 6 * GOSSIP_MAX_META + 200,
	       "the bound holds the worst escaping of a name and of the tags");

size_t gstore_addr_format(const struct gossip_addr *a, char *buf, size_t cap)
{
	assert(cap >= 64);
	if (a->family != 4 && a->family != 6)
		return 0;
	return strlen(srv_gossip_addr_format(a, buf, cap));
}

void gstore_rfc3339_ms(uint64_t wall_ms, char buf[25])
{
	time_t secs = (time_t)(wall_ms / 1000u);
	struct tm tm;
	if (gmtime_r(&secs, &tm) == NULL || tm.tm_year + 1900 > 9999) {
		memcpy(buf, "1970-01-01T00:00:00.000Z", 25);
		return;
	}
	int n = snprintf(buf, 25, "%04d-%02d-%02dT%02d:%02d:%02d.%03uZ", tm.tm_year + 1900,
			 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
			 (unsigned)(wall_ms % 1000u));
	assert(n == 24);
	(void)n;
}

/* Length of the valid UTF-8 sequence at p (at most n bytes), 0 if none starts there
 * (RFC 3629: no overlong forms, no surrogates, nothing above U+10FFFF). */
static size_t utf8_len(const uint8_t *p, size_t n)
{
	uint8_t c = p[0];
	size_t len;
	uint8_t lo = 0x80, hi = 0xbf;
	if (c >= 0xc2 && c <= 0xdf)
		len = 2;
	else if (c >= 0xe0 && c <= 0xef) {
		len = 3;
		if (c == 0xe0)
			lo = 0xa0;
		else if (c == 0xed)
			hi = 0x9f;
	} else if (c >= 0xf0 && c <= 0xf4) {
		len = 4;
		if (c == 0xf0)
			lo = 0x90;
		else if (c == 0xf4)
			hi = 0x8f;
	} else
		return 0;
	if (n < len || p[1] < lo || p[1] > hi)
		return 0;
	for (size_t i = 2; i < len; i++)
		if (p[i] < 0x80 || p[i] > 0xbf)
			return 0;
	return len;
}

/* JSON's two-character escapes (RFC 8259 §7), 0 for a byte without one. */
static char short_escape(uint8_t c)
{
	switch (c) {
	case '"':
		return '"';
	case '\\':
		return '\\';
	case '\n':
		return 'n';
	case '\r':
		return 'r';
	case '\t':
		return 't';
	case '\b':
		return 'b';
	case '\f':
		return 'f';
	default:
		return 0;
	}
}

bool gstore_json_string(char *out, size_t cap, size_t *len, const void *s, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	const uint8_t *p = s;
	size_t o = *len;
	if (o >= cap)
		return false;
	out[o++] = '"';
	for (size_t i = 0; i < n;) {
		uint8_t c = p[i];
		char esc = short_escape(c);
		if (esc != 0) {
			if (cap - o < 2)
				return false;
			out[o++] = '\\';
			out[o++] = esc;
			i++;
			continue;
		}
		size_t u = c < 0x20 ? 0 : c < 0x80 ? 1 : utf8_len(p + i, n - i);
		if (u == 0) {
			/* a control byte, or a byte outside valid UTF-8: U+00XX */
			if (cap - o < 6)
				return false;
			memcpy(out + o, "\\u00", 4);
			out[o + 4] = hex[c >> 4];
			out[o + 5] = hex[c & 15];
			o += 6;
			i++;
			continue;
		}
		if (cap - o < u)
			return false;
		memcpy(out + o, p + i, u);
		o += u;
		i += u;
	}
	if (cap - o < 1)
		return false;
	out[o++] = '"';
	*len = o;
	return true;
}

static bool put_lit(char *out, size_t cap, size_t *len, const char *lit)
{
	size_t n = strlen(lit);
	if (cap - *len < n)
		return false;
	memcpy(out + *len, lit, n);
	*len += n;
	return true;
}

bool gstore_json_tags(char *out, size_t cap, size_t *len, const uint8_t *meta, size_t n)
{
	size_t o = *len;
	bool first = true;
	if (o > cap || !put_lit(out, cap, &o, "{"))
		return false;
	for (size_t i = 0; i < n;) {
		const uint8_t *line = meta + i;
		const uint8_t *nl = memchr(line, '\n', n - i);
		if (nl == NULL)
			break; /* bytes after the last '\n': not a tag */
		size_t ll = (size_t)(nl - line);
		i += ll + 1;
		const uint8_t *eq = memchr(line, '=', ll);
		if (eq == NULL)
			continue; /* not a tag (an empty line too) */
		size_t kl = (size_t)(eq - line);
		const uint8_t *v = eq + 1;
		size_t vl = ll - kl - 1;
		if ((!first && !put_lit(out, cap, &o, ",")) ||
		    !gstore_json_string(out, cap, &o, line, kl) || !put_lit(out, cap, &o, ":") ||
		    !gstore_json_string(out, cap, &o, v, vl))
			return false;
		first = false;
	}
	if (!put_lit(out, cap, &o, "}"))
		return false;
	*len = o;
	return true;
}

size_t gstore_json_body(const struct gossip_member *m, char *out, size_t cap)
{
	char addr[64], num[16];
	size_t o = 0;
	size_t alen = gstore_addr_format(&m->addr, addr, sizeof addr);
	snprintf(num, sizeof num, "%u", (unsigned)m->incarnation);
	if (!put_lit(out, cap, &o, "{\"name\":") ||
	    !gstore_json_string(out, cap, &o, m->name, strlen(m->name)) ||
	    !put_lit(out, cap, &o, ",\"address\":") ||
	    !gstore_json_string(out, cap, &o, addr, alen) ||
	    !put_lit(out, cap, &o, ",\"state\":\"") ||
	    !put_lit(out, cap, &o, gossip_state_name(m->state)) ||
	    !put_lit(out, cap, &o, "\",\"incarnation\":") || !put_lit(out, cap, &o, num) ||
	    !put_lit(out, cap, &o, ",\"tags\":") ||
	    !gstore_json_tags(out, cap, &o, m->meta, m->meta_len))
		return 0;
	return o;
}

size_t gstore_json_finish(char *out, size_t cap, size_t body_len, uint64_t since_wall_ms)
{
	char ts[25];
	size_t o = body_len;
	gstore_rfc3339_ms(since_wall_ms, ts);
	if (o > cap || !put_lit(out, cap, &o, ",\"since\":\"") || !put_lit(out, cap, &o, ts) ||
	    !put_lit(out, cap, &o, "\"}"))
		return 0;
	return o;
}

size_t gstore_json_member(const struct gossip_member *m, uint64_t since_wall_ms, char *out,
			  size_t cap)
{
	size_t body = gstore_json_body(m, out, cap);
	return body == 0 ? 0 : gstore_json_finish(out, cap, body, since_wall_ms);
}

bool gstore_json_same(const void *stored, size_t stored_len, const char *body, size_t body_len)
{
	static const char since[] = ",\"since\":\"";
	const char *s = stored;
	size_t sl = sizeof since - 1;
	if (stored_len < body_len + sl + 2 || memcmp(s, body, body_len) != 0 ||
	    memcmp(s + body_len, since, sl) != 0 || s[stored_len - 2] != '"' ||
	    s[stored_len - 1] != '}')
		return false;
	for (size_t i = body_len + sl; i < stored_len - 2; i++)
		if (s[i] == '"' || s[i] == '\\')
			return false;
	return true;
}

uint64_t gstore_since_wall(uint64_t wall_now_ms, uint64_t mono_now_ms, uint64_t since_ms)
{
	if (since_ms >= mono_now_ms)
		return wall_now_ms;
	uint64_t ago = mono_now_ms - since_ms;
	return ago >= wall_now_ms ? 0 : wall_now_ms - ago;
}

/* The text after the first occurrence of field (which starts with ',' and a quote: inside an
 * escaped string every quote follows a backslash, so it cannot match there), or NULL. */
static const char *field_at(const char *v, size_t len, const char *field, const char **end)
{
	size_t fl = strlen(field);
	*end = v + len;
	for (size_t i = 0; i + fl <= len; i++)
		if (memcmp(v + i, field, fl) == 0)
			return v + i + fl;
	return NULL;
}

bool gstore_json_order(const void *value, size_t len, uint32_t *incarnation, uint32_t *state)
{
	static const char *const names[] = { "alive", "suspect", "dead", "left" };
	const char *v = value, *end;
	const char *p = field_at(v, len, ",\"state\":\"", &end);
	if (p == NULL)
		return false;
	uint32_t st = 0;
	for (uint32_t i = 0; i < 4 && st == 0; i++) {
		size_t n = strlen(names[i]);
		if ((size_t)(end - p) > n && memcmp(p, names[i], n) == 0 && p[n] == '"')
			st = i + 1;
	}
	p = field_at(v, len, ",\"incarnation\":", &end);
	if (st == 0 || p == NULL || p == end || *p < '0' || *p > '9')
		return false;
	uint64_t inc = 0;
	for (; p < end && *p >= '0' && *p <= '9'; p++) {
		inc = inc * 10 + (uint64_t)(*p - '0');
		if (inc > UINT32_MAX)
			return false;
	}
	if (p == end || *p != ',')
		return false;
	*incarnation = (uint32_t)inc;
	*state = st;
	return true;
}

bool gstore_json_newer(const void *stored, size_t stored_len, const struct gossip_member *m)
{
	uint32_t inc, st;
	if (!gstore_json_order(stored, stored_len, &inc, &st))
		return false;
	return inc > m->incarnation || (inc == m->incarnation && st > m->state);
}

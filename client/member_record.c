/* member_record.c: cairn_node_parse(), the strict reader of the JSON record the Raft leader
 * writes under /cairn/members/<name>, and cairn_node_state_name().
 *
 * The record (server/gossip_store_json.h writes it):
 *
 *   {"name":"node-7","address":"127.0.0.1:7946","state":"alive","incarnation":3,
 *    "tags":{"role":"worker"},"since":"2026-11-28T09:30:00.123Z"}
 *
 * What is accepted: one JSON object (RFC 8259) holding each of the six fields exactly once, in
 * any order, with insignificant whitespace anywhere JSON allows it; fields of other names are
 * skipped (a later server may add some) after their value has been checked as JSON, nested at
 * most REC_MAX_DEPTH deep. name is a non-empty string, address a string (empty when the server
 * knew no address), state one of alive, suspect, dead, left, incarnation an integer in
 * [0, 2^64), tags an object of strings (a name may repeat: tags come from the network in the
 * order the node gives them), since an RFC 3339 date-time. Strings are decoded into UTF-8:
 * escapes, \uXXXX with surrogate pairs; the server writes a byte that is not UTF-8 as the code
 * point of the same value (\u00XX), which decodes to that code point's UTF-8, so every string
 * handed out is valid UTF-8 and NUL-terminated. Rejected with CAIRN_EINVAL: anything else, a
 * raw byte sequence that is not UTF-8 (RFC 3629), a raw control byte, a lone surrogate, \u0000
 * (a C string cannot carry it), bytes after the object, more tags than max_tags, strings that
 * do not fit in `cap` bytes of scratch. The input holds at least as many bytes as the decoded
 * strings and their NULs (each JSON string has two quotes), so cap = len + 1 always fits. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "cairn.h"

/* Nesting allowed inside a field this reader does not know. */
#define REC_MAX_DEPTH 16

struct rec {
	const uint8_t *p, *end;
	char *out; /* scratch */
	size_t cap, used;
};

const char *cairn_node_state_name(int state)
{
	switch (state) {
	case CAIRN_NODE_ALIVE:
		return "alive";
	case CAIRN_NODE_SUSPECT:
		return "suspect";
	case CAIRN_NODE_DEAD:
		return "dead";
	case CAIRN_NODE_LEFT:
		return "left";
	default:
		return "unknown";
	}
}

static void skip_ws(struct rec *r)
{
	while (r->p < r->end && (*r->p == ' ' || *r->p == '\t' || *r->p == '\n' || *r->p == '\r'))
		r->p++;
}

/* Consumes c (after whitespace): whether it was there. */
static bool eat(struct rec *r, uint8_t c)
{
	skip_ws(r);
	if (r->p < r->end && *r->p == c) {
		r->p++;
		return true;
	}
	return false;
}

/* Length of the valid UTF-8 sequence at p (at most n bytes), 0 if none starts there
 * (RFC 3629 §4: no overlong forms, no surrogates, nothing above U+10FFFF). */
static size_t utf8_valid(const uint8_t *p, size_t n)
{
	uint8_t c = p[0], lo = 0x80, hi = 0xbf;
	size_t len;
	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf) {
		len = 2;
	} else if (c >= 0xe0 && c <= 0xef) {
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
	} else {
		return 0;
	}
	if (n < len || p[1] < lo || p[1] > hi)
		return 0;
	for (size_t i = 2; i < len; i++)
		if (p[i] < 0x80 || p[i] > 0xbf)
			return 0;
	return len;
}

static bool put_bytes(struct rec *r, bool store, const void *b, size_t n)
{
	if (!store)
		return true;
	if (r->cap - r->used < n)
		return false;
	memcpy(r->out + r->used, b, n);
	r->used += n;
	return true;
}

/* UTF-8 of code point cp (not a surrogate, at most U+10FFFF) into b: its length. */
static size_t utf8_encode(uint32_t cp, uint8_t b[4])
{
	if (cp < 0x80) {
		b[0] = (uint8_t)cp;
		return 1;
	}
	if (cp < 0x800) {
		b[0] = (uint8_t)(0xc0 | (cp >> 6));
		b[1] = (uint8_t)(0x80 | (cp & 0x3f));
		return 2;
	}
	if (cp < 0x10000) {
		b[0] = (uint8_t)(0xe0 | (cp >> 12));
		b[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3f));
		b[2] = (uint8_t)(0x80 | (cp & 0x3f));
		return 3;
	}
	b[0] = (uint8_t)(0xf0 | (cp >> 18));
	b[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3f));
	b[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3f));
	b[3] = (uint8_t)(0x80 | (cp & 0x3f));
	return 4;
}

/* The four hex digits of a \u escape (r->p at the first one). */
static bool hex4(struct rec *r, uint32_t *v)
{
	uint32_t x = 0;
	if (r->end - r->p < 4)
		return false;
	for (int i = 0; i < 4; i++) {
		uint8_t c = *r->p++;
		uint32_t d;
		if (c >= '0' && c <= '9')
			d = (uint32_t)(c - '0');
		else if (c >= 'a' && c <= 'f')
			d = (uint32_t)(c - 'a' + 10);
		else if (c >= 'A' && c <= 'F')
			d = (uint32_t)(c - 'A' + 10);
		else
			return false;
		x = x << 4 | d;
	}
	*v = x;
	return true;
}

/* One escape after its backslash (RFC 8259 §7), decoded into the scratch when store. */
static bool escape(struct rec *r, bool store)
{
	uint8_t b[4];
	uint32_t cp, lo;
	if (r->p == r->end)
		return false;
	uint8_t c = *r->p++;
	switch (c) {
	case '"':
	case '\\':
	case '/':
		return put_bytes(r, store, &c, 1);
	case 'b':
		return put_bytes(r, store, "\b", 1);
	case 'f':
		return put_bytes(r, store, "\f", 1);
	case 'n':
		return put_bytes(r, store, "\n", 1);
	case 'r':
		return put_bytes(r, store, "\r", 1);
	case 't':
		return put_bytes(r, store, "\t", 1);
	case 'u':
		break;
	default:
		return false;
	}
	if (!hex4(r, &cp) || cp == 0 || (cp >= 0xdc00 && cp <= 0xdfff))
		return false;
	if (cp >= 0xd800 && cp <= 0xdbff) {
		/* a high surrogate: only with the low one right after it (UTF-16 pair) */
		if (r->end - r->p < 2 || r->p[0] != '\\' || r->p[1] != 'u')
			return false;
		r->p += 2;
		if (!hex4(r, &lo) || lo < 0xdc00 || lo > 0xdfff)
			return false;
		cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
	}
	return put_bytes(r, store, b, utf8_encode(cp, b));
}

/* A JSON string (after whitespace). With store, decoded and NUL-terminated into the scratch,
 * *s pointing at it. */
static bool string(struct rec *r, bool store, const char **s)
{
	if (!eat(r, '"'))
		return false;
	size_t start = r->used;
	for (;;) {
		if (r->p == r->end)
			return false;
		uint8_t c = *r->p;
		if (c == '"') {
			r->p++;
			break;
		}
		if (c == '\\') {
			r->p++;
			if (!escape(r, store))
				return false;
			continue;
		}
		if (c < 0x20)
			return false;
		size_t n = utf8_valid(r->p, (size_t)(r->end - r->p));
		if (n == 0 || !put_bytes(r, store, r->p, n))
			return false;
		r->p += n;
	}
	if (store) {
		if (!put_bytes(r, true, "", 1))
			return false;
		*s = r->out + start;
	}
	return true;
}

static bool digits(struct rec *r)
{
	const uint8_t *s = r->p;
	while (r->p < r->end && *r->p >= '0' && *r->p <= '9')
		r->p++;
	return r->p > s;
}

/* A JSON number, checked and skipped: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)? */
static bool number(struct rec *r)
{
	skip_ws(r);
	if (r->p < r->end && *r->p == '-')
		r->p++;
	if (r->p == r->end)
		return false;
	if (*r->p == '0')
		r->p++;
	else if (!digits(r))
		return false;
	if (r->p < r->end && *r->p == '.') {
		r->p++;
		if (!digits(r))
			return false;
	}
	if (r->p < r->end && (*r->p == 'e' || *r->p == 'E')) {
		r->p++;
		if (r->p < r->end && (*r->p == '+' || *r->p == '-'))
			r->p++;
		if (!digits(r))
			return false;
	}
	return true;
}

static bool literal(struct rec *r, const char *lit)
{
	size_t n = strlen(lit);
	if ((size_t)(r->end - r->p) < n || memcmp(r->p, lit, n) != 0)
		return false;
	r->p += n;
	return true;
}

/* Any JSON value, checked and skipped, nested at most `depth` more levels. */
static bool skip_value(struct rec *r, int depth)
{
	skip_ws(r);
	if (r->p == r->end)
		return false;
	switch (*r->p) {
	case '"':
		return string(r, false, NULL);
	case 't':
		return literal(r, "true");
	case 'f':
		return literal(r, "false");
	case 'n':
		return literal(r, "null");
	case '{':
	case '[': {
		uint8_t close = *r->p == '{' ? '}' : ']';
		bool object = close == '}';
		if (depth == 0)
			return false;
		r->p++;
		if (eat(r, close))
			return true;
		do {
			if (object && (!string(r, false, NULL) || !eat(r, ':')))
				return false;
			if (!skip_value(r, depth - 1))
				return false;
		} while (eat(r, ','));
		return eat(r, close);
	}
	default:
		return number(r);
	}
}

/* incarnation: a non-negative integer without fraction or exponent, below 2^64. */
static bool uint64_value(struct rec *r, uint64_t *v)
{
	skip_ws(r);
	const uint8_t *s = r->p;
	if (!digits(r) || (r->p - s > 1 && *s == '0'))
		return false;
	if (r->p < r->end && (*r->p == '.' || *r->p == 'e' || *r->p == 'E'))
		return false;
	uint64_t x = 0;
	for (; s < r->p; s++) {
		uint64_t d = (uint64_t)(*s - '0');
		if (x > (UINT64_MAX - d) / 10)
			return false;
		x = x * 10 + d;
	}
	*v = x;
	return true;
}

static bool two_digits(const char *s, int lo, int hi)
{
	if (s[0] < '0' || s[0] > '9' || s[1] < '0' || s[1] > '9')
		return false;
	int v = (s[0] - '0') * 10 + (s[1] - '0');
	return v >= lo && v <= hi;
}

/* RFC 3339 §5.6 date-time: YYYY-MM-DDTHH:MM:SS[.frac](Z|+HH:MM|-HH:MM), T and Z in either
 * case. Field ranges are checked, not the days of each month. */
static bool rfc3339(const char *s)
{
	size_t n = strlen(s);
	if (n < 20)
		return false;
	for (int i = 0; i < 4; i++)
		if (s[i] < '0' || s[i] > '9')
			return false;
	if (s[4] != '-' || !two_digits(s + 5, 1, 12) || s[7] != '-' || !two_digits(s + 8, 1, 31) ||
	    (s[10] != 'T' && s[10] != 't') || !two_digits(s + 11, 0, 23) || s[13] != ':' ||
	    !two_digits(s + 14, 0, 59) || s[16] != ':' || !two_digits(s + 17, 0, 60))
		return false;
	size_t i = 19;
	if (s[i] == '.') {
		size_t f = ++i;
		while (s[i] >= '0' && s[i] <= '9')
			i++;
		if (i == f)
			return false;
	}
	if (s[i] == 'Z' || s[i] == 'z')
		return i + 1 == n;
	if (s[i] != '+' && s[i] != '-')
		return false;
	return n - i == 6 && two_digits(s + i + 1, 0, 23) && s[i + 3] == ':' &&
	       two_digits(s + i + 4, 0, 59);
}

static bool tags_value(struct rec *r, struct cairn_tag *tags, size_t max_tags, size_t *n)
{
	size_t k = 0;
	if (!eat(r, '{'))
		return false;
	if (!eat(r, '}')) {
		do {
			if (k == max_tags)
				return false;
			if (!string(r, true, &tags[k].name) || !eat(r, ':') ||
			    !string(r, true, &tags[k].value))
				return false;
			k++;
		} while (eat(r, ','));
		if (!eat(r, '}'))
			return false;
	}
	*n = k;
	return true;
}

enum { F_NAME = 1, F_ADDRESS = 2, F_STATE = 4, F_INCARNATION = 8, F_TAGS = 16, F_SINCE = 32 };

/* The field a key names: F_*, or 0 for one this reader does not know. The key is compared
 * after decoding, so "n\u0061me" is name, as any JSON reader has it. */
static unsigned field_of(const char *key)
{
	static const struct {
		const char *name;
		unsigned bit;
	} fields[] = { { "name", F_NAME },   { "address", F_ADDRESS },
		       { "state", F_STATE }, { "incarnation", F_INCARNATION },
		       { "tags", F_TAGS },   { "since", F_SINCE } };
	for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++)
		if (strcmp(key, fields[i].name) == 0)
			return fields[i].bit;
	return 0;
}

static bool record(struct rec *r, struct cairn_node *nd, struct cairn_tag *tags, size_t max_tags)
{
	unsigned seen = 0;
	const char *state = NULL;
	if (!eat(r, '{'))
		return false;
	if (eat(r, '}'))
		return false; /* {} has none of the fields */
	do {
		/* the key goes into the scratch, then is dropped */
		size_t mark = r->used;
		const char *key;
		if (!string(r, true, &key) || !eat(r, ':'))
			return false;
		unsigned f = field_of(key);
		r->used = mark;
		if (f & seen)
			return false; /* a field twice: which one would be meant? */
		seen |= f;
		bool ok;
		switch (f) {
		case F_NAME:
			ok = string(r, true, &nd->name) && nd->name[0] != '\0';
			break;
		case F_ADDRESS:
			ok = string(r, true, &nd->address);
			break;
		case F_STATE:
			ok = string(r, true, &state);
			break;
		case F_INCARNATION:
			ok = uint64_value(r, &nd->incarnation);
			break;
		case F_TAGS:
			ok = tags_value(r, tags, max_tags, &nd->n_tags);
			break;
		case F_SINCE:
			ok = string(r, true, &nd->since) && rfc3339(nd->since);
			break;
		default:
			ok = skip_value(r, REC_MAX_DEPTH);
			break;
		}
		if (!ok)
			return false;
	} while (eat(r, ','));
	if (!eat(r, '}') ||
	    seen != (F_NAME | F_ADDRESS | F_STATE | F_INCARNATION | F_TAGS | F_SINCE))
		return false;
	skip_ws(r);
	if (r->p != r->end)
		return false;
	for (int s = CAIRN_NODE_ALIVE; s <= CAIRN_NODE_LEFT; s++)
		if (strcmp(state, cairn_node_state_name(s)) == 0) {
			nd->state = s;
			return true;
		}
	return false;
}

int cairn_node_parse(const uint8_t *json, size_t len, struct cairn_node *node,
		     struct cairn_tag *tags, size_t max_tags, char *scratch, size_t cap)
{
	if (json == NULL || node == NULL || scratch == NULL || (tags == NULL && max_tags > 0))
		return CAIRN_EINVAL;
	struct rec r = { .p = json, .end = json + len, .out = scratch, .cap = cap, .used = 0 };
	struct cairn_node nd;
	memset(&nd, 0, sizeof nd);
	if (!record(&r, &nd, tags, max_tags))
		return CAIRN_EINVAL;
	nd.tags = nd.n_tags > 0 ? tags : NULL;
	*node = nd;
	return 0;
}

/* log.c: structured log lines (log.h), built in a bounded buffer on the caller's stack and
 * written with one write(2) each. */
#include "log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* Room kept at the end of a line for what a cut line ends with: `..."` (4 bytes),
 * " truncated=true" (15) and the newline (1). Field bytes stop at BODY_MAX. */
#define TAIL_RESERVE 24u
#define BODY_MAX (SRV_LOG_LINE_MAX - TAIL_RESERVE)
#define TIME_LEN 24u /* "2026-11-28T09:30:00.123Z" */

_Static_assert(SRV_LOG_LINE_MAX >= 512, "a line holds at least the prefix and some fields");
_Static_assert(SRV_LOG_LINE_MAX <= 4096, "a line fits PIPE_BUF, so one write(2) is atomic");

static atomic_int g_level = SRV_LOG_INFO;
static atomic_int g_fd = 2;
static char g_member[SRV_LOG_MEMBER_MAX];
static void (*g_clock)(struct timespec *ts);

/* PANIC and FATAL (etcd's --log-level) mean ERROR; anything out of range too. */
static enum srv_log_level clamp_level(enum srv_log_level level)
{
	if ((int)level < (int)SRV_LOG_DEBUG) {
		return SRV_LOG_DEBUG;
	}
	if ((int)level > (int)SRV_LOG_ERROR) {
		return SRV_LOG_ERROR;
	}
	return level;
}

void srv_log_set_level(enum srv_log_level level)
{
	atomic_store_explicit(&g_level, (int)clamp_level(level), memory_order_relaxed);
}

enum srv_log_level srv_log_get_level(void)
{
	return (enum srv_log_level)atomic_load_explicit(&g_level, memory_order_relaxed);
}

bool srv_log_enabled(enum srv_log_level level)
{
	return (int)clamp_level(level) >= atomic_load_explicit(&g_level, memory_order_relaxed);
}

void srv_log_set_fd(int fd)
{
	atomic_store_explicit(&g_fd, fd, memory_order_relaxed);
}

void srv_log_set_member(const char *name)
{
	if (name == NULL) {
		name = "";
	}
	snprintf(g_member, sizeof g_member, "%s", name);
}

void srv_log_set_clock(void (*now)(struct timespec *ts))
{
	g_clock = now;
}

static bool room(const struct srv_log_line *l, size_t n)
{
	return l->len + n <= BODY_MAX;
}

/* Appends without a bound check: callers checked room(), or write within TAIL_RESERVE. */
static void put(struct srv_log_line *l, const char *s, size_t n)
{
	memcpy(l->buf + l->len, s, n);
	l->len += n;
}

static bool key_byte(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '_' || c == '.' || c == '-';
}

/* Writes " key=" (key sanitised); false, with the line cut before the field, if it does not
 * fit. */
static bool put_key(struct srv_log_line *l, const char *key)
{
	size_t n = key != NULL ? strlen(key) : 0;
	if (!room(l, 1 + (n > 0 ? n : 1) + 1)) {
		l->truncated = true;
		return false;
	}
	put(l, " ", 1);
	if (n == 0) {
		put(l, "_", 1);
	}
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)key[i];
		l->buf[l->len++] = key_byte(c) ? (char)c : '_';
	}
	put(l, "=", 1);
	return true;
}

static bool bare_byte(unsigned char c)
{
	return c > 0x20 && c < 0x7f && c != '"' && c != '=' && c != '\\';
}

/* Length of the valid UTF-8 sequence at p (n bytes left), 0 if it is not one (RFC 3629:
 * no overlong forms, no surrogates, nothing above U+10FFFF). */
static size_t utf8_len(const unsigned char *p, size_t n)
{
	unsigned char c = p[0];
	size_t len;
	unsigned char lo = 0x80, hi = 0xbf; /* bounds of the second byte */
	if (c >= 0xc2 && c <= 0xdf) {
		len = 2;
	} else if (c >= 0xe0 && c <= 0xef) {
		len = 3;
		if (c == 0xe0) {
			lo = 0xa0;
		} else if (c == 0xed) {
			hi = 0x9f;
		}
	} else if (c >= 0xf0 && c <= 0xf4) {
		len = 4;
		if (c == 0xf0) {
			lo = 0x90;
		} else if (c == 0xf4) {
			hi = 0x8f;
		}
	} else {
		return 0;
	}
	if (n < len || p[1] < lo || p[1] > hi) {
		return 0;
	}
	for (size_t i = 2; i < len; i++) {
		if (p[i] < 0x80 || p[i] > 0xbf) {
			return 0;
		}
	}
	return len;
}

/* The quoted form of the character at p into out (at most 4 bytes); returns its length and
 * sets *used to the input bytes it covers. */
static size_t quote_unit(const unsigned char *p, size_t n, char out[4], size_t *used)
{
	static const char hex[] = "0123456789abcdef";
	unsigned char c = p[0];
	*used = 1;
	switch (c) {
	case '"':
		memcpy(out, "\\\"", 2);
		return 2;
	case '\\':
		memcpy(out, "\\\\", 2);
		return 2;
	case '\n':
		memcpy(out, "\\n", 2);
		return 2;
	case '\r':
		memcpy(out, "\\r", 2);
		return 2;
	case '\t':
		memcpy(out, "\\t", 2);
		return 2;
	default:
		break;
	}
	if (c >= 0x20 && c < 0x7f) {
		out[0] = (char)c;
		return 1;
	}
	if (c >= 0x80) {
		size_t len = utf8_len(p, n);
		if (len > 0) {
			memcpy(out, p, len);
			*used = len;
			return len;
		}
	}
	out[0] = '\\';
	out[1] = 'x';
	out[2] = hex[c >> 4];
	out[3] = hex[c & 0xf];
	return 4;
}

/* One field: key, then the value v[0..n) bare or quoted (see log.h). */
static void field(struct srv_log_line *l, const char *key, const unsigned char *v, size_t n)
{
	if (!l->on || l->truncated || !put_key(l, key)) {
		return;
	}
	bool bare = n > 0;
	for (size_t i = 0; i < n && bare; i++) {
		bare = bare_byte(v[i]);
	}
	if (bare) {
		for (size_t i = 0; i < n; i++) {
			if (!room(l, 1)) {
				put(l, "...", 3);
				l->truncated = true;
				return;
			}
			l->buf[l->len++] = (char)v[i];
		}
		return;
	}
	if (!room(l, 2)) {
		put(l, "\"...\"", 5);
		l->truncated = true;
		return;
	}
	put(l, "\"", 1);
	for (size_t i = 0; i < n;) {
		char unit[4];
		size_t used;
		size_t len = quote_unit(v + i, n - i, unit, &used);
		if (!room(l, len + 1)) { /* + 1: the closing quote */
			put(l, "...\"", 4);
			l->truncated = true;
			return;
		}
		put(l, unit, len);
		i += used;
	}
	put(l, "\"", 1);
}

static void now(struct timespec *ts)
{
	if (g_clock != NULL) {
		g_clock(ts);
	} else if (clock_gettime(CLOCK_REALTIME, ts) != 0) {
		ts->tv_sec = 0;
		ts->tv_nsec = 0;
	}
}

static const char *level_text(enum srv_log_level level)
{
	switch (clamp_level(level)) {
	case SRV_LOG_DEBUG:
		return "DEBUG";
	case SRV_LOG_INFO:
		return "INFO ";
	case SRV_LOG_WARN:
		return "WARN ";
	default:
		return "ERROR";
	}
}

void srv_log_begin(struct srv_log_line *l, enum srv_log_level level, const char *event)
{
	l->len = 0;
	l->truncated = false;
	l->on = srv_log_enabled(level);
	if (!l->on) {
		return;
	}

	struct timespec ts;
	now(&ts);
	time_t sec = ts.tv_sec;
	struct tm tm;
	char stamp[64];
	int sn;
	if (gmtime_r(&sec, &tm) != NULL) {
		sn = snprintf(stamp, sizeof stamp, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ",
			      tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
			      tm.tm_sec, (int)(ts.tv_nsec / 1000000));
	} else {
		sn = snprintf(stamp, sizeof stamp, "0000-00-00T00:00:00.000Z");
	}
	size_t slen = sn > 0 ? (size_t)sn : 0;
	if (slen > TIME_LEN) {
		slen = TIME_LEN; /* a year past 9999 */
	}
	put(l, stamp, slen);
	put(l, " ", 1);
	put(l, level_text(level), 5);

	if (g_member[0] != '\0') {
		field(l, "member", (const unsigned char *)g_member, strlen(g_member));
	}
	/* The event is a name, sanitised like a key: event=<name> is what operators grep for. */
	if (put_key(l, "event")) {
		size_t n = event != NULL ? strlen(event) : 0;
		if (n == 0) {
			put(l, "_", 1);
		}
		for (size_t i = 0; i < n; i++) {
			if (!room(l, 1)) {
				put(l, "...", 3);
				l->truncated = true;
				break;
			}
			unsigned char c = (unsigned char)event[i];
			l->buf[l->len++] = key_byte(c) ? (char)c : '_';
		}
	}
}

void srv_log_str(struct srv_log_line *l, const char *key, const char *value)
{
	if (value == NULL) {
		value = "(null)";
	}
	field(l, key, (const unsigned char *)value, strlen(value));
}

void srv_log_mem(struct srv_log_line *l, const char *key, const void *p, size_t n)
{
	field(l, key, p != NULL ? p : (const void *)"", p != NULL ? n : 0);
}

void srv_log_u64(struct srv_log_line *l, const char *key, uint64_t v)
{
	char buf[24];
	int n = snprintf(buf, sizeof buf, "%llu", (unsigned long long)v);
	field(l, key, (const unsigned char *)buf, (size_t)n);
}

void srv_log_i64(struct srv_log_line *l, const char *key, int64_t v)
{
	char buf[24];
	int n = snprintf(buf, sizeof buf, "%lld", (long long)v);
	field(l, key, (const unsigned char *)buf, (size_t)n);
}

void srv_log_hex(struct srv_log_line *l, const char *key, uint64_t v)
{
	char buf[24];
	int n = snprintf(buf, sizeof buf, "%016llx", (unsigned long long)v);
	field(l, key, (const unsigned char *)buf, (size_t)n);
}

void srv_log_bool(struct srv_log_line *l, const char *key, bool v)
{
	srv_log_str(l, key, v ? "true" : "false");
}

void srv_log_fmt(struct srv_log_line *l, const char *key, const char *fmt, ...)
{
	if (!l->on || l->truncated) {
		return;
	}
	char buf[SRV_LOG_LINE_MAX];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	size_t len = n > 0 ? (size_t)n : 0;
	if (len >= sizeof buf) {
		len = sizeof buf - 1; /* longer than any line: field() cuts it and marks the line */
	}
	field(l, key, (const unsigned char *)buf, len);
}

void srv_log_end(struct srv_log_line *l)
{
	if (!l->on) {
		return;
	}
	if (l->truncated) {
		put(l, " truncated=true", 15);
	}
	put(l, "\n", 1);

	/* errno is kept: a caller may log a failure and then look at errno. */
	int saved = errno;
	int fd = atomic_load_explicit(&g_fd, memory_order_relaxed);
	const char *p = l->buf;
	size_t left = l->len;
	while (left > 0) {
		ssize_t w = write(fd, p, left);
		if (w < 0 && errno == EINTR) {
			continue;
		}
		if (w <= 0) {
			break;
		}
		p += w;
		left -= (size_t)w;
	}
	errno = saved;
	l->on = false; /* a second end writes nothing */
}

void srv_log(enum srv_log_level level, const char *event, ...)
{
	if (!srv_log_enabled(level)) {
		return;
	}
	struct srv_log_line l;
	srv_log_begin(&l, level, event);
	va_list ap;
	va_start(ap, event);
	for (;;) {
		const char *key = va_arg(ap, const char *);
		if (key == NULL) {
			break;
		}
		const char *value = va_arg(ap, const char *);
		if (value == NULL) {
			srv_log_str(&l, key, "!MISSING");
			break;
		}
		srv_log_str(&l, key, value);
	}
	va_end(ap);
	srv_log_end(&l);
}

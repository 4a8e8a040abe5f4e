/* example.h: what the two libcairn examples share: timestamped log lines, the --endpoints list,
 * key names made printable for the log, and node names as both examples accept them. Small
 * static functions, so each example stays one program built from one .c file. */
#ifndef CAIRN_EXAMPLE_H
#define CAIRN_EXAMPLE_H

#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cairn.h"

/* The client endpoints of `make run` (scripts/run-cluster.sh). */
#define EX_DEFAULT_ENDPOINTS "127.0.0.1:2379,127.0.0.1:22379,127.0.0.1:32379"
#define EX_MAX_ENDPOINTS 16
#define EX_MAX_NAME 64

/* "2026-11-28T09:30:00.123Z": the wall clock, as the member records write it. */
static inline void ex_now_rfc3339(char buf[32])
{
	struct timespec ts;
	struct tm tm;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	size_t n = strftime(buf, 32, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(buf + n, 32 - n, ".%03dZ", (int)(ts.tv_nsec / 1000000));
}

/* One log line on stdout: time, who, message. stdout is line-buffered by ex_log_init(), so a
 * log file read while the program runs (as the integration test does) is up to date. */
static const char *ex_who = "example";

static inline void ex_log_init(const char *who)
{
	ex_who = who;
	setvbuf(stdout, NULL, _IOLBF, 0);
}

__attribute__((format(printf, 1, 2))) static inline void ex_log(const char *fmt, ...)
{
	char ts[32];
	va_list ap;
	ex_now_rfc3339(ts);
	printf("%s %s: ", ts, ex_who);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
}

/* A key (or part of one) for the log: printable ASCII as is, other bytes as \xHH, cut at
 * about 100 bytes. buf holds at least 512 bytes. */
static inline const char *ex_printable(const uint8_t *s, size_t n, char *buf)
{
	static const char hex[] = "0123456789abcdef";
	size_t o = 0;
	for (size_t i = 0; i < n && o < 400; i++) {
		uint8_t c = s[i];
		if (c >= 0x20 && c < 0x7f && c != '\\') {
			buf[o++] = (char)c;
		} else {
			buf[o++] = '\\';
			buf[o++] = 'x';
			buf[o++] = hex[c >> 4];
			buf[o++] = hex[c & 15];
		}
	}
	if (n > 0 && o >= 400) {
		memcpy(buf + o, "...", 3);
		o += 3;
	}
	buf[o] = '\0';
	return buf;
}

/* Node names become a part of keys (/nodes/<name>, /assign/<name>/<job>): letters, digits,
 * '.', '_' and '-', 1 to EX_MAX_NAME bytes, so they never hold a '/' and need no escaping. */
static inline bool ex_name_ok(const char *name)
{
	size_t n = strlen(name);
	if (n == 0 || n > EX_MAX_NAME)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = name[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '_' || c == '-'))
			return false;
	}
	return true;
}

/* Splits a comma-separated endpoint list into URLs ("host:port" gets http://). The strings
 * live in `store` (at least strlen(list) + 8 * EX_MAX_ENDPOINTS + 1 bytes). Returns how many,
 * 0 when the list is empty or too long. */
static inline size_t ex_endpoints(const char *list, char *store, const char **out)
{
	size_t n = 0, o = 0;
	const char *p = list;
	while (*p != '\0') {
		const char *comma = strchr(p, ',');
		size_t len = comma != NULL ? (size_t)(comma - p) : strlen(p);
		if (len > 0) {
			if (n == EX_MAX_ENDPOINTS)
				return 0;
			out[n++] = store + o;
			const char *scheme = strstr(p, "://");
			if (scheme == NULL || scheme >= p + len) {
				memcpy(store + o, "http://", 7);
				o += 7;
			}
			memcpy(store + o, p, len);
			o += len;
			store[o++] = '\0';
		}
		p += len;
		if (*p == ',')
			p++;
	}
	return n;
}

/* A byte string kept by the examples (job names, specs): owned, not NUL-terminated. */
struct ex_bytes {
	uint8_t *p;
	size_t n;
};

static inline bool ex_bytes_set(struct ex_bytes *b, const uint8_t *p, size_t n)
{
	uint8_t *q = malloc(n > 0 ? n : 1);
	if (q == NULL)
		return false;
	if (n > 0)
		memcpy(q, p, n);
	free(b->p);
	b->p = q;
	b->n = n;
	return true;
}

static inline bool ex_bytes_eq(const struct ex_bytes *b, const uint8_t *p, size_t n)
{
	return b->n == n && (n == 0 || memcmp(b->p, p, n) == 0);
}

static inline void ex_bytes_free(struct ex_bytes *b)
{
	free(b->p);
	b->p = NULL;
	b->n = 0;
}

/* Key `prefix` + `a` [+ '/' + `b`] into buf (cap bytes): its length, 0 if it does not fit. */
static inline size_t ex_key(uint8_t *buf, size_t cap, const char *prefix, const uint8_t *a,
			    size_t an, const uint8_t *b, size_t bn)
{
	size_t o = strlen(prefix);
	if (o > cap || an > cap - o)
		return 0;
	memcpy(buf, prefix, o);
	if (an > 0)
		memcpy(buf + o, a, an);
	o += an;
	if (b == NULL)
		return o;
	if (cap - o < 1 || bn > cap - o - 1)
		return 0;
	buf[o++] = '/';
	if (bn > 0)
		memcpy(buf + o, b, bn);
	return o + bn;
}

#endif /* CAIRN_EXAMPLE_H */

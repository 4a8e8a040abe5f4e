/* grpc_util.c: pure functions of the gRPC core: grpc-message percent-encoding, grpc-timeout
 * parsing, status names, and the request header checks nghttp2 would make itself. */
#include <assert.h>
#include <stdio.h>
#include <string.h>

#include "grpc_int.h"

static const char *const grpc_status_names[] = {
	"OK",
	"CANCELLED",
	"UNKNOWN",
	"INVALID_ARGUMENT",
	"DEADLINE_EXCEEDED",
	"NOT_FOUND",
	"ALREADY_EXISTS",
	"PERMISSION_DENIED",
	"RESOURCE_EXHAUSTED",
	"FAILED_PRECONDITION",
	"ABORTED",
	"OUT_OF_RANGE",
	"UNIMPLEMENTED",
	"INTERNAL",
	"UNAVAILABLE",
	"DATA_LOSS",
	"UNAUTHENTICATED",
};
_Static_assert(sizeof grpc_status_names / sizeof grpc_status_names[0] ==
		       NET_GRPC_UNAUTHENTICATED + 1,
	       "one name per gRPC status code");

const char *net_grpc_status_name(int status)
{
	if (status < 0 || status > NET_GRPC_UNAUTHENTICATED) {
		return "UNKNOWN";
	}
	return grpc_status_names[status];
}

/* PROTOCOL-HTTP2.md, "grpc-message": Percent-Byte-Unencoded is %x20-%x24 / %x26-%x7E, anything
 * else is "%" followed by two upper-case hex digits. */
int net_grpc_percent_encode(const char *msg, char *out, size_t cap)
{
	static const char hex[] = "0123456789ABCDEF";
	assert(msg != NULL && out != NULL);
	size_t n = 0;
	for (const unsigned char *p = (const unsigned char *)msg; *p != '\0'; p++) {
		bool plain = *p >= 0x20 && *p <= 0x7e && *p != '%';
		size_t need = plain ? 1 : 3;
		if (n + need + 1 > cap) {
			if (cap > 0) {
				out[0] = '\0';
			}
			return NET_ETOOBIG;
		}
		if (plain) {
			out[n++] = (char)*p;
		} else {
			out[n++] = '%';
			out[n++] = hex[*p >> 4];
			out[n++] = hex[*p & 0xf];
		}
	}
	if (cap == 0) {
		return NET_ETOOBIG;
	}
	out[n] = '\0';
	assert(n <= INT32_MAX);
	return (int)n;
}

/* PROTOCOL-HTTP2.md: Timeout = TimeoutValue TimeoutUnit, TimeoutValue = 1*8 DIGIT,
 * TimeoutUnit = H / M / S / m / u / n. */
int64_t net_grpc_parse_timeout(const char *value)
{
	if (value == NULL) {
		return -1;
	}
	size_t len = strlen(value);
	if (len < 2 || len > 9) {
		return -1;
	}
	int64_t v = 0;
	for (size_t i = 0; i + 1 < len; i++) {
		if (value[i] < '0' || value[i] > '9') {
			return -1;
		}
		v = v * 10 + (value[i] - '0');
	}
	/* 8 digits bound v below 1e8, so hours in milliseconds stay far below INT64_MAX. */
	switch (value[len - 1]) {
	case 'H':
		return v * 3600000;
	case 'M':
		return v * 60000;
	case 'S':
		return v * 1000;
	case 'm':
		return v;
	case 'u':
		return (v + 999) / 1000;
	case 'n':
		return (v + 999999) / 1000000;
	default:
		return -1;
	}
}

void grpc__quote(const char *in, char *out, size_t cap)
{
	static const char hex[] = "0123456789abcdef";
	assert(cap >= 3);
	size_t n = 0;
	out[n++] = '"';
	for (const unsigned char *p = (const unsigned char *)in; *p != '\0'; p++) {
		char esc[4];
		size_t k = 0;
		if (*p == '"' || *p == '\\') {
			esc[k++] = '\\';
			esc[k++] = (char)*p;
		} else if (*p < 0x20 || *p >= 0x7f) {
			esc[k++] = '\\';
			esc[k++] = 'x';
			esc[k++] = hex[*p >> 4];
			esc[k++] = hex[*p & 0xf];
		} else {
			esc[k++] = (char)*p;
		}
		if (n + k + 2 > cap) {
			break;
		}
		memcpy(out + n, esc, k);
		n += k;
	}
	out[n++] = '"';
	out[n] = '\0';
}

static bool grpc_streq(const char *lit, const uint8_t *s, size_t len)
{
	return strlen(lit) == len && memcmp(lit, s, len) == 0;
}

static bool grpc_strieq(const char *lit, const uint8_t *s, size_t len)
{
	if (strlen(lit) != len) {
		return false;
	}
	for (size_t i = 0; i < len; i++) {
		uint8_t c = s[i];
		if (c >= 'A' && c <= 'Z') {
			c = (uint8_t)(c - 'A' + 'a');
		}
		if (c != (uint8_t)lit[i]) {
			return false;
		}
	}
	return true;
}

/* The one relaxation: nghttp2 1.52 checks :authority and host with nghttp2_check_authority(),
 * which refuses ' ', '"', '#', '/', '<', '>', '?', '\', '^', '`', '{', '|', '}'. Go clients send
 * "unix:///path" forms (grpc-go for unix endpoints) and etcd 3.5.0's client sent
 * "#initially=[...]" (etcd-io/etcd#13192). gRPC only reads :authority, never routes on it, so
 * any printable ASCII value is accepted, with inner spaces; control bytes, DEL, bytes above 0x7E
 * and leading or trailing whitespace stay refused. */
static bool grpc_authority_ok(const uint8_t *v, size_t len)
{
	if (len > 0 && (v[0] == ' ' || v[len - 1] == ' ')) {
		return false;
	}
	for (size_t i = 0; i < len; i++) {
		if (v[i] < 0x20 || v[i] > 0x7e) {
			return false;
		}
	}
	return true;
}

static bool grpc_lws_only(const uint8_t *v, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		if (v[i] != ' ' && v[i] != '\t') {
			return false;
		}
	}
	return true;
}

static int64_t grpc_parse_uint(const uint8_t *s, size_t len)
{
	if (len == 0 || len > 18) {
		return -1;
	}
	int64_t n = 0;
	for (size_t i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9') {
			return -1;
		}
		n = n * 10 + (s[i] - '0');
	}
	return n;
}

/* A pseudo-field may come once, with a value that is not only whitespace (nghttp2_http.c
 * check_pseudo_header). */
static enum grpc_field grpc_pseudo_once(struct net_grpc_call *call, uint32_t bit,
					enum grpc_field kind, const uint8_t *v, size_t len)
{
	if ((call->pseudo_seen & bit) != 0 || grpc_lws_only(v, len)) {
		return GRPC_F_ERROR;
	}
	call->pseudo_seen |= bit;
	return kind;
}

/* Mirrors nghttp2 1.52's nghttp2_http_on_header() and http_request_on_header() for a server
 * (RFC 9113 §8.2, §8.3), except for the :authority rule above. */
enum grpc_field grpc__check_field(struct net_grpc_call *call, const uint8_t *name, size_t namelen,
				  const uint8_t *value, size_t valuelen)
{
	if (namelen == 0) {
		return GRPC_F_ERROR;
	}
	if (!nghttp2_check_header_name(name, namelen)) {
		if (name[0] == ':') {
			return GRPC_F_ERROR;
		}
		for (size_t i = 0; i < namelen; i++) {
			if (name[i] >= 'A' && name[i] <= 'Z') {
				return GRPC_F_ERROR; /* §8.2.1: upper case is malformed */
			}
		}
		call->regular_seen = true;
		return GRPC_F_IGNORE;
	}
	if (name[0] == ':') {
		if (call->in_trailers || call->regular_seen) {
			return GRPC_F_ERROR; /* §8.3: pseudo-fields first, never in trailers */
		}
		if (grpc_streq(":authority", name, namelen)) {
			if (!grpc_authority_ok(value, valuelen)) {
				return GRPC_F_ERROR;
			}
			return grpc_pseudo_once(call, GRPC_PSEUDO_AUTHORITY, GRPC_F_AUTHORITY,
						value, valuelen);
		}
		if (grpc_streq(":path", name, namelen)) {
			if (!nghttp2_check_path(value, valuelen)) {
				return GRPC_F_ERROR;
			}
			return grpc_pseudo_once(call, GRPC_PSEUDO_PATH, GRPC_F_PATH, value,
						valuelen);
		}
		if (grpc_streq(":method", name, namelen)) {
			if (!nghttp2_check_method(value, valuelen)) {
				return GRPC_F_ERROR;
			}
			return grpc_pseudo_once(call, GRPC_PSEUDO_METHOD, GRPC_F_METHOD, value,
						valuelen);
		}
		if (grpc_streq(":scheme", name, namelen)) {
			if (!nghttp2_check_header_value_rfc9113(value, valuelen)) {
				return GRPC_F_ERROR;
			}
			return grpc_pseudo_once(call, GRPC_PSEUDO_SCHEME, GRPC_F_SCHEME, value,
						valuelen);
		}
		return GRPC_F_ERROR; /* :status, :protocol or unknown in a request */
	}
	if (grpc_streq("host", name, namelen)) {
		call->regular_seen = true;
		if (!grpc_authority_ok(value, valuelen)) {
			return GRPC_F_ERROR;
		}
		return grpc_pseudo_once(call, GRPC_PSEUDO_HOST, GRPC_F_HOST, value, valuelen);
	}
	if (!nghttp2_check_header_value_rfc9113(value, valuelen)) {
		call->regular_seen = true;
		return GRPC_F_IGNORE;
	}
	call->regular_seen = true;
	if (grpc_streq("content-length", name, namelen)) {
		if (call->content_length != -1) {
			return GRPC_F_ERROR;
		}
		call->content_length = grpc_parse_uint(value, valuelen);
		return call->content_length == -1 ? GRPC_F_ERROR : GRPC_F_REGULAR;
	}
	if (grpc_streq("connection", name, namelen) || grpc_streq("keep-alive", name, namelen) ||
	    grpc_streq("proxy-connection", name, namelen) ||
	    grpc_streq("transfer-encoding", name, namelen) ||
	    grpc_streq("upgrade", name, namelen)) {
		return GRPC_F_ERROR; /* §8.2.2: connection-specific fields */
	}
	if (grpc_streq("te", name, namelen)) {
		return grpc_strieq("trailers", value, valuelen) ? GRPC_F_REGULAR : GRPC_F_ERROR;
	}
	if (grpc_streq("content-type", name, namelen)) {
		return GRPC_F_CONTENT_TYPE;
	}
	if (grpc_streq("grpc-encoding", name, namelen)) {
		return GRPC_F_ENCODING;
	}
	return GRPC_F_REGULAR;
}

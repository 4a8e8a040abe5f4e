/* gateway.c: etcd's JSON gateway (/v3/...) as JSON <-> protobuf through the message descriptors,
 * and the table of paths etcd 3.4 serves (its rpc.proto google.api.http bindings; Maintenance's
 * HashKV has none in 3.4, and answers 404 there as here).
 * The JSON dialect is described in http.h. */
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "etcdserverpb/rpc.pb-c.h"
#include "http.h"

#define GW_MAX_DEPTH 32 /* nesting of JSON values read (etcd's messages nest 4 deep) */

/* ---- the path table ---- */

#define R(p, svc, meth, rq, rs, st)                                                  \
	{                                                                            \
		p, "/etcdserverpb." svc "/" meth, &etcdserverpb__##rq##__descriptor, \
			&etcdserverpb__##rs##__descriptor, st                        \
	}

static const struct gw_route routes[] = {
	R("/v3/kv/range", "KV", "Range", range_request, range_response, false),
	R("/v3/kv/put", "KV", "Put", put_request, put_response, false),
	R("/v3/kv/deleterange", "KV", "DeleteRange", delete_range_request, delete_range_response,
	  false),
	R("/v3/kv/txn", "KV", "Txn", txn_request, txn_response, false),
	R("/v3/kv/compaction", "KV", "Compact", compaction_request, compaction_response, false),
	R("/v3/watch", "Watch", "Watch", watch_request, watch_response, true),
	R("/v3/lease/grant", "Lease", "LeaseGrant", lease_grant_request, lease_grant_response,
	  false),
	R("/v3/lease/revoke", "Lease", "LeaseRevoke", lease_revoke_request, lease_revoke_response,
	  false),
	R("/v3/kv/lease/revoke", "Lease", "LeaseRevoke", lease_revoke_request,
	  lease_revoke_response, false),
	R("/v3/lease/keepalive", "Lease", "LeaseKeepAlive", lease_keep_alive_request,
	  lease_keep_alive_response, true),
	R("/v3/lease/timetolive", "Lease", "LeaseTimeToLive", lease_time_to_live_request,
	  lease_time_to_live_response, false),
	R("/v3/kv/lease/timetolive", "Lease", "LeaseTimeToLive", lease_time_to_live_request,
	  lease_time_to_live_response, false),
	R("/v3/lease/leases", "Lease", "LeaseLeases", lease_leases_request, lease_leases_response,
	  false),
	R("/v3/kv/lease/leases", "Lease", "LeaseLeases", lease_leases_request,
	  lease_leases_response, false),
	R("/v3/cluster/member/add", "Cluster", "MemberAdd", member_add_request, member_add_response,
	  false),
	R("/v3/cluster/member/remove", "Cluster", "MemberRemove", member_remove_request,
	  member_remove_response, false),
	R("/v3/cluster/member/list", "Cluster", "MemberList", member_list_request,
	  member_list_response, false),
	R("/v3/cluster/member/update", "Cluster", "MemberUpdate", member_update_request,
	  member_update_response, false),
	R("/v3/cluster/member/promote", "Cluster", "MemberPromote", member_promote_request,
	  member_promote_response, false),
	R("/v3/maintenance/alarm", "Maintenance", "Alarm", alarm_request, alarm_response, false),
	R("/v3/maintenance/status", "Maintenance", "Status", status_request, status_response,
	  false),
	R("/v3/maintenance/defragment", "Maintenance", "Defragment", defragment_request,
	  defragment_response, false),
	R("/v3/maintenance/hash", "Maintenance", "Hash", hash_request, hash_response, false),
	R("/v3/maintenance/snapshot", "Maintenance", "Snapshot", snapshot_request,
	  snapshot_response, true),
	R("/v3/maintenance/transfer-leadership", "Maintenance", "MoveLeader", move_leader_request,
	  move_leader_response, false),
	R("/v3/auth/enable", "Auth", "AuthEnable", auth_enable_request, auth_enable_response,
	  false),
	R("/v3/auth/disable", "Auth", "AuthDisable", auth_disable_request, auth_disable_response,
	  false),
	R("/v3/auth/authenticate", "Auth", "Authenticate", authenticate_request,
	  authenticate_response, false),
	R("/v3/auth/user/add", "Auth", "UserAdd", auth_user_add_request, auth_user_add_response,
	  false),
	R("/v3/auth/user/get", "Auth", "UserGet", auth_user_get_request, auth_user_get_response,
	  false),
	R("/v3/auth/user/list", "Auth", "UserList", auth_user_list_request, auth_user_list_response,
	  false),
	R("/v3/auth/user/delete", "Auth", "UserDelete", auth_user_delete_request,
	  auth_user_delete_response, false),
	R("/v3/auth/user/changepw", "Auth", "UserChangePassword", auth_user_change_password_request,
	  auth_user_change_password_response, false),
	R("/v3/auth/user/grant", "Auth", "UserGrantRole", auth_user_grant_role_request,
	  auth_user_grant_role_response, false),
	R("/v3/auth/user/revoke", "Auth", "UserRevokeRole", auth_user_revoke_role_request,
	  auth_user_revoke_role_response, false),
	R("/v3/auth/role/add", "Auth", "RoleAdd", auth_role_add_request, auth_role_add_response,
	  false),
	R("/v3/auth/role/get", "Auth", "RoleGet", auth_role_get_request, auth_role_get_response,
	  false),
	R("/v3/auth/role/list", "Auth", "RoleList", auth_role_list_request, auth_role_list_response,
	  false),
	R("/v3/auth/role/delete", "Auth", "RoleDelete", auth_role_delete_request,
	  auth_role_delete_response, false),
	R("/v3/auth/role/grant", "Auth", "RoleGrantPermission", auth_role_grant_permission_request,
	  auth_role_grant_permission_response, false),
	R("/v3/auth/role/revoke", "Auth", "RoleRevokePermission",
	  auth_role_revoke_permission_request, auth_role_revoke_permission_response, false),
};
#undef R

const struct gw_route *gw_route_find(const char *path)
{
	for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
		if (strcmp(routes[i].path, path) == 0) {
			return &routes[i];
		}
	}
	return NULL;
}

/* grpc-gateway v1's runtime.HTTPStatusFromCode. */
int gw_http_status(int code)
{
	static const int map[17] = { 200, 408, 500, 400, 504, 404, 409, 403, 429,
				     412, 409, 400, 501, 500, 503, 500, 401 };
	return code >= 0 && code <= 16 ? map[code] : 500;
}

/* ---- encoding ---- */

static void json_string(struct srv_text *out, const char *s, size_t n)
{
	srv_text_add(out, "\"", 1);
	size_t run = 0;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		const char *esc = NULL;
		char u[8];
		if (c == '"') {
			esc = "\\\"";
		} else if (c == '\\') {
			esc = "\\\\";
		} else if (c == '\n') {
			esc = "\\n";
		} else if (c == '\r') {
			esc = "\\r";
		} else if (c == '\t') {
			esc = "\\t";
		} else if (c < 0x20 || c == '<' || c == '>' || c == '&') {
			/* Go's encoder escapes HTML characters too */
			snprintf(u, sizeof u, "\\u%04x", c);
			esc = u;
		}
		if (esc != NULL) {
			srv_text_add(out, s + i - run, run);
			run = 0;
			srv_text_puts(out, esc);
		} else {
			run++;
		}
	}
	srv_text_add(out, s + n - run, run);
	srv_text_add(out, "\"", 1);
}

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static void json_bytes(struct srv_text *out, const uint8_t *d, size_t n)
{
	srv_text_add(out, "\"", 1);
	char q[4];
	for (size_t i = 0; i < n; i += 3) {
		uint32_t v = (uint32_t)d[i] << 16;
		if (i + 1 < n) {
			v |= (uint32_t)d[i + 1] << 8;
		}
		if (i + 2 < n) {
			v |= d[i + 2];
		}
		q[0] = b64[(v >> 18) & 63];
		q[1] = b64[(v >> 12) & 63];
		q[2] = i + 1 < n ? b64[(v >> 6) & 63] : '=';
		q[3] = i + 2 < n ? b64[v & 63] : '=';
		srv_text_add(out, q, 4);
	}
	srv_text_add(out, "\"", 1);
}

/* One value of field f at p (an element, for repeated fields). */
static void encode_value(const ProtobufCFieldDescriptor *f, const void *p, struct srv_text *out)
{
	switch (f->type) {
	case PROTOBUF_C_TYPE_INT32:
	case PROTOBUF_C_TYPE_SINT32:
	case PROTOBUF_C_TYPE_SFIXED32:
		srv_text_printf(out, "%" PRId32, *(const int32_t *)p);
		break;
	case PROTOBUF_C_TYPE_UINT32:
	case PROTOBUF_C_TYPE_FIXED32:
		srv_text_printf(out, "%" PRIu32, *(const uint32_t *)p);
		break;
	case PROTOBUF_C_TYPE_INT64:
	case PROTOBUF_C_TYPE_SINT64:
	case PROTOBUF_C_TYPE_SFIXED64:
		srv_text_printf(out, "\"%" PRId64 "\"", *(const int64_t *)p);
		break;
	case PROTOBUF_C_TYPE_UINT64:
	case PROTOBUF_C_TYPE_FIXED64:
		srv_text_printf(out, "\"%" PRIu64 "\"", *(const uint64_t *)p);
		break;
	case PROTOBUF_C_TYPE_FLOAT:
		srv_text_printf(out, "%.9g", (double)*(const float *)p);
		break;
	case PROTOBUF_C_TYPE_DOUBLE:
		srv_text_printf(out, "%.17g", *(const double *)p);
		break;
	case PROTOBUF_C_TYPE_BOOL:
		srv_text_puts(out, *(const protobuf_c_boolean *)p ? "true" : "false");
		break;
	case PROTOBUF_C_TYPE_ENUM: {
		int v = *(const int *)p;
		const ProtobufCEnumValue *ev =
			protobuf_c_enum_descriptor_get_value(f->descriptor, v);
		if (ev != NULL) {
			json_string(out, ev->name, strlen(ev->name));
		} else {
			srv_text_printf(out, "%d", v);
		}
		break;
	}
	case PROTOBUF_C_TYPE_STRING: {
		const char *s = *(char *const *)p;
		s = s != NULL ? s : "";
		json_string(out, s, strlen(s));
		break;
	}
	case PROTOBUF_C_TYPE_BYTES: {
		const ProtobufCBinaryData *b = p;
		json_bytes(out, b->data, b->len);
		break;
	}
	case PROTOBUF_C_TYPE_MESSAGE: {
		const ProtobufCMessage *m = *(ProtobufCMessage *const *)p;
		if (m == NULL) {
			srv_text_puts(out, "null");
		} else {
			gw_json_encode(m, out);
		}
		break;
	}
	}
}

static size_t type_size(ProtobufCType t)
{
	switch (t) {
	case PROTOBUF_C_TYPE_INT32:
	case PROTOBUF_C_TYPE_SINT32:
	case PROTOBUF_C_TYPE_SFIXED32:
	case PROTOBUF_C_TYPE_UINT32:
	case PROTOBUF_C_TYPE_FIXED32:
		return 4;
	case PROTOBUF_C_TYPE_INT64:
	case PROTOBUF_C_TYPE_SINT64:
	case PROTOBUF_C_TYPE_SFIXED64:
	case PROTOBUF_C_TYPE_UINT64:
	case PROTOBUF_C_TYPE_FIXED64:
		return 8;
	case PROTOBUF_C_TYPE_FLOAT:
		return sizeof(float);
	case PROTOBUF_C_TYPE_DOUBLE:
		return sizeof(double);
	case PROTOBUF_C_TYPE_BOOL:
		return sizeof(protobuf_c_boolean);
	case PROTOBUF_C_TYPE_ENUM:
		return sizeof(int);
	case PROTOBUF_C_TYPE_STRING:
		return sizeof(char *);
	case PROTOBUF_C_TYPE_BYTES:
		return sizeof(ProtobufCBinaryData);
	case PROTOBUF_C_TYPE_MESSAGE:
		return sizeof(ProtobufCMessage *);
	}
	return 0;
}

/* True when a singular value equals its proto3 default (left out of the output). */
static bool is_default(const ProtobufCFieldDescriptor *f, const void *p)
{
	switch (f->type) {
	case PROTOBUF_C_TYPE_STRING: {
		const char *s = *(char *const *)p;
		return s == NULL || s[0] == '\0';
	}
	case PROTOBUF_C_TYPE_BYTES:
		return ((const ProtobufCBinaryData *)p)->len == 0;
	case PROTOBUF_C_TYPE_MESSAGE:
		return *(ProtobufCMessage *const *)p == NULL;
	case PROTOBUF_C_TYPE_FLOAT:
		return *(const float *)p == 0.0f;
	case PROTOBUF_C_TYPE_DOUBLE:
		return *(const double *)p == 0.0;
	default: {
		static const uint8_t zero[8];
		return memcmp(p, zero, type_size(f->type)) == 0;
	}
	}
}

void gw_json_encode(const ProtobufCMessage *msg, struct srv_text *out)
{
	const ProtobufCMessageDescriptor *d = msg->descriptor;
	const char *base = (const char *)msg;
	bool first = true;
	srv_text_add(out, "{", 1);
	for (unsigned i = 0; i < d->n_fields && !out->full; i++) {
		const ProtobufCFieldDescriptor *f = &d->fields[i];
		const void *p = base + f->offset;
		size_t count = 1;
		if (f->label == PROTOBUF_C_LABEL_REPEATED) {
			count = *(const size_t *)(const void *)(base + f->quantifier_offset);
			if (count == 0) {
				continue;
			}
		} else if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
			if (*(const uint32_t *)(const void *)(base + f->quantifier_offset) !=
			    f->id) {
				continue;
			}
		} else if (f->label == PROTOBUF_C_LABEL_OPTIONAL && f->quantifier_offset != 0 &&
			   f->type != PROTOBUF_C_TYPE_MESSAGE &&
			   f->type != PROTOBUF_C_TYPE_STRING) {
			if (!*(const protobuf_c_boolean *)(const void *)(base +
									 f->quantifier_offset)) {
				continue;
			}
		} else if (is_default(f, p)) {
			continue;
		}
		if (!first) {
			srv_text_add(out, ",", 1);
		}
		first = false;
		json_string(out, f->name, strlen(f->name));
		srv_text_add(out, ":", 1);
		if (f->label != PROTOBUF_C_LABEL_REPEATED) {
			encode_value(f, p, out);
			continue;
		}
		const char *arr = *(char *const *)p;
		size_t sz = type_size(f->type);
		srv_text_add(out, "[", 1);
		for (size_t k = 0; k < count; k++) {
			if (k > 0) {
				srv_text_add(out, ",", 1);
			}
			encode_value(f, arr + k * sz, out);
		}
		srv_text_add(out, "]", 1);
	}
	srv_text_add(out, "}", 1);
}

/* ---- decoding ---- */

struct jp {
	const char *p, *end;
	int depth;
	char *err;
	size_t errcap;
	bool failed;
};

static bool jp_fail(struct jp *j, const char *fmt, const char *arg)
{
	if (!j->failed) {
		j->failed = true;
		snprintf(j->err, j->errcap, fmt, arg);
	}
	return false;
}

static void jp_ws(struct jp *j)
{
	while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r')) {
		j->p++;
	}
}

/* Fails with Go's wording for the byte at the cursor. */
static bool jp_unexpected(struct jp *j, const char *where)
{
	if (j->p >= j->end) {
		return jp_fail(j, "%sunexpected EOF", "");
	}
	char m[96];
	unsigned char c = (unsigned char)*j->p;
	if (c >= 0x20 && c < 0x7f && c != '\'') {
		snprintf(m, sizeof m, "invalid character '%c' %s", c, where);
	} else {
		snprintf(m, sizeof m, "invalid character 0x%02x %s", c, where);
	}
	return jp_fail(j, "%s", m);
}

static void utf8_put(char *out, size_t *n, uint32_t cp)
{
	if (cp < 0x80) {
		out[(*n)++] = (char)cp;
	} else if (cp < 0x800) {
		out[(*n)++] = (char)(0xc0 | (cp >> 6));
		out[(*n)++] = (char)(0x80 | (cp & 0x3f));
	} else if (cp < 0x10000) {
		out[(*n)++] = (char)(0xe0 | (cp >> 12));
		out[(*n)++] = (char)(0x80 | ((cp >> 6) & 0x3f));
		out[(*n)++] = (char)(0x80 | (cp & 0x3f));
	} else {
		out[(*n)++] = (char)(0xf0 | (cp >> 18));
		out[(*n)++] = (char)(0x80 | ((cp >> 12) & 0x3f));
		out[(*n)++] = (char)(0x80 | ((cp >> 6) & 0x3f));
		out[(*n)++] = (char)(0x80 | (cp & 0x3f));
	}
}

static int hex4(const char *p)
{
	int v = 0;
	for (int i = 0; i < 4; i++) {
		char c = p[i];
		v <<= 4;
		if (c >= '0' && c <= '9') {
			v |= c - '0';
		} else if (c >= 'a' && c <= 'f') {
			v |= c - 'a' + 10;
		} else if (c >= 'A' && c <= 'F') {
			v |= c - 'A' + 10;
		} else {
			return -1;
		}
	}
	return v;
}

/* Reads a JSON string at the cursor into a new NUL-terminated buffer (its length in *n). */
static char *jp_string(struct jp *j, size_t *n)
{
	if (j->p >= j->end || *j->p != '"') {
		jp_unexpected(j, "looking for beginning of value");
		return NULL;
	}
	j->p++;
	/* Decoded text is never longer than its source. */
	const char *q = j->p;
	while (q < j->end && *q != '"') {
		q += *q == '\\' && q + 1 < j->end ? 2 : 1;
	}
	if (q >= j->end) {
		jp_fail(j, "%sunexpected EOF", "");
		return NULL;
	}
	char *out = malloc((size_t)(q - j->p) + 1);
	if (out == NULL) {
		jp_fail(j, "%sout of memory", "");
		return NULL;
	}
	size_t k = 0;
	while (j->p < q) {
		unsigned char c = (unsigned char)*j->p;
		if (c < 0x20) {
			free(out);
			jp_unexpected(j, "in string literal");
			return NULL;
		}
		if (c != '\\') {
			out[k++] = (char)c;
			j->p++;
			continue;
		}
		char e = j->p[1];
		j->p += 2;
		switch (e) {
		case '"':
			out[k++] = '"';
			break;
		case '\\':
			out[k++] = '\\';
			break;
		case '/':
			out[k++] = '/';
			break;
		case 'b':
			out[k++] = '\b';
			break;
		case 'f':
			out[k++] = '\f';
			break;
		case 'n':
			out[k++] = '\n';
			break;
		case 'r':
			out[k++] = '\r';
			break;
		case 't':
			out[k++] = '\t';
			break;
		case 'u': {
			int v = q - j->p >= 4 ? hex4(j->p) : -1;
			if (v < 0) {
				free(out);
				jp_fail(j,
					"%sinvalid character in \\u hexadecimal character escape",
					"");
				return NULL;
			}
			j->p += 4;
			uint32_t cp = (uint32_t)v;
			if (cp >= 0xd800 && cp < 0xdc00 && q - j->p >= 6 && j->p[0] == '\\' &&
			    j->p[1] == 'u') {
				int lo = hex4(j->p + 2);
				if (lo >= 0xdc00 && lo < 0xe000) {
					cp = 0x10000 + ((cp - 0xd800) << 10) +
					     ((uint32_t)lo - 0xdc00);
					j->p += 6;
				}
			}
			if (cp >= 0xd800 && cp < 0xe000) {
				cp = 0xfffd; /* a lone surrogate, as Go replaces it */
			}
			/* \uXXXX is 6 source bytes, at most 4 out; a pair is 12 for 4 */
			utf8_put(out, &k, cp);
			break;
		}
		default:
			free(out);
			j->p -= 1;
			jp_unexpected(j, "in string escape code");
			return NULL;
		}
	}
	j->p = q + 1;
	out[k] = '\0';
	*n = k;
	return out;
}

/* Skips one JSON value of any kind (an unknown field's). */
static bool jp_skip(struct jp *j);

static bool jp_literal(struct jp *j, const char *lit)
{
	size_t n = strlen(lit);
	if ((size_t)(j->end - j->p) < n) {
		j->p = j->end;
		return jp_fail(j, "%sunexpected EOF", "");
	}
	for (size_t i = 0; i < n; i++, j->p++) {
		if (*j->p != lit[i]) {
			return jp_unexpected(j, "in literal");
		}
	}
	return true;
}

/* The extent of a JSON number at the cursor (RFC 8259 §6 grammar). */
static bool jp_number(struct jp *j, const char **start, size_t *len)
{
	const char *p = j->p;
	*start = p;
	if (p < j->end && *p == '-') {
		p++;
	}
	if (p >= j->end) {
		j->p = p;
		return jp_fail(j, "%sunexpected EOF", "");
	}
	if (*p == '0') {
		p++;
	} else if (*p >= '1' && *p <= '9') {
		while (p < j->end && *p >= '0' && *p <= '9') {
			p++;
		}
	} else {
		j->p = p;
		return jp_unexpected(j, "in numeric literal");
	}
	if (p < j->end && *p == '.') {
		p++;
		if (p >= j->end || *p < '0' || *p > '9') {
			j->p = p;
			return jp_unexpected(j, "after decimal point in numeric literal");
		}
		while (p < j->end && *p >= '0' && *p <= '9') {
			p++;
		}
	}
	if (p < j->end && (*p == 'e' || *p == 'E')) {
		p++;
		if (p < j->end && (*p == '+' || *p == '-')) {
			p++;
		}
		if (p >= j->end || *p < '0' || *p > '9') {
			j->p = p;
			return jp_unexpected(j, "in exponent of numeric literal");
		}
		while (p < j->end && *p >= '0' && *p <= '9') {
			p++;
		}
	}
	*len = (size_t)(p - *start);
	j->p = p;
	return true;
}

static bool jp_skip(struct jp *j)
{
	jp_ws(j);
	if (j->p >= j->end) {
		return jp_fail(j, "%sunexpected EOF", "");
	}
	if (++j->depth > GW_MAX_DEPTH) {
		return jp_fail(j, "%sexceeded max depth", "");
	}
	bool ok = true;
	char c = *j->p;
	if (c == '{' || c == '[') {
		char close = c == '{' ? '}' : ']';
		j->p++;
		jp_ws(j);
		if (j->p < j->end && *j->p == close) {
			j->p++;
		} else {
			for (;;) {
				if (c == '{') {
					size_t n;
					jp_ws(j);
					char *k = jp_string(j, &n);
					if (k == NULL) {
						return false;
					}
					free(k);
					jp_ws(j);
					if (j->p >= j->end || *j->p != ':') {
						return jp_unexpected(j, "after object key");
					}
					j->p++;
				}
				if (!jp_skip(j)) {
					return false;
				}
				jp_ws(j);
				if (j->p < j->end && *j->p == ',') {
					j->p++;
					continue;
				}
				if (j->p < j->end && *j->p == close) {
					j->p++;
					break;
				}
				return jp_unexpected(j, c == '{' ? "after object key:value pair" :
								   "after array element");
			}
		}
	} else if (c == '"') {
		size_t n;
		char *s = jp_string(j, &n);
		ok = s != NULL;
		free(s);
	} else if (c == 't') {
		ok = jp_literal(j, "true");
	} else if (c == 'f') {
		ok = jp_literal(j, "false");
	} else if (c == 'n') {
		ok = jp_literal(j, "null");
	} else {
		const char *s;
		size_t n;
		ok = jp_number(j, &s, &n);
	}
	j->depth--;
	return ok;
}

static int b64_val(char c)
{
	if (c >= 'A' && c <= 'Z') {
		return c - 'A';
	}
	if (c >= 'a' && c <= 'z') {
		return c - 'a' + 26;
	}
	if (c >= '0' && c <= '9') {
		return c - '0' + 52;
	}
	if (c == '+' || c == '-') {
		return 62;
	}
	if (c == '/' || c == '_') {
		return 63;
	}
	return -1;
}

/* Standard or URL-safe base64, padded or not (as protobuf's JSON readers accept). */
static bool b64_decode(const char *s, size_t n, ProtobufCBinaryData *out, struct jp *j)
{
	while (n > 0 && s[n - 1] == '=') {
		n--;
	}
	if (n % 4 == 1) {
		return jp_fail(j, "%sillegal base64 data at input byte 0", "");
	}
	uint8_t *d = malloc(n * 3 / 4 + 1);
	if (d == NULL) {
		return jp_fail(j, "%sout of memory", "");
	}
	size_t k = 0;
	uint32_t acc = 0;
	int bits = 0;
	for (size_t i = 0; i < n; i++) {
		int v = b64_val(s[i]);
		if (v < 0) {
			free(d);
			char m[64];
			snprintf(m, sizeof m, "illegal base64 data at input byte %zu", i);
			return jp_fail(j, "%s", m);
		}
		acc = (acc << 6) | (uint32_t)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			d[k++] = (uint8_t)(acc >> bits);
		}
	}
	out->data = d;
	out->len = k;
	if (k == 0) {
		free(d);
		out->data = NULL;
	}
	return true;
}

static bool parse_int(const char *s, size_t n, bool is_signed, int64_t *sv, uint64_t *uv)
{
	char buf[32];
	if (n == 0 || n >= sizeof buf) {
		return false;
	}
	memcpy(buf, s, n);
	buf[n] = '\0';
	char *e;
	errno = 0;
	if (is_signed) {
		long long v = strtoll(buf, &e, 10);
		*sv = v;
	} else {
		if (buf[0] == '-') {
			return false;
		}
		unsigned long long v = strtoull(buf, &e, 10);
		*uv = v;
	}
	return errno == 0 && *e == '\0';
}

static ProtobufCMessage *decode_message(struct jp *j, const ProtobufCMessageDescriptor *d);

/* The field of d named `name` (.proto name or lowerCamel). */
static const ProtobufCFieldDescriptor *find_field(const ProtobufCMessageDescriptor *d,
						  const char *name)
{
	const ProtobufCFieldDescriptor *f =
		protobuf_c_message_descriptor_get_field_by_name(d, name);
	if (f != NULL) {
		return f;
	}
	for (unsigned i = 0; i < d->n_fields; i++) {
		const char *a = d->fields[i].name, *b = name;
		bool up = false;
		for (; *a != '\0'; a++) {
			if (*a == '_') {
				up = true;
				continue;
			}
			char want = up && *a >= 'a' && *a <= 'z' ? (char)(*a - 'a' + 'A') : *a;
			up = false;
			if (*b++ != want) {
				break;
			}
		}
		if (*a == '\0' && *b == '\0') {
			return &d->fields[i];
		}
	}
	return NULL;
}

/* Reads one value of field f into the slot p (zeroed or holding the default). */
static bool decode_value(struct jp *j, const ProtobufCFieldDescriptor *f, void *p)
{
	jp_ws(j);
	if (j->p >= j->end) {
		return jp_fail(j, "%sunexpected EOF", "");
	}
	char c = *j->p;
	switch (f->type) {
	case PROTOBUF_C_TYPE_MESSAGE: {
		if (c == 'n') {
			return jp_literal(j, "null");
		}
		ProtobufCMessage *m = decode_message(j, f->descriptor);
		if (m == NULL) {
			return false;
		}
		*(ProtobufCMessage **)p = m;
		return true;
	}
	case PROTOBUF_C_TYPE_STRING:
	case PROTOBUF_C_TYPE_BYTES: {
		if (c == 'n') {
			return jp_literal(j, "null");
		}
		size_t n;
		char *s = jp_string(j, &n);
		if (s == NULL) {
			return false;
		}
		if (f->type == PROTOBUF_C_TYPE_STRING) {
			*(char **)p = s;
			return true;
		}
		bool ok = b64_decode(s, n, p, j);
		free(s);
		return ok;
	}
	case PROTOBUF_C_TYPE_BOOL:
		if (c == 't' || c == 'f') {
			bool v = c == 't';
			if (!jp_literal(j, v ? "true" : "false")) {
				return false;
			}
			*(protobuf_c_boolean *)p = v;
			return true;
		}
		if (c == 'n') {
			return jp_literal(j, "null");
		}
		return jp_fail(j, "%sbad value for a bool field", "");
	case PROTOBUF_C_TYPE_ENUM:
		if (c == '"') {
			size_t n;
			char *s = jp_string(j, &n);
			if (s == NULL) {
				return false;
			}
			const ProtobufCEnumValue *ev =
				protobuf_c_enum_descriptor_get_value_by_name(f->descriptor, s);
			if (ev == NULL) {
				char m[160];
				snprintf(m, sizeof m, "unknown value %.64s for enum %.64s", s,
					 ((const ProtobufCEnumDescriptor *)f->descriptor)->name);
				free(s);
				return jp_fail(j, "%s", m);
			}
			free(s);
			*(int *)p = ev->value;
			return true;
		}
		break;
	default:
		break;
	}
	if (c == 'n') {
		return jp_literal(j, "null");
	}
	/* numbers: bare or quoted */
	const char *s;
	size_t n;
	char *str = NULL;
	if (c == '"') {
		str = jp_string(j, &n);
		if (str == NULL) {
			return false;
		}
		s = str;
	} else if (!jp_number(j, &s, &n)) {
		return false;
	}
	bool ok = true;
	int64_t sv = 0;
	uint64_t uv = 0;
	switch (f->type) {
	case PROTOBUF_C_TYPE_FLOAT:
	case PROTOBUF_C_TYPE_DOUBLE: {
		char buf[64];
		ok = n > 0 && n < sizeof buf;
		if (ok) {
			memcpy(buf, s, n);
			buf[n] = '\0';
			char *e;
			double v = strtod(buf, &e);
			ok = *e == '\0';
			if (f->type == PROTOBUF_C_TYPE_FLOAT) {
				*(float *)p = (float)v;
			} else {
				*(double *)p = v;
			}
		}
		break;
	}
	case PROTOBUF_C_TYPE_INT32:
	case PROTOBUF_C_TYPE_SINT32:
	case PROTOBUF_C_TYPE_SFIXED32:
	case PROTOBUF_C_TYPE_ENUM:
		ok = parse_int(s, n, true, &sv, &uv) && sv >= INT32_MIN && sv <= INT32_MAX;
		if (ok && f->type == PROTOBUF_C_TYPE_ENUM) {
			*(int *)p = (int)sv;
		} else if (ok) {
			*(int32_t *)p = (int32_t)sv;
		}
		break;
	case PROTOBUF_C_TYPE_UINT32:
	case PROTOBUF_C_TYPE_FIXED32:
		ok = parse_int(s, n, false, &sv, &uv) && uv <= UINT32_MAX;
		if (ok) {
			*(uint32_t *)p = (uint32_t)uv;
		}
		break;
	case PROTOBUF_C_TYPE_INT64:
	case PROTOBUF_C_TYPE_SINT64:
	case PROTOBUF_C_TYPE_SFIXED64:
		ok = parse_int(s, n, true, &sv, &uv);
		if (ok) {
			*(int64_t *)p = sv;
		}
		break;
	case PROTOBUF_C_TYPE_UINT64:
	case PROTOBUF_C_TYPE_FIXED64:
		ok = parse_int(s, n, false, &sv, &uv);
		if (ok) {
			*(uint64_t *)p = uv;
		}
		break;
	default:
		ok = false;
	}
	if (!ok) {
		char m[160];
		snprintf(m, sizeof m, "bad number %.*s for field %.64s", (int)(n < 40 ? n : 40), s,
			 f->name);
		free(str);
		return jp_fail(j, "%s", m);
	}
	free(str);
	return true;
}

/* Frees what a field already holds before a repeated key overwrites it ({"key":"a","key":"b"}:
 * the last wins, as in Go). */
static void clear_slot(const ProtobufCFieldDescriptor *f, void *p)
{
	if (f->type == PROTOBUF_C_TYPE_MESSAGE) {
		ProtobufCMessage **m = p;
		if (*m != NULL) {
			protobuf_c_message_free_unpacked(*m, NULL);
			*m = NULL;
		}
	} else if (f->type == PROTOBUF_C_TYPE_STRING) {
		char **s = p;
		if (*s != NULL && *s != (const char *)f->default_value) {
			free(*s);
		}
		*s = (char *)f->default_value;
	} else if (f->type == PROTOBUF_C_TYPE_BYTES) {
		ProtobufCBinaryData *b = p;
		const ProtobufCBinaryData *def = f->default_value;
		if (b->data != NULL && (def == NULL || b->data != def->data)) {
			free(b->data);
		}
		b->data = NULL;
		b->len = 0;
	}
}

/* Frees the elements of a repeated field and its array. */
static void clear_repeated(const ProtobufCFieldDescriptor *f, char *base)
{
	size_t *count = (size_t *)(void *)(base + f->quantifier_offset);
	char **arr = (char **)(void *)(base + f->offset);
	size_t sz = type_size(f->type);
	for (size_t k = 0; *arr != NULL && k < *count; k++) {
		void *slot = *arr + k * sz;
		if (f->type == PROTOBUF_C_TYPE_MESSAGE || f->type == PROTOBUF_C_TYPE_STRING ||
		    f->type == PROTOBUF_C_TYPE_BYTES) {
			clear_slot(f, slot);
		}
	}
	free(*arr);
	*arr = NULL;
	*count = 0;
}

static bool decode_field(struct jp *j, const ProtobufCFieldDescriptor *f, char *base)
{
	void *p = base + f->offset;
	if (f->label != PROTOBUF_C_LABEL_REPEATED) {
		if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
			/* another member of the oneof may hold a value: the message frees it by
			 * the case, so free it here before switching */
			uint32_t *cs = (uint32_t *)(void *)(base + f->quantifier_offset);
			if (*cs != 0 && *cs != f->id) {
				const ProtobufCFieldDescriptor *o =
					protobuf_c_message_descriptor_get_field(
						((ProtobufCMessage *)(void *)base)->descriptor,
						*cs);
				if (o != NULL && (o->type == PROTOBUF_C_TYPE_MESSAGE ||
						  o->type == PROTOBUF_C_TYPE_STRING ||
						  o->type == PROTOBUF_C_TYPE_BYTES)) {
					clear_slot(o, base + o->offset);
				}
				if (o != NULL) {
					memset(base + o->offset, 0, type_size(o->type));
				}
			}
			memset(p, 0, type_size(f->type));
			*cs = f->id;
		} else {
			clear_slot(f, p);
		}
		if (f->label == PROTOBUF_C_LABEL_OPTIONAL && f->quantifier_offset != 0 &&
		    !(f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) &&
		    f->type != PROTOBUF_C_TYPE_MESSAGE && f->type != PROTOBUF_C_TYPE_STRING) {
			*(protobuf_c_boolean *)(void *)(base + f->quantifier_offset) = 1;
		}
		return decode_value(j, f, p);
	}
	clear_repeated(f, base);
	jp_ws(j);
	if (j->p < j->end && *j->p == 'n') {
		return jp_literal(j, "null");
	}
	if (j->p >= j->end || *j->p != '[') {
		return jp_fail(j, "%sexpected an array", "");
	}
	j->p++;
	size_t *count = (size_t *)(void *)(base + f->quantifier_offset);
	char **arr = (char **)p;
	size_t sz = type_size(f->type), cap = 0;
	jp_ws(j);
	if (j->p < j->end && *j->p == ']') {
		j->p++;
		return true;
	}
	for (;;) {
		if (*count == cap) {
			size_t ncap = cap ? cap * 2 : 4;
			char *na = realloc(*arr, ncap * sz);
			if (na == NULL) {
				return jp_fail(j, "%sout of memory", "");
			}
			*arr = na;
			cap = ncap;
		}
		jp_ws(j);
		if (j->p < j->end && *j->p == 'n') {
			/* protobuf-c frees every element of a repeated field: none may be absent */
			return jp_fail(j, "%snull is not a value of a repeated field", "");
		}
		void *slot = *arr + *count * sz;
		memset(slot, 0, sz);
		(*count)++;
		if (!decode_value(j, f, slot)) {
			return false;
		}
		jp_ws(j);
		if (j->p < j->end && *j->p == ',') {
			j->p++;
			continue;
		}
		if (j->p < j->end && *j->p == ']') {
			j->p++;
			return true;
		}
		return jp_unexpected(j, "after array element");
	}
}

static ProtobufCMessage *decode_message(struct jp *j, const ProtobufCMessageDescriptor *d)
{
	jp_ws(j);
	if (j->p >= j->end) {
		jp_fail(j, "%sunexpected EOF", "");
		return NULL;
	}
	if (*j->p != '{') {
		jp_fail(j, "json: cannot unmarshal %s into a message",
			*j->p == '[' ? "array" :
			*j->p == '"' ? "string" :
				       "value");
		return NULL;
	}
	if (++j->depth > GW_MAX_DEPTH) {
		jp_fail(j, "%sexceeded max depth", "");
		return NULL;
	}
	ProtobufCMessage *m = malloc(d->sizeof_message);
	if (m == NULL) {
		jp_fail(j, "%sout of memory", "");
		return NULL;
	}
	d->message_init(m);
	j->p++;
	jp_ws(j);
	if (j->p < j->end && *j->p == '}') {
		j->p++;
		j->depth--;
		return m;
	}
	for (;;) {
		jp_ws(j);
		size_t n;
		char *key = jp_string(j, &n);
		if (key == NULL) {
			break;
		}
		jp_ws(j);
		if (j->p >= j->end || *j->p != ':') {
			free(key);
			jp_unexpected(j, "after object key");
			break;
		}
		j->p++;
		const ProtobufCFieldDescriptor *f = strlen(key) == n ? find_field(d, key) : NULL;
		free(key);
		bool ok = f != NULL ? decode_field(j, f, (char *)m) : jp_skip(j);
		if (!ok) {
			break;
		}
		jp_ws(j);
		if (j->p < j->end && *j->p == ',') {
			j->p++;
			continue;
		}
		if (j->p < j->end && *j->p == '}') {
			j->p++;
			j->depth--;
			return m;
		}
		jp_unexpected(j, "after object key:value pair");
		break;
	}
	protobuf_c_message_free_unpacked(m, NULL);
	return NULL;
}

ProtobufCMessage *gw_json_decode(const ProtobufCMessageDescriptor *desc, const uint8_t *body,
				 size_t len, char *err, size_t errcap)
{
	assert(desc != NULL && err != NULL && errcap > 0);
	struct jp j = { .p = (const char *)body,
			.end = (const char *)body + len,
			.err = err,
			.errcap = errcap };
	err[0] = '\0';
	jp_ws(&j);
	if (j.p == j.end) {
		/* an empty body is an empty message (etcd's gateway reads it so) */
		ProtobufCMessage *m = malloc(desc->sizeof_message);
		if (m == NULL) {
			snprintf(err, errcap, "out of memory");
			return NULL;
		}
		desc->message_init(m);
		return m;
	}
	return decode_message(&j, desc);
}

/* grpc.c: the gRPC server core's server object (limits, method table), its HTTP/2 sessions and
 * their receive path: request headers, message reassembly, half-close and cancellation.
 *
 * nghttp2 runs with two options changed from its defaults:
 *  - no_auto_window_update: the core returns receive window itself (nghttp2_session_consume)
 *    once request bytes are delivered or held in a bounded reassembly buffer;
 *  - no_http_messaging: nghttp2 1.52 resets any request whose :authority fails
 *    nghttp2_check_authority(), and its on_invalid_header callback never sees pseudo-fields, so
 *    the only way to serve Go clients that send "unix:///tmp/etcd.sock" or "#initially=[...]"
 *    as :authority is to switch its HTTP checks off and make them here (grpc_util.c,
 *    grpc__check_field and grpc_request_complete mirror nghttp2_http.c), with :authority
 *    relaxed to any printable ASCII. Framing, HPACK, flow control and stream states are still
 *    nghttp2's. */
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grpc_int.h"

/* Opaque data of the PING that times the final GOAWAY of a drain. */
static const uint8_t grpc_drain_ping[8] = { 'c', 'a', 'i', 'r', 'n', 'd', 'r', 'n' };

/* ---- server ---- */

void net_grpc_limits_default(struct net_grpc_limits *l)
{
	assert(l != NULL);
	*l = (struct net_grpc_limits){
		.max_concurrent_streams = 1024,
		.initial_window_size = 1u << 20,
		.connection_window_size = 16u << 20,
		.max_header_list_size = 16u << 10,
		.max_recv_message = NET_GRPC_ETCD_MAX_REQUEST_BYTES + NET_GRPC_ETCD_OVERHEAD_BYTES,
		.max_send_message = 64u << 20,
		.max_call_queue = 8u << 20,
		.max_session_queue = 64u << 20,
		.max_session_recv = 32u << 20,
		.drain_timeout_ms = 10000,
	};
}

int net_grpc_server_new(const struct net_grpc_limits *limits, struct net_grpc_server **out)
{
	assert(out != NULL);
	struct net_grpc_limits d, l;
	net_grpc_limits_default(&d);
	l = limits != NULL ? *limits : d;
#define GRPC_DEFAULT(f)    \
	if (l.f == 0) {    \
		l.f = d.f; \
	}
	GRPC_DEFAULT(max_concurrent_streams)
	GRPC_DEFAULT(initial_window_size)
	GRPC_DEFAULT(connection_window_size)
	GRPC_DEFAULT(max_header_list_size)
	GRPC_DEFAULT(max_recv_message)
	GRPC_DEFAULT(max_send_message)
	GRPC_DEFAULT(max_call_queue)
	GRPC_DEFAULT(max_session_queue)
	GRPC_DEFAULT(max_session_recv)
	GRPC_DEFAULT(drain_timeout_ms)
#undef GRPC_DEFAULT
	/* RFC 9113 §6.5.2 and §6.9.1: windows are at most 2^31-1; the connection window starts at
	 * 65535 and is only ever raised here. */
	if (l.initial_window_size > NGHTTP2_MAX_WINDOW_SIZE ||
	    l.connection_window_size > NGHTTP2_MAX_WINDOW_SIZE ||
	    l.connection_window_size < NGHTTP2_INITIAL_CONNECTION_WINDOW_SIZE ||
	    l.max_header_list_size < 1024 || l.max_send_message > INT32_MAX - NET_GRPC_MSG_HEADER ||
	    l.max_recv_message > INT32_MAX - NET_GRPC_MSG_HEADER) {
		return NET_EINVAL;
	}
	struct net_grpc_server *srv = calloc(1, sizeof *srv);
	if (srv == NULL) {
		return NET_ENOMEM;
	}
	srv->methods = calloc(NET_GRPC_MAX_METHODS, sizeof *srv->methods);
	if (srv->methods == NULL) {
		free(srv);
		return NET_ENOMEM;
	}
	srv->lim = l;
	*out = srv;
	return 0;
}

void net_grpc_server_free(struct net_grpc_server *srv)
{
	if (srv == NULL) {
		return;
	}
	for (size_t i = 0; i < srv->n_methods; i++) {
		free(srv->methods[i].path);
	}
	free(srv->methods);
	free(srv);
}

const struct grpc_method *grpc__lookup(const struct net_grpc_server *srv, const char *path,
				       size_t len)
{
	/* Linear: etcd's API has about 40 methods, cheaper than hashing the path. */
	for (size_t i = 0; i < srv->n_methods; i++) {
		if (srv->methods[i].len == len && memcmp(srv->methods[i].path, path, len) == 0) {
			return &srv->methods[i];
		}
	}
	return NULL;
}

int net_grpc_server_register(struct net_grpc_server *srv, const char *path,
			     net_grpc_handler handler, void *data)
{
	assert(srv != NULL && path != NULL && handler != NULL);
	size_t len = strlen(path);
	const char *slash = strrchr(path, '/');
	if (len < 4 || len > NET_GRPC_MAX_PATH || path[0] != '/' || slash == path ||
	    slash[1] == '\0' || grpc__lookup(srv, path, len) != NULL) {
		return NET_EINVAL;
	}
	if (srv->n_methods == NET_GRPC_MAX_METHODS) {
		return NET_ELIMIT;
	}
	char *copy = malloc(len + 1);
	if (copy == NULL) {
		return NET_ENOMEM;
	}
	memcpy(copy, path, len + 1);
	srv->methods[srv->n_methods++] =
		(struct grpc_method){ .path = copy, .len = len, .handler = handler, .data = data };
	return 0;
}

const struct net_grpc_limits *net_grpc_server_limits(const struct net_grpc_server *srv)
{
	return &srv->lim;
}

/* ---- receive path ---- */

static struct net_grpc_call *grpc_stream_call(struct net_grpc_session *s, int32_t id)
{
	return nghttp2_session_get_stream_user_data(s->h2, id);
}

static int grpc_on_begin_headers(nghttp2_session *h2, const nghttp2_frame *frame, void *user)
{
	struct net_grpc_session *s = user;
	if (frame->hd.type != NGHTTP2_HEADERS) {
		return 0;
	}
	if (frame->headers.cat != NGHTTP2_HCAT_REQUEST) {
		struct net_grpc_call *call = grpc_stream_call(s, frame->hd.stream_id);
		if (call != NULL) {
			call->in_trailers = true;
		}
		return 0;
	}
	struct net_grpc_call *call;
	if (grpc__call_new(s, frame->hd.stream_id, &call) != 0) {
		/* nghttp2 resets the stream with INTERNAL_ERROR. */
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
	}
	int rv = nghttp2_session_set_stream_user_data(h2, frame->hd.stream_id, call);
	assert(rv == 0);
	(void)rv;
	return 0;
}

static int grpc_hdr_append(struct net_grpc_call *call, const uint8_t *b, size_t len, uint32_t *off)
{
	size_t need = (size_t)call->hdr_used + len + 1;
	if (need > call->hdr_cap) {
		size_t cap = call->hdr_cap == 0 ? 512 : call->hdr_cap;
		while (cap < need) {
			cap *= 2;
		}
		char *p = realloc(call->hdr, cap);
		if (p == NULL) {
			return NET_ENOMEM;
		}
		call->hdr = p;
		assert(cap <= UINT32_MAX);
		call->hdr_cap = (uint32_t)cap;
	}
	if (off != NULL) {
		*off = call->hdr_used;
	}
	memcpy(call->hdr + call->hdr_used, b, len);
	call->hdr[call->hdr_used + len] = '\0';
	call->hdr_used += (uint32_t)(len + 1);
	return 0;
}

static int grpc_stream_error(struct net_grpc_session *s, int32_t id, uint32_t code)
{
	int rv = nghttp2_submit_rst_stream(s->h2, NGHTTP2_FLAG_NONE, id, code);
	return nghttp2_is_fatal(rv) ? NGHTTP2_ERR_CALLBACK_FAILURE :
				      NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
}

static int grpc_on_header(nghttp2_session *h2, const nghttp2_frame *frame, const uint8_t *name,
			  size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
			  void *user)
{
	(void)h2;
	(void)flags;
	struct net_grpc_session *s = user;
	if (frame->hd.type != NGHTTP2_HEADERS) {
		return 0;
	}
	struct net_grpc_call *call = grpc_stream_call(s, frame->hd.stream_id);
	if (call == NULL) {
		return 0;
	}
	enum grpc_field kind = grpc__check_field(call, name, namelen, value, valuelen);
	if (kind == GRPC_F_ERROR) {
		return grpc_stream_error(s, frame->hd.stream_id, NGHTTP2_PROTOCOL_ERROR);
	}
	/* SETTINGS_MAX_HEADER_LIST_SIZE is advisory to the peer; this is where it is enforced. The
	 * block is still decoded (HPACK state is per connection) but no longer stored. */
	uint64_t size = (uint64_t)call->hdr_list_size + namelen + valuelen + 32;
	call->hdr_list_size = size > UINT32_MAX ? UINT32_MAX : (uint32_t)size;
	if (size > s->lim->max_header_list_size) {
		call->too_big = true;
	}
	if (kind == GRPC_F_IGNORE || call->too_big || call->in_trailers) {
		return 0;
	}
	uint32_t voff;
	if (grpc_hdr_append(call, name, namelen, NULL) != 0 ||
	    grpc_hdr_append(call, value, valuelen, &voff) != 0) {
		return grpc_stream_error(s, frame->hd.stream_id, NGHTTP2_INTERNAL_ERROR);
	}
	switch (kind) {
	case GRPC_F_METHOD:
		call->method_name = voff;
		break;
	case GRPC_F_SCHEME:
		call->scheme = voff;
		break;
	case GRPC_F_PATH:
		call->path = voff;
		break;
	case GRPC_F_AUTHORITY:
		call->authority = voff;
		break;
	case GRPC_F_HOST:
		if (call->authority == GRPC_ABSENT) {
			call->authority = voff;
		}
		break;
	case GRPC_F_CONTENT_TYPE:
		if (call->content_type == GRPC_ABSENT) {
			call->content_type = voff;
		}
		break;
	case GRPC_F_ENCODING:
		call->encoding = voff;
		break;
	default:
		break;
	}
	return 0;
}

/* PROTOCOL-HTTP2.md: Content-Type is "application/grpc" [("+proto" / "+json" / {custom})];
 * Cairn speaks protobuf only, so "application/grpc" and "application/grpc+proto", each
 * optionally followed by ";" parameters. */
static bool grpc_content_type_ok(const char *ct)
{
	static const char base[] = "application/grpc";
	if (strncmp(ct, base, sizeof base - 1) != 0) {
		return false;
	}
	ct += sizeof base - 1;
	if (strncmp(ct, "+proto", 6) == 0) {
		ct += 6;
	}
	return *ct == '\0' || *ct == ';';
}

/* grpc-go's Server.handleStream: "/service/method" split at the last '/', its error messages
 * and codes (etcd clients see these). */
static void grpc_route(struct net_grpc_session *s, struct net_grpc_call *call)
{
	const char *path = call->hdr + call->path;
	size_t len = strlen(path);
	call->method = grpc__lookup(s->srv, path, len);
	if (call->method != NULL) {
		return;
	}
	char msg[NET_GRPC_MAX_PATH * 2 + 64];
	const char *sm = path[0] == '/' ? path + 1 : path;
	const char *slash = strrchr(sm, '/');
	if (slash == NULL) {
		char q[NET_GRPC_MAX_PATH + 8];
		grpc__quote(path, q, sizeof q);
		snprintf(msg, sizeof msg, "malformed method name: %s", q);
		grpc__call_abort(call, 200, NET_GRPC_RESOURCE_EXHAUSTED, msg);
		return;
	}
	int svc_len = (int)(slash - sm);
	bool known = false;
	for (size_t i = 0; i < s->srv->n_methods && !known; i++) {
		const char *p = s->srv->methods[i].path + 1;
		known = strncmp(p, sm, (size_t)svc_len) == 0 && p[svc_len] == '/';
	}
	if (len > NET_GRPC_MAX_PATH) {
		svc_len = svc_len > NET_GRPC_MAX_PATH ? NET_GRPC_MAX_PATH : svc_len;
	}
	if (known) {
		snprintf(msg, sizeof msg, "unknown method %.*s for service %.*s",
			 (int)strnlen(slash + 1, NET_GRPC_MAX_PATH), slash + 1, svc_len, sm);
	} else {
		snprintf(msg, sizeof msg, "unknown service %.*s", svc_len, sm);
	}
	grpc__call_abort(call, 200, NET_GRPC_UNIMPLEMENTED, msg);
}

/* The request's header block is complete: the checks of nghttp2_http_on_request_headers, then
 * gRPC's (PROTOCOL-HTTP2.md "Requests"), then the handler. */
static int grpc_request_complete(struct net_grpc_session *s, struct net_grpc_call *call)
{
	const uint32_t required = GRPC_PSEUDO_METHOD | GRPC_PSEUDO_SCHEME | GRPC_PSEUDO_PATH;
	if ((call->pseudo_seen & required) != required ||
	    (call->pseudo_seen & (GRPC_PSEUDO_AUTHORITY | GRPC_PSEUDO_HOST)) == 0) {
		grpc__call_reset(call, NGHTTP2_PROTOCOL_ERROR);
		return 0;
	}
	if (call->too_big) {
		char msg[96];
		snprintf(msg, sizeof msg,
			 "header list size to receive exceeds the maximum (%u bytes)",
			 s->lim->max_header_list_size);
		grpc__call_abort(call, 200, NET_GRPC_RESOURCE_EXHAUSTED, msg);
		return 0;
	}
	if (strcmp(call->hdr + call->method_name, "POST") != 0) {
		/* grpc-go answers 405 with INTERNAL for any other method. */
		grpc__call_abort(call, 405, NET_GRPC_INTERNAL, "invalid gRPC request method");
		return 0;
	}
	const char *ct = call->content_type != GRPC_ABSENT ? call->hdr + call->content_type : "";
	if (!grpc_content_type_ok(ct)) {
		/* PROTOCOL-HTTP2.md: servers SHOULD answer 415 so that no HTTP client takes the error
		 * for a success; grpc-go adds INVALID_ARGUMENT with this message. */
		char q[128], msg[192];
		grpc__quote(ct, q, sizeof q);
		snprintf(msg, sizeof msg, "invalid gRPC request content-type %s", q);
		grpc__call_abort(call, 415, NET_GRPC_INVALID_ARGUMENT, msg);
		return 0;
	}
	grpc_route(s, call);
	if (call->method == NULL) {
		return 0;
	}
	const char *enc = call->encoding != GRPC_ABSENT ? call->hdr + call->encoding : "";
	if (enc[0] != '\0' && strcmp(enc, "identity") != 0) {
		/* grpc-go's processUnaryRPC/processStreamingRPC refuse the call up front. */
		char q[96], msg[160];
		grpc__quote(enc, q, sizeof q);
		snprintf(msg, sizeof msg,
			 "grpc: Decompressor is not installed for grpc-encoding %s", q);
		grpc__call_abort(call, 200, NET_GRPC_UNIMPLEMENTED, msg);
		return 0;
	}
	call->app_owned = true;
	call->method->handler(call, call->method->data);
	return 0;
}

/* Takes the bytes of one complete message off the reassembly state and hands them over. */
static void grpc_deliver(struct net_grpc_call *call, const uint8_t *data, size_t len)
{
	if (call->app_owned && !call->discard && call->cb.on_message != NULL) {
		call->cb.on_message(call, data, len, call->user);
	}
}

/* Checks a complete 5-byte prefix. false: the call was ended with the matching status. */
static bool grpc_prefix_ok(struct net_grpc_session *s, struct net_grpc_call *call)
{
	uint8_t flag = call->prefix[0];
	uint32_t len = (uint32_t)call->prefix[1] << 24 | (uint32_t)call->prefix[2] << 16 |
		       (uint32_t)call->prefix[3] << 8 | (uint32_t)call->prefix[4];
	char msg[160];
	if (flag == 1) {
		/* grpc-go checkRecvPayload: no compressor is installed here. */
		const char *enc = call->encoding != GRPC_ABSENT ? call->hdr + call->encoding : "";
		if (enc[0] == '\0' || strcmp(enc, "identity") == 0) {
			grpc__call_abort(
				call, 200, NET_GRPC_INTERNAL,
				"grpc: compressed flag set with identity or empty encoding");
		} else {
			char q[96];
			grpc__quote(enc, q, sizeof q);
			snprintf(msg, sizeof msg,
				 "grpc: Decompressor is not installed for grpc-encoding %s", q);
			grpc__call_abort(call, 200, NET_GRPC_UNIMPLEMENTED, msg);
		}
		return false;
	}
	if (flag != 0) {
		snprintf(msg, sizeof msg, "grpc: received unexpected payload format %u", flag);
		grpc__call_abort(call, 200, NET_GRPC_INTERNAL, msg);
		return false;
	}
	if (len > s->lim->max_recv_message) {
		/* grpc-go recvMsg, the message etcd clients see for an oversized request. */
		snprintf(msg, sizeof msg, "grpc: received message larger than max (%u vs. %u)", len,
			 s->lim->max_recv_message);
		grpc__call_abort(call, 200, NET_GRPC_RESOURCE_EXHAUSTED, msg);
		return false;
	}
	call->msg_len = len;
	call->msg_have = 0;
	return true;
}

/* Appends to the partial message, growing its buffer with what arrived (never what the prefix
 * merely claims), within the connection's bound. false: the call was ended. */
static bool grpc_msg_append(struct net_grpc_session *s, struct net_grpc_call *call,
			    const uint8_t *data, size_t n)
{
	if (n == 0) {
		return true; /* the prefix ended the chunk */
	}
	size_t need = (size_t)call->msg_have + n;
	assert(need <= call->msg_len);
	if (need > call->msg_cap) {
		size_t cap = call->msg_cap == 0 ? 4096 : (size_t)call->msg_cap * 2;
		cap = cap < need ? need : cap;
		cap = cap > call->msg_len ? call->msg_len : cap;
		if (s->recv_partial - call->msg_cap + cap > s->lim->max_session_recv) {
			grpc__call_abort(call, 200, NET_GRPC_RESOURCE_EXHAUSTED,
					 "connection receive buffer is full");
			return false;
		}
		uint8_t *p = realloc(call->msg, cap);
		if (p == NULL) {
			grpc__call_abort(call, 200, NET_GRPC_RESOURCE_EXHAUSTED, "out of memory");
			return false;
		}
		s->recv_partial = s->recv_partial - call->msg_cap + cap;
		call->msg = p;
		call->msg_cap = (uint32_t)cap;
	}
	memcpy(call->msg + call->msg_have, data, n);
	call->msg_have += (uint32_t)n;
	return true;
}

/* Splits DATA bytes into length-prefixed messages (PROTOCOL-HTTP2.md "Length-Prefixed-Message"),
 * across frame boundaries in both directions. Cost: one copy for messages split across frames,
 * none for a message whole inside one chunk. */
static size_t grpc_parse(struct net_grpc_session *s, struct net_grpc_call *call, const uint8_t *p,
			 size_t len)
{
	const size_t total = len;
	while (len > 0 && !call->discard && !call->paused) {
		if (call->prefix_len < NET_GRPC_MSG_HEADER) {
			size_t n = NET_GRPC_MSG_HEADER - call->prefix_len;
			n = n < len ? n : len;
			memcpy(call->prefix + call->prefix_len, p, n);
			call->prefix_len = (uint8_t)(call->prefix_len + n);
			p += n;
			len -= n;
			if (call->prefix_len < NET_GRPC_MSG_HEADER || !grpc_prefix_ok(s, call)) {
				continue;
			}
		}
		size_t want = call->msg_len - call->msg_have;
		if (call->msg_have == 0 && len >= want) {
			grpc_deliver(call, p, want); /* whole in this chunk: no copy */
			p += want;
			len -= want;
			grpc__call_partial_clear(call);
			continue;
		}
		size_t n = want < len ? want : len;
		if (!grpc_msg_append(s, call, p, n)) {
			return total;
		}
		p += n;
		len -= n;
		if (call->msg_have == call->msg_len) {
			grpc_deliver(call, call->msg, call->msg_len);
			grpc__call_partial_clear(call);
		}
	}
	/* Whatever follows a call ended by the core is dropped, so it counts as consumed. */
	return call->discard ? total : total - len;
}

/* Keeps request bytes of a paused call, unconsumed: the stream window the client sees shrinks
 * by as much, so it can never send more than one window (initial_window_size) ahead. */
static bool grpc_pend(struct net_grpc_session *s, struct net_grpc_call *call, const uint8_t *p,
		      size_t len)
{
	size_t need = (size_t)call->pend_len + len;
	if (need > s->lim->initial_window_size) {
		return false; /* nghttp2 enforces the window; this is a second line */
	}
	if (need > call->pend_cap) {
		size_t cap = call->pend_cap == 0 ? 4096 : (size_t)call->pend_cap * 2;
		cap = cap < need ? need : cap;
		uint8_t *q = realloc(call->pend, cap);
		if (q == NULL) {
			return false;
		}
		call->pend = q;
		call->pend_cap = (uint32_t)cap;
	}
	memcpy(call->pend + call->pend_len, p, len);
	call->pend_len = (uint32_t)need;
	return true;
}

static int grpc_on_data_chunk(nghttp2_session *h2, uint8_t flags, int32_t id, const uint8_t *data,
			      size_t len, void *user)
{
	(void)h2;
	(void)flags;
	struct net_grpc_session *s = user;
	struct net_grpc_call *call = grpc_stream_call(s, id);
	/* The connection window reopens at once, as grpc-go does: a paused call must not stall
	 * the others. The stream window reopens as the call takes the bytes (RFC 9113 §5.2). */
	if (nghttp2_is_fatal(nghttp2_session_consume_connection(h2, len))) {
		return NGHTTP2_ERR_CALLBACK_FAILURE;
	}
	size_t done = len;
	if (call != NULL) {
		call->recv_length += len;
		if (call->content_length >= 0 &&
		    call->recv_length > (uint64_t)call->content_length) {
			grpc__call_reset(call, NGHTTP2_PROTOCOL_ERROR);
		} else if (!call->discard) {
			done = call->pend_len == 0 ? grpc_parse(s, call, data, len) : 0;
			if (done < len && !grpc_pend(s, call, data + done, len - done)) {
				grpc__call_reset(call, NGHTTP2_FLOW_CONTROL_ERROR);
				done = len;
			}
		}
	}
	if (done == 0) {
		return 0;
	}
	/* Delivered, held in the bounded reassembly buffer, or dropped. */
	int rv = nghttp2_session_consume_stream(h2, id, done);
	return nghttp2_is_fatal(rv) ? NGHTTP2_ERR_CALLBACK_FAILURE : 0;
}

static void grpc_end_of_request(struct net_grpc_session *s, struct net_grpc_call *call)
{
	(void)s;
	call->half_closed = true;
	if (call->content_length >= 0 && call->recv_length != (uint64_t)call->content_length) {
		grpc__call_reset(call, NGHTTP2_PROTOCOL_ERROR);
		return;
	}
	if (call->discard) {
		return;
	}
	if (call->paused || call->pend_len > 0) {
		call->pend_eos = true; /* after the held messages */
		return;
	}
	if (call->prefix_len > 0) {
		/* The stream ended inside a message: grpc-go reports io.ErrUnexpectedEOF as INTERNAL. */
		grpc__call_abort(call, 200, NET_GRPC_INTERNAL, "unexpected EOF");
		return;
	}
	if (call->app_owned && call->cb.on_half_close != NULL) {
		call->cb.on_half_close(call, call->user);
	}
}

/* Delivers what paused calls held once they are resumed; runs outside nghttp2's callbacks, at
 * the end of feed() and take(). Cost: one pass over the calls, only after a resume. */
static int grpc_run_resumed(struct net_grpc_session *s)
{
	if (!s->resume_pending) {
		return 0;
	}
	s->resume_pending = false;
	for (struct net_grpc_call *call = s->calls; call != NULL; call = call->next) {
		if (call->paused || (call->pend_len == 0 && !call->pend_eos)) {
			continue;
		}
		size_t len = call->pend_len;
		size_t done = call->discard ? len : grpc_parse(s, call, call->pend, len);
		if (done > 0) {
			memmove(call->pend, call->pend + done, len - done);
			call->pend_len = (uint32_t)(len - done);
			int rv = nghttp2_session_consume_stream(s->h2, call->id, done);
			if (nghttp2_is_fatal(rv)) {
				return rv;
			}
		}
		if (call->pend_len == 0 && call->pend_eos && !call->paused) {
			call->pend_eos = false;
			grpc_end_of_request(s, call);
		}
	}
	return 0;
}

void net_grpc_call_pause(struct net_grpc_call *call, bool paused)
{
	assert(call != NULL && call->app_owned);
	struct net_grpc_session *s = call->s;
	call->paused = paused;
	if (call->local != NULL) {
		return; /* the caller sees NET_EAGAIN from net_grpc_local_send meanwhile */
	}
	if (!paused && (call->pend_len > 0 || call->pend_eos)) {
		s->resume_pending = true;
		/* The held bytes go out from the next take(); ask for one if outside the session. */
		if (s->depth == 0 && !s->notified && s->notify != NULL) {
			s->notified = true;
			s->notify(s, s->user);
		}
	}
}

static int grpc_on_frame_recv(nghttp2_session *h2, const nghttp2_frame *frame, void *user)
{
	(void)h2;
	struct net_grpc_session *s = user;
	struct net_grpc_call *call = NULL;
	if (frame->hd.stream_id != 0) {
		call = grpc_stream_call(s, frame->hd.stream_id);
	}
	switch (frame->hd.type) {
	case NGHTTP2_HEADERS:
		if (call == NULL) {
			return 0;
		}
		if (frame->headers.cat == NGHTTP2_HCAT_REQUEST) {
			grpc_request_complete(s, call);
		} else if ((frame->hd.flags & NGHTTP2_FLAG_END_STREAM) == 0) {
			/* Trailers must end the stream (nghttp2_http_on_trailer_headers). */
			grpc__call_reset(call, NGHTTP2_PROTOCOL_ERROR);
			return 0;
		}
		if ((frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0) {
			grpc_end_of_request(s, call);
		}
		return 0;
	case NGHTTP2_DATA:
		if (call != NULL && (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0) {
			grpc_end_of_request(s, call);
		}
		return 0;
	case NGHTTP2_PING:
		if ((frame->hd.flags & NGHTTP2_FLAG_ACK) != 0 && s->draining && !s->drain_final &&
		    memcmp(frame->ping.opaque_data, grpc_drain_ping, 8) == 0) {
			/* One round trip after the shutdown notice: every stream the client opened
			 * before seeing it has arrived, so the last one processed is final. */
			s->drain_final = true;
			int rv = nghttp2_submit_goaway(
				s->h2, NGHTTP2_FLAG_NONE,
				nghttp2_session_get_last_proc_stream_id(s->h2), NGHTTP2_NO_ERROR,
				NULL, 0);
			return nghttp2_is_fatal(rv) ? NGHTTP2_ERR_CALLBACK_FAILURE : 0;
		}
		return 0;
	case NGHTTP2_GOAWAY:
		s->peer_goaway = true;
		return 0;
	default:
		return 0;
	}
}

static int grpc_on_stream_close(nghttp2_session *h2, int32_t id, uint32_t error_code, void *user)
{
	(void)h2;
	(void)error_code;
	struct net_grpc_session *s = user;
	struct net_grpc_call *call = grpc_stream_call(s, id);
	if (call == NULL) {
		return 0;
	}
	/* A stream that closes while its handler still holds the call was reset by the client or
	 * cut with the connection: the handler hears it before the call is freed. */
	grpc__call_cancel(call);
	grpc__call_free(call);
	return 0;
}

/* After our END_STREAM went out on a stream the client has not ended, ask it to stop sending
 * (RFC 9113 §8.1: RST_STREAM NO_ERROR after a complete response), as grpc-go does. */
static int grpc_on_frame_send(nghttp2_session *h2, const nghttp2_frame *frame, void *user)
{
	struct net_grpc_session *s = user;
	if (frame->hd.type == NGHTTP2_GOAWAY && frame->goaway.error_code != NGHTTP2_NO_ERROR) {
		s->h2_error = frame->goaway.error_code;
		return 0;
	}
	if (frame->hd.type != NGHTTP2_HEADERS || (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) == 0) {
		return 0;
	}
	struct net_grpc_call *call = grpc_stream_call(s, frame->hd.stream_id);
	if (call == NULL) {
		return 0;
	}
	call->trailers_sent = true;
	if (!call->half_closed) {
		int rv = nghttp2_submit_rst_stream(h2, NGHTTP2_FLAG_NONE, frame->hd.stream_id,
						   NGHTTP2_NO_ERROR);
		return nghttp2_is_fatal(rv) ? NGHTTP2_ERR_CALLBACK_FAILURE : 0;
	}
	return 0;
}

/* ---- session ---- */

static int grpc_h2_new(struct net_grpc_session *s)
{
	nghttp2_session_callbacks *cbs = NULL;
	nghttp2_option *opt = NULL;
	int rv = nghttp2_session_callbacks_new(&cbs);
	if (rv != 0) {
		goto err;
	}
	nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, grpc_on_begin_headers);
	nghttp2_session_callbacks_set_on_header_callback(cbs, grpc_on_header);
	nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, grpc_on_frame_recv);
	nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, grpc_on_data_chunk);
	nghttp2_session_callbacks_set_on_stream_close_callback(cbs, grpc_on_stream_close);
	nghttp2_session_callbacks_set_on_frame_send_callback(cbs, grpc_on_frame_send);
	rv = nghttp2_option_new(&opt);
	if (rv != 0) {
		goto err_cbs;
	}
	nghttp2_option_set_no_auto_window_update(opt, 1);
	nghttp2_option_set_no_http_messaging(opt, 1); /* see the top of this file */
	/* PING and SETTINGS ACKs queued for a peer that does not read: nghttp2's flood bound. */
	nghttp2_option_set_max_outbound_ack(opt, 1000);
	rv = nghttp2_session_server_new2(&s->h2, cbs, s, opt);
	nghttp2_option_del(opt);
	nghttp2_session_callbacks_del(cbs);
	if (rv != 0) {
		goto err;
	}
	const struct net_grpc_limits *l = s->lim;
	/* The server preface (RFC 9113 §3.4), sent before anything else. */
	nghttp2_settings_entry iv[] = {
		{ NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, l->max_concurrent_streams },
		{ NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, l->initial_window_size },
		{ NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, l->max_header_list_size },
	};
	rv = nghttp2_submit_settings(s->h2, NGHTTP2_FLAG_NONE, iv, sizeof iv / sizeof iv[0]);
	if (rv == 0) {
		rv = nghttp2_session_set_local_window_size(s->h2, NGHTTP2_FLAG_NONE, 0,
							   (int32_t)l->connection_window_size);
	}
	if (rv != 0) {
		nghttp2_session_del(s->h2);
		s->h2 = NULL;
		goto err;
	}
	return 0;
err_cbs:
	nghttp2_session_callbacks_del(cbs);
err:
	return NET_ENOMEM;
}

int net_grpc_session_new(struct net_grpc_server *srv, net_grpc_notify notify, void *user,
			 struct net_grpc_session **out)
{
	assert(srv != NULL && out != NULL);
	struct net_grpc_session *s = calloc(1, sizeof *s);
	if (s == NULL) {
		return NET_ENOMEM;
	}
	s->srv = srv;
	s->lim = &srv->lim;
	s->notify = notify;
	s->user = user;
	int rv = grpc_h2_new(s);
	if (rv != 0) {
		free(s);
		return rv;
	}
	*out = s;
	return 0;
}

void net_grpc_session_free(struct net_grpc_session *s)
{
	if (s == NULL) {
		return;
	}
	assert(s->depth == 0);
	s->depth++;
	/* nghttp2_session_del() calls no stream-close callback: cancel and free here. */
	while (s->calls != NULL) {
		struct net_grpc_call *call = s->calls;
		grpc__call_cancel(call);
		grpc__call_free(call);
	}
	assert(s->n_calls == 0 && s->queued == 0 && s->recv_partial == 0);
	nghttp2_session_del(s->h2);
	free(s->stash);
	free(s);
}

int net_grpc_session_feed(struct net_grpc_session *s, const uint8_t *data, size_t len)
{
	assert(s != NULL && s->depth == 0);
	assert(data != NULL || len == 0);
	if (s->fatal || !nghttp2_session_want_read(s->h2)) {
		return NET_ECLOSED;
	}
	s->depth++;
	ssize_t rv = nghttp2_session_mem_recv(s->h2, data, len);
	if (rv >= 0 && grpc_run_resumed(s) != 0) {
		rv = NGHTTP2_ERR_NOMEM;
	}
	s->depth--;
	if (rv < 0) {
		if (rv == NGHTTP2_ERR_NOMEM) {
			s->fatal = true;
			return NET_ENOMEM;
		}
		if (rv == NGHTTP2_ERR_FLOODED || rv == NGHTTP2_ERR_CALLBACK_FAILURE) {
			/* nghttp2: close at once, nothing more is sent. */
			s->fatal = true;
			return NET_EPROTO;
		}
		/* A bad client preface and other connection errors nghttp2 did not answer itself. */
		nghttp2_session_terminate_session(s->h2, NGHTTP2_PROTOCOL_ERROR);
		s->h2_error = NGHTTP2_PROTOCOL_ERROR;
		return NET_EPROTO;
	}
	assert((size_t)rv == len);
	/* A bad frame after a good preface: nghttp2 queues GOAWAY with the error itself and
	 * returns success; the error shows in net_grpc_session_h2_error() once the GOAWAY was
	 * taken, the session is then done and feed() returns NET_ECLOSED. */
	return 0;
}

int net_grpc_session_take(struct net_grpc_session *s, uint8_t *buf, size_t cap, size_t *n)
{
	assert(s != NULL && s->depth == 0 && buf != NULL && n != NULL);
	int err = 0;
	size_t got = 0;
	s->depth++;
	while (got < cap) {
		if (s->stash_off < s->stash_len) {
			size_t k = s->stash_len - s->stash_off;
			k = k < cap - got ? k : cap - got;
			memcpy(buf + got, s->stash + s->stash_off, k);
			s->stash_off += k;
			got += k;
			continue;
		}
		if (s->fatal) {
			break;
		}
		const uint8_t *p;
		ssize_t r = nghttp2_session_mem_send(s->h2, &p);
		if (r < 0) {
			s->fatal = true;
			err = r == NGHTTP2_ERR_NOMEM ? NET_ENOMEM : NET_EPROTO;
			break;
		}
		if (r == 0) {
			break;
		}
		size_t len = (size_t)r;
		size_t k = len < cap - got ? len : cap - got;
		memcpy(buf + got, p, k);
		got += k;
		if (k < len) {
			/* The rest is only valid until the next mem_send: keep a copy. Its size is
			 * one frame's, which nghttp2 bounds (16 KiB DATA, 64 KiB header block). */
			size_t rest = len - k;
			if (rest > s->stash_cap) {
				uint8_t *q = realloc(s->stash, rest);
				if (q == NULL) {
					s->fatal = true;
					err = NET_ENOMEM;
					break;
				}
				s->stash = q;
				s->stash_cap = rest;
			}
			memcpy(s->stash, p + k, rest);
			s->stash_off = 0;
			s->stash_len = rest;
		}
	}
	if (s->stash_off == s->stash_len) {
		s->stash_off = s->stash_len = 0;
	}
	s->notified = false;
	if (!s->fatal && grpc_run_resumed(s) != 0) {
		s->fatal = true;
		err = NET_ENOMEM;
	}
	if (!s->fatal) {
		grpc__run_writable(s);
	}
	s->depth--;
	*n = got;
	return err;
}

bool net_grpc_session_want_write(const struct net_grpc_session *s)
{
	return s->stash_off < s->stash_len ||
	       (!s->fatal && (s->resume_pending || nghttp2_session_want_write(s->h2)));
}

bool net_grpc_session_done(const struct net_grpc_session *s)
{
	if (s->stash_off < s->stash_len) {
		return false;
	}
	return s->fatal ||
	       (!nghttp2_session_want_read(s->h2) && !nghttp2_session_want_write(s->h2));
}

int net_grpc_session_drain(struct net_grpc_session *s, uint64_t now_ms)
{
	assert(s != NULL && s->depth == 0);
	if (s->draining || s->fatal) {
		return 0;
	}
	s->draining = true;
	s->drain_deadline = now_ms + s->lim->drain_timeout_ms;
	int rv = nghttp2_submit_shutdown_notice(s->h2);
	if (rv == 0) {
		rv = nghttp2_submit_ping(s->h2, NGHTTP2_FLAG_NONE, grpc_drain_ping);
	}
	if (rv == NGHTTP2_ERR_NOMEM) {
		return NET_ENOMEM;
	}
	/* NGHTTP2_ERR_INVALID_STATE: a GOAWAY already went out; the drain is then the deadline. */
	return 0;
}

void net_grpc_session_tick(struct net_grpc_session *s, uint64_t now_ms)
{
	assert(s != NULL && s->depth == 0);
	if (!s->draining || s->drain_forced || now_ms < s->drain_deadline || s->fatal) {
		return;
	}
	s->drain_forced = true;
	s->depth++;
	for (struct net_grpc_call *call = s->calls; call != NULL; call = call->next) {
		if (!call->trailers_sent) {
			grpc__call_reset(call, NGHTTP2_CANCEL);
		}
	}
	/* The final GOAWAY if the PING never came back. Not nghttp2_session_terminate_session():
	 * that stops sending right after the GOAWAY, before the RST_STREAMs queued above. Once they
	 * are out no stream is left and the session is done. */
	if (!s->drain_final) {
		s->drain_final = true;
		(void)nghttp2_submit_goaway(s->h2, NGHTTP2_FLAG_NONE,
					    nghttp2_session_get_last_proc_stream_id(s->h2),
					    NGHTTP2_NO_ERROR, NULL, 0);
	}
	s->depth--;
}

void *net_grpc_session_user(const struct net_grpc_session *s)
{
	return s->user;
}

uint32_t net_grpc_session_h2_error(const struct net_grpc_session *s)
{
	return s->h2_error;
}

size_t net_grpc_session_calls(const struct net_grpc_session *s)
{
	return s->n_calls;
}

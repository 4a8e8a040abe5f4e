/* grpc_call.c: one gRPC call (an HTTP/2 stream) of the server core: its public API, the bounded
 * send queue feeding nghttp2's data provider, and the ways a call ends (PROTOCOL-HTTP2.md
 * "Responses": Response-Headers *Length-Prefixed-Message Trailers, or Trailers-Only). */
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grpc_int.h"

#define GRPC_NV(n, v, vlen)                                                                 \
	{                                                                                   \
		(uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, (vlen), NGHTTP2_NV_FLAG_NONE \
	}

/* Asks the transport to take output, when a handler queued some outside the session's own
 * entry points (which the transport follows with take() anyway). */
static void grpc_poke(struct net_grpc_session *s)
{
	if (s->depth == 0 && !s->notified && s->notify != NULL) {
		s->notified = true;
		s->notify(s, s->user);
	}
}

int grpc__call_new(struct net_grpc_session *s, int32_t id, struct net_grpc_call **out)
{
	/* nghttp2 refuses streams beyond SETTINGS_MAX_CONCURRENT_STREAMS before this point, and a
	 * call lives no longer than its stream: n_calls is bounded by that setting. */
	assert(s->n_calls <= s->lim->max_concurrent_streams);
	struct net_grpc_call *call = calloc(1, sizeof *call);
	if (call == NULL) {
		return NET_ENOMEM;
	}
	call->s = s;
	call->id = id;
	call->path = call->authority = call->method_name = GRPC_ABSENT;
	call->scheme = call->content_type = call->encoding = GRPC_ABSENT;
	call->content_length = -1;
	call->next = s->calls;
	if (s->calls != NULL) {
		s->calls->prev = call;
	}
	s->calls = call;
	s->n_calls++;
	*out = call;
	return 0;
}

static void grpc_queue_clear(struct net_grpc_call *call)
{
	struct net_grpc_session *s = call->s;
	while (call->q_head != NULL) {
		struct grpc_chunk *c = call->q_head;
		call->q_head = c->next;
		free(c);
	}
	call->q_tail = NULL;
	assert(s->queued >= call->queued);
	s->queued -= call->queued;
	call->queued = 0;
}

void grpc__call_partial_clear(struct net_grpc_call *call)
{
	struct net_grpc_session *s = call->s;
	assert(s->recv_partial >= call->msg_cap);
	s->recv_partial -= call->msg_cap;
	free(call->msg);
	call->msg = NULL;
	call->msg_cap = call->msg_have = call->msg_len = 0;
	call->prefix_len = 0;
}

void grpc__call_free(struct net_grpc_call *call)
{
	struct net_grpc_session *s = call->s;
	assert(!call->app_owned);
	grpc_queue_clear(call);
	grpc__call_partial_clear(call);
	if (call->prev != NULL) {
		call->prev->next = call->next;
	} else {
		s->calls = call->next;
	}
	if (call->next != NULL) {
		call->next->prev = call->prev;
	}
	assert(s->n_calls > 0);
	s->n_calls--;
	free(call->pend);
	free(call->hdr);
	free(call->status_msg);
	free(call);
}

void grpc__call_cancel(struct net_grpc_call *call)
{
	if (!call->app_owned) {
		return;
	}
	call->app_owned = false;
	call->discard = true;
	void (*on_cancel)(struct net_grpc_call *, void *) = call->cb.on_cancel;
	void *user = call->user;
	call->cb = (struct net_grpc_call_callbacks){ 0 };
	if (on_cancel != NULL) {
		on_cancel(call, user);
	}
}

void grpc__call_reset(struct net_grpc_call *call, uint32_t h2_error)
{
	grpc__call_cancel(call);
	call->discard = true;
	call->ended = true;
	grpc_queue_clear(call);
	grpc__call_partial_clear(call);
	/* Only fails on allocation; the stream is then left to the connection's end. */
	(void)nghttp2_submit_rst_stream(call->s->h2, NGHTTP2_FLAG_NONE, call->id, h2_error);
	grpc_poke(call->s);
}

static int grpc_submit_headers(struct net_grpc_call *call)
{
	nghttp2_nv nva[] = {
		GRPC_NV(":status", "200", 3),
		GRPC_NV("content-type", "application/grpc", 16),
	};
	nghttp2_data_provider prd = { .source.ptr = call, .read_callback = grpc__data_read };
	int rv = nghttp2_submit_response(call->s->h2, call->id, nva, 2, &prd);
	if (rv != 0) {
		return rv;
	}
	call->headers_submitted = true;
	call->data_attached = true;
	return 0;
}

/* Makes sure queued messages and trailers will be pulled by nghttp2. */
static int grpc_kick(struct net_grpc_call *call)
{
	if (!call->headers_submitted) {
		return grpc_submit_headers(call);
	}
	if (call->data_deferred) {
		call->data_deferred = false;
		return nghttp2_session_resume_data(call->s->h2, call->id);
	}
	return 0;
}

static int grpc_status_nv(struct net_grpc_call *call, nghttp2_nv *nv, char *num, size_t numcap)
{
	int k = snprintf(num, numcap, "%d", call->status);
	assert(k > 0 && (size_t)k < numcap);
	nv[0] = (nghttp2_nv)GRPC_NV("grpc-status", num, (size_t)k);
	if (call->status_msg == NULL || call->status_msg[0] == '\0') {
		return 1;
	}
	nv[1] = (nghttp2_nv)GRPC_NV("grpc-message", call->status_msg, strlen(call->status_msg));
	return 2;
}

/* Decides the status and gets it on its way: trailers-only if nothing was sent, else after the
 * queued messages (the data provider submits the trailers when the queue is empty). */
static void grpc_end(struct net_grpc_call *call, int http_status, int status, const char *msg)
{
	assert(!call->app_owned && status >= 0);
	if (call->ended) {
		return;
	}
	call->ended = true;
	call->discard = true;
	call->status = status;
	if (msg != NULL && msg[0] != '\0') {
		char cut[NET_GRPC_MAX_STATUS_MESSAGE + 1];
		snprintf(cut, sizeof cut, "%s", msg);
		size_t cap = 3 * strlen(cut) + 1;
		call->status_msg = malloc(cap);
		if (call->status_msg != NULL) {
			int rv = net_grpc_percent_encode(cut, call->status_msg, cap);
			assert(rv >= 0);
			(void)rv;
		}
	}
	int rv;
	if (!call->headers_submitted && call->queued == 0) {
		char hs[8], num[16];
		snprintf(hs, sizeof hs, "%d", http_status);
		nghttp2_nv nva[4] = {
			GRPC_NV(":status", hs, strlen(hs)),
			GRPC_NV("content-type", "application/grpc", 16),
		};
		int k = grpc_status_nv(call, nva + 2, num, sizeof num);
		rv = nghttp2_submit_response(call->s->h2, call->id, nva, (size_t)(2 + k), NULL);
		call->headers_submitted = rv == 0;
	} else {
		rv = grpc_kick(call);
	}
	if (rv != 0) {
		(void)nghttp2_submit_rst_stream(call->s->h2, NGHTTP2_FLAG_NONE, call->id,
						NGHTTP2_INTERNAL_ERROR);
	}
	grpc_poke(call->s);
}

void grpc__call_abort(struct net_grpc_call *call, int http_status, int status, const char *msg)
{
	grpc__call_cancel(call);
	call->discard = true;
	grpc__call_partial_clear(call);
	grpc_end(call, http_status, status, msg);
}

ssize_t grpc__data_read(nghttp2_session *h2, int32_t id, uint8_t *buf, size_t length,
			uint32_t *flags, nghttp2_data_source *src, void *user)
{
	struct net_grpc_call *call = src->ptr;
	struct net_grpc_session *s = user;
	assert(call->s == s && call->id == id);
	size_t n = 0;
	while (n < length && call->q_head != NULL) {
		struct grpc_chunk *c = call->q_head;
		size_t k = c->len - c->off;
		k = k < length - n ? k : length - n;
		memcpy(buf + n, c->data + c->off, k);
		c->off += k;
		n += k;
		if (c->off == c->len) {
			call->q_head = c->next;
			if (call->q_head == NULL) {
				call->q_tail = NULL;
			}
			free(c);
		}
	}
	assert(call->queued >= n && s->queued >= n);
	call->queued -= n;
	s->queued -= n;
	if (call->q_head == NULL && call->ended) {
		/* Trailers after the data (nghttp2: submit them from here with NO_END_STREAM). */
		char num[16];
		nghttp2_nv nva[2];
		int k = grpc_status_nv(call, nva, num, sizeof num);
		*flags |= NGHTTP2_DATA_FLAG_EOF | NGHTTP2_DATA_FLAG_NO_END_STREAM;
		if (nghttp2_submit_trailer(h2, id, nva, (size_t)k) != 0) {
			return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
		}
		return (ssize_t)n;
	}
	if (n == 0) {
		call->data_deferred = true;
		return NGHTTP2_ERR_DEFERRED;
	}
	return (ssize_t)n;
}

void grpc__run_writable(struct net_grpc_session *s)
{
	if (!s->writable_pending) {
		return;
	}
	s->writable_pending = false;
	if (s->queued > s->lim->max_session_queue / 2) {
		s->writable_pending = true;
		return;
	}
	/* Cost: one pass over the connection's calls, only after some send was refused. */
	for (struct net_grpc_call *call = s->calls; call != NULL; call = call->next) {
		if (!call->want_writable) {
			continue;
		}
		if (call->queued > s->lim->max_call_queue / 2) {
			s->writable_pending = true;
			continue;
		}
		call->want_writable = false;
		if (call->app_owned && call->cb.on_writable != NULL) {
			call->cb.on_writable(call, call->user);
		}
	}
}

/* ---- local calls (grpc.h "local calls") ---- */

static void grpc_local_free(struct net_grpc_call *call)
{
	assert(call->local != NULL && !call->app_owned && call->local->released);
	free(call->local);
	free(call->hdr);
	free(call);
}

/* The handler is done: tells the caller, then frees the call if the caller let go already. */
static void grpc_local_end(struct net_grpc_call *call, int status, const char *message)
{
	struct grpc_local *lc = call->local;
	assert(!call->ended);
	call->ended = true;
	if (lc->released) {
		grpc_local_free(call);
		return;
	}
	if (lc->cb.on_finish != NULL) {
		lc->cb.on_finish(lc->user, status, message != NULL ? message : "");
	}
}

static int grpc_local_deliver(struct net_grpc_call *call, const uint8_t *data, size_t len)
{
	struct grpc_local *lc = call->local;
	if (len > lc->lim->max_send_message) {
		return NET_ETOOBIG;
	}
	if (lc->released || lc->cb.on_message == NULL) {
		return 0; /* nobody listens any more; the handler learns it from on_cancel */
	}
	int rv = lc->cb.on_message(lc->user, data, len);
	if (rv == NET_EAGAIN) {
		call->want_writable = true;
	}
	return rv;
}

int net_grpc_local_start(struct net_grpc_server *srv, const char *path,
			 const struct net_grpc_local_callbacks *cbs, void *user,
			 struct net_grpc_call **out)
{
	assert(srv != NULL && path != NULL && cbs != NULL && out != NULL);
	*out = NULL;
	size_t len = strlen(path);
	const struct grpc_method *m = grpc__lookup(srv, path, len);
	if (m == NULL) {
		return NET_EINVAL;
	}
	struct net_grpc_call *call = calloc(1, sizeof *call);
	struct grpc_local *lc = calloc(1, sizeof *lc);
	/* The path is kept the way an HTTP/2 call keeps its headers: "name\0value\0". */
	static const char key[] = ":path";
	char *hdr = malloc(sizeof key + len + 1);
	if (call == NULL || lc == NULL || hdr == NULL) {
		free(call);
		free(lc);
		free(hdr);
		return NET_ENOMEM;
	}
	memcpy(hdr, key, sizeof key);
	memcpy(hdr + sizeof key, path, len + 1);
	lc->cb = *cbs;
	lc->user = user;
	lc->lim = net_grpc_server_limits(srv);
	call->local = lc;
	call->method = m;
	call->hdr = hdr;
	call->hdr_used = (uint32_t)(sizeof key + len + 1);
	call->path = (uint32_t)sizeof key;
	call->authority = call->method_name = call->scheme = GRPC_ABSENT;
	call->content_type = call->encoding = GRPC_ABSENT;
	call->content_length = -1;
	call->app_owned = true;
	*out = call;
	m->handler(call, m->data);
	return 0;
}

int net_grpc_local_send(struct net_grpc_call *call, const uint8_t *data, size_t len)
{
	assert(call != NULL && call->local != NULL && !call->local->released);
	if (!call->app_owned || call->half_closed) {
		return NET_ECLOSED;
	}
	if (len > call->local->lim->max_recv_message) {
		return NET_ETOOBIG;
	}
	if (call->paused) {
		return NET_EAGAIN;
	}
	if (call->cb.on_message != NULL) {
		call->cb.on_message(call, data, len, call->user);
	}
	return 0;
}

void net_grpc_local_half_close(struct net_grpc_call *call)
{
	assert(call != NULL && call->local != NULL && !call->local->released);
	if (!call->app_owned || call->half_closed) {
		return;
	}
	call->half_closed = true;
	if (call->cb.on_half_close != NULL) {
		call->cb.on_half_close(call, call->user);
	}
}

void net_grpc_local_writable(struct net_grpc_call *call)
{
	assert(call != NULL && call->local != NULL && !call->local->released);
	if (!call->want_writable) {
		return;
	}
	call->want_writable = false;
	if (call->app_owned && call->cb.on_writable != NULL) {
		call->cb.on_writable(call, call->user);
	}
}

void net_grpc_local_release(struct net_grpc_call *call)
{
	assert(call != NULL && call->local != NULL && !call->local->released);
	call->local->released = true;
	if (call->app_owned) {
		grpc__call_cancel(call); /* the handler lets go in on_cancel */
		call->ended = true;
	}
	if (call->ended) {
		grpc_local_free(call);
	}
	/* Otherwise the handler still runs (it cannot, being cancelled: app_owned is false now). */
}

/* ---- public call API ---- */

void net_grpc_call_set_callbacks(struct net_grpc_call *call,
				 const struct net_grpc_call_callbacks *cbs, void *user)
{
	assert(call != NULL && call->app_owned);
	call->cb = cbs != NULL ? *cbs : (struct net_grpc_call_callbacks){ 0 };
	call->user = user;
}

void *net_grpc_call_user(const struct net_grpc_call *call)
{
	return call->user;
}

const char *net_grpc_call_path(const struct net_grpc_call *call)
{
	return call->path != GRPC_ABSENT ? call->hdr + call->path : "";
}

const char *net_grpc_call_authority(const struct net_grpc_call *call)
{
	return call->authority != GRPC_ABSENT ? call->hdr + call->authority : "";
}

const char *net_grpc_call_metadata(const struct net_grpc_call *call, const char *name)
{
	assert(name != NULL);
	uint32_t off = 0;
	while (off < call->hdr_used) {
		const char *n = call->hdr + off;
		const char *v = n + strlen(n) + 1;
		if (strcmp(n, name) == 0) {
			return v;
		}
		off = (uint32_t)(v - call->hdr) + (uint32_t)strlen(v) + 1;
	}
	return NULL;
}

int64_t net_grpc_call_timeout_ms(const struct net_grpc_call *call)
{
	return net_grpc_parse_timeout(net_grpc_call_metadata(call, "grpc-timeout"));
}

struct net_grpc_session *net_grpc_call_session(const struct net_grpc_call *call)
{
	return call->s;
}

int32_t net_grpc_call_stream_id(const struct net_grpc_call *call)
{
	return call->id;
}

size_t net_grpc_call_queued(const struct net_grpc_call *call)
{
	return call->queued;
}

int net_grpc_call_send_headers(struct net_grpc_call *call)
{
	assert(call != NULL && call->app_owned);
	if (call->local != NULL) {
		return 0;
	}
	if (call->s->fatal) {
		return NET_ECLOSED;
	}
	if (call->headers_submitted) {
		return 0;
	}
	int rv = grpc_submit_headers(call);
	if (rv != 0) {
		return rv == NGHTTP2_ERR_NOMEM ? NET_ENOMEM : NET_ECLOSED;
	}
	grpc_poke(call->s);
	return 0;
}

int net_grpc_call_send(struct net_grpc_call *call, const uint8_t *data, size_t len)
{
	assert(call != NULL && call->app_owned && !call->ended);
	assert(data != NULL || len == 0);
	if (call->local != NULL) {
		return grpc_local_deliver(call, data, len);
	}
	struct net_grpc_session *s = call->s;
	const struct net_grpc_limits *l = s->lim;
	if (s->fatal) {
		return NET_ECLOSED;
	}
	if (len > l->max_send_message) {
		return NET_ETOOBIG;
	}
	size_t framed = len + NET_GRPC_MSG_HEADER;
	if ((call->queued > 0 && call->queued + framed > l->max_call_queue) ||
	    (s->queued > 0 && s->queued + framed > l->max_session_queue)) {
		call->want_writable = true;
		s->writable_pending = true;
		return NET_EAGAIN;
	}
	struct grpc_chunk *c = malloc(sizeof *c + framed);
	if (c == NULL) {
		return NET_ENOMEM;
	}
	c->next = NULL;
	c->len = framed;
	c->off = 0;
	c->data[0] = 0; /* not compressed */
	c->data[1] = (uint8_t)(len >> 24);
	c->data[2] = (uint8_t)(len >> 16);
	c->data[3] = (uint8_t)(len >> 8);
	c->data[4] = (uint8_t)len;
	if (len > 0) {
		memcpy(c->data + NET_GRPC_MSG_HEADER, data, len);
	}
	if (call->q_tail != NULL) {
		call->q_tail->next = c;
	} else {
		call->q_head = c;
	}
	call->q_tail = c;
	call->queued += framed;
	s->queued += framed;
	int rv = grpc_kick(call);
	if (rv != 0) {
		/* The message stays queued; the stream is reset, which cancels the call. */
		(void)nghttp2_submit_rst_stream(s->h2, NGHTTP2_FLAG_NONE, call->id,
						NGHTTP2_INTERNAL_ERROR);
	}
	grpc_poke(s);
	return 0;
}

int net_grpc_call_finish(struct net_grpc_call *call, int status, const char *message)
{
	assert(call != NULL && call->app_owned && !call->ended);
	assert(status >= 0);
	call->app_owned = false;
	call->cb = (struct net_grpc_call_callbacks){ 0 };
	call->user = NULL;
	if (call->local != NULL) {
		grpc_local_end(call, status, message);
		return 0;
	}
	if (call->s->fatal) {
		return NET_ECLOSED;
	}
	grpc_end(call, 200, status, message);
	return 0;
}

/* grpc_client.c: the gRPC client over HTTP/2 (nghttp2's client session) on one net_stream. See
 * grpc_client.h for the contract.
 *
 * Shape of a connection. Calls are submitted to nghttp2 as soon as they are opened (before the
 * connection is up nghttp2 keeps them queued), so a call's headers are never stored here: nghttp2
 * copies them. Nothing is written from inside an API function: every change marks the connection
 * dirty and starts its uv_idle handle, whose callback takes all of nghttp2's pending output into
 * one buffer and hands it to the stream with one write (a burst of a thousand unary calls is one
 * write). The idle handle also runs the deferred end of the connection (calls' on_close, then
 * on_closed), so neither ever runs from inside net_grpc_conn_close().
 *
 * Call memory. A call is one allocation (for a unary call, its framed request lives in the same
 * block) plus, for streaming, a send buffer; a response message split across DATA frames is
 * reassembled in a buffer of its announced length (bounded by max_recv_message). nghttp2 keeps a
 * pointer to the call (stream user data, data source) until the stream closes, so a call the
 * user is done with (on_close returned, or cancelled) stays allocated, without callbacks, until
 * nghttp2 reports the stream closed; the RST_STREAM that a cancel queues closes it at the next
 * write. Everything left is freed with the connection.
 *
 * Time. One uv_timer per connection: the earliest call deadline (a binary min-heap of calls,
 * O(log n) per call) and the keepalive clock. */
#include "grpc_client.h"

#include <assert.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nghttp2/nghttp2.h>

#include "stream.h"
#include "tls_filter.h"

#define DEF_CONNECT_TIMEOUT_MS 5000
#define DEF_MAX_MESSAGE (64u << 20)
#define DEF_MAX_CALL_QUEUE (8u << 20)
#define DEF_WINDOW (1u << 20)
#define DEF_CONN_WINDOW (16u << 20)
#define DEF_MAX_CALLS 16384u
#define DEF_KEEPALIVE_TIMEOUT_MS 5000
#define MAX_CALLS_BOUND (1u << 20)
#define MAX_WINDOW ((1u << 31) - 1)

/* Bytes taken from nghttp2 per stream write, and the stream's queue bound (4 batches). */
#define WRITE_BATCH ((size_t)256 << 10)
#define STREAM_HIGH_WATER ((size_t)1 << 20)
#define STREAM_READ_BUF ((size_t)256 << 10)

/* Metadata pairs per call (bounds the stack array of header fields). */
#define MAX_METADATA 64
#define FIXED_HEADERS 8
/* A streaming call's send buffer is kept for reuse up to this size when it empties. */
#define SBUF_KEEP ((size_t)64 << 10)
#define SBUF_MIN ((size_t)4 << 10)
#define RBUF_MIN ((size_t)16 << 10)
/* Response headers we accept (SETTINGS_MAX_HEADER_LIST_SIZE). */
#define MAX_HEADER_LIST (64u << 10)
#define LOG_LINE_MAX 320

_Static_assert(NET_GRPC_MSG_HEADER == 5, "gRPC length prefix");

enum conn_state {
	S_CONNECTING, /* TCP (and TLS) in progress; calls wait in nghttp2's queue */
	S_READY,      /* on_ready has run */
	S_CLOSED,     /* failed or closed: the idle callback ends calls and runs on_closed */
	S_DONE,       /* on_closed has run; freed once the handles are closed */
};

struct net_grpc_ccall {
	struct net_grpc_conn *c;
	struct net_grpc_ccall *prev, *next; /* every allocated call of the connection */
	struct net_grpc_ccall *done_next;   /* status known, on_close to deliver */
	struct net_grpc_ccall *wnext;       /* on_writable to deliver */
	struct net_grpc_ccall_cbs cbs;
	void *user;
	int32_t id;
	size_t heap_idx; /* SIZE_MAX: no deadline pending */
	uint64_t deadline;

	/* Request messages, framed: bytes [soff, slen) of sbuf are still to go. */
	uint8_t *sbuf;
	size_t soff, slen, scap;
	bool sbuf_inline; /* sbuf is inside the call's own block */

	/* Response reassembly. */
	uint8_t hdr[NET_GRPC_MSG_HEADER];
	uint8_t hdr_got;
	uint32_t mlen; /* length of the message being received */
	uint8_t *rbuf;
	size_t rlen, rcap;

	int status; /* final status once known, -1 before */
	char *smsg; /* grpc-message (decoded) or a local reason; NULL: "" */
	int http_status;

	bool sent;          /* request HEADERS went out */
	bool half_closed;   /* no more request messages */
	bool deferred;      /* the data source said DEFERRED: resume on send */
	bool want_writable; /* a send said NET_EAGAIN */
	bool reported;      /* on_close ran or the user cancelled: no more callbacks */
	bool h2_closed;     /* nghttp2 no longer refers to the call */
	bool in_done, in_wlist;
	bool unprocessed;
	bool counted; /* counts in n_calls */
};

struct net_grpc_conn {
	uv_loop_t *loop;
	struct net_grpc_conn_opts opts;
	struct net_grpc_conn_cbs cbs;
	void *data;
	char *url;
	char *authority;
	struct net_url purl;
	struct net_tls_filter_ctx fctx;
	struct net_stream *stream;
	nghttp2_session *h2;
	uv_timer_t timer;
	uv_idle_t idle;
	int handles; /* stream, timer, idle not yet through their close callbacks */
	enum conn_state state;
	int err;
	bool user_closed;
	bool dirty;    /* nghttp2 may have output, or writables/drain checks are due */
	bool blocked;  /* the stream said NET_EAGAIN: wait for on_drained */
	bool in_recv;  /* inside nghttp2_session_mem_recv */
	bool draining; /* GOAWAY received */
	int32_t goaway_last;
	uint32_t goaway_code;

	struct net_grpc_ccall *calls; /* every allocated call */
	size_t n_alloc;
	size_t n_calls; /* open for the user */
	struct net_grpc_ccall *done_head, *done_tail;
	struct net_grpc_ccall *w_head, *w_tail;

	struct net_grpc_ccall **heap;
	size_t n_heap, heap_cap;
	uint64_t armed_at; /* UINT64_MAX: timer stopped */

	uint64_t last_read;
	uint64_t ping_at; /* when the outstanding PING went out */
	bool ping_out;

	uint8_t *out;
	size_t out_len, out_cap;

	char why[NET_TLS_ERRMSG_MAX]; /* the TLS layer's reason for the last failure, "" if none */
};

/* ---- logging ---- */

static void gc_log(struct net_grpc_conn *c, enum net_log_level level, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void gc_log(struct net_grpc_conn *c, enum net_log_level level, const char *fmt, ...)
{
	if (c->opts.log == NULL) {
		return;
	}
	char line[LOG_LINE_MAX];
	int n = snprintf(line, sizeof line, "grpc client %s: ", c->url);
	size_t off = n > 0 && (size_t)n < sizeof line ? (size_t)n : 0;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(line + off, sizeof line - off, fmt, ap);
	va_end(ap);
	c->opts.log(c->opts.log_data, level, line);
}

/* ---- time, kicks, messages ---- */

static uint64_t now_ms(const struct net_grpc_conn *c)
{
	return uv_now(c->loop);
}

static void conn_idle_cb(uv_idle_t *h);

/* Something to write or deliver: the idle callback runs on this loop turn. */
static void conn_kick(struct net_grpc_conn *c)
{
	c->dirty = true;
	if (c->state != S_DONE) {
		uv_idle_start(&c->idle, conn_idle_cb);
	}
}

static void conn_fail(struct net_grpc_conn *c, int err);

static void call_set_msg(struct net_grpc_ccall *call, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void call_set_msg(struct net_grpc_ccall *call, const char *fmt, ...)
{
	char line[LOG_LINE_MAX];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(line, sizeof line, fmt, ap);
	va_end(ap);
	free(call->smsg);
	call->smsg = strdup(line); /* NULL on ENOMEM: the status still stands, with "" */
}

/* ---- deadline heap ---- */

static bool heap_less(const struct net_grpc_conn *c, size_t a, size_t b)
{
	return c->heap[a]->deadline < c->heap[b]->deadline;
}

static void heap_swap(struct net_grpc_conn *c, size_t a, size_t b)
{
	struct net_grpc_ccall *t = c->heap[a];
	c->heap[a] = c->heap[b];
	c->heap[b] = t;
	c->heap[a]->heap_idx = a;
	c->heap[b]->heap_idx = b;
}

static void heap_up(struct net_grpc_conn *c, size_t i)
{
	while (i > 0 && heap_less(c, i, (i - 1) / 2)) {
		heap_swap(c, i, (i - 1) / 2);
		i = (i - 1) / 2;
	}
}

static void heap_down(struct net_grpc_conn *c, size_t i)
{
	for (;;) {
		size_t l = 2 * i + 1, r = l + 1, m = i;
		if (l < c->n_heap && heap_less(c, l, m)) {
			m = l;
		}
		if (r < c->n_heap && heap_less(c, r, m)) {
			m = r;
		}
		if (m == i) {
			return;
		}
		heap_swap(c, i, m);
		i = m;
	}
}

static int heap_push(struct net_grpc_conn *c, struct net_grpc_ccall *call)
{
	if (c->n_heap == c->heap_cap) {
		size_t cap = c->heap_cap == 0 ? 64 : c->heap_cap * 2;
		struct net_grpc_ccall **h = realloc(c->heap, cap * sizeof *h);
		if (h == NULL) {
			return NET_ENOMEM;
		}
		c->heap = h;
		c->heap_cap = cap;
	}
	call->heap_idx = c->n_heap;
	c->heap[c->n_heap++] = call;
	heap_up(c, call->heap_idx);
	return 0;
}

static void heap_remove(struct net_grpc_conn *c, struct net_grpc_ccall *call)
{
	size_t i = call->heap_idx;
	if (i == SIZE_MAX) {
		return;
	}
	assert(i < c->n_heap && c->heap[i] == call);
	call->heap_idx = SIZE_MAX;
	c->n_heap--;
	if (i == c->n_heap) {
		return;
	}
	c->heap[i] = c->heap[c->n_heap];
	c->heap[i]->heap_idx = i;
	heap_down(c, i);
	heap_up(c, i);
}

/* ---- the timer: call deadlines and keepalive ---- */

static void conn_timer_cb(uv_timer_t *t);

static uint64_t conn_next_time(const struct net_grpc_conn *c)
{
	uint64_t at = UINT64_MAX;
	if (c->n_heap > 0) {
		at = c->heap[0]->deadline;
	}
	if (c->state == S_READY && c->opts.keepalive_ms > 0) {
		uint64_t k = c->ping_out ? c->ping_at + c->opts.keepalive_timeout_ms :
					   c->last_read + c->opts.keepalive_ms;
		if (k < at) {
			at = k;
		}
	}
	return at;
}

static void conn_arm(struct net_grpc_conn *c)
{
	if (c->state != S_CONNECTING && c->state != S_READY) {
		return;
	}
	uint64_t at = conn_next_time(c);
	if (at == c->armed_at) {
		return;
	}
	c->armed_at = at;
	if (at == UINT64_MAX) {
		uv_timer_stop(&c->timer);
		return;
	}
	uint64_t now = now_ms(c);
	uv_timer_start(&c->timer, conn_timer_cb, at > now ? at - now : 0, 0);
}

/* ---- call lifetime ---- */

static void call_free(struct net_grpc_ccall *call)
{
	struct net_grpc_conn *c = call->c;
	if (call->prev != NULL) {
		call->prev->next = call->next;
	} else {
		c->calls = call->next;
	}
	if (call->next != NULL) {
		call->next->prev = call->prev;
	}
	assert(c->n_alloc > 0);
	c->n_alloc--;
	if (!call->sbuf_inline) {
		free(call->sbuf);
	}
	free(call->rbuf);
	free(call->smsg);
	free(call);
}

/* Frees the call once neither the user nor nghttp2 nor a pending list refers to it. While the
 * connection is closing, the teardown frees every call at its end instead. */
static void call_maybe_free(struct net_grpc_ccall *call)
{
	if (call->reported && call->h2_closed && !call->in_done && !call->in_wlist &&
	    (call->c->state == S_CONNECTING || call->c->state == S_READY)) {
		call_free(call);
	}
}

/* The user lets go of the call (on_close about to run, or cancel). */
static void call_unreport(struct net_grpc_ccall *call)
{
	struct net_grpc_conn *c = call->c;
	assert(!call->reported);
	call->reported = true;
	heap_remove(c, call);
	if (call->counted) {
		call->counted = false;
		assert(c->n_calls > 0);
		c->n_calls--;
	}
	if (c->draining && c->n_calls == 0) {
		conn_kick(c); /* the drained connection ends from the idle callback */
	}
}

/* Runs on_close with the call's final status; the call is gone for the user afterwards. */
static void call_deliver_close(struct net_grpc_ccall *call)
{
	call_unreport(call);
	int status = call->status >= 0 ? call->status : NET_GRPC_UNKNOWN;
	call->cbs.on_close(call, status, call->smsg != NULL ? call->smsg : "", call->user);
}

/* The call's status is known inside an nghttp2 callback: on_close runs after mem_recv. */
static void call_done_push(struct net_grpc_ccall *call)
{
	struct net_grpc_conn *c = call->c;
	if (call->in_done || call->reported) {
		return;
	}
	call->in_done = true;
	call->done_next = NULL;
	if (c->done_tail != NULL) {
		c->done_tail->done_next = call;
	} else {
		c->done_head = call;
	}
	c->done_tail = call;
}

static void conn_deliver_done(struct net_grpc_conn *c)
{
	while (c->done_head != NULL && (c->state == S_READY || c->state == S_CONNECTING)) {
		struct net_grpc_ccall *call = c->done_head;
		c->done_head = call->done_next;
		if (c->done_head == NULL) {
			c->done_tail = NULL;
		}
		call->in_done = false;
		if (!call->reported) {
			call_deliver_close(call);
		}
		call_maybe_free(call);
	}
}

/* Ends a call here with a local status (deadline, protocol breach): resets the stream. */
static void call_reset(struct net_grpc_ccall *call, uint32_t code)
{
	struct net_grpc_conn *c = call->c;
	if (!call->h2_closed && c->h2 != NULL) {
		int rv = nghttp2_submit_rst_stream(c->h2, NGHTTP2_FLAG_NONE, call->id, code);
		if (nghttp2_is_fatal(rv)) {
			conn_fail(c, NET_ENOMEM);
			return;
		}
		conn_kick(c);
	}
}

static void call_fail_local(struct net_grpc_ccall *call, int status, const char *why)
{
	if (call->status < 0) {
		call->status = status;
		call_set_msg(call, "%s", why);
	}
	call_reset(call, NGHTTP2_CANCEL);
	call_done_push(call);
}

/* ---- nghttp2 callbacks ---- */

static struct net_grpc_ccall *stream_call(nghttp2_session *h2, int32_t id)
{
	return nghttp2_session_get_stream_user_data(h2, id);
}

static void percent_decode(const char *in, size_t len, char *out, size_t cap)
{
	size_t o = 0;
	for (size_t i = 0; i < len && o + 1 < cap; i++) {
		if (in[i] == '%' && i + 2 < len) {
			int hi = (unsigned char)in[i + 1], lo = (unsigned char)in[i + 2];
			int h = hi >= '0' && hi <= '9' ? hi - '0' :
				hi >= 'A' && hi <= 'F' ? hi - 'A' + 10 :
				hi >= 'a' && hi <= 'f' ? hi - 'a' + 10 :
							 -1;
			int l = lo >= '0' && lo <= '9' ? lo - '0' :
				lo >= 'A' && lo <= 'F' ? lo - 'A' + 10 :
				lo >= 'a' && lo <= 'f' ? lo - 'a' + 10 :
							 -1;
			if (h >= 0 && l >= 0) {
				out[o++] = (char)(h * 16 + l);
				i += 2;
				continue;
			}
		}
		out[o++] = in[i];
	}
	out[o] = '\0';
}

static int h2_on_header(nghttp2_session *h2, const nghttp2_frame *frame, const uint8_t *name,
			size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
			void *user)
{
	(void)flags;
	(void)user;
	if (frame->hd.type != NGHTTP2_HEADERS) {
		return 0;
	}
	struct net_grpc_ccall *call = stream_call(h2, frame->hd.stream_id);
	if (call == NULL || call->reported || call->in_done) {
		return 0;
	}
	if (namelen == 7 && memcmp(name, ":status", 7) == 0) {
		int st = 0;
		for (size_t i = 0; i < valuelen && i < 3; i++) {
			st = st * 10 + (value[i] - '0');
		}
		call->http_status = st;
	} else if (namelen == 11 && memcmp(name, "grpc-status", 11) == 0) {
		int st = 0;
		bool ok = valuelen > 0 && valuelen <= 3;
		for (size_t i = 0; ok && i < valuelen; i++) {
			ok = value[i] >= '0' && value[i] <= '9';
			st = st * 10 + (value[i] - '0');
		}
		call->status = ok && st <= NET_GRPC_UNAUTHENTICATED ? st : NET_GRPC_UNKNOWN;
	} else if (namelen == 12 && memcmp(name, "grpc-message", 12) == 0) {
		size_t cap = valuelen + 1 < NET_GRPC_MAX_STATUS_MESSAGE ?
				     valuelen + 1 :
				     NET_GRPC_MAX_STATUS_MESSAGE;
		char *m = malloc(cap);
		if (m != NULL) {
			percent_decode((const char *)value, valuelen, m, cap);
			free(call->smsg);
			call->smsg = m;
		}
	}
	return 0;
}

/* Hands one whole message to the user. false: stop delivering to this call (cancelled, closed). */
static bool call_deliver(struct net_grpc_ccall *call, const uint8_t *p, size_t n)
{
	struct net_grpc_conn *c = call->c;
	if (call->cbs.on_message != NULL) {
		call->cbs.on_message(call, p, n, call->user);
	}
	return !call->reported && !call->in_done && c->state != S_CLOSED;
}

/* The length prefix is complete: checks it. false when the call was ended. */
static bool call_prefix(struct net_grpc_ccall *call)
{
	struct net_grpc_conn *c = call->c;
	call->mlen = (uint32_t)call->hdr[1] << 24 | (uint32_t)call->hdr[2] << 16 |
		     (uint32_t)call->hdr[3] << 8 | (uint32_t)call->hdr[4];
	call->rlen = 0;
	if (call->hdr[0] != 0) {
		call_fail_local(call, NET_GRPC_INTERNAL,
				call->hdr[0] == 1 ? "compressed response message not supported" :
						    "bad message flag in response");
		return false;
	}
	if (call->mlen > c->opts.max_recv_message) {
		char why[128];
		snprintf(why, sizeof why,
			 "received message larger than max (%" PRIu32 " vs. %" PRIu32 ")",
			 call->mlen, c->opts.max_recv_message);
		call_fail_local(call, NET_GRPC_INTERNAL, why);
		return false;
	}
	return true;
}

/* Splits response bytes into messages; a message inside one chunk is delivered in place. */
static void call_recv(struct net_grpc_ccall *call, const uint8_t *p, size_t n)
{
	while (n > 0) {
		if (call->hdr_got < NET_GRPC_MSG_HEADER) {
			size_t k = NET_GRPC_MSG_HEADER - call->hdr_got;
			k = k < n ? k : n;
			memcpy(call->hdr + call->hdr_got, p, k);
			call->hdr_got = (uint8_t)(call->hdr_got + k);
			p += k;
			n -= k;
			if (call->hdr_got < NET_GRPC_MSG_HEADER) {
				return;
			}
			if (!call_prefix(call)) {
				return;
			}
			if (call->mlen > 0) {
				continue;
			}
			call->hdr_got = 0;
			if (!call_deliver(call, p, 0)) {
				return;
			}
			continue;
		}
		size_t need = call->mlen - call->rlen;
		if (call->rlen == 0 && n >= need) {
			call->hdr_got = 0;
			const uint8_t *m = p;
			p += need;
			n -= need;
			if (!call_deliver(call, m, need)) {
				return;
			}
			continue;
		}
		size_t k = need < n ? need : n;
		if (call->rcap < call->rlen + k) {
			/* Grown as bytes arrive (doubling, up to the announced length), so a peer
			 * that announces a large message holds only what it actually sent. */
			size_t cap = call->rcap < RBUF_MIN ? RBUF_MIN : call->rcap;
			while (cap < call->rlen + k) {
				cap *= 2;
			}
			cap = cap < call->mlen ? cap : call->mlen;
			uint8_t *b = realloc(call->rbuf, cap);
			if (b == NULL) {
				call_fail_local(call, NET_GRPC_RESOURCE_EXHAUSTED,
						"out of memory for a response message");
				return;
			}
			call->rbuf = b;
			call->rcap = cap;
		}
		memcpy(call->rbuf + call->rlen, p, k);
		call->rlen += k;
		p += k;
		n -= k;
		if (call->rlen == call->mlen) {
			call->hdr_got = 0;
			call->rlen = 0;
			bool go = call_deliver(call, call->rbuf, call->mlen);
			if (call->rcap > SBUF_KEEP) {
				free(call->rbuf);
				call->rbuf = NULL;
				call->rcap = 0;
			}
			if (!go) {
				return;
			}
		}
	}
}

static int h2_on_data(nghttp2_session *h2, uint8_t flags, int32_t id, const uint8_t *data,
		      size_t len, void *user)
{
	(void)flags;
	struct net_grpc_conn *c = user;
	struct net_grpc_ccall *call = stream_call(h2, id);
	if (call != NULL && !call->reported && !call->in_done) {
		if (call->http_status != 200) {
			call_fail_local(call, NET_GRPC_INTERNAL, "data before response headers");
		} else {
			call_recv(call, data, len);
		}
	}
	/* Delivered or buffered within max_recv_message: the window goes back at once. */
	int rv = nghttp2_session_consume(h2, id, len);
	if (nghttp2_is_fatal(rv)) {
		return NGHTTP2_ERR_CALLBACK_FAILURE;
	}
	return c->state == S_CLOSED ? NGHTTP2_ERR_CALLBACK_FAILURE : 0;
}

static int h2_on_frame_recv(nghttp2_session *h2, const nghttp2_frame *frame, void *user)
{
	(void)h2;
	struct net_grpc_conn *c = user;
	switch (frame->hd.type) {
	case NGHTTP2_GOAWAY:
		if (!c->draining) {
			gc_log(c, NET_LOG_INFO,
			       "GOAWAY received (last stream %" PRId32 ", code %" PRIu32 ")",
			       frame->goaway.last_stream_id, frame->goaway.error_code);
		}
		c->draining = true;
		c->goaway_last = frame->goaway.last_stream_id;
		if (frame->goaway.error_code != NGHTTP2_NO_ERROR) {
			c->goaway_code = frame->goaway.error_code;
		}
		break;
	case NGHTTP2_PING:
		if (frame->hd.flags & NGHTTP2_FLAG_ACK) {
			c->ping_out = false;
		}
		break;
	default:
		break;
	}
	return 0;
}

static int h2_on_frame_send(nghttp2_session *h2, const nghttp2_frame *frame, void *user)
{
	(void)user;
	if (frame->hd.type == NGHTTP2_HEADERS && frame->headers.cat == NGHTTP2_HCAT_REQUEST) {
		struct net_grpc_ccall *call = stream_call(h2, frame->hd.stream_id);
		if (call != NULL) {
			call->sent = true;
		}
	}
	return 0;
}

/* RFC 9113 §7 codes as gRPC statuses (grpc/grpc doc/PROTOCOL-HTTP2.md, "Errors"). */
static int h2_code_status(uint32_t code)
{
	switch (code) {
	case NGHTTP2_REFUSED_STREAM:
		return NET_GRPC_UNAVAILABLE;
	case NGHTTP2_CANCEL:
		return NET_GRPC_CANCELLED;
	case NGHTTP2_ENHANCE_YOUR_CALM:
		return NET_GRPC_RESOURCE_EXHAUSTED;
	case NGHTTP2_INADEQUATE_SECURITY:
		return NET_GRPC_PERMISSION_DENIED;
	default:
		return NET_GRPC_INTERNAL;
	}
}

static int h2_on_stream_close(nghttp2_session *h2, int32_t id, uint32_t code, void *user)
{
	(void)user;
	struct net_grpc_ccall *call = stream_call(h2, id);
	if (call == NULL) {
		return 0;
	}
	struct net_grpc_conn *c = call->c;
	call->h2_closed = true;
	if (!call->reported && !call->in_done) {
		bool refused = code == NGHTTP2_REFUSED_STREAM || !call->sent ||
			       (c->draining && id > c->goaway_last);
		if (call->status >= 0 && call->http_status == 200 && call->hdr_got > 0) {
			call->status = NET_GRPC_INTERNAL;
			call_set_msg(call, "stream ended inside a response message");
		} else if (call->status >= 0 && call->http_status == 200) {
			/* The server's grpc-status. */
		} else if (refused) {
			call->unprocessed = true;
			call->status = NET_GRPC_UNAVAILABLE;
			call_set_msg(call, "stream refused by the server (not processed)");
		} else if (code != NGHTTP2_NO_ERROR) {
			call->status = h2_code_status(code);
			call_set_msg(call,
				     "stream reset by the server (HTTP/2 error code %" PRIu32 ")",
				     code);
		} else if (call->http_status != 200) {
			call->status = NET_GRPC_INTERNAL;
			call_set_msg(call, "unexpected HTTP status code %d", call->http_status);
		} else {
			call->status = NET_GRPC_INTERNAL;
			call_set_msg(call, "server closed the stream without sending trailers");
		}
		call_done_push(call);
	}
	call_maybe_free(call);
	return 0;
}

/* The request body: framed messages out of the call's send buffer. */
static ssize_t h2_read(nghttp2_session *h2, int32_t id, uint8_t *buf, size_t length,
		       uint32_t *flags, nghttp2_data_source *src, void *user)
{
	(void)h2;
	(void)id;
	struct net_grpc_conn *c = user;
	struct net_grpc_ccall *call = src->ptr;
	if (call->reported) {
		/* Cancelled or expired: the RST_STREAM queued behind ends the stream. */
		return NGHTTP2_ERR_DEFERRED;
	}
	size_t avail = call->slen - call->soff;
	size_t n = avail < length ? avail : length;
	if (n > 0) /* an empty queue may have no buffer at all */
		memcpy(buf, call->sbuf + call->soff, n);
	call->soff += n;
	if (call->soff == call->slen) {
		call->soff = call->slen = 0;
		if (!call->sbuf_inline && call->scap > SBUF_KEEP) {
			free(call->sbuf);
			call->sbuf = NULL;
			call->scap = 0;
		}
		if (call->half_closed) {
			*flags |= NGHTTP2_DATA_FLAG_EOF;
		} else if (n == 0) {
			call->deferred = true;
			return NGHTTP2_ERR_DEFERRED;
		}
	}
	if (call->want_writable && !call->in_wlist &&
	    call->slen - call->soff <= c->opts.max_call_queue / 2) {
		call->in_wlist = true;
		call->wnext = NULL;
		if (c->w_tail != NULL) {
			c->w_tail->wnext = call;
		} else {
			c->w_head = call;
		}
		c->w_tail = call;
	}
	return (ssize_t)n;
}

/* ---- output ---- */

/* Takes all of nghttp2's pending output into one buffer and writes it with one stream write. */
static void conn_flush(struct net_grpc_conn *c)
{
	if (c->state != S_READY || c->h2 == NULL) {
		return;
	}
	while (!c->blocked) {
		while (c->out_len < WRITE_BATCH) {
			const uint8_t *p = NULL;
			ssize_t n = nghttp2_session_mem_send(c->h2, &p);
			if (n < 0) {
				gc_log(c, NET_LOG_WARN, "HTTP/2 send failed: %s",
				       nghttp2_strerror((int)n));
				conn_fail(c, NET_EPROTO);
				return;
			}
			if (n == 0) {
				break;
			}
			if (c->out_cap - c->out_len < (size_t)n) {
				size_t cap = c->out_len + (size_t)n;
				cap = cap < WRITE_BATCH + (64u << 10) ? WRITE_BATCH + (64u << 10) :
									cap;
				uint8_t *b = realloc(c->out, cap);
				if (b == NULL) {
					conn_fail(c, NET_ENOMEM);
					return;
				}
				c->out = b;
				c->out_cap = cap;
			}
			memcpy(c->out + c->out_len, p, (size_t)n);
			c->out_len += (size_t)n;
		}
		if (c->out_len == 0) {
			return;
		}
		int rv = net_stream_write(c->stream, c->out, c->out_len);
		if (rv == NET_EAGAIN) {
			c->blocked = true; /* the batch stays; on_drained resumes */
			return;
		}
		if (rv != 0) {
			conn_fail(c, rv);
			return;
		}
		c->out_len = 0;
	}
}

static void conn_run_writables(struct net_grpc_conn *c)
{
	/* Only the calls queued now: a callback that makes another writable waits a turn. */
	struct net_grpc_ccall *end = c->w_tail;
	while (c->w_head != NULL && (c->state == S_READY || c->state == S_CONNECTING)) {
		struct net_grpc_ccall *call = c->w_head;
		c->w_head = call->wnext;
		if (c->w_head == NULL) {
			c->w_tail = NULL;
		}
		call->in_wlist = false;
		if (!call->reported && call->want_writable) {
			call->want_writable = false;
			if (call->cbs.on_writable != NULL) {
				call->cbs.on_writable(call, call->user);
			}
		}
		call_maybe_free(call);
		if (call == end) {
			break;
		}
	}
}

/* ---- teardown ---- */

static void conn_free_if_unused(struct net_grpc_conn *c)
{
	if (c->state != S_DONE || c->handles > 0) {
		return;
	}
	free(c->heap);
	free(c->out);
	free(c->url);
	free(c->authority);
	free(c);
}

static void conn_handle_closed(uv_handle_t *h)
{
	struct net_grpc_conn *c = h->data;
	c->handles--;
	conn_free_if_unused(c);
}

/* Ends every call still open (UNAVAILABLE unless its status is known), runs on_closed, frees the
 * calls and the session, closes the handles. Runs from the idle callback only. */
static void conn_teardown(struct net_grpc_conn *c)
{
	assert(c->state == S_CLOSED);
	c->done_head = c->done_tail = NULL;
	c->w_head = c->w_tail = NULL;
	for (struct net_grpc_ccall *call = c->calls; call != NULL && !c->user_closed;
	     call = call->next) {
		call->in_done = false;
		call->in_wlist = false;
		if (call->reported) {
			continue;
		}
		if (call->status < 0) {
			call->status = NET_GRPC_UNAVAILABLE;
			call->unprocessed =
				!call->sent || (c->draining && call->id > c->goaway_last);
			if (c->err != 0) {
				call_set_msg(call, "connection to %s lost: %s%s%s", c->url,
					     net_strerror(c->err), c->why[0] != '\0' ? ": " : "",
					     c->why);
			} else {
				call_set_msg(call, "connection to %s closed", c->url);
			}
		}
		call_deliver_close(call);
	}
	c->cbs.on_closed(c, c->err, c->data);
	c->state = S_DONE;
	while (c->calls != NULL) {
		call_free(c->calls);
	}
	if (c->h2 != NULL) {
		nghttp2_session_del(c->h2);
		c->h2 = NULL;
	}
	uv_close((uv_handle_t *)&c->timer, conn_handle_closed);
	uv_close((uv_handle_t *)&c->idle, conn_handle_closed);
	conn_free_if_unused(c);
}

/* The connection is over (err 0: a clean end). The rest happens from the idle callback. */
static void conn_fail(struct net_grpc_conn *c, int err)
{
	if (c->state == S_CLOSED || c->state == S_DONE) {
		return;
	}
	if (err != 0) {
		gc_log(c, NET_LOG_WARN, "connection closed: %s%s%s", net_strerror(err),
		       c->why[0] != '\0' ? ": " : "", c->why);
	}
	c->state = S_CLOSED;
	c->err = err;
	if (c->stream != NULL) {
		net_stream_close(c->stream);
	}
	uv_timer_stop(&c->timer);
	c->armed_at = UINT64_MAX;
	uv_idle_start(&c->idle, conn_idle_cb);
}

/* After a GOAWAY, the connection ends once the last call has. */
static void conn_check_drained(struct net_grpc_conn *c)
{
	if ((c->state == S_READY || c->state == S_CONNECTING) && c->draining && c->n_calls == 0) {
		conn_flush(c);
		conn_fail(c, c->goaway_code != 0 ? NET_EPROTO : 0);
	}
}

static void conn_idle_cb(uv_idle_t *h)
{
	struct net_grpc_conn *c = h->data;
	uv_idle_stop(&c->idle);
	if (c->state == S_CLOSED) {
		conn_teardown(c);
		return;
	}
	if (c->state == S_DONE) {
		return;
	}
	/* A few rounds: a writable callback may queue more; beyond that the idle runs again. */
	for (int round = 0; round < 4 && c->dirty && c->state != S_CLOSED; round++) {
		c->dirty = false;
		conn_flush(c);
		conn_run_writables(c);
		conn_check_drained(c);
	}
	if (c->state == S_CLOSED) {
		conn_teardown(c);
		return;
	}
	if (c->dirty || c->w_head != NULL) {
		c->dirty = true;
		uv_idle_start(&c->idle, conn_idle_cb);
	}
	conn_arm(c);
}

/* ---- TLS: tls_filter.h's filter, wrapped to keep the TLS reason and to check ALPN ---- */

/* The stream hides its filter, so the failure reason (OpenSSL's words: "certificate verify
 * failed ...") would be lost; the wrapper copies it into the connection for the log line and
 * the calls' messages. It also refuses a server that did not select "h2": speaking HTTP/2 to
 * it would fail later with a less useful error. */
struct tls_wrap {
	struct net_filter inner;
	struct net_grpc_conn *c; /* outlives the stream: freed after the stream's on_close */
};

static int tw_check(struct tls_wrap *w, int rv)
{
	if (rv < 0 && w->c->why[0] == '\0' && net_tls_failed(w->inner.impl) != 0) {
		snprintf(w->c->why, sizeof w->c->why, "%s", net_tls_errmsg(w->inner.impl));
	}
	return rv;
}

static int tw_feed(void *impl, const uint8_t *buf, size_t len, size_t *used)
{
	struct tls_wrap *w = impl;
	return tw_check(w, w->inner.ops->feed(w->inner.impl, buf, len, used));
}

static int tw_feed_eof(void *impl)
{
	struct tls_wrap *w = impl;
	return tw_check(w, w->inner.ops->feed_eof(w->inner.impl));
}

static int tw_read(void *impl, uint8_t *buf, size_t cap, size_t *n)
{
	struct tls_wrap *w = impl;
	return tw_check(w, w->inner.ops->read(w->inner.impl, buf, cap, n));
}

static int tw_write(void *impl, const uint8_t *buf, size_t len)
{
	struct tls_wrap *w = impl;
	return tw_check(w, w->inner.ops->write(w->inner.impl, buf, len));
}

static int tw_take(void *impl, uint8_t *buf, size_t cap, size_t *n)
{
	struct tls_wrap *w = impl;
	return tw_check(w, w->inner.ops->take(w->inner.impl, buf, cap, n));
}

static int tw_done(void *impl)
{
	struct tls_wrap *w = impl;
	int rv = tw_check(w, w->inner.ops->handshake_done(w->inner.impl));
	if (rv == 1) {
		const char *alpn = net_tls_alpn(w->inner.impl);
		if (strcmp(alpn, "h2") != 0) {
			snprintf(w->c->why, sizeof w->c->why,
				 "the server did not select ALPN \"h2\" (got \"%s\")", alpn);
			return NET_EPROTO;
		}
	}
	return rv;
}

static int tw_shutdown(void *impl)
{
	struct tls_wrap *w = impl;
	return w->inner.ops->shutdown != NULL ? w->inner.ops->shutdown(w->inner.impl) : 0;
}

static void tw_destroy(void *impl)
{
	struct tls_wrap *w = impl;
	w->inner.ops->destroy(w->inner.impl);
	free(w);
}

static const struct net_filter_ops tls_wrap_ops = {
	.feed = tw_feed,
	.feed_eof = tw_feed_eof,
	.read = tw_read,
	.write = tw_write,
	.take = tw_take,
	.handshake_done = tw_done,
	.shutdown = tw_shutdown,
	.destroy = tw_destroy,
};

static int tls_wrap_factory(void *ctx, bool server, const char *host, struct net_filter *out)
{
	struct net_grpc_conn *c = ctx;
	assert(!server);
	struct tls_wrap *w = calloc(1, sizeof *w);
	if (w == NULL) {
		return NET_ENOMEM;
	}
	int rv = net_tls_filter_factory(&c->fctx, server, host, &w->inner);
	if (rv != 0) {
		free(w);
		return rv;
	}
	w->c = c;
	out->ops = &tls_wrap_ops;
	out->impl = w;
	return 0;
}

/* ---- stream callbacks ---- */

static void st_on_connect(struct net_stream *s, int status)
{
	struct net_grpc_conn *c = net_stream_data(s);
	if (c->state != S_CONNECTING) {
		return;
	}
	if (status != 0) {
		conn_fail(c, status);
		return;
	}
	c->state = S_READY;
	c->last_read = now_ms(c);
	conn_kick(c);
	c->armed_at = 0; /* force a re-arm: keepalive starts now */
	conn_arm(c);
	if (c->cbs.on_ready != NULL) {
		c->cbs.on_ready(c, c->data);
	}
}

static void st_on_read(struct net_stream *s, const uint8_t *buf, size_t len)
{
	struct net_grpc_conn *c = net_stream_data(s);
	if (c->state != S_READY) {
		return;
	}
	c->last_read = now_ms(c);
	c->ping_out = false; /* any frame counts as an answer */
	c->in_recv = true;
	ssize_t rv = nghttp2_session_mem_recv(c->h2, buf, len);
	c->in_recv = false;
	if (c->state != S_READY) {
		return;
	}
	if (rv < 0) {
		gc_log(c, NET_LOG_WARN, "HTTP/2 receive failed: %s", nghttp2_strerror((int)rv));
		conn_flush(c); /* nghttp2's GOAWAY, best effort */
		conn_fail(c, NET_EPROTO);
		return;
	}
	conn_deliver_done(c);
	if (c->state != S_READY) {
		return;
	}
	conn_kick(c);
}

static void st_on_error(struct net_stream *s, int err)
{
	struct net_grpc_conn *c = net_stream_data(s);
	if (err == NET_ECLOSED && c->draining && c->goaway_code == 0) {
		err = 0;
	}
	conn_fail(c, err);
}

static void st_on_drained(struct net_stream *s)
{
	struct net_grpc_conn *c = net_stream_data(s);
	c->blocked = false;
	if (c->state == S_READY) {
		conn_kick(c);
	}
}

static void st_on_close(struct net_stream *s)
{
	struct net_grpc_conn *c = net_stream_data(s);
	c->stream = NULL;
	c->handles--;
	conn_free_if_unused(c);
}

static const struct net_stream_cbs stream_cbs = {
	.on_connect = st_on_connect,
	.on_read = st_on_read,
	.on_error = st_on_error,
	.on_drained = st_on_drained,
	.on_close = st_on_close,
};

/* ---- timer ---- */

static void conn_timer_cb(uv_timer_t *t)
{
	struct net_grpc_conn *c = t->data;
	c->armed_at = UINT64_MAX;
	uint64_t now = now_ms(c);
	while (c->n_heap > 0 && c->heap[0]->deadline <= now &&
	       (c->state == S_READY || c->state == S_CONNECTING)) {
		struct net_grpc_ccall *call = c->heap[0];
		heap_remove(c, call);
		if (call->reported || call->in_done) {
			continue;
		}
		call->status = NET_GRPC_DEADLINE_EXCEEDED;
		call_set_msg(call, "context deadline exceeded");
		call->unprocessed = !call->sent;
		call_reset(call, NGHTTP2_CANCEL);
		call_deliver_close(call);
		call_maybe_free(call);
	}
	if (c->state == S_READY && c->opts.keepalive_ms > 0) {
		if (c->ping_out && now >= c->ping_at + c->opts.keepalive_timeout_ms) {
			gc_log(c, NET_LOG_WARN, "keepalive PING unanswered for %" PRIu64 " ms",
			       c->opts.keepalive_timeout_ms);
			conn_fail(c, NET_ETIMEOUT);
			return;
		}
		if (!c->ping_out && now >= c->last_read + c->opts.keepalive_ms) {
			int rv = nghttp2_submit_ping(c->h2, NGHTTP2_FLAG_NONE, NULL);
			if (nghttp2_is_fatal(rv)) {
				conn_fail(c, NET_ENOMEM);
				return;
			}
			c->ping_at = now;
			c->ping_out = true;
			conn_kick(c);
		}
	}
	if (c->dirty && c->state != S_DONE) {
		uv_idle_start(&c->idle, conn_idle_cb);
	}
	conn_arm(c);
}

/* ---- connection API ---- */

static int conn_h2_new(struct net_grpc_conn *c)
{
	nghttp2_session_callbacks *cbs = NULL;
	nghttp2_option *opt = NULL;
	if (nghttp2_session_callbacks_new(&cbs) != 0) {
		return NET_ENOMEM;
	}
	nghttp2_session_callbacks_set_on_header_callback(cbs, h2_on_header);
	nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, h2_on_data);
	nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, h2_on_frame_recv);
	nghttp2_session_callbacks_set_on_frame_send_callback(cbs, h2_on_frame_send);
	nghttp2_session_callbacks_set_on_stream_close_callback(cbs, h2_on_stream_close);
	if (nghttp2_option_new(&opt) != 0) {
		nghttp2_session_callbacks_del(cbs);
		return NET_ENOMEM;
	}
	nghttp2_option_set_no_auto_window_update(opt, 1);
	nghttp2_option_set_max_outbound_ack(opt, 1000);
	int rv = nghttp2_session_client_new2(&c->h2, cbs, c, opt);
	nghttp2_option_del(opt);
	nghttp2_session_callbacks_del(cbs);
	if (rv != 0) {
		return NET_ENOMEM;
	}
	/* Our SETTINGS, right behind the client preface (RFC 9113 §3.4). */
	nghttp2_settings_entry iv[] = {
		{ NGHTTP2_SETTINGS_ENABLE_PUSH, 0 },
		{ NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, c->opts.initial_window_size },
		{ NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, MAX_HEADER_LIST },
	};
	rv = nghttp2_submit_settings(c->h2, NGHTTP2_FLAG_NONE, iv, sizeof iv / sizeof iv[0]);
	if (rv == 0) {
		rv = nghttp2_session_set_local_window_size(c->h2, NGHTTP2_FLAG_NONE, 0,
							   (int32_t)c->opts.connection_window);
	}
	if (rv != 0) {
		nghttp2_session_del(c->h2);
		c->h2 = NULL;
		return NET_ENOMEM;
	}
	return 0;
}

static int opts_apply(const struct net_grpc_conn_opts *in, struct net_grpc_conn_opts *o)
{
	*o = in != NULL ? *in : (struct net_grpc_conn_opts){ 0 };
	if (o->connect_timeout_ms == 0) {
		o->connect_timeout_ms = DEF_CONNECT_TIMEOUT_MS;
	}
	if (o->max_recv_message == 0) {
		o->max_recv_message = DEF_MAX_MESSAGE;
	}
	if (o->max_send_message == 0) {
		o->max_send_message = DEF_MAX_MESSAGE;
	}
	if (o->max_call_queue == 0) {
		o->max_call_queue = DEF_MAX_CALL_QUEUE;
	}
	if (o->initial_window_size == 0) {
		o->initial_window_size = DEF_WINDOW;
	}
	if (o->connection_window == 0) {
		o->connection_window = DEF_CONN_WINDOW;
	}
	if (o->max_calls == 0) {
		o->max_calls = DEF_MAX_CALLS;
	}
	if (o->keepalive_timeout_ms == 0) {
		o->keepalive_timeout_ms = DEF_KEEPALIVE_TIMEOUT_MS;
	}
	if (o->initial_window_size > MAX_WINDOW || o->connection_window > MAX_WINDOW ||
	    o->max_calls > MAX_CALLS_BOUND || o->max_send_message > UINT32_MAX - 16 ||
	    o->initial_window_size < 65535) {
		return NET_EINVAL;
	}
	return 0;
}

int net_grpc_conn_open(uv_loop_t *loop, const char *url, const struct net_grpc_conn_opts *opts,
		       const struct net_grpc_conn_cbs *cbs, void *data, struct net_grpc_conn **out)
{
	if (loop == NULL || url == NULL || cbs == NULL || cbs->on_closed == NULL || out == NULL) {
		return NET_EINVAL;
	}
	struct net_grpc_conn_opts o;
	if (opts_apply(opts, &o) != 0) {
		return NET_EINVAL;
	}
	struct net_url purl;
	int rv = net_url_parse(url, &purl);
	if (rv != 0 || purl.port == 0) {
		return NET_EADDR;
	}
	if (purl.tls && o.tls == NULL) {
		return NET_EINVAL;
	}
	struct net_grpc_conn *c = calloc(1, sizeof *c);
	if (c == NULL) {
		return NET_ENOMEM;
	}
	c->loop = loop;
	c->opts = o;
	c->cbs = *cbs;
	c->data = data;
	c->purl = purl;
	c->armed_at = UINT64_MAX;
	c->url = strdup(url);
	char auth[NET_URL_HOST_MAX + 16];
	if (o.authority != NULL) {
		c->authority = strdup(o.authority);
	} else {
		snprintf(auth, sizeof auth, purl.ipv6 ? "[%s]:%u" : "%s:%u", purl.host,
			 (unsigned)purl.port);
		c->authority = strdup(auth);
	}
	c->opts.authority = NULL;
	if (c->url == NULL || c->authority == NULL) {
		rv = NET_ENOMEM;
		goto err_free;
	}
	rv = conn_h2_new(c);
	if (rv != 0) {
		goto err_free;
	}
	c->fctx.server = NULL;
	c->fctx.client = o.tls;
	struct net_stream_opts so = {
		.high_water = STREAM_HIGH_WATER,
		.connect_timeout_ms = o.connect_timeout_ms,
		.read_buf = STREAM_READ_BUF,
		.filter = purl.tls ? tls_wrap_factory : NULL,
		.filter_ctx = purl.tls ? c : NULL,
	};
	/* Handles first: once the stream exists, every exit goes through the close path. */
	if (uv_timer_init(loop, &c->timer) != 0 || uv_idle_init(loop, &c->idle) != 0) {
		rv = NET_EIO;
		goto err_h2;
	}
	c->timer.data = c;
	c->idle.data = c;
	rv = net_stream_connect(loop, url, &so, &stream_cbs, c, &c->stream);
	if (rv != 0) {
		/* The handles are initialised: they must close before the memory goes. */
		nghttp2_session_del(c->h2);
		c->h2 = NULL;
		c->state = S_DONE;
		c->handles = 2;
		uv_close((uv_handle_t *)&c->timer, conn_handle_closed);
		uv_close((uv_handle_t *)&c->idle, conn_handle_closed);
		return rv;
	}
	c->handles = 3;
	c->state = S_CONNECTING;
	*out = c;
	return 0;
err_h2:
	nghttp2_session_del(c->h2);
err_free:
	free(c->url);
	free(c->authority);
	free(c);
	return rv;
}

void net_grpc_conn_close(struct net_grpc_conn *c)
{
	if (c == NULL || c->user_closed) {
		return;
	}
	c->user_closed = true;
	/* Open calls are dropped without callbacks. */
	for (struct net_grpc_ccall *call = c->calls; call != NULL; call = call->next) {
		if (!call->reported) {
			call->reported = true;
			heap_remove(c, call);
			if (call->counted) {
				call->counted = false;
				c->n_calls--;
			}
		}
	}
	if (c->state == S_CONNECTING || c->state == S_READY) {
		c->state = S_CLOSED;
		c->err = 0;
		if (c->stream != NULL) {
			net_stream_close(c->stream);
		}
		uv_timer_stop(&c->timer);
		uv_idle_start(&c->idle, conn_idle_cb);
	}
}

bool net_grpc_conn_ready(const struct net_grpc_conn *c)
{
	return c->state == S_READY;
}

bool net_grpc_conn_draining(const struct net_grpc_conn *c)
{
	return c->draining;
}

size_t net_grpc_conn_calls(const struct net_grpc_conn *c)
{
	return c->n_calls;
}

const char *net_grpc_conn_url(const struct net_grpc_conn *c)
{
	return c->url;
}

void *net_grpc_conn_data(const struct net_grpc_conn *c)
{
	return c->data;
}

/* ---- calls ---- */

/* Writes v in decimal; returns the length. */
static size_t fmt_u64(uint64_t v, char *out)
{
	char tmp[24];
	size_t n = 0;
	do {
		tmp[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v > 0);
	for (size_t i = 0; i < n; i++) {
		out[i] = tmp[n - 1 - i];
	}
	return n;
}

/* grpc-timeout: at most 8 digits and a unit (PROTOCOL-HTTP2.md), so large values change unit,
 * rounded up. Returns the length written to out (at least 10 bytes). */
static size_t timeout_value(uint64_t ms, char *out)
{
	char unit = 'm';
	uint64_t v = ms;
	if (v > 99999999u) {
		unit = 'S';
		v = (ms + 999) / 1000;
	}
	if (v > 99999999u) {
		unit = 'H';
		v = (ms + 3599999) / 3600000;
		v = v > 99999999u ? 99999999u : v;
	}
	size_t n = fmt_u64(v, out);
	out[n++] = unit;
	out[n] = '\0';
	return n;
}

#define NV_CONST(n, v)                                                               \
	{                                                                            \
		(uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, sizeof(v) - 1,        \
			NGHTTP2_NV_FLAG_NO_COPY_NAME | NGHTTP2_NV_FLAG_NO_COPY_VALUE \
	}

static int call_open(struct net_grpc_conn *c, const char *path,
		     const struct net_grpc_ccall_opts *opts, const struct net_grpc_ccall_cbs *cbs,
		     void *user, const uint8_t *req, size_t req_len, bool unary,
		     struct net_grpc_ccall **out)
{
	if (c == NULL || path == NULL || path[0] != '/' || cbs == NULL || cbs->on_close == NULL) {
		return NET_EINVAL;
	}
	if (c->state != S_CONNECTING && c->state != S_READY) {
		return NET_ECLOSED;
	}
	if (c->draining) {
		return NET_ECLOSED;
	}
	size_t n_md = opts != NULL ? opts->n_metadata : 0;
	if (n_md > MAX_METADATA || (n_md > 0 && opts->metadata == NULL)) {
		return NET_EINVAL;
	}
	if (unary && req_len > c->opts.max_send_message) {
		return NET_ETOOBIG;
	}
	/* Calls the user let go of but nghttp2 still holds count twice over the bound. */
	if (c->n_calls >= c->opts.max_calls || c->n_alloc >= 2 * (size_t)c->opts.max_calls) {
		return NET_ELIMIT;
	}
	size_t inline_len = unary ? NET_GRPC_MSG_HEADER + req_len : 0;
	struct net_grpc_ccall *call = malloc(sizeof *call + inline_len);
	if (call == NULL) {
		return NET_ENOMEM;
	}
	memset(call, 0, sizeof *call);
	call->c = c;
	call->cbs = *cbs;
	call->user = user;
	call->status = -1;
	call->heap_idx = SIZE_MAX;
	if (unary) {
		uint8_t *m = (uint8_t *)(call + 1);
		m[0] = 0;
		m[1] = (uint8_t)(req_len >> 24);
		m[2] = (uint8_t)(req_len >> 16);
		m[3] = (uint8_t)(req_len >> 8);
		m[4] = (uint8_t)req_len;
		if (req_len > 0) {
			memcpy(m + NET_GRPC_MSG_HEADER, req, req_len);
		}
		call->sbuf = m;
		call->sbuf_inline = true;
		call->slen = call->scap = inline_len;
		call->half_closed = true;
	}

	nghttp2_nv nva[FIXED_HEADERS + MAX_METADATA];
	size_t n = 0;
	nva[n++] = (nghttp2_nv)NV_CONST(":method", "POST");
	if (c->purl.tls) {
		nva[n++] = (nghttp2_nv)NV_CONST(":scheme", "https");
	} else {
		nva[n++] = (nghttp2_nv)NV_CONST(":scheme", "http");
	}
	nva[n++] = (nghttp2_nv){ (uint8_t *)":path", (uint8_t *)path, 5, strlen(path),
				 NGHTTP2_NV_FLAG_NO_COPY_NAME };
	nva[n++] = (nghttp2_nv){ (uint8_t *)":authority", (uint8_t *)c->authority, 10,
				 strlen(c->authority),
				 NGHTTP2_NV_FLAG_NO_COPY_NAME | NGHTTP2_NV_FLAG_NO_COPY_VALUE };
	nva[n++] = (nghttp2_nv)NV_CONST("content-type", "application/grpc");
	nva[n++] = (nghttp2_nv)NV_CONST("te", "trailers");
	char tv[32];
	uint64_t timeout = opts != NULL ? opts->timeout_ms : 0;
	if (timeout > 0) {
		size_t tl = timeout_value(timeout, tv);
		nva[n++] = (nghttp2_nv){ (uint8_t *)"grpc-timeout", (uint8_t *)tv, 12, tl,
					 NGHTTP2_NV_FLAG_NO_COPY_NAME };
	}
	for (size_t i = 0; i < n_md; i++) {
		const char *k = opts->metadata[2 * i], *v = opts->metadata[2 * i + 1];
		if (k == NULL || v == NULL || k[0] == '\0') {
			free(call);
			return NET_EINVAL;
		}
		nva[n++] = (nghttp2_nv){ (uint8_t *)k, (uint8_t *)v, strlen(k), strlen(v),
					 NGHTTP2_NV_FLAG_NONE };
	}
	nghttp2_data_provider prd = { .source.ptr = call, .read_callback = h2_read };
	int32_t id = nghttp2_submit_request(c->h2, NULL, nva, n, &prd, call);
	if (id < 0) {
		free(call);
		return id == NGHTTP2_ERR_NOMEM ? NET_ENOMEM : NET_ECLOSED;
	}
	call->id = id;
	if (timeout > 0) {
		call->deadline = now_ms(c) + timeout;
		if (heap_push(c, call) != 0) {
			/* nghttp2 holds the call now: reset the stream and let it go. */
			call->reported = true;
			call_reset(call, NGHTTP2_CANCEL);
			call->next = c->calls;
			if (c->calls != NULL) {
				c->calls->prev = call;
			}
			c->calls = call;
			c->n_alloc++;
			return NET_ENOMEM;
		}
	}
	call->next = c->calls;
	if (c->calls != NULL) {
		c->calls->prev = call;
	}
	c->calls = call;
	c->n_alloc++;
	c->n_calls++;
	call->counted = true;
	if (call->heap_idx != SIZE_MAX && call->deadline < c->armed_at) {
		conn_arm(c);
	}
	conn_kick(c);
	if (out != NULL) {
		*out = call;
	}
	return 0;
}

int net_grpc_conn_call(struct net_grpc_conn *c, const char *path,
		       const struct net_grpc_ccall_opts *opts, const struct net_grpc_ccall_cbs *cbs,
		       void *user, struct net_grpc_ccall **out)
{
	if (out == NULL) {
		return NET_EINVAL;
	}
	return call_open(c, path, opts, cbs, user, NULL, 0, false, out);
}

int net_grpc_conn_unary(struct net_grpc_conn *c, const char *path, const uint8_t *req, size_t len,
			const struct net_grpc_ccall_opts *opts,
			const struct net_grpc_ccall_cbs *cbs, void *user,
			struct net_grpc_ccall **out)
{
	if (req == NULL && len > 0) {
		return NET_EINVAL;
	}
	return call_open(c, path, opts, cbs, user, req, len, true, out);
}

static void call_resume(struct net_grpc_ccall *call)
{
	struct net_grpc_conn *c = call->c;
	if (call->deferred && !call->h2_closed) {
		call->deferred = false;
		int rv = nghttp2_session_resume_data(c->h2, call->id);
		if (nghttp2_is_fatal(rv)) {
			conn_fail(c, NET_ENOMEM);
			return;
		}
	}
	conn_kick(c);
}

int net_grpc_ccall_send(struct net_grpc_ccall *call, const uint8_t *data, size_t len)
{
	assert(call != NULL && !call->reported);
	struct net_grpc_conn *c = call->c;
	if (call->half_closed || call->h2_closed || call->in_done || call->status >= 0 ||
	    (c->state != S_READY && c->state != S_CONNECTING)) {
		return NET_ECLOSED;
	}
	if (len > c->opts.max_send_message) {
		return NET_ETOOBIG;
	}
	if (data == NULL && len > 0) {
		return NET_EINVAL;
	}
	size_t queued = call->slen - call->soff;
	size_t need = NET_GRPC_MSG_HEADER + len;
	if (queued > 0 && queued + need > c->opts.max_call_queue) {
		call->want_writable = true;
		return NET_EAGAIN;
	}
	if (call->scap - call->slen < need) {
		if (call->soff > 0) {
			memmove(call->sbuf, call->sbuf + call->soff, queued);
			call->slen = queued;
			call->soff = 0;
		}
		if (call->scap - call->slen < need) {
			size_t cap = call->scap < SBUF_MIN ? SBUF_MIN : call->scap;
			while (cap - call->slen < need) {
				cap *= 2;
			}
			uint8_t *b;
			if (call->sbuf_inline) {
				b = malloc(cap);
				if (b != NULL && call->slen > 0) {
					memcpy(b, call->sbuf, call->slen);
				}
			} else {
				b = realloc(call->sbuf, cap);
			}
			if (b == NULL) {
				return NET_ENOMEM;
			}
			call->sbuf = b;
			call->sbuf_inline = false;
			call->scap = cap;
		}
	}
	uint8_t *m = call->sbuf + call->slen;
	m[0] = 0;
	m[1] = (uint8_t)(len >> 24);
	m[2] = (uint8_t)(len >> 16);
	m[3] = (uint8_t)(len >> 8);
	m[4] = (uint8_t)len;
	if (len > 0) {
		memcpy(m + NET_GRPC_MSG_HEADER, data, len);
	}
	call->slen += need;
	call_resume(call);
	return 0;
}

void net_grpc_ccall_half_close(struct net_grpc_ccall *call)
{
	assert(call != NULL);
	if (call->half_closed || call->reported) {
		return;
	}
	call->half_closed = true;
	struct net_grpc_conn *c = call->c;
	if (c->state == S_READY || c->state == S_CONNECTING) {
		call_resume(call);
	}
}

void net_grpc_ccall_cancel(struct net_grpc_ccall *call)
{
	assert(call != NULL);
	if (call->reported) {
		return;
	}
	struct net_grpc_conn *c = call->c;
	call_unreport(call);
	if (c->state != S_READY && c->state != S_CONNECTING) {
		return; /* the teardown frees it */
	}
	if (!call->h2_closed) {
		call_reset(call, NGHTTP2_CANCEL);
	}
	call_maybe_free(call);
}

bool net_grpc_ccall_unprocessed(const struct net_grpc_ccall *call)
{
	return call->unprocessed;
}

void *net_grpc_ccall_user(const struct net_grpc_ccall *call)
{
	return call->user;
}

struct net_grpc_conn *net_grpc_ccall_conn(const struct net_grpc_ccall *call)
{
	return call->c;
}

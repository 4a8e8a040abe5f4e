/* grpc_uv.c: gRPC sessions (grpc.h) on libuv streams (stream.h). See grpc_uv.h for the contract.
 *
 * One struct conn per accepted stream. It first sniffs (plain port) or reads ALPN (TLS) to pick
 * gRPC or HTTP/1.x, then pumps bytes for its net_grpc_session following grpc.h's transport loop:
 * feed what is read, take and write after every feed, tick, drain and notify, stop taking when
 * the stream says NET_EAGAIN and resume on its drained callback. One timer per connection
 * carries every deadline (preface guard, idle limit, drain deadline, linger) and, started at 0,
 * the deferred pump a session's notify hook asks for. */
#include "grpc_uv.h"

#include <assert.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_BACKLOG 128
#define DEFAULT_MAX_CONNECTIONS 1024
#define DEFAULT_PREFACE_TIMEOUT_MS 5000
#define DEFAULT_LINGER_MS 1000
#define DEFAULT_WRITE_CHUNK ((size_t)16 << 10)
#define DEFAULT_HIGH_WATER ((size_t)1 << 20) /* stream.c's default, for the chunk bound */
#define LOG_LINE_MAX 384

/* Longest request line (or undecided prefix) sniffed before giving up: Go's net/http allows
 * 1 MiB of headers, but a request line longer than this is not one of ours. */
#define SNIFF_MAX ((size_t)8 << 10)

/* RFC 9113 §3.4: the client connection preface, then a SETTINGS frame (9-byte header). */
static const char h2_preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
#define H2_PREFACE_LEN 24
#define H2_FRAME_HEADER 9
#define H2_SETTINGS 0x4
_Static_assert(sizeof h2_preface == H2_PREFACE_LEN + 1, "preface length");

/* A session's clock: the loop's milliseconds shifted up, so that a drain deadline shorter than
 * the server's drain_timeout_ms can be expressed as a start time in the past (see conn_drain). */
#define SESSION_CLOCK_BASE ((uint64_t)1 << 40)

static const char http1_505[] = "HTTP/1.1 505 HTTP Version Not Supported\r\n"
				"Content-Type: text/plain; charset=utf-8\r\n"
				"Content-Length: 39\r\n"
				"Connection: close\r\n"
				"\r\n"
				"this port serves gRPC over HTTP/2 only\n";

enum conn_mode {
	M_SNIFF,   /* first bytes not classified yet */
	M_GRPC,    /* a session serves the connection */
	M_LINGER,  /* our FIN is queued; waiting for the peer's, bounded by linger_ms */
	M_CLOSING, /* handles closing; freed when both are closed */
};

struct tls_wrap;

struct conn {
	struct net_grpc_listener *l;
	struct conn *prev, *next;
	uint64_t id;               /* for log lines */
	struct net_stream *stream; /* NULL once closed or handed to on_http1 */
	struct tls_wrap *wrap;     /* TLS connections only */
	uv_timer_t timer;
	int handles; /* of stream and timer, not yet through their close callback */
	enum conn_mode mode;
	bool http1_only; /* TLS without ALPN h2: only HTTP/1.x may follow */
	struct net_grpc_session *session;

	uint8_t *sniff; /* bytes read while sniffing */
	size_t sniff_len;

	/* Preface guard: counts the preface, then the first frame's header and payload. */
	bool preface_done;
	uint64_t guard_at;
	size_t preface_got;
	uint8_t fh[H2_FRAME_HEADER];
	size_t fh_got;
	uint32_t first_left;

	uint64_t last_io;
	uint64_t idle_at;
	bool pump;    /* the session asked for take() (notify hook) */
	bool blocked; /* the stream said NET_EAGAIN: waiting for on_drained, not reading */
	uint8_t *out; /* one chunk taken from the session and not yet accepted by the stream */
	size_t out_len;

	bool draining;
	bool drain_ticked;
	uint64_t drain_at;         /* loop time */
	uint64_t session_deadline; /* the same deadline on the session's clock */
	uint64_t linger_at;
};

struct net_grpc_listener {
	uv_loop_t *loop;
	struct net_grpc_server *srv;
	struct net_tls_filter_ctx *tls;
	struct net_grpc_listener_opts opts;
	struct net_listener *inner;
	uint16_t port;
	struct conn *conns;
	size_t n_conns;
	uint64_t next_id;
	struct tls_wrap *promoted; /* the TLS connection whose handshake just completed */
	struct net_grpc_listener_stats stats;
	bool closing;
	bool inner_closed;
	net_grpc_listener_close_cb close_cb;
	void *close_data;
};

/* ---- logging ---- */

static void llog(struct net_grpc_listener *l, enum net_log_level level, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void llog(struct net_grpc_listener *l, enum net_log_level level, const char *fmt, ...)
{
	char line[LOG_LINE_MAX];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(line, sizeof line, fmt, ap);
	va_end(ap);
	if (l->opts.log != NULL) {
		l->opts.log(l->opts.log_data, level, line);
		return;
	}
	static const char *const names[] = { "debug", "info", "warn", "error" };
	if (level >= NET_LOG_INFO) {
		fprintf(stderr, "level=%s grpc-listener port=%u: %s\n", names[level],
			(unsigned)l->port, line);
	}
}

/* ---- TLS: tls.h's endpoint as a stream filter, counting wire bytes and keeping ALPN ---- */

/* Same mapping as tls_filter.c, plus: ciphertext is counted in the listener's stats, a refused
 * handshake is logged with its reason, and the handshake's completion is announced to the
 * accept callback, which reads the negotiated ALPN from here (the stream does not expose its
 * filter). */
struct tls_wrap {
	struct net_tls_conn *tls;
	struct net_grpc_listener *l; /* NULL once the stream is no longer the listener's */
	bool announced;
	bool failed;
};

/* Logs a failed handshake once, with OpenSSL's reason (etcd logs its rejected TLS connections
 * at warning level too). The stream reports a feed error without asking handshake_done, so
 * every op that can fail the handshake comes through here. */
static int w_check(struct tls_wrap *w, int rv)
{
	if (rv < 0 && !w->failed && net_tls_failed(w->tls) != 0) {
		w->failed = true;
		if (w->l != NULL && !w->announced) {
			w->l->stats.dropped++;
			llog(w->l, NET_LOG_WARN, "TLS handshake failed, connection closed: %s",
			     net_tls_errmsg(w->tls));
		}
	}
	return rv;
}

static int w_feed(void *impl, const uint8_t *buf, size_t len, size_t *used)
{
	struct tls_wrap *w = impl;
	int rv = net_tls_feed(w->tls, buf, len, used);
	if (w->l != NULL) {
		w->l->stats.bytes_in += *used;
	}
	return w_check(w, rv);
}

static int w_feed_eof(void *impl)
{
	struct tls_wrap *w = impl;
	return w_check(w, net_tls_feed_eof(w->tls));
}

static int w_read(void *impl, uint8_t *buf, size_t cap, size_t *n)
{
	struct tls_wrap *w = impl;
	return net_tls_read(w->tls, buf, cap, n);
}

static int w_write(void *impl, const uint8_t *buf, size_t len)
{
	struct tls_wrap *w = impl;
	return net_tls_write(w->tls, buf, len);
}

static int w_take(void *impl, uint8_t *buf, size_t cap, size_t *n)
{
	struct tls_wrap *w = impl;
	int rv = net_tls_out_take(w->tls, buf, cap, n);
	if (w->l != NULL) {
		w->l->stats.bytes_out += *n;
	}
	return rv;
}

static int w_done(void *impl)
{
	struct tls_wrap *w = impl;
	int err = net_tls_failed(w->tls);
	if (err != 0) {
		return w_check(w, err);
	}
	if (!net_tls_is_open(w->tls)) {
		return 0;
	}
	if (!w->announced) {
		/* stream.c calls the accept callback right after this returns 1. */
		w->announced = true;
		if (w->l != NULL) {
			w->l->promoted = w;
		}
	}
	return 1;
}

static int w_shutdown(void *impl)
{
	struct tls_wrap *w = impl;
	return net_tls_shutdown(w->tls);
}

static void w_destroy(void *impl)
{
	struct tls_wrap *w = impl;
	net_tls_conn_free(w->tls);
	free(w);
}

static const struct net_filter_ops wrap_ops = {
	.feed = w_feed,
	.feed_eof = w_feed_eof,
	.read = w_read,
	.write = w_write,
	.take = w_take,
	.handshake_done = w_done,
	.shutdown = w_shutdown,
	.destroy = w_destroy,
};

static int wrap_factory(void *ctx, bool server, const char *host, struct net_filter *out)
{
	struct net_grpc_listener *l = ctx;
	(void)host;
	assert(server);
	struct tls_wrap *w = calloc(1, sizeof *w);
	if (w == NULL) {
		return NET_ENOMEM;
	}
	int rv = net_tls_conn_new(l->tls->server, NULL, &w->tls);
	if (rv != 0) {
		free(w);
		return rv;
	}
	w->l = l;
	out->ops = &wrap_ops;
	out->impl = w;
	return 0;
}

/* ---- connections ---- */

static void conn_close(struct conn *c);
static void conn_flush(struct conn *c);
static void conn_arm(struct conn *c);
static void conn_timer_cb(uv_timer_t *t);
static void listener_maybe_done(struct net_grpc_listener *l);

static uint64_t now_ms(const struct conn *c)
{
	return uv_now(c->l->loop);
}

static uint64_t session_now(const struct conn *c)
{
	return now_ms(c) + SESSION_CLOCK_BASE;
}

static void conn_free(struct conn *c)
{
	struct net_grpc_listener *l = c->l;
	assert(c->handles == 0 && c->session == NULL);
	if (c->prev != NULL) {
		c->prev->next = c->next;
	} else {
		l->conns = c->next;
	}
	if (c->next != NULL) {
		c->next->prev = c->prev;
	}
	assert(l->n_conns > 0);
	l->n_conns--;
	l->stats.open--;
	free(c->sniff);
	free(c->out);
	free(c);
	listener_maybe_done(l);
}

static void conn_handle_closed(struct conn *c)
{
	assert(c->handles > 0);
	if (--c->handles == 0) {
		conn_free(c);
	}
}

static void conn_timer_closed(uv_handle_t *h)
{
	conn_handle_closed(h->data);
}

static void conn_on_close(struct net_stream *s)
{
	struct conn *c = net_stream_data(s);
	c->stream = NULL;
	c->wrap = NULL; /* freed by the stream right after this */
	conn_handle_closed(c);
}

/* Ends the connection now: the session is freed (calls still running are cancelled), queued
 * bytes are dropped, the handles close and the connection is freed after them. */
static void conn_close(struct conn *c)
{
	if (c->mode == M_CLOSING) {
		return;
	}
	c->mode = M_CLOSING;
	if (c->session != NULL) {
		net_grpc_session_free(c->session);
		c->session = NULL;
	}
	uv_timer_stop(&c->timer);
	uv_close((uv_handle_t *)&c->timer, conn_timer_closed);
	if (c->stream != NULL) {
		net_stream_close(c->stream);
	}
}

static void conn_drop(struct conn *c, const char *why)
{
	c->l->stats.dropped++;
	llog(c->l, NET_LOG_WARN, "connection %" PRIu64 " closed: %s", c->id, why);
	conn_close(c);
}

/* Sends our FIN after what is queued and waits (bounded) for the peer's. */
static void conn_linger(struct conn *c)
{
	assert(c->mode == M_SNIFF || c->mode == M_GRPC);
	if (c->session != NULL) {
		net_grpc_session_free(c->session);
		c->session = NULL;
	}
	c->mode = M_LINGER;
	if (net_stream_shutdown(c->stream) != 0) {
		conn_close(c);
		return;
	}
	c->linger_at = now_ms(c) + c->l->opts.linger_ms;
	conn_arm(c);
}

/* Deadlines: the earliest one the connection waits for. */
static void conn_arm(struct conn *c)
{
	if (c->mode == M_CLOSING) {
		return;
	}
	uint64_t now = now_ms(c);
	uint64_t at = UINT64_MAX;
	if (c->pump) {
		at = now;
	}
	if (!c->preface_done && (c->mode == M_SNIFF || c->mode == M_GRPC) && c->guard_at < at) {
		at = c->guard_at;
	}
	if (c->mode == M_GRPC && c->l->opts.idle_timeout_ms > 0 && !c->draining &&
	    c->idle_at < at) {
		at = c->idle_at;
	}
	if (c->mode == M_GRPC && c->draining) {
		uint64_t d = c->drain_ticked ? c->drain_at + c->l->opts.linger_ms : c->drain_at;
		if (d < at) {
			at = d;
		}
	}
	if (c->mode == M_LINGER && c->linger_at < at) {
		at = c->linger_at;
	}
	if (at == UINT64_MAX) {
		uv_timer_stop(&c->timer);
		return;
	}
	uv_timer_start(&c->timer, conn_timer_cb, at > now ? at - now : 0, 0);
}

/* Starts a graceful drain with `ms` for calls in flight (0: the server's drain_timeout_ms). The
 * session counts its deadline from the time it is given; starting it (T - ms) earlier makes the
 * deadline land ms from now. */
static void conn_drain(struct conn *c, uint64_t ms)
{
	assert(c->mode == M_GRPC);
	uint64_t t = net_grpc_server_limits(c->l->srv)->drain_timeout_ms;
	uint64_t d = ms > 0 ? ms : t;
	if (c->draining) {
		/* Already draining (idle limit): a listener close may only bring the deadline
		 * closer; the tick at drain_at then passes the session's own deadline. */
		if (!c->drain_ticked && now_ms(c) + d < c->drain_at) {
			c->drain_at = now_ms(c) + d;
			conn_arm(c);
		}
		return;
	}
	c->draining = true;
	c->drain_at = now_ms(c) + d;
	c->session_deadline = session_now(c) + d;
	if (net_grpc_session_drain(c->session, session_now(c) + d - t) != 0) {
		conn_drop(c, "out of memory starting a drain");
		return;
	}
	conn_flush(c);
	conn_arm(c);
}

static void conn_timer_cb(uv_timer_t *t)
{
	struct conn *c = t->data;
	if (c->mode == M_CLOSING) {
		return;
	}
	if (c->pump) {
		c->pump = false;
		conn_flush(c);
		if (c->mode == M_CLOSING) {
			return;
		}
	}
	uint64_t now = now_ms(c);
	if (!c->preface_done && (c->mode == M_SNIFF || c->mode == M_GRPC) && now >= c->guard_at) {
		char why[128];
		snprintf(why, sizeof why,
			 "no HTTP/2 preface and SETTINGS (or HTTP/1.x request line) within %" PRIu64
			 " ms",
			 c->l->opts.preface_timeout_ms);
		conn_drop(c, why);
		return;
	}
	if (c->mode == M_GRPC && c->l->opts.idle_timeout_ms > 0 && !c->draining &&
	    now >= c->idle_at) {
		uint64_t idle = c->l->opts.idle_timeout_ms;
		if (net_grpc_session_calls(c->session) == 0 && now - c->last_io >= idle) {
			llog(c->l, NET_LOG_DEBUG,
			     "connection %" PRIu64 " idle for %" PRIu64 " ms: draining", c->id,
			     idle);
			conn_drain(c, 0);
			return;
		}
		c->idle_at = c->last_io + idle > now ? c->last_io + idle : now + idle;
	}
	if (c->mode == M_GRPC && c->draining) {
		if (!c->drain_ticked && now >= c->drain_at) {
			c->drain_ticked = true;
			uint64_t sn = session_now(c);
			net_grpc_session_tick(c->session,
					      sn > c->session_deadline ? sn : c->session_deadline);
			conn_flush(c);
			if (c->mode != M_GRPC) {
				return;
			}
		} else if (c->drain_ticked && now >= c->drain_at + c->l->opts.linger_ms) {
			conn_drop(c, "drain deadline passed and the peer does not read");
			return;
		}
	}
	if (c->mode == M_LINGER && now >= c->linger_at) {
		conn_close(c);
		return;
	}
	conn_arm(c);
}

/* grpc.h step 3 and 4: take and write while the session has output and the stream takes it. */
static void conn_flush(struct conn *c)
{
	if (c->mode != M_GRPC || c->blocked) {
		return;
	}
	struct net_grpc_listener *l = c->l;
	/* A take() that gives nothing may still have made work: it delivers the held messages of
	 * a call resumed from outside the session, and that returns their stream window. One more
	 * take serialises it; two empty ones in a row end the pump. */
	int empty = 0;
	for (;;) {
		if (c->out_len == 0) {
			if (!net_grpc_session_want_write(c->session)) {
				break;
			}
			size_t n = 0;
			int rv = net_grpc_session_take(c->session, c->out, l->opts.write_chunk, &n);
			if (rv != 0) {
				/* The session is done after what it gave; write that, then close. */
				llog(l, NET_LOG_WARN, "connection %" PRIu64 ": HTTP/2 failed: %s",
				     c->id, net_strerror(rv));
			}
			if (n == 0) {
				if (rv != 0 || ++empty >= 2) {
					break;
				}
				continue;
			}
			empty = 0;
			c->out_len = n;
		}
		int rv = net_stream_write(c->stream, c->out, c->out_len);
		if (rv == NET_EAGAIN) {
			/* Backpressure: keep the chunk, stop reading until the queue drains. */
			c->blocked = true;
			net_stream_read_stop(c->stream);
			return;
		}
		if (rv != 0) {
			llog(l, NET_LOG_DEBUG, "connection %" PRIu64 ": write: %s", c->id,
			     net_strerror(rv));
			conn_close(c);
			return;
		}
		if (c->wrap == NULL) {
			l->stats.bytes_out += c->out_len;
		}
		c->out_len = 0;
		c->last_io = now_ms(c);
	}
	if (net_grpc_session_done(c->session)) {
		uint32_t h2err = net_grpc_session_h2_error(c->session);
		if (h2err != 0) {
			l->stats.dropped++;
			llog(l, NET_LOG_WARN,
			     "connection %" PRIu64 " closed: HTTP/2 error 0x%" PRIx32 " sent",
			     c->id, h2err);
		}
		conn_linger(c);
	}
}

static void conn_notify(struct net_grpc_session *s, void *user)
{
	(void)s;
	struct conn *c = user;
	/* Never from inside the hook (grpc.h step 5): the timer runs the pump on the next turn. */
	if (c->mode == M_GRPC && !c->pump) {
		c->pump = true;
		conn_arm(c);
	}
}

/* Counts the bytes of the preface and of the first frame (which must be SETTINGS, RFC 9113
 * §3.4; nghttp2 refuses anything else); the guard is lifted once all of them came. */
static void conn_track_preface(struct conn *c, const uint8_t *p, size_t n)
{
	while (n > 0 && !c->preface_done) {
		size_t k;
		if (c->preface_got < H2_PREFACE_LEN) {
			k = H2_PREFACE_LEN - c->preface_got;
			k = k < n ? k : n;
			c->preface_got += k;
		} else if (c->fh_got < H2_FRAME_HEADER) {
			k = H2_FRAME_HEADER - c->fh_got;
			k = k < n ? k : n;
			memcpy(c->fh + c->fh_got, p, k);
			c->fh_got += k;
			if (c->fh_got == H2_FRAME_HEADER) {
				c->first_left = (uint32_t)c->fh[0] << 16 | (uint32_t)c->fh[1] << 8 |
						(uint32_t)c->fh[2];
				c->preface_done = c->first_left == 0 || c->fh[3] != H2_SETTINGS;
			}
		} else {
			k = c->first_left < n ? c->first_left : n;
			c->first_left -= (uint32_t)k;
			c->preface_done = c->first_left == 0;
		}
		p += k;
		n -= k;
	}
}

/* grpc.h step 2: feed, then take. */
static void conn_feed(struct conn *c, const uint8_t *buf, size_t len)
{
	conn_track_preface(c, buf, len);
	c->last_io = now_ms(c);
	int rv = net_grpc_session_feed(c->session, buf, len);
	if (rv == NET_ENOMEM) {
		conn_drop(c, "out of memory");
		return;
	}
	if (rv == NET_EPROTO) {
		llog(c->l, NET_LOG_DEBUG, "connection %" PRIu64 ": HTTP/2 protocol error", c->id);
	}
	/* NET_ECLOSED: the session reads no more; what came is ignored. */
	conn_flush(c);
}

static void conn_start_grpc(struct conn *c)
{
	assert(c->mode == M_SNIFF);
	int rv = net_grpc_session_new(c->l->srv, conn_notify, c, &c->session);
	if (rv != 0) {
		conn_drop(c, "out of memory for an HTTP/2 session");
		return;
	}
	c->mode = M_GRPC;
	c->idle_at = now_ms(c) + c->l->opts.idle_timeout_ms;
	conn_flush(c); /* the server's SETTINGS (RFC 9113 §3.4) */
	if (c->mode == M_GRPC) {
		conn_arm(c);
	}
}

/* What the first bytes of a plain connection are. */
enum sniff { SNIFF_MORE, SNIFF_H2, SNIFF_HTTP1, SNIFF_BAD };

/* The HTTP/2 preface, or an HTTP/1.x request line "METHOD SP target SP HTTP/1.d CRLF"
 * (RFC 9112 §3). SNIFF_MORE while every byte so far fits one of them. */
static enum sniff sniff_decide(const uint8_t *p, size_t n)
{
	size_t k = n < H2_PREFACE_LEN ? n : H2_PREFACE_LEN;
	if (memcmp(p, h2_preface, k) == 0) {
		return n >= H2_PREFACE_LEN ? SNIFF_H2 : SNIFF_MORE;
	}
	size_t i = 0;
	while (i < n && p[i] >= 'A' && p[i] <= 'Z') {
		i++;
	}
	if (i == n) {
		return i <= 16 ? SNIFF_MORE : SNIFF_BAD;
	}
	if (i == 0 || i > 16 || p[i] != ' ') {
		return SNIFF_BAD;
	}
	size_t t0 = ++i;
	while (i < n && p[i] > ' ' && p[i] < 0x7f) {
		i++;
	}
	if (i == n) {
		return SNIFF_MORE;
	}
	if (i == t0 || p[i] != ' ') {
		return SNIFF_BAD;
	}
	i++;
	static const char version[] = "HTTP/1.";
	for (size_t j = 0; j < sizeof version - 1; j++, i++) {
		if (i == n) {
			return SNIFF_MORE;
		}
		if (p[i] != (uint8_t)version[j]) {
			return SNIFF_BAD;
		}
	}
	if (i == n) {
		return SNIFF_MORE;
	}
	if (p[i] != '0' && p[i] != '1') {
		return SNIFF_BAD;
	}
	if (++i == n) {
		return SNIFF_MORE;
	}
	if (p[i] == '\r' && ++i == n) {
		return SNIFF_MORE;
	}
	return p[i] == '\n' ? SNIFF_HTTP1 : SNIFF_BAD;
}

/* Gives the stream and the bytes read so far to on_http1; the connection lets go of both. */
static void conn_hand_off(struct conn *c)
{
	struct net_grpc_listener *l = c->l;
	struct net_stream *s = c->stream;
	uint8_t *buf = c->sniff;
	size_t len = c->sniff_len;
	c->sniff = NULL;
	c->sniff_len = 0;
	net_stream_set_cbs(s, NULL, NULL);
	if (c->wrap != NULL) {
		c->wrap->l = NULL; /* the stream may outlive the listener now */
		c->wrap = NULL;
	}
	c->stream = NULL;
	c->handles--; /* the stream is no longer ours; the timer still is */
	assert(c->handles == 1);
	l->stats.http1++;
	conn_close(c);
	l->opts.on_http1(l->opts.http1_data, s, buf, len);
	free(buf);
}

static void conn_sniff(struct conn *c, const uint8_t *buf, size_t len)
{
	uint8_t *p = realloc(c->sniff, c->sniff_len + len);
	if (p == NULL) {
		conn_drop(c, "out of memory");
		return;
	}
	c->sniff = p;
	memcpy(p + c->sniff_len, buf, len);
	c->sniff_len += len;
	switch (sniff_decide(c->sniff, c->sniff_len)) {
	case SNIFF_MORE:
		if (c->sniff_len >= SNIFF_MAX) {
			conn_drop(c, "request line too long");
		}
		return;
	case SNIFF_H2:
		if (c->http1_only) {
			conn_drop(c, "HTTP/2 preface over TLS without ALPN \"h2\"");
			return;
		}
		conn_start_grpc(c);
		if (c->mode == M_GRPC) {
			p = c->sniff;
			len = c->sniff_len;
			c->sniff = NULL;
			c->sniff_len = 0;
			conn_feed(c, p, len);
			free(p);
		}
		return;
	case SNIFF_HTTP1:
		c->preface_done = true;
		if (c->l->opts.on_http1 != NULL) {
			conn_hand_off(c);
			return;
		}
		c->l->stats.http1++;
		llog(c->l, NET_LOG_DEBUG, "connection %" PRIu64 ": HTTP/1.x request answered 505",
		     c->id);
		if (net_stream_write(c->stream, (const uint8_t *)http1_505, sizeof http1_505 - 1) !=
		    0) {
			conn_close(c);
			return;
		}
		if (c->wrap == NULL) {
			c->l->stats.bytes_out += sizeof http1_505 - 1;
		}
		conn_linger(c);
		return;
	case SNIFF_BAD:
		conn_drop(c, "neither an HTTP/2 preface nor an HTTP/1.x request line");
		return;
	}
}

static void conn_on_read(struct net_stream *s, const uint8_t *buf, size_t len)
{
	struct conn *c = net_stream_data(s);
	if (c->wrap == NULL) {
		c->l->stats.bytes_in += len;
	}
	switch (c->mode) {
	case M_SNIFF:
		conn_sniff(c, buf, len);
		return;
	case M_GRPC:
		conn_feed(c, buf, len);
		return;
	case M_LINGER:
	case M_CLOSING:
		return; /* nothing more is served */
	}
}

static void conn_on_error(struct net_stream *s, int err)
{
	struct conn *c = net_stream_data(s);
	if (err != NET_ECLOSED && c->mode != M_LINGER) {
		llog(c->l, NET_LOG_DEBUG, "connection %" PRIu64 ": %s", c->id, net_strerror(err));
	}
	conn_close(c);
}

static void conn_on_drained(struct net_stream *s)
{
	struct conn *c = net_stream_data(s);
	if (!c->blocked || c->mode != M_GRPC) {
		return;
	}
	c->blocked = false;
	if (net_stream_read_start(s) != 0) {
		conn_close(c);
		return;
	}
	conn_flush(c);
}

static const struct net_stream_cbs conn_cbs = {
	.on_read = conn_on_read,
	.on_error = conn_on_error,
	.on_drained = conn_on_drained,
	.on_close = conn_on_close,
};

static void on_accept(struct net_listener *nl, struct net_stream *s)
{
	struct net_grpc_listener *l = net_listener_data(nl);
	struct tls_wrap *w = l->promoted;
	l->promoted = NULL;
	assert((w != NULL) == (l->tls != NULL));
	if (l->n_conns >= l->opts.max_connections) {
		l->stats.refused++;
		llog(l, NET_LOG_WARN, "connection refused: %zu connections open (the limit)",
		     l->n_conns);
		net_stream_close(s);
		return;
	}
	struct conn *c = calloc(1, sizeof *c);
	uint8_t *out = malloc(l->opts.write_chunk);
	if (c == NULL || out == NULL) {
		free(c);
		free(out);
		l->stats.dropped++;
		net_stream_close(s);
		return;
	}
	c->l = l;
	c->id = ++l->next_id;
	c->out = out;
	c->stream = s;
	c->wrap = w;
	int rv = uv_timer_init(l->loop, &c->timer);
	assert(rv == 0); /* only fills the structure on Unix */
	(void)rv;
	c->timer.data = c;
	c->handles = 2;
	c->mode = M_SNIFF;
	c->next = l->conns;
	if (l->conns != NULL) {
		l->conns->prev = c;
	}
	l->conns = c;
	l->n_conns++;
	l->stats.open++;
	l->stats.accepted++;
	net_stream_set_cbs(s, &conn_cbs, c);
	c->last_io = now_ms(c);
	c->guard_at = c->last_io + l->opts.preface_timeout_ms;
	if (w != NULL) {
		const char *alpn = net_tls_alpn(w->tls);
		if (strcmp(alpn, "h2") == 0) {
			conn_start_grpc(c);
			return;
		}
		if (strcmp(alpn, "http/1.1") != 0 && alpn[0] != '\0') {
			char why[96];
			snprintf(why, sizeof why, "ALPN selected \"%.32s\", not \"h2\"", alpn);
			conn_drop(c, why);
			return;
		}
		c->http1_only = true;
	}
	conn_arm(c);
}

/* ---- listener ---- */

static void listener_maybe_done(struct net_grpc_listener *l)
{
	if (!l->closing || !l->inner_closed || l->conns != NULL) {
		return;
	}
	if (l->close_cb != NULL) {
		l->close_cb(l, l->close_data);
	}
	free(l);
}

static void inner_closed(struct net_listener *nl)
{
	struct net_grpc_listener *l = net_listener_data(nl);
	l->inner = NULL;
	l->inner_closed = true;
	listener_maybe_done(l);
}

static int opts_resolve(const struct net_grpc_listener_opts *in, struct net_grpc_listener_opts *out)
{
	memset(out, 0, sizeof *out);
	if (in != NULL) {
		*out = *in;
	}
	if (out->backlog == 0) {
		out->backlog = DEFAULT_BACKLOG;
	}
	if (out->max_connections == 0) {
		out->max_connections = DEFAULT_MAX_CONNECTIONS;
	}
	if (out->preface_timeout_ms == 0) {
		out->preface_timeout_ms = DEFAULT_PREFACE_TIMEOUT_MS;
	}
	if (out->linger_ms == 0) {
		out->linger_ms = DEFAULT_LINGER_MS;
	}
	if (out->write_chunk == 0) {
		out->write_chunk = DEFAULT_WRITE_CHUNK;
	}
	/* A chunk must fit the stream's queue, or writing it could never succeed. */
	size_t hw = out->stream.high_water != 0 ? out->stream.high_water : DEFAULT_HIGH_WATER;
	if (out->write_chunk > hw) {
		out->write_chunk = hw;
	}
	if (out->backlog < 0 || out->max_connections > NET_GRPC_LISTENER_MAX_CONNECTIONS ||
	    out->write_chunk > NET_GRPC_LISTENER_MAX_CHUNK) {
		return NET_EINVAL;
	}
	return 0;
}

int net_grpc_listener_open(uv_loop_t *loop, const char *url, struct net_grpc_server *srv,
			   struct net_tls_filter_ctx *tls,
			   const struct net_grpc_listener_opts *opts,
			   struct net_grpc_listener **out)
{
	if (loop == NULL || url == NULL || srv == NULL || out == NULL) {
		return NET_EINVAL;
	}
	struct net_url u;
	int rv = net_url_parse(url, &u);
	if (rv != 0) {
		return rv;
	}
	if (u.tls != (tls != NULL) || (tls != NULL && tls->server == NULL)) {
		return NET_EINVAL;
	}
	struct net_grpc_listener *l = calloc(1, sizeof *l);
	if (l == NULL) {
		return NET_ENOMEM;
	}
	rv = opts_resolve(opts, &l->opts);
	if (rv != 0) {
		free(l);
		return rv;
	}
	l->loop = loop;
	l->srv = srv;
	l->tls = tls;
	struct net_stream_opts so = l->opts.stream;
	so.filter = tls != NULL ? wrap_factory : NULL;
	so.filter_ctx = tls != NULL ? l : NULL;
	rv = net_listener_open(loop, url, l->opts.backlog, &so, on_accept, l, &l->inner);
	if (rv != 0) {
		free(l);
		return rv;
	}
	l->port = net_listener_port(l->inner);
	*out = l;
	return 0;
}

uint16_t net_grpc_listener_port(const struct net_grpc_listener *l)
{
	return l->port;
}

void net_grpc_listener_stats(const struct net_grpc_listener *l, struct net_grpc_listener_stats *out)
{
	*out = l->stats;
	out->queued = 0;
	for (const struct conn *c = l->conns; c != NULL; c = c->next) {
		out->queued += c->out_len;
		if (c->stream != NULL) {
			out->queued += net_stream_queued(c->stream);
		}
	}
}

void net_grpc_listener_close(struct net_grpc_listener *l, uint64_t drain_ms,
			     net_grpc_listener_close_cb cb, void *data)
{
	assert(l != NULL && !l->closing);
	l->closing = true;
	l->close_cb = cb;
	l->close_data = data;
	net_listener_close(l->inner, inner_closed);
	/* conn_close unlinks nothing at once (a connection is freed from its handles' close
	 * callbacks), so the list can be walked while closing. */
	for (struct conn *c = l->conns; c != NULL; c = c->next) {
		if (c->mode == M_SNIFF) {
			conn_close(c);
		} else if (c->mode == M_GRPC) {
			conn_drain(c, drain_ms);
		}
	}
}

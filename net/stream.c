/* stream.c: TCP byte streams on libuv, with a bounded send queue and an optional filter (TLS)
 * between the socket and the user. See stream.h for the contract. */
#include "stream.h"

#include <assert.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_HIGH_WATER ((size_t)1 << 20)
#define DEFAULT_CONNECT_TIMEOUT_MS 5000
#define DEFAULT_KEEPALIVE_S 30
#define DEFAULT_READ_BUF ((size_t)64 << 10)
#define DEFAULT_BACKLOG 128

_Static_assert(DEFAULT_HIGH_WATER <= NET_STREAM_MAX_HIGH_WATER, "default within bound");
_Static_assert(DEFAULT_READ_BUF <= NET_STREAM_MAX_READ_BUF, "default within bound");

enum stream_state {
	ST_CONNECTING, /* dialer: TCP connect in flight */
	ST_HANDSHAKE,  /* TCP up, the filter's handshake in progress */
	ST_OPEN,       /* usable: reads delivered, writes accepted */
	ST_ENDED,      /* error or EOF reported; waiting for net_stream_close */
	ST_CLOSING,    /* uv_close called; only on_close remains */
};

/* One queued write: the bytes live right after the request, freed in write_cb. */
struct wreq {
	uv_write_t req;
	struct net_stream *s;
	size_t len;
	uint8_t data[];
};

struct net_stream {
	uv_tcp_t tcp;
	uv_timer_t timer; /* connect/handshake deadline; once open, deferred work (defer_cb) */
	uv_connect_t connect_req;
	uv_getaddrinfo_t gai; /* a host name being resolved (counted in open_handles) */
	uint16_t port;
	uv_loop_t *loop;
	struct net_stream_cbs cbs;
	void *data;
	struct net_stream_opts opts;
	struct net_filter filter; /* ops == NULL: no filter */
	char host[NET_URL_HOST_MAX + 1];

	/* Accepted, handshake not done: linked in listener->pending, which closes it if the
	 * listener closes first. NULL once accepted, and always for dialers. */
	struct net_listener *listener;
	struct net_listener *drain_owner; /* the listener that accepted it, until handed over */
	struct net_stream *pend_prev, *pend_next;

	enum stream_state state;
	bool server;
	bool want_read;    /* the user has not paused reads */
	bool reading;      /* uv_read_start is in effect */
	bool want_drained; /* a write returned NET_EAGAIN: call on_drained at low water */
	int open_handles;  /* handles not yet through their close callback */
	bool resolving;    /* gai is in flight */
	size_t queued;     /* bytes inside uv_write requests not yet completed */
	bool eof;          /* the socket reached EOF (filtered streams report it after draining) */
	bool shut;         /* net_stream_shutdown called: no more writes */
	bool fin_sent;     /* uv_shutdown requested: the socket takes no more bytes */
	uv_shutdown_t shutdown_req;
	size_t in_off, in_len; /* filtered streams: rbuf[in_off..in_len) not yet fed */
	unsigned deferred;     /* DEFER_* work waiting for the timer */

	uint8_t *rbuf; /* socket reads land here (opts.read_buf bytes) */
	uint8_t *fbuf; /* filter output scratch (opts.read_buf bytes), NULL without filter */
};

struct net_listener {
	uv_tcp_t tcp;
	uv_loop_t *loop;
	struct net_stream_opts opts;
	net_accept_cb on_accept;
	net_listener_close_cb on_close;
	void *data;
	struct net_stream *pending; /* accepted, handshake in progress */
	size_t n_pending;
	bool closing;
	/* Accepted streams not handed to the user yet (in their handshake, or
	 * closing before it ended) and not yet freed, and whether the listening
	 * handle is closed: on_close runs once both are done, so that whatever
	 * their filters use (a TLS context) may be freed from it. */
	size_t n_draining;
	bool tcp_closed;
};

/* ---- errors and URLs ---- */

static int map_uv_err(int uverr)
{
	switch (uverr) {
	case 0:
		return 0;
	case UV_ECONNREFUSED:
		return NET_EREFUSED;
	case UV_ETIMEDOUT:
		return NET_ETIMEOUT;
	case UV_EADDRINUSE:
		return NET_EADDRINUSE;
	case UV_EADDRNOTAVAIL:
	case UV_EAFNOSUPPORT:
	case UV_EINVAL:
		return NET_EADDR;
	case UV_ENOMEM:
	case UV_ENOBUFS:
		return NET_ENOMEM;
	case UV_EOF:
	case UV_ECONNRESET:
	case UV_EPIPE:
		return NET_ECLOSED;
	default:
		return NET_EIO;
	}
}

int net_url_parse(const char *url, struct net_url *out)
{
	if (url == NULL || out == NULL) {
		return NET_EINVAL;
	}
	memset(out, 0, sizeof *out);
	const char *p;
	if (strncmp(url, "http://", 7) == 0) {
		p = url + 7;
	} else if (strncmp(url, "https://", 8) == 0) {
		p = url + 8;
		out->tls = true;
	} else {
		return NET_EADDR;
	}
	const char *host = p;
	const char *host_end;
	if (*p == '[') {
		host = p + 1;
		host_end = strchr(host, ']');
		if (host_end == NULL || host_end[1] != ':') {
			return NET_EADDR;
		}
		p = host_end + 2;
		out->ipv6 = true;
	} else {
		host_end = strchr(p, ':');
		if (host_end == NULL) {
			return NET_EADDR;
		}
		p = host_end + 1;
	}
	size_t hlen = (size_t)(host_end - host);
	if (hlen == 0 || hlen > NET_URL_HOST_MAX) {
		return NET_EADDR;
	}
	memcpy(out->host, host, hlen);
	out->host[hlen] = '\0';

	/* Port: 1..5 digits, value <= 65535, then end of string or a single "/". */
	unsigned long port = 0;
	size_t digits = 0;
	while (*p >= '0' && *p <= '9') {
		if (++digits > 5) {
			return NET_EADDR;
		}
		port = port * 10 + (unsigned long)(*p - '0');
		p++;
	}
	if (digits == 0 || port > 65535 || !(*p == '\0' || (p[0] == '/' && p[1] == '\0'))) {
		return NET_EADDR;
	}
	out->port = (uint16_t)port;

	/* A numeric address must parse now; anything else must be a host name (letters, digits,
	 * '-' and '.'), resolved when it is dialed. */
	struct sockaddr_storage ss;
	if (out->ipv6 || net_url_sockaddr(out, &ss) == 0) {
		return out->ipv6 ? net_url_sockaddr(out, &ss) : 0;
	}
	for (const char *c = out->host; *c != '\0'; c++) {
		if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') ||
		      (*c >= '0' && *c <= '9') || *c == '-' || *c == '.')) {
			return NET_EADDR;
		}
	}
	/* a name has a letter somewhere (999.1.1.1 is a bad address, not a name) */
	if (out->host[0] == '-' || out->host[0] == '.' ||
	    strpbrk(out->host, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ") == NULL) {
		return NET_EADDR;
	}
	out->name = true;
	return 0;
}

int net_url_sockaddr(const struct net_url *url, struct sockaddr_storage *out)
{
	assert(url != NULL && out != NULL);
	memset(out, 0, sizeof *out);
	int rv;
	if (url->name) {
		/* resolved here, synchronously: for listeners, at start */
		struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM };
		struct addrinfo *res = NULL;
		if (getaddrinfo(url->host, NULL, &hints, &res) != 0 || res == NULL) {
			return NET_EADDR;
		}
		memcpy(out, res->ai_addr, res->ai_addrlen);
		freeaddrinfo(res);
		if (out->ss_family == AF_INET6) {
			((struct sockaddr_in6 *)out)->sin6_port = htons(url->port);
		} else {
			((struct sockaddr_in *)out)->sin_port = htons(url->port);
		}
		return 0;
	}
	if (url->ipv6) {
		rv = uv_ip6_addr(url->host, url->port, (struct sockaddr_in6 *)out);
	} else {
		rv = uv_ip4_addr(url->host, url->port, (struct sockaddr_in *)out);
	}
	return rv == 0 ? 0 : NET_EADDR;
}

/* ---- options ---- */

static int opts_resolve(const struct net_stream_opts *in, struct net_stream_opts *out)
{
	memset(out, 0, sizeof *out);
	if (in != NULL) {
		*out = *in;
	}
	if (out->high_water == 0) {
		out->high_water = DEFAULT_HIGH_WATER;
	}
	if (out->low_water == 0) {
		out->low_water = out->high_water / 4;
	}
	if (out->connect_timeout_ms == 0) {
		out->connect_timeout_ms = DEFAULT_CONNECT_TIMEOUT_MS;
	}
	if (out->keepalive_s == 0) {
		out->keepalive_s = DEFAULT_KEEPALIVE_S;
	}
	if (out->read_buf == 0) {
		out->read_buf = DEFAULT_READ_BUF;
	}
	if (out->high_water > NET_STREAM_MAX_HIGH_WATER || out->low_water >= out->high_water ||
	    out->read_buf > NET_STREAM_MAX_READ_BUF) {
		return NET_EINVAL;
	}
	return 0;
}

/* ---- stream core ---- */

static void stream_end(struct net_stream *s, int err);
static void stream_filter_pump(struct net_stream *s);
static void listener_unlink(struct net_stream *s);

static struct net_stream *stream_alloc(uv_loop_t *loop, const struct net_stream_opts *opts)
{
	struct net_stream *s = calloc(1, sizeof *s);
	if (s == NULL) {
		return NULL;
	}
	s->loop = loop;
	s->opts = *opts;
	s->want_read = true;
	s->rbuf = malloc(opts->read_buf);
	if (s->rbuf == NULL) {
		free(s);
		return NULL;
	}
	if (opts->filter != NULL) {
		s->fbuf = malloc(opts->read_buf);
		if (s->fbuf == NULL) {
			free(s->rbuf);
			free(s);
			return NULL;
		}
	}
	/* Both init calls only fill the structures on Unix; they cannot fail for a valid loop. */
	int rv = uv_tcp_init(loop, &s->tcp);
	assert(rv == 0);
	rv = uv_timer_init(loop, &s->timer);
	assert(rv == 0);
	(void)rv;
	s->tcp.data = s;
	s->timer.data = s;
	s->open_handles = 2;
	return s;
}

static void listener_finish(struct net_listener *l);

static void stream_free(struct net_stream *s)
{
	assert(s->open_handles == 0);
	assert(s->queued == 0); /* every write request completed (cancelled) before close */
	if (s->filter.ops != NULL) {
		s->filter.ops->destroy(s->filter.impl);
	}
	struct net_listener *owner = s->drain_owner;
	free(s->fbuf);
	free(s->rbuf);
	free(s);
	if (owner != NULL) {
		assert(owner->n_draining > 0);
		if (--owner->n_draining == 0 && owner->tcp_closed) {
			listener_finish(owner);
		}
	}
}

static void stream_release(struct net_stream *s)
{
	assert(s->open_handles > 0);
	if (--s->open_handles > 0) {
		return;
	}
	if (s->cbs.on_close != NULL) {
		s->cbs.on_close(s);
	}
	stream_free(s);
}

static void stream_handle_closed(uv_handle_t *h)
{
	stream_release(h->data);
}

void net_stream_close(struct net_stream *s)
{
	assert(s != NULL);
	if (s->state == ST_CLOSING) {
		return;
	}
	s->state = ST_CLOSING;
	listener_unlink(s);
	if (s->resolving) {
		(void)uv_cancel((uv_req_t *)&s->gai); /* its callback releases s */
	}
	/* uv_close cancels the connect request and every queued write; their callbacks run
	 * (UV_ECANCELED) before the handle's close callback, so s outlives them. */
	uv_close((uv_handle_t *)&s->tcp, stream_handle_closed);
	uv_close((uv_handle_t *)&s->timer, stream_handle_closed);
}

void net_stream_set_cbs(struct net_stream *s, const struct net_stream_cbs *cbs, void *data)
{
	assert(s != NULL);
	if (cbs != NULL) {
		s->cbs = *cbs;
	} else {
		memset(&s->cbs, 0, sizeof s->cbs);
	}
	s->data = data;
}

void *net_stream_data(const struct net_stream *s)
{
	return s->data;
}

/* The local port a TCP handle is bound to, 0 if unknown. */
static uint16_t tcp_port(const uv_tcp_t *tcp)
{
	struct sockaddr_storage ss;
	int len = (int)sizeof ss;
	if (uv_tcp_getsockname(tcp, (struct sockaddr *)&ss, &len) != 0) {
		return 0;
	}
	if (ss.ss_family == AF_INET) {
		return ntohs(((struct sockaddr_in *)&ss)->sin_port);
	}
	if (ss.ss_family == AF_INET6) {
		return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
	}
	return 0;
}

size_t net_stream_queued(const struct net_stream *s)
{
	return s->queued;
}

uint16_t net_stream_local_port(const struct net_stream *s)
{
	return tcp_port(&s->tcp);
}

/* Work an open stream defers to the loop (s->timer, free once the connection is up), so that
 * no user callback runs from inside the user's own call. */
enum { DEFER_RESUME = 1, DEFER_DRAINED = 2 };

static void stream_resume(struct net_stream *s);

static void defer_cb(uv_timer_t *t)
{
	struct net_stream *s = t->data;
	unsigned what = s->deferred;
	s->deferred = 0;
	if ((what & DEFER_DRAINED) && s->state == ST_OPEN && s->want_drained &&
	    s->queued <= s->opts.low_water) {
		s->want_drained = false;
		if (s->cbs.on_drained != NULL) {
			s->cbs.on_drained(s);
		}
	}
	if (what & DEFER_RESUME) {
		stream_resume(s);
	}
}

static void stream_defer(struct net_stream *s, unsigned what)
{
	assert(s->state == ST_OPEN); /* the deadline timer is stopped by then */
	s->deferred |= what;
	uv_timer_start(&s->timer, defer_cb, 0, 0);
}

static void write_cb(uv_write_t *req, int status)
{
	struct wreq *w = req->data;
	struct net_stream *s = w->s;
	assert(s->queued >= w->len);
	s->queued -= w->len;
	free(w);
	if (status == UV_ECANCELED || s->state == ST_CLOSING || s->state == ST_ENDED) {
		return;
	}
	if (status < 0) {
		stream_end(s, map_uv_err(status));
		return;
	}
	if (s->want_drained && s->queued <= s->opts.low_water) {
		s->want_drained = false;
		if (s->cbs.on_drained != NULL) {
			s->cbs.on_drained(s);
		}
	}
}

/* Hands bytes to the socket: straight to the kernel when nothing is queued ahead of them,
 * the rest copied into a write request. Returns 0, NET_ENOMEM or NET_EIO. */
static int stream_raw_write(struct net_stream *s, const uint8_t *buf, size_t len)
{
	assert(s->state == ST_OPEN || s->state == ST_HANDSHAKE);
	if (s->fin_sent) {
		/* After our FIN nothing can go out; a filter's late output (say, a TLS record
		 * answering the peer after our close_notify) is dropped, as the close intends. */
		return 0;
	}
	size_t off = 0;
	if (s->queued == 0) {
		/* Order is kept: try_write only when no earlier request is still pending. */
		uv_buf_t b = uv_buf_init((char *)(uintptr_t)buf, (unsigned)len);
		int n = uv_try_write((uv_stream_t *)&s->tcp, &b, 1);
		if (n > 0) {
			off = (size_t)n;
		}
		/* n < 0 (EAGAIN, or an error uv_write reports again below): queue it all. */
	}
	if (off == len) {
		return 0;
	}
	size_t rest = len - off;
	struct wreq *w = malloc(sizeof *w + rest);
	if (w == NULL) {
		return NET_ENOMEM;
	}
	w->s = s;
	w->len = rest;
	w->req.data = w;
	memcpy(w->data, buf + off, rest);
	uv_buf_t b = uv_buf_init((char *)w->data, (unsigned)rest);
	int rv = uv_write(&w->req, (uv_stream_t *)&s->tcp, &b, 1, write_cb);
	if (rv != 0) {
		free(w);
		return NET_EIO;
	}
	s->queued += rest;
	return 0;
}

/* Moves the filter's pending output to the socket. Returns 0 or a negative code. */
static int stream_filter_flush(struct net_stream *s)
{
	assert(s->filter.ops != NULL);
	for (;;) {
		size_t n = 0;
		int rv = s->filter.ops->take(s->filter.impl, s->fbuf, s->opts.read_buf, &n);
		if (rv != 0) {
			return rv;
		}
		assert(n <= s->opts.read_buf);
		if (n == 0) {
			return 0;
		}
		rv = stream_raw_write(s, s->fbuf, n);
		if (rv != 0) {
			return rv;
		}
	}
}

int net_stream_write(struct net_stream *s, const uint8_t *buf, size_t len)
{
	assert(s != NULL);
	assert(buf != NULL || len == 0);
	if (s->state != ST_OPEN || s->shut) {
		return NET_ECLOSED;
	}
	if (len == 0) {
		return 0;
	}
	if (len > s->opts.high_water) {
		return NET_ETOOBIG;
	}
	if (s->queued + len > s->opts.high_water) {
		s->want_drained = true;
		return NET_EAGAIN;
	}
	if (s->filter.ops == NULL) {
		return stream_raw_write(s, buf, len);
	}
	int rv = s->filter.ops->write(s->filter.impl, buf, len);
	if (rv == NET_EAGAIN) {
		/* The filter's own plaintext queue is full; it empties as the socket drains. With
		 * nothing in the socket's queue no write completion will come to say so: the
		 * loop's next turn does. */
		s->want_drained = true;
		if (s->queued <= s->opts.low_water) {
			stream_defer(s, DEFER_DRAINED);
		}
		return rv;
	}
	if (rv == 0) {
		rv = stream_filter_flush(s);
	}
	return rv;
}

static void shutdown_cb(uv_shutdown_t *req, int status)
{
	(void)req;
	(void)status; /* a failed FIN shows up as a read error; a cancelled one means closing */
}

int net_stream_shutdown(struct net_stream *s)
{
	assert(s != NULL);
	if (s->state != ST_OPEN) {
		return NET_ECLOSED;
	}
	if (s->shut) {
		return 0;
	}
	s->shut = true;
	int rv = 0;
	if (s->filter.ops != NULL && s->filter.ops->shutdown != NULL) {
		rv = s->filter.ops->shutdown(s->filter.impl);
		if (rv == 0) {
			rv = stream_filter_flush(s);
		}
	}
	/* uv_shutdown sends the FIN once every queued write has gone out. */
	if (uv_shutdown(&s->shutdown_req, (uv_stream_t *)&s->tcp, shutdown_cb) != 0 && rv == 0) {
		rv = NET_EIO;
	}
	s->fin_sent = true;
	return rv;
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	(void)suggested;
	struct net_stream *s = h->data;
	/* libuv asks for one buffer per read and has no two reads in flight on one handle. */
	*buf = uv_buf_init((char *)s->rbuf, (unsigned)s->opts.read_buf);
}

static void stream_promote(struct net_stream *s);
static int stream_read_on(struct net_stream *s);
static void stream_read_off(struct net_stream *s);

/* Hands the filter's decoded bytes to on_read while the user wants them. After the socket's
 * EOF, the filter's end (NET_ECLOSED for a clean close, its error for a truncated one) is
 * reported once every decoded byte has been delivered. */
static void stream_filter_pump(struct net_stream *s)
{
	while (s->state == ST_OPEN && s->want_read) {
		size_t n = 0;
		int rv = s->filter.ops->read(s->filter.impl, s->fbuf, s->opts.read_buf, &n);
		if (rv != 0) {
			stream_end(s, rv);
			return;
		}
		assert(n <= s->opts.read_buf);
		if (n == 0) {
			if (s->eof) {
				stream_end(s, NET_ECLOSED);
			}
			return;
		}
		if (s->cbs.on_read != NULL) {
			s->cbs.on_read(s, s->fbuf, n);
		}
	}
}

/* Feeds the socket bytes held in rbuf[in_off..in_len) to the filter, sending its output and
 * delivering its plaintext after each feed, so its input buffer is empty before the next one.
 * A filter may take less than offered (a bounded input buffer): what it leaves stays in rbuf,
 * and socket reads stay stopped until a later call feeds it, so rbuf is never overwritten. */
static void stream_filter_input(struct net_stream *s)
{
	int stalls = 0;
	while (s->in_off < s->in_len && (s->state == ST_HANDSHAKE || s->state == ST_OPEN)) {
		size_t used = 0;
		int rv = s->filter.ops->feed(s->filter.impl, s->rbuf + s->in_off,
					     s->in_len - s->in_off, &used);
		assert(used <= s->in_len - s->in_off);
		s->in_off += used;
		if (rv == 0) {
			rv = stream_filter_flush(s);
		}
		if (rv != 0) {
			stream_end(s, rv);
			return;
		}
		if (s->state == ST_HANDSHAKE) {
			rv = s->filter.ops->handshake_done(s->filter.impl);
			if (rv < 0) {
				stream_end(s, rv);
				return;
			}
			if (rv == 1) {
				stream_promote(s);
			}
		}
		stream_filter_pump(s);
		if (used > 0) {
			stalls = 0;
			continue;
		}
		if (s->state == ST_OPEN && !s->want_read) {
			return; /* paused with plaintext undelivered: resume feeds the rest */
		}
		if (++stalls >= 2 && (s->state == ST_HANDSHAKE || s->state == ST_OPEN)) {
			/* Drained, and still no room for input: the filter is stuck. */
			stream_end(s, NET_ELIMIT);
			return;
		}
	}
	if (s->in_off == s->in_len) {
		s->in_off = s->in_len = 0;
	}
}

static void read_cb(uv_stream_t *h, ssize_t nread, const uv_buf_t *buf)
{
	(void)buf;
	struct net_stream *s = h->data;
	if (nread == 0 || s->state == ST_CLOSING || s->state == ST_ENDED) {
		return;
	}
	if (nread < 0 && (nread != UV_EOF || s->filter.ops == NULL)) {
		stream_end(s, nread == UV_EOF ? NET_ECLOSED : map_uv_err((int)nread));
		return;
	}
	if (nread < 0) {
		/* EOF under a filter: it decides whether the close was clean (TLS: close_notify
		 * seen) once what it holds has been read. */
		stream_read_off(s);
		s->eof = true;
		int rv = s->filter.ops->feed_eof != NULL ? s->filter.ops->feed_eof(s->filter.impl) :
							   0;
		if (rv < 0 || s->state != ST_OPEN) {
			stream_end(s, rv < 0 ? rv : NET_ECLOSED);
			return;
		}
		stream_filter_pump(s);
		return;
	}
	assert((size_t)nread <= s->opts.read_buf);
	if (s->filter.ops == NULL) {
		assert(s->state == ST_OPEN);
		if (s->cbs.on_read != NULL) {
			s->cbs.on_read(s, s->rbuf, (size_t)nread);
		}
		return;
	}
	assert(s->in_len == 0); /* reads are stopped while rbuf holds unfed bytes */
	s->in_off = 0;
	s->in_len = (size_t)nread;
	stream_filter_input(s);
}

static int stream_read_on(struct net_stream *s)
{
	if (s->reading || s->eof) {
		return 0;
	}
	int rv = uv_read_start((uv_stream_t *)&s->tcp, alloc_cb, read_cb);
	if (rv != 0) {
		return NET_EIO;
	}
	s->reading = true;
	return 0;
}

static void stream_read_off(struct net_stream *s)
{
	if (s->reading) {
		uv_read_stop((uv_stream_t *)&s->tcp);
		s->reading = false;
	}
}

/* Resumes a filtered stream after a pause: decoded bytes first, then the socket bytes left
 * unfed, then the socket. Runs from the loop, not from inside net_stream_read_start. */
static void stream_resume(struct net_stream *s)
{
	if (s->state != ST_OPEN || !s->want_read) {
		return;
	}
	stream_filter_pump(s);
	stream_filter_input(s);
	if (s->state == ST_OPEN && s->want_read && s->in_len == 0 && stream_read_on(s) != 0) {
		stream_end(s, NET_EIO);
	}
}

int net_stream_read_stop(struct net_stream *s)
{
	assert(s != NULL);
	s->want_read = false;
	/* During a handshake the filter still needs the socket's bytes. */
	if (s->state == ST_OPEN) {
		stream_read_off(s);
	}
	return 0;
}

int net_stream_read_start(struct net_stream *s)
{
	assert(s != NULL);
	if (s->want_read) {
		return 0;
	}
	s->want_read = true;
	if (s->state != ST_OPEN) {
		return 0;
	}
	if (s->filter.ops != NULL) {
		stream_defer(s, DEFER_RESUME);
		return 0;
	}
	return stream_read_on(s);
}

/* The stream ended before or after it opened. Reported once; the user then closes it. */
static void stream_end(struct net_stream *s, int err)
{
	assert(err < 0);
	if (s->state == ST_CLOSING || s->state == ST_ENDED) {
		return;
	}
	enum stream_state was = s->state;
	s->state = ST_ENDED;
	stream_read_off(s);
	uv_timer_stop(&s->timer);
	if (was == ST_OPEN) {
		if (s->cbs.on_error != NULL) {
			s->cbs.on_error(s, err);
		}
	} else if (s->server) {
		/* Accepted but never handed to the user: nobody else will close it. */
		net_stream_close(s);
	} else if (s->cbs.on_connect != NULL) {
		s->cbs.on_connect(s, err);
	}
}

static void listener_unlink(struct net_stream *s)
{
	struct net_listener *l = s->listener;
	if (l == NULL) {
		return;
	}
	if (s->pend_prev != NULL) {
		s->pend_prev->pend_next = s->pend_next;
	} else {
		l->pending = s->pend_next;
	}
	if (s->pend_next != NULL) {
		s->pend_next->pend_prev = s->pend_prev;
	}
	assert(l->n_pending > 0);
	l->n_pending--;
	s->listener = NULL;
	s->pend_prev = s->pend_next = NULL;
}

/* The connection is usable: report it (dialer: on_connect; accepted: the accept callback),
 * then read if the user wants to. */
static void stream_promote(struct net_stream *s)
{
	assert(s->state == ST_CONNECTING || s->state == ST_HANDSHAKE);
	uv_timer_stop(&s->timer);
	s->state = ST_OPEN;
	if (s->server) {
		struct net_listener *l = s->listener;
		assert(l != NULL);
		listener_unlink(s);
		s->drain_owner = NULL; /* the user's from now on */
		assert(l->n_draining > 0);
		l->n_draining--;
		l->on_accept(l, s);
	} else if (s->cbs.on_connect != NULL) {
		s->cbs.on_connect(s, 0);
	}
	if (s->state != ST_OPEN) {
		return;
	}
	if (s->want_read) {
		if (stream_read_on(s) != 0) {
			stream_end(s, NET_EIO);
		}
	} else {
		stream_read_off(s);
	}
}

static void deadline_cb(uv_timer_t *t)
{
	struct net_stream *s = t->data;
	if (s->state == ST_CONNECTING || s->state == ST_HANDSHAKE) {
		stream_end(s, NET_ETIMEOUT);
	}
}

/* TCP is up (either side): socket options, then the handshake or straight to open. */
static void stream_established(struct net_stream *s)
{
	/* Latency over batching: Raft heartbeats and gRPC frames are small and time-bound. */
	uv_tcp_nodelay(&s->tcp, 1);
	/* Detect a peer that vanished without a FIN (power loss, partition) on idle links. */
	uv_tcp_keepalive(&s->tcp, 1, s->opts.keepalive_s);
	if (s->filter.ops == NULL) {
		stream_promote(s);
		return;
	}
	s->state = ST_HANDSHAKE;
	if (stream_read_on(s) != 0) {
		stream_end(s, NET_EIO);
		return;
	}
	int rv = stream_filter_flush(s);
	if (rv == 0) {
		rv = s->filter.ops->handshake_done(s->filter.impl);
	}
	if (rv < 0) {
		stream_end(s, rv);
	} else if (rv == 1) {
		stream_promote(s);
		stream_filter_pump(s);
	}
}

static void connect_cb(uv_connect_t *req, int status)
{
	struct net_stream *s = req->data;
	if (status == UV_ECANCELED || s->state != ST_CONNECTING) {
		return; /* closed, or the deadline already reported a timeout */
	}
	if (status < 0) {
		stream_end(s, map_uv_err(status));
		return;
	}
	stream_established(s);
}

/* A host name resolved: connect to its first address. */
static void resolved_cb(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
	struct net_stream *s = req->data;
	s->resolving = false;
	if (s->state != ST_CONNECTING || status == UV_ECANCELED) {
		uv_freeaddrinfo(res);
		stream_release(s); /* closed meanwhile, or past the deadline */
		return;
	}
	int err = status < 0 || res == NULL ? NET_EADDR : 0;
	if (err == 0) {
		struct sockaddr_storage ss;
		memset(&ss, 0, sizeof ss);
		memcpy(&ss, res->ai_addr, res->ai_addrlen);
		if (ss.ss_family == AF_INET6)
			((struct sockaddr_in6 *)&ss)->sin6_port = htons(s->port);
		else
			((struct sockaddr_in *)&ss)->sin_port = htons(s->port);
		int uvrv = uv_tcp_connect(&s->connect_req, &s->tcp, (const struct sockaddr *)&ss,
					  connect_cb);
		err = uvrv == 0 ? 0 : map_uv_err(uvrv);
	}
	uv_freeaddrinfo(res);
	s->open_handles--; /* the tcp and timer handles are still open: no free here */
	if (err != 0)
		stream_end(s, err);
}

int net_stream_connect(uv_loop_t *loop, const char *url, const struct net_stream_opts *opts,
		       const struct net_stream_cbs *cbs, void *data, struct net_stream **out)
{
	if (loop == NULL || url == NULL || out == NULL) {
		return NET_EINVAL;
	}
	struct net_url u;
	int rv = net_url_parse(url, &u);
	if (rv != 0) {
		return rv;
	}
	if (u.port == 0) {
		return NET_EADDR;
	}
	struct sockaddr_storage ss;
	rv = u.name ? 0 : net_url_sockaddr(&u, &ss);
	if (rv != 0) {
		return rv;
	}
	struct net_stream_opts o;
	rv = opts_resolve(opts, &o);
	if (rv != 0) {
		return rv;
	}
	struct net_stream *s = stream_alloc(loop, &o);
	if (s == NULL) {
		return NET_ENOMEM;
	}
	memcpy(s->host, u.host, sizeof s->host);
	net_stream_set_cbs(s, cbs, data);
	s->state = ST_CONNECTING;
	if (o.filter != NULL) {
		rv = o.filter(o.filter_ctx, false, s->host, &s->filter);
		if (rv != 0) {
			assert(rv < 0);
			goto err_close;
		}
		assert(s->filter.ops != NULL);
	}
	s->connect_req.data = s;
	int uvrv;
	if (u.name) {
		/* resolved on libuv's thread pool; the connect deadline covers it */
		struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM };
		s->gai.data = s;
		s->port = u.port;
		uvrv = uv_getaddrinfo(loop, &s->gai, resolved_cb, u.host, NULL, &hints);
		if (uvrv == 0) {
			s->resolving = true;
			s->open_handles++;
		}
	} else {
		uvrv = uv_tcp_connect(&s->connect_req, &s->tcp, (const struct sockaddr *)&ss,
				      connect_cb);
	}
	if (uvrv != 0) {
		rv = u.name ? NET_EADDR : map_uv_err(uvrv);
		goto err_close;
	}
	uv_timer_start(&s->timer, deadline_cb, o.connect_timeout_ms, 0);
	*out = s;
	return 0;

err_close:
	/* The handles were initialised: they go through uv_close; no user callback runs. */
	memset(&s->cbs, 0, sizeof s->cbs);
	net_stream_close(s);
	return rv;
}

/* ---- listeners ---- */

static void free_handle(uv_handle_t *h)
{
	free(h);
}

static void listener_connection_cb(uv_stream_t *server, int status)
{
	struct net_listener *l = server->data;
	if (status < 0 || l->closing) {
		return; /* e.g. EMFILE: libuv keeps listening; nothing to accept */
	}
	struct net_stream *s = stream_alloc(l->loop, &l->opts);
	if (s == NULL) {
		/* Accept and drop: libuv stops polling a listener whose connection was not
		 * accepted, which would stall it for good. The bare handle is freed on close. */
		uv_tcp_t *tmp = malloc(sizeof *tmp);
		if (tmp != NULL) {
			uv_tcp_init(l->loop, tmp);
			uv_accept(server, (uv_stream_t *)tmp);
			uv_close((uv_handle_t *)tmp, free_handle);
		}
		return;
	}
	s->server = true;
	s->state = ST_HANDSHAKE;
	if (uv_accept(server, (uv_stream_t *)&s->tcp) != 0) {
		net_stream_close(s);
		return;
	}
	if (l->n_pending >= NET_LISTENER_MAX_PENDING) {
		net_stream_close(s);
		return;
	}
	s->listener = l;
	s->drain_owner = l;
	l->n_draining++;
	s->pend_next = l->pending;
	if (l->pending != NULL) {
		l->pending->pend_prev = s;
	}
	l->pending = s;
	l->n_pending++;
	if (l->opts.filter != NULL) {
		if (l->opts.filter(l->opts.filter_ctx, true, NULL, &s->filter) != 0) {
			net_stream_close(s);
			return;
		}
		assert(s->filter.ops != NULL);
		uv_timer_start(&s->timer, deadline_cb, l->opts.connect_timeout_ms, 0);
	}
	stream_established(s);
}

static void listener_finish(struct net_listener *l)
{
	if (l->on_close != NULL) {
		l->on_close(l);
	}
	free(l);
}

static void listener_closed(uv_handle_t *h)
{
	struct net_listener *l = h->data;
	l->tcp_closed = true;
	if (l->n_draining == 0) {
		listener_finish(l);
	}
}

int net_listener_open(uv_loop_t *loop, const char *url, int backlog,
		      const struct net_stream_opts *stream_opts, net_accept_cb on_accept,
		      void *data, struct net_listener **out)
{
	if (loop == NULL || url == NULL || on_accept == NULL || out == NULL || backlog < 0) {
		return NET_EINVAL;
	}
	struct net_url u;
	int rv = net_url_parse(url, &u);
	if (rv != 0) {
		return rv;
	}
	struct sockaddr_storage ss;
	rv = net_url_sockaddr(&u, &ss);
	if (rv != 0) {
		return rv;
	}
	struct net_listener *l = calloc(1, sizeof *l);
	if (l == NULL) {
		return NET_ENOMEM;
	}
	rv = opts_resolve(stream_opts, &l->opts);
	if (rv != 0) {
		free(l);
		return rv;
	}
	l->loop = loop;
	l->on_accept = on_accept;
	l->data = data;
	int uvrv = uv_tcp_init(loop, &l->tcp);
	assert(uvrv == 0);
	l->tcp.data = l;
	/* libuv sets SO_REUSEADDR in uv_tcp_bind; the bind error itself may only show at
	 * listen time on Linux, so both are checked. */
	uvrv = uv_tcp_bind(&l->tcp, (const struct sockaddr *)&ss, 0);
	if (uvrv == 0) {
		uvrv = uv_listen((uv_stream_t *)&l->tcp, backlog == 0 ? DEFAULT_BACKLOG : backlog,
				 listener_connection_cb);
	}
	if (uvrv != 0) {
		l->closing = true;
		uv_close((uv_handle_t *)&l->tcp, listener_closed);
		return map_uv_err(uvrv);
	}
	*out = l;
	return 0;
}

void *net_listener_data(const struct net_listener *l)
{
	return l->data;
}

uint16_t net_listener_port(const struct net_listener *l)
{
	return tcp_port(&l->tcp);
}

void net_listener_close(struct net_listener *l, net_listener_close_cb on_close)
{
	assert(l != NULL);
	assert(!l->closing);
	l->closing = true;
	l->on_close = on_close;
	while (l->pending != NULL) {
		net_stream_close(l->pending); /* unlinks it; stream_free counts it out */
	}
	assert(l->n_pending == 0);
	uv_close((uv_handle_t *)&l->tcp, listener_closed);
}

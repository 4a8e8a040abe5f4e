/* gossip_net.c: gossip's UDP and TCP transport on libuv (gossip_net.h).
 *
 * Both sockets are made with plain socket()/bind() and then handed to libuv (uv_udp_open,
 * uv_tcp_open): when port 0 asks for an ephemeral port, the UDP socket picks one and the TCP
 * listener must get the same number, which another process may hold; retrying then means
 * closing and binding again, synchronously, which libuv handles (closed only through the loop)
 * would make awkward.
 *
 * A push-pull stream carries one frame each way: a 4-byte big-endian length, then a sealed
 * packet (gossip_seal.h) whose opened payload is one byte of stream flags (STREAM_JOIN) and the
 * state. The flags sit inside the seal so that they are authenticated with the state.
 *
 * Every stream has a TCP handle and a deadline timer; it is freed when both are closed, and an
 * outbound stream reports its outcome (on_pushpull_done) at that moment, so the report never
 * runs inside a call of the owner's. The transport itself is freed once its sockets, its
 * deferral timer and every stream are closed.
 */
#include "gossip_net.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define DEFAULT_MAX_PACKET 1400u
#define DEFAULT_MAX_STREAMS 128u
#define DEFAULT_MAX_FRAME (32u << 20)
#define DEFAULT_STREAM_TIMEOUT_MS 10000u
#define DEFAULT_MAX_BUFFERED (64u << 20)
/* A UDP datagram never exceeds 65,507 bytes of payload. */
#define MAX_PACKET_LIMIT 65507u
/* Ephemeral ports tried before giving up when the TCP twin of a UDP port is taken. */
#define BIND_ATTEMPTS 8
#define LISTEN_BACKLOG 128
/* Datagrams waiting in libuv's send queue when the socket buffer is full: beyond this many
 * bytes, more are dropped (and counted) rather than queued without end. */
#define SEND_QUEUE_MAX ((size_t)1 << 20)
/* Receive buffer asked of the kernel: bursts of gossip wait there while the loop is busy. */
#define UDP_RCVBUF (2 << 20)
/* Push-pull failures reported later (outside the caller's call) waiting at once. */
#define DEFERRED_MAX 4096
/* A stream's read buffer grows with the bytes that actually arrived, from this size, so a
 * length prefix alone never makes us allocate max_frame. */
#define READ_BUF_START ((size_t)64 << 10)
#define LOG_LINE_MAX 320

/* First byte of a stream frame's opened payload. */
#define STREAM_JOIN 0x01u

#define FRAME_HDR 4

enum log_level { LOG_DEBUG = 0, LOG_INFO = 1, LOG_WARN = 2, LOG_ERROR = 3 };

enum stream_phase {
	PH_CONNECTING, /* outbound: TCP connect in progress */
	PH_WRITING,    /* our frame is being written (initiator first, acceptor second) */
	PH_READING,    /* waiting for the other side's frame */
	PH_CLOSING,    /* uv_close called on both handles */
};

struct gstream {
	struct net_gossip *t;
	struct gstream *prev, *next;
	uv_tcp_t tcp;
	uv_timer_t timer;
	uv_connect_t connect_req;
	uv_write_t write_req;
	int handles; /* handles initialized and not yet through their close callback */
	bool outbound;
	bool join; /* outbound: what we ask for */
	enum stream_phase phase;
	int status; /* outcome: 0 once the answer was merged (outbound), else a uv error */
	struct sockaddr_storage peer;
	struct net_keyring kr; /* the ring when the stream began (rotation leaves it alone) */
	uint8_t hdr[FRAME_HDR];
	size_t hdr_got;
	uint32_t frame_len; /* from the header */
	uint8_t *rbuf;
	size_t rcap, rgot;
	uint8_t *wbuf; /* frame being written */
};

/* A push-pull that could not start, reported from the deferral timer. */
struct deferred {
	struct deferred *next;
	struct sockaddr_storage to;
	int status;
};

/* A datagram queued in libuv while the socket buffer is full. */
struct udp_send {
	uv_udp_send_t req;
	struct net_gossip *t;
	size_t len;
	uint8_t data[];
};

struct net_gossip {
	uv_loop_t *loop;
	struct net_gossip_config cfg; /* label and keyring pointers cleared; copies below */
	char label[NET_SEAL_MAX_LABEL + 1];
	struct net_keyring kr;
	uv_udp_t udp;
	uv_tcp_t listener;
	uv_timer_t defer_timer;
	int handles; /* the three above, until closed */
	uint16_t port;
	uint8_t *rbuf; /* one datagram being read: max_packet bytes */
	uint8_t *sbuf; /* one datagram being sealed: max_packet bytes */
	struct gstream *streams;
	uint32_t n_streams; /* in the list, both directions, until freed */
	size_t rbuf_bytes;  /* read buffers of all streams together, bounded by max_buffered */
	struct deferred *deferred, *deferred_tail;
	uint32_t n_deferred;
	bool closing;
	void (*done)(void *data);
	void *done_data;
	struct net_gossip_stats stats;
};

/* ---- logging ---- */

static void glog(struct net_gossip *t, enum log_level level, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void glog(struct net_gossip *t, enum log_level level, const char *fmt, ...)
{
	char line[LOG_LINE_MAX];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(line, sizeof line, fmt, ap);
	va_end(ap);
	if (t->cfg.log != NULL) {
		t->cfg.log(t->cfg.data, (int)level, line);
		return;
	}
	static const char *const names[] = { "debug", "info", "warn", "error" };
	if (level >= LOG_WARN) {
		fprintf(stderr, "level=%s component=gossip-net msg=\"%s\"\n", names[level], line);
	}
}

/* "1.2.3.4:5" or "[::1]:5" for log lines. */
static const char *addr_str(const struct sockaddr *sa, char *buf, size_t cap)
{
	char host[INET6_ADDRSTRLEN] = "?";
	unsigned port = 0;
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
		uv_ip4_name(in, host, sizeof host);
		port = ntohs(in->sin_port);
		snprintf(buf, cap, "%s:%u", host, port);
	} else if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
		uv_ip6_name(in6, host, sizeof host);
		port = ntohs(in6->sin6_port);
		snprintf(buf, cap, "[%s]:%u", host, port);
	} else {
		snprintf(buf, cap, "(family %d)", sa->sa_family);
	}
	return buf;
}

static size_t sockaddr_len(const struct sockaddr *sa)
{
	return sa->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
}

/* ---- drops ---- */

static void count_drop(struct net_gossip *t, int err)
{
	switch (err) {
	case NET_SEAL_ESHORT:
		t->stats.dropped_short++;
		break;
	case NET_SEAL_EFLAGS:
		t->stats.dropped_flags++;
		break;
	case NET_SEAL_ELABEL:
		t->stats.dropped_label++;
		break;
	case NET_SEAL_EPLAIN:
		t->stats.dropped_plain++;
		break;
	case NET_SEAL_ECRC:
		t->stats.dropped_crc++;
		break;
	default:
		t->stats.dropped_decrypt++;
		break;
	}
}

/* ---- configuration ---- */

void net_gossip_config_init(struct net_gossip_config *cfg)
{
	memset(cfg, 0, sizeof *cfg);
	struct sockaddr_in *in = (struct sockaddr_in *)&cfg->bind;
	in->sin_family = AF_INET;
	in->sin_port = htons(7946);
	in->sin_addr.s_addr = htonl(INADDR_ANY);
	cfg->max_packet = DEFAULT_MAX_PACKET;
	cfg->max_streams = DEFAULT_MAX_STREAMS;
	cfg->max_frame = DEFAULT_MAX_FRAME;
	cfg->stream_timeout_ms = DEFAULT_STREAM_TIMEOUT_MS;
	cfg->max_buffered = DEFAULT_MAX_BUFFERED;
}

/* ---- the end of the transport ---- */

static void maybe_done(struct net_gossip *t)
{
	if (!t->closing || t->handles > 0 || t->streams != NULL) {
		return;
	}
	assert(t->n_streams == 0);
	void (*done)(void *) = t->done;
	void *data = t->done_data;
	free(t->rbuf);
	free(t->sbuf);
	memset(&t->kr, 0, sizeof t->kr);
	free(t);
	if (done != NULL) {
		done(data);
	}
}

static void transport_handle_closed(uv_handle_t *h)
{
	struct net_gossip *t = h->data;
	assert(t->handles > 0);
	t->handles--;
	maybe_done(t);
}

/* ---- streams ---- */

static void stream_close(struct gstream *s, int status);

static void stream_handle_closed(uv_handle_t *h)
{
	struct gstream *s = h->data;
	struct net_gossip *t = s->t;
	assert(s->handles > 0);
	if (--s->handles > 0) {
		return;
	}
	if (s->prev != NULL) {
		s->prev->next = s->next;
	} else {
		t->streams = s->next;
	}
	if (s->next != NULL) {
		s->next->prev = s->prev;
	}
	assert(t->n_streams > 0);
	t->n_streams--;
	assert(t->rbuf_bytes >= s->rcap);
	t->rbuf_bytes -= s->rcap;
	free(s->rbuf);
	free(s->wbuf);
	memset(&s->kr, 0, sizeof s->kr);
	bool report = s->outbound && !t->closing && t->cfg.on_pushpull_done != NULL;
	struct sockaddr_storage peer = s->peer;
	int status = s->status;
	free(s);
	if (status != 0) {
		t->stats.streams_failed++;
	}
	if (report) {
		t->cfg.on_pushpull_done(t->cfg.data, (const struct sockaddr *)&peer, status);
	}
	maybe_done(t);
}

/* Ends a stream with its outcome (the first one given sticks). Safe to call twice. */
static void stream_close(struct gstream *s, int status)
{
	if (s->phase == PH_CLOSING) {
		return;
	}
	s->phase = PH_CLOSING;
	s->status = status;
	if (status != 0 && status != UV_ECANCELED) {
		char a[INET6_ADDRSTRLEN + 16];
		glog(s->t, s->outbound ? LOG_INFO : LOG_DEBUG, "push-pull %s %s failed: %s",
		     s->outbound ? "to" : "from",
		     addr_str((const struct sockaddr *)&s->peer, a, sizeof a), uv_strerror(status));
	}
	/* uv_close cancels a pending connect or write; their callbacks run before the close
	 * callback, with UV_ECANCELED, and see PH_CLOSING. */
	uv_close((uv_handle_t *)&s->tcp, stream_handle_closed);
	uv_close((uv_handle_t *)&s->timer, stream_handle_closed);
}

static void stream_timeout_cb(uv_timer_t *timer)
{
	struct gstream *s = timer->data;
	stream_close(s, UV_ETIMEDOUT);
}

/* Allocates a stream with both handles initialized and its deadline running; NULL on
 * failure (nothing left open). */
static struct gstream *stream_new(struct net_gossip *t, bool outbound)
{
	struct gstream *s = calloc(1, sizeof *s);
	if (s == NULL) {
		return NULL;
	}
	s->t = t;
	s->outbound = outbound;
	s->kr = t->kr;
	if (uv_tcp_init(t->loop, &s->tcp) != 0) {
		free(s);
		return NULL;
	}
	s->tcp.data = s;
	s->timer.data = s;
	s->handles = 1;
	(void)uv_timer_init(t->loop, &s->timer); /* cannot fail on Unix */
	s->handles = 2;
	s->next = t->streams;
	if (t->streams != NULL) {
		t->streams->prev = s;
	}
	t->streams = s;
	t->n_streams++;
	uv_timer_start(&s->timer, stream_timeout_cb, t->cfg.stream_timeout_ms, 0);
	return s;
}

/* Builds our frame (length, then the sealed [flags][state]) from local_state. Returns 0 or a
 * uv error. */
static int stream_build_frame(struct gstream *s, bool join)
{
	struct net_gossip *t = s->t;
	if (t->cfg.local_state == NULL) {
		return UV_ENOTSUP;
	}
	uint8_t *state = NULL;
	size_t len = 0;
	int rv = t->cfg.local_state(t->cfg.data, join, &state, &len);
	if (rv != 0) {
		free(state);
		return UV_ECANCELED;
	}
	size_t over = net_seal_overhead(&s->kr, t->label);
	if (len > t->cfg.max_frame || t->cfg.max_frame - len < over + 1) {
		free(state);
		glog(t, LOG_WARN, "push-pull state of %zu bytes exceeds the frame bound (%u)", len,
		     t->cfg.max_frame);
		return UV_EMSGSIZE;
	}
	size_t sealed_cap = over + 1 + len;
	uint8_t *frame = malloc(FRAME_HDR + sealed_cap);
	if (frame == NULL) {
		free(state);
		return UV_ENOMEM;
	}
	/* The payload is built where net_seal will move it (memmove-safe), then sealed. */
	uint8_t *plain = frame + FRAME_HDR + over;
	plain[0] = join ? STREAM_JOIN : 0;
	if (len > 0) {
		memcpy(plain + 1, state, len);
	}
	free(state);
	long n = net_seal(&s->kr, t->label, plain, len + 1, frame + FRAME_HDR, sealed_cap);
	if (n < 0) {
		free(frame);
		return UV_EIO;
	}
	uint32_t flen = (uint32_t)n;
	frame[0] = (uint8_t)(flen >> 24);
	frame[1] = (uint8_t)(flen >> 16);
	frame[2] = (uint8_t)(flen >> 8);
	frame[3] = (uint8_t)flen;
	free(s->wbuf);
	s->wbuf = frame;
	s->frame_len = flen; /* written length, for the write call below */
	return 0;
}

static void stream_read_start(struct gstream *s);

static void stream_write_cb(uv_write_t *req, int status)
{
	struct gstream *s = req->data;
	if (s->phase == PH_CLOSING) {
		return;
	}
	free(s->wbuf);
	s->wbuf = NULL;
	if (status != 0) {
		stream_close(s, status);
		return;
	}
	if (s->outbound) {
		/* Our state is out: now the answer. */
		s->frame_len = 0;
		stream_read_start(s);
		return;
	}
	/* The acceptor's answer went out: the push-pull is complete on this side. */
	stream_close(s, 0);
}

static int stream_send_frame(struct gstream *s, bool join)
{
	int rv = stream_build_frame(s, join);
	if (rv != 0) {
		return rv;
	}
	s->phase = PH_WRITING;
	uv_buf_t b = uv_buf_init((char *)s->wbuf, (unsigned)(FRAME_HDR + s->frame_len));
	s->write_req.data = s;
	return uv_write(&s->write_req, (uv_stream_t *)&s->tcp, &b, 1, stream_write_cb);
}

/* The other side's frame is complete in s->rbuf[0..frame_len): open it and hand it over. */
static void stream_on_frame(struct gstream *s)
{
	struct net_gossip *t = s->t;
	char a[INET6_ADDRSTRLEN + 16];
	uv_read_stop((uv_stream_t *)&s->tcp);
	uint8_t *payload = NULL;
	size_t plen = 0;
	int rv = net_seal_open(&s->kr, t->label, s->rbuf, s->frame_len, &payload, &plen);
	if (rv == NET_SEAL_OK && (plen < 1 || (payload[0] & ~STREAM_JOIN) != 0)) {
		rv = NET_SEAL_EFLAGS;
	}
	if (rv != NET_SEAL_OK) {
		count_drop(t, rv);
		/* Ours to fix when our own push-pull fails; a stranger's bad frame is only news. */
		glog(t, s->outbound ? LOG_WARN : LOG_INFO, "push-pull %s %s: frame dropped: %s",
		     s->outbound ? "to" : "from",
		     addr_str((const struct sockaddr *)&s->peer, a, sizeof a),
		     net_seal_strerror(rv));
		stream_close(s, UV_EPROTO);
		return;
	}
	bool join = (payload[0] & STREAM_JOIN) != 0;
	if (t->cfg.on_state == NULL ||
	    t->cfg.on_state(t->cfg.data, (const struct sockaddr *)&s->peer, payload + 1, plen - 1,
			    join) != 0) {
		stream_close(s, UV_ECANCELED);
		return;
	}
	if (t->closing || s->phase == PH_CLOSING) {
		return;
	}
	if (s->outbound) {
		stream_close(s, 0);
		return;
	}
	/* Our buffers are done with: answer with our own state. */
	assert(t->rbuf_bytes >= s->rcap);
	t->rbuf_bytes -= s->rcap;
	free(s->rbuf);
	s->rbuf = NULL;
	s->rcap = 0;
	rv = stream_send_frame(s, false);
	if (rv != 0) {
		stream_close(s, rv);
	}
}

static void stream_alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	(void)suggested;
	struct gstream *s = h->data;
	/* Exactly what the frame still needs, never more: bytes after the frame stay unread. */
	if (s->hdr_got < FRAME_HDR) {
		*buf = uv_buf_init((char *)s->hdr + s->hdr_got, (unsigned)(FRAME_HDR - s->hdr_got));
		return;
	}
	if (s->rgot == s->rcap) {
		size_t cap = s->rcap == 0 ? READ_BUF_START : s->rcap * 2;
		if (cap > s->frame_len) {
			cap = s->frame_len;
		}
		/* All streams together stay under max_buffered: a stream that would pass it is
		 * ended (read_cb gets UV_ENOBUFS) rather than growing the heap by max_frame per
		 * stream. */
		if (cap - s->rcap > s->t->cfg.max_buffered - s->t->rbuf_bytes) {
			*buf = uv_buf_init(NULL, 0);
			return;
		}
		uint8_t *nb = realloc(s->rbuf, cap);
		if (nb == NULL) {
			*buf = uv_buf_init(NULL, 0); /* read_cb gets UV_ENOBUFS */
			return;
		}
		s->rbuf = nb;
		s->t->rbuf_bytes += cap - s->rcap;
		s->rcap = cap;
	}
	*buf = uv_buf_init((char *)s->rbuf + s->rgot, (unsigned)(s->rcap - s->rgot));
}

static void stream_read_cb(uv_stream_t *h, ssize_t nread, const uv_buf_t *buf)
{
	(void)buf;
	struct gstream *s = h->data;
	if (s->phase == PH_CLOSING) {
		return;
	}
	if (nread < 0) {
		stream_close(s, (int)nread);
		return;
	}
	size_t n = (size_t)nread;
	if (s->hdr_got < FRAME_HDR) {
		s->hdr_got += n;
		if (s->hdr_got < FRAME_HDR) {
			return;
		}
		uint32_t len = (uint32_t)s->hdr[0] << 24 | (uint32_t)s->hdr[1] << 16 |
			       (uint32_t)s->hdr[2] << 8 | (uint32_t)s->hdr[3];
		if (len == 0 || len > s->t->cfg.max_frame) {
			char a[INET6_ADDRSTRLEN + 16];
			glog(s->t, s->outbound ? LOG_WARN : LOG_INFO,
			     "push-pull %s %s: frame of %u bytes refused (bound %u)",
			     s->outbound ? "to" : "from",
			     addr_str((const struct sockaddr *)&s->peer, a, sizeof a), len,
			     s->t->cfg.max_frame);
			stream_close(s, UV_EMSGSIZE);
			return;
		}
		s->frame_len = len;
		return;
	}
	s->rgot += n;
	assert(s->rgot <= s->frame_len);
	if (s->rgot == s->frame_len) {
		stream_on_frame(s);
	}
}

static void stream_read_start(struct gstream *s)
{
	s->phase = PH_READING;
	s->hdr_got = 0;
	s->rgot = 0;
	int rv = uv_read_start((uv_stream_t *)&s->tcp, stream_alloc_cb, stream_read_cb);
	if (rv != 0) {
		stream_close(s, rv);
	}
}

static void stream_connect_cb(uv_connect_t *req, int status)
{
	struct gstream *s = req->data;
	if (s->phase == PH_CLOSING) {
		return;
	}
	if (status != 0) {
		stream_close(s, status);
		return;
	}
	uv_tcp_nodelay(&s->tcp, 1);
	int rv = stream_send_frame(s, s->join);
	if (rv != 0) {
		stream_close(s, rv);
	}
}

/* ---- inbound streams ---- */

static void refused_closed(uv_handle_t *h)
{
	struct net_gossip *t = h->data;
	free(h);
	assert(t->handles > 0);
	t->handles--;
	maybe_done(t);
}

/* Accepts and closes at once: over the bound, the peer sees its connection end. */
static void refuse_connection(struct net_gossip *t)
{
	t->stats.streams_refused++;
	uv_tcp_t *c = malloc(sizeof *c);
	if (c == NULL || uv_tcp_init(t->loop, c) != 0) {
		free(c);
		return; /* the connection waits in the backlog until a stream ends */
	}
	c->data = t;
	t->handles++;
	(void)uv_accept((uv_stream_t *)&t->listener, (uv_stream_t *)c);
	uv_close((uv_handle_t *)c, refused_closed);
}

static void connection_cb(uv_stream_t *server, int status)
{
	struct net_gossip *t = server->data;
	if (t->closing) {
		return;
	}
	if (status != 0) {
		glog(t, LOG_WARN, "push-pull listener: %s", uv_strerror(status));
		return;
	}
	if (t->n_streams >= t->cfg.max_streams) {
		glog(t, LOG_DEBUG, "push-pull refused: %u streams running (max_streams)",
		     t->n_streams);
		refuse_connection(t);
		return;
	}
	struct gstream *s = stream_new(t, false);
	if (s == NULL) {
		refuse_connection(t);
		return;
	}
	int rv = uv_accept(server, (uv_stream_t *)&s->tcp);
	if (rv == 0) {
		int plen = (int)sizeof s->peer;
		rv = uv_tcp_getpeername(&s->tcp, (struct sockaddr *)&s->peer, &plen);
	}
	if (rv != 0) {
		stream_close(s, rv);
		return;
	}
	t->stats.streams_in++;
	uv_tcp_nodelay(&s->tcp, 1);
	stream_read_start(s);
}

/* ---- push-pull, outbound ---- */

static void defer_cb(uv_timer_t *timer)
{
	struct net_gossip *t = timer->data;
	/* Detach the list first: a report may start another push-pull that defers again. */
	struct deferred *d = t->deferred;
	t->deferred = t->deferred_tail = NULL;
	t->n_deferred = 0;
	while (d != NULL) {
		struct deferred *next = d->next;
		if (!t->closing && t->cfg.on_pushpull_done != NULL) {
			t->stats.streams_failed++;
			t->cfg.on_pushpull_done(t->cfg.data, (const struct sockaddr *)&d->to,
						d->status);
		}
		free(d);
		d = next;
	}
}

/* Reports a push-pull that never started, from the loop (not inside the caller's call). */
static int defer_failure(struct net_gossip *t, const struct sockaddr *to, int status)
{
	if (t->n_deferred >= DEFERRED_MAX) {
		return status;
	}
	struct deferred *d = calloc(1, sizeof *d);
	if (d == NULL) {
		return UV_ENOMEM;
	}
	memcpy(&d->to, to, sockaddr_len(to));
	d->status = status;
	if (t->deferred_tail != NULL) {
		t->deferred_tail->next = d;
	} else {
		t->deferred = d;
	}
	t->deferred_tail = d;
	t->n_deferred++;
	uv_timer_start(&t->defer_timer, defer_cb, 0, 0);
	return 0;
}

int net_gossip_pushpull(struct net_gossip *t, const struct sockaddr *to, bool join)
{
	if (t == NULL || to == NULL || (to->sa_family != AF_INET && to->sa_family != AF_INET6)) {
		return UV_EINVAL;
	}
	if (t->closing) {
		return UV_ECANCELED;
	}
	if (t->n_streams >= t->cfg.max_streams) {
		t->stats.streams_refused++;
		return defer_failure(t, to, UV_EBUSY);
	}
	struct gstream *s = stream_new(t, true);
	if (s == NULL) {
		return defer_failure(t, to, UV_ENOMEM);
	}
	memcpy(&s->peer, to, sockaddr_len(to));
	s->join = join;
	s->phase = PH_CONNECTING;
	t->stats.streams_out++;
	s->connect_req.data = s;
	int rv = uv_tcp_connect(&s->connect_req, &s->tcp, to, stream_connect_cb);
	if (rv != 0) {
		stream_close(s, rv); /* reported once the handles are closed */
	}
	return 0;
}

/* ---- datagrams ---- */

static void udp_alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	(void)suggested;
	struct net_gossip *t = h->data;
	*buf = uv_buf_init((char *)t->rbuf, t->cfg.max_packet);
}

static void udp_recv_cb(uv_udp_t *h, ssize_t nread, const uv_buf_t *buf,
			const struct sockaddr *from, unsigned flags)
{
	struct net_gossip *t = h->data;
	if (t->closing) {
		return;
	}
	if (nread < 0) {
		glog(t, LOG_WARN, "gossip udp read: %s", uv_strerror((int)nread));
		return;
	}
	if (from == NULL) {
		return; /* nothing more to read for now */
	}
	char a[INET6_ADDRSTRLEN + 16];
	t->stats.packets_in++;
	t->stats.bytes_in += (uint64_t)nread;
	if (flags & UV_UDP_PARTIAL) {
		t->stats.dropped_oversize++;
		glog(t, LOG_DEBUG, "datagram from %s dropped: larger than %u bytes",
		     addr_str(from, a, sizeof a), t->cfg.max_packet);
		return;
	}
	uint8_t *payload = NULL;
	size_t plen = 0;
	int rv = net_seal_open(&t->kr, t->label, (uint8_t *)buf->base, (size_t)nread, &payload,
			       &plen);
	if (rv != NET_SEAL_OK) {
		count_drop(t, rv);
		glog(t, LOG_DEBUG, "datagram from %s dropped: %s", addr_str(from, a, sizeof a),
		     net_seal_strerror(rv));
		return;
	}
	if (t->cfg.on_packet != NULL) {
		t->cfg.on_packet(t->cfg.data, from, payload, plen);
	}
}

static void udp_send_cb(uv_udp_send_t *req, int status)
{
	struct udp_send *us = (struct udp_send *)req;
	if (status != 0 && status != UV_ECANCELED) {
		us->t->stats.send_errors++;
	}
	free(us);
}

int net_gossip_send(struct net_gossip *t, const struct sockaddr *to, const uint8_t *payload,
		    size_t len)
{
	if (t == NULL || to == NULL) {
		return UV_EINVAL;
	}
	if (t->closing) {
		return UV_ECANCELED;
	}
	long n = net_seal(&t->kr, t->label, payload, len, t->sbuf, t->cfg.max_packet);
	if (n < 0) {
		t->stats.send_errors++;
		return UV_EMSGSIZE;
	}
	uv_buf_t b = uv_buf_init((char *)t->sbuf, (unsigned)n);
	int rv = uv_udp_try_send(&t->udp, &b, 1, to);
	if (rv == UV_EAGAIN) {
		/* The socket buffer is full (or datagrams already wait): queue, within a bound. */
		if (uv_udp_get_send_queue_size(&t->udp) + (size_t)n > SEND_QUEUE_MAX) {
			t->stats.send_errors++;
			return UV_ENOBUFS;
		}
		struct udp_send *us = malloc(sizeof *us + (size_t)n);
		if (us == NULL) {
			t->stats.send_errors++;
			return UV_ENOMEM;
		}
		us->t = t;
		us->len = (size_t)n;
		memcpy(us->data, t->sbuf, (size_t)n);
		b = uv_buf_init((char *)us->data, (unsigned)n);
		rv = uv_udp_send(&us->req, &t->udp, &b, 1, to, udp_send_cb);
		if (rv != 0) {
			free(us);
		}
	}
	if (rv < 0) {
		t->stats.send_errors++;
		char a[INET6_ADDRSTRLEN + 16];
		glog(t, LOG_DEBUG, "datagram to %s not sent: %s", addr_str(to, a, sizeof a),
		     uv_strerror(rv));
		return rv;
	}
	t->stats.packets_out++;
	t->stats.bytes_out += (uint64_t)n;
	return 0;
}

/* ---- start and stop ---- */

static void set_port(struct sockaddr_storage *ss, uint16_t port)
{
	if (ss->ss_family == AF_INET6) {
		((struct sockaddr_in6 *)ss)->sin6_port = htons(port);
	} else {
		((struct sockaddr_in *)ss)->sin_port = htons(port);
	}
}

static uint16_t get_port(const struct sockaddr_storage *ss)
{
	if (ss->ss_family == AF_INET6) {
		return ntohs(((const struct sockaddr_in6 *)ss)->sin6_port);
	}
	return ntohs(((const struct sockaddr_in *)ss)->sin_port);
}

/* Binds a socket of `type` to addr; returns the fd or a negative uv error. */
static int bind_socket(const struct sockaddr_storage *addr, int type)
{
	int fd = socket(addr->ss_family, type | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		return uv_translate_sys_error(errno);
	}
	int one = 1;
	if (type == SOCK_STREAM) {
		/* A restarted member gets its port back while old connections sit in TIME_WAIT. */
		(void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	} else {
		int rcv = UDP_RCVBUF;
		(void)setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcv, sizeof rcv);
	}
	if (bind(fd, (const struct sockaddr *)addr,
		 (socklen_t)sockaddr_len((const struct sockaddr *)addr)) != 0 ||
	    (type == SOCK_STREAM && listen(fd, LISTEN_BACKLOG) != 0)) {
		int err = uv_translate_sys_error(errno);
		close(fd);
		return err;
	}
	return fd;
}

/* Binds the UDP socket and the TCP listener on one port. */
static int bind_pair(struct sockaddr_storage *addr, int *ufd, int *tfd)
{
	bool ephemeral = get_port(addr) == 0;
	int err = UV_EADDRINUSE;
	for (int attempt = 0; attempt < BIND_ATTEMPTS; attempt++) {
		struct sockaddr_storage a = *addr;
		int u = bind_socket(&a, SOCK_DGRAM);
		if (u < 0) {
			return u;
		}
		struct sockaddr_storage got;
		socklen_t glen = sizeof got;
		if (getsockname(u, (struct sockaddr *)&got, &glen) != 0) {
			err = uv_translate_sys_error(errno);
			close(u);
			return err;
		}
		set_port(&a, get_port(&got));
		int tcp = bind_socket(&a, SOCK_STREAM);
		if (tcp >= 0) {
			*ufd = u;
			*tfd = tcp;
			*addr = a;
			return 0;
		}
		close(u);
		err = tcp;
		if (!ephemeral || tcp != UV_EADDRINUSE) {
			return err;
		}
	}
	return err;
}

static void close_all(struct net_gossip *t)
{
	uv_close((uv_handle_t *)&t->udp, transport_handle_closed);
	uv_close((uv_handle_t *)&t->listener, transport_handle_closed);
	uv_close((uv_handle_t *)&t->defer_timer, transport_handle_closed);
	struct gstream *s = t->streams;
	while (s != NULL) {
		struct gstream *next = s->next;
		stream_close(s, UV_ECANCELED);
		s = next;
	}
	struct deferred *d = t->deferred;
	while (d != NULL) {
		struct deferred *next = d->next;
		free(d);
		d = next;
	}
	t->deferred = t->deferred_tail = NULL;
	t->n_deferred = 0;
}

int net_gossip_start(const struct net_gossip_config *cfg, struct net_gossip **out)
{
	if (cfg == NULL || out == NULL || cfg->loop == NULL ||
	    (cfg->bind.ss_family != AF_INET && cfg->bind.ss_family != AF_INET6)) {
		return UV_EINVAL;
	}
	size_t llen = cfg->label != NULL ? strlen(cfg->label) : 0;
	if (llen > NET_SEAL_MAX_LABEL ||
	    (cfg->keyring != NULL && cfg->keyring->n > NET_SEAL_MAX_KEYS)) {
		return UV_EINVAL;
	}
	struct net_gossip *t = calloc(1, sizeof *t);
	if (t == NULL) {
		return UV_ENOMEM;
	}
	t->loop = cfg->loop;
	t->cfg = *cfg;
	t->cfg.label = NULL;
	t->cfg.keyring = NULL;
	if (t->cfg.max_packet == 0) {
		t->cfg.max_packet = DEFAULT_MAX_PACKET;
	}
	if (t->cfg.max_packet > MAX_PACKET_LIMIT) {
		t->cfg.max_packet = MAX_PACKET_LIMIT;
	}
	if (t->cfg.max_streams == 0) {
		t->cfg.max_streams = DEFAULT_MAX_STREAMS;
	}
	if (t->cfg.max_frame == 0) {
		t->cfg.max_frame = DEFAULT_MAX_FRAME;
	}
	if (t->cfg.stream_timeout_ms == 0) {
		t->cfg.stream_timeout_ms = DEFAULT_STREAM_TIMEOUT_MS;
	}
	if (t->cfg.max_buffered == 0) {
		t->cfg.max_buffered = DEFAULT_MAX_BUFFERED;
	}
	memcpy(t->label, cfg->label != NULL ? cfg->label : "", llen);
	t->label[llen] = '\0';
	if (cfg->keyring != NULL) {
		t->kr = *cfg->keyring;
	}
	/* The largest overhead a ring can bring: a payload of at least one byte must fit. */
	struct net_keyring any = { .n = 1 };
	if (t->cfg.max_packet <= net_seal_overhead(&any, t->label) ||
	    t->cfg.max_packet <= net_seal_overhead(NULL, t->label)) {
		free(t);
		return UV_EINVAL;
	}
	t->rbuf = malloc(t->cfg.max_packet);
	t->sbuf = malloc(t->cfg.max_packet);
	if (t->rbuf == NULL || t->sbuf == NULL) {
		free(t->rbuf);
		free(t->sbuf);
		free(t);
		return UV_ENOMEM;
	}
	struct sockaddr_storage addr = cfg->bind;
	int ufd = -1, tfd = -1;
	int rv = bind_pair(&addr, &ufd, &tfd);
	if (rv != 0) {
		free(t->rbuf);
		free(t->sbuf);
		free(t);
		return rv;
	}
	t->port = get_port(&addr);
	/* From here on the handles exist: a failure closes them through the loop, and the
	 * transport is freed in the last close callback. */
	(void)uv_udp_init(t->loop, &t->udp);
	(void)uv_tcp_init(t->loop, &t->listener);
	(void)uv_timer_init(t->loop, &t->defer_timer);
	t->udp.data = t;
	t->listener.data = t;
	t->defer_timer.data = t;
	t->handles = 3;
	rv = uv_udp_open(&t->udp, ufd);
	if (rv != 0) {
		close(ufd);
	}
	int rv2 = uv_tcp_open(&t->listener, tfd);
	if (rv2 != 0) {
		close(tfd);
		rv = rv != 0 ? rv : rv2;
	}
	if (rv == 0) {
		rv = uv_listen((uv_stream_t *)&t->listener, LISTEN_BACKLOG, connection_cb);
	}
	if (rv == 0) {
		rv = uv_udp_recv_start(&t->udp, udp_alloc_cb, udp_recv_cb);
	}
	if (rv != 0) {
		t->closing = true;
		close_all(t);
		return rv;
	}
	char a[INET6_ADDRSTRLEN + 16];
	glog(t, LOG_INFO, "gossip listening on %s (udp and tcp)%s%s",
	     addr_str((const struct sockaddr *)&addr, a, sizeof a),
	     t->kr.n > 0 ? ", encrypted" : "", t->label[0] != '\0' ? ", labelled" : "");
	*out = t;
	return 0;
}

void net_gossip_stop(struct net_gossip *t, void (*done)(void *data), void *data)
{
	if (t == NULL) {
		return;
	}
	assert(!t->closing);
	t->closing = true;
	t->done = done;
	t->done_data = data;
	close_all(t);
}

uint16_t net_gossip_port(const struct net_gossip *t)
{
	return t->port;
}

size_t net_gossip_max_payload(const struct net_gossip *t)
{
	size_t over = net_seal_overhead(&t->kr, t->label);
	return t->cfg.max_packet > over ? t->cfg.max_packet - over : 0;
}

void net_gossip_set_keyring(struct net_gossip *t, const struct net_keyring *kr)
{
	if (kr == NULL) {
		memset(&t->kr, 0, sizeof t->kr);
		return;
	}
	t->kr = *kr;
	if (t->kr.n > NET_SEAL_MAX_KEYS) {
		t->kr.n = NET_SEAL_MAX_KEYS;
	}
}

void net_gossip_stats(const struct net_gossip *t, struct net_gossip_stats *out)
{
	*out = t->stats;
}

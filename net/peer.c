/* peer.c: the peer transport (peer.h): outbound channels with queues, hello and backoff;
 * inbound connections checked by their hello and dispatched by member id. */
#include "peer.h"

#include <assert.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_MSG_QUEUE_MAX 4096
#define DEFAULT_MSG_QUEUE_BYTES ((size_t)16 << 20)
#define DEFAULT_SNAP_QUEUE_BYTES ((size_t)32 << 20)
#define DEFAULT_BACKOFF_MIN_MS 50
#define DEFAULT_BACKOFF_MAX_MS 2000
#define DEFAULT_CONNECT_TIMEOUT_MS 2000
#define DEFAULT_HELLO_TIMEOUT_MS 2000
#define DEFAULT_MAX_INBOUND 128
#define DEFAULT_BACKLOG 128
/* Bytes handed to a stream per write: a frame is cut into pieces this big so one stream's
 * queue holds at most high_water + WRITE_CHUNK bytes, whatever the frame's size. */
#define WRITE_CHUNK ((size_t)64 << 10)
/* Before the hello only a hello or a refusal may arrive: keep that decoder's bound small so an
 * unauthenticated stranger cannot make us allocate a large frame. */
#define HANDSHAKE_MAX_PAYLOAD 256
#define LOG_LINE_MAX 320

_Static_assert(HANDSHAKE_MAX_PAYLOAD >= NET_HELLO_SIZE, "a hello fits before the hello");
_Static_assert(HANDSHAKE_MAX_PAYLOAD >= NET_REFUSE_MAX, "a refusal fits before the hello");

enum ch_state {
	CH_IDLE,       /* no connection and none wanted (nothing queued) */
	CH_CONNECTING, /* TCP (and TLS) in progress */
	CH_HELLO,      /* our hello sent, waiting for the answer */
	CH_READY,      /* frames flow */
	CH_BACKOFF,    /* failed; retry at deadline */
};

/* A queued frame: header and payload in one block, off bytes of it already written. */
struct qframe {
	struct qframe *next;
	size_t len;
	size_t off;
	uint8_t bytes[];
};

struct peer;

/* One outbound connection to a peer, with its queue. */
struct channel {
	struct peer *peer;
	enum net_channel kind;
	enum ch_state state;
	struct net_stream *stream; /* non-NULL in CONNECTING, HELLO, READY */
	struct net_frame_decoder dec;
	struct qframe *head, *tail;
	size_t n, bytes;
	uint64_t deadline; /* uv_now() ms: hello answer due (HELLO), retry (BACKOFF) */
	unsigned failures; /* consecutive, for the backoff; 0 after a hello */
	size_t max_bytes, max_n;
	uint64_t sent, dropped, connects, failed, refused;
};

struct peer {
	struct net_transport *t;
	struct peer *next;
	uint64_t id;
	char url[NET_PEER_URL_MAX + 1];
	struct channel ch[2]; /* [NET_CHANNEL_MSG - 1], [NET_CHANNEL_SNAP - 1] */
};

/* An inbound connection: PENDING until its hello is checked, then ACTIVE. */
struct inconn {
	struct net_transport *t;
	struct inconn *prev, *next;
	struct net_stream *stream;
	struct net_frame_decoder dec;
	bool active;
	bool closed;   /* net_stream_close called; freed in on_close */
	bool refused;  /* hello refused: what else arrives is discarded */
	uint64_t from; /* hello's member id, once active */
	enum net_channel channel;
	uint64_t deadline; /* hello due, while pending */
};

struct net_transport {
	uv_loop_t *loop;
	struct net_transport_config cfg;
	char listen_url[NET_PEER_URL_MAX + 1];
	struct net_listener *listener;
	uv_timer_t timer; /* one timer for every deadline: armed for the earliest */
	struct peer *peers;
	size_t n_peers;
	struct inconn *in;
	size_t n_in;
	size_t open_streams; /* streams not yet through on_close */
	bool timer_open, listener_open;
	bool closing;
	net_transport_close_cb on_close;
	uint64_t rng;
	struct net_transport_stats stats;
};

/* ---- logging ---- */

static void tlog(struct net_transport *t, enum net_log_level level, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void tlog(struct net_transport *t, enum net_log_level level, const char *fmt, ...)
{
	char line[LOG_LINE_MAX];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(line, sizeof line, fmt, ap);
	va_end(ap);
	if (t->cfg.log != NULL) {
		t->cfg.log(t->cfg.data, level, line);
		return;
	}
	static const char *const names[] = { "debug", "info", "warn", "error" };
	if (level >= NET_LOG_INFO) {
		fprintf(stderr, "level=%s component=net member=%" PRIx64 " msg=\"%s\"\n",
			names[level], t->cfg.self_id, line);
	}
}

/* ---- jitter ---- */

/* splitmix64: small, seeded, good enough to spread retries; not for secrets. */
static uint64_t rng_next(struct net_transport *t)
{
	uint64_t z = (t->rng += 0x9e3779b97f4a7c15u);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
	return z ^ (z >> 31);
}

static uint64_t backoff_delay(struct net_transport *t, unsigned failures)
{
	assert(failures >= 1);
	uint64_t d = t->cfg.backoff_min_ms;
	for (unsigned i = 1; i < failures && d < t->cfg.backoff_max_ms; i++) {
		d *= 2;
	}
	if (d > t->cfg.backoff_max_ms) {
		d = t->cfg.backoff_max_ms;
	}
	uint64_t half = d / 2;
	return half + rng_next(t) % (d - half + 1);
}

/* ---- the deadline timer ---- */

static void timer_cb(uv_timer_t *timer);

/* Arms the timer for the earliest deadline of any channel or pending connection. O(peers +
 * inbound), both bounded. */
static void timer_arm(struct net_transport *t)
{
	if (t->closing) {
		return;
	}
	uint64_t best = UINT64_MAX;
	for (struct peer *p = t->peers; p != NULL; p = p->next) {
		for (int i = 0; i < 2; i++) {
			struct channel *ch = &p->ch[i];
			if ((ch->state == CH_HELLO || ch->state == CH_BACKOFF) &&
			    ch->deadline < best) {
				best = ch->deadline;
			}
		}
	}
	for (struct inconn *c = t->in; c != NULL; c = c->next) {
		if (!c->active && !c->closed && c->deadline < best) {
			best = c->deadline;
		}
	}
	if (best == UINT64_MAX) {
		uv_timer_stop(&t->timer);
		return;
	}
	uint64_t now = uv_now(t->loop);
	uv_timer_start(&t->timer, timer_cb, best > now ? best - now : 0, 0);
}

/* ---- streams' end of life ---- */

static void transport_maybe_done(struct net_transport *t)
{
	if (!t->closing || t->open_streams > 0 || t->timer_open || t->listener_open) {
		return;
	}
	if (t->on_close != NULL) {
		t->on_close(t);
	}
	free(t);
}

static void detached_on_close(struct net_stream *s)
{
	struct net_transport *t = net_stream_data(s);
	assert(t->open_streams > 0);
	t->open_streams--;
	transport_maybe_done(t);
}

/* Closes a stream whose owner (a channel) forgets it now: its callbacks are pointed at the
 * transport, which only counts it out once libuv is done with it. */
static void stream_detach_close(struct net_transport *t, struct net_stream *s)
{
	static const struct net_stream_cbs detached = { .on_close = detached_on_close };
	net_stream_set_cbs(s, &detached, t);
	net_stream_close(s);
}

/* ---- outbound channels ---- */

static const char *channel_name(enum net_channel c)
{
	return c == NET_CHANNEL_SNAP ? "snapshot" : "message";
}

static void ch_connect(struct channel *ch);
static void ch_flush(struct channel *ch);

static void ch_queue_clear(struct channel *ch)
{
	struct qframe *q = ch->head;
	while (q != NULL) {
		struct qframe *next = q->next;
		free(q);
		q = next;
	}
	ch->head = ch->tail = NULL;
	ch->n = 0;
	ch->bytes = 0;
}

/* Drops the connection (if any) and leaves the channel IDLE, keeping the queue. */
static void ch_disconnect(struct channel *ch)
{
	struct net_transport *t = ch->peer->t;
	if (ch->stream != NULL) {
		stream_detach_close(t, ch->stream);
		ch->stream = NULL;
	}
	net_frame_decoder_free(&ch->dec);
	net_frame_decoder_init(&ch->dec, HANDSHAKE_MAX_PAYLOAD);
	/* A frame cut in the middle is sent again whole on the next connection. */
	if (ch->head != NULL) {
		ch->head->off = 0;
	}
	ch->state = CH_IDLE;
}

/* The connection failed (or was refused): close it and retry after a backoff. */
static void ch_fail(struct channel *ch, int err, const char *why)
{
	struct net_transport *t = ch->peer->t;
	bool was_ready = ch->state == CH_READY;
	ch_disconnect(ch);
	ch->failures++;
	ch->failed++;
	uint64_t delay = backoff_delay(t, ch->failures);
	/* A working link that breaks is news; repeated failures to reach a down peer are not. */
	tlog(t, was_ready || ch->failures == 1 || err == NET_ECERT ? NET_LOG_WARN : NET_LOG_DEBUG,
	     "peer %" PRIx64 " %s channel: %s (%s); retry in %" PRIu64 " ms", ch->peer->id,
	     channel_name(ch->kind), why, net_strerror(err), delay);
	ch->state = CH_BACKOFF;
	ch->deadline = uv_now(t->loop) + delay;
	timer_arm(t);
}

static void ch_on_connect(struct net_stream *s, int status)
{
	struct channel *ch = net_stream_data(s);
	struct net_transport *t = ch->peer->t;
	assert(ch->state == CH_CONNECTING && ch->stream == s);
	if (status != 0) {
		uint64_t id = ch->peer->id;
		ch_fail(ch, status, "connect failed");
		if (status == NET_EREFUSED && t->cfg.on_peer_down != NULL)
			t->cfg.on_peer_down(t, id); /* nothing listens there: its process is gone */
		return;
	}
	struct net_hello h = {
		.version = NET_PROTOCOL_VERSION,
		.channel = (uint8_t)ch->kind,
		.cluster_id = t->cfg.cluster_id,
		.from = t->cfg.self_id,
		.to = ch->peer->id,
	};
	uint8_t frame[NET_FRAME_HEADER + NET_HELLO_SIZE];
	net_hello_encode(&h, frame + NET_FRAME_HEADER);
	net_frame_header(frame, NET_FRAME_HELLO, frame + NET_FRAME_HEADER, NET_HELLO_SIZE);
	int rv = net_stream_write(s, frame, sizeof frame);
	if (rv != 0) {
		ch_fail(ch, rv, "hello not sent");
		return;
	}
	ch->state = CH_HELLO;
	ch->deadline = uv_now(t->loop) + t->cfg.hello_timeout_ms;
	timer_arm(t);
}

/* The acceptor's answer to our hello. Returns 0 when the channel is READY. */
static int ch_on_answer(struct channel *ch, const struct net_frame *f)
{
	struct net_transport *t = ch->peer->t;
	if (f->type == NET_FRAME_REFUSE) {
		char reason[NET_REFUSE_MAX + 1];
		net_refuse_text(f->payload, f->len, reason, sizeof reason);
		ch->refused++;
		char why[NET_REFUSE_MAX + 32];
		snprintf(why, sizeof why, "refused by peer: %s", reason);
		ch_fail(ch, NET_EREFUSED, why);
		return NET_EREFUSED;
	}
	struct net_hello h;
	int rv = f->type == NET_FRAME_HELLO ? net_hello_decode(f->payload, f->len, &h) : NET_EPROTO;
	const char *why = NULL;
	if (rv != 0) {
		why = "bad answer to hello";
	} else if (h.version != NET_PROTOCOL_VERSION) {
		why = "answer with another protocol version";
	} else if (h.cluster_id != t->cfg.cluster_id) {
		why = "answer from another cluster";
	} else if (h.from != ch->peer->id || h.to != t->cfg.self_id ||
		   h.channel != (uint8_t)ch->kind) {
		why = "answer from an unexpected member";
	}
	if (why != NULL) {
		ch_fail(ch, NET_EPROTO, why);
		return NET_EPROTO;
	}
	ch->state = CH_READY;
	ch->failures = 0;
	ch->connects++;
	tlog(t, NET_LOG_INFO, "peer %" PRIx64 " %s channel connected", ch->peer->id,
	     channel_name(ch->kind));
	timer_arm(t);
	ch_flush(ch);
	return 0;
}

static void ch_on_read(struct net_stream *s, const uint8_t *buf, size_t len)
{
	struct channel *ch = net_stream_data(s);
	assert(ch->stream == s);
	/* ch->stream != s once the channel dropped this connection (a failed flush inside
	 * ch_on_answer): the rest of buf belongs to a connection that no longer exists. */
	while (len > 0 && ch->stream == s) {
		size_t used = 0;
		struct net_frame f;
		int rv = net_frame_decode(&ch->dec, buf, len, &used, &f);
		buf += used;
		len -= used;
		if (rv < 0) {
			ch_fail(ch, rv, "bad frame from peer");
			return;
		}
		if (rv == 0) {
			return;
		}
		if (ch->state != CH_HELLO) {
			/* The acceptor sends nothing after its hello. */
			ch_fail(ch, NET_EPROTO, "unexpected frame after hello");
			return;
		}
		if (ch_on_answer(ch, &f) != 0) {
			return;
		}
	}
}

static void ch_on_error(struct net_stream *s, int err)
{
	struct channel *ch = net_stream_data(s);
	ch_fail(ch, err, "connection lost");
}

static void ch_on_drained(struct net_stream *s)
{
	struct channel *ch = net_stream_data(s);
	if (ch->state == CH_READY) {
		ch_flush(ch);
	}
}

/* A channel's stream closes only through stream_detach_close, which replaces these callbacks
 * first; reaching this one means a stream closed while a channel still pointed at it. */
static void ch_on_close(struct net_stream *s)
{
	(void)s;
	assert(false);
}

static void ch_connect(struct channel *ch)
{
	struct net_transport *t = ch->peer->t;
	assert(ch->state == CH_IDLE && ch->stream == NULL);
	static const struct net_stream_cbs cbs = {
		.on_connect = ch_on_connect,
		.on_read = ch_on_read,
		.on_error = ch_on_error,
		.on_drained = ch_on_drained,
		.on_close = ch_on_close,
	};
	struct net_stream *s = NULL;
	int rv = net_stream_connect(t->loop, ch->peer->url, &t->cfg.stream, &cbs, ch, &s);
	if (rv != 0) {
		ch_fail(ch, rv, "cannot dial");
		return;
	}
	t->open_streams++;
	ch->stream = s;
	ch->state = CH_CONNECTING;
}

/* Hands queued frames to the stream, a chunk at a time, until it pushes back. */
static void ch_flush(struct channel *ch)
{
	while (ch->state == CH_READY && ch->head != NULL) {
		struct qframe *q = ch->head;
		assert(q->off < q->len);
		size_t n = q->len - q->off;
		if (n > WRITE_CHUNK) {
			n = WRITE_CHUNK;
		}
		int rv = net_stream_write(ch->stream, q->bytes + q->off, n);
		if (rv == NET_EAGAIN) {
			return; /* on_drained calls again */
		}
		if (rv != 0) {
			ch_fail(ch, rv, "write failed");
			return;
		}
		q->off += n;
		if (q->off < q->len) {
			continue;
		}
		ch->head = q->next;
		if (ch->head == NULL) {
			ch->tail = NULL;
		}
		assert(ch->n > 0 && ch->bytes >= q->len);
		ch->n--;
		ch->bytes -= q->len;
		ch->sent++;
		free(q);
	}
}

/* Starts a connection if the channel has something to send and may dial now. */
static void ch_kick(struct channel *ch)
{
	if (ch->state == CH_IDLE && ch->head != NULL) {
		ch_connect(ch);
	} else if (ch->state == CH_READY) {
		ch_flush(ch);
	}
}

static void ch_init(struct channel *ch, struct peer *p, enum net_channel kind)
{
	const struct net_transport_config *cfg = &p->t->cfg;
	memset(ch, 0, sizeof *ch);
	ch->peer = p;
	ch->kind = kind;
	ch->state = CH_IDLE;
	net_frame_decoder_init(&ch->dec, HANDSHAKE_MAX_PAYLOAD);
	if (kind == NET_CHANNEL_MSG) {
		ch->max_n = cfg->msg_queue_max;
		ch->max_bytes = cfg->msg_queue_max_bytes;
	} else {
		ch->max_n = SIZE_MAX;
		ch->max_bytes = cfg->snap_queue_max_bytes;
	}
}

static void ch_destroy(struct channel *ch)
{
	ch_disconnect(ch);
	ch_queue_clear(ch);
	net_frame_decoder_free(&ch->dec);
}

static int ch_send(struct channel *ch, uint8_t type, const uint8_t *buf, size_t len)
{
	struct net_transport *t = ch->peer->t;
	if (len > t->cfg.max_frame) {
		return NET_ETOOBIG;
	}
	size_t flen = NET_FRAME_HEADER + len;
	if (ch->n >= ch->max_n || ch->bytes + flen > ch->max_bytes) {
		ch->dropped++;
		return NET_EAGAIN;
	}
	struct qframe *q = malloc(sizeof *q + flen);
	if (q == NULL) {
		ch->dropped++;
		return NET_ENOMEM;
	}
	q->next = NULL;
	q->len = flen;
	q->off = 0;
	net_frame_header(q->bytes, type, buf, (uint32_t)len);
	if (len > 0) {
		memcpy(q->bytes + NET_FRAME_HEADER, buf, len);
	}
	if (ch->tail != NULL) {
		ch->tail->next = q;
	} else {
		ch->head = q;
	}
	ch->tail = q;
	ch->n++;
	ch->bytes += flen;
	ch_kick(ch);
	return 0;
}

/* ---- peers ---- */

static struct peer *peer_find(const struct net_transport *t, uint64_t id)
{
	for (struct peer *p = t->peers; p != NULL; p = p->next) {
		if (p->id == id) {
			return p;
		}
	}
	return NULL;
}

static void inconn_close(struct inconn *c);

/* Closes inbound connections from member id (all of them, or of one channel). */
static void inbound_close_from(struct net_transport *t, uint64_t id, int channel,
			       const struct inconn *except)
{
	for (struct inconn *c = t->in; c != NULL; c = c->next) {
		if (c != except && c->active && !c->closed && c->from == id &&
		    (channel == 0 || (int)c->channel == channel)) {
			inconn_close(c);
		}
	}
}

int net_transport_add_peer(struct net_transport *t, uint64_t id, const char *url)
{
	assert(t != NULL);
	if (t->closing) {
		return NET_ECLOSED;
	}
	if (id == 0 || id == t->cfg.self_id || url == NULL) {
		return NET_EINVAL;
	}
	struct net_url u;
	if (strlen(url) > NET_PEER_URL_MAX || net_url_parse(url, &u) != 0 || u.port == 0) {
		return NET_EADDR;
	}
	struct peer *p = peer_find(t, id);
	if (p != NULL) {
		if (strcmp(p->url, url) != 0) {
			snprintf(p->url, sizeof p->url, "%s", url);
			for (int i = 0; i < 2; i++) {
				ch_disconnect(&p->ch[i]);
				p->ch[i].failures = 0;
				ch_kick(&p->ch[i]);
			}
			timer_arm(t);
		}
		return 0;
	}
	if (t->n_peers >= NET_TRANSPORT_MAX_PEERS) {
		return NET_ELIMIT;
	}
	p = calloc(1, sizeof *p);
	if (p == NULL) {
		return NET_ENOMEM;
	}
	p->t = t;
	p->id = id;
	snprintf(p->url, sizeof p->url, "%s", url);
	ch_init(&p->ch[0], p, NET_CHANNEL_MSG);
	ch_init(&p->ch[1], p, NET_CHANNEL_SNAP);
	p->next = t->peers;
	t->peers = p;
	t->n_peers++;
	return 0;
}

static void peer_free(struct peer *p)
{
	ch_destroy(&p->ch[0]);
	ch_destroy(&p->ch[1]);
	free(p);
}

int net_transport_remove_peer(struct net_transport *t, uint64_t id)
{
	assert(t != NULL);
	struct peer **pp = &t->peers;
	while (*pp != NULL && (*pp)->id != id) {
		pp = &(*pp)->next;
	}
	struct peer *p = *pp;
	if (p == NULL) {
		return NET_ENOTFOUND;
	}
	*pp = p->next;
	t->n_peers--;
	peer_free(p);
	inbound_close_from(t, id, 0, NULL);
	timer_arm(t);
	return 0;
}

static int transport_send(struct net_transport *t, uint64_t to, const uint8_t *buf, size_t len,
			  int idx, uint8_t type)
{
	assert(t != NULL);
	assert(buf != NULL || len == 0);
	if (t->closing) {
		return NET_ECLOSED;
	}
	struct peer *p = peer_find(t, to);
	if (p == NULL) {
		return NET_ENOTFOUND;
	}
	return ch_send(&p->ch[idx], type, buf, len);
}

int net_transport_send(struct net_transport *t, uint64_t to, const uint8_t *buf, size_t len)
{
	return transport_send(t, to, buf, len, 0, NET_FRAME_MSG);
}

int net_transport_send_snapshot(struct net_transport *t, uint64_t to, const uint8_t *buf,
				size_t len)
{
	return transport_send(t, to, buf, len, 1, NET_FRAME_SNAP);
}

int net_transport_ask(struct net_transport *t, uint64_t to, const uint8_t *buf, size_t len)
{
	return transport_send(t, to, buf, len, 0, NET_FRAME_ASK);
}

int net_transport_answer(struct net_transport *t, uint64_t to, const uint8_t *buf, size_t len)
{
	return transport_send(t, to, buf, len, 0, NET_FRAME_ANSWER);
}

int net_transport_peer_stats(const struct net_transport *t, uint64_t id, struct net_peer_stats *out)
{
	assert(t != NULL && out != NULL);
	const struct peer *p = peer_find(t, id);
	if (p == NULL) {
		return NET_ENOTFOUND;
	}
	memset(out, 0, sizeof *out);
	for (int i = 0; i < 2; i++) {
		const struct channel *ch = &p->ch[i];
		out->sent[i] = ch->sent;
		out->dropped[i] = ch->dropped;
		out->connects[i] = ch->connects;
		out->failures[i] = ch->failed;
		out->refused[i] = ch->refused;
		out->queued[i] = ch->n;
		out->queued_bytes[i] = ch->bytes;
		out->connected[i] = ch->state == CH_READY;
	}
	return 0;
}

void net_transport_stats(const struct net_transport *t, struct net_transport_stats *out)
{
	assert(t != NULL && out != NULL);
	*out = t->stats;
}

/* ---- inbound connections ---- */

static void inconn_close(struct inconn *c)
{
	if (c->closed) {
		return;
	}
	c->closed = true;
	net_stream_close(c->stream);
}

/* Refuses a hello: the reason goes to the log and to the dialer. The connection is shut down
 * (FIN after the refusal) rather than closed, so the refusal is not lost to a reset; it is
 * closed when the dialer closes its end, or at the hello deadline if it does not. */
static void inconn_refuse(struct inconn *c, const struct net_hello *h, const char *reason)
{
	struct net_transport *t = c->t;
	t->stats.refused++;
	tlog(t, NET_LOG_WARN,
	     "refused %s connection from member %" PRIx64 " (cluster %" PRIx64 ", dialing %" PRIx64
	     "): %s",
	     channel_name((enum net_channel)h->channel), h->from, h->cluster_id, h->to, reason);
	uint8_t frame[NET_FRAME_HEADER + NET_REFUSE_MAX];
	size_t n = strlen(reason);
	if (n > NET_REFUSE_MAX) {
		n = NET_REFUSE_MAX;
	}
	memcpy(frame + NET_FRAME_HEADER, reason, n);
	net_frame_header(frame, NET_FRAME_REFUSE, frame + NET_FRAME_HEADER, (uint32_t)n);
	if (net_stream_write(c->stream, frame, NET_FRAME_HEADER + n) != 0 ||
	    net_stream_shutdown(c->stream) != 0) {
		inconn_close(c);
		return;
	}
	c->refused = true;
}

static void inconn_hello(struct inconn *c, const struct net_frame *f)
{
	struct net_transport *t = c->t;
	struct net_hello h;
	if (f->type != NET_FRAME_HELLO || net_hello_decode(f->payload, f->len, &h) != 0) {
		t->stats.dropped++;
		tlog(t, NET_LOG_WARN, "inbound connection: first frame is not a valid hello");
		inconn_close(c);
		return;
	}
	char reason[NET_REFUSE_MAX];
	if (h.version != NET_PROTOCOL_VERSION) {
		snprintf(reason, sizeof reason,
			 "protocol version %u not supported (this member: %u)", (unsigned)h.version,
			 (unsigned)NET_PROTOCOL_VERSION);
		inconn_refuse(c, &h, reason);
		return;
	}
	if (h.cluster_id != t->cfg.cluster_id) {
		snprintf(reason, sizeof reason,
			 "cluster id mismatch: %" PRIx64 " dialed a member of cluster %" PRIx64,
			 h.cluster_id, t->cfg.cluster_id);
		inconn_refuse(c, &h, reason);
		return;
	}
	if (h.to != t->cfg.self_id) {
		snprintf(reason, sizeof reason,
			 "member id mismatch: dialed %" PRIx64 " but this is member %" PRIx64, h.to,
			 t->cfg.self_id);
		inconn_refuse(c, &h, reason);
		return;
	}
	if (peer_find(t, h.from) == NULL) {
		snprintf(reason, sizeof reason, "member %" PRIx64 " is not a known peer", h.from);
		inconn_refuse(c, &h, reason);
		return;
	}
	struct net_hello answer = {
		.version = NET_PROTOCOL_VERSION,
		.channel = h.channel,
		.cluster_id = t->cfg.cluster_id,
		.from = t->cfg.self_id,
		.to = h.from,
	};
	uint8_t frame[NET_FRAME_HEADER + NET_HELLO_SIZE];
	net_hello_encode(&answer, frame + NET_FRAME_HEADER);
	net_frame_header(frame, NET_FRAME_HELLO, frame + NET_FRAME_HEADER, NET_HELLO_SIZE);
	int rv = net_stream_write(c->stream, frame, sizeof frame);
	if (rv != 0) {
		t->stats.dropped++;
		inconn_close(c);
		return;
	}
	c->active = true;
	c->from = h.from;
	c->channel = (enum net_channel)h.channel;
	/* From here on, frames up to the configured bound. */
	c->dec.max_payload = t->cfg.max_frame;
	t->stats.accepted++;
	/* An older connection for the same member and channel is stale (the member restarted
	 * or redialed): keep only the newest. */
	inbound_close_from(t, h.from, (int)h.channel, c);
	timer_arm(t);
}

/* Writes one frame and shuts the connection down, as for a refusal: whatever else the dialer
 * sends is discarded, and the connection closes when the dialer closes its end. */
static void inconn_final(struct inconn *c, uint8_t type, const uint8_t *payload, size_t len)
{
	uint8_t hdr[NET_FRAME_HEADER];
	net_frame_header(hdr, type, payload, (uint32_t)len);
	if (net_stream_write(c->stream, hdr, sizeof hdr) != 0 ||
	    (len > 0 && net_stream_write(c->stream, payload, len) != 0) ||
	    net_stream_shutdown(c->stream) != 0) {
		inconn_close(c);
		return;
	}
	c->refused = true;
}

/* A new member asks who it is (frame.h, "joining"): the caller's callback answers. */
static void inconn_join(struct inconn *c, const struct net_frame *f)
{
	struct net_transport *t = c->t;
	char url[NET_JOIN_URL_MAX + 1];
	uint16_t version;
	if (net_join_decode(f->payload, f->len, &version, url) != 0) {
		t->stats.dropped++;
		tlog(t, NET_LOG_WARN, "inbound connection: malformed join request");
		inconn_close(c);
		return;
	}
	char reason[NET_REFUSE_MAX + 1] = "";
	struct net_join_answer *a = calloc(1, sizeof *a);
	uint8_t *buf = malloc(NET_JOIN_ANSWER_MAX_SIZE);
	size_t n = 0;
	int rv = -1;
	if (a == NULL || buf == NULL)
		snprintf(reason, sizeof reason, "out of memory");
	else if (version != NET_PROTOCOL_VERSION)
		snprintf(reason, sizeof reason,
			 "protocol version %u not supported (this member: %u)", (unsigned)version,
			 (unsigned)NET_PROTOCOL_VERSION);
	else if (t->cfg.on_join == NULL)
		snprintf(reason, sizeof reason, "this member takes no join requests");
	else if (t->cfg.on_join(t, url, a, reason, sizeof reason) == 0)
		rv = net_join_answer_encode(a, buf, NET_JOIN_ANSWER_MAX_SIZE, &n);
	else if (reason[0] == '\0')
		snprintf(reason, sizeof reason, "refused");
	if (rv == 0) {
		tlog(t, NET_LOG_INFO, "member %" PRIx64 " at %s asked to join: answered",
		     a->member_id, url);
		inconn_final(c, NET_FRAME_JOIN_ANSWER, buf, n);
	} else {
		if (reason[0] == '\0')
			snprintf(reason, sizeof reason, "cannot encode the answer");
		t->stats.refused++;
		tlog(t, NET_LOG_WARN, "join request from %s refused: %s", url, reason);
		inconn_final(c, NET_FRAME_REFUSE, (const uint8_t *)reason, strlen(reason));
	}
	free(a);
	free(buf);
}

static void inconn_on_read(struct net_stream *s, const uint8_t *buf, size_t len)
{
	struct inconn *c = net_stream_data(s);
	struct net_transport *t = c->t;
	while (len > 0 && !c->closed && !c->refused && !t->closing) {
		size_t used = 0;
		struct net_frame f;
		int rv = net_frame_decode(&c->dec, buf, len, &used, &f);
		buf += used;
		len -= used;
		if (rv < 0) {
			t->stats.dropped++;
			tlog(t, NET_LOG_WARN, "inbound connection%s%" PRIx64 ": %s; dropped",
			     c->active ? " from member " : " ", c->active ? c->from : 0,
			     net_strerror(rv));
			inconn_close(c);
			return;
		}
		if (rv == 0) {
			return;
		}
		if (!c->active) {
			if (f.type == NET_FRAME_JOIN)
				inconn_join(c, &f);
			else
				inconn_hello(c, &f);
			continue;
		}
		uint8_t want = c->channel == NET_CHANNEL_SNAP ? NET_FRAME_SNAP : NET_FRAME_MSG;
		bool asking = c->channel == NET_CHANNEL_MSG &&
			      (f.type == NET_FRAME_ASK || f.type == NET_FRAME_ANSWER);
		if (f.type != want && !asking) {
			t->stats.dropped++;
			tlog(t, NET_LOG_WARN,
			     "member %" PRIx64 " sent frame type %u on its %s channel; dropped",
			     c->from, (unsigned)f.type, channel_name(c->channel));
			inconn_close(c);
			return;
		}
		t->stats.received[c->channel == NET_CHANNEL_SNAP ? 1 : 0]++;
		if (!asking)
			t->cfg.on_recv(t, c->from, c->channel, f.payload, f.len);
		else if (f.type == NET_FRAME_ASK && t->cfg.on_ask != NULL)
			t->cfg.on_ask(t, c->from, c->channel, f.payload, f.len);
		else if (f.type == NET_FRAME_ANSWER && t->cfg.on_answer != NULL)
			t->cfg.on_answer(t, c->from, c->channel, f.payload, f.len);
	}
}

static void inconn_on_error(struct net_stream *s, int err)
{
	struct inconn *c = net_stream_data(s);
	/* a refused certificate is an operator's business (a member with the
	 * wrong CA): say so; other errors of strangers are not */
	if (err == NET_ECERT || err == NET_ETLS)
		tlog(c->t, NET_LOG_WARN, "inbound peer connection refused: %s", net_strerror(err));
	inconn_close(c);
}

static void inconn_on_close(struct net_stream *s)
{
	struct inconn *c = net_stream_data(s);
	struct net_transport *t = c->t;
	if (c->prev != NULL) {
		c->prev->next = c->next;
	} else {
		t->in = c->next;
	}
	if (c->next != NULL) {
		c->next->prev = c->prev;
	}
	assert(t->n_in > 0 && t->open_streams > 0);
	t->n_in--;
	t->open_streams--;
	net_frame_decoder_free(&c->dec);
	free(c);
	transport_maybe_done(t);
}

static void on_accept(struct net_listener *l, struct net_stream *s)
{
	struct net_transport *t = net_listener_data(l);
	static const struct net_stream_cbs cbs = {
		.on_read = inconn_on_read,
		.on_error = inconn_on_error,
		.on_close = inconn_on_close,
	};
	struct inconn *c = NULL;
	if (!t->closing && t->n_in < t->cfg.max_inbound) {
		c = calloc(1, sizeof *c);
	}
	if (c == NULL) {
		t->stats.dropped++;
		net_stream_close(s); /* its on_close is NULL: nothing of ours to free */
		return;
	}
	c->t = t;
	c->stream = s;
	c->deadline = uv_now(t->loop) + t->cfg.hello_timeout_ms;
	net_frame_decoder_init(&c->dec, HANDSHAKE_MAX_PAYLOAD);
	c->next = t->in;
	if (t->in != NULL) {
		t->in->prev = c;
	}
	t->in = c;
	t->n_in++;
	t->open_streams++;
	net_stream_set_cbs(s, &cbs, c);
	timer_arm(t);
}

/* ---- deadlines ---- */

static void timer_cb(uv_timer_t *timer)
{
	struct net_transport *t = timer->data;
	uint64_t now = uv_now(t->loop);
	for (struct peer *p = t->peers; p != NULL; p = p->next) {
		for (int i = 0; i < 2; i++) {
			struct channel *ch = &p->ch[i];
			if (ch->deadline > now) {
				continue;
			}
			if (ch->state == CH_HELLO) {
				ch_fail(ch, NET_ETIMEOUT, "no answer to hello");
			} else if (ch->state == CH_BACKOFF) {
				ch->state = CH_IDLE;
				ch_kick(ch);
			}
		}
	}
	for (struct inconn *c = t->in; c != NULL; c = c->next) {
		if (!c->active && !c->closed && c->deadline <= now) {
			if (!c->refused) {
				t->stats.dropped++;
				tlog(t, NET_LOG_WARN,
				     "inbound connection sent no hello in %" PRIu64 " ms",
				     t->cfg.hello_timeout_ms);
			}
			inconn_close(c);
		}
	}
	timer_arm(t);
}

/* ---- open and close ---- */

static void timer_closed(uv_handle_t *h)
{
	struct net_transport *t = h->data;
	t->timer_open = false;
	transport_maybe_done(t);
}

static void listener_closed(struct net_listener *l)
{
	struct net_transport *t = net_listener_data(l);
	t->listener_open = false;
	transport_maybe_done(t);
}

static int config_resolve(const struct net_transport_config *in, struct net_transport_config *c)
{
	*c = *in;
	if (c->self_id == 0 || c->on_recv == NULL || c->backlog < 0) {
		return NET_EINVAL;
	}
	if (c->max_frame == 0) {
		c->max_frame = NET_FRAME_DEFAULT_MAX_PAYLOAD;
	}
	if (c->max_frame > NET_FRAME_MAX_PAYLOAD) {
		return NET_EINVAL;
	}
	if (c->backlog == 0) {
		c->backlog = DEFAULT_BACKLOG;
	}
	if (c->msg_queue_max == 0) {
		c->msg_queue_max = DEFAULT_MSG_QUEUE_MAX;
	}
	if (c->msg_queue_max_bytes == 0) {
		c->msg_queue_max_bytes = DEFAULT_MSG_QUEUE_BYTES;
	}
	if (c->snap_queue_max_bytes == 0) {
		c->snap_queue_max_bytes = DEFAULT_SNAP_QUEUE_BYTES;
	}
	if (c->backoff_min_ms == 0) {
		c->backoff_min_ms = DEFAULT_BACKOFF_MIN_MS;
	}
	if (c->backoff_max_ms == 0) {
		c->backoff_max_ms = DEFAULT_BACKOFF_MAX_MS;
	}
	if (c->connect_timeout_ms == 0) {
		c->connect_timeout_ms = DEFAULT_CONNECT_TIMEOUT_MS;
	}
	if (c->hello_timeout_ms == 0) {
		c->hello_timeout_ms = DEFAULT_HELLO_TIMEOUT_MS;
	}
	if (c->max_inbound == 0) {
		c->max_inbound = DEFAULT_MAX_INBOUND;
	}
	if (c->backoff_max_ms < c->backoff_min_ms) {
		return NET_EINVAL;
	}
	if (c->stream.high_water != 0 && c->stream.high_water < WRITE_CHUNK) {
		return NET_EINVAL;
	}
	c->stream.connect_timeout_ms = c->connect_timeout_ms;
	return 0;
}

int net_transport_open(uv_loop_t *loop, const struct net_transport_config *cfg,
		       struct net_transport **out)
{
	if (loop == NULL || cfg == NULL || out == NULL) {
		return NET_EINVAL;
	}
	struct net_transport *t = calloc(1, sizeof *t);
	if (t == NULL) {
		return NET_ENOMEM;
	}
	int rv = config_resolve(cfg, &t->cfg);
	if (rv != 0) {
		goto err_free;
	}
	if (cfg->listen_url != NULL) {
		if (strlen(cfg->listen_url) > NET_PEER_URL_MAX) {
			rv = NET_EADDR;
			goto err_free;
		}
		snprintf(t->listen_url, sizeof t->listen_url, "%s", cfg->listen_url);
		t->cfg.listen_url = t->listen_url;
	}
	t->loop = loop;
	t->rng = cfg->seed != 0 ? cfg->seed : uv_hrtime();
	if (t->cfg.listen_url != NULL) {
		rv = net_listener_open(loop, t->cfg.listen_url, t->cfg.backlog, &t->cfg.stream,
				       on_accept, t, &t->listener);
		if (rv != 0) {
			goto err_free;
		}
		t->listener_open = true;
	}
	rv = uv_timer_init(loop, &t->timer);
	assert(rv == 0);
	t->timer.data = t;
	t->timer_open = true;
	*out = t;
	return 0;

err_free:
	free(t);
	return rv;
}

void *net_transport_data(const struct net_transport *t)
{
	return t->cfg.data;
}

uint16_t net_transport_port(const struct net_transport *t)
{
	return t->listener != NULL ? net_listener_port(t->listener) : 0;
}

void net_transport_close(struct net_transport *t, net_transport_close_cb on_close)
{
	assert(t != NULL);
	assert(!t->closing);
	t->closing = true;
	t->on_close = on_close;
	while (t->peers != NULL) {
		struct peer *p = t->peers;
		t->peers = p->next;
		peer_free(p);
	}
	t->n_peers = 0;
	for (struct inconn *c = t->in; c != NULL; c = c->next) {
		inconn_close(c);
	}
	if (t->listener != NULL) {
		net_listener_close(t->listener, listener_closed);
		t->listener = NULL;
	}
	uv_timer_stop(&t->timer);
	uv_close((uv_handle_t *)&t->timer, timer_closed);
}

/* ---- joining: the new member's side ---- */

struct join_req {
	struct net_stream *stream;
	uv_timer_t timer;
	struct net_frame_decoder dec;
	net_join_done_cb done;
	void *data;
	char self_url[NET_JOIN_URL_MAX + 1];
	bool finished;
	int open; /* handles not yet through their close */
};

static void join_unref(struct join_req *j)
{
	if (--j->open == 0) {
		net_frame_decoder_free(&j->dec);
		free(j);
	}
}

static void join_timer_closed(uv_handle_t *h)
{
	join_unref(h->data);
}

static void join_stream_closed(struct net_stream *s)
{
	join_unref(net_stream_data(s));
}

static void join_finish(struct join_req *j, int status, const struct net_join_answer *a,
			const char *reason)
{
	if (j->finished)
		return;
	j->finished = true;
	j->done(j->data, status, a, reason);
	uv_close((uv_handle_t *)&j->timer, join_timer_closed);
	net_stream_close(j->stream);
}

static void join_on_timeout(uv_timer_t *t)
{
	join_finish(t->data, NET_ETIMEOUT, NULL, NULL);
}

static void join_on_connect(struct net_stream *s, int status)
{
	struct join_req *j = net_stream_data(s);
	if (status != 0) {
		join_finish(j, status, NULL, NULL);
		return;
	}
	uint8_t frame[NET_FRAME_HEADER + NET_JOIN_MAX_SIZE];
	size_t n = 0;
	int rv = net_join_encode(j->self_url, frame + NET_FRAME_HEADER, NET_JOIN_MAX_SIZE, &n);
	if (rv == 0) {
		net_frame_header(frame, NET_FRAME_JOIN, frame + NET_FRAME_HEADER, (uint32_t)n);
		rv = net_stream_write(s, frame, NET_FRAME_HEADER + n);
	}
	if (rv != 0)
		join_finish(j, rv, NULL, NULL);
}

static void join_on_read(struct net_stream *s, const uint8_t *buf, size_t len)
{
	struct join_req *j = net_stream_data(s);
	while (len > 0 && !j->finished) {
		size_t used = 0;
		struct net_frame f;
		int rv = net_frame_decode(&j->dec, buf, len, &used, &f);
		buf += used;
		len -= used;
		if (rv < 0) {
			join_finish(j, rv, NULL, NULL);
			return;
		}
		if (rv == 0)
			return;
		if (f.type == NET_FRAME_REFUSE) {
			char reason[NET_REFUSE_MAX + 1];
			net_refuse_text(f.payload, f.len, reason, sizeof reason);
			join_finish(j, NET_EREFUSED, NULL, reason);
			return;
		}
		struct net_join_answer *a = malloc(sizeof *a);
		if (a == NULL) {
			join_finish(j, NET_ENOMEM, NULL, NULL);
			return;
		}
		rv = f.type == NET_FRAME_JOIN_ANSWER ? net_join_answer_decode(f.payload, f.len, a) :
						       NET_EPROTO;
		join_finish(j, rv, rv == 0 ? a : NULL, NULL);
		free(a);
	}
}

static void join_on_error(struct net_stream *s, int err)
{
	join_finish(net_stream_data(s), err == NET_ECLOSED ? NET_EPROTO : err, NULL, NULL);
}

int net_join_ask(uv_loop_t *loop, const char *url, const char *self_url,
		 const struct net_stream_opts *opts, uint64_t timeout_ms, net_join_done_cb done,
		 void *data)
{
	static const struct net_stream_cbs cbs = {
		.on_connect = join_on_connect,
		.on_read = join_on_read,
		.on_error = join_on_error,
		.on_close = join_stream_closed,
	};
	if (loop == NULL || url == NULL || self_url == NULL || done == NULL ||
	    strlen(self_url) > NET_JOIN_URL_MAX)
		return NET_EINVAL;
	struct join_req *j = calloc(1, sizeof *j);
	if (j == NULL)
		return NET_ENOMEM;
	snprintf(j->self_url, sizeof j->self_url, "%s", self_url);
	j->done = done;
	j->data = data;
	net_frame_decoder_init(&j->dec, NET_JOIN_ANSWER_MAX_SIZE);
	int rv = net_stream_connect(loop, url, opts, &cbs, j, &j->stream);
	if (rv != 0) {
		net_frame_decoder_free(&j->dec);
		free(j);
		return rv;
	}
	j->open = 2;
	uv_timer_init(loop, &j->timer);
	j->timer.data = j;
	uv_timer_start(&j->timer, join_on_timeout, timeout_ms ? timeout_ms : 5000, 0);
	return 0;
}

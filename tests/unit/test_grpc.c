/* test_grpc.c: the gRPC server core (net/grpc.h) driven in memory. An nghttp2 client session
 * plays the peer for ordinary calls; raw HTTP/2 frames (HPACK from nghttp2's deflater) play a
 * peer that breaks rules or sends what Go clients send. Covers unary, server-streaming,
 * client-streaming and bidi calls, flow control and send-queue bounds, message reassembly,
 * limits, status encoding, cancellation, the :authority relaxation, PING and the drain. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nghttp2/nghttp2.h>

#include "grpc.h"

#define MAX_CS 64

/* ---- client side ---- */

struct cstream {
	bool used;
	int32_t id;
	/* request bytes to send */
	uint8_t *out;
	size_t out_len, out_off, chunk;
	bool out_eof, deferred;
	/* response */
	int http_status;
	int blocks;
	bool trailers_only;
	bool has_status;
	int grpc_status;
	char grpc_message[16384];
	uint8_t *in;
	size_t in_len, in_cap, unconsumed;
	bool closed;
	uint32_t close_code;
};

struct fx {
	struct net_grpc_server *srv;
	struct net_grpc_session *s;
	nghttp2_session *cli;
	struct cstream cs[MAX_CS];
	bool slow; /* the client does not return receive window */
	int feed_rv;
	int notifies;
	int pings_acked;
	int goaways;
	int32_t goaway_last;
	uint32_t goaway_code;
	/* server side */
	struct net_grpc_call *held;
	int handler_calls, cancels, half_closes, writables, messages;
	char authority[256], auth_md[256];
	int64_t timeout_ms;
	size_t stream_total, stream_sent, stream_size, max_queued;
	int eagains;
	int finish_status;
	const char *finish_msg;
};

static struct cstream *cs_find(struct fx *f, int32_t id)
{
	for (int i = 0; i < MAX_CS; i++) {
		if (f->cs[i].used && f->cs[i].id == id) {
			return &f->cs[i];
		}
	}
	return NULL;
}

static int c_on_header(nghttp2_session *h, const nghttp2_frame *fr, const uint8_t *name,
		       size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
		       void *user)
{
	(void)h;
	(void)flags;
	(void)namelen;
	struct cstream *c = cs_find(user, fr->hd.stream_id);
	if (c == NULL) {
		return 0;
	}
	if (strcmp((const char *)name, ":status") == 0) {
		c->http_status = atoi((const char *)value);
	} else if (strcmp((const char *)name, "grpc-status") == 0) {
		c->has_status = true;
		c->grpc_status = atoi((const char *)value);
	} else if (strcmp((const char *)name, "grpc-message") == 0) {
		snprintf(c->grpc_message, sizeof c->grpc_message, "%.*s", (int)valuelen,
			 (const char *)value);
	}
	return 0;
}

static int c_on_data(nghttp2_session *h, uint8_t flags, int32_t id, const uint8_t *data, size_t len,
		     void *user)
{
	(void)flags;
	struct fx *f = user;
	struct cstream *c = cs_find(f, id);
	if (c != NULL) {
		if (c->in_len + len > c->in_cap) {
			c->in_cap = (c->in_len + len) * 2;
			c->in = realloc(c->in, c->in_cap);
			assert_non_null(c->in);
		}
		memcpy(c->in + c->in_len, data, len);
		c->in_len += len;
	}
	if (f->slow && c != NULL) {
		c->unconsumed += len;
		return 0;
	}
	return nghttp2_session_consume(h, id, len);
}

static int c_on_frame_recv(nghttp2_session *h, const nghttp2_frame *fr, void *user)
{
	(void)h;
	struct fx *f = user;
	if (fr->hd.type == NGHTTP2_PING && (fr->hd.flags & NGHTTP2_FLAG_ACK) != 0) {
		f->pings_acked++;
	} else if (fr->hd.type == NGHTTP2_GOAWAY) {
		f->goaways++;
		f->goaway_last = fr->goaway.last_stream_id;
		f->goaway_code = fr->goaway.error_code;
	} else if (fr->hd.type == NGHTTP2_HEADERS) {
		struct cstream *c = cs_find(f, fr->hd.stream_id);
		if (c != NULL) {
			c->blocks++;
			if (c->blocks == 1 && (fr->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0) {
				c->trailers_only = true;
			}
		}
	}
	return 0;
}

static int c_on_close(nghttp2_session *h, int32_t id, uint32_t code, void *user)
{
	(void)h;
	struct cstream *c = cs_find(user, id);
	if (c != NULL) {
		c->closed = true;
		c->close_code = code;
	}
	return 0;
}

static ssize_t c_read(nghttp2_session *h, int32_t id, uint8_t *buf, size_t length, uint32_t *flags,
		      nghttp2_data_source *src, void *user)
{
	(void)h;
	(void)id;
	(void)user;
	struct cstream *c = src->ptr;
	size_t k = c->out_len - c->out_off;
	k = k < length ? k : length;
	if (c->chunk > 0 && k > c->chunk) {
		k = c->chunk;
	}
	if (k > 0) {
		memcpy(buf, c->out + c->out_off, k);
		c->out_off += k;
	}
	if (c->out_off == c->out_len && c->out_eof) {
		*flags |= NGHTTP2_DATA_FLAG_EOF;
		return (ssize_t)k;
	}
	if (k == 0) {
		c->deferred = true;
		return NGHTTP2_ERR_DEFERRED;
	}
	return (ssize_t)k;
}

static void on_notify(struct net_grpc_session *s, void *user)
{
	struct fx *f = user;
	assert_ptr_equal(f->s, s);
	f->notifies++;
}

static void fx_client(struct fx *f)
{
	nghttp2_session_callbacks *cbs;
	nghttp2_option *opt;
	assert_int_equal(nghttp2_session_callbacks_new(&cbs), 0);
	nghttp2_session_callbacks_set_on_header_callback(cbs, c_on_header);
	nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, c_on_data);
	nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, c_on_frame_recv);
	nghttp2_session_callbacks_set_on_stream_close_callback(cbs, c_on_close);
	assert_int_equal(nghttp2_option_new(&opt), 0);
	nghttp2_option_set_no_auto_window_update(opt, 1);
	assert_int_equal(nghttp2_session_client_new2(&f->cli, cbs, f, opt), 0);
	nghttp2_option_del(opt);
	nghttp2_session_callbacks_del(cbs);
	assert_int_equal(nghttp2_submit_settings(f->cli, NGHTTP2_FLAG_NONE, NULL, 0), 0);
}

static void fx_start(struct fx *f, const struct net_grpc_limits *lim);

static int fx_setup(void **state)
{
	struct fx *f = calloc(1, sizeof *f);
	assert_non_null(f);
	*state = f;
	return 0;
}

static int fx_teardown(void **state)
{
	struct fx *f = *state;
	net_grpc_session_free(f->s);
	net_grpc_server_free(f->srv);
	if (f->cli != NULL) {
		nghttp2_session_del(f->cli);
	}
	for (int i = 0; i < MAX_CS; i++) {
		free(f->cs[i].out);
		free(f->cs[i].in);
	}
	free(f);
	return 0;
}

/* Moves bytes both ways until neither side has anything to say. */
static void pump(struct fx *f)
{
	static uint8_t buf[65536];
	for (int i = 0; i < 200000; i++) {
		bool moved = false;
		size_t n;
		assert_int_equal(net_grpc_session_take(f->s, buf, sizeof buf, &n), 0);
		if (n > 0) {
			moved = true;
			assert_int_equal(nghttp2_session_mem_recv(f->cli, buf, n), (ssize_t)n);
		}
		const uint8_t *p;
		ssize_t r = nghttp2_session_mem_send(f->cli, &p);
		assert_true(r >= 0);
		if (r > 0) {
			moved = true;
			f->feed_rv = net_grpc_session_feed(f->s, p, (size_t)r);
		}
		if (!moved) {
			return;
		}
	}
	fail_msg("pump did not settle");
}

static struct cstream *cli_open_ct(struct fx *f, const char *path, const char *ctype,
				   const char *authority)
{
	struct cstream *c = NULL;
	for (int i = 0; i < MAX_CS && c == NULL; i++) {
		if (!f->cs[i].used) {
			c = &f->cs[i];
		}
	}
	assert_non_null(c);
	memset(c, 0, sizeof *c);
	c->used = true;
	nghttp2_nv nva[] = {
		{ (uint8_t *)":method", (uint8_t *)"POST", 7, 4, 0 },
		{ (uint8_t *)":scheme", (uint8_t *)"http", 7, 4, 0 },
		{ (uint8_t *)":path", (uint8_t *)path, 5, strlen(path), 0 },
		{ (uint8_t *)":authority", (uint8_t *)authority, 10, strlen(authority), 0 },
		{ (uint8_t *)"content-type", (uint8_t *)ctype, 12, strlen(ctype), 0 },
		{ (uint8_t *)"te", (uint8_t *)"trailers", 2, 8, 0 },
		{ (uint8_t *)"authorization", (uint8_t *)"token-abc", 13, 9, 0 },
		{ (uint8_t *)"grpc-timeout", (uint8_t *)"1500m", 12, 5, 0 },
	};
	nghttp2_data_provider prd = { .source.ptr = c, .read_callback = c_read };
	c->id = nghttp2_submit_request(f->cli, NULL, nva, sizeof nva / sizeof nva[0], &prd, c);
	assert_true(c->id > 0);
	return c;
}

static struct cstream *cli_open(struct fx *f, const char *path)
{
	return cli_open_ct(f, path, "application/grpc", "localhost:2379");
}

static void cli_raw(struct fx *f, struct cstream *c, const uint8_t *b, size_t len)
{
	c->out = realloc(c->out, c->out_len + len);
	assert_non_null(c->out);
	memcpy(c->out + c->out_len, b, len);
	c->out_len += len;
	if (c->deferred) {
		c->deferred = false;
		assert_int_equal(nghttp2_session_resume_data(f->cli, c->id), 0);
	}
}

static void cli_msg(struct fx *f, struct cstream *c, const void *msg, size_t len)
{
	uint8_t pre[5] = { 0, (uint8_t)(len >> 24), (uint8_t)(len >> 16), (uint8_t)(len >> 8),
			   (uint8_t)len };
	cli_raw(f, c, pre, 5);
	if (len > 0) {
		cli_raw(f, c, msg, len);
	}
}

static void cli_close(struct fx *f, struct cstream *c)
{
	c->out_eof = true;
	if (c->deferred) {
		c->deferred = false;
		assert_int_equal(nghttp2_session_resume_data(f->cli, c->id), 0);
	}
}

/* The idx-th message of a response (0-based): its length, or -1; *data points into c->in. */
static long resp_msg(const struct cstream *c, size_t idx, const uint8_t **data)
{
	size_t off = 0;
	for (size_t i = 0;; i++) {
		if (off + 5 > c->in_len) {
			return -1;
		}
		assert_int_equal(c->in[off], 0);
		size_t len = (size_t)c->in[off + 1] << 24 | (size_t)c->in[off + 2] << 16 |
			     (size_t)c->in[off + 3] << 8 | c->in[off + 4];
		assert_true(off + 5 + len <= c->in_len);
		if (i == idx) {
			*data = c->in + off + 5;
			return (long)len;
		}
		off += 5 + len;
	}
}

static size_t resp_count(const struct cstream *c)
{
	const uint8_t *d;
	size_t n = 0;
	while (resp_msg(c, n, &d) >= 0) {
		n++;
	}
	return n;
}

/* ---- server side: handlers ---- */

static void h_cancelled(struct net_grpc_call *call, void *user)
{
	struct fx *f = user;
	if (f->held == call) {
		f->held = NULL;
	}
	f->cancels++;
}

static void echo_msg(struct net_grpc_call *call, const uint8_t *data, size_t len, void *user)
{
	struct fx *f = user;
	f->messages++;
	assert_int_equal(net_grpc_call_send(call, data, len), 0);
}

static void echo_half(struct net_grpc_call *call, void *user)
{
	struct fx *f = user;
	f->half_closes++;
	assert_int_equal(net_grpc_call_finish(call, NET_GRPC_OK, NULL), 0);
}

static void h_echo(struct net_grpc_call *call, void *data)
{
	struct fx *f = data;
	f->handler_calls++;
	snprintf(f->authority, sizeof f->authority, "%s", net_grpc_call_authority(call));
	const char *md = net_grpc_call_metadata(call, "authorization");
	snprintf(f->auth_md, sizeof f->auth_md, "%s", md != NULL ? md : "");
	f->timeout_ms = net_grpc_call_timeout_ms(call);
	assert_string_equal(net_grpc_call_path(call), "/test.Svc/Echo");
	struct net_grpc_call_callbacks cb = { .on_message = echo_msg,
					      .on_half_close = echo_half,
					      .on_cancel = h_cancelled };
	net_grpc_call_set_callbacks(call, &cb, f);
}

/* Client streaming: counts the messages and their bytes, replies once at half-close. */
static void sum_msg(struct net_grpc_call *call, const uint8_t *data, size_t len, void *user)
{
	(void)call;
	(void)data;
	struct fx *f = user;
	f->messages++;
	f->stream_sent += len;
}

static void sum_half(struct net_grpc_call *call, void *user)
{
	struct fx *f = user;
	char reply[64];
	int n = snprintf(reply, sizeof reply, "%d/%zu", f->messages, f->stream_sent);
	assert_int_equal(net_grpc_call_send(call, (const uint8_t *)reply, (size_t)n), 0);
	assert_int_equal(net_grpc_call_finish(call, NET_GRPC_OK, NULL), 0);
}

static void h_sum(struct net_grpc_call *call, void *data)
{
	struct net_grpc_call_callbacks cb = { .on_message = sum_msg,
					      .on_half_close = sum_half,
					      .on_cancel = h_cancelled };
	net_grpc_call_set_callbacks(call, &cb, data);
}

/* Client streaming with backpressure: pauses after every message until the test resumes. */
static void pause_msg(struct net_grpc_call *call, const uint8_t *data, size_t len, void *user)
{
	(void)data;
	struct fx *f = user;
	f->messages++;
	f->stream_sent += len;
	net_grpc_call_pause(call, true);
}

static void h_pause(struct net_grpc_call *call, void *data)
{
	struct fx *f = data;
	f->held = call;
	struct net_grpc_call_callbacks cb = { .on_message = pause_msg,
					      .on_half_close = sum_half,
					      .on_cancel = h_cancelled };
	net_grpc_call_set_callbacks(call, &cb, f);
}

/* Server streaming: the request says how many messages of what size; sent until the queue is
 * full, resumed from on_writable. Message i is filled with (i + j) & 0xff. */
static void stream_fill(struct net_grpc_call *call, struct fx *f)
{
	uint8_t *buf = malloc(f->stream_size);
	assert_non_null(buf);
	while (f->stream_sent < f->stream_total) {
		for (size_t j = 0; j < f->stream_size; j++) {
			buf[j] = (uint8_t)(f->stream_sent + j);
		}
		int rv = net_grpc_call_send(call, buf, f->stream_size);
		if (rv == NET_EAGAIN) {
			f->eagains++;
			break;
		}
		assert_int_equal(rv, 0);
		f->stream_sent++;
		size_t q = net_grpc_call_queued(call);
		f->max_queued = q > f->max_queued ? q : f->max_queued;
	}
	free(buf);
	if (f->stream_sent == f->stream_total) {
		assert_int_equal(net_grpc_call_finish(call, NET_GRPC_OK, NULL), 0);
	}
}

static void stream_msg(struct net_grpc_call *call, const uint8_t *data, size_t len, void *user)
{
	struct fx *f = user;
	assert_int_equal(len, 8);
	f->stream_total =
		(size_t)data[0] << 24 | (size_t)data[1] << 16 | (size_t)data[2] << 8 | data[3];
	f->stream_size =
		(size_t)data[4] << 24 | (size_t)data[5] << 16 | (size_t)data[6] << 8 | data[7];
	stream_fill(call, f);
}

static void stream_writable(struct net_grpc_call *call, void *user)
{
	struct fx *f = user;
	f->writables++;
	stream_fill(call, f);
}

static void h_stream(struct net_grpc_call *call, void *data)
{
	struct net_grpc_call_callbacks cb = { .on_message = stream_msg,
					      .on_writable = stream_writable,
					      .on_cancel = h_cancelled };
	net_grpc_call_set_callbacks(call, &cb, data);
}

/* Holds the call for the test to answer later (a reply after a Raft commit). */
static void hold_msg(struct net_grpc_call *call, const uint8_t *data, size_t len, void *user)
{
	(void)call;
	(void)data;
	(void)len;
	struct fx *f = user;
	f->messages++;
}

static void hold_half(struct net_grpc_call *call, void *user)
{
	(void)call;
	struct fx *f = user;
	f->half_closes++;
}

static void h_hold(struct net_grpc_call *call, void *data)
{
	struct fx *f = data;
	f->handler_calls++;
	f->held = call;
	struct net_grpc_call_callbacks cb = { .on_message = hold_msg,
					      .on_half_close = hold_half,
					      .on_cancel = h_cancelled };
	net_grpc_call_set_callbacks(call, &cb, f);
}

/* Ends every call at once with the status the test chose. */
static void h_status(struct net_grpc_call *call, void *data)
{
	struct fx *f = data;
	assert_int_equal(net_grpc_call_finish(call, f->finish_status, f->finish_msg), 0);
}

static void fx_start(struct fx *f, const struct net_grpc_limits *lim)
{
	assert_int_equal(net_grpc_server_new(lim, &f->srv), 0);
	assert_int_equal(net_grpc_server_register(f->srv, "/test.Svc/Echo", h_echo, f), 0);
	assert_int_equal(net_grpc_server_register(f->srv, "/test.Svc/Sum", h_sum, f), 0);
	assert_int_equal(net_grpc_server_register(f->srv, "/test.Svc/Stream", h_stream, f), 0);
	assert_int_equal(net_grpc_server_register(f->srv, "/test.Svc/Hold", h_hold, f), 0);
	assert_int_equal(net_grpc_server_register(f->srv, "/test.Svc/Status", h_status, f), 0);
	assert_int_equal(net_grpc_server_register(f->srv, "/test.Svc/Pause", h_pause, f), 0);
	assert_int_equal(net_grpc_session_new(f->srv, on_notify, f, &f->s), 0);
	fx_client(f);
}

/* ---- raw HTTP/2 for peers that break rules ---- */

static size_t raw_frame(uint8_t *out, uint8_t type, uint8_t flags, int32_t id, const void *pl,
			size_t len)
{
	out[0] = (uint8_t)(len >> 16);
	out[1] = (uint8_t)(len >> 8);
	out[2] = (uint8_t)len;
	out[3] = type;
	out[4] = flags;
	out[5] = (uint8_t)((uint32_t)id >> 24);
	out[6] = (uint8_t)(id >> 16);
	out[7] = (uint8_t)(id >> 8);
	out[8] = (uint8_t)id;
	if (len > 0) {
		memcpy(out + 9, pl, len);
	}
	return 9 + len;
}

/* Client preface, an empty SETTINGS, then a HEADERS frame (END_HEADERS) for stream `id` with
 * the given fields, then DATA carrying one 3-byte message with END_STREAM. */
static size_t raw_request(uint8_t *out, int32_t id, const nghttp2_nv *nva, size_t n)
{
	size_t off = 0;
	memcpy(out, NGHTTP2_CLIENT_MAGIC, NGHTTP2_CLIENT_MAGIC_LEN);
	off += NGHTTP2_CLIENT_MAGIC_LEN;
	off += raw_frame(out + off, NGHTTP2_SETTINGS, 0, 0, NULL, 0);
	nghttp2_hd_deflater *def;
	assert_int_equal(nghttp2_hd_deflate_new(&def, 4096), 0);
	uint8_t block[4096];
	ssize_t bl = nghttp2_hd_deflate_hd(def, block, sizeof block, nva, n);
	assert_true(bl > 0);
	nghttp2_hd_deflate_del(def);
	off += raw_frame(out + off, NGHTTP2_HEADERS, NGHTTP2_FLAG_END_HEADERS, id, block,
			 (size_t)bl);
	const uint8_t msg[8] = { 0, 0, 0, 0, 3, 'a', 'b', 'c' };
	off += raw_frame(out + off, NGHTTP2_DATA, NGHTTP2_FLAG_END_STREAM, id, msg, sizeof msg);
	return off;
}

struct raw_out {
	bool settings, goaway;
	uint32_t goaway_code;
	int rst;
	uint32_t rst_code;
	int headers;
	int http_status, grpc_status;
	char grpc_message[512];
	size_t data_bytes;
};

static void raw_parse(const uint8_t *b, size_t len, struct raw_out *o)
{
	memset(o, 0, sizeof *o);
	o->grpc_status = -1;
	nghttp2_hd_inflater *inf;
	assert_int_equal(nghttp2_hd_inflate_new(&inf), 0);
	size_t off = 0;
	while (off + 9 <= len) {
		size_t fl = (size_t)b[off] << 16 | (size_t)b[off + 1] << 8 | b[off + 2];
		uint8_t type = b[off + 3];
		const uint8_t *p = b + off + 9;
		assert_true(off + 9 + fl <= len);
		switch (type) {
		case NGHTTP2_SETTINGS:
			o->settings = true;
			break;
		case NGHTTP2_GOAWAY:
			o->goaway = true;
			o->goaway_code = (uint32_t)p[4] << 24 | (uint32_t)p[5] << 16 |
					 (uint32_t)p[6] << 8 | p[7];
			break;
		case NGHTTP2_RST_STREAM:
			o->rst++;
			o->rst_code = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
				      (uint32_t)p[2] << 8 | p[3];
			break;
		case NGHTTP2_DATA:
			o->data_bytes += fl;
			break;
		case NGHTTP2_HEADERS: {
			o->headers++;
			const uint8_t *in = p;
			size_t inlen = fl;
			for (;;) {
				nghttp2_nv nv;
				int iflags = 0;
				ssize_t r = nghttp2_hd_inflate_hd2(inf, &nv, &iflags, in, inlen, 1);
				assert_true(r >= 0);
				in += r;
				inlen -= (size_t)r;
				if (iflags & NGHTTP2_HD_INFLATE_EMIT) {
					if (strcmp((char *)nv.name, ":status") == 0) {
						o->http_status = atoi((char *)nv.value);
					} else if (strcmp((char *)nv.name, "grpc-status") == 0) {
						o->grpc_status = atoi((char *)nv.value);
					} else if (strcmp((char *)nv.name, "grpc-message") == 0) {
						snprintf(o->grpc_message, sizeof o->grpc_message,
							 "%s", (char *)nv.value);
					}
				}
				if (iflags & NGHTTP2_HD_INFLATE_FINAL) {
					nghttp2_hd_inflate_end_headers(inf);
					break;
				}
				if (inlen == 0 && !(iflags & NGHTTP2_HD_INFLATE_EMIT)) {
					break;
				}
			}
			break;
		}
		default:
			break;
		}
		off += 9 + fl;
	}
	nghttp2_hd_inflate_del(inf);
}

/* Feeds `b` to the session under test and parses everything it answers. */
static int raw_exchange(struct fx *f, const uint8_t *b, size_t len, struct raw_out *o)
{
	int rv = net_grpc_session_feed(f->s, b, len);
	static uint8_t out[1 << 16];
	size_t total = 0, n;
	do {
		assert_int_equal(net_grpc_session_take(f->s, out + total, sizeof out - total, &n),
				 0);
		total += n;
	} while (n > 0 && total < sizeof out);
	raw_parse(out, total, o);
	return rv;
}

#define NV(n, v)                                                            \
	{                                                                   \
		(uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, strlen(v), 0 \
	}

/* ---- tests ---- */

static void test_unary_echo(void **state)
{
	struct fx *f = *state;
	fx_start(f, NULL);
	struct cstream *c = cli_open(f, "/test.Svc/Echo");
	cli_msg(f, c, "hello", 5);
	cli_close(f, c);
	pump(f);
	assert_true(c->closed);
	assert_int_equal(c->close_code, NGHTTP2_NO_ERROR);
	assert_int_equal(c->http_status, 200);
	assert_int_equal(c->blocks, 2); /* response headers, trailers */
	assert_true(c->has_status);
	assert_int_equal(c->grpc_status, 0);
	const uint8_t *d;
	assert_int_equal(resp_msg(c, 0, &d), 5);
	assert_memory_equal(d, "hello", 5);
	assert_int_equal(resp_count(c), 1);
	assert_string_equal(f->authority, "localhost:2379");
	assert_string_equal(f->auth_md, "token-abc");
	assert_int_equal(f->timeout_ms, 1500);
	assert_int_equal(net_grpc_session_calls(f->s), 0);
	assert_int_equal(f->notifies, 0); /* every reply was made inside feed() */
	assert_false(net_grpc_session_done(f->s));
}

static void test_empty_message_and_many_calls(void **state)
{
	struct fx *f = *state;
	fx_start(f, NULL);
	for (int round = 0; round < 300; round++) {
		struct cstream *c = cli_open(f, "/test.Svc/Echo");
		cli_msg(f, c, "", 0);
		cli_close(f, c);
		pump(f);
		assert_int_equal(c->grpc_status, 0);
		const uint8_t *d;
		assert_int_equal(resp_msg(c, 0, &d), 0);
		free(c->out);
		free(c->in);
		memset(c, 0, sizeof *c);
	}
	assert_int_equal(net_grpc_session_calls(f->s), 0);
}

static void check_stream(const struct cstream *c, size_t count, size_t size)
{
	assert_int_equal(resp_count(c), count);
	for (size_t i = 0; i < count; i++) {
		const uint8_t *d;
		assert_int_equal(resp_msg(c, i, &d), (long)size);
		for (size_t j = 0; j < size; j += 997) {
			assert_int_equal(d[j], (uint8_t)(i + j));
		}
	}
}

static void stream_request(struct fx *f, struct cstream *c, uint32_t count, uint32_t size)
{
	uint8_t req[8] = { (uint8_t)(count >> 24), (uint8_t)(count >> 16), (uint8_t)(count >> 8),
			   (uint8_t)count,         (uint8_t)(size >> 24),  (uint8_t)(size >> 16),
			   (uint8_t)(size >> 8),   (uint8_t)size };
	cli_msg(f, c, req, sizeof req);
	cli_close(f, c);
}

/* 64 messages of 256 KiB: 16 MiB through the client's 64 KiB windows, with a 1 MiB bound on
 * the call's queue, so the handler is refused and resumed many times. */
static void test_server_streaming_flow_control(void **state)
{
	struct fx *f = *state;
	struct net_grpc_limits lim = { .max_call_queue = 1u << 20 };
	fx_start(f, &lim);
	struct cstream *c = cli_open(f, "/test.Svc/Stream");
	stream_request(f, c, 64, 256u << 10);
	pump(f);
	assert_true(c->closed);
	assert_int_equal(c->grpc_status, 0);
	check_stream(c, 64, 256u << 10);
	assert_true(f->eagains > 0);
	assert_int_equal(f->writables, f->eagains);
	assert_true(f->max_queued <= (1u << 20) + (256u << 10) + 5);
}

/* A client that stops reading: the queue stops at its bound, the handler is told, nothing
 * grows; once the client reads again everything arrives. */
static void test_slow_reader_bounded(void **state)
{
	struct fx *f = *state;
	struct net_grpc_limits lim = { .max_call_queue = 256u << 10 };
	fx_start(f, &lim);
	f->slow = true;
	struct cstream *c = cli_open(f, "/test.Svc/Stream");
	stream_request(f, c, 100, 32u << 10);
	pump(f);
	assert_false(c->closed);
	assert_true(f->eagains >= 1);
	size_t sent = f->stream_sent;
	assert_true(sent < 100);
	pump(f);
	pump(f);
	assert_int_equal(f->stream_sent, sent); /* nothing moves while the client does not read */
	assert_true(f->max_queued <= (256u << 10) + (32u << 10) + 5);
	f->slow = false;
	for (int i = 0; i < 1000 && !c->closed; i++) {
		if (c->unconsumed > 0) {
			assert_int_equal(nghttp2_session_consume(f->cli, c->id, c->unconsumed), 0);
			c->unconsumed = 0;
		}
		pump(f);
	}
	assert_true(c->closed);
	assert_int_equal(c->grpc_status, 0);
	check_stream(c, 100, 32u << 10);
}

static void test_bidi_interleaved(void **state)
{
	struct fx *f = *state;
	fx_start(f, NULL);
	struct cstream *c = cli_open(f, "/test.Svc/Echo");
	const uint8_t *d;
	for (int i = 0; i < 20; i++) {
		char m[32];
		int n = snprintf(m, sizeof m, "watch-%d", i);
		cli_msg(f, c, m, (size_t)n);
		pump(f);
		/* the reply to message i is there before message i+1 is sent */
		assert_int_equal(resp_count(c), (size_t)i + 1);
		assert_int_equal(resp_msg(c, (size_t)i, &d), n);
		assert_memory_equal(d, m, (size_t)n);
		assert_false(c->closed);
	}
	cli_close(f, c);
	pump(f);
	assert_true(c->closed);
	assert_int_equal(c->grpc_status, 0);
	assert_int_equal(f->half_closes, 1);
}

static void test_client_streaming(void **state)
{
	struct fx *f = *state;
	fx_start(f, NULL);
	struct cstream *c = cli_open(f, "/test.Svc/Sum");
	uint8_t buf[1000];
	memset(buf, 7, sizeof buf);
	for (int i = 0; i < 10; i++) {
		cli_msg(f, c, buf, 100 * (size_t)(i + 1));
		pump(f);
	}
	cli_close(f, c);
	pump(f);
	const uint8_t *d;
	long n = resp_msg(c, 0, &d);
	assert_int_equal(n, 7);
	assert_memory_equal(d, "10/5500", 7);
	assert_int_equal(c->grpc_status, 0);
}

/* One 100 000-byte message cut into 997-byte DATA frames, then 50 messages in one frame. */
static void test_split_and_coalesced(void **state)
{
	struct fx *f = *state;
	fx_start(f, NULL);
	struct cstream *c = cli_open(f, "/test.Svc/Echo");
	c->chunk = 997;
	uint8_t *big = malloc(100000);
	assert_non_null(big);
	for (size_t i = 0; i < 100000; i++) {
		big[i] = (uint8_t)(i * 31);
	}
	cli_msg(f, c, big, 100000);
	pump(f);
	const uint8_t *d;
	assert_int_equal(resp_msg(c, 0, &d), 100000);
	assert_memory_equal(d, big, 100000);
	c->chunk = 0;
	for (int i = 0; i < 50; i++) {
		char m[16];
		int n = snprintf(m, sizeof m, "m%02d", i);
		cli_msg(f, c, m, (size_t)n);
	}
	cli_close(f, c);
	pump(f);
	assert_int_equal(resp_count(c), 51);
	assert_int_equal(resp_msg(c, 50, &d), 3);
	assert_memory_equal(d, "m49", 3);
	assert_int_equal(f->messages, 51);
	assert_int_equal(c->grpc_status, 0);
	free(big);
}

/* A paused call holds at most one stream window of request bytes; the client is stopped by
 * flow control, other calls go on, and resuming delivers everything in order. */
static void test_pause_backpressure(void **state)
{
	struct fx *f = *state;
	fx_start(f, NULL);
	pump(f);
	struct cstream *c = cli_open(f, "/test.Svc/Pause");
	static uint8_t chunk[100000];
	for (int i = 0; i < 30; i++) { /* 3 MB: three stream windows */
		memset(chunk, i, sizeof chunk);
		cli_msg(f, c, chunk, sizeof chunk);
	}
	cli_close(f, c);
	pump(f);
	assert_int_equal(f->messages, 1);
	assert_true(c->out_off < c->out_len); /* the client is blocked by the stream window */
	assert_int_equal(nghttp2_session_get_stream_remote_window_size(f->cli, c->id), 0);
	/* Another call on the same connection is not held up. */
	struct cstream *e = cli_open(f, "/test.Svc/Echo");
	cli_msg(f, e, "other", 5);
	cli_close(f, e);
	pump(f);
	assert_int_equal(e->grpc_status, 0);
	int rounds = 0;
	while (!c->closed && rounds++ < 100) {
		int before = f->notifies;
		net_grpc_call_pause(f->held, false);
		assert_int_equal(f->notifies, before + 1); /* resumed from outside: take soon */
		pump(f);
	}
	assert_true(c->closed);
	assert_int_equal(f->messages, 31); /* 30 here, 1 from the echo call */
	assert_int_equal(f->stream_sent, 3000000);
	const uint8_t *d;
	assert_int_equal(resp_msg(c, 0, &d), 10);
	assert_memory_equal(d, "31/3000000", 10);
}

static void test_oversized_message(void **state)
{
	struct fx *f = *state;
	fx_start(f, NULL); /* etcd's limit: 1.5 MiB + 512 KiB */
	assert_int_equal(net_grpc_server_limits(f->srv)->max_recv_message, 2097152);
	struct cstream *c = cli_open(f, "/test.Svc/Echo");
	const uint32_t len = 2097153;
	uint8_t pre[5] = { 0, (uint8_t)(len >> 24), (uint8_t)(len >> 16), (uint8_t)(len >> 8),
			   (uint8_t)len };
	cli_raw(f, c, pre, 5);
	uint8_t junk[4096] = { 0 };
	cli_raw(f, c, junk, sizeof junk);
	pump(f);
	assert_true(c->closed);
	assert_true(c->trailers_only);
	assert_int_equal(c->grpc_status, NET_GRPC_RESOURCE_EXHAUSTED);
	assert_string_equal(c->grpc_message,
			    "grpc: received message larger than max (2097153 vs. 2097152)");
	assert_int_equal(f->cancels, 1); /* the handler was told its call is gone */
	assert_int_equal(f->messages, 0);
	assert_int_equal(net_grpc_session_calls(f->s), 0);
	/* A message of exactly the limit passes. */
	struct cstream *c2 = cli_open(f, "/test.Svc/Echo");
	uint8_t *big = calloc(1, 2097152);
	assert_non_null(big);
	cli_msg(f, c2, big, 2097152);
	cli_close(f, c2);
	pump(f);
	assert_int_equal(c2->grpc_status, 0);
	const uint8_t *d;
	assert_int_equal(resp_msg(c2, 0, &d), 2097152);
	free(big);
}

static void test_compressed_flag(void **state)
{
	struct fx *f = *state;
	fx_start(f, NULL);
	struct cstream *c = cli_open(f, "/test.Svc/Echo");
	uint8_t m[8] = { 1, 0, 0, 0, 3, 'a', 'b', 'c' };
	cli_raw(f, c, m, sizeof m);
	cli_close(f, c);
	pump(f);
	assert_int_equal(c->grpc_status, NET_GRPC_INTERNAL);
	assert_string_equal(c->grpc_message,
			    "grpc: compressed flag set with identity or empty encoding");
	/* A grpc-encoding no decompressor exists for is refused before any message. */
	nghttp2_nv nva[] = {
		NV(":method", "POST"),
		NV(":scheme", "http"),
		NV(":path", "/test.Svc/Echo"),
		NV(":authority", "a"),
		NV("content-type", "application/grpc"),
		NV("grpc-encoding", "gzip"),
	};
	uint8_t b[4096];
	net_grpc_session_free(f->s);
	assert_int_equal(net_grpc_session_new(f->srv, on_notify, f, &f->s), 0);
	size_t len = raw_request(b, 1, nva, sizeof nva / sizeof nva[0]);
	struct raw_out o;
	assert_int_equal(raw_exchange(f, b, len, &o), 0);
	assert_int_equal(o.grpc_status, NET_GRPC_UNIMPLEMENTED);
	assert_string_equal(o.grpc_message,
			    "grpc: Decompressor is not installed for grpc-encoding \"gzip\"");
}

static void test_unknown_method(void **state)
{
	struct fx *f = *state;
	fx_start(f, NULL);
	struct cstream *a = cli_open(f, "/test.Svc/Nope");
	cli_msg(f, a, "x", 1);
	cli_close(f, a);
	struct cstream *b = cli_open(f, "/etcdserverpb.KV/Range");
	cli_close(f, b);
	pump(f);
	assert_true(a->trailers_only);
	assert_int_equal(a->blocks, 1);
	assert_int_equal(a->http_status, 200);
	assert_int_equal(a->grpc_status, NET_GRPC_UNIMPLEMENTED);
	assert_string_equal(a->grpc_message, "unknown method Nope for service test.Svc");
	assert_true(b->trailers_only);
	assert_int_equal(b->grpc_status, NET_GRPC_UNIMPLEMENTED);
	assert_string_equal(b->grpc_message, "unknown service etcdserverpb.KV");
	assert_int_equal(a->in_len, 0);
	assert_int_equal(f->handler_calls, 0);
	assert_int_equal(net_grpc_session_calls(f->s), 0);
}

static void test_bad_content_type(void **state)
{
	struct fx *f = *state;
	fx_start(f, NULL);
	struct cstream *a = cli_open_ct(f, "/test.Svc/Echo", "application/json", "h");
	cli_close(f, a);
	struct cstream *b = cli_open_ct(f, "/test.Svc/Echo", "application/grpc+proto", "h");
	cli_msg(f, b, "ok", 2);
	cli_close(f, b);
	pump(f);
	assert_int_equal(a->http_status, 415);
	assert_int_equal(a->grpc_status, NET_GRPC_INVALID_ARGUMENT);
	assert_string_equal(a->grpc_message,
			    "invalid gRPC request content-type \"application/json\"");
	assert_int_equal(b->http_status, 200);
	assert_int_equal(b->grpc_status, 0);
	assert_int_equal(f->handler_calls, 1);
}

static void test_deferred_reply(void **state)
{
	struct fx *f = *state;
	fx_start(f, NULL);
	struct cstream *c = cli_open(f, "/test.Svc/Hold");
	cli_msg(f, c, "put", 3);
	cli_close(f, c);
	pump(f);
	assert_non_null(f->held);
	assert_int_equal(f->messages, 1);
	assert_int_equal(f->half_closes, 1);
	assert_int_equal(c->blocks, 0);
	assert_false(net_grpc_session_want_write(f->s));
	/* Later, outside any session entry point: the commit came back. */
	struct net_grpc_call *call = f->held;
	assert_int_equal(net_grpc_call_send(call, (const uint8_t *)"done", 4), 0);
	assert_int_equal(f->notifies, 1);
	assert_int_equal(net_grpc_call_finish(call, NET_GRPC_OK, NULL), 0);
	f->held = NULL;
	assert_int_equal(f->notifies, 1); /* once until the transport takes */
	assert_true(net_grpc_session_want_write(f->s));
	pump(f);
	assert_true(c->closed);
	assert_int_equal(c->grpc_status, 0);
	const uint8_t *d;
	assert_int_equal(resp_msg(c, 0, &d), 4);
	assert_memory_equal(d, "done", 4);
	assert_int_equal(f->cancels, 0);
	/* A deferred error reply is trailers-only. */
	struct cstream *c2 = cli_open(f, "/test.Svc/Hold");
	cli_close(f, c2);
	pump(f);
	assert_non_null(f->held);
	assert_int_equal(net_grpc_call_finish(f->held, NET_GRPC_NOT_FOUND, "no such key"), 0);
	f->held = NULL;
	assert_int_equal(f->notifies, 2);
	pump(f);
	assert_true(c2->trailers_only);
	assert_int_equal(c2->grpc_status, NET_GRPC_NOT_FOUND);
	assert_string_equal(c2->grpc_message, "no such key");
}

static void test_client_rst_cancels(void **state)
{
	struct fx *f = *state;
	fx_start(f, NULL);
	struct cstream *c = cli_open(f, "/test.Svc/Hold");
	cli_msg(f, c, "watch", 5);
	pump(f);
	assert_non_null(f->held);
	assert_int_equal(net_grpc_session_calls(f->s), 1);
	assert_int_equal(
		nghttp2_submit_rst_stream(f->cli, NGHTTP2_FLAG_NONE, c->id, NGHTTP2_CANCEL), 0);
	pump(f);
	assert_null(f->held);
	assert_int_equal(f->cancels, 1);
	assert_int_equal(net_grpc_session_calls(f->s), 0);
	/* The connection goes on. */
	struct cstream *c2 = cli_open(f, "/test.Svc/Echo");
	cli_msg(f, c2, "hi", 2);
	cli_close(f, c2);
	pump(f);
	assert_int_equal(c2->grpc_status, 0);
}

static void test_too_many_streams(void **state)
{
	struct fx *f = *state;
	struct net_grpc_limits lim = { .max_concurrent_streams = 2 };
	fx_start(f, &lim);
	/* All four go out in the client's first flight, before it has seen the server's SETTINGS. */
	struct cstream *c[4];
	for (int i = 0; i < 4; i++) {
		c[i] = cli_open(f, "/test.Svc/Hold");
	}
	const uint8_t *p;
	ssize_t r;
	while ((r = nghttp2_session_mem_send(f->cli, &p)) > 0) {
		assert_int_equal(net_grpc_session_feed(f->s, p, (size_t)r), 0);
	}
	pump(f);
	assert_int_equal(f->handler_calls, 2);
	assert_int_equal(net_grpc_session_calls(f->s), 2);
	int refused = 0;
	for (int i = 0; i < 4; i++) {
		refused += c[i]->closed && c[i]->close_code == NGHTTP2_REFUSED_STREAM;
	}
	assert_int_equal(refused, 2);
	assert_int_equal(f->goaways, 0);
}

/* A client that ignores an acknowledged limit breaks RFC 9113 §5.1.2; nghttp2 1.52 answers
 * with GOAWAY PROTOCOL_ERROR (within the first flight, before the ACK, it refuses the stream). */
static void test_too_many_streams_after_ack(void **state)
{
	struct fx *f = *state;
	struct net_grpc_limits lim = { .max_concurrent_streams = 2 };
	fx_start(f, &lim);
	nghttp2_hd_deflater *def;
	assert_int_equal(nghttp2_hd_deflate_new(&def, 4096), 0);
	nghttp2_nv nva[] = {
		NV(":method", "POST"),
		NV(":scheme", "http"),
		NV(":path", "/test.Svc/Hold"),
		NV(":authority", "a"),
		NV("content-type", "application/grpc"),
	};
	static uint8_t b[8192];
	size_t off = 0;
	memcpy(b, NGHTTP2_CLIENT_MAGIC, NGHTTP2_CLIENT_MAGIC_LEN);
	off += NGHTTP2_CLIENT_MAGIC_LEN;
	off += raw_frame(b + off, NGHTTP2_SETTINGS, 0, 0, NULL, 0);
	off += raw_frame(b + off, NGHTTP2_SETTINGS, NGHTTP2_FLAG_ACK, 0, NULL, 0);
	for (int32_t id = 1; id <= 5; id += 2) {
		uint8_t block[512];
		ssize_t bl = nghttp2_hd_deflate_hd(def, block, sizeof block, nva, 5);
		assert_true(bl > 0);
		off += raw_frame(b + off, NGHTTP2_HEADERS, NGHTTP2_FLAG_END_HEADERS, id, block,
				 (size_t)bl);
	}
	nghttp2_hd_deflate_del(def);
	struct raw_out o;
	raw_exchange(f, b, off, &o);
	assert_int_equal(f->handler_calls, 2);
	assert_true(o.goaway);
	assert_int_equal(o.goaway_code, NGHTTP2_PROTOCOL_ERROR);
}

static void test_status_percent_encoding(void **state)
{
	struct fx *f = *state;
	fx_start(f, NULL);
	f->finish_status = NET_GRPC_FAILED_PRECONDITION;
	f->finish_msg = "clé 100%\tok";
	struct cstream *c = cli_open(f, "/test.Svc/Status");
	cli_close(f, c);
	pump(f);
	assert_true(c->trailers_only);
	assert_int_equal(c->grpc_status, NET_GRPC_FAILED_PRECONDITION);
	assert_string_equal(c->grpc_message, "cl%C3%A9 100%25%09ok");

	char out[64];
	assert_int_equal(net_grpc_percent_encode("a b~", out, sizeof out), 4);
	assert_string_equal(out, "a b~");
	assert_int_equal(net_grpc_percent_encode("\x7f%", out, sizeof out), 6);
	assert_string_equal(out, "%7F%25");
	assert_int_equal(net_grpc_percent_encode("%%%", out, 9), NET_ETOOBIG);
	assert_int_equal(net_grpc_percent_encode("%%%", out, 10), 9);
	assert_string_equal(net_grpc_status_name(NET_GRPC_UNAUTHENTICATED), "UNAUTHENTICATED");
	assert_string_equal(net_grpc_status_name(99), "UNKNOWN");
}

static void test_timeout_parse(void **state)
{
	(void)state;
	assert_int_equal(net_grpc_parse_timeout("1S"), 1000);
	assert_int_equal(net_grpc_parse_timeout("2M"), 120000);
	assert_int_equal(net_grpc_parse_timeout("1H"), 3600000);
	assert_int_equal(net_grpc_parse_timeout("1500m"), 1500);
	assert_int_equal(net_grpc_parse_timeout("1u"), 1);
	assert_int_equal(net_grpc_parse_timeout("2000001n"), 3);
	assert_int_equal(net_grpc_parse_timeout("99999999H"), 99999999LL * 3600000);
	assert_int_equal(net_grpc_parse_timeout("123456789S"), -1);
	assert_int_equal(net_grpc_parse_timeout("S"), -1);
	assert_int_equal(net_grpc_parse_timeout("1x"), -1);
	assert_int_equal(net_grpc_parse_timeout("-1S"), -1);
	assert_int_equal(net_grpc_parse_timeout(NULL), -1);
}

static void test_registration(void **state)
{
	(void)state;
	struct net_grpc_server *srv;
	struct net_grpc_limits bad = { .connection_window_size = 1000 };
	assert_int_equal(net_grpc_server_new(&bad, &srv), NET_EINVAL);
	assert_int_equal(net_grpc_server_new(NULL, &srv), 0);
	const struct net_grpc_limits *l = net_grpc_server_limits(srv);
	assert_true(l->initial_window_size >= (1u << 20));
	assert_true(l->connection_window_size >= (16u << 20));
	assert_int_equal(net_grpc_server_register(srv, "/a.B/C", h_status, NULL), 0);
	assert_int_equal(net_grpc_server_register(srv, "/a.B/C", h_status, NULL), NET_EINVAL);
	assert_int_equal(net_grpc_server_register(srv, "a.B/C", h_status, NULL), NET_EINVAL);
	assert_int_equal(net_grpc_server_register(srv, "/a.B/", h_status, NULL), NET_EINVAL);
	assert_int_equal(net_grpc_server_register(srv, "/abc", h_status, NULL), NET_EINVAL);
	int rv = 0;
	for (int i = 1; i < NET_GRPC_MAX_METHODS + 5 && rv == 0; i++) {
		char p[32];
		snprintf(p, sizeof p, "/s/m%d", i);
		rv = net_grpc_server_register(srv, p, h_status, NULL);
	}
	assert_int_equal(rv, NET_ELIMIT);
	net_grpc_server_free(srv);
}

/* The server's first bytes are its SETTINGS, with the raised windows and the bounds. */
static void test_server_settings(void **state)
{
	struct fx *f = *state;
	fx_start(f, NULL);
	pump(f);
	assert_int_equal(nghttp2_session_get_remote_settings(
				 f->cli, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS),
			 1024);
	assert_int_equal(
		nghttp2_session_get_remote_settings(f->cli, NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE),
		1u << 20);
	assert_int_equal(
		nghttp2_session_get_remote_settings(f->cli, NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE),
		16u << 10);
	assert_int_equal(nghttp2_session_get_remote_window_size(f->cli), 16u << 20);
}

static void test_garbage_preface(void **state)
{
	struct fx *f = *state;
	fx_start(f, NULL);
	const char *http1 = "GET / HTTP/1.1\r\nHost: x\r\n\r\nPRI * HTTP/2.0 and more garbage";
	struct raw_out o;
	int rv = raw_exchange(f, (const uint8_t *)http1, strlen(http1), &o);
	assert_int_equal(rv, NET_EPROTO);
	assert_true(o.settings);
	assert_true(o.goaway);
	assert_int_equal(o.goaway_code, NGHTTP2_PROTOCOL_ERROR);
	assert_true(net_grpc_session_done(f->s));
	assert_int_equal(net_grpc_session_feed(f->s, (const uint8_t *)"x", 1), NET_ECLOSED);
}

static void test_bad_frame_after_preface(void **state)
{
	struct fx *f = *state;
	fx_start(f, NULL);
	uint8_t b[128];
	size_t off = 0;
	memcpy(b, NGHTTP2_CLIENT_MAGIC, NGHTTP2_CLIENT_MAGIC_LEN);
	off += NGHTTP2_CLIENT_MAGIC_LEN;
	off += raw_frame(b + off, NGHTTP2_SETTINGS, 0, 0, NULL, 0);
	off += raw_frame(b + off, NGHTTP2_DATA, 0, 0, "oops", 4); /* DATA on stream 0 */
	struct raw_out o;
	assert_int_equal(raw_exchange(f, b, off, &o), 0); /* nghttp2 answers it by itself */
	assert_true(o.goaway);
	assert_int_equal(o.goaway_code, NGHTTP2_PROTOCOL_ERROR);
	assert_int_equal(net_grpc_session_h2_error(f->s), NGHTTP2_PROTOCOL_ERROR);
	assert_true(net_grpc_session_done(f->s));
	assert_int_equal(net_grpc_session_feed(f->s, b, 9), NET_ECLOSED);
}

static const char *const trap_authorities[] = {
	"unix:///tmp/etcd.sock",
	"/tmp/etcd.sock",
	"#initially=[http://127.0.0.1:2379;http://127.0.0.1:22379]",
	"etcd host:2379",
	"host:2379?x=1",
};

/* What some Go clients send as :authority passes here, though nghttp2 1.52 refuses it. */
static void test_authority_trap(void **state)
{
	struct fx *f = *state;
	for (size_t i = 0; i < sizeof trap_authorities / sizeof trap_authorities[0]; i++) {
		const char *auth = trap_authorities[i];
		assert_false(nghttp2_check_authority((const uint8_t *)auth, strlen(auth)));
		nghttp2_nv nva[] = {
			NV(":method", "POST"),
			NV(":scheme", "http"),
			NV(":path", "/test.Svc/Echo"),
			NV(":authority", auth),
			NV("content-type", "application/grpc"),
			NV("te", "trailers"),
		};
		uint8_t b[4096];
		size_t len = raw_request(b, 1, nva, sizeof nva / sizeof nva[0]);

		/* Control: a default nghttp2 server session resets the stream. */
		nghttp2_session_callbacks *cbs;
		nghttp2_session *plain;
		assert_int_equal(nghttp2_session_callbacks_new(&cbs), 0);
		assert_int_equal(nghttp2_session_server_new(&plain, cbs, NULL), 0);
		nghttp2_session_callbacks_del(cbs);
		assert_int_equal(nghttp2_session_mem_recv(plain, b, len), (ssize_t)len);
		uint8_t out[4096];
		size_t total = 0;
		const uint8_t *p;
		ssize_t r;
		while ((r = nghttp2_session_mem_send(plain, &p)) > 0) {
			assert_true(total + (size_t)r <= sizeof out);
			memcpy(out + total, p, (size_t)r);
			total += (size_t)r;
		}
		nghttp2_session_del(plain);
		struct raw_out o;
		raw_parse(out, total, &o);
		assert_int_equal(o.rst, 1);
		assert_int_equal(o.rst_code, NGHTTP2_PROTOCOL_ERROR);

		/* The core serves it. */
		fx_start(f, NULL);
		assert_int_equal(raw_exchange(f, b, len, &o), 0);
		assert_int_equal(o.rst, 0);
		assert_int_equal(o.http_status, 200);
		assert_int_equal(o.grpc_status, 0);
		assert_int_equal(o.data_bytes, 8); /* the echo */
		assert_string_equal(f->authority, auth);
		net_grpc_session_free(f->s);
		net_grpc_server_free(f->srv);
		nghttp2_session_del(f->cli);
		f->s = NULL;
		f->srv = NULL;
		f->cli = NULL;
	}
}

/* Everything else nghttp2 would check still is: each of these requests is reset. */
static void test_header_validation_kept(void **state)
{
	struct fx *f = *state;
	const nghttp2_nv bad[][7] = {
		{ NV(":method", "POST"), NV(":scheme", "http"), NV(":path", "/test.Svc/Echo"),
		  NV(":authority", "a\x01"), NV("te", "trailers") },
		{ NV(":method", "POST"), NV(":scheme", "http"), NV(":authority", "a"),
		  NV("te", "trailers") }, /* no :path */
		{ NV(":method", "POST"), NV(":scheme", "http"), NV(":path", "/test.Svc/Echo"),
		  NV(":authority", "a"), NV("Content-Type", "application/grpc") },
		{ NV(":method", "POST"), NV(":scheme", "http"), NV(":path", "/test.Svc/Echo"),
		  NV(":authority", "a"), NV("connection", "close") },
		{ NV(":method", "POST"), NV(":scheme", "http"), NV(":path", "/test.Svc/Echo"),
		  NV(":authority", "a"), NV("te", "gzip") },
		{ NV(":method", "POST"), NV(":scheme", "http"), NV("x", "y"),
		  NV(":path", "/test.Svc/Echo"), NV(":authority", "a") }, /* pseudo after regular */
		{ NV(":method", "POST"), NV(":scheme", "http"), NV(":path", "/test.Svc/Echo"),
		  NV(":authority", "a"), NV(":path", "/test.Svc/Echo") }, /* twice */
		{ NV(":method", "POST"), NV(":scheme", "http"), NV(":path", "/test.Svc/Echo"),
		  NV(":authority", "a"), NV(":status", "200") },
		{ NV(":method", "POST"), NV(":scheme", "http"), NV(":path", "/test.Svc/Echo"),
		  NV(":authority", "a"), NV("content-length", "2") }, /* the body is 8 bytes */
		{ NV(":method", "POST"), NV(":scheme", "http"), NV(":path", "/test.Svc/Echo"),
		  NV(":authority", " a") },
	};
	const size_t nbad[] = { 5, 4, 5, 5, 5, 5, 5, 5, 5, 4 };
	for (size_t i = 0; i < sizeof nbad / sizeof nbad[0]; i++) {
		fx_start(f, NULL);
		uint8_t b[4096];
		size_t len = raw_request(b, 1, bad[i], nbad[i]);
		struct raw_out o;
		assert_int_equal(raw_exchange(f, b, len, &o), 0);
		if (o.rst != 1 || o.rst_code != NGHTTP2_PROTOCOL_ERROR) {
			fail_msg("request %zu: %d RST_STREAM, code %u", i, o.rst, o.rst_code);
		}
		assert_int_equal(f->handler_calls, 0);
		assert_int_equal(net_grpc_session_calls(f->s), 0);
		net_grpc_session_free(f->s);
		net_grpc_server_free(f->srv);
		nghttp2_session_del(f->cli);
		f->s = NULL;
		f->srv = NULL;
		f->cli = NULL;
	}
}

static void test_header_list_bound(void **state)
{
	struct fx *f = *state;
	struct net_grpc_limits lim = { .max_header_list_size = 2048 };
	fx_start(f, &lim);
	char big[3000];
	memset(big, 'v', sizeof big - 1);
	big[sizeof big - 1] = '\0';
	nghttp2_nv nva[] = {
		NV(":method", "POST"),
		NV(":scheme", "http"),
		NV(":path", "/test.Svc/Echo"),
		NV(":authority", "a"),
		NV("content-type", "application/grpc"),
		NV("x-big", big),
	};
	uint8_t b[8192];
	size_t len = raw_request(b, 1, nva, sizeof nva / sizeof nva[0]);
	struct raw_out o;
	assert_int_equal(raw_exchange(f, b, len, &o), 0);
	assert_int_equal(o.grpc_status, NET_GRPC_RESOURCE_EXHAUSTED);
	assert_int_equal(f->handler_calls, 0);
	assert_int_equal(net_grpc_session_calls(f->s), 0);
}

static void test_ping_answered(void **state)
{
	struct fx *f = *state;
	fx_start(f, NULL);
	/* Go's keepalive pings at 5 s and beyond, and even a burst: answered, never punished. */
	for (int i = 0; i < 50; i++) {
		uint8_t opaque[8] = { (uint8_t)i };
		assert_int_equal(nghttp2_submit_ping(f->cli, NGHTTP2_FLAG_NONE, opaque), 0);
		pump(f);
	}
	assert_int_equal(f->pings_acked, 50);
	assert_int_equal(f->goaways, 0);
	struct cstream *c = cli_open(f, "/test.Svc/Echo");
	cli_msg(f, c, "still", 5);
	cli_close(f, c);
	pump(f);
	assert_int_equal(c->grpc_status, 0);
}

static void test_goaway_drain(void **state)
{
	struct fx *f = *state;
	fx_start(f, NULL);
	struct cstream *c = cli_open(f, "/test.Svc/Hold");
	cli_msg(f, c, "lease", 5);
	pump(f);
	assert_non_null(f->held);
	assert_int_equal(net_grpc_session_drain(f->s, 1000), 0);
	pump(f);
	/* The notice, then the final GOAWAY naming the in-flight stream, after the PING round. */
	assert_int_equal(f->goaways, 2);
	assert_int_equal(f->goaway_last, c->id);
	assert_int_equal(f->goaway_code, NGHTTP2_NO_ERROR);
	assert_false(net_grpc_session_done(f->s));
	/* The in-flight call finishes normally. */
	net_grpc_session_tick(f->s, 5000);
	assert_non_null(f->held);
	assert_int_equal(net_grpc_call_send(f->held, (const uint8_t *)"ok", 2), 0);
	assert_int_equal(net_grpc_call_finish(f->held, NET_GRPC_OK, NULL), 0);
	f->held = NULL;
	cli_close(f, c);
	pump(f);
	assert_true(c->closed);
	assert_int_equal(c->grpc_status, 0);
	assert_int_equal(f->cancels, 0);
	assert_true(net_grpc_session_done(f->s));
}

static void test_drain_deadline(void **state)
{
	struct fx *f = *state;
	fx_start(f, NULL);
	struct cstream *c = cli_open(f, "/test.Svc/Hold");
	pump(f);
	assert_non_null(f->held);
	assert_int_equal(net_grpc_session_drain(f->s, 1000), 0);
	pump(f);
	net_grpc_session_tick(f->s, 1000 + 9999);
	assert_non_null(f->held);
	net_grpc_session_tick(f->s, 1000 + 10000);
	assert_null(f->held);
	assert_int_equal(f->cancels, 1);
	pump(f);
	assert_true(c->closed);
	assert_int_equal(c->close_code, NGHTTP2_CANCEL);
	assert_true(net_grpc_session_done(f->s));
}

/* Freeing a session with calls still held cancels them. */
static void test_free_with_calls(void **state)
{
	struct fx *f = *state;
	fx_start(f, NULL);
	cli_open(f, "/test.Svc/Hold");
	struct cstream *c = cli_open(f, "/test.Svc/Stream");
	f->slow = true;
	stream_request(f, c, 200, 64u << 10); /* 12.8 MiB: over the 8 MiB call queue */
	pump(f);
	assert_non_null(f->held);
	assert_int_equal(net_grpc_session_calls(f->s), 2);
	net_grpc_session_free(f->s);
	f->s = NULL;
	assert_int_equal(f->cancels, 2);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_unary_echo, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_empty_message_and_many_calls, fx_setup,
						fx_teardown),
		cmocka_unit_test_setup_teardown(test_server_streaming_flow_control, fx_setup,
						fx_teardown),
		cmocka_unit_test_setup_teardown(test_slow_reader_bounded, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_bidi_interleaved, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_client_streaming, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_split_and_coalesced, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_pause_backpressure, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_oversized_message, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_compressed_flag, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_unknown_method, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_bad_content_type, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_deferred_reply, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_client_rst_cancels, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_too_many_streams, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_too_many_streams_after_ack, fx_setup,
						fx_teardown),
		cmocka_unit_test_setup_teardown(test_status_percent_encoding, fx_setup,
						fx_teardown),
		cmocka_unit_test(test_timeout_parse),
		cmocka_unit_test(test_registration),
		cmocka_unit_test_setup_teardown(test_server_settings, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_garbage_preface, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_bad_frame_after_preface, fx_setup,
						fx_teardown),
		cmocka_unit_test_setup_teardown(test_authority_trap, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_header_validation_kept, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_header_list_bound, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_ping_answered, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_goaway_drain, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_drain_deadline, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_free_with_calls, fx_setup, fx_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

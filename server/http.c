/* http.c: the HTTP/1.1 routes of the client port: /health, /version, /metrics and etcd's JSON
 * gateway (/v3/...). The gateway runs the member's own gRPC handlers as local calls (net/grpc.h
 * "local calls"), so every API behaves the same over both protocols.
 *
 * One struct hconn per connection: bytes in a bounded buffer, one request at a time (pipelined
 * requests wait in the buffer, reading stops while a call runs), the response in a bounded
 * output buffer written as the stream accepts it. A stream of responses (Watch, LeaseKeepAlive,
 * Snapshot) goes out chunked, one JSON object a line, as grpc-gateway does. */
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http.h"
#include "http1.h"
#include "log.h"
#include "member_int.h"

#define HTTP_MAX_CONNS 1024             /* connections held at once; more get 503 */
#define HTTP_OUT_HIGH ((size_t)1 << 20) /* stream responses refused above this (backpressure) */
#define HTTP_OUT_MAX ((size_t)80 << 20) /* one response: a 64 MiB message in JSON and base64 */
#define HTTP_WRITE_PIECE ((size_t)64 << 10)
#define HTTP_IDLE_MS 60000 /* a keep-alive connection without a request for this long */
#define HTTP_HEAD_MS 10000 /* a request's head and body must arrive within this */
#define HTTP_CALL_MS 10000 /* a unary gateway call taking longer gets 503 */
#define HTTP_CORS                                                               \
	"Access-Control-Allow-Headers: accept, content-type, authorization\r\n" \
	"Access-Control-Allow-Methods: POST, GET, OPTIONS, PUT, DELETE\r\n"     \
	"Access-Control-Allow-Origin: *\r\n"

struct hconn {
	struct srv_member *m;
	struct hconn *prev, *next;
	struct net_stream *s;
	uint8_t *in;
	size_t in_len, in_cap, in_max;
	struct net_http1_request *req;
	struct srv_text out;
	size_t out_off;
	bool closing;     /* net_stream_close was called */
	bool close_after; /* close once the output is written */
	bool blocked;     /* the stream said NET_EAGAIN */
	bool in_process;  /* inside process(): on_finish must not re-enter it */
	bool head_only;   /* a HEAD request: the response's head without its body */

	/* the gateway call in flight */
	struct net_grpc_call *call;
	const struct gw_route *route;
	bool health; /* the call is /health's read */
	bool chunked;
	bool got_msg;
	struct srv_text reply; /* a unary call's reply, JSON, until its status comes */
	uint64_t started_ms, last_ms;
};

/* ---- text buffer ---- */

void srv_text_init(struct srv_text *t, size_t max)
{
	*t = (struct srv_text){ .max = max };
}

void srv_text_free(struct srv_text *t)
{
	free(t->p);
	*t = (struct srv_text){ .max = t->max };
}

static bool text_reserve(struct srv_text *t, size_t n)
{
	if (t->full)
		return false;
	if (n > t->max - t->len) {
		t->full = true;
		return false;
	}
	if (t->len + n + 1 <= t->cap)
		return true;
	size_t cap = t->cap ? t->cap : 256;
	while (cap < t->len + n + 1)
		cap *= 2;
	char *p = realloc(t->p, cap);
	if (p == NULL) {
		t->full = true;
		return false;
	}
	t->p = p;
	t->cap = cap;
	return true;
}

void srv_text_add(struct srv_text *t, const char *s, size_t n)
{
	if (n == 0 || !text_reserve(t, n))
		return;
	memcpy(t->p + t->len, s, n);
	t->len += n;
	t->p[t->len] = '\0';
}

void srv_text_puts(struct srv_text *t, const char *s)
{
	srv_text_add(t, s, strlen(s));
}

void srv_text_printf(struct srv_text *t, const char *fmt, ...)
{
	char small[256];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(small, sizeof small, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n < sizeof small) {
		srv_text_add(t, small, (size_t)n);
		return;
	}
	if (!text_reserve(t, (size_t)n))
		return;
	va_start(ap, fmt);
	vsnprintf(t->p + t->len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	t->len += (size_t)n;
}

/* ---- connection plumbing ---- */

static void process(struct hconn *c);

static void conn_close(struct hconn *c)
{
	if (!c->closing) {
		c->closing = true;
		net_stream_close(c->s);
	}
}

/* Writes what the output buffer holds, in pieces, until the stream pushes back. */
static void flush(struct hconn *c)
{
	while (!c->closing && !c->blocked && c->out_off < c->out.len) {
		size_t n = c->out.len - c->out_off;
		n = n < HTTP_WRITE_PIECE ? n : HTTP_WRITE_PIECE;
		int rv = net_stream_write(c->s, (const uint8_t *)c->out.p + c->out_off, n);
		if (rv == NET_EAGAIN) {
			c->blocked = true;
			return;
		}
		if (rv != 0) {
			conn_close(c);
			return;
		}
		c->out_off += n;
	}
	if (c->out_off == c->out.len && c->out.len > 0) {
		c->out.len = c->out_off = 0;
		if (c->out.cap > (1u << 20)) {
			srv_text_free(&c->out); /* a large response's buffer is not kept */
		}
	}
	if (!c->closing && c->close_after && c->out.len == 0 && c->call == NULL)
		conn_close(c);
}

static void respond(struct hconn *c, int status, const char *ctype, const char *body, size_t len,
		    bool close)
{
	char head[512];
	close = close || c->close_after;
	int n = net_http1_write_head(head, sizeof head, status, ctype, (int64_t)len, close,
				     HTTP_CORS);
	assert(n > 0);
	if (status >= 100 && status < 600)
		c->m->metrics.http_requests[status / 100]++;
	srv_text_add(&c->out, head, (size_t)n);
	if (!c->head_only)
		srv_text_add(&c->out, body, len);
	if (c->out.full) {
		srv_text_free(&c->out);
		c->out.full = false;
		close = true;
	}
	if (close)
		c->close_after = true;
	flush(c);
}

static void respond_text(struct hconn *c, int status, const char *body, bool close)
{
	respond(c, status, "text/plain; charset=utf-8", body, strlen(body), close);
}

/* etcd's gateway error body. */
static void respond_error(struct hconn *c, int code, const char *msg, bool close)
{
	struct srv_text t;
	srv_text_init(&t, 64 << 10);
	srv_text_puts(&t, "{\"error\":");
	/* the message twice, as JSON strings */
	struct srv_text q;
	srv_text_init(&q, 16 << 10);
	{
		for (const char *p = msg; *p != '\0'; p++) {
			unsigned char ch = (unsigned char)*p;
			if (ch == '"' || ch == '\\') {
				char e[2] = { '\\', (char)ch };
				srv_text_add(&q, e, 2);
			} else if (ch < 0x20) {
				srv_text_printf(&q, "\\u%04x", ch);
			} else {
				srv_text_add(&q, p, 1);
			}
		}
	}
	srv_text_printf(&t, "\"%s\",\"message\":\"%s\",\"code\":%d}", q.p ? q.p : "",
			q.p ? q.p : "", code);
	respond(c, gw_http_status(code), "application/json", t.p ? t.p : "", t.len, close);
	srv_text_free(&q);
	srv_text_free(&t);
}

/* ---- the gateway's local call ---- */

static void call_done(struct hconn *c)
{
	c->call = NULL;
	c->route = NULL;
	c->health = false;
	c->chunked = false;
	c->got_msg = false;
	srv_text_free(&c->reply);
	c->last_ms = now_ms(c->m);
	if (!c->closing)
		(void)net_stream_read_start(c->s);
}

/* Encodes one response message as JSON into t; false if it does not decode. */
static bool encode_msg(const ProtobufCMessageDescriptor *d, const uint8_t *data, size_t len,
		       struct srv_text *t)
{
	ProtobufCMessage *msg = protobuf_c_message_unpack(d, NULL, len, data);
	if (msg == NULL)
		return false;
	gw_json_encode(msg, t);
	protobuf_c_message_free_unpacked(msg, NULL);
	return true;
}

static int on_call_message(void *user, const uint8_t *data, size_t len)
{
	struct hconn *c = user;
	if (c->closing)
		return 0;
	if (c->health) {
		c->got_msg = true;
		return 0;
	}
	if (!c->route->stream) {
		/* unary: the one reply waits for the status */
		if (c->got_msg)
			return 0;
		c->got_msg = true;
		if (!encode_msg(c->route->resp, data, len, &c->reply))
			c->got_msg = false;
		return 0;
	}
	if (c->out.len - c->out_off > HTTP_OUT_HIGH)
		return NET_EAGAIN;
	if (!c->chunked) {
		char head[512];
		int n = net_http1_write_head(head, sizeof head, 200, "application/json", -1,
					     c->close_after, HTTP_CORS);
		assert(n > 0);
		c->m->metrics.http_requests[2]++;
		srv_text_add(&c->out, head, (size_t)n);
		c->chunked = true;
	}
	struct srv_text t;
	srv_text_init(&t, HTTP_OUT_MAX);
	srv_text_puts(&t, "{\"result\":");
	if (!encode_msg(c->route->resp, data, len, &t)) {
		srv_text_free(&t);
		return 0;
	}
	srv_text_puts(&t, "}\n");
	char sz[24];
	int k = net_http1_chunk_size(sz, sizeof sz, t.len);
	srv_text_add(&c->out, sz, (size_t)k);
	srv_text_add(&c->out, t.p, t.len);
	srv_text_add(&c->out, "\r\n", 2);
	srv_text_free(&t);
	if (c->out.full)
		conn_close(c);
	else
		flush(c);
	return 0;
}

static void on_call_finish(void *user, int status, const char *message)
{
	struct hconn *c = user;
	struct net_grpc_call *call = c->call;
	bool health = c->health;
	bool got = c->got_msg;
	if (!c->closing) {
		if (health) {
			bool ok = status == 0 && got;
			const char *body = ok ? "{\"health\":\"true\"}" : "{\"health\":\"false\"}";
			respond(c, ok ? 200 : 503, "text/plain; charset=utf-8", body, strlen(body),
				false);
		} else if (c->chunked) {
			if (status != 0) {
				struct srv_text t;
				srv_text_init(&t, 64 << 10);
				srv_text_printf(&t,
						"{\"error\":{\"grpc_code\":%d,\"http_code\":%d,"
						"\"message\":\"",
						status, gw_http_status(status));
				for (const char *p = message; *p != '\0'; p++) {
					if (*p == '"' || *p == '\\')
						srv_text_add(&t, "\\", 1);
					if ((unsigned char)*p >= 0x20)
						srv_text_add(&t, p, 1);
				}
				srv_text_printf(&t, "\",\"http_status\":\"%s\"}}\n",
						net_http1_reason(gw_http_status(status)));
				char sz[24];
				int k = net_http1_chunk_size(sz, sizeof sz, t.len);
				srv_text_add(&c->out, sz, (size_t)k);
				srv_text_add(&c->out, t.p ? t.p : "", t.len);
				srv_text_add(&c->out, "\r\n", 2);
				srv_text_free(&t);
			}
			srv_text_puts(&c->out, NET_HTTP1_LAST_CHUNK);
			flush(c);
		} else if (status != 0) {
			respond_error(c, status, message, false);
		} else if (!got) {
			respond_error(c, 13, "gateway: no response message", false);
		} else if (c->reply.full) {
			respond_error(c, 8, "gateway: response too large", true);
		} else {
			respond(c, 200, "application/json", c->reply.p, c->reply.len, false);
		}
	}
	call_done(c);
	net_grpc_local_release(call); /* allowed from on_finish: see grpc.h */
	flush(c);                     /* closes the connection now if the response asked for it */
	if (!c->in_process && !c->closing)
		process(c);
}

static const struct net_grpc_local_callbacks call_cbs = {
	.on_message = on_call_message,
	.on_finish = on_call_finish,
};

/* Runs a local call with one request message; the reply arrives through call_cbs. */
static void start_call(struct hconn *c, const char *method, const ProtobufCMessage *msg)
{
	size_t n = protobuf_c_message_get_packed_size(msg);
	uint8_t *buf = malloc(n ? n : 1);
	if (buf == NULL) {
		respond_error(c, 13, "out of memory", true);
		return;
	}
	protobuf_c_message_pack(msg, buf);
	c->started_ms = now_ms(c->m);
	(void)net_stream_read_stop(c->s); /* one request at a time */
	/* c->call is set before the handler runs, so a handler that answers from inside start
	 * finds it in on_call_finish */
	int rv = net_grpc_local_start(c->m->grpc, method, &call_cbs, c, &c->call);
	if (rv != 0) {
		free(buf);
		call_done(c);
		const char *svc = method + 1;
		const char *slash = strrchr(svc, '/');
		char msgbuf[160];
		snprintf(msgbuf, sizeof msgbuf, "unknown service %.*s", (int)(slash - svc), svc);
		if (rv == NET_EINVAL)
			respond_error(c, 12, msgbuf, false);
		else
			respond_error(c, 13, "out of memory", true);
		return;
	}
	struct net_grpc_call *call = c->call;
	if (call == NULL) {
		free(buf);
		return; /* finished (and released) from inside start */
	}
	rv = net_grpc_local_send(call, buf, n);
	free(buf);
	if (c->call != call)
		return; /* finished (and released) from inside */
	if (rv == NET_ETOOBIG) {
		net_grpc_local_release(call);
		call_done(c);
		respond_error(c, 8, "grpc: received message larger than max", false);
		return;
	}
	net_grpc_local_half_close(call);
}

/* ---- routes ---- */

static void route_health(struct hconn *c)
{
	/* etcd 3.4: any raised alarm (NOSPACE, CORRUPT) makes the member unhealthy */
	struct kv_alarms al = { 0 };
	bool alarmed = c->m->installing == 0 && kv_alarms_list(c->m->kv, &al) == 0 && al.n > 0;
	kv_alarms_free(&al);
	if (alarmed || c->m->leader == 0) {
		respond_text(c, 503, "{\"health\":\"false\"}", false);
		return;
	}
	/* A linearizable read of one key proves a quorum answers, as etcd's check does. */
	Etcdserverpb__RangeRequest q = ETCDSERVERPB__RANGE_REQUEST__INIT;
	static uint8_t key[] = "health";
	q.key.data = key;
	q.key.len = 6;
	c->health = true;
	start_call(c, "/etcdserverpb.KV/Range", &q.base);
}

static void route_gateway(struct hconn *c, const struct gw_route *r, const uint8_t *body,
			  size_t len)
{
	char err[256];
	ProtobufCMessage *msg = gw_json_decode(r->req, body, len, err, sizeof err);
	if (msg == NULL) {
		respond_error(c, 3, err, false);
		return;
	}
	c->route = r;
	start_call(c, r->method, msg);
	protobuf_c_message_free_unpacked(msg, NULL);
}

static void handle(struct hconn *c, const struct net_http1_request *q)
{
	c->head_only = strcmp(q->method, "HEAD") == 0;
	bool get = strcmp(q->method, "GET") == 0 || c->head_only;
	if (!q->keep_alive)
		c->close_after = true;
	if (strcmp(q->method, "OPTIONS") == 0) {
		respond(c, 200, NULL, "", 0, false);
		return;
	}
	if (strcmp(q->path, "/health") == 0) {
		if (!get) {
			respond_text(c, 405, "Method Not Allowed\n", false);
			return;
		}
		route_health(c);
		return;
	}
	if (strcmp(q->path, "/version") == 0) {
		if (!get) {
			respond_text(c, 405, "Method Not Allowed\n", false);
			return;
		}
		const char *v = "{\"etcdserver\":\"" SRV_SERVER_VERSION
				"\",\"etcdcluster\":\"" SRV_CLUSTER_VERSION "\"}";
		respond(c, 200, "application/json", v, strlen(v), false);
		return;
	}
	if (strcmp(q->path, "/metrics") == 0) {
		if (!get) {
			respond_text(c, 405, "Method Not Allowed\n", false);
			return;
		}
		struct srv_text t;
		srv_text_init(&t, 4u << 20);
		srv_metrics_render(c->m, &t);
		if (t.full)
			respond_text(c, 500, "metrics: out of memory\n", false);
		else
			respond(c, 200, "text/plain; version=0.0.4; charset=utf-8", t.p ? t.p : "",
				t.len, false);
		srv_text_free(&t);
		return;
	}
	const struct gw_route *r = gw_route_find(q->path);
	if (r == NULL) {
		/* etcd's two texts: its gateway's under /v3/, Go's elsewhere */
		respond_text(c, 404,
			     strncmp(q->path, "/v3/", 4) == 0 ? "Not Found\n" : "404 page not found\n",
			     false);
		return;
	}
	if (strcmp(q->method, "POST") != 0) {
		respond_text(c, 405, "Method Not Allowed\n", false);
		return;
	}
	route_gateway(c, r, q->body, (size_t)q->content_length);
}

/* Serves the requests in the input buffer, one at a time. */
static void process(struct hconn *c)
{
	c->in_process = true;
	while (!c->closing && c->call == NULL && !c->close_after && c->in_len > 0) {
		size_t used = 0;
		int rv = net_http1_parse(c->in, c->in_len, c->in_max - NET_HTTP1_MAX_HEAD, c->req,
					 &used);
		if (rv == 0)
			break;
		if (rv < 0) {
			char body[96];
			c->head_only = false;
			snprintf(body, sizeof body, "%d %s\n", -rv, net_http1_reason(-rv));
			c->in_len = 0;
			respond_text(c, -rv, body, true);
			break;
		}
		c->last_ms = now_ms(c->m);
		handle(c, c->req);
		memmove(c->in, c->in + used, c->in_len - used);
		c->in_len -= used;
	}
	c->in_process = false;
}

static void on_read(struct net_stream *s, const uint8_t *buf, size_t len)
{
	struct hconn *c = net_stream_data(s);
	if (c->closing)
		return;
	if (c->in_len == 0)
		c->started_ms = now_ms(c->m); /* a new request's head begins */
	if (len > c->in_max - c->in_len) {
		/* more than a whole request may hold: the head or the body is over its bound */
		c->in_len = 0;
		respond_text(c, 413, "413 Request Entity Too Large\n", true);
		return;
	}
	if (c->in_len + len > c->in_cap) {
		size_t cap = c->in_cap ? c->in_cap : 4096;
		while (cap < c->in_len + len)
			cap *= 2;
		cap = cap < c->in_max ? cap : c->in_max;
		uint8_t *p = realloc(c->in, cap);
		if (p == NULL) {
			conn_close(c);
			return;
		}
		c->in = p;
		c->in_cap = cap;
	}
	memcpy(c->in + c->in_len, buf, len);
	c->in_len += len;
	process(c);
}

static void on_error(struct net_stream *s, int err)
{
	(void)err;
	conn_close(net_stream_data(s));
}

static void on_drained(struct net_stream *s)
{
	struct hconn *c = net_stream_data(s);
	c->blocked = false;
	flush(c);
	if (!c->closing && c->call != NULL && c->out.len - c->out_off <= HTTP_OUT_HIGH / 2)
		net_grpc_local_writable(c->call);
}

static void on_close(struct net_stream *s)
{
	struct hconn *c = net_stream_data(s);
	struct srv_member *m = c->m;
	if (c->call != NULL) {
		struct net_grpc_call *call = c->call;
		c->call = NULL;
		net_grpc_local_release(call); /* cancels the handler's call */
	}
	if (c->prev != NULL)
		c->prev->next = c->next;
	else
		m->http_conns = c->next;
	if (c->next != NULL)
		c->next->prev = c->prev;
	m->n_http_conns--;
	free(c->in);
	free(c->req);
	srv_text_free(&c->out);
	srv_text_free(&c->reply);
	free(c);
	if (m->http_closed != NULL)
		m->http_closed(m);
}

static const struct net_stream_cbs conn_cbs = {
	.on_read = on_read,
	.on_error = on_error,
	.on_drained = on_drained,
	.on_close = on_close,
};

void http_on_connection(void *data, struct net_stream *s, const uint8_t *buf, size_t len)
{
	struct srv_member *m = data;
	if (m->stopping || m->n_http_conns >= HTTP_MAX_CONNS) {
		static const char busy[] = "HTTP/1.1 503 Service Unavailable\r\n"
					   "Content-Length: 0\r\nConnection: close\r\n\r\n";
		net_stream_set_cbs(s, NULL, NULL);
		(void)net_stream_write(s, (const uint8_t *)busy, sizeof busy - 1);
		(void)net_stream_shutdown(s);
		net_stream_close(s);
		return;
	}
	struct hconn *c = calloc(1, sizeof *c);
	struct net_http1_request *req = malloc(sizeof *req);
	if (c == NULL || req == NULL) {
		free(c);
		free(req);
		net_stream_close(s);
		return;
	}
	c->m = m;
	c->s = s;
	c->req = req;
	c->in_max =
		NET_HTTP1_MAX_HEAD + (size_t)m->max_request_bytes + NET_GRPC_ETCD_OVERHEAD_BYTES;
	srv_text_init(&c->out, HTTP_OUT_MAX);
	srv_text_init(&c->reply, HTTP_OUT_MAX);
	c->last_ms = c->started_ms = now_ms(m);
	c->next = m->http_conns;
	if (m->http_conns != NULL)
		m->http_conns->prev = c;
	m->http_conns = c;
	m->n_http_conns++;
	net_stream_set_cbs(s, &conn_cbs, c);
	if (len > 0)
		on_read(s, buf, len);
}

/* Every heartbeat: idle keep-alive connections, slow request heads and unary calls past their
 * time. Cost: one pass over the HTTP connections. */
void http_tick(struct srv_member *m)
{
	uint64_t now = now_ms(m);
	struct hconn *next;
	for (struct hconn *c = m->http_conns; c != NULL; c = next) {
		next = c->next;
		if (c->closing)
			continue;
		if (c->call != NULL) {
			if (c->route != NULL && c->route->stream)
				continue; /* watches last as long as the client wants */
			if (now - c->started_ms > HTTP_CALL_MS) {
				struct net_grpc_call *call = c->call;
				call_done(c);
				net_grpc_local_release(call);
				respond_error(c, 14, "etcdserver: request timed out", true);
			}
			continue;
		}
		if (c->in_len > 0 && now - c->started_ms > HTTP_HEAD_MS) {
			c->in_len = 0;
			respond_text(c, 408, "408 Request Timeout\n", true);
		} else if (c->in_len == 0 && c->out.len == 0 && now - c->last_ms > HTTP_IDLE_MS) {
			conn_close(c);
		}
	}
}

int http_close_all(struct srv_member *m, void (*closed)(struct srv_member *m))
{
	int n = 0;
	m->http_closed = closed;
	for (struct hconn *c = m->http_conns; c != NULL; c = c->next) {
		n++;
		conn_close(c);
	}
	return n;
}

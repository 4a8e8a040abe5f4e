/* client.c: a libcairn client's life: endpoints, the connections with their failover and
 * backoff, the queue of callbacks deferred to the loop, and close. */
#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "client_int.h"

/* ---- small pieces ---- */

const char *cairn_code_name(int code)
{
	static const char *const names[] = {
		"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
		"ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
		"ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
		"UNAUTHENTICATED",
	};
	if (code < 0 || code > 16)
		return "UNKNOWN";
	return names[code];
}

const char *cairn_strerror(int err)
{
	switch (err) {
	case 0: return "success";
	case CAIRN_EINVAL: return "invalid argument";
	case CAIRN_ENOMEM: return "out of memory";
	case CAIRN_ECLOSED: return "client is closing";
	case CAIRN_ELIMIT: return "too many requests in flight";
	case CAIRN_ETLS: return "TLS files could not be loaded";
	default: return "unknown error";
	}
}

size_t cairn_prefix_end(const uint8_t *key, size_t key_len, uint8_t *out)
{
	size_t i = key_len;
	while (i > 0) {
		if (key[i - 1] != 0xff) {
			memcpy(out, key, i);
			out[i - 1] = (uint8_t)(key[i - 1] + 1);
			return i;
		}
		i--;
	}
	out[0] = 0;
	return 1;
}

uint64_t cl_now(const struct cairn_client *c)
{
	return uv_now(c->loop);
}

/* ---- arena ---- */

#define CL_ALIGN(n) (((n) + 15u) & ~(size_t)15u)
#define CL_HDR CL_ALIGN(sizeof(struct cl_arena_block))

static void *arena_pb_alloc(void *data, size_t n)
{
	return cl_arena_alloc(data, n);
}
static void arena_pb_free(void *data, void *p)
{
	(void)data;
	(void)p;
}

void cl_arena_init(struct cl_arena *a)
{
	a->head = a->first = NULL;
	a->pb.alloc = arena_pb_alloc;
	a->pb.free = arena_pb_free;
	a->pb.allocator_data = a;
}

void *cl_arena_alloc(struct cl_arena *a, size_t n)
{
	struct cl_arena_block *b = a->head;
	if (n == 0)
		n = 1;
	n = CL_ALIGN(n);
	if (b == NULL || b->cap - b->used < n) {
		size_t cap = n > CL_ARENA_BLOCK ? n : CL_ARENA_BLOCK;
		if (b == NULL && a->first != NULL && a->first->cap >= n) {
			b = a->first;
			b->used = 0;
		} else {
			b = malloc(CL_HDR + cap);
			if (b == NULL)
				return NULL;
			b->cap = cap;
			b->used = 0;
			b->next = a->head;
			if (a->first == NULL)
				a->first = b;
		}
		a->head = b;
	}
	void *p = (char *)b + CL_HDR + b->used;
	b->used += n;
	return p;
}

void cl_arena_reset(struct cl_arena *a)
{
	struct cl_arena_block *b = a->head;
	while (b != NULL && b != a->first) {
		struct cl_arena_block *next = b->next;
		free(b);
		b = next;
	}
	if (a->first != NULL) {
		a->first->used = 0;
		a->first->next = NULL;
	}
	a->head = a->first;
}

void cl_arena_free(struct cl_arena *a)
{
	cl_arena_reset(a);
	free(a->first);
	a->head = a->first = NULL;
}

/* ---- int64 map ---- */

static size_t map_slot(int64_t key, size_t cap)
{
	uint64_t h = (uint64_t)key * 0x9E3779B97F4A7C15ull;
	return (size_t)(h >> 32) & (cap - 1);
}

static int map_grow(struct cl_map *m)
{
	size_t cap = m->cap ? m->cap * 2 : 16;
	int64_t *keys = calloc(cap, sizeof(*keys));
	void **vals = calloc(cap, sizeof(*vals));
	if (keys == NULL || vals == NULL) {
		free(keys);
		free(vals);
		return CAIRN_ENOMEM;
	}
	for (size_t i = 0; i < m->cap; i++) {
		if (m->vals[i] == NULL)
			continue;
		size_t s = map_slot(m->keys[i], cap);
		while (vals[s] != NULL)
			s = (s + 1) & (cap - 1);
		keys[s] = m->keys[i];
		vals[s] = m->vals[i];
	}
	free(m->keys);
	free(m->vals);
	m->keys = keys;
	m->vals = vals;
	m->cap = cap;
	return 0;
}

int cl_map_put(struct cl_map *m, int64_t key, void *val)
{
	/* Replacing never grows (so it cannot fail). */
	if (m->cap > 0) {
		size_t s = map_slot(key, m->cap);
		while (m->vals[s] != NULL) {
			if (m->keys[s] == key) {
				m->vals[s] = val;
				return 0;
			}
			s = (s + 1) & (m->cap - 1);
		}
	}
	if ((m->n + 1) * 2 > m->cap && map_grow(m) != 0)
		return CAIRN_ENOMEM;
	size_t s = map_slot(key, m->cap);
	while (m->vals[s] != NULL && m->keys[s] != key)
		s = (s + 1) & (m->cap - 1);
	if (m->vals[s] == NULL)
		m->n++;
	m->keys[s] = key;
	m->vals[s] = val;
	return 0;
}

void *cl_map_get(const struct cl_map *m, int64_t key)
{
	if (m->cap == 0)
		return NULL;
	size_t s = map_slot(key, m->cap);
	while (m->vals[s] != NULL) {
		if (m->keys[s] == key)
			return m->vals[s];
		s = (s + 1) & (m->cap - 1);
	}
	return NULL;
}

void *cl_map_del(struct cl_map *m, int64_t key)
{
	if (m->cap == 0)
		return NULL;
	size_t mask = m->cap - 1, s = map_slot(key, m->cap);
	while (m->vals[s] != NULL && m->keys[s] != key)
		s = (s + 1) & mask;
	void *v = m->vals[s];
	if (v == NULL)
		return NULL;
	m->vals[s] = NULL;
	m->n--;
	/* Backward shift: keep every later entry of the probe run reachable. */
	size_t hole = s, j = s;
	for (;;) {
		j = (j + 1) & mask;
		if (m->vals[j] == NULL)
			break;
		size_t home = map_slot(m->keys[j], m->cap);
		bool movable = hole <= j ? (home <= hole || home > j) : (home <= hole && home > j);
		if (movable) {
			m->keys[hole] = m->keys[j];
			m->vals[hole] = m->vals[j];
			m->vals[j] = NULL;
			hole = j;
		}
	}
	return v;
}

void cl_map_free(struct cl_map *m)
{
	free(m->keys);
	free(m->vals);
	m->keys = NULL;
	m->vals = NULL;
	m->cap = m->n = 0;
}

/* ---- deferred callbacks ---- */

static void done_run(uv_timer_t *t)
{
	struct cairn_client *c = t->data;
	c->in_done = true;
	/* Only what is queued now: callbacks may queue more, for the next turn of the loop. */
	struct cl_done *d = c->done_head;
	c->done_head = c->done_tail = NULL;
	while (d != NULL) {
		struct cl_done *next = d->next;
		switch (d->kind) {
		case CL_DONE_REQ: cl_req_done_deferred(CL_CONTAINER(d, struct cl_req, dn)); break;
		case CL_DONE_WATCH: cl_watch_done_deferred(d); break;
		case CL_DONE_KA: cl_ka_done_deferred(d); break;
		default: break;
		}
		d = next;
	}
	c->in_done = false;
	if (c->done_head != NULL)
		uv_timer_start(&c->done_timer, done_run, 0, 0);
	cl_maybe_finish(c);
}

void cl_defer(struct cairn_client *c, struct cl_done *d)
{
	d->next = NULL;
	if (c->done_tail != NULL)
		c->done_tail->next = d;
	else
		c->done_head = d;
	c->done_tail = d;
	if (!c->in_done)
		uv_timer_start(&c->done_timer, done_run, 0, 0);
}

/* ---- connections ---- */

static void conn_attempt(struct cl_conn *cn);

const char *cl_conn_endpoint(const struct cl_conn *cn)
{
	return cn != NULL ? cn->c->endpoints[cn->ep] : "";
}

struct cl_conn *cl_pick(struct cairn_client *c, const struct cl_conn *avoid)
{
	struct cl_conn *fallback = NULL;
	for (size_t i = 0; i < c->n_conns; i++) {
		struct cl_conn *cn = &c->conns[(c->rr + i) % c->n_conns];
		if (cn->gc == NULL || !cn->ready || net_grpc_conn_draining(cn->gc))
			continue;
		if (cn == avoid) {
			fallback = cn;
			continue;
		}
		c->rr = (c->rr + i + 1) % c->n_conns;
		return cn;
	}
	return fallback;
}

static void conn_on_ready(struct net_grpc_conn *gc, void *data)
{
	struct cl_conn *cn = data;
	struct cairn_client *c = cn->c;
	(void)gc;
	if (c->closing)
		return;
	cn->ready = true;
	cn->was_ready = true;
	cn->fails = 0;
	cl_req_flush(c);
	cl_watch_conn_ready(cn);
	cl_ka_kick(c);
}

static void conn_timer_cb(uv_timer_t *t)
{
	struct cl_conn *cn = t->data;
	if (!cn->c->closing)
		conn_attempt(cn);
}

static void conn_on_closed(struct net_grpc_conn *gc, int err, void *data)
{
	struct cl_conn *cn = data;
	struct cairn_client *c = cn->c;
	(void)gc;
	(void)err;
	cn->gc = NULL;
	cn->ready = false;
	assert(c->open_conns > 0);
	c->open_conns--;
	cl_watch_conn_lost(cn);
	cl_ka_conn_lost(cn);
	if (c->closing) {
		cl_maybe_finish(c);
		return;
	}
	/* Next endpoint; try each once at once, then back off while every one fails. */
	cn->ep = (cn->ep + 1) % c->n_endpoints;
	uint64_t delay = 0;
	if (!cn->was_ready) {
		cn->fails++;
		if (cn->fails >= c->n_endpoints) {
			unsigned rounds = cn->fails / (unsigned)c->n_endpoints;
			delay = CL_BACKOFF_MIN_MS;
			for (unsigned i = 1; i < rounds && delay < CL_BACKOFF_MAX_MS; i++)
				delay *= 2;
			if (delay > CL_BACKOFF_MAX_MS)
				delay = CL_BACKOFF_MAX_MS;
		}
	} else {
		cn->fails = 0;
	}
	if (delay == 0)
		conn_attempt(cn);
	else
		uv_timer_start(&cn->timer, conn_timer_cb, delay, 0);
}

static void conn_attempt(struct cl_conn *cn)
{
	struct cairn_client *c = cn->c;
	struct net_grpc_conn_opts o = {0};
	o.connect_timeout_ms = c->dial_timeout_ms;
	o.tls = c->tls;
	o.keepalive_ms = c->keepalive_ms == UINT64_MAX ? 0 : c->keepalive_ms;
	o.keepalive_timeout_ms = c->keepalive_timeout_ms;
	o.max_calls = 1u << 20;
	static const struct net_grpc_conn_cbs cbs = {conn_on_ready, conn_on_closed};
	cn->ready = cn->was_ready = false;
	int rc = net_grpc_conn_open(c->loop, c->endpoints[cn->ep], &o, &cbs, cn, &cn->gc);
	if (rc != 0) {
		cn->gc = NULL;
		cn->fails++;
		cn->ep = (cn->ep + 1) % c->n_endpoints;
		uv_timer_start(&cn->timer, conn_timer_cb, CL_BACKOFF_MAX_MS, 0);
		return;
	}
	c->open_conns++;
}

/* ---- new and close ---- */

static int norm_endpoint(const char *in, char **out)
{
	size_t n = strlen(in);
	if (n == 0 || n > 1024)
		return CAIRN_EINVAL;
	bool scheme = strncmp(in, "http://", 7) == 0 || strncmp(in, "https://", 8) == 0;
	const char *rest = scheme ? strstr(in, "://") + 3 : in;
	if (*rest == '\0' || strchr(rest, ':') == NULL)
		return CAIRN_EINVAL;
	if (strstr(in, "://") != NULL && !scheme)
		return CAIRN_EINVAL;
	size_t cap = n + 8;
	char *s = malloc(cap);
	if (s == NULL)
		return CAIRN_ENOMEM;
	memcpy(s, scheme ? "" : "http://", scheme ? 1 : 8);
	strcat(s, in);
	/* No trailing slash: the URL is host:port only. */
	size_t l = strlen(s);
	if (s[l - 1] == '/')
		s[l - 1] = '\0';
	*out = s;
	return 0;
}

/* The last close of all: the connections' own handles were closed in an earlier turn of the
 * loop than this one (libuv runs close callbacks queued during a close callback in the next
 * turn), so their TLS sessions are gone and the TLS context can go too. */
static void reaper_closed(uv_handle_t *h)
{
	struct cairn_client *c = h->data;
	void (*cb)(struct cairn_client *, void *) = c->close_cb;
	void *data = c->close_data;
	if (cb != NULL)
		cb(c, data);
	for (size_t i = 0; i < c->n_endpoints; i++)
		free(c->endpoints[i]);
	free(c->endpoints);
	for (size_t i = 0; i < c->n_conns; i++)
		cl_map_free(&c->conns[i].wmap);
	free(c->conns);
	cl_arena_free(&c->dec);
	cl_arena_free(&c->enc);
	cl_req_cache_free(c);
	cl_map_free(&c->kmap);
	net_tls_ctx_free(c->tls);
	free(c);
}

static void client_handle_closed(struct cairn_client *c)
{
	c->open_handles--;
	if (c->open_handles > 0)
		return;
	uv_close((uv_handle_t *)&c->reaper, reaper_closed);
}

static void handle_closed(uv_handle_t *h)
{
	client_handle_closed(h->data);
}

static void conn_timer_closed(uv_handle_t *h)
{
	client_handle_closed(((struct cl_conn *)h->data)->c);
}

void cl_maybe_finish(struct cairn_client *c)
{
	if (!c->closing || c->in_done || c->done_head != NULL || c->open_conns > 0 ||
	    !cl_list_empty(&c->sconns) || c->open_handles == 0 ||
	    uv_is_closing((uv_handle_t *)&c->done_timer))
		return;
	uv_close((uv_handle_t *)&c->sweep, handle_closed);
	uv_close((uv_handle_t *)&c->done_timer, handle_closed);
	uv_close((uv_handle_t *)&c->wtimer, handle_closed);
	uv_close((uv_handle_t *)&c->ktimer, handle_closed);
	for (size_t i = 0; i < c->n_conns; i++)
		uv_close((uv_handle_t *)&c->conns[i].timer, conn_timer_closed);
}

static void client_free_early(struct cairn_client *c)
{
	if (c->endpoints != NULL) {
		for (size_t i = 0; i < c->n_endpoints; i++)
			free(c->endpoints[i]);
	}
	free(c->endpoints);
	free(c->conns);
	net_tls_ctx_free(c->tls);
	free(c);
}

int cairn_client_new(uv_loop_t *loop, const struct cairn_config *cfg, struct cairn_client **out)
{
	if (out != NULL)
		*out = NULL;
	if (loop == NULL || cfg == NULL || out == NULL || cfg->endpoints == NULL ||
	    cfg->n_endpoints == 0 || cfg->n_endpoints > CL_MAX_ENDPOINTS ||
	    cfg->connections > CL_MAX_CONNECTIONS)
		return CAIRN_EINVAL;
	struct cairn_client *c = calloc(1, sizeof(*c));
	if (c == NULL)
		return CAIRN_ENOMEM;
	c->loop = loop;
	c->n_endpoints = cfg->n_endpoints;
	c->endpoints = calloc(cfg->n_endpoints, sizeof(char *));
	if (c->endpoints == NULL) {
		client_free_early(c);
		return CAIRN_ENOMEM;
	}
	bool https = false;
	for (size_t i = 0; i < cfg->n_endpoints; i++) {
		if (cfg->endpoints[i] == NULL) {
			client_free_early(c);
			return CAIRN_EINVAL;
		}
		int rc = norm_endpoint(cfg->endpoints[i], &c->endpoints[i]);
		if (rc != 0) {
			client_free_early(c);
			return rc;
		}
		if (strncmp(c->endpoints[i], "https://", 8) == 0)
			https = true;
	}
	c->n_conns = cfg->connections ? cfg->connections : 1;
	c->dial_timeout_ms = cfg->dial_timeout_ms ? cfg->dial_timeout_ms : 5000;
	c->request_timeout_ms = cfg->request_timeout_ms ? cfg->request_timeout_ms : 5000;
	c->keepalive_ms = cfg->keepalive_ms ? cfg->keepalive_ms : 10000;
	c->keepalive_timeout_ms = cfg->keepalive_timeout_ms ? cfg->keepalive_timeout_ms : 3000;
	c->max_inflight = cfg->max_inflight ? cfg->max_inflight : 65536;
	if ((cfg->cert_file == NULL) != (cfg->key_file == NULL)) {
		client_free_early(c);
		return CAIRN_EINVAL;
	}
	if (https) {
		static const char *const alpn[] = {"h2"};
		struct net_tls_config tc = {0};
		tc.role = NET_TLS_CLIENT;
		tc.cert_file = cfg->cert_file;
		tc.key_file = cfg->key_file;
		tc.trusted_ca_file = cfg->ca_file;
		tc.insecure_skip_verify = cfg->insecure_skip_verify;
		tc.alpn = alpn;
		tc.n_alpn = 1;
		int rc = net_tls_ctx_new(&tc, &c->tls, NULL, 0);
		if (rc != 0) {
			client_free_early(c);
			return rc == NET_ENOMEM ? CAIRN_ENOMEM : CAIRN_ETLS;
		}
	}
	c->conns = calloc(c->n_conns, sizeof(*c->conns));
	if (c->conns == NULL) {
		client_free_early(c);
		return CAIRN_ENOMEM;
	}
	cl_list_init(&c->reqs);
	cl_list_init(&c->waiting);
	cl_list_init(&c->wpending);
	cl_list_init(&c->kas);
	cl_list_init(&c->sconns);
	cl_arena_init(&c->dec);
	cl_arena_init(&c->enc);
	c->wbackoff = CL_BACKOFF_MIN_MS;
	uv_timer_init(loop, &c->sweep);
	uv_timer_init(loop, &c->done_timer);
	uv_timer_init(loop, &c->wtimer);
	uv_timer_init(loop, &c->ktimer);
	uv_timer_init(loop, &c->reaper);
	c->reaper.data = c;
	c->sweep.data = c->done_timer.data = c->wtimer.data = c->ktimer.data = c;
	c->open_handles = 4 + c->n_conns;
	for (size_t i = 0; i < c->n_conns; i++) {
		struct cl_conn *cn = &c->conns[i];
		cn->c = c;
		cn->index = i;
		cn->ep = i % c->n_endpoints;
		cl_list_init(&cn->watches);
		uv_timer_init(loop, &cn->timer);
		cn->timer.data = cn;
	}
	for (size_t i = 0; i < c->n_conns; i++)
		conn_attempt(&c->conns[i]);
	*out = c;
	return 0;
}

void cairn_client_close(struct cairn_client *c, void (*close_cb)(struct cairn_client *c, void *data),
			void *data)
{
	if (c == NULL || c->closing)
		return;
	c->closing = true;
	c->close_cb = close_cb;
	c->close_data = data;
	uv_timer_stop(&c->sweep);
	uv_timer_stop(&c->wtimer);
	uv_timer_stop(&c->ktimer);
	cl_req_close_all(c);
	cl_watch_close_all(c);
	cl_ka_close_all(c);
	for (size_t i = 0; i < c->n_conns; i++) {
		uv_timer_stop(&c->conns[i].timer);
		if (c->conns[i].gc != NULL)
			net_grpc_conn_close(c->conns[i].gc);
	}
	/* close_cb must come from the loop even when nothing was pending. */
	uv_timer_start(&c->done_timer, done_run, 0, 0);
}

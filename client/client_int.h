/* client_int.h: libcairn's private structures, shared by client.c (connections, failover,
 * close), calls.c (unary requests), watch.c and lease.c (the two shared streams). */
#ifndef CAIRN_CLIENT_INT_H
#define CAIRN_CLIENT_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include "cairn.h"
#include "grpc_client.h"
#include "tls.h"

/* Bounds. */
#define CL_MAX_CONNECTIONS 256
#define CL_MAX_ENDPOINTS 256
#define CL_MAX_KEY ((size_t)1 << 20)       /* etcd's own key limit is far below this */
#define CL_MAX_REQUEST ((size_t)64 << 20)  /* bytes of one encoded request */
#define CL_MAX_ATTEMPTS 64                 /* sends of one unary request, retries included */
#define CL_BACKOFF_MIN_MS 50
#define CL_BACKOFF_MAX_MS 1000
#define CL_SWEEP_MS 25                     /* waiting requests: deadline and retry check */
#define CL_KA_TICK_MS 100                  /* keepalive scheduler */
#define CL_KA_MIN_INTERVAL_MS 500
#define CL_RESP_INLINE 128                 /* a response this small is kept in the request */
#define CL_ARENA_BLOCK ((size_t)64 << 10)
#define CL_REQ_SLOT 2048                   /* requests this small reuse freed allocations */
#define CL_REQ_CACHE 1024                  /* ... of which at most this many are kept */

/* Intrusive doubly linked list with a sentinel head. */
struct cl_link {
	struct cl_link *prev, *next;
};

static inline void cl_list_init(struct cl_link *h)
{
	h->prev = h->next = h;
}
static inline bool cl_list_empty(const struct cl_link *h)
{
	return h->next == h;
}
static inline void cl_list_push(struct cl_link *h, struct cl_link *l)
{
	l->prev = h->prev;
	l->next = h;
	h->prev->next = l;
	h->prev = l;
}
static inline void cl_list_del(struct cl_link *l)
{
	l->prev->next = l->next;
	l->next->prev = l->prev;
	l->prev = l->next = l;
}
#define CL_CONTAINER(ptr, type, member) ((type *)(void *)((char *)(ptr)-offsetof(type, member)))

/* A bump allocator handed to protobuf-c: unpack allocates many small pieces, all freed at once
 * when the callback that used them returns. */
struct cl_arena_block {
	struct cl_arena_block *next;
	size_t cap, used;
	/* data follows, 16-byte aligned */
};
struct cl_arena {
	struct cl_arena_block *head; /* current block first */
	struct cl_arena_block *first; /* kept across resets */
	ProtobufCAllocator pb;
};
void cl_arena_init(struct cl_arena *a);
void *cl_arena_alloc(struct cl_arena *a, size_t n);
void cl_arena_reset(struct cl_arena *a);
void cl_arena_free(struct cl_arena *a);

/* Objects whose callback is deferred to the loop (closing, cancelling, early failures). */
enum cl_done_kind { CL_DONE_REQ = 1, CL_DONE_WATCH = 2, CL_DONE_KA = 3 };
struct cl_done {
	struct cl_done *next;
	int kind;
};

/* int64 -> pointer, open addressing with linear probing (watch ids of one stream). */
struct cl_map {
	int64_t *keys;
	void **vals;
	size_t cap, n; /* cap: power of two or 0 */
};
int cl_map_put(struct cl_map *m, int64_t key, void *val);
void *cl_map_get(const struct cl_map *m, int64_t key);
void *cl_map_del(struct cl_map *m, int64_t key);
void cl_map_free(struct cl_map *m);

struct cl_conn {
	struct cairn_client *c;
	size_t index;
	size_t ep;               /* endpoint index it uses now */
	struct net_grpc_conn *gc; /* NULL between attempts */
	bool ready;
	bool was_ready;          /* this attempt got connected */
	unsigned fails;          /* attempts in a row that never got connected */
	uv_timer_t timer;        /* backoff */
	/* The Watch stream of this connection and the watches on it. */
	struct net_grpc_ccall *wcall;
	struct cl_link watches;   /* every watch on this stream */
	struct cairn_watch *fifo_head, *fifo_tail; /* creates awaiting "created", in order */
	struct cl_map wmap;       /* watch id -> watch */
};

enum cl_kind {
	CL_RANGE, CL_PUT, CL_DELETE, CL_TXN, CL_COMPACT, CL_GRANT, CL_REVOKE, CL_TTL, CL_LEASES,
	CL_MEMBERS, CL_STATUS,
};

struct cl_sconn; /* a Status connection of its own */

struct cl_req {
	struct cl_done dn;
	struct cl_link link;     /* c->reqs, or c->waiting */
	struct cairn_client *c;
	struct net_grpc_ccall *call;
	struct cl_conn *conn;    /* where it was sent last */
	const char *ep;          /* its endpoint then (c->endpoints[], stable) */
	struct cl_sconn *sc;     /* cairn_status_get of a named endpoint */
	int kind;
	bool waiting;            /* on c->waiting */
	bool maybe_applied;      /* a send may have reached the server */
	bool got_resp;
	bool slot;               /* allocated with CL_REQ_SLOT bytes behind, reusable */
	int attempts;
	int dcode;               /* deferred completion */
	const char *dmsg;
	uint64_t deadline;       /* loop time, ms */
	uint64_t not_before;     /* waiting: retry no sooner */
	void (*cb)(void);        /* the user's callback, cast by kind */
	void *data;
	uint8_t *resp;           /* resp_inline or malloc'd */
	size_t resp_len;
	uint8_t resp_inline[CL_RESP_INLINE];
	size_t len;
	uint8_t buf[];           /* the encoded request */
};

struct cairn_client {
	uv_loop_t *loop;
	char **endpoints;
	size_t n_endpoints;
	size_t n_conns;
	struct cl_conn *conns;
	size_t rr;               /* next connection for a request */
	uint64_t dial_timeout_ms, request_timeout_ms, keepalive_ms, keepalive_timeout_ms;
	size_t max_inflight, inflight;
	struct net_tls_ctx *tls;

	struct cl_link reqs;     /* sent or deferred requests */
	struct cl_link waiting;  /* requests without a connection yet */
	uv_timer_t sweep;

	struct cl_done *done_head, *done_tail;
	uv_timer_t done_timer;
	bool in_done;

	/* Watches without a stream (new, or their stream broke). */
	struct cl_link wpending;
	uv_timer_t wtimer;
	uint64_t wbackoff;

	/* Keepalives: one LeaseKeepAlive stream for all of them. */
	struct cl_link kas;
	struct cl_map kmap;      /* lease id -> keepalive (lease.c) */
	struct net_grpc_ccall *kcall;
	struct cl_conn *kconn;
	size_t krr;
	uv_timer_t ktimer;
	bool ktimer_on;

	struct cl_link sconns;   /* cairn_status_get connections */

	struct cl_req *req_cache; /* freed slot-sized requests, linked through dn.next */
	size_t n_req_cache;
	struct cl_arena dec;     /* decoded responses, reset after each callback */
	struct cl_arena enc;     /* request messages while encoding */

	bool closing;
	size_t open_conns;       /* net_grpc_conns whose on_closed is still due */
	size_t open_handles;     /* uv handles not closed yet, reaper apart */
	uv_timer_t reaper;       /* closed last, see reaper_closed() */
	void (*close_cb)(struct cairn_client *c, void *data);
	void *close_data;
};

/* client.c */
struct cl_conn *cl_pick(struct cairn_client *c, const struct cl_conn *avoid);
void cl_defer(struct cairn_client *c, struct cl_done *d);
uint64_t cl_now(const struct cairn_client *c);
const char *cl_conn_endpoint(const struct cl_conn *cn);
void cl_maybe_finish(struct cairn_client *c);

/* calls.c */
void cl_req_flush(struct cairn_client *c);
void cl_req_done_deferred(struct cl_req *r);
void cl_req_sweep(struct cairn_client *c);
void cl_req_close_all(struct cairn_client *c);
void cl_req_cache_free(struct cairn_client *c);

/* watch.c */
void cl_watch_conn_ready(struct cl_conn *cn);
void cl_watch_conn_lost(struct cl_conn *cn);
void cl_watch_done_deferred(struct cl_done *d);
void cl_watch_close_all(struct cairn_client *c);
void cl_watch_timer_cb(uv_timer_t *t);

/* lease.c */
void cl_ka_conn_lost(struct cl_conn *cn);
void cl_ka_done_deferred(struct cl_done *d);
void cl_ka_close_all(struct cairn_client *c);
void cl_ka_timer_cb(uv_timer_t *t);
void cl_ka_kick(struct cairn_client *c);

/* Shared decoding helpers (calls.c). */
void cl_header(struct cairn_header *out, const void *pb_header);
const struct cairn_kv *cl_kvs(struct cairn_client *c, void *const *pbkvs, size_t n);
void cl_kv(struct cairn_kv *out, const void *pbkv);

#endif /* CAIRN_CLIENT_INT_H */

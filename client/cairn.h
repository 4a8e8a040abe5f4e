/* cairn.h: libcairn, the C client of Cairn (and of any etcd v3 server), on libuv.
 *
 * It speaks the etcd v3 gRPC API over HTTP/2: KV (Range, Put, DeleteRange, Txn, Compact), Watch,
 * Lease (Grant, Revoke, KeepAlive, TimeToLive, Leases), Cluster.MemberList and Maintenance.Status,
 * plus a helper that follows node liveness under /cairn/members/. Link with `pkg-config --cflags
 * --libs cairn`.
 *
 * THREADS. A client belongs to the libuv loop it was made with. Every function must be called on
 * that loop's thread, and every callback runs there, from inside uv_run(). Nothing is thread-safe;
 * use one client per loop (several clients may share a loop). No function blocks.
 *
 * OWNERSHIP.
 *   - Arguments (keys, values, options, arrays of compares and ops) are borrowed for the duration
 *     of the call only: they are encoded before it returns. Strings in struct cairn_config are
 *     copied by cairn_client_new().
 *   - Results given to a callback (struct cairn_*_result, cairn_status messages, kvs, events)
 *     are owned by the library and valid only until the callback returns: copy what you keep.
 *   - A callback runs exactly once for every request that cairn_*() accepted (returned 0), even
 *     when the client closes first (status CAIRN_CANCELLED then). It never runs from inside the
 *     cairn_*() call that started the request.
 *   - Watches, keepalives and member followers are handles: they live until cancelled/stopped by
 *     the caller, or until the client closes; their final callback says so (see each).
 *   - cairn_client_close() ends everything; close_cb runs once no callback of the client is left
 *     to run, and the client's memory is gone after it returns.
 *
 * ENDPOINTS AND FAILOVER. The client keeps `connections` HTTP/2 connections (default 1). Each
 * connection starts at a different endpoint (round robin) and, when its connection fails or the
 * server says it is going away, moves to the next endpoint, with a backoff from 50 ms doubling to
 * 1 s while every endpoint fails. Requests go to the connections in turn.
 *   - A request that was never sent, or that the server refused unprocessed, is sent again on
 *     another connection within its deadline.
 *   - Range, MemberList, Status, TimeToLive and Leases are also retried after UNAVAILABLE (they
 *     change nothing). Put, DeleteRange, Txn, Compact, Grant and Revoke are not: their callback
 *     gets the error, and status->maybe_applied says the write may have happened.
 *   - Watches and keepalives reconnect by themselves (see cairn_watch, cairn_lease_keepalive).
 *
 * ERRORS. Every callback gets a struct cairn_status: code 0 is success; otherwise a gRPC status
 * code (enum cairn_code) and the server's message, byte for byte (e.g. "etcdserver: requested
 * lease not found", "etcdserver: mvcc: required revision has been compacted"). Functions that
 * start a request return 0 or a negative CAIRN_E* code (nothing started then). */
#ifndef CAIRN_CLIENT_CAIRN_H
#define CAIRN_CLIENT_CAIRN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(CAIRN_CLIENT_BUILD)
#define CAIRN_EXPORT __attribute__((visibility("default")))
#else
#define CAIRN_EXPORT
#endif

/* Negative returns of the functions that start something. */
enum {
	CAIRN_EINVAL = -1,  /* bad argument: NULL where not allowed, key empty, size over a limit */
	CAIRN_ENOMEM = -2,  /* allocation failed */
	CAIRN_ECLOSED = -3, /* the client is closing */
	CAIRN_ELIMIT = -4,  /* too many requests in flight (max_inflight) */
	CAIRN_ETLS = -5,    /* a TLS file could not be loaded (cairn_client_new) */
};

/* gRPC status codes (the numbers are the wire values). */
enum cairn_code {
	CAIRN_OK = 0,
	CAIRN_CANCELLED = 1,
	CAIRN_UNKNOWN = 2,
	CAIRN_INVALID_ARGUMENT = 3,
	CAIRN_DEADLINE_EXCEEDED = 4,
	CAIRN_NOT_FOUND = 5,
	CAIRN_ALREADY_EXISTS = 6,
	CAIRN_PERMISSION_DENIED = 7,
	CAIRN_RESOURCE_EXHAUSTED = 8,
	CAIRN_FAILED_PRECONDITION = 9,
	CAIRN_ABORTED = 10,
	CAIRN_OUT_OF_RANGE = 11,
	CAIRN_UNIMPLEMENTED = 12,
	CAIRN_INTERNAL = 13,
	CAIRN_UNAVAILABLE = 14,
	CAIRN_DATA_LOSS = 15,
	CAIRN_UNAUTHENTICATED = 16,
};

/* "UNAVAILABLE" for 14 and so on; "UNKNOWN" outside 0-16. */
CAIRN_EXPORT const char *cairn_code_name(int code);
/* A message for a negative CAIRN_E* return. */
CAIRN_EXPORT const char *cairn_strerror(int err);

struct cairn_status {
	int code;            /* enum cairn_code; 0: success */
	const char *message; /* "" on success */
	/* For writes that failed: true when the request may have been applied anyway (it was sent
	 * and no answer came: connection lost, deadline). false when it certainly was not. */
	bool maybe_applied;
	const char *endpoint; /* the endpoint that answered or failed, "" if none was reached */
};

struct cairn_config {
	const char *const *endpoints; /* "http://127.0.0.1:2379", "https://10.0.0.1:2379"; required */
	size_t n_endpoints;
	size_t connections;           /* HTTP/2 connections kept [1] */
	uint64_t dial_timeout_ms;     /* TCP + TLS per attempt [5000] */
	uint64_t request_timeout_ms;  /* default deadline of every unary request [5000] */
	uint64_t keepalive_ms;        /* HTTP/2 PING when idle this long [10000; UINT64_MAX: off] */
	uint64_t keepalive_timeout_ms; /* [3000] */
	size_t max_inflight;          /* unary requests in flight per client [65536] */
	/* TLS for https:// endpoints. ca_file NULL: the system's roots. cert_file/key_file: a client
	 * certificate, for servers run with --client-cert-auth. */
	const char *ca_file;
	const char *cert_file;
	const char *key_file;
	bool insecure_skip_verify;
};

struct cairn_client;

/* Makes a client on `loop` and starts connecting. Returns 0 and *out, or CAIRN_EINVAL (no
 * endpoint, a bad URL, https without any TLS setting possible), CAIRN_ETLS (TLS files),
 * CAIRN_ENOMEM. */
CAIRN_EXPORT int cairn_client_new(uv_loop_t *loop, const struct cairn_config *cfg,
				  struct cairn_client **out);

/* Ends every request, watch and keepalive (their callbacks run with CAIRN_CANCELLED, from the
 * loop, not from inside this call), closes the connections, then runs close_cb (may be NULL).
 * Idempotent. */
CAIRN_EXPORT void cairn_client_close(struct cairn_client *c,
				     void (*close_cb)(struct cairn_client *c, void *data),
				     void *data);

/* ---- results ---- */

struct cairn_header {
	uint64_t cluster_id;
	uint64_t member_id;
	int64_t revision;
	uint64_t raft_term;
};

struct cairn_kv {
	const uint8_t *key;
	size_t key_len;
	const uint8_t *value;
	size_t value_len;
	int64_t create_revision;
	int64_t mod_revision;
	int64_t version;
	int64_t lease;
};

/* ---- KV ---- */

enum cairn_sort_order { CAIRN_SORT_NONE = 0, CAIRN_SORT_ASCEND = 1, CAIRN_SORT_DESCEND = 2 };
enum cairn_sort_target {
	CAIRN_SORT_KEY = 0,
	CAIRN_SORT_VERSION = 1,
	CAIRN_SORT_CREATE = 2,
	CAIRN_SORT_MOD = 3,
	CAIRN_SORT_VALUE = 4,
};

/* A key range as etcd has it: range_end NULL means the single key; range_end "\0" (length 1)
 * means every key >= key; otherwise [key, range_end). cairn_prefix_end() computes a prefix's
 * range_end. */
struct cairn_range_opts {
	const uint8_t *range_end;
	size_t range_end_len;
	int64_t limit;        /* 0: no limit */
	int64_t revision;     /* 0: the newest */
	bool serializable;    /* read the member's local state, without a ReadIndex round */
	bool keys_only;
	bool count_only;
	int sort_order;       /* enum cairn_sort_order */
	int sort_target;      /* enum cairn_sort_target */
	int64_t min_mod_revision, max_mod_revision;
	int64_t min_create_revision, max_create_revision;
	uint64_t timeout_ms;  /* 0: the client's request_timeout_ms */
};

struct cairn_range_result {
	struct cairn_header header;
	const struct cairn_kv *kvs;
	size_t n_kvs;
	bool more;
	int64_t count;
};

struct cairn_put_opts {
	int64_t lease;
	bool prev_kv;
	bool ignore_value;
	bool ignore_lease;
	uint64_t timeout_ms;
};

struct cairn_put_result {
	struct cairn_header header;
	const struct cairn_kv *prev_kv; /* NULL unless asked for and the key existed */
};

struct cairn_delete_opts {
	const uint8_t *range_end;
	size_t range_end_len;
	bool prev_kv;
	uint64_t timeout_ms;
};

struct cairn_delete_result {
	struct cairn_header header;
	int64_t deleted;
	const struct cairn_kv *prev_kvs;
	size_t n_prev_kvs;
};

/* Writes into `out` (at least key_len bytes) the range_end covering every key with prefix `key`
 * and returns its length; an all-0xff prefix (or an empty one) gives "\0", length 1. */
CAIRN_EXPORT size_t cairn_prefix_end(const uint8_t *key, size_t key_len, uint8_t *out);

typedef void (*cairn_range_cb)(void *data, const struct cairn_status *st,
			       const struct cairn_range_result *res);
typedef void (*cairn_put_cb)(void *data, const struct cairn_status *st,
			     const struct cairn_put_result *res);
typedef void (*cairn_delete_cb)(void *data, const struct cairn_status *st,
				const struct cairn_delete_result *res);

/* `res` is NULL when st->code != 0. opts may be NULL (defaults). */
CAIRN_EXPORT int cairn_range(struct cairn_client *c, const uint8_t *key, size_t key_len,
			     const struct cairn_range_opts *opts, cairn_range_cb cb, void *data);
CAIRN_EXPORT int cairn_put(struct cairn_client *c, const uint8_t *key, size_t key_len,
			   const uint8_t *value, size_t value_len, const struct cairn_put_opts *opts,
			   cairn_put_cb cb, void *data);
CAIRN_EXPORT int cairn_delete(struct cairn_client *c, const uint8_t *key, size_t key_len,
			      const struct cairn_delete_opts *opts, cairn_delete_cb cb, void *data);

/* ---- Txn ---- */

enum cairn_cmp_result { CAIRN_CMP_EQUAL = 0, CAIRN_CMP_GREATER = 1, CAIRN_CMP_LESS = 2,
			CAIRN_CMP_NOT_EQUAL = 3 };
enum cairn_cmp_target { CAIRN_CMP_VERSION = 0, CAIRN_CMP_CREATE = 1, CAIRN_CMP_MOD = 2,
			CAIRN_CMP_VALUE = 3, CAIRN_CMP_LEASE = 4 };

struct cairn_compare {
	int result; /* enum cairn_cmp_result */
	int target; /* enum cairn_cmp_target */
	const uint8_t *key;
	size_t key_len;
	const uint8_t *range_end; /* NULL: the single key */
	size_t range_end_len;
	int64_t number;           /* version, create/mod revision or lease, by target */
	const uint8_t *value;     /* CAIRN_CMP_VALUE */
	size_t value_len;
};

enum cairn_op_type { CAIRN_OP_RANGE = 0, CAIRN_OP_PUT = 1, CAIRN_OP_DELETE = 2 };

struct cairn_op {
	int type; /* enum cairn_op_type */
	const uint8_t *key;
	size_t key_len;
	const uint8_t *value; /* PUT */
	size_t value_len;
	const uint8_t *range_end; /* RANGE, DELETE; NULL: the single key */
	size_t range_end_len;
	struct cairn_range_opts range; /* RANGE: limit, revision, serializable, keys_only ... */
	int64_t lease;                 /* PUT */
	bool prev_kv;                  /* PUT, DELETE */
};

struct cairn_txn {
	const struct cairn_compare *compare;
	size_t n_compare;
	const struct cairn_op *success;
	size_t n_success;
	const struct cairn_op *failure;
	size_t n_failure;
	uint64_t timeout_ms;
};

struct cairn_op_result {
	int type; /* enum cairn_op_type */
	union {
		struct cairn_range_result range;
		struct cairn_put_result put;
		struct cairn_delete_result del;
	} u;
};

struct cairn_txn_result {
	struct cairn_header header;
	bool succeeded;
	const struct cairn_op_result *results; /* of the branch taken, in order */
	size_t n_results;
};

typedef void (*cairn_txn_cb)(void *data, const struct cairn_status *st,
			     const struct cairn_txn_result *res);
CAIRN_EXPORT int cairn_txn(struct cairn_client *c, const struct cairn_txn *txn, cairn_txn_cb cb,
			   void *data);

/* Compaction up to `revision`; physical: answer once the space is reclaimed. */
typedef void (*cairn_header_cb)(void *data, const struct cairn_status *st,
				const struct cairn_header *header);
CAIRN_EXPORT int cairn_compact(struct cairn_client *c, int64_t revision, bool physical,
			       cairn_header_cb cb, void *data);

/* ---- Watch ----
 *
 * A watch follows a key or range from start_revision (0: from now). The library keeps the
 * revision of the last event delivered; when the stream breaks (connection lost, member gone,
 * leader changed), it opens the watch again on the next connection from that revision + 1, so the
 * callback sees every event exactly once and in order, across reconnects. The watches of a client
 * share one Watch stream per connection, as etcd's clients do.
 *
 * The callback receives batches of events. It runs with `ev->canceled` true exactly once at the
 * end: after cairn_watch_cancel() (code CAIRN_CANCELLED), when the client closes, or when the
 * server cancels it for good, e.g. start revision compacted (compact_revision set, the message
 * "etcdserver: mvcc: required revision has been compacted"). The handle is freed after that
 * callback returns. */

enum cairn_event_type { CAIRN_EVENT_PUT = 0, CAIRN_EVENT_DELETE = 1 };

struct cairn_event {
	int type; /* enum cairn_event_type */
	struct cairn_kv kv;
	const struct cairn_kv *prev_kv; /* NULL unless prev_kv was asked and existed */
};

struct cairn_watch_opts {
	const uint8_t *range_end;
	size_t range_end_len;
	int64_t start_revision;
	bool prev_kv;
	bool progress_notify;
	bool no_put;
	bool no_delete;
};

struct cairn_watch_batch {
	struct cairn_header header;
	const struct cairn_event *events;
	size_t n_events;
	bool canceled;            /* the last callback of this watch */
	int64_t compact_revision; /* set when canceled because the revision was compacted */
	struct cairn_status status; /* why it was canceled (code 0 for a plain progress batch) */
};

struct cairn_watch;
typedef void (*cairn_watch_cb)(void *data, struct cairn_watch *w,
			       const struct cairn_watch_batch *batch);

CAIRN_EXPORT int cairn_watch(struct cairn_client *c, const uint8_t *key, size_t key_len,
			     const struct cairn_watch_opts *opts, cairn_watch_cb cb, void *data,
			     struct cairn_watch **out);
/* Stops the watch: its final callback (canceled, CAIRN_CANCELLED) runs later from the loop. */
CAIRN_EXPORT void cairn_watch_cancel(struct cairn_watch *w);
/* The revision the watch has seen up to (events and progress notifications). */
CAIRN_EXPORT int64_t cairn_watch_revision(const struct cairn_watch *w);

/* ---- Lease ---- */

struct cairn_lease_result {
	struct cairn_header header;
	int64_t id;
	int64_t ttl;          /* granted or remaining TTL, seconds; -1: expired or not found */
	int64_t granted_ttl;  /* TimeToLive */
	const struct cairn_kv *keys; /* TimeToLive with keys: key and key_len set only */
	size_t n_keys;
	const int64_t *leases; /* Leases: every id */
	size_t n_leases;
};

typedef void (*cairn_lease_cb)(void *data, const struct cairn_status *st,
			       const struct cairn_lease_result *res);

/* id 0: the server picks one. */
CAIRN_EXPORT int cairn_lease_grant(struct cairn_client *c, int64_t ttl, int64_t id,
				   cairn_lease_cb cb, void *data);
CAIRN_EXPORT int cairn_lease_revoke(struct cairn_client *c, int64_t id, cairn_lease_cb cb,
				    void *data);
CAIRN_EXPORT int cairn_lease_ttl(struct cairn_client *c, int64_t id, bool keys, cairn_lease_cb cb,
				 void *data);
CAIRN_EXPORT int cairn_lease_list(struct cairn_client *c, cairn_lease_cb cb, void *data);

/* Keeps lease `id` alive: a keepalive every TTL/3 (at least every 500 ms for short TTLs) over a
 * LeaseKeepAlive stream shared by the client's keepalives, reopened on another connection when it
 * breaks. The callback runs after each answer with the TTL (res->ttl > 0), and finally once with
 * `final` true: the lease expired or was revoked (res->ttl == -1, code CAIRN_NOT_FOUND and
 * "etcdserver: requested lease not found"), or no answer came before the lease's TTL ran out
 * (CAIRN_DEADLINE_EXCEEDED: the lease must be presumed gone), or cairn_lease_keepalive_stop()
 * or the client's close (CAIRN_CANCELLED). The handle is freed after the final callback. */
struct cairn_keepalive;
typedef void (*cairn_keepalive_cb)(void *data, struct cairn_keepalive *ka,
				   const struct cairn_status *st,
				   const struct cairn_lease_result *res, bool final);
CAIRN_EXPORT int cairn_lease_keepalive(struct cairn_client *c, int64_t id, cairn_keepalive_cb cb,
				       void *data, struct cairn_keepalive **out);
CAIRN_EXPORT void cairn_lease_keepalive_stop(struct cairn_keepalive *ka);

/* ---- Cluster and Maintenance ---- */

struct cairn_member {
	uint64_t id;
	const char *name;
	const char *const *peer_urls;
	size_t n_peer_urls;
	const char *const *client_urls;
	size_t n_client_urls;
	bool is_learner;
};

struct cairn_member_list_result {
	struct cairn_header header;
	const struct cairn_member *members;
	size_t n_members;
};

typedef void (*cairn_member_list_cb)(void *data, const struct cairn_status *st,
				     const struct cairn_member_list_result *res);
CAIRN_EXPORT int cairn_member_list(struct cairn_client *c, cairn_member_list_cb cb, void *data);

struct cairn_status_result {
	struct cairn_header header;
	const char *version;
	int64_t db_size;
	uint64_t leader; /* member id of the leader, 0 if none known */
	uint64_t raft_index;
	uint64_t raft_term;
	uint64_t raft_applied_index;
	const char *const *errors;
	size_t n_errors;
	int64_t db_size_in_use;
	bool is_learner;
};

typedef void (*cairn_status_cb)(void *data, const struct cairn_status *st,
				const struct cairn_status_result *res);
/* Maintenance.Status of one endpoint: `endpoint` must be one of the configured endpoints (asked
 * on a short-lived connection of its own, never failed over), or NULL for whichever the client
 * reaches. */
CAIRN_EXPORT int cairn_status_get(struct cairn_client *c, const char *endpoint, cairn_status_cb cb,
				  void *data);

/* ---- Node liveness: /cairn/members/<name> ----
 *
 * The Raft leader records every gossip member (servers and `cairn agent`s) as JSON under
 * /cairn/members/<name>. cairn_members_follow() reads the prefix, then watches it from the
 * revision read, and calls back once per node change: on the first read for every node, then on
 * each change of state, address, incarnation or tags, and on removal (node->removed). The
 * callback gets `final` true once at the end (cancelled, client closed, or the watch ended for
 * good); node is NULL then. The handle is freed after the final callback. */

enum cairn_node_state {
	CAIRN_NODE_ALIVE = 0,
	CAIRN_NODE_SUSPECT = 1,
	CAIRN_NODE_DEAD = 2,
	CAIRN_NODE_LEFT = 3,
};

struct cairn_tag {
	const char *name;
	const char *value;
};

struct cairn_node {
	const char *name;
	const char *address; /* "host:port" of its gossip endpoint */
	int state;           /* enum cairn_node_state */
	uint64_t incarnation;
	const struct cairn_tag *tags;
	size_t n_tags;
	const char *since;   /* RFC 3339 time of the last state change, as recorded */
	bool removed;        /* the key was deleted (reaped, or left and gone) */
	int64_t mod_revision;
};

struct cairn_members;
typedef void (*cairn_members_cb)(void *data, struct cairn_members *m, const struct cairn_node *node,
				 const struct cairn_status *st, bool final);

/* prefix NULL: "/cairn/members/". */
CAIRN_EXPORT int cairn_members_follow(struct cairn_client *c, const char *prefix,
				      cairn_members_cb cb, void *data, struct cairn_members **out);
CAIRN_EXPORT void cairn_members_stop(struct cairn_members *m);
/* "alive", "suspect", "dead", "left". */
CAIRN_EXPORT const char *cairn_node_state_name(int state);
/* Parses one member record (the JSON value of a /cairn/members/ key) into *node; strings point
 * into `scratch` (cap bytes). 0, or CAIRN_EINVAL when the value is not a member record or does not
 * fit. For tests and tools that read the prefix themselves. */
CAIRN_EXPORT int cairn_node_parse(const uint8_t *json, size_t len, struct cairn_node *node,
				  struct cairn_tag *tags, size_t max_tags, char *scratch,
				  size_t cap);

#ifdef __cplusplus
}
#endif

#endif /* CAIRN_CLIENT_CAIRN_H */

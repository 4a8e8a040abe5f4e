/* http.h: the member's HTTP/1.1 side of the client port (/health, /version, /metrics and the
 * JSON gateway /v3/...), the metrics it serves, and the JSON codec of the gateway. The
 * listener (net/grpc_uv.h) hands a connection here when its first bytes are an HTTP/1.x request
 * line; everything runs on the member's loop thread unless a comment says otherwise. */
#ifndef CAIRN_SERVER_HTTP_H
#define CAIRN_SERVER_HTTP_H

#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include "stream.h"

struct srv_member;

/* The versions /version reports: the etcd API Cairn speaks, the same one Maintenance.Status
 * gives (server/maint.c), and the cluster version etcd 3.4 reports. */
#define SRV_SERVER_VERSION "3.4.0"
#define SRV_CLUSTER_VERSION "3.4.0"

/* ---- a bounded growable text buffer (http.c) ---- */

struct srv_text {
	char *p;
	size_t len, cap;
	size_t max; /* bound on len; past it `full` is set and appends are dropped */
	bool full;  /* an append did not fit (or memory ran out): the text is unusable */
};

void srv_text_init(struct srv_text *t, size_t max);
void srv_text_free(struct srv_text *t);
void srv_text_add(struct srv_text *t, const char *s, size_t n);
void srv_text_puts(struct srv_text *t, const char *s);
void srv_text_printf(struct srv_text *t, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* ---- metrics (metrics.c) ---- */

/* Buckets of a histogram, cumulative upper bounds as Prometheus wants them ("+Inf" implied). */
#define SRV_HIST_MAX 16

/* A histogram that any thread may observe into (relaxed atomics; a scrape may see a count one
 * observation ahead of the sum, which Prometheus tolerates). */
struct srv_hist {
	const double *le;
	size_t n;
	_Atomic uint64_t counts[SRV_HIST_MAX + 1]; /* per bucket, the last one is +Inf */
	_Atomic uint64_t count;
	_Atomic uint64_t sum_micro; /* the sum of observations times 1e6 */
};

/* Gauges other parts of the member own and set when they change (watch hub, leases): shown
 * only once set. */
enum srv_gauge {
	SRV_GAUGE_WATCH_STREAMS, /* etcd_debugging_mvcc_watch_stream_total */
	SRV_GAUGE_WATCHERS,      /* etcd_debugging_mvcc_watcher_total */
	SRV_GAUGE_LEASES,        /* cairn_leases */
	SRV_GAUGE_COUNT
};

struct srv_metrics {
	struct srv_hist wal_fsync;      /* storage thread: one WAL append + fdatasync */
	struct srv_hist backend_commit; /* apply thread: one LMDB write transaction's commit */
	struct srv_hist apply_batch;    /* apply thread: entries per batch */
	uint64_t leader_changes;        /* loop thread */
	uint64_t proposals_failed;      /* loop thread: refused by Raft or timed out */
	double start_time;              /* seconds since the epoch */
	int64_t gauges[SRV_GAUGE_COUNT];
	bool gauge_set[SRV_GAUGE_COUNT];
	uint64_t http_requests[6]; /* by status class: 1xx..5xx, [0] unused */
};

void srv_metrics_init(struct srv_metrics *mt);
void srv_hist_observe(struct srv_hist *h, double v);
/* Seconds of a monotonic clock, for the durations observed above (any thread). */
double srv_metrics_now(void);
/* The hook of the watch and lease code (loop thread). */
void srv_metrics_gauge_set(struct srv_member *m, enum srv_gauge g, int64_t v);
/* Appends the member's metrics in Prometheus text format 0.0.4 (loop thread). */
void srv_metrics_render(struct srv_member *m, struct srv_text *out);

/* ---- the JSON codec of the gateway (gateway.c) ----
 * proto3 JSON as etcd 3.4's grpc-gateway writes it: the .proto field names ("create_revision",
 * "ID", "dbSize"), 64-bit integers as strings, bytes as standard base64, enums by name, fields
 * at their default left out; reading accepts both the .proto and the lowerCamel names, numbers
 * or strings for integers, names or numbers for enums, ignores unknown fields. */

/* Appends msg as a JSON object. */
void gw_json_encode(const ProtobufCMessage *msg, struct srv_text *out);

/* Parses body[0..len) (empty: {}) into a new message of `desc`, allocated with malloc and freed
 * with protobuf_c_message_free_unpacked(msg, NULL). Only the first JSON value is read, as Go's
 * decoder does. Returns the message, or NULL with a reason in err. */
ProtobufCMessage *gw_json_decode(const ProtobufCMessageDescriptor *desc, const uint8_t *body,
				 size_t len, char *err, size_t errcap);

/* Where a gateway path goes: the gRPC method and its message types; NULL if not mapped. */
struct gw_route {
	const char *path;   /* "/v3/kv/range" */
	const char *method; /* "/etcdserverpb.KV/Range" */
	const ProtobufCMessageDescriptor *req, *resp;
	bool stream; /* responses are a stream: {"result": ...} lines */
};
const struct gw_route *gw_route_find(const char *path);

/* The HTTP status grpc-gateway answers for a gRPC status code. */
int gw_http_status(int grpc_code);

/* ---- the HTTP side (http.c) ---- */

/* The listener's callback (net/grpc_uv.h net_grpc_http1_cb); data is the member. */
void http_on_connection(void *data, struct net_stream *s, const uint8_t *buf, size_t len);
/* Every heartbeat: closes idle keep-alive connections and slow requests, times out unary
 * gateway calls. */
void http_tick(struct srv_member *m);
/* Closes every HTTP connection at stop; returns how many `closed(m)` calls will follow (one
 * per connection, when its stream is closed). */
int http_close_all(struct srv_member *m, void (*closed)(struct srv_member *m));

#endif /* CAIRN_SERVER_HTTP_H */

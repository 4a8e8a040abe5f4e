/* grpc_client.h: the client side of gRPC over HTTP/2 (nghttp2), on one net_stream (stream.h).
 *
 * One struct net_grpc_conn is one HTTP/2 connection to one server URL: http://host:port speaks
 * h2c with prior knowledge (as etcd's clients do), https://host:port speaks TLS through
 * net/tls_filter.h with ALPN "h2" (the TLS context must offer "h2"). Calls are HTTP/2 streams:
 * a unary call is one request message then half-close; a streaming call (Watch, LeaseKeepAlive)
 * sends and receives messages until either side ends it. Protocol: grpc/grpc
 * doc/PROTOCOL-HTTP2.md, RFC 9113.
 *
 * CONNECTION LIFETIME. net_grpc_conn_open() starts connecting and returns at once; on_ready runs
 * when the TCP connection (and TLS handshake) is up and our preface and SETTINGS are queued.
 * Calls may be started before that: they wait (bounded by their own deadline) and go out when
 * the connection is ready. When the connection fails or ends (connect error, timeout, TLS
 * failure, peer closed, GOAWAY and no stream left, keepalive ping unanswered, protocol error),
 * every call still open gets on_close (see CALL LIFETIME), then on_closed runs once with the
 * reason; the connection is freed after on_closed returns (and after net_grpc_conn_close()).
 * net_grpc_conn_close() closes it at any time: open calls are dropped without their callbacks,
 * and on_closed still runs, later, from the loop (never from inside close()).
 *
 * GOAWAY. When the server sends GOAWAY, net_grpc_conn_draining() turns true and new calls are
 * refused with NET_ECLOSED: the caller opens another connection. Calls the server did not process
 * (stream id above the GOAWAY's last stream id, or RST_STREAM REFUSED_STREAM) end with
 * UNAVAILABLE and net_grpc_ccall_unprocessed() true: they are safe to retry, even writes.
 *
 * CALL LIFETIME. net_grpc_conn_call() opens a call and returns it; the caller owns it until
 * on_close runs (exactly once, unless the caller cancels first) or until it calls
 * net_grpc_ccall_cancel() (then no callback of the call runs again). The call is freed right
 * after on_close returns or inside cancel. The final status is the server's grpc-status (with
 * grpc-message percent-decoded), or one made here:
 *   - UNAVAILABLE: the connection failed or closed before the status came;
 *   - DEADLINE_EXCEEDED: the call's timeout_ms passed (the stream is reset with CANCEL);
 *   - INTERNAL: the response broke the protocol (no grpc-status, a bad length prefix, a
 *     compressed message, a non-200 :status, a message above max_recv_message);
 *   - RESOURCE_EXHAUSTED: a request message above the server's limit was refused here.
 *
 * BACKPRESSURE. Request messages are copied into the call's send queue; net_grpc_ccall_send()
 * says NET_EAGAIN above max_call_queue and on_writable runs when it drained. Response messages
 * are delivered as they arrive; HTTP/2 flow control windows are returned as they are delivered.
 *
 * KEEPALIVE. With keepalive_ms set, a connection that has received nothing for that long sends a
 * PING; no answer (or any frame) within keepalive_timeout_ms closes it with NET_ETIMEOUT. This is
 * how a client notices a server that stopped (SIGSTOP, a cut network) without a TCP reset.
 *
 * THREADS. Everything runs on the loop's thread; nothing is thread-safe. Callbacks never run from
 * inside the function that caused them, except on_message/on_close from inside the loop's read
 * and timer callbacks, where the caller may use any function here (also cancel or close).
 *
 * Errors are negative codes from NET_ERRNO_MAP (net_err.h), 0 is success. */
#ifndef CAIRN_NET_GRPC_CLIENT_H
#define CAIRN_NET_GRPC_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "grpc.h"     /* enum net_grpc_status, NET_GRPC_MSG_HEADER */
#include "net_err.h"
#include "peer.h"     /* net_log_cb */
#include "tls.h"

struct net_grpc_conn;
struct net_grpc_ccall;

/* Options of one connection; zero fields take the default in brackets. */
struct net_grpc_conn_opts {
	uint64_t connect_timeout_ms;   /* TCP connect plus TLS handshake [5000] */
	struct net_tls_ctx *tls;       /* client context for https:// URLs, borrowed; NULL: http:// only */
	uint32_t max_recv_message;     /* a bigger response message ends the call INTERNAL [64 MiB] */
	uint32_t max_send_message;     /* a bigger request message is refused [64 MiB] */
	uint32_t max_call_queue;       /* request bytes queued per call before NET_EAGAIN [8 MiB] */
	uint32_t initial_window_size;  /* our per-stream receive window [1 MiB] */
	uint32_t connection_window;    /* our connection receive window [16 MiB] */
	uint32_t max_calls;            /* calls open at once, waiting ones included [16384] */
	uint64_t keepalive_ms;         /* idle time before a PING [0: never] */
	uint64_t keepalive_timeout_ms; /* wait for the PING's answer [5000] */
	const char *authority;         /* :authority; NULL: host:port of the URL; copied */
	net_log_cb log;                /* NULL: silent */
	void *log_data;
};

struct net_grpc_conn_cbs {
	/* Connected: calls go out from now on. Optional. */
	void (*on_ready)(struct net_grpc_conn *c, void *data);
	/* The connection is over: `err` is 0 after a clean GOAWAY or net_grpc_conn_close(), else
	 * why (NET_ETIMEOUT, NET_EREFUSED, NET_ECLOSED, NET_ETLS, NET_ECERT, NET_EPROTO ...). Every call
	 * has been closed before. The connection is freed when this returns. Required. */
	void (*on_closed)(struct net_grpc_conn *c, int err, void *data);
};

/* Starts connecting to `url` (http:// or https://host:port; an https URL needs opts->tls). opts
 * may be NULL and is copied, cbs copied, data borrowed. Returns 0 and *out; NET_EADDR (bad URL),
 * NET_EINVAL (https without tls, bad option), NET_ENOMEM. After an error nothing runs. */
NET_API int net_grpc_conn_open(uv_loop_t *loop, const char *url,
			       const struct net_grpc_conn_opts *opts,
			       const struct net_grpc_conn_cbs *cbs, void *data,
			       struct net_grpc_conn **out);

/* Closes the connection (see CONNECTION LIFETIME). Idempotent. */
NET_API void net_grpc_conn_close(struct net_grpc_conn *c);

NET_API bool net_grpc_conn_ready(const struct net_grpc_conn *c);    /* on_ready has run */
NET_API bool net_grpc_conn_draining(const struct net_grpc_conn *c); /* GOAWAY received, closing */
NET_API size_t net_grpc_conn_calls(const struct net_grpc_conn *c);  /* calls open */
NET_API const char *net_grpc_conn_url(const struct net_grpc_conn *c);
NET_API void *net_grpc_conn_data(const struct net_grpc_conn *c);

/* Callbacks of one call. */
struct net_grpc_ccall_cbs {
	/* One whole response message, length prefix removed; `data` is valid during the call only.
	 * Optional. */
	void (*on_message)(struct net_grpc_ccall *call, const uint8_t *data, size_t len, void *user);
	/* The call ended with `status` (enum net_grpc_status) and `message` ("" if none). The call
	 * is freed when this returns. Required. */
	void (*on_close)(struct net_grpc_ccall *call, int status, const char *message, void *user);
	/* The send queue drained after NET_EAGAIN. Optional. */
	void (*on_writable)(struct net_grpc_ccall *call, void *user);
};

struct net_grpc_ccall_opts {
	uint64_t timeout_ms; /* deadline from now, sent as grpc-timeout too [0: none] */
	/* Extra metadata: pairs of lower-case name and value, copied; e.g. "authorization". */
	const char *const *metadata;
	size_t n_metadata; /* number of pairs */
};

/* Opens a call of `path` ("/etcdserverpb.KV/Range"). opts may be NULL; cbs copied; user borrowed.
 * Returns 0 and *out; NET_ECLOSED (connection closing, draining or closed), NET_ELIMIT
 * (max_calls), NET_EINVAL, NET_ENOMEM. After an error no callback runs. */
NET_API int net_grpc_conn_call(struct net_grpc_conn *c, const char *path,
			       const struct net_grpc_ccall_opts *opts,
			       const struct net_grpc_ccall_cbs *cbs, void *user,
			       struct net_grpc_ccall **out);

/* A unary call: opens the call, sends `req` (copied) and half-closes. Same returns; also
 * NET_ETOOBIG above max_send_message. *out may be NULL when the caller never cancels. */
NET_API int net_grpc_conn_unary(struct net_grpc_conn *c, const char *path, const uint8_t *req,
				size_t len, const struct net_grpc_ccall_opts *opts,
				const struct net_grpc_ccall_cbs *cbs, void *user,
				struct net_grpc_ccall **out);

/* Queues one request message (copied behind the length prefix). 0; NET_EAGAIN (queue over
 * max_call_queue: nothing queued, on_writable follows); NET_ETOOBIG; NET_ECLOSED after
 * half-close or when the stream is gone; NET_ENOMEM. */
NET_API int net_grpc_ccall_send(struct net_grpc_ccall *call, const uint8_t *data, size_t len);

/* No more request messages (END_STREAM after the queued ones). Idempotent. */
NET_API void net_grpc_ccall_half_close(struct net_grpc_ccall *call);

/* Gives the call up: RST_STREAM CANCEL if it is on the wire, no further callback, freed now.
 * Callable from any callback, including the call's own on_message (not from on_close). */
NET_API void net_grpc_ccall_cancel(struct net_grpc_ccall *call);

/* True when the server certainly did not process the call (REFUSED_STREAM, or above a GOAWAY's
 * last stream id, or never sent): meaningful inside on_close. */
NET_API bool net_grpc_ccall_unprocessed(const struct net_grpc_ccall *call);

NET_API void *net_grpc_ccall_user(const struct net_grpc_ccall *call);
NET_API struct net_grpc_conn *net_grpc_ccall_conn(const struct net_grpc_ccall *call);

#endif /* CAIRN_NET_GRPC_CLIENT_H */

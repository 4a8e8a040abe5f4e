/* grpc.h: a gRPC server core over HTTP/2 (nghttp2), without I/O.
 *
 * One struct net_grpc_session is one HTTP/2 connection. It owns no socket,
 * timer or thread: the transport feeds it the bytes it read (plain h2c with
 * prior knowledge, or the plaintext out of TLS after ALPN chose "h2") and
 * takes from it the bytes to write. Tests drive it in memory with an nghttp2
 * client on the other side. Protocol: gRPC over HTTP/2 (grpc/grpc
 * doc/PROTOCOL-HTTP2.md), HTTP/2 (RFC 9113).
 *
 * THE TRANSPORT LOOP, per connection:
 *   1. net_grpc_session_new() when the connection is up; the server's
 *      SETTINGS are queued at once (RFC 9113 §3.4: the server preface);
 *   2. on bytes read: net_grpc_session_feed(); an error means the peer broke
 *      the protocol, a GOAWAY is queued, keep going to step 3 (which also
 *      follows tick() and drain());
 *   3. while net_grpc_session_want_write(): net_grpc_session_take(), stopping
 *      when it gives 0 bytes, and
 *      write what it gave (the transport copies it or writes it before the
 *      next take); stop taking while the transport's own write queue is over
 *      its bound: the session then keeps data in its bounded call queues and
 *      applies HTTP/2 flow control to the peer;
 *   4. when net_grpc_session_done(): flush what was taken, close the socket,
 *      net_grpc_session_free();
 *   5. a handler may reply later (after a Raft commit) from the same thread:
 *      the session then calls the notify hook given to net_grpc_session_new(),
 *      and the transport runs step 3 soon after (never from inside the hook);
 *   6. on shutdown: net_grpc_session_drain(now), then net_grpc_session_tick(now)
 *      from a timer until done; calls still running at the drain deadline are
 *      cancelled.
 *
 * CALL LIFETIME. A handler registered by full path ("/etcdserverpb.KV/Range")
 * runs when a request's HEADERS are complete and owns the call from then on.
 * It sets its callbacks, sends messages and ends the call with
 * net_grpc_call_finish(), after which it must not touch the call again.
 * If the call ends first (client RST_STREAM, connection lost, drain deadline,
 * or a request the core refuses on the handler's behalf: oversized, compressed
 * or malformed message), on_cancel runs instead, and the call pointer is dead
 * once on_cancel returns. Exactly one of the two ends every call. The core
 * frees the call itself when the stream closes.
 *
 * THREADS. None: every function runs on the thread that owns the session.
 * Callbacks run inside feed(), take(), tick(), drain() and free(); inside a
 * callback the handler may use any net_grpc_call_* function, but must not
 * call net_grpc_session_feed/take/tick/drain/free on the same session.
 *
 * Errors are negative codes from NET_ERRNO_MAP (net_err.h), 0 is success. */
#ifndef CAIRN_NET_GRPC_H
#define CAIRN_NET_GRPC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "net_err.h"

/* gRPC status codes (grpc/grpc doc/statuscodes.md); the numbers are the wire values. */
enum net_grpc_status {
	NET_GRPC_OK = 0,
	NET_GRPC_CANCELLED = 1,
	NET_GRPC_UNKNOWN = 2,
	NET_GRPC_INVALID_ARGUMENT = 3,
	NET_GRPC_DEADLINE_EXCEEDED = 4,
	NET_GRPC_NOT_FOUND = 5,
	NET_GRPC_ALREADY_EXISTS = 6,
	NET_GRPC_PERMISSION_DENIED = 7,
	NET_GRPC_RESOURCE_EXHAUSTED = 8,
	NET_GRPC_FAILED_PRECONDITION = 9,
	NET_GRPC_ABORTED = 10,
	NET_GRPC_OUT_OF_RANGE = 11,
	NET_GRPC_UNIMPLEMENTED = 12,
	NET_GRPC_INTERNAL = 13,
	NET_GRPC_UNAVAILABLE = 14,
	NET_GRPC_DATA_LOSS = 15,
	NET_GRPC_UNAUTHENTICATED = 16,
};

/* Wire sizes of the gRPC message framing: 1 byte compressed flag, 4 bytes big-endian length. */
#define NET_GRPC_MSG_HEADER 5

/* Bounds on the method table and on one status message. */
#define NET_GRPC_MAX_METHODS 256
#define NET_GRPC_MAX_PATH 256
#define NET_GRPC_MAX_STATUS_MESSAGE 4096

/* etcd 3.4 serves with grpc.MaxRecvMsgSize(MaxRequestBytes + grpcOverheadBytes), where
 * --max-request-bytes defaults to 1.5 MiB and grpcOverheadBytes is 512 KiB
 * (etcdserver/api/v3rpc/grpc.go): a 2 MiB receive limit. */
#define NET_GRPC_ETCD_MAX_REQUEST_BYTES (1536u * 1024u)
#define NET_GRPC_ETCD_OVERHEAD_BYTES (512u * 1024u)

/* Limits of a server, shared by its sessions. Zero fields take the default shown. */
struct net_grpc_limits {
	uint32_t max_concurrent_streams; /* SETTINGS_MAX_CONCURRENT_STREAMS; 1024 (etcd: 2^32-1) */
	uint32_t initial_window_size;    /* SETTINGS_INITIAL_WINDOW_SIZE per stream; 1 MiB */
	uint32_t connection_window_size; /* connection receive window; 16 MiB */
	uint32_t max_header_list_size;   /* SETTINGS_MAX_HEADER_LIST_SIZE, enforced; 16 KiB */
	uint32_t max_recv_message;       /* bigger messages: RESOURCE_EXHAUSTED; 2 MiB (etcd) */
	uint32_t max_send_message;       /* net_grpc_call_send() refuses bigger; 64 MiB */
	uint32_t max_call_queue;         /* bytes queued to send per call; 8 MiB */
	uint32_t max_session_queue;      /* bytes queued to send per connection; 64 MiB */
	uint32_t max_session_recv; /* partial request messages buffered per connection; 32 MiB */
	uint32_t drain_timeout_ms; /* in-flight calls' grace after drain starts; 10000 */
};

struct net_grpc_server;
struct net_grpc_session;
struct net_grpc_call;

/* A method handler: runs once per call, when the request headers are complete. The handler owns
 * `call` until it finishes it or on_cancel runs (see CALL LIFETIME). It typically sets callbacks
 * with net_grpc_call_set_callbacks(); messages never arrive before the handler returns. */
typedef void (*net_grpc_handler)(struct net_grpc_call *call, void *method_data);

/* Callbacks of one call, all optional. `user` is the pointer given with them. */
struct net_grpc_call_callbacks {
	/* One whole request message (length prefix removed). `data` is owned by the core and valid
	 * only during the callback: copy what is kept. */
	void (*on_message)(struct net_grpc_call *call, const uint8_t *data, size_t len, void *user);
	/* The client has sent its last message (END_STREAM). */
	void (*on_half_close)(struct net_grpc_call *call, void *user);
	/* The call ended without net_grpc_call_finish(): `call` is freed when this returns. Inside,
	 * the call may be read (path, metadata, user) but not sent on, paused or finished. */
	void (*on_cancel)(struct net_grpc_call *call, void *user);
	/* The send queue fell to half its bound or less after a net_grpc_call_send() returned
	 * NET_EAGAIN: sending may resume. Runs once per NET_EAGAIN, outside nghttp2's callbacks. */
	void (*on_writable)(struct net_grpc_call *call, void *user);
};

/* Hook through which a session asks its transport to run net_grpc_session_take() soon. It is
 * called when a handler queued output outside feed()/take()/tick()/drain() (a deferred reply),
 * at most once until the next take(). It must not call into the session. */
typedef void (*net_grpc_notify)(struct net_grpc_session *session, void *user);

/* ---- server: limits and method table ---- */

/* Fills `limits` with the defaults above. */
NET_API void net_grpc_limits_default(struct net_grpc_limits *limits);

/* Allocates a server with `limits` copied (NULL: defaults; zero fields: their default).
 * The caller owns *out and frees it with net_grpc_server_free() after its last session.
 * NET_EINVAL if a limit is out of its range, NET_ENOMEM. */
NET_API int net_grpc_server_new(const struct net_grpc_limits *limits, struct net_grpc_server **out);

/* Frees the server and its method table. Every session of it must be freed before. */
NET_API void net_grpc_server_free(struct net_grpc_server *srv);

/* Registers `handler` for the full method path ("/package.Service/Method"), copied. `data` is
 * borrowed and handed to every call of the method; it must outlive the server. NET_EINVAL for a
 * path that is not "/service/method" or longer than NET_GRPC_MAX_PATH, or already registered;
 * NET_ELIMIT beyond NET_GRPC_MAX_METHODS; NET_ENOMEM. Not while sessions are running feed(). */
NET_API int net_grpc_server_register(struct net_grpc_server *srv, const char *path,
				     net_grpc_handler handler, void *data);

/* The server's limits after defaults were applied; owned by the server. */
NET_API const struct net_grpc_limits *net_grpc_server_limits(const struct net_grpc_server *srv);

/* ---- session: one HTTP/2 connection ---- */

/* Allocates a session serving `srv` (borrowed: must outlive the session) and queues the server's
 * SETTINGS. `notify` may be NULL (the transport then polls want_write after its own events);
 * `user` is borrowed. The caller owns *out and frees it with net_grpc_session_free().
 * NET_ENOMEM. */
NET_API int net_grpc_session_new(struct net_grpc_server *srv, net_grpc_notify notify, void *user,
				 struct net_grpc_session **out);

/* Cancels every call still owned by a handler (on_cancel runs for each), then frees the session
 * and all its calls. Output not yet taken is dropped. NULL is ignored. */
NET_API void net_grpc_session_free(struct net_grpc_session *s);

/* Feeds `len` bytes received from the peer (borrowed; processed before return). Handlers and
 * call callbacks run from here. Returns 0, or NET_EPROTO when the peer broke HTTP/2 and a
 * GOAWAY with the error is queued (a bad preface is reported at once; for a bad frame after a
 * good preface nghttp2 queues the GOAWAY itself, and feed() returns 0 until that GOAWAY was
 * taken), NET_ECLOSED when the session no longer reads, NET_ENOMEM. Either way the session is
 * done once its output was taken: the transport needs no other error path. */
NET_API int net_grpc_session_feed(struct net_grpc_session *s, const uint8_t *data, size_t len);

/* Copies up to `cap` bytes to send into `buf` and sets *n to their number (0: nothing to send
 * now). Bytes are handed out once: the transport sends them in order. Runs on_writable callbacks
 * after serialising. Returns 0, or NET_ENOMEM / NET_EPROTO when nghttp2 failed (the session is
 * then done). */
NET_API int net_grpc_session_take(struct net_grpc_session *s, uint8_t *buf, size_t cap, size_t *n);

/* True when take() has work: frames queued and allowed by flow control, or request messages of
 * a resumed call to deliver (take() may then give 0 bytes). */
NET_API bool net_grpc_session_want_write(const struct net_grpc_session *s);

/* True when the connection has nothing left to do: neither side will send more (GOAWAY
 * exchanged and no stream left, or a fatal error) and all output was taken. */
NET_API bool net_grpc_session_done(const struct net_grpc_session *s);

/* Starts a graceful drain at time `now_ms` (any monotonic clock, the same one as tick()):
 * a GOAWAY with the last possible stream id and a PING go out at once; when the PING's ACK
 * comes back, the final GOAWAY with the last stream id processed follows (the two-step close of
 * RFC 9113 §6.8). Calls in flight keep running until they finish or until drain_timeout_ms,
 * after which tick() cancels them (RST_STREAM CANCEL). Streams opened after the final GOAWAY
 * are ignored, which tells the client to retry them elsewhere. Idempotent. */
NET_API int net_grpc_session_drain(struct net_grpc_session *s, uint64_t now_ms);

/* Time passes: enforces the drain deadline. Cheap when there is no drain. */
NET_API void net_grpc_session_tick(struct net_grpc_session *s, uint64_t now_ms);

/* The HTTP/2 error code (RFC 9113 §7) of the GOAWAY this side sent or queued, 0 if none or
 * NO_ERROR: for the transport's log line when the connection ends. */
NET_API uint32_t net_grpc_session_h2_error(const struct net_grpc_session *s);

/* The `user` pointer given to net_grpc_session_new(). */
NET_API void *net_grpc_session_user(const struct net_grpc_session *s);

/* Number of calls alive on this session (owned by handlers or still sending). */
NET_API size_t net_grpc_session_calls(const struct net_grpc_session *s);

/* ---- call: one stream ---- */

/* Sets the callbacks (copied) and their `user` pointer (borrowed). */
NET_API void net_grpc_call_set_callbacks(struct net_grpc_call *call,
					 const struct net_grpc_call_callbacks *cbs, void *user);

/* The `user` pointer set with the callbacks, NULL before. */
NET_API void *net_grpc_call_user(const struct net_grpc_call *call);

/* The method path, NUL-terminated, owned by the call. */
NET_API const char *net_grpc_call_path(const struct net_grpc_call *call);

/* The request's :authority (or host), "" if none; owned by the call. */
NET_API const char *net_grpc_call_authority(const struct net_grpc_call *call);

/* The first value of request metadata `name` (lower case: "authorization", "grpc-timeout"),
 * NUL-terminated and owned by the call, or NULL if absent. Cost: a scan of the metadata. */
NET_API const char *net_grpc_call_metadata(const struct net_grpc_call *call, const char *name);

/* The call's grpc-timeout in milliseconds (rounded up), or -1 if none or malformed. */
NET_API int64_t net_grpc_call_timeout_ms(const struct net_grpc_call *call);

/* The session the call belongs to, and the HTTP/2 stream id. */
NET_API struct net_grpc_session *net_grpc_call_session(const struct net_grpc_call *call);
NET_API int32_t net_grpc_call_stream_id(const struct net_grpc_call *call);

/* Sends the response headers (:status 200, content-type application/grpc) now rather than with
 * the first message. Optional. 0, or NET_ECLOSED if the stream is gone. */
NET_API int net_grpc_call_send_headers(struct net_grpc_call *call);

/* Queues one response message: `data` (borrowed) is copied behind a gRPC length prefix. The
 * message goes out as flow control allows. Returns 0; NET_EAGAIN when the call's queue (or the
 * connection's) is over its bound: nothing was queued, on_writable runs when the queue has
 * drained (a watch that cannot keep up is the handler's to cut); NET_ETOOBIG beyond
 * max_send_message; NET_ECLOSED when the connection failed (on_cancel follows when the session
 * is freed); NET_ENOMEM. A message is accepted whenever the call's queue is empty and the
 * connection's has room, so one large reply (up to max_send_message) always fits. */
NET_API int net_grpc_call_send(struct net_grpc_call *call, const uint8_t *data, size_t len);

/* Stops (true) or resumes (false) delivering request messages. While paused, request bytes are
 * held unconsumed, so the client's stream window closes after at most initial_window_size bytes
 * and HTTP/2 flow control pushes back on it (a Watch or LeaseKeepAlive handler whose replies
 * cannot go out can stop reading requests); other calls are not held up, the connection window
 * is returned at once. On resume the held messages (and a half-close behind them) are delivered
 * from the next feed() or take(), and the notify hook runs if the resume came from outside. */
NET_API void net_grpc_call_pause(struct net_grpc_call *call, bool paused);

/* Bytes of this call's messages not yet handed to HTTP/2. */
NET_API size_t net_grpc_call_queued(const struct net_grpc_call *call);

/* Ends the call with `status` and `message` (may be NULL; copied, percent-encoded on the wire,
 * cut at NET_GRPC_MAX_STATUS_MESSAGE). Queued messages go first, then trailers; with nothing sent
 * yet, a trailers-only response. The handler gives up the call: it must not use it afterwards,
 * and its callbacks will not run again. Returns 0, or NET_ECLOSED if the stream was already
 * gone (the call is released all the same). */
NET_API int net_grpc_call_finish(struct net_grpc_call *call, int status, const char *message);

/* ---- local calls: a registered handler run without HTTP/2 ----
 *
 * The JSON gateway (HTTP/1.1) reuses every handler through these: the caller plays the client.
 * It starts a call by path, hands request messages in, and receives the handler's response
 * messages and final status through its callbacks. For the handler nothing changes, except
 * that net_grpc_call_session() is NULL and there is no metadata. A local call counts against no
 * session; the caller bounds how many it runs.
 *
 * LIFETIME. The call is alive from net_grpc_local_start() until both sides let go: the handler
 * by net_grpc_call_finish() (on_finish then runs, once) or by its on_cancel; the caller by
 * net_grpc_local_release(), which it must call exactly once, at any time after start except
 * from inside its on_message callback (from inside on_finish is fine: the handler no longer
 * touches the call then). Releasing before the handler finished cancels the call (the
 * handler's on_cancel runs from inside release). */
struct net_grpc_local_callbacks {
	/* One response message (`data` valid during the call only). Return 0, or NET_EAGAIN to
	 * refuse it: the handler's send then returns NET_EAGAIN, and its on_writable runs after
	 * the caller's net_grpc_local_writable(). */
	int (*on_message)(void *user, const uint8_t *data, size_t len);
	/* The handler finished the call with `status` and `message` ("" if none). */
	void (*on_finish)(void *user, int status, const char *message);
};

/* Starts a local call of the handler registered for `path` on `srv` (borrowed, must outlive the
 * call); `cbs` is copied, `user` borrowed. The handler runs before this returns. Returns 0 and
 * *out; NET_EINVAL (no such method: *out is NULL, nothing ran), NET_ENOMEM. on_finish may run
 * from inside this call (a handler that answers at once). */
NET_API int net_grpc_local_start(struct net_grpc_server *srv, const char *path,
				 const struct net_grpc_local_callbacks *cbs, void *user,
				 struct net_grpc_call **out);

/* Hands one request message to the handler (its on_message runs before return; `data` is
 * borrowed). 0; NET_ETOOBIG beyond the server's max_recv_message (nothing delivered); NET_EAGAIN
 * while the handler paused the call; NET_ECLOSED once the handler finished. */
NET_API int net_grpc_local_send(struct net_grpc_call *call, const uint8_t *data, size_t len);

/* The client side sent its last message: the handler's on_half_close runs. */
NET_API void net_grpc_local_half_close(struct net_grpc_call *call);

/* The caller can take responses again after refusing one: the handler's on_writable runs. */
NET_API void net_grpc_local_writable(struct net_grpc_call *call);

/* The caller lets go of the call (see LIFETIME). */
NET_API void net_grpc_local_release(struct net_grpc_call *call);

/* ---- wire utilities, exposed for tests and for server/ ---- */

/* Percent-encodes `msg` for grpc-message (PROTOCOL-HTTP2.md: bytes outside 0x20-0x7E and '%'
 * become %XX) into `out` of `cap` bytes, NUL-terminated. Returns the encoded length, or
 * NET_ETOOBIG if it does not fit (out then holds nothing useful). */
NET_API int net_grpc_percent_encode(const char *msg, char *out, size_t cap);

/* Parses a grpc-timeout value ("1-8 digits" then H, M, S, m, u or n) into milliseconds, rounded
 * up; -1 if malformed. */
NET_API int64_t net_grpc_parse_timeout(const char *value);

/* The gRPC name of a status ("UNIMPLEMENTED"), "UNKNOWN" for numbers outside 0-16. */
NET_API const char *net_grpc_status_name(int status);

#endif /* CAIRN_NET_GRPC_H */

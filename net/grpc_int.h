/* grpc_int.h: the gRPC server core's internal structures, shared by grpc.c (server, session,
 * HTTP/2 receive path), grpc_call.c (call API, send path) and grpc_util.c (pure functions). */
#ifndef CAIRN_NET_GRPC_INT_H
#define CAIRN_NET_GRPC_INT_H

#include <sys/types.h>

#include <nghttp2/nghttp2.h>

#include "grpc.h"

#define GRPC_ABSENT UINT32_MAX

struct grpc_method {
	char *path;
	size_t len;
	net_grpc_handler handler;
	void *data;
};

struct net_grpc_server {
	struct net_grpc_limits lim;
	struct grpc_method *methods;
	size_t n_methods;
};

/* One framed response message waiting for HTTP/2: the 5-byte prefix and the message. */
struct grpc_chunk {
	struct grpc_chunk *next;
	size_t len;
	size_t off;
	uint8_t data[];
};

/* A call run without HTTP/2 (net_grpc_local_start): where its responses go. */
struct grpc_local {
	struct net_grpc_local_callbacks cb;
	void *user;
	const struct net_grpc_limits *lim;
	bool released; /* the caller let go (net_grpc_local_release) */
};

struct net_grpc_call {
	struct net_grpc_session *s; /* NULL for a local call */
	struct grpc_local *local;   /* NULL for an HTTP/2 call */
	struct net_grpc_call *prev, *next;
	int32_t id;
	const struct grpc_method *method;

	/* Request headers as "name\0value\0" pairs, bounded by max_header_list_size. */
	char *hdr;
	uint32_t hdr_used, hdr_cap;
	uint32_t hdr_list_size; /* RFC 9113 §6.5.2: name + value + 32 per field */
	uint32_t path, authority, method_name, scheme, content_type,
		encoding;     /* offsets of values */
	uint32_t pseudo_seen; /* GRPC_PSEUDO_* bits */
	bool regular_seen;    /* a regular field came: pseudo-fields are over (§8.3) */
	bool in_trailers;     /* the current header block is the client's trailers */
	bool too_big;         /* header list over the bound: answered RESOURCE_EXHAUSTED */
	int64_t content_length;
	uint64_t recv_length;

	/* Reassembly of one length-prefixed message (PROTOCOL-HTTP2.md "Length-Prefixed-Message"). */
	uint8_t prefix[NET_GRPC_MSG_HEADER];
	uint8_t prefix_len;
	uint32_t msg_len;
	uint8_t *msg;
	uint32_t msg_have, msg_cap;

	/* Request bytes that came while the handler paused the call, not yet consumed (so not yet
	 * returned to the client's stream window): at most initial_window_size. */
	uint8_t *pend;
	uint32_t pend_len, pend_cap;
	bool paused;
	bool pend_eos; /* END_STREAM came behind the held bytes */

	/* Send side. */
	struct grpc_chunk *q_head, *q_tail;
	size_t queued;
	bool headers_submitted; /* response HEADERS handed to nghttp2 (with or without data) */
	bool data_attached;     /* a data provider is attached to the stream */
	bool data_deferred;     /* the data provider returned NGHTTP2_ERR_DEFERRED */
	bool want_writable;     /* net_grpc_call_send() returned NET_EAGAIN */

	/* State. */
	bool app_owned;   /* the handler holds the call (between handler start and finish/cancel) */
	bool ended;       /* the status is decided: trailers follow the queued messages */
	bool discard;     /* request data is no longer delivered */
	bool half_closed; /* client END_STREAM seen */
	bool trailers_sent; /* our END_STREAM went out */
	int status;
	char *status_msg; /* percent-encoded, NULL if none */

	struct net_grpc_call_callbacks cb;
	void *user;
};

struct net_grpc_session {
	struct net_grpc_server *srv;
	const struct net_grpc_limits *lim;
	nghttp2_session *h2;
	net_grpc_notify notify;
	void *user;

	struct net_grpc_call *calls;
	size_t n_calls;
	size_t queued;       /* sum of the calls' send queues */
	size_t recv_partial; /* bytes of partial request messages buffered */

	/* Output nghttp2 produced that did not fit the caller's buffer. */
	uint8_t *stash;
	size_t stash_off, stash_len, stash_cap;

	int depth;     /* > 0 inside feed/take/tick/drain/free: no notify, no reentry */
	bool notified; /* notify ran since the last take */
	bool writable_pending;
	bool resume_pending; /* a paused call was resumed with bytes held */
	bool fatal;          /* nghttp2 cannot go on: only the stash may still be sent */
	bool peer_goaway;
	uint32_t h2_error; /* error code of a GOAWAY this side sent */
	bool draining;
	bool drain_final;
	bool drain_forced;
	uint64_t drain_deadline;
};

/* grpc.c: the method registered for path[0..len), or NULL. */
const struct grpc_method *grpc__lookup(const struct net_grpc_server *srv, const char *path,
				       size_t len);

/* grpc_call.c */
int grpc__call_new(struct net_grpc_session *s, int32_t id, struct net_grpc_call **out);
void grpc__call_free(struct net_grpc_call *call);
/* Drops the partial request message and its 5-byte prefix, returning its bytes to the
 * connection's receive budget. */
void grpc__call_partial_clear(struct net_grpc_call *call);
/* Ends the call on the core's behalf: tells the handler (on_cancel) if it owned the call, then
 * sends `status` (trailers-only if nothing was sent yet, with HTTP status `http_status`). */
void grpc__call_abort(struct net_grpc_call *call, int http_status, int status, const char *msg);
/* Ends the call without a status: the handler is told, the stream is reset with `h2_error`. */
void grpc__call_reset(struct net_grpc_call *call, uint32_t h2_error);
/* Tells an owning handler that the call is over (on_cancel), once. */
void grpc__call_cancel(struct net_grpc_call *call);
ssize_t grpc__data_read(nghttp2_session *h2, int32_t id, uint8_t *buf, size_t length,
			uint32_t *flags, nghttp2_data_source *src, void *user);
void grpc__run_writable(struct net_grpc_session *s);

/* grpc_util.c */
/* What a request header field is, after the checks nghttp2 makes with HTTP messaging on (done
 * here because that switch also rejects the :authority values some etcd clients send, see
 * grpc.c). GRPC_F_ERROR is a stream error (RST_STREAM PROTOCOL_ERROR), GRPC_F_IGNORE a bad
 * regular field nghttp2 would drop. */
enum grpc_field {
	GRPC_F_ERROR = -1,
	GRPC_F_IGNORE = 0,
	GRPC_F_REGULAR,
	GRPC_F_METHOD,
	GRPC_F_SCHEME,
	GRPC_F_PATH,
	GRPC_F_AUTHORITY,
	GRPC_F_HOST,
	GRPC_F_CONTENT_TYPE,
	GRPC_F_ENCODING,
};
#define GRPC_PSEUDO_METHOD 1u
#define GRPC_PSEUDO_SCHEME 2u
#define GRPC_PSEUDO_PATH 4u
#define GRPC_PSEUDO_AUTHORITY 8u
#define GRPC_PSEUDO_HOST 16u
enum grpc_field grpc__check_field(struct net_grpc_call *call, const uint8_t *name, size_t namelen,
				  const uint8_t *value, size_t valuelen);
/* Go's %q of a string, cut to fit `cap`. */
void grpc__quote(const char *in, char *out, size_t cap);

#endif /* CAIRN_NET_GRPC_INT_H */

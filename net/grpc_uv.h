/* grpc_uv.h: a net_grpc_server (grpc.h) served on real sockets: a listener on an etcd-style
 * client URL, one net_grpc_session per connection, bytes pumped between the session and a
 * net_stream (stream.h) as grpc.h's THE TRANSPORT LOOP says.
 *
 * URLS. http://IP:port serves h2c with prior knowledge (the HTTP/2 client preface first, as
 * etcd's clients send it); https://IP:port serves TLS through net/tls_filter.h, and gRPC only
 * when ALPN selected "h2" (RFC 9113 §3.2, RFC 7301). The TLS server context must therefore list
 * "h2" in its ALPN protocols, and "http/1.1" too when on_http1 is given.
 *
 * ONE PORT, TWO PROTOCOLS. On a plain port the first bytes are sniffed: the HTTP/2 client preface
 * ("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n") goes to gRPC; an HTTP/1.x request line
 * ("GET /health HTTP/1.1") goes to on_http1, which receives the stream and every byte read so far
 * and owns the stream from then on (/health, /version, /metrics and the JSON gateway live there).
 * Without on_http1 such a request is answered "505 HTTP Version Not Supported" and closed.
 * Anything else is closed with a log line. Over TLS, ALPN "h2" goes to gRPC at once, ALPN
 * "http/1.1" or none goes through the same HTTP/1.x check to on_http1.
 *
 * GUARDS (style.md §9). At most max_connections connections at once (more are accepted and
 * closed at once, counted as refused); a connection that has not sent the whole HTTP/2 preface
 * and its first SETTINGS frame (or its HTTP/1.x request line) within preface_timeout_ms is
 * closed (slowloris); with idle_timeout_ms, a connection without calls and without bytes either
 * way for that long is drained (GOAWAY), as gRPC's MaxConnectionIdle does. etcd sets no idle
 * limit on its gRPC port (keepalive only: embed.DefaultGRPCKeepAliveInterval 2 h, timeout 20 s),
 * so the default is none. A connection whose peer stops reading holds at most the stream's
 * high_water bytes plus one chunk taken from its session; reading from it pauses meanwhile, and
 * the session's own bounded queues and HTTP/2 flow control push back on the handlers.
 *
 * SHUTDOWN. net_grpc_listener_close() stops accepting, drains every session (GOAWAY, calls in
 * flight run to their end until the deadline, then are cancelled), closes every stream, then
 * calls its callback; the listener is freed when the callback returns. Streams already handed to
 * on_http1 are not the listener's and stay open.
 *
 * THREADS. Everything runs on the loop's thread; nothing here is thread-safe.
 *
 * OWNERSHIP. The listener borrows the loop, the server and the TLS context: all three must
 * outlive it (until its close callback has run). It owns its connections and their sessions.
 * Errors are negative codes from NET_ERRNO_MAP (net_err.h). */
#ifndef CAIRN_NET_GRPC_UV_H
#define CAIRN_NET_GRPC_UV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "grpc.h"
#include "net_err.h"
#include "peer.h" /* net_log_cb, enum net_log_level */
#include "stream.h"
#include "tls_filter.h"

struct net_grpc_listener;

/* An HTTP/1.x request arrived. `s` is the connection's stream, now owned by the callback: it sets
 * its own callbacks with net_stream_set_cbs() (the listener cleared its own) or closes it.
 * buf[0..len) holds every plaintext byte read so far, at least the whole request line; it is
 * valid during the call only. Reading goes on after the callback returns. */
typedef void (*net_grpc_http1_cb)(void *data, struct net_stream *s, const uint8_t *buf, size_t len);

/* The listener is closed and every connection of it is gone. `l` is freed when this returns;
 * net_grpc_listener_stats() may still be called from inside. */
typedef void (*net_grpc_listener_close_cb)(struct net_grpc_listener *l, void *data);

/* Options; zero fields take the defaults in brackets. */
struct net_grpc_listener_opts {
	int backlog;                 /* listen(2) backlog [128] */
	size_t max_connections;      /* connections held at once [1024] */
	uint64_t preface_timeout_ms; /* preface + first SETTINGS, or request line [5000] */
	uint64_t idle_timeout_ms;    /* [0: none, as etcd] */
	/* After our FIN, how long to wait for the peer's; also the grace after a drain deadline
	 * before a connection whose peer does not read is cut [1000]. */
	uint64_t linger_ms;
	size_t write_chunk; /* bytes taken from a session at once [16 KiB] */
	/* Per-connection stream options (high_water bounds the bytes queued per connection;
	 * connect_timeout_ms bounds the TLS handshake). filter and filter_ctx are ignored: TLS
	 * comes from the tls argument of net_grpc_listener_open(). */
	struct net_stream_opts stream;
	net_grpc_http1_cb on_http1; /* NULL: HTTP/1.x requests get 505 */
	void *http1_data;           /* passed to on_http1, borrowed */
	net_log_cb log;             /* NULL: lines on stderr */
	void *log_data;             /* passed to log, borrowed */
};

/* Counters of one listener. */
struct net_grpc_listener_stats {
	uint64_t open;      /* connections held now (sniffing, serving or closing) */
	uint64_t accepted;  /* connections taken in (past TCP, and TLS when configured) */
	uint64_t refused;   /* closed at once because max_connections were held */
	uint64_t http1;     /* handed to on_http1 (or answered 505 without it) */
	uint64_t dropped;   /* closed for bad bytes, ALPN, the preface guard or an error */
	uint64_t bytes_in;  /* bytes read from sockets (ciphertext under TLS) */
	uint64_t bytes_out; /* bytes handed to sockets (ciphertext under TLS) */
	size_t queued;      /* bytes now waiting in the connections' send queues */
};

/* Hard bounds the options are checked against. */
#define NET_GRPC_LISTENER_MAX_CONNECTIONS ((size_t)1 << 20)
#define NET_GRPC_LISTENER_MAX_CHUNK ((size_t)1 << 20)

/* Listens on `url` (http:// or https://, an address or a host name; port 0 picks one, see
 * net_grpc_listener_port) and serves `srv` on every connection. `tls` is required for https://
 * and must be NULL for http://; its server context is used. opts may be NULL (defaults) and is
 * copied. Returns 0 and *out (owned by the caller until net_grpc_listener_close's callback), or
 * NET_EINVAL (bad options, tls not matching the scheme), NET_EADDR, NET_EADDRINUSE, NET_ENOMEM, NET_EIO with
 * nothing allocated. */
NET_API int net_grpc_listener_open(uv_loop_t *loop, const char *url, struct net_grpc_server *srv,
				   struct net_tls_filter_ctx *tls,
				   const struct net_grpc_listener_opts *opts,
				   struct net_grpc_listener **out);

/* The bound port. */
NET_API uint16_t net_grpc_listener_port(const struct net_grpc_listener *l);

/* Fills *out with the listener's counters. */
NET_API void net_grpc_listener_stats(const struct net_grpc_listener *l,
				     struct net_grpc_listener_stats *out);

/* Closes gracefully: stops accepting at once, closes connections that are not serving gRPC yet,
 * drains every session (net_grpc_session_drain) with calls in flight given drain_ms to finish
 * (0: the server's drain_timeout_ms) and cancelled after it, closes each connection once its
 * session is done (or shortly after the deadline if its peer does not read), then runs cb (may
 * be NULL) from the loop and frees the listener. Called once; `l` must not be used after cb. */
NET_API void net_grpc_listener_close(struct net_grpc_listener *l, uint64_t drain_ms,
				     net_grpc_listener_close_cb cb, void *data);

#endif /* CAIRN_NET_GRPC_UV_H */

/* stream.h: a byte stream over a libuv TCP handle, the base the peer transport and gRPC sit on.
 *
 * One listener accepts connections on a URL's host:port; an outbound stream connects with a
 * timeout. Bytes read are handed to a callback; bytes written are copied into a bounded send
 * queue that says NET_EAGAIN above a high-water mark and calls back when it drains below the
 * low-water mark (backpressure instead of unbounded buffering, style.md §9). An optional filter
 * (a TLS endpoint, net/tls.c) sits between the socket and the user: received bytes go through
 * it before the user sees them, the user's bytes go through it before the socket does.
 *
 * Threads: everything here runs on the loop's thread; no function is thread-safe.
 *
 * Lifetime: streams and listeners are allocated by this module and freed by it, right after
 * their close callback returns (libuv's rule: a handle's memory may go only once its close
 * callback has run). After net_stream_close() the only callback still delivered is on_close;
 * pending writes are dropped. Every stream must be closed, including one whose connect failed,
 * so that the loop can be closed (uv_loop_close() returns 0 only when every handle is closed).
 */
#ifndef CAIRN_NET_STREAM_H
#define CAIRN_NET_STREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "net_err.h"

/* ---- URLs ---- */

/* Longest host accepted in a URL (an IPv6 literal is at most 45 characters). */
#define NET_URL_HOST_MAX 64

/* A parsed peer or client URL: scheme://host:port with an optional trailing "/". */
struct net_url {
	bool tls;                        /* https://; http:// is plain */
	bool ipv6;                       /* host was a bracketed literal: [::1]:2380 */
	bool name;                       /* host is a name, resolved when dialed (uv_getaddrinfo) */
	uint16_t port;                   /* never 0 in a dial URL; 0 lets a listener pick one */
	char host[NET_URL_HOST_MAX + 1]; /* address or name, without brackets, NUL-terminated */
};

/* Parses "http://127.0.0.1:2380", "https://[::1]:2379", "http://node-1.example:2380". A host
 * that is not a numeric address must be a name (letters, digits, '-', '.'): it is not resolved
 * here; net_stream_connect resolves it without blocking the loop (uv_getaddrinfo, within the
 * connect timeout), a listener at open. Returns 0, NET_EINVAL (NULL argument) or NET_EADDR
 * (anything else). Writes only *out. */
NET_API int net_url_parse(const char *url, struct net_url *out);

/* Fills *out (a struct sockaddr_storage) from a parsed URL; a name is resolved synchronously
 * (its first address). Returns 0 or NET_EADDR. */
NET_API int net_url_sockaddr(const struct net_url *url, struct sockaddr_storage *out);

/* ---- the filter interface (TLS sits here) ---- */

/* A filter is a byte transformer with no I/O of its own: the stream gives it what came off the
 * socket and sends what it produces. One instance per connection, owned by the stream from the
 * moment the factory returns it until its destroy op, which the stream calls exactly once when
 * the stream closes (also when the connection never completed). All ops return 0 or a negative
 * NET_E* code unless said otherwise; any negative return makes the stream report the error
 * through on_error (or on_connect, before the handshake completes) and stop using the filter.
 *
 * The order the stream drives a filter in:
 *   - right after the TCP connection is up, and after every feed, write and shutdown, the
 *     stream calls take until it returns 0 bytes and writes each output to the socket;
 *   - after every feed it calls handshake_done; once that returns 1 the stream reports the
 *     connection as up (on_connect for a dialer, the accept callback for a listener) and from
 *     then on calls read until it returns 0 bytes, handing each output to on_read (while the
 *     user has reads paused, it neither reads nor feeds: the socket's bytes wait in the kernel);
 *   - write and shutdown are called only once handshake_done has returned 1.
 * The TLS endpoint of net/tls.h maps onto this one call each: feed/net_tls_feed,
 * feed_eof/net_tls_feed_eof, read/net_tls_read, write/net_tls_write, take/net_tls_out_take,
 * handshake_done/net_tls_failed and net_tls_is_open, shutdown/net_tls_shutdown,
 * destroy/net_tls_conn_free; the factory calls net_tls_conn_new (server: NULL name).
 */
struct net_filter_ops {
	/* Bytes received from the socket (for TLS: ciphertext). The filter copies what it takes
	 * and sets *used (<= len). It may take less than len when its input buffer is full: the
	 * stream then reads all decoded bytes and feeds the rest again, and if a feed after that
	 * takes nothing either, the stream fails with NET_ELIMIT. buf is reused after the call.
	 * The stream never feeds more than opts.read_buf bytes at once. */
	int (*feed)(void *impl, const uint8_t *buf, size_t len, size_t *used);
	/* The socket reached EOF; nothing more will be fed. May be NULL. A negative return ends
	 * the stream with that code. Afterwards the stream calls read until it returns an error
	 * (NET_ECLOSED for a clean close such as TLS close_notify, or e.g. NET_ETLS for a
	 * truncated one) or 0 bytes (taken as NET_ECLOSED), delivering what comes before. */
	int (*feed_eof)(void *impl);
	/* Decoded bytes for the user (plaintext): copies at most cap bytes into buf and stores
	 * the count in *n; *n == 0 means nothing more for now. NET_ECLOSED: the other end
	 * closed the connection cleanly (TLS close_notify). */
	int (*read)(void *impl, uint8_t *buf, size_t cap, size_t *n);
	/* Bytes from the user (plaintext): the filter takes all len bytes or none. NET_EAGAIN:
	 * its own queue is full (nothing taken); the stream passes NET_EAGAIN to the writer and
	 * calls on_drained later, as for its own queue. */
	int (*write)(void *impl, const uint8_t *buf, size_t len);
	/* Bytes to put on the socket (ciphertext): at most cap into buf, count in *n, consumed
	 * from the filter. The stream calls it until *n == 0 after every other call. */
	int (*take)(void *impl, uint8_t *buf, size_t cap, size_t *n);
	/* 1 once the handshake has completed, 0 while it is in progress, negative on failure
	 * (NET_ETLS, NET_ECERT ...). A filter without a handshake returns 1 at once. */
	int (*handshake_done)(void *impl);
	/* A clean close was asked for (net_stream_shutdown): queue the closing bytes (TLS
	 * close_notify), which take then returns. May be NULL. */
	int (*shutdown)(void *impl);
	/* Frees the instance. Called once; impl is not used afterwards. */
	void (*destroy)(void *impl);
};

struct net_filter {
	const struct net_filter_ops *ops; /* static table, not owned */
	void *impl;                       /* owned by the stream once handed over */
};

/* Makes one filter per connection. server: the accepting side; host: the dialed URL's host
 * (for certificate checks), NULL on the accepting side. Returns 0 and fills *out, or a
 * negative NET_E* code (the connection is then dropped). ctx is the caller's, never freed. */
typedef int (*net_filter_factory)(void *ctx, bool server, const char *host, struct net_filter *out);

/* ---- streams ---- */

struct net_stream;
struct net_listener;

/* The user's callbacks; any may be NULL. `s` is valid during each call. */
struct net_stream_cbs {
	/* Dialer only: the connection is up (and the filter's handshake done), status 0, or it
	 * failed: NET_EREFUSED, NET_ETIMEOUT, NET_EIO, or a filter's error. On failure, close. */
	void (*on_connect)(struct net_stream *s, int status);
	/* len > 0 bytes received; buf belongs to the stream and is reused after the call. */
	void (*on_read)(struct net_stream *s, const uint8_t *buf, size_t len);
	/* The stream ended: NET_ECLOSED when the other end closed, NET_EIO (or the filter's
	 * code) on an error. Nothing more is read or written; the user closes the stream. */
	void (*on_error)(struct net_stream *s, int err);
	/* The send queue fell to the low-water mark after a write had returned NET_EAGAIN. */
	void (*on_drained)(struct net_stream *s);
	/* Last callback: the stream is freed when it returns. Free what data points to here. */
	void (*on_close)(struct net_stream *s);
};

/* Bounds and socket options of a stream; zero fields take the defaults in brackets. */
struct net_stream_opts {
	size_t high_water;           /* queued bytes above which writes fail (NET_EAGAIN) [1 MiB] */
	size_t low_water;            /* on_drained when queued bytes fall to this [high_water/4] */
	uint64_t connect_timeout_ms; /* dial, and TLS handshake on both sides [5000] */
	unsigned keepalive_s;        /* TCP keepalive idle delay in seconds [30] */
	size_t read_buf;             /* bytes read from the socket per read call [64 KiB] */
	net_filter_factory filter;   /* NULL: bytes go to the socket as they are */
	void *filter_ctx;            /* passed to filter, not owned */
};

/* Hard bounds the options are checked against. */
#define NET_STREAM_MAX_HIGH_WATER ((size_t)256 << 20)
#define NET_STREAM_MAX_READ_BUF ((size_t)4 << 20)

/* Dials url. The stream is allocated here and returned in *out at once; on_connect reports the
 * outcome later, never from inside this call. opts may be NULL (defaults) and is copied; cbs is
 * copied; data is the caller's (net_stream_data). Returns 0, NET_EADDR, NET_EINVAL, NET_ENOMEM
 * or NET_EIO; on error nothing was allocated and no callback will run. */
NET_API int net_stream_connect(uv_loop_t *loop, const char *url, const struct net_stream_opts *opts,
			       const struct net_stream_cbs *cbs, void *data,
			       struct net_stream **out);

/* Replaces callbacks and user data; an accept callback calls this before returning (reading
 * starts when it returns). cbs is copied. */
NET_API void net_stream_set_cbs(struct net_stream *s, const struct net_stream_cbs *cbs, void *data);
NET_API void *net_stream_data(const struct net_stream *s);

/* Copies len bytes into the send queue (through the filter, if any). Returns 0; NET_EAGAIN if
 * queued + len would exceed the high-water mark (nothing is queued, on_drained follows once the
 * queue falls to the low-water mark); NET_ETOOBIG if len exceeds the high-water mark itself;
 * NET_ECLOSED if the stream ended or is closing, or is not connected yet; NET_ENOMEM, NET_EIO or
 * a filter's error, after which the stream is unusable and the caller closes it. buf stays the
 * caller's (copied or handed to the kernel before the call returns). len == 0 is a no-op. */
NET_API int net_stream_write(struct net_stream *s, const uint8_t *buf, size_t len);

/* Ends the sending side cleanly: the filter's closing bytes (TLS close_notify) and everything
 * queued go out, then a FIN. Later writes get NET_ECLOSED; reading goes on until the other end
 * closes too (on_error with NET_ECLOSED); then the user closes the stream. Returns 0 (also when
 * called again), NET_ECLOSED if the stream is not open, NET_EIO or a filter's error. */
NET_API int net_stream_shutdown(struct net_stream *s);

/* Bytes accepted by net_stream_write and not yet handed to the kernel. */
NET_API size_t net_stream_queued(const struct net_stream *s);

/* Stops and restarts delivering on_read (the reader's side of backpressure: the kernel's
 * buffers fill and the writer's queue grows). Idempotent. Return 0 or NET_EIO. */
NET_API int net_stream_read_stop(struct net_stream *s);
NET_API int net_stream_read_start(struct net_stream *s);

/* Closes the stream: queued writes are dropped, on_close runs later from the loop, then the
 * stream is freed. Idempotent; callable from any callback of this stream. */
NET_API void net_stream_close(struct net_stream *s);

/* The local port of a connected stream (0 if unknown). */
NET_API uint16_t net_stream_local_port(const struct net_stream *s);

/* ---- listeners ---- */

/* A new connection, up and (with a filter) past its handshake. The callback owns the stream:
 * it sets callbacks with net_stream_set_cbs, or closes it. */
typedef void (*net_accept_cb)(struct net_listener *l, struct net_stream *s);
typedef void (*net_listener_close_cb)(struct net_listener *l);

/* Most connections a listener holds while their handshake is in progress; beyond it a new
 * connection is closed at once (a bound against handshake floods). */
#define NET_LISTENER_MAX_PENDING 256

/* Listens on url's host:port (port 0: the kernel picks one; net_listener_port tells which),
 * with SO_REUSEADDR (libuv sets it on every TCP bind on Unix, so a restarted member can bind
 * its port while old connections sit in TIME_WAIT). backlog 0 means 128. stream_opts apply to
 * every accepted stream and are copied. data is the caller's. Returns 0, NET_EADDR (bad URL,
 * or the address is not local), NET_EADDRINUSE, NET_EINVAL, NET_ENOMEM or NET_EIO. */
NET_API int net_listener_open(uv_loop_t *loop, const char *url, int backlog,
			      const struct net_stream_opts *stream_opts, net_accept_cb on_accept,
			      void *data, struct net_listener **out);

NET_API void *net_listener_data(const struct net_listener *l);

/* The bound port (useful after binding port 0). */
NET_API uint16_t net_listener_port(const struct net_listener *l);

/* Stops listening and closes connections still in their handshake; accepted streams are the
 * user's and stay open. on_close (may be NULL) runs from the loop, then the listener is freed. */
NET_API void net_listener_close(struct net_listener *l, net_listener_close_cb on_close);

#endif /* CAIRN_NET_STREAM_H */

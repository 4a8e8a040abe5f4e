/* http1.h: a bounded HTTP/1.1 request parser and response-head writer, without I/O (RFC 9112).
 *
 * The client port serves a few HTTP/1.1 routes beside gRPC (/health, /version, /metrics and the
 * JSON gateway, server/http.c). This module only turns bytes into a request and a status line
 * plus headers into bytes; the connection, its buffers and its timers are the caller's.
 *
 * USE. The caller keeps the bytes read from a connection in one buffer and calls
 * net_http1_parse() after each read. It answers "need more" until the head (request line and
 * headers) and the body announced by Content-Length are all there, then fills a request whose
 * strings are copies (the request owns them) and whose body points into the caller's buffer;
 * the caller drops the consumed bytes once it is done with the body. Pipelined requests follow
 * in the same buffer.
 *
 * BOUNDS (style.md §9). The head is at most NET_HTTP1_MAX_HEAD bytes and
 * NET_HTTP1_MAX_HEADERS fields (431 beyond); the body at most the caller's max_body (413
 * beyond, decided from Content-Length before any of it is read). Chunked request bodies are
 * refused (411: etcd's clients and curl send Content-Length).
 *
 * Errors are answered with an HTTP status: the parser returns it negated, and the caller sends
 * that status and closes the connection (the stream can no longer be framed). */
#ifndef CAIRN_NET_HTTP1_H
#define CAIRN_NET_HTTP1_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "net_err.h"

#define NET_HTTP1_MAX_HEAD (16u << 10)
#define NET_HTTP1_MAX_HEADERS 64
#define NET_HTTP1_MAX_METHOD 16

struct net_http1_header {
	const char *name;  /* lower-cased, NUL-terminated, inside the request's head copy */
	const char *value; /* leading and trailing blanks removed, NUL-terminated */
};

struct net_http1_request {
	char method[NET_HTTP1_MAX_METHOD + 1];
	const char *target; /* request-target up to '?' (for log lines) */
	const char *path;   /* the target up to '?', NUL-terminated */
	const char *query;  /* after '?', "" if none */
	int minor;          /* HTTP/1.<minor>: 0 or 1 */
	struct net_http1_header headers[NET_HTTP1_MAX_HEADERS];
	size_t n_headers;
	bool keep_alive;         /* the connection may carry another request after this one */
	bool has_body;           /* a Content-Length was sent */
	uint64_t content_length; /* 0 without Content-Length */
	const uint8_t *body;     /* into the caller's buffer; content_length bytes */
	char head[NET_HTTP1_MAX_HEAD + 1]; /* the head's copy the strings above point into */
};

/* Parses one request from buf[0..len) into *req (caller-allocated; about 17 KiB, so keep it on
 * the heap). Returns 1 with *consumed set to the bytes of head and body; 0 when more bytes are
 * needed (nothing in *req is meaningful); or a negative HTTP status for a request that cannot
 * be served: -400 (malformed), -411 (chunked body), -413 (body over max_body), -431 (head over
 * its bounds), -501 (an unknown transfer coding), -505 (not HTTP/1.0 or 1.1). The request's
 * body pointer borrows buf. Costs one pass over the head per call: callers should call it
 * again only after new bytes came. */
NET_API int net_http1_parse(const uint8_t *buf, size_t len, uint64_t max_body,
			    struct net_http1_request *req, size_t *consumed);

/* The first value of header `name` (lower case), or NULL. */
NET_API const char *net_http1_header(const struct net_http1_request *req, const char *name);

/* The reason phrase of a status ("Not Found"), "Unknown" for others. */
NET_API const char *net_http1_reason(int status);

/* Writes a response head into out[0..cap): status line, Content-Type (NULL: none),
 * Content-Length (or "Transfer-Encoding: chunked" when content_length < 0), "Connection: close"
 * when close, the lines in `extra` (each ending in CRLF, may be NULL), and the blank line.
 * Returns its length, or NET_ETOOBIG if it does not fit (out is then unusable). */
NET_API int net_http1_write_head(char *out, size_t cap, int status, const char *content_type,
				 int64_t content_length, bool close, const char *extra);

/* The size line of one chunk of n > 0 bytes ("1a\r\n") into out of cap >= 20 bytes; the caller
 * follows the data with "\r\n". The last chunk is the constant NET_HTTP1_LAST_CHUNK. Returns
 * the length. */
NET_API int net_http1_chunk_size(char *out, size_t cap, size_t n);
#define NET_HTTP1_LAST_CHUNK "0\r\n\r\n"

#endif /* CAIRN_NET_HTTP1_H */

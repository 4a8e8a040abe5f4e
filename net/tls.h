/* tls.h: a TLS endpoint without I/O. Ciphertext from the network goes in,
 * plaintext comes out; plaintext from the protocol goes in, ciphertext for the
 * network comes out. The transport (libuv TCP) sits on one side, the protocol
 * (gRPC on the client port, Raft frames on the peer port) on the other, and
 * tests wire two endpoints back to back in memory. Built on OpenSSL 3.0 with
 * a BIO pair per connection, so every buffer has a fixed bound.
 *
 * CONFIGURATION. One context per listening or dialing role, built once from
 * PEM files and shared by its connections. Cairn's flags map onto it as
 * etcd's do:
 *
 *   --cert-file, --key-file           cert_file, key_file   (client port)
 *   --trusted-ca-file                 trusted_ca_file
 *   --client-cert-auth                client_cert_auth      (server role)
 *   --peer-cert-file, --peer-key-file, --peer-trusted-ca-file,
 *   --peer-client-cert-auth           the same fields of the peer context
 *
 * Protocol: TLS 1.2 at least, 1.3 preferred; OpenSSL's default TLS 1.3
 * suites; ECDHE with AEAD ciphers only for TLS 1.2; no renegotiation, no
 * compression; session tickets on. A client verifies the server's chain
 * against trusted_ca_file (the system's roots when it is NULL) and the name
 * it dialed against the certificate's SANs (IP SAN for an address, DNS SAN
 * for a name) unless insecure_skip_verify is set. A server with
 * client_cert_auth requires a client certificate and verifies its chain
 * against trusted_ca_file; without it, no client certificate is requested.
 *
 * ALPN (RFC 7301). A server lists the protocols it accepts in its order of
 * preference ("h2" on the client port, so gRPC over TLS works; its own id on
 * the peer port) and picks its most preferred one that the client offers. A
 * client that offers ALPN but none of them is refused with a
 * no_application_protocol alert (RFC 7301 §3.2); a client that offers no
 * ALPN is accepted and net_tls_peer().alpn is "". A client offers its list.
 * A server port that also serves HTTP/1.1 must list "http/1.1" too.
 *
 * PUMPING BYTES (the transport's loop; one connection):
 *
 *   on bytes read from the socket (buf, len):
 *       off = 0
 *       while off < len:
 *           rc = net_tls_feed(c, buf + off, len - off, &used); off += used
 *           read plaintext: net_tls_read(c, ...) until it gives 0 bytes,
 *               hand each piece to the protocol
 *           send ciphertext (below)
 *           if rc < 0 or a read failed: send ciphertext, then close
 *           if used == 0 and no plaintext came out: the protocol is not
 *               taking plaintext; keep buf[off..len), stop reading the
 *               socket, and resume when it does
 *   right after net_tls_conn_new: send ciphertext (a client's ClientHello)
 *   on EOF from the socket: net_tls_feed_eof(c), then read plaintext as
 *       above: NET_ECLOSED means the peer ended with close_notify,
 *       NET_ETLS ("unexpected eof while reading") means it did not
 *   on plaintext from the protocol: net_tls_write(c, ...), then send
 *       ciphertext
 *   send ciphertext: while net_tls_out_peek(c, &p) gives n > 0: write
 *       p[0..n) to the socket (copy it, or keep p until the write completes:
 *       the bytes stay put until consumed), then net_tls_out_consume(c, n).
 *       net_tls_out_take() is the copying form of the same.
 *   to close: net_tls_shutdown(c), send ciphertext, then close the socket.
 *
 * A transport that feeds at most cipher_in_size bytes at a time and reads
 * plaintext until it gets 0 bytes after each feed always sees used == len:
 * reading to the end empties the input ring (a partial record moves into
 * OpenSSL's own record buffer), and the handshake consumes its messages
 * during the feed. Such a transport may treat used < len as NET_ELIMIT.
 *
 * Every call that can make progress (feed, read, write, out_consume,
 * out_take, shutdown) also advances the handshake, moves queued plaintext
 * into records as room appears in the ciphertext buffer, and sends a
 * requested close_notify once the queue is empty. After any call, send
 * ciphertext: a handshake message, a record or an alert may be waiting.
 *
 * BOUNDS. Per connection: at most max_plain_out bytes of plaintext queued
 * by net_tls_write() and not yet turned into records; at most
 * cipher_out_size bytes of ciphertext waiting to be taken; at most
 * cipher_in_size bytes of fed ciphertext not yet processed (net_tls_feed
 * takes what fits). OpenSSL adds one record (about 16 KiB) of its own in
 * each direction, freed while idle, and limits a peer's certificate chain
 * to 100 KiB. The rings are allocated on first use; a plaintext queue that
 * grew past 64 KiB for a burst is freed when it empties.
 *
 * ERRORS. Functions return 0 or a negative code of net_err.h. NET_ETLS:
 * the TLS protocol failed (garbage, a bad record, an alert from the peer, a
 * missing close_notify); NET_ECERT: a certificate was refused, by this side
 * (verification failed, no client certificate) or by the peer (its alert
 * names a certificate problem). Both are final: the connection is failed,
 * every later call returns the same code, and net_tls_errmsg() says why,
 * e.g. "handshake: certificate verify failed: unable to get local issuer
 * certificate (depth 0: CN=cairn-client,O=other)". NET_EAGAIN (plaintext
 * queue full), NET_ECLOSED (after close_notify) and NET_EINVAL are not final.
 * OpenSSL's per-thread error queue is cleared before and drained after
 * every call, so no connection sees another's errors.
 *
 * In TLS 1.3 a client's handshake completes before the server has checked
 * the client's certificate (RFC 8446 §4.4): a client whose certificate is
 * refused is open at first, and its next read fails with NET_ECERT
 * ("tlsv13 alert certificate required", "tlsv1 alert unknown ca"). What it
 * wrote meanwhile is never delivered.
 *
 * THREADS. Nothing here locks. A context and every connection made from it
 * belong to one thread (the member's loop thread). Contexts are immutable
 * after net_tls_ctx_new(), and a context may serve any number of
 * connections; different contexts may live on different threads.
 *
 * OWNERSHIP. net_tls_ctx_new() copies what it needs from the config (the
 * files are read once; later changes to them are not seen). The caller owns
 * the context and frees it with net_tls_ctx_free() after every connection
 * made from it has been freed. net_tls_conn_new() allocates a connection
 * the caller frees with net_tls_conn_free(). Strings returned by a
 * connection are owned by it and valid until it is freed (net_tls_errmsg:
 * until the next call on it).
 */
#ifndef CAIRN_NET_TLS_H
#define CAIRN_NET_TLS_H

#include <stdbool.h>
#include <stddef.h>

#include "net_err.h"

enum net_tls_role {
	NET_TLS_SERVER = 0, /* accepts: presents cert_file, optionally verifies the client */
	NET_TLS_CLIENT = 1, /* dials: verifies the server, optionally presents cert_file */
};

/* Bounds and defaults (a 0 in the config means the default). */
#define NET_TLS_ALPN_MAX 8 /* protocols in an ALPN list */
#define NET_TLS_PLAIN_OUT_DEFAULT ((size_t)4 << 20)
#define NET_TLS_CIPHER_BUF_DEFAULT ((size_t)64 << 10)
#define NET_TLS_BUF_MIN ((size_t)4 << 10) /* smallest accepted for any of the three */
#define NET_TLS_BUF_MAX ((size_t)256 << 20)
#define NET_TLS_ERRMSG_MAX 320 /* net_tls_errmsg() and net_tls_ctx_new's message, NUL included */

struct net_tls_config {
	enum net_tls_role role;
	/* In messages, before each flag name: NULL or "" for the client port
	 * ("cert-file"), "peer-" for the peer port ("peer-cert-file"). */
	const char *flag_prefix;
	const char *cert_file; /* PEM, leaf first then intermediates; required by a server */
	const char *key_file;  /* PEM, unencrypted; required with cert_file */
	/* PEM bundle. Server: the CAs client certificates must chain to
	 * (needed by client_cert_auth). Client: the CAs the server must chain
	 * to; NULL: the system's default roots. */
	const char *trusted_ca_file;
	bool client_cert_auth;     /* server: require and verify a client certificate */
	bool insecure_skip_verify; /* client: accept any server certificate and name */
	/* Server: accepted protocols, most preferred first. Client: offered
	 * protocols. Each 1..255 bytes; at most NET_TLS_ALPN_MAX; copied. */
	const char *const *alpn;
	size_t n_alpn;
	size_t max_plain_out;   /* plaintext queued by net_tls_write (0: 4 MiB) */
	size_t cipher_in_size;  /* fed ciphertext not yet processed (0: 64 KiB) */
	size_t cipher_out_size; /* ciphertext waiting to be taken (0: 64 KiB) */
};

struct net_tls_ctx;
struct net_tls_conn;

/* Builds a context from cfg: loads the certificate chain, the key (checked
 * against the certificate) and the CAs. Returns 0 and *out (owned by the
 * caller, freed with net_tls_ctx_free); or NET_EINVAL (inconsistent config,
 * e.g. client-cert-auth without trusted-ca-file), NET_ECERT (a file is
 * missing, unreadable or not valid PEM, or the key does not match) or
 * NET_ENOMEM, with *out NULL. If errmsg is not NULL, a message naming the
 * flag and file is written to it (errmsg_len bytes, NUL-terminated; ""
 * on success). cfg and its strings are borrowed for the call only. */
NET_API int net_tls_ctx_new(const struct net_tls_config *cfg, struct net_tls_ctx **out,
			    char *errmsg, size_t errmsg_len);

/* Frees a context. Every connection made from it must be freed first
 * (asserted). NULL is a no-op. */
NET_API void net_tls_ctx_free(struct net_tls_ctx *ctx);

/* Makes a connection. Server role: server_name must be NULL. Client role:
 * server_name is the host dialed, an IP address or a DNS name, without port
 * or brackets; it is what the server's certificate is checked against, and
 * a DNS name is also sent as SNI. It may be NULL only with
 * insecure_skip_verify. It is copied. Returns 0 and *out (owned by the
 * caller, freed with net_tls_conn_free), or NET_EINVAL / NET_ENOMEM with
 * *out NULL. The context is borrowed and must outlive the connection. */
NET_API int net_tls_conn_new(struct net_tls_ctx *ctx, const char *server_name,
			     struct net_tls_conn **out);

/* Frees a connection, dropping whatever is buffered; sends nothing (call
 * net_tls_shutdown and send the ciphertext first for a clean close). NULL
 * is a no-op. */
NET_API void net_tls_conn_free(struct net_tls_conn *c);

/* Feeds ciphertext received from the network. Copies as much as fits in
 * the input buffer into it and sets *used (< len when full: read plaintext,
 * then feed the rest), then advances the handshake. Returns 0, or the
 * connection's final error (NET_ETLS, NET_ECERT) when the handshake failed,
 * or NET_EINVAL after net_tls_feed_eof. buf is borrowed for the call. */
NET_API int net_tls_feed(struct net_tls_conn *c, const void *buf, size_t len, size_t *used);

/* The network side reached EOF: nothing more will be fed. Plaintext already
 * fed can still be read; after it, net_tls_read returns NET_ECLOSED if the
 * peer sent close_notify, else NET_ETLS (truncated). During the handshake
 * the connection fails at once (NET_ETLS, returned here). */
NET_API int net_tls_feed_eof(struct net_tls_conn *c);

/* Reads plaintext into buf (cap bytes) and sets *n. Returns 0 with *n == 0
 * when there is nothing to read yet (the handshake is not done, or more
 * ciphertext is needed); NET_ECLOSED once the peer's close_notify has been
 * reached (and on every later call); or the final error. */
NET_API int net_tls_read(struct net_tls_conn *c, void *buf, size_t cap, size_t *n);

/* Queues plaintext to send, all of it or nothing; it is turned into records
 * as soon as the handshake is done and there is room for the ciphertext.
 * Writing before the handshake completes is allowed. Returns 0; NET_EAGAIN
 * if it does not fit in max_plain_out (nothing queued; the message says how
 * much is queued; send ciphertext and retry, or see net_tls_write_space);
 * NET_ECLOSED after net_tls_shutdown; or the final error. buf is copied. */
NET_API int net_tls_write(struct net_tls_conn *c, const void *buf, size_t len);

/* Bytes net_tls_write would accept now. */
NET_API size_t net_tls_write_space(const struct net_tls_conn *c);

/* Bytes of plaintext queued and not yet in records. */
NET_API size_t net_tls_plain_pending(const struct net_tls_conn *c);

/* Bytes of ciphertext waiting to be sent. */
NET_API size_t net_tls_out_pending(const struct net_tls_conn *c);

/* Sets *p to the next ciphertext to send and returns its length (0 when
 * none, with *p NULL). It can be less than net_tls_out_pending() (the
 * buffer is a ring): consume, then peek again. The bytes are owned by the
 * connection and stay valid and unchanged until they are consumed or the
 * connection is freed, whatever else is called meanwhile. */
NET_API size_t net_tls_out_peek(struct net_tls_conn *c, const void **p);

/* Marks n bytes of ciphertext (at most what net_tls_out_peek returned) as
 * sent, then moves queued plaintext into the room made. Returns 0 or the
 * final error. */
NET_API int net_tls_out_consume(struct net_tls_conn *c, size_t n);

/* Copies up to cap bytes of ciphertext to send into buf, consumes them and
 * sets *n. Returns as net_tls_out_consume. */
NET_API int net_tls_out_take(struct net_tls_conn *c, void *buf, size_t cap, size_t *n);

/* Asks for a clean close: close_notify is sent after all plaintext queued so
 * far (and after the handshake, if it is still running). Later writes get
 * NET_ECLOSED; reading continues until the peer's close_notify. Returns 0 or
 * the final error. Idempotent. */
NET_API int net_tls_shutdown(struct net_tls_conn *c);

/* The handshake completed (and the connection has not failed). */
NET_API bool net_tls_is_open(const struct net_tls_conn *c);
/* 0, or the final error (NET_ETLS, NET_ECERT) once failed. */
NET_API int net_tls_failed(const struct net_tls_conn *c);
/* The peer's close_notify has been read. */
NET_API bool net_tls_peer_closed(const struct net_tls_conn *c);
/* Our close_notify is in the ciphertext to send (or already taken). */
NET_API bool net_tls_close_sent(const struct net_tls_conn *c);

/* What was negotiated and who the peer is, for logs and for authorization.
 * Filled when the handshake completes (and, as far as known, when it
 * fails). Every string is owned by the connection, never NULL ("" when
 * unknown), and valid until the connection is freed. */
struct net_tls_peer {
	const char *version; /* "TLSv1.3", "TLSv1.2" */
	const char *cipher;  /* e.g. "TLS_AES_256_GCM_SHA384" */
	const char *alpn;    /* the selected protocol, "" when none */
	const char *subject; /* the peer certificate's subject, RFC 2253 */
	const char *issuer;  /* its issuer, RFC 2253 */
	const char *sans;    /* its SANs, e.g. "DNS:localhost, IP:127.0.0.1" */
	bool has_cert;       /* the peer presented a certificate */
	/* The chain verified against the trusted CAs and (client side) the
	 * dialed name matched. Computed also when verification is not
	 * enforced (insecure_skip_verify), so logs can say what was skipped. */
	bool verified;
	const char *verify; /* "ok", "no certificate", or OpenSSL's reason */
};

/* Fills *out (see struct net_tls_peer). */
NET_API void net_tls_peer(const struct net_tls_conn *c, struct net_tls_peer *out);

/* The selected ALPN protocol, "" when none or before the handshake. */
NET_API const char *net_tls_alpn(const struct net_tls_conn *c);

/* The message of the last error a call on c returned ("" if none): the
 * operation, OpenSSL's reasons and details. Owned by c; for a final error
 * it stays; otherwise valid until the next call on c. */
NET_API const char *net_tls_errmsg(const struct net_tls_conn *c);

#endif /* CAIRN_NET_TLS_H */

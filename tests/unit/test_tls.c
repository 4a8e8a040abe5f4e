/* test_tls.c: the TLS endpoint (net/tls.h) with two endpoints wired back to
 * back in memory, and raw OpenSSL clients where an endpoint cannot play the
 * part (an old protocol version, CBC-only suites). The certificates are made
 * at run time with OpenSSL's API into a mkdtemp directory: a CA, a server
 * certificate (SANs IP 127.0.0.1 and DNS localhost), a client certificate,
 * and a second, unrelated CA with a client and a server certificate of its
 * own. Every test also checks that OpenSSL's error queue is left empty. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "tls.h"
#include "certs.h"
#include "tmpdir.h"

/* ---- certificates ---- */

struct pki {
	char dir[256];
	char ca[320];          /* CA "cairn-ca" */
	char server_cert[320]; /* CN=cairn-server, SAN IP:127.0.0.1, DNS:localhost */
	char server_key[320];
	char client_cert[320]; /* CN=cairn-client */
	char client_key[320];
	char other_ca[320];   /* an unrelated CA */
	char other_cert[320]; /* CN=intruder from other_ca, same SANs as the server's */
	char other_key[320];
	char garbage[320]; /* not PEM */
};

static struct pki g;

static void path_make(char *out, size_t len, const char *name)
{
	int n = snprintf(out, len, "%s/%s", g.dir, name);
	assert_true(n > 0 && (size_t)n < len);
}

static int pki_setup(void **state)
{
	(void)state;
	h_tmpdir_make(g.dir, sizeof g.dir, "cairn-tls");
	path_make(g.ca, sizeof g.ca, "ca.pem");
	path_make(g.server_cert, sizeof g.server_cert, "server.pem");
	path_make(g.server_key, sizeof g.server_key, "server.key");
	path_make(g.client_cert, sizeof g.client_cert, "client.pem");
	path_make(g.client_key, sizeof g.client_key, "client.key");
	path_make(g.other_ca, sizeof g.other_ca, "other-ca.pem");
	path_make(g.other_cert, sizeof g.other_cert, "other.pem");
	path_make(g.other_key, sizeof g.other_key, "other.key");
	path_make(g.garbage, sizeof g.garbage, "garbage.pem");

	const char *san = "IP:127.0.0.1,DNS:localhost";
	EVP_PKEY *ca_key = h_key_new();
	X509 *ca = h_cert_new(ca_key, "cairn", "cairn-ca", NULL, NULL, NULL, 1);
	EVP_PKEY *server_key = h_key_new();
	X509 *server = h_cert_new(server_key, "cairn", "cairn-server", ca, ca_key, san, 2);
	EVP_PKEY *client_key = h_key_new();
	X509 *client = h_cert_new(client_key, "cairn", "cairn-client", ca, ca_key, NULL, 3);
	EVP_PKEY *other_ca_key = h_key_new();
	X509 *other_ca = h_cert_new(other_ca_key, "other", "other-ca", NULL, NULL, NULL, 1);
	EVP_PKEY *other_key = h_key_new();
	X509 *other = h_cert_new(other_key, "other", "intruder", other_ca, other_ca_key, san, 2);

	h_pem_write(g.ca, ca, NULL);
	h_pem_write(g.server_cert, server, NULL);
	h_pem_write(g.server_key, NULL, server_key);
	h_pem_write(g.client_cert, client, NULL);
	h_pem_write(g.client_key, NULL, client_key);
	h_pem_write(g.other_ca, other_ca, NULL);
	h_pem_write(g.other_cert, other, NULL);
	h_pem_write(g.other_key, NULL, other_key);
	FILE *f = fopen(g.garbage, "w");
	assert_non_null(f);
	fputs("-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n", f);
	fclose(f);

	X509 *certs[] = { ca, server, client, other_ca, other };
	EVP_PKEY *keys[] = { ca_key, server_key, client_key, other_ca_key, other_key };
	for (size_t i = 0; i < 5; i++) {
		X509_free(certs[i]);
		EVP_PKEY_free(keys[i]);
	}
	assert_int_equal(ERR_peek_error(), 0);
	return 0;
}

static int pki_teardown(void **state)
{
	(void)state;
	h_tmpdir_remove(g.dir);
	return 0;
}

/* ---- contexts ---- */

static const char *const alpn_h2[] = { "h2" };

static struct net_tls_ctx *ctx_make(const struct net_tls_config *cfg)
{
	struct net_tls_ctx *ctx = NULL;
	char msg[NET_TLS_ERRMSG_MAX];
	int rc = net_tls_ctx_new(cfg, &ctx, msg, sizeof msg);
	if (rc != 0) {
		fail_msg("net_tls_ctx_new: %s (%s)", net_strerror(rc), msg);
	}
	assert_string_equal(msg, "");
	assert_int_equal(ERR_peek_error(), 0);
	return ctx;
}

/* The client port's server: h2, and mTLS when asked. */
static struct net_tls_ctx *server_ctx(bool mtls)
{
	struct net_tls_config cfg = { .role = NET_TLS_SERVER,
				      .cert_file = g.server_cert,
				      .key_file = g.server_key,
				      .trusted_ca_file = g.ca,
				      .client_cert_auth = mtls,
				      .alpn = alpn_h2,
				      .n_alpn = 1 };
	return ctx_make(&cfg);
}

/* A client trusting ca, presenting cert/key when given, offering h2. */
static struct net_tls_ctx *client_ctx(const char *ca, const char *cert, const char *key)
{
	struct net_tls_config cfg = { .role = NET_TLS_CLIENT,
				      .cert_file = cert,
				      .key_file = key,
				      .trusted_ca_file = ca,
				      .alpn = alpn_h2,
				      .n_alpn = 1 };
	return ctx_make(&cfg);
}

/* ---- two endpoints back to back ---- */

/* Counts TLS records in one direction of the byte stream (RFC 8446 §5.1:
 * type, version, 16-bit length). */
struct records {
	unsigned char hdr[5];
	size_t hlen;
	size_t body_left;
	size_t n_appdata;
	size_t n_total;
	size_t max_body;
};

static void records_scan(struct records *r, const unsigned char *p, size_t n)
{
	while (n > 0) {
		if (r->body_left > 0) {
			size_t k = n < r->body_left ? n : r->body_left;
			r->body_left -= k;
			p += k;
			n -= k;
			continue;
		}
		r->hdr[r->hlen++] = *p++;
		n--;
		if (r->hlen == 5) {
			r->body_left = (size_t)r->hdr[3] << 8 | r->hdr[4];
			r->n_total++;
			r->n_appdata += r->hdr[0] == 23;
			if (r->body_left > r->max_body) {
				r->max_body = r->body_left;
			}
			r->hlen = 0;
		}
	}
}

struct end {
	struct net_tls_conn *c;
	unsigned char *got; /* plaintext read */
	size_t got_len;
	size_t got_cap;
	int rc;      /* first error of a feed or a read */
	bool closed; /* a read returned NET_ECLOSED */
	struct records sent;
};

static void end_init(struct end *e, struct net_tls_ctx *ctx, const char *name)
{
	memset(e, 0, sizeof *e);
	assert_int_equal(net_tls_conn_new(ctx, name, &e->c), 0);
}

static void end_fini(struct end *e)
{
	net_tls_conn_free(e->c);
	free(e->got);
	e->c = NULL;
	e->got = NULL;
}

/* Reads all the plaintext there is; returns whether any came. */
static bool end_drain(struct end *e)
{
	bool any = false;
	while (e->rc == 0 && !e->closed) {
		unsigned char buf[8192];
		size_t n = 0;
		int rc = net_tls_read(e->c, buf, sizeof buf, &n);
		assert_int_equal(ERR_peek_error(), 0);
		if (rc == NET_ECLOSED) {
			assert_int_equal(n, 0);
			e->closed = true;
			any = true;
			break;
		}
		if (rc != 0) {
			e->rc = rc;
			break;
		}
		if (n == 0) {
			break;
		}
		if (e->got_len + n > e->got_cap) {
			size_t cap = e->got_cap > 0 ? e->got_cap * 2 : 65536;
			while (cap < e->got_len + n) {
				cap *= 2;
			}
			e->got = realloc(e->got, cap);
			assert_non_null(e->got);
			e->got_cap = cap;
		}
		memcpy(e->got + e->got_len, buf, n);
		e->got_len += n;
		any = true;
	}
	return any;
}

/* Moves ciphertext from one end to the other; returns whether any moved. */
static bool end_move(struct end *from, struct end *to)
{
	bool any = false;
	for (;;) {
		const void *p = NULL;
		size_t n = net_tls_out_peek(from->c, &p);
		if (n == 0) {
			break;
		}
		assert_non_null(p);
		assert_true(n <= net_tls_out_pending(from->c));
		size_t used = 0;
		int rc = net_tls_feed(to->c, p, n, &used);
		assert_int_equal(ERR_peek_error(), 0);
		if (rc != 0 && to->rc == 0) {
			to->rc = rc;
		}
		if (rc != 0 && used == 0) {
			/* The receiver has failed: what it is sent goes nowhere. */
			used = n;
		}
		records_scan(&from->sent, p, used);
		rc = net_tls_out_consume(from->c, used);
		if (rc != 0 && from->rc == 0) {
			from->rc = rc;
		}
		any = any || used > 0;
		/* Make room in the receiver's input buffer. */
		bool read = end_drain(to);
		if (used == 0 && !read) {
			break;
		}
	}
	return any;
}

/* Runs both ends until nothing moves. */
static void pump(struct end *a, struct end *b)
{
	for (int i = 0; i < 100000; i++) {
		bool any = end_move(a, b);
		any = end_move(b, a) || any;
		any = end_drain(a) || any;
		any = end_drain(b) || any;
		if (!any) {
			assert_int_equal(ERR_peek_error(), 0);
			return;
		}
	}
	fail_msg("pump: no quiescence");
}

static void handshake_ok(struct end *client, struct end *server)
{
	pump(client, server);
	if (client->rc != 0 || server->rc != 0) {
		fail_msg("handshake: client %d (%s), server %d (%s)", client->rc,
			 net_tls_errmsg(client->c), server->rc, net_tls_errmsg(server->c));
	}
	assert_true(net_tls_is_open(client->c));
	assert_true(net_tls_is_open(server->c));
}

/* ---- handshakes ---- */

static void test_handshake(void **state)
{
	(void)state;
	struct net_tls_ctx *sctx = server_ctx(false);
	struct net_tls_ctx *cctx = client_ctx(g.ca, NULL, NULL);
	struct end c, s;
	end_init(&c, cctx, "127.0.0.1");
	end_init(&s, sctx, NULL);
	/* The ClientHello is waiting from the start. */
	assert_true(net_tls_out_pending(c.c) > 0);
	assert_false(net_tls_is_open(c.c));
	handshake_ok(&c, &s);

	struct net_tls_peer p;
	net_tls_peer(c.c, &p);
	assert_string_equal(p.version, "TLSv1.3");
	assert_string_equal(p.alpn, "h2");
	assert_string_equal(p.subject, "CN=cairn-server,O=cairn");
	assert_string_equal(p.issuer, "CN=cairn-ca,O=cairn");
	assert_string_equal(p.sans, "IP:127.0.0.1, DNS:localhost");
	assert_true(p.has_cert);
	assert_true(p.verified);
	assert_string_equal(p.verify, "ok");
	print_message("client sees: %s %s alpn=%s subject=%s sans=%s verify=%s\n", p.version,
		      p.cipher, p.alpn, p.subject, p.sans, p.verify);

	net_tls_peer(s.c, &p);
	assert_string_equal(p.version, "TLSv1.3");
	assert_string_equal(net_tls_alpn(s.c), "h2");
	assert_false(p.has_cert); /* no client-cert-auth: none requested */
	assert_false(p.verified);
	assert_string_equal(p.verify, "no certificate");

	end_fini(&c);
	end_fini(&s);
	net_tls_ctx_free(cctx);
	net_tls_ctx_free(sctx);
}

/* Both names in the certificate work; the name dialed is what counts. */
static void test_handshake_by_dns_name(void **state)
{
	(void)state;
	struct net_tls_ctx *sctx = server_ctx(false);
	struct net_tls_ctx *cctx = client_ctx(g.ca, NULL, NULL);
	struct end c, s;
	end_init(&c, cctx, "localhost");
	end_init(&s, sctx, NULL);
	handshake_ok(&c, &s);
	end_fini(&c);
	end_fini(&s);
	net_tls_ctx_free(cctx);
	net_tls_ctx_free(sctx);
}

/* One context serves many connections at once. */
static void test_shared_context(void **state)
{
	(void)state;
	struct net_tls_ctx *sctx = server_ctx(true);
	struct net_tls_ctx *cctx = client_ctx(g.ca, g.client_cert, g.client_key);
	struct end c[4], s[4];
	for (int i = 0; i < 4; i++) {
		end_init(&c[i], cctx, "127.0.0.1");
		end_init(&s[i], sctx, NULL);
	}
	for (int i = 0; i < 4; i++) {
		char msg[32];
		int n = snprintf(msg, sizeof msg, "hello %d", i);
		assert_int_equal(net_tls_write(c[i].c, msg, (size_t)n), 0);
	}
	for (int i = 3; i >= 0; i--) {
		handshake_ok(&c[i], &s[i]);
		char want[32];
		int n = snprintf(want, sizeof want, "hello %d", i);
		assert_int_equal(s[i].got_len, (size_t)n);
		assert_memory_equal(s[i].got, want, (size_t)n);
	}
	for (int i = 0; i < 4; i++) {
		end_fini(&s[i]);
		end_fini(&c[i]);
	}
	net_tls_ctx_free(cctx);
	net_tls_ctx_free(sctx);
}

/* ---- data ---- */

static void test_data_both_ways(void **state)
{
	(void)state;
	struct net_tls_ctx *sctx = server_ctx(false);
	struct net_tls_ctx *cctx = client_ctx(g.ca, NULL, NULL);
	struct end c, s;
	end_init(&c, cctx, "127.0.0.1");
	end_init(&s, sctx, NULL);
	/* Written before the handshake: queued, sent after it. */
	assert_int_equal(net_tls_write(c.c, "ping", 4), 0);
	assert_int_equal(net_tls_write(s.c, "early", 5), 0);
	assert_int_equal(net_tls_plain_pending(c.c), 4);
	handshake_ok(&c, &s);
	assert_int_equal(net_tls_plain_pending(c.c), 0);
	assert_int_equal(s.got_len, 4);
	assert_memory_equal(s.got, "ping", 4);
	assert_int_equal(c.got_len, 5);
	assert_memory_equal(c.got, "early", 5);

	assert_int_equal(net_tls_write(s.c, "pong", 4), 0);
	assert_int_equal(net_tls_write(c.c, "", 0), 0);
	assert_int_equal(net_tls_write(c.c, "abc", 3), 0);
	assert_int_equal(net_tls_write(c.c, "def", 3), 0);
	pump(&c, &s);
	assert_int_equal(c.got_len, 9);
	assert_memory_equal(c.got, "earlypong", 9);
	assert_int_equal(s.got_len, 10);
	assert_memory_equal(s.got, "pingabcdef", 10);

	/* An error someone else left in OpenSSL's queue neither fails nor
	 * colours a call, and is gone afterwards. */
	ERR_raise(ERR_LIB_SSL, SSL_R_CERTIFICATE_VERIFY_FAILED);
	assert_int_not_equal(ERR_peek_error(), 0);
	assert_int_equal(net_tls_write(c.c, "", 0), 0);
	assert_string_equal(net_tls_errmsg(c.c), "");
	assert_int_equal(ERR_peek_error(), 0);

	/* The copying form of taking ciphertext. */
	assert_int_equal(net_tls_write(c.c, "xyz", 3), 0);
	unsigned char ct[4096];
	size_t n = 0;
	assert_int_equal(net_tls_out_take(c.c, ct, sizeof ct, &n), 0);
	assert_true(n > 3);
	assert_int_equal(net_tls_out_pending(c.c), 0);
	size_t used = 0;
	assert_int_equal(net_tls_feed(s.c, ct, n, &used), 0);
	assert_int_equal(used, n);
	end_drain(&s);
	assert_int_equal(s.got_len, 13);
	assert_memory_equal(s.got + 10, "xyz", 3);

	end_fini(&c);
	end_fini(&s);
	net_tls_ctx_free(cctx);
	net_tls_ctx_free(sctx);
}

static void fill_pattern(unsigned char *p, size_t n, uint32_t seed)
{
	uint32_t x = seed;
	for (size_t i = 0; i < n; i++) {
		x = x * 1664525u + 1013904223u;
		p[i] = (unsigned char)(x >> 24);
	}
}

/* 1 MiB each way at once, through buffers of `buf` bytes. */
static void large_writes(size_t buf)
{
	const size_t big = (size_t)1 << 20;
	struct net_tls_config scfg = { .role = NET_TLS_SERVER,
				       .cert_file = g.server_cert,
				       .key_file = g.server_key,
				       .alpn = alpn_h2,
				       .n_alpn = 1,
				       .cipher_in_size = buf,
				       .cipher_out_size = buf };
	struct net_tls_config ccfg = { .role = NET_TLS_CLIENT,
				       .trusted_ca_file = g.ca,
				       .alpn = alpn_h2,
				       .n_alpn = 1,
				       .cipher_in_size = buf,
				       .cipher_out_size = buf };
	struct net_tls_ctx *sctx = ctx_make(&scfg);
	struct net_tls_ctx *cctx = ctx_make(&ccfg);
	unsigned char *up = malloc(big);
	unsigned char *down = malloc(big);
	assert_non_null(up);
	assert_non_null(down);
	fill_pattern(up, big, 1);
	fill_pattern(down, big, 2);

	struct end c, s;
	end_init(&c, cctx, "127.0.0.1");
	end_init(&s, sctx, NULL);
	handshake_ok(&c, &s);
	assert_int_equal(net_tls_write(c.c, up, big), 0);
	assert_int_equal(net_tls_write(s.c, down, big), 0);
	/* Only what fits in the output ring has become records so far. */
	assert_true(net_tls_out_pending(c.c) <= buf);
	assert_true(net_tls_plain_pending(c.c) > 0);
	pump(&c, &s);
	assert_int_equal(c.rc, 0);
	assert_int_equal(s.rc, 0);
	assert_int_equal(s.got_len, big);
	assert_memory_equal(s.got, up, big);
	assert_int_equal(c.got_len, big);
	assert_memory_equal(c.got, down, big);
	/* Split into records of at most 2^14 bytes of plaintext (RFC 8446
	 * §5.1) plus the AEAD overhead. */
	assert_true(c.sent.n_appdata >= big / 16384);
	assert_true(c.sent.max_body <= 16384 + 256);
	assert_int_equal(net_tls_plain_pending(c.c), 0);
	print_message("1 MiB through %zu-byte rings: %zu records up, %zu down\n", buf,
		      c.sent.n_appdata, s.sent.n_appdata);

	end_fini(&c);
	end_fini(&s);
	free(up);
	free(down);
	net_tls_ctx_free(cctx);
	net_tls_ctx_free(sctx);
}

static void test_large_writes(void **state)
{
	(void)state;
	large_writes(NET_TLS_CIPHER_BUF_DEFAULT);
	/* Rings smaller than a record: SSL_write stops mid-record and is
	 * retried, and the output ring wraps. */
	large_writes(NET_TLS_BUF_MIN);
	large_writes(NET_TLS_BUF_MIN + 1234);
}

/* ---- ALPN ---- */

static void alpn_case(const char *const *server, size_t n_server, const char *const *client,
		      size_t n_client, const char *want, int want_server_rc,
		      const char *want_server_msg)
{
	struct net_tls_config scfg = { .role = NET_TLS_SERVER,
				       .cert_file = g.server_cert,
				       .key_file = g.server_key,
				       .alpn = server,
				       .n_alpn = n_server };
	struct net_tls_config ccfg = {
		.role = NET_TLS_CLIENT, .trusted_ca_file = g.ca, .alpn = client, .n_alpn = n_client
	};
	struct net_tls_ctx *sctx = ctx_make(&scfg);
	struct net_tls_ctx *cctx = ctx_make(&ccfg);
	struct end c, s;
	end_init(&c, cctx, "127.0.0.1");
	end_init(&s, sctx, NULL);
	pump(&c, &s);
	if (want_server_rc == 0) {
		assert_int_equal(s.rc, 0);
		assert_int_equal(c.rc, 0);
		assert_string_equal(net_tls_alpn(c.c), want);
		assert_string_equal(net_tls_alpn(s.c), want);
	} else {
		assert_int_equal(s.rc, want_server_rc);
		assert_non_null(strstr(net_tls_errmsg(s.c), want_server_msg));
		assert_int_equal(c.rc, NET_ETLS);
		print_message("ALPN refused: server \"%s\", client \"%s\"\n", net_tls_errmsg(s.c),
			      net_tls_errmsg(c.c));
	}
	end_fini(&c);
	end_fini(&s);
	net_tls_ctx_free(cctx);
	net_tls_ctx_free(sctx);
}

static void test_alpn(void **state)
{
	(void)state;
	static const char *const grpc_gw[] = { "h2", "http/1.1" };
	static const char *const h1_h2[] = { "http/1.1", "h2" };
	static const char *const h1[] = { "http/1.1" };
	static const char *const raft[] = { "cairn-raft/1" };
	/* The server's preference wins over the client's order. */
	alpn_case(grpc_gw, 2, h1_h2, 2, "h2", 0, NULL);
	alpn_case(alpn_h2, 1, h1_h2, 2, "h2", 0, NULL);
	alpn_case(grpc_gw, 2, h1, 1, "http/1.1", 0, NULL);
	/* The peer port's own protocol. */
	alpn_case(raft, 1, raft, 1, "cairn-raft/1", 0, NULL);
	/* A client offering nothing gets no ALPN. */
	alpn_case(alpn_h2, 1, NULL, 0, "", 0, NULL);
	/* A client offering only what the server does not speak. */
	alpn_case(raft, 1, alpn_h2, 1, NULL, NET_ETLS, "no application protocol");
}

/* ---- certificates refused ---- */

static void test_mtls(void **state)
{
	(void)state;
	struct net_tls_ctx *sctx = server_ctx(true);
	struct net_tls_ctx *cctx = client_ctx(g.ca, g.client_cert, g.client_key);
	struct end c, s;
	end_init(&c, cctx, "127.0.0.1");
	end_init(&s, sctx, NULL);
	handshake_ok(&c, &s);
	struct net_tls_peer p;
	net_tls_peer(s.c, &p);
	assert_true(p.has_cert);
	assert_true(p.verified);
	assert_string_equal(p.subject, "CN=cairn-client,O=cairn");
	assert_string_equal(p.sans, "");
	end_fini(&c);
	end_fini(&s);
	net_tls_ctx_free(cctx);
	net_tls_ctx_free(sctx);
}

static void test_mtls_no_client_cert(void **state)
{
	(void)state;
	struct net_tls_ctx *sctx = server_ctx(true);
	struct net_tls_ctx *cctx = client_ctx(g.ca, NULL, NULL);
	struct end c, s;
	end_init(&c, cctx, "127.0.0.1");
	end_init(&s, sctx, NULL);
	assert_int_equal(net_tls_write(c.c, "secret", 6), 0);
	pump(&c, &s);
	assert_int_equal(s.rc, NET_ECERT);
	assert_int_equal(net_tls_failed(s.c), NET_ECERT);
	assert_string_equal(net_tls_errmsg(s.c), "handshake: peer did not return a certificate");
	assert_int_equal(s.got_len, 0);
	/* TLS 1.3: the client finished its side; the server's alert reaches
	 * it on its next read. */
	assert_int_equal(c.rc, NET_ECERT);
	assert_non_null(strstr(net_tls_errmsg(c.c), "certificate required"));
	print_message("no client certificate: server \"%s\", client \"%s\"\n", net_tls_errmsg(s.c),
		      net_tls_errmsg(c.c));
	/* Final: every later call says the same. */
	size_t n = 0;
	unsigned char buf[16];
	assert_int_equal(net_tls_read(s.c, buf, sizeof buf, &n), NET_ECERT);
	assert_int_equal(net_tls_write(s.c, "x", 1), NET_ECERT);
	assert_int_equal(net_tls_feed(s.c, "x", 1, &n), NET_ECERT);
	assert_int_equal(n, 0);
	assert_int_equal(net_tls_shutdown(s.c), NET_ECERT);
	assert_false(net_tls_is_open(s.c));
	assert_string_equal(net_tls_errmsg(s.c), "handshake: peer did not return a certificate");
	assert_int_equal(ERR_peek_error(), 0);
	end_fini(&c);
	end_fini(&s);
	net_tls_ctx_free(cctx);
	net_tls_ctx_free(sctx);
}

static void test_mtls_other_ca(void **state)
{
	(void)state;
	struct net_tls_ctx *sctx = server_ctx(true);
	struct net_tls_ctx *cctx = client_ctx(g.ca, g.other_cert, g.other_key);
	struct end c, s;
	end_init(&c, cctx, "127.0.0.1");
	end_init(&s, sctx, NULL);
	pump(&c, &s);
	assert_int_equal(s.rc, NET_ECERT);
	assert_string_equal(net_tls_errmsg(s.c),
			    "handshake: certificate verify failed: unable to get local issuer "
			    "certificate (depth 0: CN=intruder,O=other)");
	struct net_tls_peer p;
	net_tls_peer(s.c, &p);
	assert_true(p.has_cert);
	assert_false(p.verified);
	assert_string_equal(p.subject, "CN=intruder,O=other");
	assert_int_equal(c.rc, NET_ECERT);
	assert_non_null(strstr(net_tls_errmsg(c.c), "unknown ca"));
	print_message("client certificate from another CA: server \"%s\", client \"%s\"\n",
		      net_tls_errmsg(s.c), net_tls_errmsg(c.c));
	end_fini(&c);
	end_fini(&s);
	net_tls_ctx_free(cctx);
	net_tls_ctx_free(sctx);
}

/* The client dials one name, the certificate says others. */
static void name_refused(const char *dialed, const char *want)
{
	struct net_tls_ctx *sctx = server_ctx(false);
	struct net_tls_ctx *cctx = client_ctx(g.ca, NULL, NULL);
	struct end c, s;
	end_init(&c, cctx, dialed);
	end_init(&s, sctx, NULL);
	pump(&c, &s);
	assert_int_equal(c.rc, NET_ECERT);
	assert_string_equal(net_tls_errmsg(c.c), want);
	assert_false(net_tls_is_open(c.c));
	assert_int_equal(s.rc, NET_ECERT); /* the client's bad_certificate alert */
	print_message("dialed %s: client \"%s\", server \"%s\"\n", dialed, net_tls_errmsg(c.c),
		      net_tls_errmsg(s.c));
	end_fini(&c);
	end_fini(&s);
	net_tls_ctx_free(cctx);
	net_tls_ctx_free(sctx);
}

static void test_server_name_mismatch(void **state)
{
	(void)state;
	name_refused("127.0.0.2",
		     "handshake: certificate verify failed: IP address mismatch (depth 0: "
		     "CN=cairn-server,O=cairn)");
	name_refused("::1", "handshake: certificate verify failed: IP address mismatch (depth 0: "
			    "CN=cairn-server,O=cairn)");
	name_refused("cairn.example.com",
		     "handshake: certificate verify failed: hostname mismatch (depth 0: "
		     "CN=cairn-server,O=cairn)");
	/* The subject's CN is not a name the client accepts (SANs only). */
	name_refused("cairn-server", "handshake: certificate verify failed: hostname mismatch "
				     "(depth 0: CN=cairn-server,O=cairn)");
}

static void test_server_other_ca(void **state)
{
	(void)state;
	struct net_tls_config scfg = { .role = NET_TLS_SERVER,
				       .cert_file = g.other_cert,
				       .key_file = g.other_key };
	struct net_tls_ctx *sctx = ctx_make(&scfg);
	struct net_tls_ctx *cctx = client_ctx(g.ca, NULL, NULL);
	struct end c, s;
	end_init(&c, cctx, "127.0.0.1");
	end_init(&s, sctx, NULL);
	pump(&c, &s);
	assert_int_equal(c.rc, NET_ECERT);
	assert_string_equal(net_tls_errmsg(c.c),
			    "handshake: certificate verify failed: unable to get local issuer "
			    "certificate (depth 0: CN=intruder,O=other)");
	end_fini(&c);
	end_fini(&s);
	net_tls_ctx_free(cctx);
	net_tls_ctx_free(sctx);
}

/* insecure_skip_verify: any certificate, any name; the result is still
 * reported for logs. */
static void test_client_without_verification(void **state)
{
	(void)state;
	struct net_tls_config scfg = { .role = NET_TLS_SERVER,
				       .cert_file = g.other_cert,
				       .key_file = g.other_key,
				       .alpn = alpn_h2,
				       .n_alpn = 1 };
	struct net_tls_config ccfg = { .role = NET_TLS_CLIENT,
				       .trusted_ca_file = g.ca,
				       .insecure_skip_verify = true,
				       .alpn = alpn_h2,
				       .n_alpn = 1 };
	struct net_tls_ctx *sctx = ctx_make(&scfg);
	struct net_tls_ctx *cctx = ctx_make(&ccfg);
	const char *names[] = { "10.9.8.7", NULL };
	for (size_t i = 0; i < 2; i++) {
		struct end c, s;
		end_init(&c, cctx, names[i]);
		end_init(&s, sctx, NULL);
		assert_int_equal(net_tls_write(c.c, "hi", 2), 0);
		handshake_ok(&c, &s);
		assert_int_equal(s.got_len, 2);
		struct net_tls_peer p;
		net_tls_peer(c.c, &p);
		assert_true(p.has_cert);
		assert_false(p.verified);
		assert_string_equal(p.verify, "unable to get local issuer certificate");
		assert_string_equal(p.subject, "CN=intruder,O=other");
		end_fini(&c);
		end_fini(&s);
	}
	net_tls_ctx_free(cctx);
	net_tls_ctx_free(sctx);
}

/* ---- bad input ---- */

static void garbage_case(const void *bytes, size_t len, const char *want, bool alert)
{
	struct net_tls_ctx *sctx = server_ctx(false);
	struct end s;
	end_init(&s, sctx, NULL);
	size_t used = 0;
	int rc = net_tls_feed(s.c, bytes, len, &used);
	assert_int_equal(ERR_peek_error(), 0);
	assert_int_equal(rc, NET_ETLS);
	assert_int_equal(used, len);
	assert_string_equal(net_tls_errmsg(s.c), want);
	/* An alert telling the sender is waiting to be sent, except to what
	 * does not speak TLS at all. */
	assert_int_equal(net_tls_out_pending(s.c) > 0, alert);
	end_fini(&s);
	net_tls_ctx_free(sctx);
}

static void test_garbage(void **state)
{
	(void)state;
	const char http[] = "GET /v3/kv/range HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
	garbage_case(http, sizeof http - 1, "handshake: http request", false);
	unsigned char zeros[64] = { 0 };
	garbage_case(zeros, sizeof zeros, "handshake: wrong version number", false);
	/* A handshake record whose body is not a ClientHello. */
	unsigned char rec[64] = { 0x16, 0x03, 0x01, 0x00, 59, 0x07, 0x00, 0x00, 55 };
	garbage_case(rec, sizeof rec, "handshake: unexpected message", true);
	/* A record longer than TLS allows. */
	unsigned char big[] = { 0x16, 0x03, 0x03, 0xff, 0xff, 1, 2, 3 };
	garbage_case(big, sizeof big, "handshake: packet length too long", true);
}

/* Random bytes, and random bytes behind a plausible record header, never
 * crash a server and always end in NET_ETLS with a message or in waiting
 * for more. */
static void test_garbage_random(void **state)
{
	(void)state;
	struct net_tls_ctx *sctx = server_ctx(true);
	uint32_t x = 12345;
	unsigned char buf[4096];
	for (int i = 0; i < 500; i++) {
		struct end s;
		end_init(&s, sctx, NULL);
		x = x * 1664525u + 1013904223u;
		size_t len = 1 + (x >> 8) % sizeof buf;
		fill_pattern(buf, len, x);
		if (i % 2 == 0 && len > 9) {
			buf[0] = 0x16; /* handshake */
			buf[1] = 0x03;
			buf[2] = 0x01;
			buf[3] = (unsigned char)((len - 5) >> 8);
			buf[4] = (unsigned char)(len - 5);
			buf[5] = 0x01; /* ClientHello */
		}
		size_t used = 0;
		int rc = net_tls_feed(s.c, buf, len, &used);
		assert_int_equal(ERR_peek_error(), 0);
		assert_true(rc == 0 || rc == NET_ETLS);
		if (rc == 0) {
			rc = net_tls_feed_eof(s.c);
			assert_int_equal(rc, NET_ETLS);
		}
		assert_true(strncmp(net_tls_errmsg(s.c), "handshake: ", 11) == 0);
		assert_true(strlen(net_tls_errmsg(s.c)) > 11);
		assert_int_equal(ERR_peek_error(), 0);
		end_fini(&s);
	}
	net_tls_ctx_free(sctx);
}

/* A client fed garbage in answer to its ClientHello. */
static void test_garbage_to_client(void **state)
{
	(void)state;
	struct net_tls_ctx *cctx = client_ctx(g.ca, NULL, NULL);
	struct end c;
	end_init(&c, cctx, "127.0.0.1");
	const char reply[] = "HTTP/1.1 400 Bad Request\r\n\r\n";
	size_t used = 0;
	assert_int_equal(net_tls_feed(c.c, reply, sizeof reply - 1, &used), NET_ETLS);
	assert_string_equal(net_tls_errmsg(c.c), "handshake: wrong version number");
	end_fini(&c);
	net_tls_ctx_free(cctx);
}

/* A record altered on the way fails its AEAD check. */
static void test_corrupt_record(void **state)
{
	(void)state;
	struct net_tls_ctx *sctx = server_ctx(false);
	struct net_tls_ctx *cctx = client_ctx(g.ca, NULL, NULL);
	struct end c, s;
	end_init(&c, cctx, "127.0.0.1");
	end_init(&s, sctx, NULL);
	handshake_ok(&c, &s);
	assert_int_equal(net_tls_write(c.c, "payload", 7), 0);
	unsigned char ct[256];
	size_t n = 0;
	assert_int_equal(net_tls_out_take(c.c, ct, sizeof ct, &n), 0);
	assert_true(n > 10);
	ct[n - 3] ^= 0x40;
	size_t used = 0;
	assert_int_equal(net_tls_feed(s.c, ct, n, &used), 0); /* not read yet */
	unsigned char out[64];
	assert_int_equal(net_tls_read(s.c, out, sizeof out, &n), NET_ETLS);
	assert_int_equal(n, 0);
	assert_string_equal(net_tls_errmsg(s.c), "read: decryption failed or bad record mac");
	assert_int_equal(ERR_peek_error(), 0);
	end_fini(&c);
	end_fini(&s);
	net_tls_ctx_free(cctx);
	net_tls_ctx_free(sctx);
}

/* A record that arrives in pieces is delivered whole; one cut short by
 * the end of the stream is an error, not data. */
static void test_truncated_records(void **state)
{
	(void)state;
	struct net_tls_ctx *sctx = server_ctx(false);
	struct net_tls_ctx *cctx = client_ctx(g.ca, NULL, NULL);
	struct end c, s;
	end_init(&c, cctx, "127.0.0.1");
	end_init(&s, sctx, NULL);
	handshake_ok(&c, &s);

	assert_int_equal(net_tls_write(c.c, "hello", 5), 0);
	unsigned char ct[256];
	size_t n = 0, used = 0, got = 0;
	assert_int_equal(net_tls_out_take(c.c, ct, sizeof ct, &n), 0);
	unsigned char out[64];
	/* Byte by byte: nothing until the last byte of the record. */
	for (size_t i = 0; i + 1 < n; i++) {
		assert_int_equal(net_tls_feed(s.c, ct + i, 1, &used), 0);
		assert_int_equal(used, 1);
		assert_int_equal(net_tls_read(s.c, out, sizeof out, &got), 0);
		assert_int_equal(got, 0);
	}
	assert_int_equal(net_tls_feed(s.c, ct + n - 1, 1, &used), 0);
	assert_int_equal(net_tls_read(s.c, out, sizeof out, &got), 0);
	assert_int_equal(got, 5);
	assert_memory_equal(out, "hello", 5);

	/* Half a record, then the end of the stream. */
	assert_int_equal(net_tls_write(c.c, "cut", 3), 0);
	assert_int_equal(net_tls_out_take(c.c, ct, sizeof ct, &n), 0);
	assert_int_equal(net_tls_feed(s.c, ct, n / 2, &used), 0);
	assert_int_equal(net_tls_read(s.c, out, sizeof out, &got), 0);
	assert_int_equal(got, 0);
	assert_int_equal(net_tls_feed_eof(s.c), 0);
	assert_int_equal(net_tls_read(s.c, out, sizeof out, &got), NET_ETLS);
	assert_int_equal(got, 0);
	assert_string_equal(net_tls_errmsg(s.c), "read: unexpected eof while reading");
	assert_int_equal(ERR_peek_error(), 0);

	end_fini(&c);
	end_fini(&s);
	net_tls_ctx_free(cctx);
	net_tls_ctx_free(sctx);
}

/* The end of the stream during the handshake fails it at once. */
static void test_eof_in_handshake(void **state)
{
	(void)state;
	struct net_tls_ctx *cctx = client_ctx(g.ca, NULL, NULL);
	struct end c;
	end_init(&c, cctx, "127.0.0.1");
	assert_int_equal(net_tls_feed_eof(c.c), NET_ETLS);
	assert_string_equal(net_tls_errmsg(c.c), "handshake: unexpected eof while reading");
	end_fini(&c);
	net_tls_ctx_free(cctx);
}

/* ---- close_notify ---- */

static void test_close_notify(void **state)
{
	(void)state;
	struct net_tls_ctx *sctx = server_ctx(false);
	struct net_tls_ctx *cctx = client_ctx(g.ca, NULL, NULL);
	struct end c, s;
	end_init(&c, cctx, "127.0.0.1");
	end_init(&s, sctx, NULL);
	/* Data, then close, both requested before the handshake: the close
	 * comes after the data and after the handshake. */
	assert_int_equal(net_tls_write(c.c, "last words", 10), 0);
	assert_int_equal(net_tls_shutdown(c.c), 0);
	assert_false(net_tls_close_sent(c.c));
	assert_int_equal(net_tls_write(c.c, "more", 4), NET_ECLOSED);
	assert_string_equal(net_tls_errmsg(c.c), "write: after shutdown");
	assert_int_equal(net_tls_write_space(c.c), 0);
	assert_int_equal(net_tls_failed(c.c), 0);
	pump(&c, &s);
	assert_true(net_tls_close_sent(c.c));
	assert_int_equal(s.got_len, 10);
	assert_memory_equal(s.got, "last words", 10);
	assert_true(s.closed);
	assert_true(net_tls_peer_closed(s.c));
	assert_int_equal(s.rc, 0);
	/* Reading on says closed, without failing. */
	unsigned char out[16];
	size_t n = 0;
	assert_int_equal(net_tls_read(s.c, out, sizeof out, &n), NET_ECLOSED);
	assert_int_equal(net_tls_failed(s.c), 0);

	/* The server may still answer, then closes too (TLS 1.3 half-close). */
	assert_int_equal(net_tls_write(s.c, "bye", 3), 0);
	assert_int_equal(net_tls_shutdown(s.c), 0);
	assert_int_equal(net_tls_shutdown(s.c), 0); /* idempotent */
	assert_true(net_tls_close_sent(s.c));
	pump(&c, &s);
	assert_int_equal(c.got_len, 3);
	assert_memory_equal(c.got, "bye", 3);
	assert_true(c.closed);
	/* The end of the stream after close_notify is clean. */
	assert_int_equal(net_tls_feed_eof(c.c), 0);
	assert_int_equal(net_tls_read(c.c, out, sizeof out, &n), NET_ECLOSED);
	assert_int_equal(c.rc, 0);
	assert_int_equal(net_tls_out_pending(c.c), 0);
	assert_int_equal(net_tls_out_pending(s.c), 0);
	end_fini(&c);
	end_fini(&s);
	net_tls_ctx_free(cctx);
	net_tls_ctx_free(sctx);
}

/* ---- bounds ---- */

static void test_bounds(void **state)
{
	(void)state;
	const size_t max = NET_TLS_BUF_MIN * 4;
	struct net_tls_config scfg = { .role = NET_TLS_SERVER,
				       .cert_file = g.server_cert,
				       .key_file = g.server_key,
				       .cipher_in_size = NET_TLS_BUF_MIN };
	struct net_tls_config ccfg = { .role = NET_TLS_CLIENT,
				       .trusted_ca_file = g.ca,
				       .max_plain_out = max,
				       .cipher_out_size = NET_TLS_BUF_MIN };
	struct net_tls_ctx *sctx = ctx_make(&scfg);
	struct net_tls_ctx *cctx = ctx_make(&ccfg);
	struct end c, s;
	end_init(&c, cctx, "127.0.0.1");
	end_init(&s, sctx, NULL);

	/* The plaintext queue during the handshake: all or nothing. */
	unsigned char *data = malloc(max + 1);
	assert_non_null(data);
	fill_pattern(data, max + 1, 7);
	assert_int_equal(net_tls_write_space(c.c), max);
	assert_int_equal(net_tls_write(c.c, data, max + 1), NET_EAGAIN);
	assert_int_equal(net_tls_plain_pending(c.c), 0);
	assert_int_equal(net_tls_write(c.c, data, max - 10), 0);
	assert_int_equal(net_tls_write(c.c, data + max - 10, 11), NET_EAGAIN);
	assert_string_equal(net_tls_errmsg(c.c),
			    "write: plaintext queue full: 16374 of 16384 bytes queued during the "
			    "handshake, 11 more refused");
	assert_int_equal(net_tls_failed(c.c), 0);
	assert_int_equal(net_tls_write(c.c, data + max - 10, 10), 0);
	assert_int_equal(net_tls_write_space(c.c), 0);
	/* Not final: the next successful call clears the message. */
	assert_int_equal(net_tls_write(c.c, "", 0), 0);
	assert_string_equal(net_tls_errmsg(c.c), "");

	/* The real server gets it all after the handshake. */
	handshake_ok(&c, &s);
	assert_int_equal(s.got_len, max);
	assert_memory_equal(s.got, data, max);
	assert_int_equal(net_tls_write_space(c.c), max);

	/* The input ring takes what fits: 3 rings' worth of records fed at
	 * once without reading is taken one ring at a time. */
	assert_int_equal(net_tls_write(c.c, data, 3 * NET_TLS_BUF_MIN), 0);
	size_t ct_cap = 4 * NET_TLS_BUF_MIN, ct_len = 0;
	unsigned char *ct = malloc(ct_cap);
	assert_non_null(ct);
	assert_int_equal(net_tls_out_take(c.c, ct, ct_cap, &ct_len), 0);
	assert_true(ct_len > 3 * NET_TLS_BUF_MIN);
	assert_int_equal(net_tls_plain_pending(c.c), 0);
	size_t off = 0, used = 0;
	assert_int_equal(net_tls_feed(s.c, ct, ct_len, &used), 0);
	assert_int_equal(used, NET_TLS_BUF_MIN);
	assert_int_equal(net_tls_feed(s.c, ct + used, ct_len - used, &used), 0);
	assert_int_equal(used, 0);
	off = NET_TLS_BUF_MIN;
	s.got_len = 0;
	end_drain(&s);
	while (off < ct_len) {
		assert_int_equal(net_tls_feed(s.c, ct + off, ct_len - off, &used), 0);
		assert_true(used > 0);
		off += used;
		end_drain(&s);
	}
	assert_int_equal(s.got_len, 3 * NET_TLS_BUF_MIN);
	assert_memory_equal(s.got, data, 3 * NET_TLS_BUF_MIN);
	free(ct);

	/* Bad sizes are refused when the context is built. */
	struct net_tls_ctx *bad = NULL;
	char msg[NET_TLS_ERRMSG_MAX];
	ccfg.cipher_in_size = NET_TLS_BUF_MIN - 1;
	assert_int_equal(net_tls_ctx_new(&ccfg, &bad, msg, sizeof msg), NET_EINVAL);
	assert_null(bad);
	assert_non_null(strstr(msg, "buffer size 4095"));

	free(data);
	end_fini(&c);
	end_fini(&s);
	net_tls_ctx_free(cctx);
	net_tls_ctx_free(sctx);
}

/* ---- protocol versions, with raw OpenSSL clients ---- */

struct raw {
	SSL_CTX *sc;
	SSL *ssl;
	BIO *net;
};

static void raw_client(struct raw *r, int max_version, int seclevel, const char *ciphers)
{
	r->sc = SSL_CTX_new(TLS_client_method());
	assert_non_null(r->sc);
	SSL_CTX_set_security_level(r->sc, seclevel);
	assert_int_equal(SSL_CTX_set_min_proto_version(r->sc, 0), 1);
	assert_int_equal(SSL_CTX_set_max_proto_version(r->sc, max_version), 1);
	if (ciphers != NULL) {
		assert_int_equal(SSL_CTX_set_cipher_list(r->sc, ciphers), 1);
	}
	assert_int_equal(SSL_CTX_load_verify_locations(r->sc, g.ca, NULL), 1);
	SSL_CTX_set_verify(r->sc, SSL_VERIFY_PEER, NULL);
	r->ssl = SSL_new(r->sc);
	assert_non_null(r->ssl);
	BIO *inner = NULL;
	assert_int_equal(BIO_new_bio_pair(&inner, 0, &r->net, 0), 1);
	SSL_set_bio(r->ssl, inner, inner);
	SSL_set_connect_state(r->ssl);
	assert_int_equal(SSL_set1_host(r->ssl, "localhost"), 1);
}

static void raw_free(struct raw *r)
{
	SSL_free(r->ssl);
	BIO_free(r->net);
	SSL_CTX_free(r->sc);
	ERR_clear_error();
}

/* Runs a raw client against a server end; returns the client's
 * SSL_do_handshake result. *first receives the client's first bytes. */
static int raw_pump(struct raw *r, struct end *s, unsigned char *first, size_t first_cap)
{
	int hs = 0;
	bool first_done = false;
	for (int i = 0; i < 1000; i++) {
		bool any = false;
		hs = SSL_do_handshake(r->ssl);
		char *p = NULL;
		int n;
		while ((n = BIO_nread0(r->net, &p)) > 0) {
			if (!first_done && first != NULL) {
				memcpy(first, p, (size_t)n < first_cap ? (size_t)n : first_cap);
				first_done = true;
			}
			size_t used = 0;
			int rc = net_tls_feed(s->c, p, (size_t)n, &used);
			if (rc != 0 && s->rc == 0) {
				s->rc = rc;
			}
			if (used == 0) {
				break;
			}
			assert_int_equal(BIO_nread(r->net, &p, (int)used), (int)used);
			any = true;
		}
		any = end_drain(s) || any;
		const void *q = NULL;
		size_t m;
		while ((m = net_tls_out_peek(s->c, &q)) > 0) {
			int w = BIO_write(r->net, q, (int)m);
			if (w <= 0) {
				break;
			}
			assert_int_equal(net_tls_out_consume(s->c, (size_t)w), s->rc);
			any = true;
		}
		if (!any) {
			break;
		}
	}
	ERR_clear_error();
	return hs;
}

static void test_tls11_refused(void **state)
{
	(void)state;
	struct net_tls_ctx *sctx = server_ctx(false);
	struct end s;
	end_init(&s, sctx, NULL);
	/* OpenSSL 3 allows TLS 1.1 only at security level 0, and with SHA-1
	 * suites: this client takes both. */
	struct raw r;
	raw_client(&r, TLS1_1_VERSION, 0, "DEFAULT:@SECLEVEL=0");
	unsigned char first[16] = { 0 };
	int hs = raw_pump(&r, &s, first, sizeof first);
	assert_int_not_equal(hs, 1);
	/* The client did offer TLS 1.1: its ClientHello's version field
	 * (after the 5-byte record header and 4-byte message header). */
	assert_int_equal(first[0], 0x16);
	assert_int_equal(first[5], 0x01);
	assert_int_equal(first[9], 0x03);
	assert_int_equal(first[10], 0x02);
	assert_int_equal(s.rc, NET_ETLS);
	assert_string_equal(net_tls_errmsg(s.c), "handshake: unsupported protocol");
	print_message("TLS 1.1 client: server \"%s\"\n", net_tls_errmsg(s.c));
	raw_free(&r);
	end_fini(&s);
	net_tls_ctx_free(sctx);
	assert_int_equal(ERR_peek_error(), 0);
}

static void test_tls12_client(void **state)
{
	(void)state;
	struct net_tls_ctx *sctx = server_ctx(false);
	struct end s;
	end_init(&s, sctx, NULL);
	struct raw r;
	raw_client(&r, TLS1_2_VERSION, 2, NULL);
	assert_int_equal(raw_pump(&r, &s, NULL, 0), 1);
	assert_int_equal(s.rc, 0);
	assert_true(net_tls_is_open(s.c));
	struct net_tls_peer p;
	net_tls_peer(s.c, &p);
	assert_string_equal(p.version, "TLSv1.2");
	assert_non_null(strstr(p.cipher, "ECDHE-"));
	assert_true(strstr(p.cipher, "GCM") != NULL || strstr(p.cipher, "CHACHA20") != NULL);
	print_message("TLS 1.2 client: %s %s\n", p.version, p.cipher);
	/* Data from the raw client arrives. */
	size_t w = 0;
	assert_int_equal(SSL_write_ex(r.ssl, "v1.2", 4, &w), 1);
	(void)raw_pump(&r, &s, NULL, 0);
	assert_int_equal(s.got_len, 4);
	assert_memory_equal(s.got, "v1.2", 4);

	/* Renegotiation is refused (a no_renegotiation alert), which an
	 * OpenSSL client answers by failing the connection. */
	assert_int_equal(SSL_renegotiate(r.ssl), 1);
	assert_int_not_equal(raw_pump(&r, &s, NULL, 0), 1);
	assert_int_equal(SSL_renegotiate_pending(r.ssl), 1);
	assert_int_equal(s.rc, NET_ETLS);
	assert_string_equal(net_tls_errmsg(s.c),
			    "read: sslv3 alert handshake failure (SSL alert number 40)");
	raw_free(&r);
	end_fini(&s);

	/* A TLS 1.2 client with only CBC suites finds nothing in common. */
	end_init(&s, sctx, NULL);
	raw_client(&r, TLS1_2_VERSION, 2, "ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES128-SHA256");
	assert_int_not_equal(raw_pump(&r, &s, NULL, 0), 1);
	assert_int_equal(s.rc, NET_ETLS);
	assert_string_equal(net_tls_errmsg(s.c), "handshake: no shared cipher");
	raw_free(&r);
	end_fini(&s);
	net_tls_ctx_free(sctx);
}

/* ---- contexts refused ---- */

static void ctx_refused(const struct net_tls_config *cfg, int want_rc, const char *want)
{
	struct net_tls_ctx *ctx = (struct net_tls_ctx *)1;
	char msg[NET_TLS_ERRMSG_MAX];
	int rc = net_tls_ctx_new(cfg, &ctx, msg, sizeof msg);
	assert_int_equal(rc, want_rc);
	assert_null(ctx);
	if (strstr(msg, want) == NULL) {
		fail_msg("message \"%s\" lacks \"%s\"", msg, want);
	}
	assert_int_equal(ERR_peek_error(), 0);
	print_message("refused: %s\n", msg);
}

static void test_ctx_errors(void **state)
{
	(void)state;
	struct net_tls_config cfg = { .role = NET_TLS_SERVER,
				      .cert_file = "/nonexistent/server.pem",
				      .key_file = g.server_key };
	ctx_refused(&cfg, NET_ECERT, "tls: cert-file /nonexistent/server.pem: No such file");
	cfg.flag_prefix = "peer-";
	ctx_refused(&cfg, NET_ECERT, "tls: peer-cert-file /nonexistent/server.pem");
	cfg.flag_prefix = NULL;
	cfg.cert_file = g.garbage;
	ctx_refused(&cfg, NET_ECERT, "tls: cert-file ");
	cfg.cert_file = g.server_cert;
	cfg.key_file = g.client_key;
	ctx_refused(&cfg, NET_ECERT, "client.key: key values mismatch");
	cfg.key_file = g.server_cert; /* no key in it */
	ctx_refused(&cfg, NET_ECERT, "tls: key-file ");
	cfg.key_file = g.server_key;
	cfg.trusted_ca_file = "/nonexistent/ca.pem";
	ctx_refused(&cfg, NET_ECERT, "tls: trusted-ca-file /nonexistent/ca.pem");
	cfg.trusted_ca_file = NULL;
	cfg.client_cert_auth = true;
	ctx_refused(&cfg, NET_EINVAL, "tls: client-cert-auth needs trusted-ca-file");
	cfg.client_cert_auth = false;
	cfg.cert_file = NULL;
	ctx_refused(&cfg, NET_EINVAL, "tls: a server needs cert-file and key-file");

	static const char *const empty[] = { "" };
	struct net_tls_config ccfg = { .role = NET_TLS_CLIENT, .alpn = empty, .n_alpn = 1 };
	ctx_refused(&ccfg, NET_EINVAL, "ALPN protocol 0");
	ccfg.n_alpn = NET_TLS_ALPN_MAX + 1;
	ctx_refused(&ccfg, NET_EINVAL, "ALPN protocols");
	ccfg.n_alpn = 0;
	ccfg.cert_file = g.client_cert;
	ctx_refused(&ccfg, NET_EINVAL, "cert-file and key-file go together");

	/* Connections: a verifying client needs the name it dialed. */
	struct net_tls_ctx *cctx = client_ctx(g.ca, NULL, NULL);
	struct net_tls_conn *c = (struct net_tls_conn *)1;
	assert_int_equal(net_tls_conn_new(cctx, NULL, &c), NET_EINVAL);
	assert_null(c);
	assert_int_equal(net_tls_conn_new(cctx, "", &c), NET_EINVAL);
	net_tls_ctx_free(cctx);
	struct net_tls_ctx *sctx = server_ctx(false);
	assert_int_equal(net_tls_conn_new(sctx, "localhost", &c), NET_EINVAL);
	net_tls_ctx_free(sctx);
	assert_int_equal(ERR_peek_error(), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_handshake),
		cmocka_unit_test(test_handshake_by_dns_name),
		cmocka_unit_test(test_shared_context),
		cmocka_unit_test(test_data_both_ways),
		cmocka_unit_test(test_large_writes),
		cmocka_unit_test(test_alpn),
		cmocka_unit_test(test_mtls),
		cmocka_unit_test(test_mtls_no_client_cert),
		cmocka_unit_test(test_mtls_other_ca),
		cmocka_unit_test(test_server_name_mismatch),
		cmocka_unit_test(test_server_other_ca),
		cmocka_unit_test(test_client_without_verification),
		cmocka_unit_test(test_garbage),
		cmocka_unit_test(test_garbage_random),
		cmocka_unit_test(test_garbage_to_client),
		cmocka_unit_test(test_corrupt_record),
		cmocka_unit_test(test_truncated_records),
		cmocka_unit_test(test_eof_in_handshake),
		cmocka_unit_test(test_close_notify),
		cmocka_unit_test(test_bounds),
		cmocka_unit_test(test_tls11_refused),
		cmocka_unit_test(test_tls12_client),
		cmocka_unit_test(test_ctx_errors),
	};
	return cmocka_run_group_tests(tests, pki_setup, pki_teardown);
}

/* tls.c: the I/O-free TLS endpoint of tls.h, over an OpenSSL BIO pair.
 *
 * Each connection owns an SSL object and a BIO pair: the SSL reads and
 * writes its half, the connection feeds and drains the other ("net"). The
 * pair's two ring buffers are the ciphertext bounds (cipher_in_size: bytes
 * written to net and not yet read by the SSL; cipher_out_size: bytes the SSL
 * wrote and not yet taken from net). Plaintext written by the protocol waits
 * in wbuf (at most max_plain_out) until the handshake is done and the output
 * ring has room; SSL_MODE_ENABLE_PARTIAL_WRITE lets SSL_write return after
 * each record, and SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER lets wbuf move
 * between the retries OpenSSL requires after WANT_WRITE (SSL_write(3)). */
#include "tls.h"

#include <arpa/inet.h>
#include <assert.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

/* TLS 1.2 suites: forward secrecy and AEAD only (TLS 1.3's are all AEAD and
 * stay OpenSSL's defaults). ECDSA and RSA certificates both work. */
#define TLS_CIPHERS_12 "ECDHE+AESGCM:ECDHE+CHACHA20"
/* Server session cache and ticket scope; needed once client certificates
 * are verified, else OpenSSL refuses resumption (SSL_CTX_set_session_id_context(3)). */
#define TLS_SESSION_ID_CTX "cairn"
#define TLS_SESSION_CACHE_MAX 1024
#define TLS_WBUF_INITIAL ((size_t)16 << 10)
#define TLS_WBUF_KEEP ((size_t)64 << 10) /* larger queues are freed once empty */
#define TLS_NAME_MAX 253 /* a DNS name (RFC 1035 §2.3.4); IP literals are shorter */

_Static_assert(NET_TLS_BUF_MIN <= NET_TLS_CIPHER_BUF_DEFAULT, "default below minimum");
_Static_assert(NET_TLS_BUF_MIN <= NET_TLS_PLAIN_OUT_DEFAULT, "default below minimum");
_Static_assert(NET_TLS_BUF_MAX <= (size_t)INT_MAX, "BIO calls take int lengths");
_Static_assert(NET_TLS_ERRMSG_MAX >= 64, "messages need room");

struct net_tls_ctx {
	SSL_CTX *ssl_ctx;
	enum net_tls_role role;
	bool skip_verify;
	size_t max_plain_out;
	size_t cipher_in_size;
	size_t cipher_out_size;
	size_t n_conns; /* live connections; must be 0 at free */
	size_t alpn_len;
	unsigned char alpn[NET_TLS_ALPN_MAX * 256]; /* wire format: length-prefixed names */
};

struct net_tls_conn {
	struct net_tls_ctx *ctx;
	SSL *ssl;
	BIO *net; /* our half of the pair: fed ciphertext in, ciphertext to send out */

	unsigned char *wbuf; /* queued plaintext: wbuf[woff .. woff+wlen) */
	size_t wcap;
	size_t woff;
	size_t wlen;

	int err; /* final error, or 0 */
	bool open;
	bool eof_fed;
	bool peer_closed;
	bool shutdown_wanted;
	bool close_sent;
	bool peer_filled;

	/* What the peer is, filled by tls_peer_fill. */
	bool has_cert;
	bool verified;
	bool leaf_seen;      /* the verify callback saw the peer's leaf certificate */
	const char *version; /* static strings from OpenSSL */
	const char *cipher;
	const char *verify;
	char alpn[256];
	char subject[256];
	char issuer[256];
	char sans[512];

	char verify_detail[200]; /* first chain failure: depth and subject */
	char errmsg[NET_TLS_ERRMSG_MAX];
};

/* ---- messages ---- */

/* Appends formatted text to buf (cap bytes, NUL-terminated), truncating. */
static void tls_msg_add(char *buf, size_t cap, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void tls_msg_add(char *buf, size_t cap, const char *fmt, ...)
{
	assert(cap > 0);
	size_t len = strnlen(buf, cap);
	if (len + 1 >= cap) {
		return;
	}
	va_list ap;
	va_start(ap, fmt);
	(void)vsnprintf(buf + len, cap - len, fmt, ap);
	va_end(ap);
}

/* The reason text of one queued OpenSSL error. System errors have none in
 * OpenSSL 3 (ERR_reason_error_string(3)), so strerror_r gives it. */
static const char *tls_reason(unsigned long e, char *tmp, size_t tmplen)
{
	if (ERR_SYSTEM_ERROR(e)) {
		if (strerror_r(ERR_GET_REASON(e), tmp, tmplen) != 0) {
			(void)snprintf(tmp, tmplen, "system error %d", ERR_GET_REASON(e));
		}
		return tmp;
	}
	const char *r = ERR_reason_error_string(e);
	if (r == NULL) {
		(void)snprintf(tmp, tmplen, "error %08lx", e);
		return tmp;
	}
	return r;
}

/* Reasons meaning a certificate was refused: by us, or by the peer's alert. */
static bool tls_reason_is_cert(unsigned long e)
{
	if (ERR_SYSTEM_ERROR(e) || ERR_GET_LIB(e) != ERR_LIB_SSL) {
		return false;
	}
	switch (ERR_GET_REASON(e)) {
	case SSL_R_CERTIFICATE_VERIFY_FAILED:
	case SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE:
	case SSL_R_TLSV13_ALERT_CERTIFICATE_REQUIRED:
	case SSL_R_SSLV3_ALERT_BAD_CERTIFICATE:
	case SSL_R_SSLV3_ALERT_UNSUPPORTED_CERTIFICATE:
	case SSL_R_SSLV3_ALERT_CERTIFICATE_REVOKED:
	case SSL_R_SSLV3_ALERT_CERTIFICATE_EXPIRED:
	case SSL_R_SSLV3_ALERT_CERTIFICATE_UNKNOWN:
	case SSL_R_TLSV1_ALERT_UNKNOWN_CA:
		return true;
	default:
		return false;
	}
}

/* Drains the whole error queue into buf after whatever it holds: the
 * oldest error's reason and detail (the root cause; later entries are the
 * callers that passed it up), then for a verify failure the chain's reason
 * from ssl. Returns NET_ECERT or NET_ETLS by the reasons seen; whether
 * anything was queued goes to *any. */
static int tls_drain(char *buf, size_t cap, SSL *ssl, const char *verify_detail, bool *any)
{
	int code = NET_ETLS;
	bool first = true;
	bool verify_failed = false;
	unsigned long e;
	const char *data = NULL;
	int flags = 0;
	char tmp[128];

	while ((e = ERR_get_error_all(NULL, NULL, NULL, &data, &flags)) != 0) {
		if (tls_reason_is_cert(e)) {
			code = NET_ECERT;
		}
		if (!ERR_SYSTEM_ERROR(e) && ERR_GET_LIB(e) == ERR_LIB_SSL &&
		    ERR_GET_REASON(e) == SSL_R_CERTIFICATE_VERIFY_FAILED) {
			verify_failed = true;
		}
		if (first) {
			tls_msg_add(buf, cap, "%s", tls_reason(e, tmp, sizeof tmp));
			if (data != NULL && (flags & ERR_TXT_STRING) != 0 && data[0] != '\0') {
				tls_msg_add(buf, cap, " (%s)", data);
			}
			first = false;
		}
	}
	if (verify_failed && ssl != NULL) {
		long v = SSL_get_verify_result(ssl);
		tls_msg_add(buf, cap, ": %s", X509_verify_cert_error_string(v));
		if (verify_detail != NULL && verify_detail[0] != '\0') {
			tls_msg_add(buf, cap, " (%s)", verify_detail);
		}
	}
	*any = !first;
	return code;
}

/* ---- peer information ---- */

/* Copies n bytes of certificate text into out, replacing anything
 * unprintable: names come from the peer and end up in logs. */
static void tls_copy_printable(char *out, size_t cap, const unsigned char *s, size_t n)
{
	size_t len = strnlen(out, cap);
	for (size_t i = 0; i < n && len + 1 < cap; i++) {
		unsigned char ch = s[i];
		out[len++] = (ch >= 0x20 && ch < 0x7f) ? (char)ch : '?';
	}
	out[len < cap ? len : cap - 1] = '\0';
}

static void tls_name_print(X509_NAME *name, char *out, size_t cap)
{
	out[0] = '\0';
	BIO *m = BIO_new(BIO_s_mem());
	if (m == NULL) {
		return;
	}
	/* RFC 2253 flags escape control characters and non-ASCII. */
	if (X509_NAME_print_ex(m, name, 0, XN_FLAG_RFC2253) >= 0) {
		int n = BIO_read(m, out, (int)(cap - 1));
		out[n > 0 ? (size_t)n : 0] = '\0';
	}
	BIO_free(m);
}

static void tls_sans_print(X509 *cert, char *out, size_t cap)
{
	out[0] = '\0';
	GENERAL_NAMES *gens = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
	if (gens == NULL) {
		return;
	}
	int n = sk_GENERAL_NAME_num(gens);
	for (int i = 0; i < n; i++) {
		const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
		const char *sep = out[0] != '\0' ? ", " : "";
		const ASN1_STRING *s = NULL;
		const char *tag = NULL;
		switch (g->type) {
		case GEN_DNS:
			s = g->d.dNSName;
			tag = "DNS";
			break;
		case GEN_EMAIL:
			s = g->d.rfc822Name;
			tag = "email";
			break;
		case GEN_URI:
			s = g->d.uniformResourceIdentifier;
			tag = "URI";
			break;
		case GEN_IPADD: {
			char ip[INET6_ADDRSTRLEN];
			int len = ASN1_STRING_length(g->d.iPAddress);
			const unsigned char *p = ASN1_STRING_get0_data(g->d.iPAddress);
			int af = len == 4 ? AF_INET : len == 16 ? AF_INET6 : 0;
			if (af != 0 && inet_ntop(af, p, ip, sizeof ip) != NULL) {
				tls_msg_add(out, cap, "%sIP:%s", sep, ip);
			} else {
				tls_msg_add(out, cap, "%sIP:?", sep);
			}
			continue;
		}
		default:
			tls_msg_add(out, cap, "%sother", sep);
			continue;
		}
		tls_msg_add(out, cap, "%s%s:", sep, tag);
		tls_copy_printable(out, cap, ASN1_STRING_get0_data(s),
				   (size_t)ASN1_STRING_length(s));
	}
	GENERAL_NAMES_free(gens);
}

/* Subject, issuer and SANs of the peer's leaf certificate. */
static void tls_cert_describe(struct net_tls_conn *c, X509 *cert)
{
	tls_name_print(X509_get_subject_name(cert), c->subject, sizeof c->subject);
	tls_name_print(X509_get_issuer_name(cert), c->issuer, sizeof c->issuer);
	tls_sans_print(cert, c->sans, sizeof c->sans);
}

/* Records what is known of the peer: on handshake completion, and on
 * failure as far as the handshake got. */
static void tls_peer_fill(struct net_tls_conn *c)
{
	c->peer_filled = true;
	/* Before a ServerHello there is no version or suite to report (the
	 * SSL's version field then holds only what it would offer). */
	const SSL_CIPHER *suite = SSL_get_current_cipher(c->ssl);
	c->version = suite != NULL ? SSL_get_version(c->ssl) : "";
	c->cipher = suite != NULL ? SSL_CIPHER_get_name(suite) : "";

	const unsigned char *alpn = NULL;
	unsigned int alpn_len = 0;
	SSL_get0_alpn_selected(c->ssl, &alpn, &alpn_len);
	c->alpn[0] = '\0';
	tls_copy_printable(c->alpn, sizeof c->alpn, alpn, alpn != NULL ? alpn_len : 0);

	X509 *cert = SSL_get0_peer_certificate(c->ssl);
	if (cert != NULL) {
		tls_cert_describe(c, cert);
	} else if (!c->leaf_seen) {
		/* A certificate refused during the handshake is not kept in the
		 * session; the verify callback described it (leaf_seen). */
		c->has_cert = false;
		c->verified = false;
		c->verify = "no certificate";
		return;
	}
	c->has_cert = true;
	long v = SSL_get_verify_result(c->ssl);
	c->verified = v == X509_V_OK;
	c->verify = c->verified ? "ok" : X509_verify_cert_error_string(v);
}

/* ---- failures ---- */

/* Makes an OpenSSL failure final: the code by its reasons, the message
 * "<op>: <reason>...", the queue drained. */
static int tls_fail(struct net_tls_conn *c, const char *op, int ssl_error)
{
	assert(c->err == 0);
	c->errmsg[0] = '\0';
	tls_msg_add(c->errmsg, sizeof c->errmsg, "%s: ", op);
	bool any = false;
	int code = tls_drain(c->errmsg, sizeof c->errmsg, c->ssl, c->verify_detail, &any);
	if (!any) {
		/* Nothing queued: with a BIO pair only an end of input gets here. */
		tls_msg_add(c->errmsg, sizeof c->errmsg, "%s",
			    ssl_error == SSL_ERROR_SYSCALL     ? "unexpected end of stream" :
			    ssl_error == SSL_ERROR_ZERO_RETURN ? "peer sent close_notify" :
								 "failed without a reason");
	}
	c->err = code;
	if (!c->peer_filled || !c->open) {
		tls_peer_fill(c);
	}
	return code;
}

/* A refusal that does not fail the connection; the message names why. */
static int tls_refuse(struct net_tls_conn *c, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int tls_refuse(struct net_tls_conn *c, int code, const char *fmt, ...)
{
	assert(code < 0);
	va_list ap;
	va_start(ap, fmt);
	(void)vsnprintf(c->errmsg, sizeof c->errmsg, fmt, ap);
	va_end(ap);
	return code;
}

/* ---- verification and ALPN callbacks ---- */

/* Describes the peer's leaf (kept for logs even when it is refused) and
 * records the first chain failure's depth and subject for the message; the
 * decision stays OpenSSL's (preverify_ok is returned unchanged). */
static int tls_verify_cb(int preverify_ok, X509_STORE_CTX *store)
{
	SSL *ssl = X509_STORE_CTX_get_ex_data(store, SSL_get_ex_data_X509_STORE_CTX_idx());
	struct net_tls_conn *c = ssl != NULL ? SSL_get_app_data(ssl) : NULL;
	if (c == NULL) {
		return preverify_ok;
	}
	X509 *leaf = X509_STORE_CTX_get0_cert(store);
	if (!c->leaf_seen && leaf != NULL) {
		c->leaf_seen = true;
		tls_cert_describe(c, leaf);
	}
	if (preverify_ok || c->verify_detail[0] != '\0') {
		return preverify_ok;
	}
	char subject[160];
	X509 *cert = X509_STORE_CTX_get_current_cert(store);
	if (cert != NULL) {
		tls_name_print(X509_get_subject_name(cert), subject, sizeof subject);
	} else {
		(void)snprintf(subject, sizeof subject, "?");
	}
	(void)snprintf(c->verify_detail, sizeof c->verify_detail, "depth %d: %s",
		       X509_STORE_CTX_get_error_depth(store), subject);
	return preverify_ok;
}

/* Server side of RFC 7301: our most preferred protocol the client offers;
 * a client offering only others gets no_application_protocol (§3.2). */
static int tls_alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
			   const unsigned char *in, unsigned int inlen, void *arg)
{
	(void)ssl;
	const struct net_tls_ctx *ctx = arg;
	assert(ctx->alpn_len > 0 && ctx->alpn_len <= sizeof ctx->alpn);
	unsigned char *sel = NULL;
	unsigned char sel_len = 0;
	if (SSL_select_next_proto(&sel, &sel_len, ctx->alpn, (unsigned int)ctx->alpn_len, in,
				  inlen) != OPENSSL_NPN_NEGOTIATED) {
		return SSL_TLSEXT_ERR_ALERT_FATAL;
	}
	/* With the server's list first, sel points into ctx->alpn, which
	 * outlives the handshake. */
	assert(sel >= ctx->alpn && sel + sel_len <= ctx->alpn + ctx->alpn_len);
	*out = sel;
	*outlen = sel_len;
	return SSL_TLSEXT_ERR_OK;
}

/* Never prompt for a key's passphrase on the terminal: encrypted keys are
 * refused (the loading error names the file). */
static int tls_no_password(char *buf, int size, int rwflag, void *u)
{
	(void)buf;
	(void)size;
	(void)rwflag;
	(void)u;
	return 0;
}

/* ---- contexts ---- */

static int tls_ctx_error(char *errmsg, size_t errmsg_len, int code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

/* Writes "<what>: <OpenSSL's reason>" to errmsg (when given) and drains
 * the queue. */
static int tls_ctx_error(char *errmsg, size_t errmsg_len, int code, const char *fmt, ...)
{
	char buf[NET_TLS_ERRMSG_MAX];
	va_list ap;
	va_start(ap, fmt);
	(void)vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	size_t len = strlen(buf);
	if (ERR_peek_error() != 0) {
		tls_msg_add(buf, sizeof buf, ": ");
		bool any = false;
		(void)tls_drain(buf, sizeof buf, NULL, NULL, &any);
		if (!any) {
			buf[len] = '\0';
		}
	}
	if (errmsg != NULL && errmsg_len > 0) {
		(void)snprintf(errmsg, errmsg_len, "%s", buf);
	}
	ERR_clear_error();
	return code;
}

static size_t tls_size_or(size_t v, size_t def)
{
	return v == 0 ? def : v;
}

static bool tls_size_ok(size_t v)
{
	return v >= NET_TLS_BUF_MIN && v <= NET_TLS_BUF_MAX;
}

/* Checks the parts of cfg that need no file. */
static int tls_config_check(const struct net_tls_config *cfg, const char *pf, char *errmsg,
			    size_t errmsg_len)
{
	if (cfg->role != NET_TLS_SERVER && cfg->role != NET_TLS_CLIENT) {
		return tls_ctx_error(errmsg, errmsg_len, NET_EINVAL, "tls: unknown role %d",
				     (int)cfg->role);
	}
	bool server = cfg->role == NET_TLS_SERVER;
	if (server && (cfg->cert_file == NULL || cfg->key_file == NULL)) {
		return tls_ctx_error(errmsg, errmsg_len, NET_EINVAL,
				     "tls: a server needs %scert-file and %skey-file", pf, pf);
	}
	if ((cfg->cert_file == NULL) != (cfg->key_file == NULL)) {
		return tls_ctx_error(errmsg, errmsg_len, NET_EINVAL,
				     "tls: %scert-file and %skey-file go together", pf, pf);
	}
	if (server && cfg->client_cert_auth && cfg->trusted_ca_file == NULL) {
		return tls_ctx_error(errmsg, errmsg_len, NET_EINVAL,
				     "tls: %sclient-cert-auth needs %strusted-ca-file", pf, pf);
	}
	if (!server && cfg->client_cert_auth) {
		return tls_ctx_error(errmsg, errmsg_len, NET_EINVAL,
				     "tls: %sclient-cert-auth applies to a server", pf);
	}
	if (server && cfg->insecure_skip_verify) {
		return tls_ctx_error(errmsg, errmsg_len, NET_EINVAL,
				     "tls: insecure-skip-verify applies to a client");
	}
	if (cfg->n_alpn > NET_TLS_ALPN_MAX || (cfg->n_alpn > 0 && cfg->alpn == NULL)) {
		return tls_ctx_error(errmsg, errmsg_len, NET_EINVAL,
				     "tls: %zu ALPN protocols, at most %d", cfg->n_alpn,
				     NET_TLS_ALPN_MAX);
	}
	for (size_t i = 0; i < cfg->n_alpn; i++) {
		size_t l = cfg->alpn[i] != NULL ? strlen(cfg->alpn[i]) : 0;
		if (l == 0 || l > 255) {
			return tls_ctx_error(errmsg, errmsg_len, NET_EINVAL,
					     "tls: ALPN protocol %zu is empty or over 255 bytes",
					     i);
		}
	}
	size_t sizes[3] = { tls_size_or(cfg->max_plain_out, NET_TLS_PLAIN_OUT_DEFAULT),
			    tls_size_or(cfg->cipher_in_size, NET_TLS_CIPHER_BUF_DEFAULT),
			    tls_size_or(cfg->cipher_out_size, NET_TLS_CIPHER_BUF_DEFAULT) };
	for (size_t i = 0; i < 3; i++) {
		if (!tls_size_ok(sizes[i])) {
			return tls_ctx_error(errmsg, errmsg_len, NET_EINVAL,
					     "tls: buffer size %zu outside [%zu, %zu]", sizes[i],
					     NET_TLS_BUF_MIN, NET_TLS_BUF_MAX);
		}
	}
	return 0;
}

/* Loads the certificate chain, the key and the CAs named by cfg. */
static int tls_ctx_load(SSL_CTX *sc, const struct net_tls_config *cfg, const char *pf, char *errmsg,
			size_t errmsg_len)
{
	bool server = cfg->role == NET_TLS_SERVER;
	if (cfg->cert_file != NULL) {
		if (SSL_CTX_use_certificate_chain_file(sc, cfg->cert_file) != 1) {
			return tls_ctx_error(errmsg, errmsg_len, NET_ECERT, "tls: %scert-file %s",
					     pf, cfg->cert_file);
		}
		if (SSL_CTX_use_PrivateKey_file(sc, cfg->key_file, SSL_FILETYPE_PEM) != 1) {
			return tls_ctx_error(errmsg, errmsg_len, NET_ECERT, "tls: %skey-file %s",
					     pf, cfg->key_file);
		}
		if (SSL_CTX_check_private_key(sc) != 1) {
			return tls_ctx_error(errmsg, errmsg_len, NET_ECERT,
					     "tls: %skey-file %s does not match %scert-file %s", pf,
					     cfg->key_file, pf, cfg->cert_file);
		}
	}
	if (cfg->trusted_ca_file != NULL) {
		if (SSL_CTX_load_verify_locations(sc, cfg->trusted_ca_file, NULL) != 1) {
			return tls_ctx_error(errmsg, errmsg_len, NET_ECERT,
					     "tls: %strusted-ca-file %s", pf, cfg->trusted_ca_file);
		}
		if (server && cfg->client_cert_auth) {
			/* The CertificateRequest names the acceptable CAs, so a
			 * client with several certificates picks the right one. */
			STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(cfg->trusted_ca_file);
			if (names == NULL) {
				return tls_ctx_error(errmsg, errmsg_len, NET_ECERT,
						     "tls: %strusted-ca-file %s: no certificate",
						     pf, cfg->trusted_ca_file);
			}
			SSL_CTX_set_client_CA_list(sc, names);
		}
	} else if (!server) {
		if (SSL_CTX_set_default_verify_paths(sc) != 1) {
			return tls_ctx_error(errmsg, errmsg_len, NET_ECERT,
					     "tls: the system's trusted CAs");
		}
	}
	return 0;
}

/* Protocol versions, suites, modes, verification and ALPN. */
static int tls_ctx_settings(struct net_tls_ctx *ctx, const struct net_tls_config *cfg, char *errmsg,
			    size_t errmsg_len)
{
	SSL_CTX *sc = ctx->ssl_ctx;
	bool server = cfg->role == NET_TLS_SERVER;
	if (SSL_CTX_set_min_proto_version(sc, TLS1_2_VERSION) != 1 ||
	    SSL_CTX_set_max_proto_version(sc, 0) != 1) {
		return tls_ctx_error(errmsg, errmsg_len, NET_ETLS, "tls: protocol versions");
	}
	if (SSL_CTX_set_cipher_list(sc, TLS_CIPHERS_12) != 1) {
		return tls_ctx_error(errmsg, errmsg_len, NET_ETLS, "tls: cipher list %s",
				     TLS_CIPHERS_12);
	}
	SSL_CTX_set_options(sc, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION |
					SSL_OP_CIPHER_SERVER_PREFERENCE);
	/* RELEASE_BUFFERS: OpenSSL's own record buffers (about 34 KiB) are
	 * freed while a connection is idle, which most watch streams are. */
	SSL_CTX_set_mode(sc, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
				     SSL_MODE_RELEASE_BUFFERS);
	SSL_CTX_set_default_passwd_cb(sc, tls_no_password);

	if (server) {
		if (SSL_CTX_set_session_id_context(sc, (const unsigned char *)TLS_SESSION_ID_CTX,
						   sizeof TLS_SESSION_ID_CTX - 1) != 1) {
			return tls_ctx_error(errmsg, errmsg_len, NET_ETLS, "tls: session context");
		}
		/* TLS 1.2 sessions kept for resumption: bounded (OpenSSL's
		 * default is 20480). TLS 1.3 tickets are stateless. */
		(void)SSL_CTX_sess_set_cache_size(sc, TLS_SESSION_CACHE_MAX);
		int mode = cfg->client_cert_auth ?
				   SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT :
				   SSL_VERIFY_NONE;
		SSL_CTX_set_verify(sc, mode, tls_verify_cb);
	} else {
		SSL_CTX_set_verify(sc,
				   cfg->insecure_skip_verify ? SSL_VERIFY_NONE : SSL_VERIFY_PEER,
				   tls_verify_cb);
	}

	ctx->alpn_len = 0;
	for (size_t i = 0; i < cfg->n_alpn; i++) {
		size_t l = strlen(cfg->alpn[i]);
		assert(l >= 1 && l <= 255);
		assert(ctx->alpn_len + 1 + l <= sizeof ctx->alpn);
		ctx->alpn[ctx->alpn_len++] = (unsigned char)l;
		memcpy(ctx->alpn + ctx->alpn_len, cfg->alpn[i], l);
		ctx->alpn_len += l;
	}
	if (ctx->alpn_len > 0) {
		if (server) {
			SSL_CTX_set_alpn_select_cb(sc, tls_alpn_select, ctx);
		} else if (SSL_CTX_set_alpn_protos(sc, ctx->alpn, (unsigned int)ctx->alpn_len) !=
			   0) {
			/* 0 is success for this one (SSL_CTX_set_alpn_protos(3)). */
			return tls_ctx_error(errmsg, errmsg_len, NET_ENOMEM, "tls: ALPN list");
		}
	}
	return 0;
}

int net_tls_ctx_new(const struct net_tls_config *cfg, struct net_tls_ctx **out, char *errmsg,
		    size_t errmsg_len)
{
	assert(out != NULL);
	*out = NULL;
	if (errmsg != NULL && errmsg_len > 0) {
		errmsg[0] = '\0';
	}
	if (cfg == NULL) {
		return tls_ctx_error(errmsg, errmsg_len, NET_EINVAL, "tls: no config");
	}
	const char *pf = cfg->flag_prefix != NULL ? cfg->flag_prefix : "";
	ERR_clear_error();
	int rc = tls_config_check(cfg, pf, errmsg, errmsg_len);
	if (rc != 0) {
		return rc;
	}

	struct net_tls_ctx *ctx = calloc(1, sizeof *ctx);
	if (ctx == NULL) {
		return tls_ctx_error(errmsg, errmsg_len, NET_ENOMEM, "tls: context");
	}
	ctx->role = cfg->role;
	ctx->skip_verify = cfg->insecure_skip_verify;
	ctx->max_plain_out = tls_size_or(cfg->max_plain_out, NET_TLS_PLAIN_OUT_DEFAULT);
	ctx->cipher_in_size = tls_size_or(cfg->cipher_in_size, NET_TLS_CIPHER_BUF_DEFAULT);
	ctx->cipher_out_size = tls_size_or(cfg->cipher_out_size, NET_TLS_CIPHER_BUF_DEFAULT);
	ctx->ssl_ctx = SSL_CTX_new(cfg->role == NET_TLS_SERVER ? TLS_server_method() :
								 TLS_client_method());
	if (ctx->ssl_ctx == NULL) {
		rc = tls_ctx_error(errmsg, errmsg_len, NET_ENOMEM, "tls: SSL_CTX_new");
		goto err_ctx;
	}
	rc = tls_ctx_settings(ctx, cfg, errmsg, errmsg_len);
	if (rc != 0) {
		goto err_ssl_ctx;
	}
	rc = tls_ctx_load(ctx->ssl_ctx, cfg, pf, errmsg, errmsg_len);
	if (rc != 0) {
		goto err_ssl_ctx;
	}
	ERR_clear_error();
	*out = ctx;
	return 0;

err_ssl_ctx:
	SSL_CTX_free(ctx->ssl_ctx);
err_ctx:
	free(ctx);
	ERR_clear_error();
	return rc;
}

void net_tls_ctx_free(struct net_tls_ctx *ctx)
{
	if (ctx == NULL) {
		return;
	}
	assert(ctx->n_conns == 0);
	SSL_CTX_free(ctx->ssl_ctx);
	free(ctx);
}

/* ---- connections ---- */

static bool tls_is_ip(const char *name)
{
	unsigned char addr[16];
	return inet_pton(AF_INET, name, addr) == 1 || inet_pton(AF_INET6, name, addr) == 1;
}

/* The name the client checks the server certificate against: an IP SAN
 * for an address, else a DNS SAN (also sent as SNI; RFC 6066 §3 forbids
 * addresses there). */
static int tls_conn_set_name(struct net_tls_conn *c, const char *name)
{
	if (tls_is_ip(name)) {
		X509_VERIFY_PARAM *vp = SSL_get0_param(c->ssl);
		return X509_VERIFY_PARAM_set1_ip_asc(vp, name) == 1 ? 0 : NET_EINVAL;
	}
	SSL_set_hostflags(c->ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
	if (SSL_set1_host(c->ssl, name) != 1 || SSL_set_tlsext_host_name(c->ssl, name) != 1) {
		return NET_EINVAL;
	}
	return 0;
}

static int tls_pump(struct net_tls_conn *c);

int net_tls_conn_new(struct net_tls_ctx *ctx, const char *server_name, struct net_tls_conn **out)
{
	assert(ctx != NULL && out != NULL);
	*out = NULL;
	bool client = ctx->role == NET_TLS_CLIENT;
	if (!client && server_name != NULL) {
		return NET_EINVAL;
	}
	if (client && server_name == NULL && !ctx->skip_verify) {
		return NET_EINVAL;
	}
	if (server_name != NULL &&
	    (server_name[0] == '\0' || strnlen(server_name, TLS_NAME_MAX + 1) > TLS_NAME_MAX)) {
		return NET_EINVAL;
	}

	ERR_clear_error();
	int rc = NET_ENOMEM;
	struct net_tls_conn *c = calloc(1, sizeof *c);
	if (c == NULL) {
		goto err;
	}
	c->ctx = ctx;
	c->version = c->cipher = "";
	c->verify = "not verified";
	c->ssl = SSL_new(ctx->ssl_ctx);
	if (c->ssl == NULL) {
		goto err_conn;
	}
	BIO *inner = NULL;
	/* inner's write buffer holds what the SSL writes (ciphertext out);
	 * net's holds what we feed (ciphertext in). */
	if (BIO_new_bio_pair(&inner, ctx->cipher_out_size, &c->net, ctx->cipher_in_size) != 1) {
		goto err_ssl;
	}
	SSL_set_bio(c->ssl, inner, inner); /* one reference, now the SSL's */
	SSL_set_app_data(c->ssl, c);
	if (client) {
		SSL_set_connect_state(c->ssl);
		if (server_name != NULL) {
			rc = tls_conn_set_name(c, server_name);
			if (rc != 0) {
				goto err_bio;
			}
		}
	} else {
		SSL_set_accept_state(c->ssl);
	}
	ctx->n_conns++;
	/* A client's ClientHello is ready to send at once; a failure here
	 * is kept as the connection's final error. */
	(void)tls_pump(c);
	ERR_clear_error();
	*out = c;
	return 0;

err_bio:
	BIO_free(c->net);
err_ssl:
	SSL_free(c->ssl);
err_conn:
	free(c);
err:
	ERR_clear_error();
	return rc;
}

void net_tls_conn_free(struct net_tls_conn *c)
{
	if (c == NULL) {
		return;
	}
	assert(c->ctx->n_conns > 0);
	c->ctx->n_conns--;
	SSL_free(c->ssl); /* frees the inner BIO */
	BIO_free(c->net);
	free(c->wbuf);
	free(c);
	ERR_clear_error();
}

/* Advances the handshake. Returns 0 (done, or waiting for input or room)
 * or the final error. */
static int tls_handshake(struct net_tls_conn *c)
{
	if (c->err != 0) {
		return c->err;
	}
	if (c->open) {
		return 0;
	}
	int r = SSL_do_handshake(c->ssl);
	if (r != 1) {
		int e = SSL_get_error(c->ssl, r);
		if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
			return 0;
		}
		return tls_fail(c, "handshake", e);
	}
	c->open = true;
	tls_peer_fill(c);
	return 0;
}

/* Advances what can advance: the handshake, then queued plaintext into
 * records while the output ring has room, then a requested close_notify
 * once the queue is empty. Returns 0 (done, or waiting for input or room)
 * or the final error. */
static int tls_pump(struct net_tls_conn *c)
{
	int rc = tls_handshake(c);
	if (rc != 0 || !c->open) {
		return rc;
	}
	while (c->wlen > 0) {
		size_t n = 0;
		int r = SSL_write_ex(c->ssl, c->wbuf + c->woff, c->wlen, &n);
		if (r != 1) {
			int e = SSL_get_error(c->ssl, r);
			if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ) {
				break;
			}
			return tls_fail(c, "write", e);
		}
		assert(n > 0 && n <= c->wlen);
		c->woff += n;
		c->wlen -= n;
		if (c->wlen == 0) {
			c->woff = 0;
			if (c->wcap > TLS_WBUF_KEEP) {
				/* A burst is over: an idle connection keeps
				 * little memory. Nothing refers to wbuf now
				 * (no write is pending a retry). */
				free(c->wbuf);
				c->wbuf = NULL;
				c->wcap = 0;
			}
		}
	}
	if (c->shutdown_wanted && !c->close_sent && c->wlen == 0) {
		int r = SSL_shutdown(c->ssl);
		if (r < 0) {
			int e = SSL_get_error(c->ssl, r);
			if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ) {
				return 0;
			}
			return tls_fail(c, "shutdown", e);
		}
		c->close_sent = true;
	}
	return 0;
}

/* Every public call starts and ends with a clean error queue and, unless
 * the connection has failed, an empty message. */
static void tls_enter(struct net_tls_conn *c)
{
	ERR_clear_error();
	if (c->err == 0) {
		c->errmsg[0] = '\0';
	}
}

static int tls_leave(int rc)
{
	ERR_clear_error();
	return rc;
}

int net_tls_feed(struct net_tls_conn *c, const void *buf, size_t len, size_t *used)
{
	assert(c != NULL && used != NULL && (buf != NULL || len == 0));
	*used = 0;
	tls_enter(c);
	if (c->err != 0) {
		return tls_leave(c->err);
	}
	if (c->eof_fed) {
		return tls_leave(tls_refuse(c, NET_EINVAL, "feed: after end of input"));
	}
	size_t room = BIO_ctrl_get_write_guarantee(c->net);
	size_t n = len < room ? len : room;
	if (n > 0) {
		assert(n <= (size_t)INT_MAX);
		int w = BIO_write(c->net, buf, (int)n);
		assert(w == (int)n);
		(void)w;
	}
	*used = n;
	return tls_leave(tls_pump(c));
}

int net_tls_feed_eof(struct net_tls_conn *c)
{
	assert(c != NULL);
	tls_enter(c);
	if (c->err != 0) {
		return tls_leave(c->err);
	}
	if (!c->eof_fed) {
		c->eof_fed = true;
		(void)BIO_shutdown_wr(c->net);
	}
	return tls_leave(tls_pump(c));
}

int net_tls_read(struct net_tls_conn *c, void *buf, size_t cap, size_t *n)
{
	assert(c != NULL && n != NULL && (buf != NULL || cap == 0));
	*n = 0;
	tls_enter(c);
	if (c->err != 0) {
		return tls_leave(c->err);
	}
	if (c->peer_closed) {
		return tls_leave(tls_refuse(c, NET_ECLOSED, "read: peer sent close_notify"));
	}
	/* The handshake only: flushing queued plaintext first could fill the
	 * output ring and leave SSL_read no room for an alert or a reply. */
	int rc = tls_handshake(c);
	if (rc != 0 || !c->open) {
		return tls_leave(rc);
	}
	size_t got = 0;
	while (got < cap) {
		size_t k = 0;
		int r = SSL_read_ex(c->ssl, (unsigned char *)buf + got, cap - got, &k);
		if (r == 1) {
			assert(k > 0 && k <= cap - got);
			got += k;
			continue;
		}
		int e = SSL_get_error(c->ssl, r);
		if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
			break;
		}
		if (e == SSL_ERROR_ZERO_RETURN) {
			c->peer_closed = true;
			if (got == 0) {
				rc = tls_refuse(c, NET_ECLOSED, "read: peer sent close_notify");
			}
			break;
		}
		rc = tls_fail(c, "read", e);
		break;
	}
	*n = got;
	if (rc == 0) {
		/* Reading can answer the peer (a key update) and the room it
		 * makes can take queued plaintext. */
		rc = tls_pump(c);
	}
	/* Bytes read before a failure are returned now; the failure, being
	 * final, is returned by the next call. */
	return tls_leave(got > 0 && c->err != 0 ? 0 : rc);
}

/* Makes room for len more bytes in wbuf, within max_plain_out. */
static int tls_wbuf_reserve(struct net_tls_conn *c, size_t len)
{
	size_t need = c->wlen + len;
	assert(need <= c->ctx->max_plain_out);
	if (c->woff + need <= c->wcap) {
		return 0;
	}
	if (need <= c->wcap) {
		/* Moving is allowed: SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER. */
		memmove(c->wbuf, c->wbuf + c->woff, c->wlen);
		c->woff = 0;
		return 0;
	}
	size_t cap = c->wcap > 0 ? c->wcap : TLS_WBUF_INITIAL;
	while (cap < need) {
		cap = cap > c->ctx->max_plain_out / 2 ? c->ctx->max_plain_out : cap * 2;
	}
	if (cap > c->ctx->max_plain_out) {
		cap = c->ctx->max_plain_out;
	}
	unsigned char *nb = malloc(cap);
	if (nb == NULL) {
		return NET_ENOMEM;
	}
	if (c->wlen > 0) {
		memcpy(nb, c->wbuf + c->woff, c->wlen);
	}
	free(c->wbuf);
	c->wbuf = nb;
	c->wcap = cap;
	c->woff = 0;
	return 0;
}

int net_tls_write(struct net_tls_conn *c, const void *buf, size_t len)
{
	assert(c != NULL && (buf != NULL || len == 0));
	tls_enter(c);
	if (c->err != 0) {
		return tls_leave(c->err);
	}
	if (c->shutdown_wanted) {
		return tls_leave(tls_refuse(c, NET_ECLOSED, "write: after shutdown"));
	}
	size_t max = c->ctx->max_plain_out;
	assert(c->wlen <= max);
	if (len > max - c->wlen) {
		return tls_leave(
			tls_refuse(c, NET_EAGAIN,
				   "write: plaintext queue full: %zu of %zu bytes queued%s, "
				   "%zu more refused",
				   c->wlen, max, c->open ? "" : " during the handshake", len));
	}
	if (len == 0) {
		return tls_leave(tls_pump(c));
	}
	int rc = tls_wbuf_reserve(c, len);
	if (rc != 0) {
		return tls_leave(tls_refuse(c, rc, "write: no memory for %zu bytes", len));
	}
	assert(c->woff + c->wlen + len <= c->wcap);
	memcpy(c->wbuf + c->woff + c->wlen, buf, len);
	c->wlen += len;
	return tls_leave(tls_pump(c));
}

size_t net_tls_write_space(const struct net_tls_conn *c)
{
	assert(c != NULL && c->wlen <= c->ctx->max_plain_out);
	if (c->err != 0 || c->shutdown_wanted) {
		return 0;
	}
	return c->ctx->max_plain_out - c->wlen;
}

size_t net_tls_plain_pending(const struct net_tls_conn *c)
{
	assert(c != NULL);
	return c->wlen;
}

size_t net_tls_out_pending(const struct net_tls_conn *c)
{
	assert(c != NULL);
	return BIO_ctrl_pending(c->net);
}

size_t net_tls_out_peek(struct net_tls_conn *c, const void **p)
{
	assert(c != NULL && p != NULL);
	char *q = NULL;
	int n = BIO_nread0(c->net, &q);
	ERR_clear_error(); /* an empty ring is not an error worth keeping */
	if (n <= 0 || q == NULL) {
		*p = NULL;
		return 0;
	}
	*p = q;
	return (size_t)n;
}

int net_tls_out_consume(struct net_tls_conn *c, size_t n)
{
	assert(c != NULL);
	tls_enter(c);
	if (n > 0) {
		char *q = NULL;
		assert(n <= (size_t)INT_MAX);
		int k = BIO_nread(c->net, &q, (int)n);
		assert(k == (int)n); /* n is at most what net_tls_out_peek gave */
		(void)k;
	}
	return tls_leave(tls_pump(c));
}

int net_tls_out_take(struct net_tls_conn *c, void *buf, size_t cap, size_t *n)
{
	assert(c != NULL && n != NULL && (buf != NULL || cap == 0));
	size_t got = 0;
	while (got < cap) {
		const void *p = NULL;
		size_t k = net_tls_out_peek(c, &p);
		if (k == 0) {
			break;
		}
		if (k > cap - got) {
			k = cap - got;
		}
		memcpy((unsigned char *)buf + got, p, k);
		got += k;
		/* Consuming pumps, which may refill the ring: keep copying. */
		int rc = net_tls_out_consume(c, k);
		if (rc != 0) {
			*n = got;
			return rc;
		}
	}
	*n = got;
	return 0;
}

int net_tls_shutdown(struct net_tls_conn *c)
{
	assert(c != NULL);
	tls_enter(c);
	if (c->err != 0) {
		return tls_leave(c->err);
	}
	c->shutdown_wanted = true;
	return tls_leave(tls_pump(c));
}

bool net_tls_is_open(const struct net_tls_conn *c)
{
	assert(c != NULL);
	return c->open && c->err == 0;
}

int net_tls_failed(const struct net_tls_conn *c)
{
	assert(c != NULL);
	return c->err;
}

bool net_tls_peer_closed(const struct net_tls_conn *c)
{
	assert(c != NULL);
	return c->peer_closed;
}

bool net_tls_close_sent(const struct net_tls_conn *c)
{
	assert(c != NULL);
	return c->close_sent;
}

void net_tls_peer(const struct net_tls_conn *c, struct net_tls_peer *out)
{
	assert(c != NULL && out != NULL);
	out->version = c->version;
	out->cipher = c->cipher;
	out->alpn = c->alpn;
	out->subject = c->subject;
	out->issuer = c->issuer;
	out->sans = c->sans;
	out->has_cert = c->has_cert;
	out->verified = c->verified;
	out->verify = c->verify;
}

const char *net_tls_alpn(const struct net_tls_conn *c)
{
	assert(c != NULL);
	return c->alpn;
}

const char *net_tls_errmsg(const struct net_tls_conn *c)
{
	assert(c != NULL);
	return c->errmsg;
}

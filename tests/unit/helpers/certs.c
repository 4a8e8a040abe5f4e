/* certs.c: keys and certificates made at test time (certs.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdbool.h>
#include <stdio.h>

#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "certs.h"

EVP_PKEY *h_key_new(void)
{
	EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	assert_non_null(k);
	return k;
}

static void ext_add(X509 *cert, X509 *issuer, int nid, const char *value)
{
	X509V3_CTX v;
	X509V3_set_ctx_nodb(&v);
	X509V3_set_ctx(&v, issuer, cert, NULL, NULL, 0);
	X509_EXTENSION *ex = X509V3_EXT_conf_nid(NULL, &v, nid, value);
	assert_non_null(ex);
	assert_int_equal(X509_add_ext(cert, ex, -1), 1);
	X509_EXTENSION_free(ex);
}

X509 *h_cert_new(EVP_PKEY *key, const char *org, const char *cn, X509 *issuer, EVP_PKEY *issuer_key,
		 const char *san, long serial)
{
	bool ca = issuer == NULL;
	X509 *c = X509_new();
	assert_non_null(c);
	assert_int_equal(X509_set_version(c, X509_VERSION_3), 1);
	assert_int_equal(ASN1_INTEGER_set(X509_get_serialNumber(c), serial), 1);
	assert_non_null(X509_gmtime_adj(X509_getm_notBefore(c), -3600));
	assert_non_null(X509_gmtime_adj(X509_getm_notAfter(c), 30L * 86400));
	X509_NAME *name = X509_get_subject_name(c);
	assert_int_equal(X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC,
						    (const unsigned char *)org, -1, -1, 0),
			 1);
	assert_int_equal(X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
						    (const unsigned char *)cn, -1, -1, 0),
			 1);
	assert_int_equal(X509_set_issuer_name(c, ca ? name : X509_get_subject_name(issuer)), 1);
	assert_int_equal(X509_set_pubkey(c, key), 1);
	X509 *iss = ca ? c : issuer;
	ext_add(c, iss, NID_basic_constraints, ca ? "critical,CA:TRUE" : "critical,CA:FALSE");
	ext_add(c, iss, NID_key_usage,
		ca ? "critical,keyCertSign,cRLSign" : "critical,digitalSignature");
	ext_add(c, iss, NID_subject_key_identifier, "hash");
	if (!ca) {
		ext_add(c, iss, NID_authority_key_identifier, "keyid:always");
		ext_add(c, iss, NID_ext_key_usage, "serverAuth,clientAuth");
	}
	if (san != NULL)
		ext_add(c, iss, NID_subject_alt_name, san);
	assert_true(X509_sign(c, ca ? key : issuer_key, EVP_sha256()) > 0);
	return c;
}

void h_pem_write(const char *path, X509 *cert, EVP_PKEY *key)
{
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	if (cert != NULL)
		assert_int_equal(PEM_write_X509(f, cert), 1);
	if (key != NULL)
		assert_int_equal(PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL), 1);
	assert_int_equal(fclose(f), 0);
}

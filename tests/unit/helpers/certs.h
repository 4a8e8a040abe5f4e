/* certs.h: keys and X.509 certificates made at test time (OpenSSL), for the
 * tests of TLS and of what runs over it. Every failure fails the test. */
#ifndef CAIRN_TEST_CERTS_H
#define CAIRN_TEST_CERTS_H

#include <openssl/evp.h>
#include <openssl/x509.h>

/* A new EC P-256 key; EVP_PKEY_free() it. */
EVP_PKEY *h_key_new(void);

/* A certificate for key with subject O=org, CN=cn, valid from an hour ago for
 * 30 days: a CA (keyCertSign, self-signed) when issuer is NULL, else a leaf
 * for both server and client use issued by issuer/issuer_key; san (e.g.
 * "IP:127.0.0.1,DNS:localhost") as subjectAltName when not NULL. X509_free()
 * it. */
X509 *h_cert_new(EVP_PKEY *key, const char *org, const char *cn, X509 *issuer, EVP_PKEY *issuer_key,
		 const char *san, long serial);

/* Writes cert and/or key (either may be NULL) as PEM to path. */
void h_pem_write(const char *path, X509 *cert, EVP_PKEY *key);

#endif

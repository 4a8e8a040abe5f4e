/* gossip_seal.c: the sealed gossip packet (gossip_seal.h): flags, cluster label, CRC-32C or
 * AES-256-GCM with a keyring, and the key file.
 *
 * Decryption happens in place. GCM only says whether a key was right after the whole
 * ciphertext went through it, so a wrong key leaves garbage where the ciphertext was; since
 * GCM's confidentiality is counter mode (C = P xor keystream), running the same key and nonce
 * over the garbage in the encrypt direction gives the ciphertext back, and the next key of the
 * ring gets the packet as it arrived. A rotation costs one extra pass per packet for members
 * still sealing with the old key, and nothing once every member has the new primary.
 *
 * Nonces are random (96 bits from RAND_bytes), as every member seals with the same key and no
 * counter could be shared between them. The chance that two packets ever share a nonce grows
 * with the square of the packets sealed under one key: negligible at gossip's rates for months,
 * and one more reason to rotate keys now and then (the ring makes that free).
 *
 * One EVP_CIPHER_CTX per call: two small allocations next to a key schedule, cheap at gossip's
 * rates (hundreds of packets a second), and it keeps these functions free of state, callable
 * from any thread.
 */
#include "gossip_seal.h"

#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "crc32c.h"

_Static_assert(NET_SEAL_MAX_LABEL <= UINT8_MAX, "the label length is one byte");
_Static_assert(NET_SEAL_KEY_LEN == 32, "AES-256 takes 32-byte keys");
_Static_assert(NET_SEAL_NONCE_LEN == 12, "GCM's standard nonce is 96 bits");
_Static_assert(NET_SEAL_TAG_LEN == 16, "a full-length GCM tag");

/* A key file holds a handful of short lines: anything much larger is not a key file. */
#define KEY_FILE_MAX (64u << 10)
/* Longest line considered: a key is 44 characters; comments may be longer, not unbounded. */
#define KEY_LINE_MAX 1024
/* EVP lengths are ints: longer inputs go through in pieces this big. */
#define EVP_CHUNK ((size_t)1 << 30)

const char *net_seal_strerror(int err)
{
	switch (err) {
	case NET_SEAL_OK:
		return "ok";
	case NET_SEAL_ESHORT:
		return "packet shorter than its headers";
	case NET_SEAL_EFLAGS:
		return "unknown packet flags";
	case NET_SEAL_ELABEL:
		return "packet from another cluster label";
	case NET_SEAL_EPLAIN:
		return "packet encryption does not match the keyring";
	case NET_SEAL_ECRC:
		return "packet checksum mismatch";
	case NET_SEAL_EDECRYPT:
		return "no key of the keyring opens the packet";
	case NET_SEAL_ESPACE:
		return "no room for the sealed packet";
	default:
		return "unknown seal error";
	}
}

/* ---- base64 (RFC 4648 §4, the standard alphabet with padding) ---- */

static const char b64_alphabet[] =
	"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static int b64_value(char c)
{
	if (c >= 'A' && c <= 'Z') {
		return c - 'A';
	}
	if (c >= 'a' && c <= 'z') {
		return c - 'a' + 26;
	}
	if (c >= '0' && c <= '9') {
		return c - '0' + 52;
	}
	if (c == '+') {
		return 62;
	}
	if (c == '/') {
		return 63;
	}
	return -1;
}

static bool is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f';
}

/* Decodes padded base64 (s[0..len), no whitespace inside) into out (cap bytes). Returns the
 * decoded length, -1 for invalid base64, -2 when it decodes to more than cap bytes. */
static long b64_decode(const char *s, size_t len, uint8_t *out, size_t cap)
{
	if (len == 0 || len % 4 != 0) {
		return -1;
	}
	size_t n = 0;
	for (size_t i = 0; i < len; i += 4) {
		int v[4];
		size_t pad = 0;
		for (size_t j = 0; j < 4; j++) {
			char c = s[i + j];
			if (c == '=') {
				/* Padding only at the very end, only in the last two places. */
				if (i + 4 != len || j < 2) {
					return -1;
				}
				pad++;
				v[j] = 0;
				continue;
			}
			if (pad > 0) {
				return -1; /* data after padding */
			}
			v[j] = b64_value(c);
			if (v[j] < 0) {
				return -1;
			}
		}
		uint32_t w = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 |
			     (uint32_t)v[3];
		/* Bits that padding leaves over must be zero (a canonical encoding). */
		if ((pad == 1 && (w & 0xffu) != 0) || (pad == 2 && (w & 0xffffu) != 0)) {
			return -1;
		}
		uint8_t bytes[3] = { (uint8_t)(w >> 16), (uint8_t)(w >> 8), (uint8_t)w };
		size_t take = 3 - pad;
		if (n + take > cap) {
			return -2;
		}
		memcpy(out + n, bytes, take);
		n += take;
	}
	return (long)n;
}

int net_key_decode(const char *b64, size_t len, uint8_t key[NET_SEAL_KEY_LEN])
{
	if (b64 == NULL || key == NULL) {
		return -1;
	}
	while (len > 0 && is_space(b64[0])) {
		b64++;
		len--;
	}
	while (len > 0 && is_space(b64[len - 1])) {
		len--;
	}
	uint8_t buf[NET_SEAL_KEY_LEN];
	long n = b64_decode(b64, len, buf, sizeof buf);
	int rv = n == NET_SEAL_KEY_LEN ? 0 : -1;
	if (rv == 0) {
		memcpy(key, buf, NET_SEAL_KEY_LEN);
	}
	OPENSSL_cleanse(buf, sizeof buf);
	return rv;
}

int net_key_generate(char out[45])
{
	uint8_t key[NET_SEAL_KEY_LEN];
	if (RAND_bytes(key, (int)sizeof key) != 1) {
		return -1;
	}
	/* 32 bytes: ten full groups of three, then two bytes and one '='. */
	size_t o = 0;
	for (size_t i = 0; i < sizeof key; i += 3) {
		size_t rest = sizeof key - i;
		uint32_t w = (uint32_t)key[i] << 16;
		if (rest > 1) {
			w |= (uint32_t)key[i + 1] << 8;
		}
		if (rest > 2) {
			w |= key[i + 2];
		}
		out[o++] = b64_alphabet[(w >> 18) & 63];
		out[o++] = b64_alphabet[(w >> 12) & 63];
		out[o++] = rest > 1 ? b64_alphabet[(w >> 6) & 63] : '=';
		out[o++] = rest > 2 ? b64_alphabet[w & 63] : '=';
	}
	assert(o == 44);
	out[o] = '\0';
	OPENSSL_cleanse(key, sizeof key);
	return 0;
}

/* ---- the key file ---- */

/* Writes "path:line: detail" (or "path: detail" for line 0) to err; returns -1. */
static int key_err(char *err, size_t errlen, const char *path, size_t line, const char *detail)
{
	if (err != NULL && errlen > 0) {
		if (line > 0) {
			snprintf(err, errlen, "%s:%zu: %s", path, line, detail);
		} else {
			snprintf(err, errlen, "%s: %s", path, detail);
		}
	}
	return -1;
}

/* Parses the file's text into *ring. Messages name the file and the line, never a key. */
static int keyring_parse(const char *path, const char *text, size_t len, struct net_keyring *ring,
			 char *err, size_t errlen)
{
	size_t lineno = 0;
	size_t off = 0;
	while (off < len) {
		lineno++;
		const char *line = text + off;
		const char *nl = memchr(line, '\n', len - off);
		size_t n = nl != NULL ? (size_t)(nl - line) : len - off;
		off += n + (nl != NULL ? 1 : 0);
		if (n > KEY_LINE_MAX) {
			return key_err(err, errlen, path, lineno, "line too long");
		}
		while (n > 0 && is_space(line[0])) {
			line++;
			n--;
		}
		while (n > 0 && is_space(line[n - 1])) {
			n--;
		}
		if (n == 0 || line[0] == '#') {
			continue;
		}
		if (memchr(line, '\0', n) != NULL) {
			return key_err(err, errlen, path, lineno, "not a text line (NUL byte)");
		}
		if (ring->n == NET_SEAL_MAX_KEYS) {
			return key_err(err, errlen, path, lineno, "too many keys (at most 16)");
		}
		uint8_t key[NET_SEAL_KEY_LEN + 3];
		long k = b64_decode(line, n, key, sizeof key);
		if (k == NET_SEAL_KEY_LEN) {
			memcpy(ring->keys[ring->n++], key, NET_SEAL_KEY_LEN);
			OPENSSL_cleanse(key, sizeof key);
			continue;
		}
		OPENSSL_cleanse(key, sizeof key);
		if (k == -1) {
			return key_err(err, errlen, path, lineno,
				       "not valid base64 (a key is 44 characters, ending in '=')");
		}
		char detail[96];
		if (k == -2) {
			snprintf(detail, sizeof detail,
				 "key is longer than 32 bytes (AES-256 needs exactly 32)");
		} else {
			snprintf(detail, sizeof detail,
				 "key is %ld bytes, AES-256 needs exactly 32", k);
		}
		return key_err(err, errlen, path, lineno, detail);
	}
	if (ring->n == 0) {
		return key_err(err, errlen, path, 0,
			       "no key in the file (one base64 key per line)");
	}
	return 0;
}

int net_keyring_load(const char *path, struct net_keyring *out, char *err, size_t errlen)
{
	if (err != NULL && errlen > 0) {
		err[0] = '\0';
	}
	if (path == NULL || out == NULL) {
		return key_err(err, errlen, "(null)", 0, "no key file given");
	}
	FILE *f = fopen(path, "rb");
	if (f == NULL) {
		return key_err(err, errlen, path, 0, strerror(errno));
	}
	char *text = malloc(KEY_FILE_MAX + 1);
	if (text == NULL) {
		fclose(f);
		return key_err(err, errlen, path, 0, "out of memory");
	}
	size_t len = fread(text, 1, KEY_FILE_MAX + 1, f);
	int read_err = ferror(f);
	fclose(f);
	int rv;
	struct net_keyring ring;
	memset(&ring, 0, sizeof ring);
	if (read_err) {
		rv = key_err(err, errlen, path, 0, "read error");
	} else if (len > KEY_FILE_MAX) {
		rv = key_err(err, errlen, path, 0, "file too large for a key file");
	} else {
		rv = keyring_parse(path, text, len, &ring, err, errlen);
	}
	if (rv == 0) {
		*out = ring;
	}
	OPENSSL_cleanse(&ring, sizeof ring);
	OPENSSL_cleanse(text, len < KEY_FILE_MAX + 1 ? len : KEY_FILE_MAX + 1);
	free(text);
	return rv;
}

/* ---- sealing ---- */

static size_t label_len(const char *label)
{
	return label != NULL ? strlen(label) : 0;
}

static bool encrypting(const struct net_keyring *kr)
{
	return kr != NULL && kr->n > 0;
}

size_t net_seal_overhead(const struct net_keyring *kr, const char *label)
{
	size_t l = label_len(label);
	size_t n = 1 + (l > 0 ? 1 + l : 0);
	return n + (encrypting(kr) ? NET_SEAL_NONCE_LEN + NET_SEAL_TAG_LEN : NET_SEAL_CRC_LEN);
}

/* Runs len bytes of in through ctx into out (in == out allowed), in int-sized pieces. */
static bool evp_update(EVP_CIPHER_CTX *ctx, bool enc, uint8_t *out, const uint8_t *in, size_t len)
{
	while (len > 0) {
		size_t n = len < EVP_CHUNK ? len : EVP_CHUNK;
		int outl = 0;
		int ok = enc ? EVP_EncryptUpdate(ctx, out, &outl, in, (int)n) :
			       EVP_DecryptUpdate(ctx, out, &outl, in, (int)n);
		/* GCM is a stream mode: every byte in comes out at once. */
		if (ok != 1 || outl != (int)n) {
			return false;
		}
		out += n;
		in += n;
		len -= n;
	}
	return true;
}

/* Sets up ctx for AES-256-GCM with key and nonce and feeds the additional data. */
static bool gcm_init(EVP_CIPHER_CTX *ctx, bool enc, const uint8_t *key, const uint8_t *nonce,
		     const uint8_t *aad, size_t aad_len)
{
	int ok = enc ? EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, key, nonce) :
		       EVP_DecryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, key, nonce);
	if (ok != 1) {
		return false;
	}
	int outl = 0;
	assert(aad_len <= 1 + 1 + NET_SEAL_MAX_LABEL);
	ok = enc ? EVP_EncryptUpdate(ctx, NULL, &outl, aad, (int)aad_len) :
		   EVP_DecryptUpdate(ctx, NULL, &outl, aad, (int)aad_len);
	return ok == 1;
}

long net_seal(const struct net_keyring *kr, const char *label, const uint8_t *payload, size_t len,
	      uint8_t *out, size_t cap)
{
	size_t l = label_len(label);
	if (l > NET_SEAL_MAX_LABEL || (len > 0 && payload == NULL) || out == NULL) {
		return NET_SEAL_ESPACE;
	}
	size_t over = net_seal_overhead(kr, label);
	if (len > cap || cap - len < over || len + over > (size_t)LONG_MAX) {
		return NET_SEAL_ESPACE;
	}
	size_t hdr = 1 + (l > 0 ? 1 + l : 0);
	bool enc = encrypting(kr);
	/* The payload goes to its place first (memmove: the caller may have built it inside
	 * out), then the headers, which it never overlaps once moved. */
	size_t body = hdr + (enc ? NET_SEAL_NONCE_LEN : 0);
	if (len > 0) {
		memmove(out + body, payload, len);
	}
	out[0] = (uint8_t)((l > 0 ? NET_SEAL_LABEL : 0) | (enc ? NET_SEAL_ENCRYPTED : 0));
	if (l > 0) {
		out[1] = (uint8_t)l;
		memcpy(out + 2, label, l);
	}
	if (!enc) {
		uint32_t crc = cairn_crc32c(0, out, hdr + len);
		uint8_t *c = out + hdr + len;
		c[0] = (uint8_t)crc;
		c[1] = (uint8_t)(crc >> 8);
		c[2] = (uint8_t)(crc >> 16);
		c[3] = (uint8_t)(crc >> 24);
		return (long)(hdr + len + NET_SEAL_CRC_LEN);
	}
	assert(kr->n <= NET_SEAL_MAX_KEYS);
	uint8_t *nonce = out + hdr;
	if (RAND_bytes(nonce, NET_SEAL_NONCE_LEN) != 1) {
		return NET_SEAL_ESPACE;
	}
	EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
	if (ctx == NULL) {
		return NET_SEAL_ESPACE;
	}
	uint8_t *ct = out + body;
	int outl = 0;
	bool ok = gcm_init(ctx, true, kr->keys[0], nonce, out, hdr) &&
		  evp_update(ctx, true, ct, ct, len) &&
		  EVP_EncryptFinal_ex(ctx, ct + len, &outl) == 1 && outl == 0 &&
		  EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, NET_SEAL_TAG_LEN, ct + len) == 1;
	EVP_CIPHER_CTX_free(ctx);
	if (!ok) {
		return NET_SEAL_ESPACE;
	}
	return (long)(body + len + NET_SEAL_TAG_LEN);
}

/* ---- opening ---- */

/* Tries each key of the ring on ct[0..len) in place. On failure the ciphertext is restored
 * before the next key (see the top of the file). */
static int open_encrypted(const struct net_keyring *kr, const uint8_t *aad, size_t aad_len,
			  const uint8_t *nonce, uint8_t *ct, size_t len, const uint8_t *tag)
{
	EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
	if (ctx == NULL) {
		return NET_SEAL_EDECRYPT;
	}
	int rv = NET_SEAL_EDECRYPT;
	uint32_t n = kr->n < NET_SEAL_MAX_KEYS ? kr->n : NET_SEAL_MAX_KEYS;
	for (uint32_t k = 0; k < n; k++) {
		const uint8_t *key = kr->keys[k];
		if (!gcm_init(ctx, false, key, nonce, aad, aad_len) ||
		    !evp_update(ctx, false, ct, ct, len)) {
			break; /* the library failed, not the packet: no point trying others */
		}
		/* The tag is only read; OpenSSL's interface takes a non-const pointer. */
		uint8_t tagcopy[NET_SEAL_TAG_LEN];
		memcpy(tagcopy, tag, sizeof tagcopy);
		int outl = 0;
		if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, NET_SEAL_TAG_LEN, tagcopy) ==
			    1 &&
		    EVP_DecryptFinal_ex(ctx, ct + len, &outl) == 1) {
			rv = NET_SEAL_OK;
			break;
		}
		/* Wrong key: put the ciphertext back for the next one. */
		if (len > 0 && (k + 1 < n)) {
			if (!gcm_init(ctx, true, key, nonce, aad, aad_len) ||
			    !evp_update(ctx, true, ct, ct, len)) {
				break;
			}
		}
	}
	EVP_CIPHER_CTX_free(ctx);
	return rv;
}

int net_seal_open(const struct net_keyring *kr, const char *label, uint8_t *pkt, size_t len,
		  uint8_t **payload, size_t *plen)
{
	if (pkt == NULL || len < 1) {
		return NET_SEAL_ESHORT;
	}
	uint8_t flags = pkt[0];
	if ((flags & ~(NET_SEAL_LABEL | NET_SEAL_ENCRYPTED)) != 0) {
		return NET_SEAL_EFLAGS;
	}
	size_t hdr = 1;
	size_t ours = label_len(label);
	if (flags & NET_SEAL_LABEL) {
		if (len < 2) {
			return NET_SEAL_ESHORT;
		}
		size_t l = pkt[1];
		if (l == 0) {
			return NET_SEAL_ELABEL; /* the flag promises a label and there is none */
		}
		if (len < 2 + l) {
			return NET_SEAL_ESHORT;
		}
		if (l != ours || memcmp(pkt + 2, label, l) != 0) {
			return NET_SEAL_ELABEL;
		}
		hdr = 2 + l;
	} else if (ours > 0) {
		return NET_SEAL_ELABEL;
	}
	bool enc = (flags & NET_SEAL_ENCRYPTED) != 0;
	if (enc != encrypting(kr)) {
		return NET_SEAL_EPLAIN;
	}
	if (!enc) {
		if (len - hdr < NET_SEAL_CRC_LEN) {
			return NET_SEAL_ESHORT;
		}
		size_t n = len - hdr - NET_SEAL_CRC_LEN;
		const uint8_t *c = pkt + hdr + n;
		uint32_t want = (uint32_t)c[0] | (uint32_t)c[1] << 8 | (uint32_t)c[2] << 16 |
				(uint32_t)c[3] << 24;
		if (cairn_crc32c(0, pkt, hdr + n) != want) {
			return NET_SEAL_ECRC;
		}
		if (payload != NULL) {
			*payload = pkt + hdr;
		}
		if (plen != NULL) {
			*plen = n;
		}
		return NET_SEAL_OK;
	}
	if (len - hdr < NET_SEAL_NONCE_LEN + NET_SEAL_TAG_LEN) {
		return NET_SEAL_ESHORT;
	}
	size_t n = len - hdr - NET_SEAL_NONCE_LEN - NET_SEAL_TAG_LEN;
	uint8_t *ct = pkt + hdr + NET_SEAL_NONCE_LEN;
	int rv = open_encrypted(kr, pkt, hdr, pkt + hdr, ct, n, ct + n);
	if (rv != NET_SEAL_OK) {
		return rv;
	}
	if (payload != NULL) {
		*payload = ct;
	}
	if (plen != NULL) {
		*plen = n;
	}
	return NET_SEAL_OK;
}

/* gossip_seal.h: what wraps a gossip payload on the wire: the cluster label, a CRC, and
 * AES-256-GCM encryption with a keyring. Pure functions (OpenSSL EVP and libc), no I/O: the
 * UDP and TCP transport (gossip_net.h) and the fuzz target use them alike.
 *
 * A sealed packet:
 *
 *   byte 0        flags: NET_SEAL_LABEL (a label follows), NET_SEAL_ENCRYPTED
 *   [label]       1 length byte (1..255) and the label's bytes, when NET_SEAL_LABEL
 *   plain:        payload, then CRC-32C (little-endian) of everything before it
 *   encrypted:    12-byte random nonce, ciphertext (as long as the payload), 16-byte GCM tag;
 *                 the flags byte and the label are authenticated as additional data
 *
 * Opening checks, in order: the flags are known, the label is ours (a pool with a label drops
 * packets without one and the other way round), the packet is encrypted exactly when we have a
 * keyring, then the CRC, or decryption with each key of the ring until one succeeds. Any
 * failure drops the packet with a reason the transport counts; nothing of it is trusted.
 *
 * The keyring: up to NET_SEAL_MAX_KEYS keys of 32 bytes. keys[0] is the primary, used to
 * seal; every key opens. Rotation without downtime: add the new key on every member, make it
 * primary on every member, then remove the old one.
 */
#ifndef CAIRN_NET_GOSSIP_SEAL_H
#define CAIRN_NET_GOSSIP_SEAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define NET_SEAL_LABEL 0x01u
#define NET_SEAL_ENCRYPTED 0x02u

#define NET_SEAL_KEY_LEN 32
#define NET_SEAL_MAX_KEYS 16
#define NET_SEAL_MAX_LABEL 255
#define NET_SEAL_NONCE_LEN 12
#define NET_SEAL_TAG_LEN 16
#define NET_SEAL_CRC_LEN 4

struct net_keyring {
	uint32_t n; /* 0: no encryption */
	uint8_t keys[NET_SEAL_MAX_KEYS][NET_SEAL_KEY_LEN];
};

/* Why a packet was dropped. */
enum net_seal_err {
	NET_SEAL_OK = 0,
	NET_SEAL_ESHORT = -1,   /* shorter than its headers */
	NET_SEAL_EFLAGS = -2,   /* unknown flags */
	NET_SEAL_ELABEL = -3,   /* not our label */
	NET_SEAL_EPLAIN = -4,   /* plain while we encrypt, or encrypted while we do not */
	NET_SEAL_ECRC = -5,     /* CRC mismatch */
	NET_SEAL_EDECRYPT = -6, /* no key of the ring authenticates it */
	NET_SEAL_ESPACE = -7,   /* output buffer too small (sealing) */
};

const char *net_seal_strerror(int err);

/* Read a key file: one base64-encoded 32-byte key per line, the first is the primary; blank
 * lines and lines starting with '#' are ignored. On error returns -1 with a message in err. */
int net_keyring_load(const char *path, struct net_keyring *out, char *err, size_t errlen);
/* Decode one base64 key; -1 if it is not 32 bytes of valid base64. */
int net_key_decode(const char *b64, size_t len, uint8_t key[NET_SEAL_KEY_LEN]);
/* A new random key in base64 (44 characters and a NUL). */
int net_key_generate(char out[45]);

/* Bytes a sealed packet adds to its payload with this keyring and label (label may be NULL). */
size_t net_seal_overhead(const struct net_keyring *kr, const char *label);

/* Seal payload into out; returns the packet's length or NET_SEAL_ESPACE. kr may be NULL or
 * empty (plain), label NULL or "" (none). */
long net_seal(const struct net_keyring *kr, const char *label, const uint8_t *payload,
	      size_t len, uint8_t *out, size_t cap);

/* Open a packet in place: on success *payload and *plen point into pkt (decrypted there).
 * Returns NET_SEAL_OK or a negative enum net_seal_err. */
int net_seal_open(const struct net_keyring *kr, const char *label, uint8_t *pkt, size_t len,
		  uint8_t **payload, size_t *plen);

#endif

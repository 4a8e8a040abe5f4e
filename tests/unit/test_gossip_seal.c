/* test_gossip_seal.c: the sealed gossip packet (net/gossip_seal.h): round trips plain,
 * labelled and encrypted; every reason a packet is dropped; key rotation with a two-key ring;
 * the key file (comments, bad base64, wrong length, empty) and key generation. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gossip_seal.h"
#include "tmpdir.h"

#define BUF 2048

static void ring_fill(struct net_keyring *kr, uint32_t n, uint8_t seed)
{
	memset(kr, 0, sizeof *kr);
	kr->n = n;
	for (uint32_t k = 0; k < n; k++) {
		for (size_t i = 0; i < NET_SEAL_KEY_LEN; i++) {
			kr->keys[k][i] = (uint8_t)(seed + k * 31u + i * 7u);
		}
	}
}

static void one_key(struct net_keyring *kr, uint8_t seed)
{
	ring_fill(kr, 1, seed);
}

static const uint8_t msg[] = "ping seq=7 from node-a";

static bool contains(const uint8_t *hay, size_t n, const char *needle)
{
	size_t m = strlen(needle);
	for (size_t i = 0; i + m <= n; i++) {
		if (memcmp(hay + i, needle, m) == 0) {
			return true;
		}
	}
	return false;
}

/* Seals msg, checks the length against the overhead, opens it and compares. */
static void round_trip(const struct net_keyring *kr, const char *label)
{
	uint8_t pkt[BUF];
	long n = net_seal(kr, label, msg, sizeof msg, pkt, sizeof pkt);
	assert_true(n > 0);
	assert_int_equal((size_t)n, sizeof msg + net_seal_overhead(kr, label));
	uint8_t *p = NULL;
	size_t plen = 0;
	assert_int_equal(net_seal_open(kr, label, pkt, (size_t)n, &p, &plen), NET_SEAL_OK);
	assert_int_equal(plen, sizeof msg);
	assert_memory_equal(p, msg, sizeof msg);
	assert_true(p > pkt && p + plen <= pkt + n);
}

static void test_round_trip_plain(void **state)
{
	(void)state;
	round_trip(NULL, NULL);
	struct net_keyring empty = { .n = 0 };
	round_trip(&empty, "");
	assert_int_equal(net_seal_overhead(NULL, NULL), 1 + NET_SEAL_CRC_LEN);
	/* An empty payload seals and opens too. */
	uint8_t pkt[16];
	long n = net_seal(NULL, NULL, NULL, 0, pkt, sizeof pkt);
	assert_int_equal(n, 5);
	uint8_t *p;
	size_t plen = 99;
	assert_int_equal(net_seal_open(NULL, NULL, pkt, (size_t)n, &p, &plen), NET_SEAL_OK);
	assert_int_equal(plen, 0);
}

static void test_round_trip_label(void **state)
{
	(void)state;
	round_trip(NULL, "prod-eu");
	assert_int_equal(net_seal_overhead(NULL, "prod-eu"), 1 + 1 + 7 + NET_SEAL_CRC_LEN);
	char longest[NET_SEAL_MAX_LABEL + 1];
	memset(longest, 'x', NET_SEAL_MAX_LABEL);
	longest[NET_SEAL_MAX_LABEL] = '\0';
	round_trip(NULL, longest);
	/* One byte more than a label may be is refused at sealing. */
	char too_long[NET_SEAL_MAX_LABEL + 2];
	memset(too_long, 'x', NET_SEAL_MAX_LABEL + 1);
	too_long[NET_SEAL_MAX_LABEL + 1] = '\0';
	uint8_t pkt[BUF];
	assert_int_equal(net_seal(NULL, too_long, msg, sizeof msg, pkt, sizeof pkt),
			 NET_SEAL_ESPACE);
}

static void test_round_trip_encrypted(void **state)
{
	(void)state;
	struct net_keyring kr;
	one_key(&kr, 1);
	round_trip(&kr, NULL);
	round_trip(&kr, "prod-eu");
	assert_int_equal(net_seal_overhead(&kr, NULL), 1 + NET_SEAL_NONCE_LEN + NET_SEAL_TAG_LEN);
	/* The payload does not appear in clear, and two seals differ (random nonce). */
	uint8_t a[BUF], b[BUF];
	long na = net_seal(&kr, NULL, msg, sizeof msg, a, sizeof a);
	long nb = net_seal(&kr, NULL, msg, sizeof msg, b, sizeof b);
	assert_int_equal(na, nb);
	assert_false(contains(a, (size_t)na, "node-a"));
	assert_memory_not_equal(a, b, (size_t)na);
	/* A large payload (several EVP updates' worth is not needed: one big one). */
	size_t big = 1u << 20;
	uint8_t *in = malloc(big), *pkt = malloc(big + 64);
	assert_non_null(in);
	assert_non_null(pkt);
	for (size_t i = 0; i < big; i++) {
		in[i] = (uint8_t)(i * 13u);
	}
	long n = net_seal(&kr, "l", in, big, pkt, big + 64);
	assert_true(n > 0);
	uint8_t *p;
	size_t plen;
	assert_int_equal(net_seal_open(&kr, "l", pkt, (size_t)n, &p, &plen), NET_SEAL_OK);
	assert_int_equal(plen, big);
	assert_memory_equal(p, in, big);
	free(in);
	free(pkt);
}

static void test_seal_space(void **state)
{
	(void)state;
	struct net_keyring kr;
	one_key(&kr, 1);
	uint8_t pkt[BUF];
	size_t need = sizeof msg + net_seal_overhead(&kr, "lbl");
	assert_int_equal(net_seal(&kr, "lbl", msg, sizeof msg, pkt, need - 1), NET_SEAL_ESPACE);
	assert_int_equal(net_seal(&kr, "lbl", msg, sizeof msg, pkt, need), (long)need);
	need = sizeof msg + net_seal_overhead(NULL, NULL);
	assert_int_equal(net_seal(NULL, NULL, msg, sizeof msg, pkt, need - 1), NET_SEAL_ESPACE);
}

/* ---- every drop reason ---- */

static int open_ret(const struct net_keyring *kr, const char *label, uint8_t *pkt, size_t len)
{
	uint8_t *p = NULL;
	size_t plen = 0;
	return net_seal_open(kr, label, pkt, len, &p, &plen);
}

static void test_drop_short(void **state)
{
	(void)state;
	struct net_keyring kr;
	one_key(&kr, 1);
	uint8_t pkt[BUF];
	assert_int_equal(open_ret(NULL, NULL, pkt, 0), NET_SEAL_ESHORT);
	/* Plain: flags and fewer than 4 CRC bytes. */
	pkt[0] = 0;
	assert_int_equal(open_ret(NULL, NULL, pkt, 4), NET_SEAL_ESHORT);
	/* A label flag without its length byte, or with fewer bytes than it announces. */
	pkt[0] = NET_SEAL_LABEL;
	assert_int_equal(open_ret(NULL, "abc", pkt, 1), NET_SEAL_ESHORT);
	pkt[1] = 3;
	memcpy(pkt + 2, "ab", 2);
	assert_int_equal(open_ret(NULL, "abc", pkt, 4), NET_SEAL_ESHORT);
	/* Encrypted: the nonce and tag do not fit. */
	long n = net_seal(&kr, NULL, msg, 0, pkt, sizeof pkt);
	assert_int_equal(n, 1 + NET_SEAL_NONCE_LEN + NET_SEAL_TAG_LEN);
	assert_int_equal(open_ret(&kr, NULL, pkt, (size_t)n - 1), NET_SEAL_ESHORT);
	/* Every truncation of a sealed packet is refused, never read past. */
	for (int enc = 0; enc < 2; enc++) {
		long full = net_seal(enc ? &kr : NULL, "lbl", msg, sizeof msg, pkt, sizeof pkt);
		assert_true(full > 0);
		uint8_t copy[BUF];
		for (long cut = 0; cut < full; cut++) {
			memcpy(copy, pkt, (size_t)full);
			int rv = open_ret(enc ? &kr : NULL, "lbl", copy, (size_t)cut);
			assert_true(rv < 0);
		}
	}
}

static void test_drop_flags(void **state)
{
	(void)state;
	uint8_t pkt[BUF];
	long n = net_seal(NULL, NULL, msg, sizeof msg, pkt, sizeof pkt);
	for (unsigned bit = 2; bit < 8; bit++) {
		uint8_t copy[BUF];
		memcpy(copy, pkt, (size_t)n);
		copy[0] = (uint8_t)(copy[0] | (1u << bit));
		assert_int_equal(open_ret(NULL, NULL, copy, (size_t)n), NET_SEAL_EFLAGS);
	}
}

static void test_drop_label(void **state)
{
	(void)state;
	uint8_t pkt[BUF];
	long n = net_seal(NULL, "blue", msg, sizeof msg, pkt, sizeof pkt);
	/* Wrong label, a label that is a prefix of ours, and no label while we have one. */
	assert_int_equal(open_ret(NULL, "green", pkt, (size_t)n), NET_SEAL_ELABEL);
	assert_int_equal(open_ret(NULL, "blu", pkt, (size_t)n), NET_SEAL_ELABEL);
	assert_int_equal(open_ret(NULL, "blue2", pkt, (size_t)n), NET_SEAL_ELABEL);
	/* A labelled packet to a pool without a label. */
	assert_int_equal(open_ret(NULL, NULL, pkt, (size_t)n), NET_SEAL_ELABEL);
	assert_int_equal(open_ret(NULL, "", pkt, (size_t)n), NET_SEAL_ELABEL);
	/* An unlabelled packet to a pool with one. */
	n = net_seal(NULL, NULL, msg, sizeof msg, pkt, sizeof pkt);
	assert_int_equal(open_ret(NULL, "blue", pkt, (size_t)n), NET_SEAL_ELABEL);
	/* The label flag with a zero length. */
	pkt[0] = NET_SEAL_LABEL;
	pkt[1] = 0;
	assert_int_equal(open_ret(NULL, "blue", pkt, 10), NET_SEAL_ELABEL);
}

static void test_drop_plain_mismatch(void **state)
{
	(void)state;
	struct net_keyring kr;
	one_key(&kr, 1);
	uint8_t pkt[BUF];
	/* A plain packet while we encrypt. */
	long n = net_seal(NULL, NULL, msg, sizeof msg, pkt, sizeof pkt);
	assert_int_equal(open_ret(&kr, NULL, pkt, (size_t)n), NET_SEAL_EPLAIN);
	/* An encrypted packet while we do not. */
	n = net_seal(&kr, NULL, msg, sizeof msg, pkt, sizeof pkt);
	assert_int_equal(open_ret(NULL, NULL, pkt, (size_t)n), NET_SEAL_EPLAIN);
}

static void test_drop_crc(void **state)
{
	(void)state;
	uint8_t pkt[BUF];
	long n = net_seal(NULL, "lbl", msg, sizeof msg, pkt, sizeof pkt);
	/* Any flipped bit after the label (payload or CRC) is caught by the CRC. */
	for (long i = 1 + 1 + 3; i < n; i++) {
		uint8_t copy[BUF];
		memcpy(copy, pkt, (size_t)n);
		copy[i] ^= 0x10;
		assert_int_equal(open_ret(NULL, "lbl", copy, (size_t)n), NET_SEAL_ECRC);
	}
}

static void test_drop_tag_and_ciphertext(void **state)
{
	(void)state;
	struct net_keyring kr;
	one_key(&kr, 1);
	uint8_t pkt[BUF];
	long n = net_seal(&kr, "lbl", msg, sizeof msg, pkt, sizeof pkt);
	/* Nonce, ciphertext, tag: any flip fails authentication. */
	for (long i = 1 + 1 + 3; i < n; i++) {
		uint8_t copy[BUF];
		memcpy(copy, pkt, (size_t)n);
		copy[i] ^= 0x01;
		assert_int_equal(open_ret(&kr, "lbl", copy, (size_t)n), NET_SEAL_EDECRYPT);
	}
	/* The flags and label are authenticated too: relabel a packet for another pool. */
	uint8_t copy[BUF];
	memcpy(copy, pkt, (size_t)n);
	memcpy(copy + 2, "lbm", 3);
	assert_int_equal(open_ret(&kr, "lbm", copy, (size_t)n), NET_SEAL_EDECRYPT);
}

static void test_drop_wrong_key(void **state)
{
	(void)state;
	struct net_keyring a, b;
	one_key(&a, 1);
	one_key(&b, 2);
	uint8_t pkt[BUF];
	long n = net_seal(&a, NULL, msg, sizeof msg, pkt, sizeof pkt);
	assert_int_equal(open_ret(&b, NULL, pkt, (size_t)n), NET_SEAL_EDECRYPT);
	/* A ring of several wrong keys: still refused. */
	struct net_keyring many;
	ring_fill(&many, NET_SEAL_MAX_KEYS, 50);
	n = net_seal(&a, NULL, msg, sizeof msg, pkt, sizeof pkt);
	assert_int_equal(open_ret(&many, NULL, pkt, (size_t)n), NET_SEAL_EDECRYPT);
}

static void test_rotation(void **state)
{
	(void)state;
	struct net_keyring old_only, new_only, both;
	one_key(&old_only, 10);
	one_key(&new_only, 20);
	both.n = 2;
	memcpy(both.keys[0], new_only.keys[0], NET_SEAL_KEY_LEN);
	memcpy(both.keys[1], old_only.keys[0], NET_SEAL_KEY_LEN);
	uint8_t pkt[BUF];
	uint8_t *p;
	size_t plen;
	/* A member still on [old] and one already on [new]: [new, old] opens both. */
	long n = net_seal(&old_only, "l", msg, sizeof msg, pkt, sizeof pkt);
	assert_int_equal(net_seal_open(&both, "l", pkt, (size_t)n, &p, &plen), NET_SEAL_OK);
	assert_memory_equal(p, msg, sizeof msg);
	n = net_seal(&new_only, "l", msg, sizeof msg, pkt, sizeof pkt);
	assert_int_equal(net_seal_open(&both, "l", pkt, (size_t)n, &p, &plen), NET_SEAL_OK);
	assert_memory_equal(p, msg, sizeof msg);
	/* [new, old] seals with new: a member on [old] alone cannot open it, [new] can. */
	n = net_seal(&both, "l", msg, sizeof msg, pkt, sizeof pkt);
	uint8_t copy[BUF];
	memcpy(copy, pkt, (size_t)n);
	assert_int_equal(open_ret(&old_only, "l", copy, (size_t)n), NET_SEAL_EDECRYPT);
	memcpy(copy, pkt, (size_t)n);
	assert_int_equal(net_seal_open(&new_only, "l", copy, (size_t)n, &p, &plen), NET_SEAL_OK);
	assert_memory_equal(p, msg, sizeof msg);
	/* The last key of a full ring opens, after fifteen wrong ones put the bytes back. */
	struct net_keyring full;
	ring_fill(&full, NET_SEAL_MAX_KEYS, 70);
	memcpy(full.keys[NET_SEAL_MAX_KEYS - 1], old_only.keys[0], NET_SEAL_KEY_LEN);
	n = net_seal(&old_only, NULL, msg, sizeof msg, pkt, sizeof pkt);
	assert_int_equal(net_seal_open(&full, NULL, pkt, (size_t)n, &p, &plen), NET_SEAL_OK);
	assert_memory_equal(p, msg, sizeof msg);
}

/* ---- keys and key files ---- */

static char tmp[256];

static int files_setup(void **state)
{
	(void)state;
	h_tmpdir_make(tmp, sizeof tmp, "gossip-seal");
	return 0;
}

static int files_teardown(void **state)
{
	(void)state;
	h_tmpdir_remove(tmp);
	return 0;
}

static const char *write_file(const char *name, const char *text)
{
	static char path[512];
	snprintf(path, sizeof path, "%s/%s", tmp, name);
	FILE *f = fopen(path, "wb");
	assert_non_null(f);
	assert_int_equal(fwrite(text, 1, strlen(text), f), strlen(text));
	assert_int_equal(fclose(f), 0);
	return path;
}

static void test_key_generate_decode(void **state)
{
	(void)state;
	char a[45], b[45];
	assert_int_equal(net_key_generate(a), 0);
	assert_int_equal(net_key_generate(b), 0);
	assert_int_equal(strlen(a), 44);
	assert_int_equal(a[43], '=');
	assert_string_not_equal(a, b);
	uint8_t key[NET_SEAL_KEY_LEN];
	assert_int_equal(net_key_decode(a, strlen(a), key), 0);
	/* Surrounding whitespace is tolerated; a missing or extra character is not. */
	char padded[64];
	snprintf(padded, sizeof padded, "  %s\r\n", a);
	uint8_t again[NET_SEAL_KEY_LEN];
	assert_int_equal(net_key_decode(padded, strlen(padded), again), 0);
	assert_memory_equal(key, again, NET_SEAL_KEY_LEN);
	assert_int_equal(net_key_decode(a, 43, key), -1);
	assert_int_equal(net_key_decode("AAAA", 4, key), -1);
	/* 32 zero bytes, a known encoding. */
	const char *zero = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
	assert_int_equal(net_key_decode(zero, strlen(zero), key), 0);
	uint8_t zeros[NET_SEAL_KEY_LEN] = { 0 };
	assert_memory_equal(key, zeros, NET_SEAL_KEY_LEN);
	/* 24 bytes (AES-192) and 48 bytes are refused. */
	const char *k24 = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
	assert_int_equal(net_key_decode(k24, strlen(k24), key), -1);
	const char *k48 = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
	assert_int_equal(net_key_decode(k48, strlen(k48), key), -1);
}

static void test_key_file_good(void **state)
{
	(void)state;
	char k1[45], k2[45];
	assert_int_equal(net_key_generate(k1), 0);
	assert_int_equal(net_key_generate(k2), 0);
	char text[512];
	snprintf(text, sizeof text,
		 "# gossip keys: the first is the primary\n"
		 "\n"
		 "%s\n"
		 "   # the previous key, kept until every member has the new one\r\n"
		 "  %s  \r\n"
		 "\n",
		 k1, k2);
	const char *path = write_file("keys", text);
	struct net_keyring kr;
	memset(&kr, 0xee, sizeof kr);
	char err[256];
	assert_int_equal(net_keyring_load(path, &kr, err, sizeof err), 0);
	assert_int_equal(kr.n, 2);
	uint8_t want[NET_SEAL_KEY_LEN];
	assert_int_equal(net_key_decode(k1, 44, want), 0);
	assert_memory_equal(kr.keys[0], want, NET_SEAL_KEY_LEN);
	assert_int_equal(net_key_decode(k2, 44, want), 0);
	assert_memory_equal(kr.keys[1], want, NET_SEAL_KEY_LEN);
	/* A file without a final newline. */
	snprintf(text, sizeof text, "%s", k1);
	path = write_file("keys-nonl", text);
	assert_int_equal(net_keyring_load(path, &kr, err, sizeof err), 0);
	assert_int_equal(kr.n, 1);
}

/* Loads text and expects an error whose message contains want. */
static void expect_load_error(const char *name, const char *text, const char *want)
{
	const char *path = write_file(name, text);
	struct net_keyring kr;
	memset(&kr, 0, sizeof kr);
	kr.n = 7; /* untouched on error */
	char err[256] = "";
	assert_int_equal(net_keyring_load(path, &kr, err, sizeof err), -1);
	assert_int_equal(kr.n, 7);
	if (strstr(err, want) == NULL) {
		fail_msg("error \"%s\" lacks \"%s\"", err, want);
	}
}

static void test_key_file_errors(void **state)
{
	(void)state;
	char k[45];
	assert_int_equal(net_key_generate(k), 0);
	char text[512];
	snprintf(text, sizeof text, "# ok\n%s\nnot base64 at all!\n", k);
	expect_load_error("bad-b64", text, ":3: not valid base64");
	/* 16 bytes: valid base64, an AES-128 key. */
	snprintf(text, sizeof text, "%s\n\nAAAAAAAAAAAAAAAAAAAAAA==\n", k);
	expect_load_error("short-key", text, ":3: key is 16 bytes, AES-256 needs exactly 32");
	expect_load_error("long-key",
			  "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n",
			  ":1: key is longer than 32 bytes");
	expect_load_error("empty", "", "no key in the file");
	expect_load_error("only-comments", "# nothing yet\n\n   \n", "no key in the file");
	/* Seventeen keys. */
	text[0] = '\0';
	char many[45 * 17 + 1] = "";
	for (int i = 0; i < 17; i++) {
		strcat(many, k);
		strcat(many, "\n");
	}
	expect_load_error("too-many", many, ":17: too many keys");
	/* A file that does not exist names the path and the reason. */
	struct net_keyring kr;
	char err[256];
	char missing[512];
	snprintf(missing, sizeof missing, "%s/none", tmp);
	assert_int_equal(net_keyring_load(missing, &kr, err, sizeof err), -1);
	assert_non_null(strstr(err, missing));
	assert_non_null(strstr(err, "No such file"));
}

static void test_strerror(void **state)
{
	(void)state;
	for (int e = NET_SEAL_ESPACE; e <= NET_SEAL_OK; e++) {
		assert_non_null(net_seal_strerror(e));
		assert_string_not_equal(net_seal_strerror(e), "unknown seal error");
	}
	assert_string_equal(net_seal_strerror(-100), "unknown seal error");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_round_trip_plain),
		cmocka_unit_test(test_round_trip_label),
		cmocka_unit_test(test_round_trip_encrypted),
		cmocka_unit_test(test_seal_space),
		cmocka_unit_test(test_drop_short),
		cmocka_unit_test(test_drop_flags),
		cmocka_unit_test(test_drop_label),
		cmocka_unit_test(test_drop_plain_mismatch),
		cmocka_unit_test(test_drop_crc),
		cmocka_unit_test(test_drop_tag_and_ciphertext),
		cmocka_unit_test(test_drop_wrong_key),
		cmocka_unit_test(test_rotation),
		cmocka_unit_test_setup_teardown(test_key_generate_decode, files_setup,
						files_teardown),
		cmocka_unit_test_setup_teardown(test_key_file_good, files_setup, files_teardown),
		cmocka_unit_test_setup_teardown(test_key_file_errors, files_setup, files_teardown),
		cmocka_unit_test(test_strerror),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

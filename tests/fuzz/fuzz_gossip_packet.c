/* fuzz_gossip_packet.c: libFuzzer target for what reads a gossip datagram or push-pull state
 * from the network: the seal (net/gossip_seal.h: flags, label, CRC, AES-256-GCM with a
 * keyring) and behind it the SWIM core's decoders (gossip_recv, gossip_state_merge).
 *
 * The first input byte picks the pool's setup (bits 0-1: plain, labelled, encrypted with a
 * fixed two-key ring, encrypted and labelled) and whether the rest is a packet as received
 * (bit 2 clear) or a payload that is first sealed with that setup (bit 2 set), so that the
 * fuzzer reaches the core through a packet that authenticates, which it could not forge. A
 * sealed payload must open again to the same bytes. Whatever opens goes to gossip_recv, and the
 * core's updates are drained as a transport would (every datagram it makes must fit its packet
 * size); the raw bytes also go to gossip_state_merge. One core lives across inputs (bounded
 * members), with a clock that moves forward, so its timers and reaping run as well. A failed
 * check aborts, which libFuzzer reports with the input.
 *
 * Run: build-fuzz/bin/fuzz_gossip_packet -max_total_time=60 [corpus-dir]
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gossip.h"
#include "gossip_seal.h"

#define CHECK(cond)                                                                              \
	do {                                                                                     \
		if (!(cond)) {                                                                   \
			fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
			abort();                                                                 \
		}                                                                                \
	} while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define PACKET_SIZE 1400
#define MAX_INPUT (1u << 16)
/* Updates drained after one event; the core should settle long before. */
#define MAX_ROUNDS 64

static const char *const label = "fuzz-pool";

static struct gossip *core;
static uint64_t now_ms = 1000;
static struct net_keyring ring;
static uint8_t pkt[MAX_INPUT + 512];

static void setup(void)
{
	if (core != NULL) {
		return;
	}
	ring.n = 2;
	for (size_t i = 0; i < NET_SEAL_KEY_LEN; i++) {
		ring.keys[0][i] = (uint8_t)(0x11 + i);
		ring.keys[1][i] = (uint8_t)(0xa0 ^ i);
	}
	struct gossip_config cfg;
	gossip_config_init(&cfg);
	cfg.name = "fuzz-member";
	cfg.addr.family = 4;
	cfg.addr.ip[0] = 127;
	cfg.addr.ip[3] = 1;
	cfg.addr.port = 7946;
	cfg.seed = 1;
	cfg.packet_size = PACKET_SIZE - 64; /* what a transport leaves after its overhead */
	cfg.max_members = 512;
	cfg.max_queue = 256;
	cfg.reap_dead_ms = 60000;
	cfg.reap_left_ms = 60000;
	CHECK(gossip_new(&cfg, now_ms, &core) == 0);
	CHECK(core != NULL);
}

/* Takes the core's updates as the transport loop would, without sending anything. */
static void drain(uint32_t packet_size)
{
	for (int i = 0; i < MAX_ROUNDS && gossip_has_update(core); i++) {
		struct gossip_update u;
		gossip_ready(core, &u);
		for (size_t k = 0; k < u.n_sends; k++) {
			CHECK(u.sends[k].len <= packet_size);
			CHECK(u.sends[k].len == 0 || u.sends[k].data != NULL);
		}
		for (size_t k = 0; k < u.n_events; k++) {
			CHECK(u.events[k].member.name != NULL);
		}
		gossip_advance(core);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1 || size > MAX_INPUT) {
		return 0;
	}
	setup();
	uint8_t mode = data[0];
	data++;
	size--;
	const struct net_keyring *kr = (mode & 2) ? &ring : NULL;
	const char *lbl = (mode & 1) ? label : NULL;
	now_ms += 1 + (mode >> 3) * 37u;

	size_t len;
	if (mode & 4) {
		/* A payload from a member of this pool: seal it, and it must open to itself. */
		long n = net_seal(kr, lbl, data, size, pkt, sizeof pkt);
		CHECK(n > 0 && (size_t)n == size + net_seal_overhead(kr, lbl));
		len = (size_t)n;
	} else {
		memcpy(pkt, data, size);
		len = size;
	}
	uint8_t *payload = NULL;
	size_t plen = 0;
	int rv = net_seal_open(kr, lbl, pkt, len, &payload, &plen);
	CHECK(rv <= 0 && rv >= NET_SEAL_EDECRYPT);
	if (mode & 4) {
		CHECK(rv == NET_SEAL_OK);
		CHECK(plen == size && (size == 0 || memcmp(payload, data, size) == 0));
	}
	struct gossip_addr from = { .family = 4, .ip = { 10, 0, 0, 2 }, .port = 7946 };
	if (rv == NET_SEAL_OK) {
		CHECK(payload >= pkt && payload + plen <= pkt + len);
		(void)gossip_recv(core, now_ms, &from, payload, plen);
		drain(PACKET_SIZE - 64);
	}
	/* The same bytes as a push-pull state. */
	bool join = false;
	(void)gossip_state_merge(core, now_ms, data, size, &join);
	drain(PACKET_SIZE - 64);
	if (now_ms >= gossip_next_deadline(core)) {
		gossip_tick(core, now_ms);
		drain(PACKET_SIZE - 64);
	}
	return 0;
}

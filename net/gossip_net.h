/* gossip_net.h: gossip's transport on libuv: one UDP socket for probes and gossip, and a TCP
 * listener on the same port for push-pull streams of the full state. It seals and opens every
 * datagram and stream frame with gossip_seal.h (label, CRC, keyring) and knows nothing of
 * SWIM: payloads in, payloads out.
 *
 * Push-pull on a stream: the initiator sends one frame (its state), the acceptor answers with
 * one frame (its own), and the stream closes. A frame is a 4-byte big-endian length and a
 * sealed packet. At most max_streams streams run at once (both directions together); a stream
 * beyond the bound is refused or not started and reported failed. Each stream has a deadline
 * (stream_timeout_ms) and a frame bound (max_frame), and the frames being read by all streams
 * together are bounded (max_buffered): a stream that would pass it is ended.
 *
 * Threads: one loop; nothing here is thread-safe. Callbacks may call net_gossip_send(),
 * net_gossip_pushpull() and net_gossip_set_keyring(), not net_gossip_stop().
 */
#ifndef CAIRN_NET_GOSSIP_NET_H
#define CAIRN_NET_GOSSIP_NET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "gossip_seal.h"

struct net_gossip;

struct net_gossip_stats {
	uint64_t packets_in, packets_out, bytes_in, bytes_out; /* datagrams, sealed sizes */
	uint64_t dropped_short, dropped_label, dropped_plain, dropped_crc, dropped_decrypt;
	uint64_t send_errors;
	uint64_t streams_in, streams_out, streams_refused, streams_failed;
	/* More drop reasons; every dropped_* counter also counts push-pull frames. */
	uint64_t dropped_flags;    /* unknown flags byte */
	uint64_t dropped_oversize; /* datagram larger than max_packet */
};

struct net_gossip_config {
	uv_loop_t *loop;
	struct sockaddr_storage bind; /* UDP and TCP, same address and port */
	const char *label;            /* NULL or "": none; copied */
	const struct net_keyring *keyring; /* NULL or empty: plain; copied */
	uint32_t max_packet;          /* 1400: largest sealed datagram sent or read */
	uint32_t max_streams;         /* 128 */
	uint32_t max_frame;           /* 32 MiB */
	uint32_t stream_timeout_ms;   /* 10000 */
	size_t max_buffered;          /* 64 MiB: frames being read by all streams together */
	void *data;
	/* A datagram's payload, opened; valid during the call. */
	void (*on_packet)(void *data, const struct sockaddr *from, const uint8_t *payload,
			  size_t len);
	/* A remote state arrived on a stream (either side): merge it. `join` is what the remote
	 * said. Return 0, or nonzero to close the stream without answering. */
	int (*on_state)(void *data, const struct sockaddr *from, const uint8_t *state, size_t len,
			bool join);
	/* Our state to send: *buf from malloc(), owned by the transport afterwards. */
	int (*local_state)(void *data, bool join, uint8_t **buf, size_t *len);
	/* A push-pull we started ended: status 0 after the answer was merged, or nonzero. */
	void (*on_pushpull_done)(void *data, const struct sockaddr *to, int status);
	/* Optional log line (no newline); level 0 debug .. 3 error. */
	void (*log)(void *data, int level, const char *msg);
};

void net_gossip_config_init(struct net_gossip_config *cfg);

/* Bind both sockets. Returns 0 or a negative uv error (e.g. UV_EADDRINUSE). */
int net_gossip_start(const struct net_gossip_config *cfg, struct net_gossip **out);
/* Close both sockets and every stream; `done` runs once all handles are closed. */
void net_gossip_stop(struct net_gossip *t, void (*done)(void *data), void *data);

/* The port bound (useful when cfg.bind asked for port 0). */
uint16_t net_gossip_port(const struct net_gossip *t);
/* Largest payload that fits one datagram with the current label and keyring. */
size_t net_gossip_max_payload(const struct net_gossip *t);

/* Seal and send one datagram; dropped (and counted) if the socket refuses it. */
int net_gossip_send(struct net_gossip *t, const struct sockaddr *to, const uint8_t *payload,
		    size_t len);
/* Start a push-pull with `to`; the outcome arrives in on_pushpull_done, always later from the
 * loop, never inside this call (also when it cannot start: UV_EBUSY at max_streams). Returns 0,
 * or a negative uv error (bad arguments, stopping) and then no callback comes. After
 * net_gossip_stop() no on_pushpull_done is called for streams still running. */
int net_gossip_pushpull(struct net_gossip *t, const struct sockaddr *to, bool join);
/* Replace the keyring (rotation); streams already running keep the old one. */
void net_gossip_set_keyring(struct net_gossip *t, const struct net_keyring *kr);

void net_gossip_stats(const struct net_gossip *t, struct net_gossip_stats *out);

#endif

/* peer.h: the peer transport. Moves opaque messages between members of one cluster over TCP
 * (net/stream.h), framed by net/frame.h. It knows members by id and URL and nothing of Raft:
 * the server packs a cairn.raftpb.Message and hands the bytes to net_transport_send().
 *
 * Connections. Each member dials each peer it sends to and receives on the connections its
 * peers dial, so a pair of members has one message connection each way. Snapshot chunks go on
 * a second connection of their own (NET_CHANNEL_SNAP), so a multi-megabyte snapshot never waits
 * in front of heartbeats and appends. Outbound connections are made on demand (first send),
 * and after a failure again with exponential backoff and jitter: delay = d/2 + rand[0, d/2],
 * d = min(backoff_max, backoff_min * 2^(failures-1)) ("equal jitter"), so members restarting
 * together do not reconnect in lockstep.
 *
 * Hello (frame.h): the dialer's first frame names the cluster, itself and the member it meant to
 * reach; the acceptor checks all three (and the protocol version) against its own configuration
 * and answers with its hello or with a REFUSE frame carrying the reason, which both sides log.
 * Messages flow only after the answer. Inbound connections are dispatched by the hello's id:
 * on_recv names the sender as its hello claimed. Without TLS that claim is not authenticated;
 * binding it to a peer certificate is the TLS layer's job.
 *
 * Bounds (style.md §9). Each peer has a queue per channel bounded in messages and bytes; a
 * message beyond the bound is dropped and counted (Raft tolerates loss, and retransmits), never
 * buffered without limit. Frames above max_frame are refused on both ends. At most max_inbound
 * connections are held; a connection that has not said hello within hello_timeout_ms is closed.
 * Messages queued when a connection fails are kept for the next one, except what was already
 * handed to the socket, which is lost; a message may also arrive twice (a frame cut in the middle
 * is sent again whole). Delivery is in order per channel and connection.
 *
 * Threads: one loop; nothing here is thread-safe. Callbacks must not call net_transport_close()
 * except on_recv, which may also send, add and remove peers.
 */
#ifndef CAIRN_NET_PEER_H
#define CAIRN_NET_PEER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "frame.h"
#include "net_err.h"
#include "stream.h"

struct net_transport;

/* Most peers one transport knows (a Raft cluster has a handful of voters and learners). */
#define NET_TRANSPORT_MAX_PEERS 64
/* Longest peer URL accepted. */
#define NET_PEER_URL_MAX 128

enum net_log_level {
	NET_LOG_DEBUG = 0,
	NET_LOG_INFO = 1,
	NET_LOG_WARN = 2,
	NET_LOG_ERROR = 3,
};

/* One log line (no newline). msg is valid during the call only. Must not call the transport. */
typedef void (*net_log_cb)(void *data, enum net_log_level level, const char *msg);

/* A message from member `from` on `channel`. buf[0..len) belongs to the transport and is valid
 * during the call only: copy (or unpack, e.g. cairn__raftpb__message__unpack) what must last. */
typedef void (*net_recv_cb)(struct net_transport *t, uint64_t from, enum net_channel channel,
			    const uint8_t *buf, size_t len);

/* A connection to member `id` was refused: nothing listens at its address, so its process is
 * gone (or not started yet). May send, add and remove peers; must not close the transport. */
typedef void (*net_peer_down_cb)(struct net_transport *t, uint64_t id);

typedef void (*net_transport_close_cb)(struct net_transport *t);

/* A new member at peer_url asks to join (frame.h, "joining"). Fill *out (cluster id, the id of
 * the member added with that URL, the current members) and return 0 to answer, or return
 * non-zero with a reason in reason[0..cap) to refuse. Must not call the transport. */
typedef int (*net_join_cb)(struct net_transport *t, const char *peer_url,
			   struct net_join_answer *out, char *reason, size_t cap);

/* Zero fields take the defaults in brackets. */
struct net_transport_config {
	uint64_t cluster_id;        /* both ends must agree */
	uint64_t self_id;           /* this member, never 0 */
	const char *listen_url;     /* e.g. "http://127.0.0.1:2380"; NULL: no inbound connections */
	int backlog;                /* [128] */
	uint32_t max_frame;         /* payload bound, both ways [NET_FRAME_DEFAULT_MAX_PAYLOAD] */
	size_t msg_queue_max;       /* messages queued per peer, message channel [4096] */
	size_t msg_queue_max_bytes; /* bytes queued per peer, message channel [16 MiB] */
	size_t snap_queue_max_bytes;   /* bytes queued per peer, snapshot channel [32 MiB] */
	uint64_t backoff_min_ms;       /* first retry delay [50] */
	uint64_t backoff_max_ms;       /* retry delay ceiling [2000] */
	uint64_t connect_timeout_ms;   /* TCP connect (and TLS handshake) [2000] */
	uint64_t hello_timeout_ms;     /* hello (or its answer) must arrive within [2000] */
	size_t max_inbound;            /* inbound connections held at once [128] */
	uint64_t seed;                 /* jitter generator [0: taken from uv_hrtime()] */
	struct net_stream_opts stream; /* per-connection options; .filter for TLS. high_water 0:
					* 1 MiB; must be >= 64 KiB */
	net_recv_cb on_recv;           /* required */
	net_peer_down_cb on_peer_down; /* NULL: not told */
	net_log_cb log;                /* NULL: lines on stderr */
	void *data;                    /* the caller's, see net_transport_data */
	net_join_cb on_join;           /* NULL: every join request is refused */
	net_recv_cb on_ask;            /* an ASK frame's payload (frame.h); NULL: dropped */
	net_recv_cb on_answer;         /* an ANSWER frame's payload; NULL: dropped */
};

/* Counters of one peer. */
struct net_peer_stats {
	uint64_t sent[2];       /* frames fully handed to the socket: [0] messages, [1] snapshot */
	uint64_t dropped[2];    /* refused by send because a queue bound was reached */
	uint64_t connects[2];   /* connections that completed the hello */
	uint64_t failures[2];   /* connect, hello or I/O failures (each one schedules a retry) */
	uint64_t refused[2];    /* REFUSE answers received */
	size_t queued[2];       /* messages waiting */
	size_t queued_bytes[2]; /* their bytes, frame headers included */
	bool connected[2];      /* the channel is past its hello */
};

/* Counters of the transport's inbound side. */
struct net_transport_stats {
	uint64_t accepted; /* inbound connections that completed the hello */
	uint64_t refused;  /* inbound hellos refused (wrong cluster, id, version, unknown peer) */
	uint64_t dropped;  /* inbound connections closed for errors, limits or timeouts */
	uint64_t received[2]; /* frames delivered to on_recv: [0] messages, [1] snapshot */
};

/* Creates a transport on loop and, with listen_url, starts listening. cfg is copied (the URL
 * string too). Returns 0 and *out, or NET_EINVAL, NET_EADDR (bad URL), NET_EADDRINUSE (port in use), NET_ENOMEM,
 * NET_EIO; on error nothing is left but handles the loop closes on its next run. */
NET_API int net_transport_open(uv_loop_t *loop, const struct net_transport_config *cfg,
			       struct net_transport **out);

NET_API void *net_transport_data(const struct net_transport *t);

/* The listener's port (0 without one): useful after listening on port 0. */
NET_API uint16_t net_transport_port(const struct net_transport *t);

/* Adds member id at url (copied). Nothing is dialed until a message is sent. Adding a known id
 * with another URL moves it there (current connections are closed). Returns 0, NET_EINVAL
 * (id 0 or self), NET_EADDR (bad or too long URL), NET_ELIMIT (NET_TRANSPORT_MAX_PEERS) or
 * NET_ENOMEM. */
NET_API int net_transport_add_peer(struct net_transport *t, uint64_t id, const char *url);

/* Forgets member id: its queued messages are dropped, its connections (both ways) closed.
 * Returns 0 or NET_ENOTFOUND. */
NET_API int net_transport_remove_peer(struct net_transport *t, uint64_t id);

/* Queues a copy of buf[0..len) for member `to` on the message channel (dialing if needed).
 * Returns 0; NET_ENOTFOUND (unknown member); NET_ETOOBIG (len > max_frame); NET_EAGAIN (a queue
 * bound was reached: the message is dropped and counted); NET_ECLOSED (transport closing);
 * NET_ENOMEM. Queued is not delivered: Raft's retransmission covers loss. */
NET_API int net_transport_send(struct net_transport *t, uint64_t to, const uint8_t *buf,
			       size_t len);

/* The same on the snapshot channel, for snapshot chunks. */
NET_API int net_transport_send_snapshot(struct net_transport *t, uint64_t to, const uint8_t *buf,
					size_t len);

/* The same as net_transport_send, as an ASK or an ANSWER frame (frame.h, "asking a member"):
 * same queue, same bounds, same return values. The receiver's on_ask or on_answer gets the
 * payload. */
NET_API int net_transport_ask(struct net_transport *t, uint64_t to, const uint8_t *buf, size_t len);
NET_API int net_transport_answer(struct net_transport *t, uint64_t to, const uint8_t *buf,
				 size_t len);

/* Counters of member id. Returns 0 or NET_ENOTFOUND. */
NET_API int net_transport_peer_stats(const struct net_transport *t, uint64_t id,
				     struct net_peer_stats *out);
NET_API void net_transport_stats(const struct net_transport *t, struct net_transport_stats *out);

/* Closes everything: the listener, every connection, every timer; queued messages are dropped.
 * on_close (may be NULL) runs from the loop once all handles are closed; then t is freed. */
NET_API void net_transport_close(struct net_transport *t, net_transport_close_cb on_close);

/* ---- joining (frame.h): the new member's side ----
 *
 * Dials url, sends a join request for self_url and calls done once: status 0 with the answer,
 * NET_EREFUSED with the acceptor's reason (reason NULL: the TCP connection itself was
 * refused), or the connection's error (NET_ETIMEOUT when no
 * answer came within timeout_ms, 0: 5000). answer and reason are valid during the call only.
 * opts may be NULL (its filter, if any, is TLS). Everything is closed when done returns, so a
 * loop run until it has no more handles ends after it. Returns 0, or NET_EINVAL, NET_EADDR,
 * NET_ENOMEM, NET_EIO with no callback to come. */
typedef void (*net_join_done_cb)(void *data, int status, const struct net_join_answer *answer,
				 const char *reason);
NET_API int net_join_ask(uv_loop_t *loop, const char *url, const char *self_url,
			 const struct net_stream_opts *opts, uint64_t timeout_ms,
			 net_join_done_cb done, void *data);

#endif /* CAIRN_NET_PEER_H */

/* frame.h: the peer wire format, without I/O. Members exchange length-prefixed frames over TCP;
 * a frame carries a hello (who is speaking, in which cluster), a refusal, or one opaque payload
 * (the server packs a Raft message with protobuf-c, proto/raft.proto; net/ never looks inside).
 *
 * Frame layout, all integers big-endian (network order):
 *
 *   offset size  field
 *   0      4     length    payload bytes, at most the decoder's bound (<= NET_FRAME_MAX_PAYLOAD)
 *   4      1     type      enum net_frame_type; other values are refused
 *   5      1     flags     0; anything else is refused (room for compression later)
 *   6      2     magic     0xCA12: a client that dials the peer port by mistake (an HTTP/2
 *                          preface, a TLS ClientHello) is refused on the first 8 bytes
 *   8      4     crc32c    CRC-32C (Castagnoli) of bytes 0..7, then of the payload
 *   12     length payload
 *
 * Why a CRC over TCP: TCP's 16-bit ones'-complement checksum lets corrupted segments through at
 * a measured rate of 1 in 16 million to 10 billion packets (Stone & Partridge, "When the CRC and
 * TCP checksum disagree", SIGCOMM 2000), and NIC offload or middlebox bugs corrupt after the
 * checksum was verified. Raft assumes messages are either delivered intact or lost: a flipped
 * bit in a commit index or an entry that still parses as protobuf would be accepted and could
 * reach the log. CRC-32C costs about 1-2 GB/s of one core in software (slicing-by-8), small next
 * to the fdatasync every replicated entry also pays; over TLS the record MAC makes it redundant
 * but it stays, so the frame layer has one behaviour with and without TLS.
 *
 * Why a bound: the length comes from outside; a frame above the bound is NET_ETOOBIG and the
 * connection is dropped before any allocation, so a peer cannot make us buffer more than one
 * bounded frame per connection.
 */
#ifndef CAIRN_NET_FRAME_H
#define CAIRN_NET_FRAME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "net_err.h"

#define NET_FRAME_HEADER 12
#define NET_FRAME_MAGIC 0xCA12u
/* Ceiling of every decoder's bound: a Raft APPEND is at most max_msg_bytes plus one entry of
 * max_entry_bytes (about 2.6 MiB with raft.h's defaults); a snapshot chunk 1 MiB by default. */
#define NET_FRAME_MAX_PAYLOAD ((uint32_t)64 << 20)
#define NET_FRAME_DEFAULT_MAX_PAYLOAD ((uint32_t)8 << 20)

_Static_assert(NET_FRAME_HEADER == 4 + 1 + 1 + 2 + 4, "header layout");
_Static_assert(NET_FRAME_DEFAULT_MAX_PAYLOAD <= NET_FRAME_MAX_PAYLOAD, "default within bound");

enum net_frame_type {
	NET_FRAME_HELLO = 1,  /* payload: struct net_hello, NET_HELLO_SIZE bytes */
	NET_FRAME_MSG = 2,    /* payload: one message (a packed cairn.raftpb.Message) */
	NET_FRAME_SNAP = 3,   /* payload: one snapshot chunk (a packed MSG_SNAPSHOT Message) */
	NET_FRAME_REFUSE = 4, /* payload: reason text, at most NET_REFUSE_MAX bytes */
	NET_FRAME_JOIN = 5,   /* payload: a join request (net_join_encode), instead of a hello */
	NET_FRAME_JOIN_ANSWER = 6, /* payload: the answer to it (net_join_answer_encode) */
	NET_FRAME_ASK = 7,    /* payload: opaque; a question for the receiving member (see below) */
	NET_FRAME_ANSWER = 8, /* payload: opaque; the answer to an ASK, sent back the same way */
};
#define NET_FRAME_TYPE_MAX NET_FRAME_ANSWER

/* A decoded frame. payload points into the decoder (see net_frame_decode). */
struct net_frame {
	uint8_t type; /* enum net_frame_type */
	uint32_t len;
	const uint8_t *payload; /* NULL when len == 0 */
};

/* Encodes a frame's header for payload[0..len) into hdr (computing the CRC over both). The
 * caller sends hdr then the payload. len must be <= NET_FRAME_MAX_PAYLOAD. */
NET_API void net_frame_header(uint8_t hdr[NET_FRAME_HEADER], uint8_t type, const uint8_t *payload,
			      uint32_t len);

/* Encodes a whole frame into out[0..cap). Returns 0 and the size in *n (NET_FRAME_HEADER + len),
 * NET_EINVAL (unknown type), NET_ETOOBIG (len > NET_FRAME_MAX_PAYLOAD) or NET_ELIMIT (cap too
 * small; nothing written). */
NET_API int net_frame_encode(uint8_t type, const uint8_t *payload, size_t len, uint8_t *out,
			     size_t cap, size_t *n);

/* An incremental decoder: bytes go in split anywhere, whole frames come out. Owns one payload
 * buffer, at most its bound in size; buffers above 64 KiB are released once the frame has been
 * handed out, so an idle connection does not pin a large chunk's memory. */
struct net_frame_decoder {
	uint32_t max_payload;
	int err; /* sticky: once a frame is refused, every later call returns the same error */
	uint8_t hdr[NET_FRAME_HEADER];
	uint32_t hdr_have; /* header bytes collected */
	uint8_t type;
	uint32_t len;  /* payload length of the frame in progress */
	uint32_t have; /* payload bytes collected */
	uint32_t crc;  /* expected CRC, from the header */
	uint8_t *buf;  /* payload buffer, capacity cap */
	uint32_t cap;
	bool delivered; /* the frame in buf was handed out: start over on the next call */
};

/* max_payload 0 means NET_FRAME_DEFAULT_MAX_PAYLOAD; values above NET_FRAME_MAX_PAYLOAD are
 * clamped to it. Allocates nothing. */
NET_API void net_frame_decoder_init(struct net_frame_decoder *d, uint32_t max_payload);

/* Frees the payload buffer; d may be initialised again. */
NET_API void net_frame_decoder_free(struct net_frame_decoder *d);

/* Consumes bytes from buf[0..len) and stores how many in *used (always <= len).
 * Returns 1 when a whole frame was decoded: *out is valid, its payload owned by the decoder and
 * valid until the next call on d (copy what must outlive it); call again with the remaining
 * buf + *used bytes. Returns 0 when every byte was consumed without completing a frame.
 * Returns NET_ETOOBIG (length above the bound), NET_EPROTO (bad type, flags, magic or CRC) or
 * NET_ENOMEM; the error is sticky and the connection must be dropped. */
NET_API int net_frame_decode(struct net_frame_decoder *d, const uint8_t *buf, size_t len,
			     size_t *used, struct net_frame *out);

/* ---- the hello: first frame on every peer connection, both ways ---- */

#define NET_HELLO_SIZE 32
#define NET_HELLO_MAGIC 0x43524e50u /* "CRNP" */
#define NET_PROTOCOL_VERSION 1

/* Which traffic a connection carries: messages, or snapshot chunks on a stream of their own
 * so a large snapshot never delays heartbeats and appends. */
enum net_channel {
	NET_CHANNEL_MSG = 1,
	NET_CHANNEL_SNAP = 2,
};

/* Hello payload: magic u32 | version u16 | channel u8 | reserved u8 (0) | cluster_id u64 |
 * from u64 | to u64. The dialer names the member it expects to reach (to); the acceptor answers
 * with its own hello (from = itself, to = the dialer) or with a REFUSE frame. */
struct net_hello {
	uint16_t version;
	uint8_t channel; /* enum net_channel */
	uint64_t cluster_id;
	uint64_t from; /* member id of the sender, never 0 */
	uint64_t to;   /* member id the sender expects at the other end, never 0 */
};

/* Encodes h into out (NET_HELLO_SIZE bytes). */
NET_API void net_hello_encode(const struct net_hello *h, uint8_t out[NET_HELLO_SIZE]);

/* Decodes a hello payload. Returns 0, or NET_EPROTO if len is not NET_HELLO_SIZE, the magic or
 * reserved byte is wrong, the channel is unknown or an id is 0. The version is returned as sent:
 * the caller decides which versions it speaks. Writes *out only on success. */
NET_API int net_hello_decode(const uint8_t *buf, size_t len, struct net_hello *out);

/* A refusal's reason: printable ASCII, at most this many bytes. */
#define NET_REFUSE_MAX 200

/* Copies a REFUSE payload into out[0..cap) as a NUL-terminated string, cut to cap - 1 and to
 * NET_REFUSE_MAX bytes, with every byte outside printable ASCII replaced by '?', so a hostile
 * reason cannot forge log lines. cap must be >= 1. */
NET_API void net_refuse_text(const uint8_t *payload, size_t len, char *out, size_t cap);

/* ---- joining: a new member asks who it is ----
 *
 * A member started to join a running cluster (etcd's --initial-cluster-state existing) knows the
 * members' peer URLs but neither the cluster id nor its own member id, which the cluster chose
 * when the member was added. It dials a member and sends a JOIN frame, in place of a hello,
 * carrying the peer URL it advertises; the acceptor answers with one JOIN_ANSWER frame (the
 * cluster id, the id of the member added with that peer URL, and the current members) or with a
 * REFUSE frame, then closes the connection. Nothing else is exchanged on such a connection.
 *
 * JOIN payload:        magic u32 | version u16 | url_len u16 | url (1..NET_JOIN_URL_MAX bytes)
 * JOIN_ANSWER payload: magic u32 | cluster_id u64 | member_id u64 | n u16 |
 *                      n x (id u64 | learner u8 | url_len u8 | url)
 * Ids are never 0; n is at most NET_JOIN_MAX_MEMBERS; URLs are printable ASCII. */

#define NET_JOIN_MAGIC 0x43524e4au /* "CRNJ" */
#define NET_JOIN_URL_MAX 128
#define NET_JOIN_MAX_MEMBERS 16
#define NET_JOIN_MAX_SIZE (8 + NET_JOIN_URL_MAX)
#define NET_JOIN_ANSWER_MAX_SIZE (22 + NET_JOIN_MAX_MEMBERS * (10 + NET_JOIN_URL_MAX))

struct net_join_member {
	uint64_t id;
	bool learner;
	char url[NET_JOIN_URL_MAX + 1];
};

struct net_join_answer {
	uint64_t cluster_id;
	uint64_t member_id; /* the joiner's */
	uint32_t n;
	struct net_join_member members[NET_JOIN_MAX_MEMBERS];
};

/* Encodes a join request for url into out[0..cap). Returns 0 and the size in *n, NET_EINVAL
 * (url empty, too long or not printable) or NET_ELIMIT (cap too small). */
NET_API int net_join_encode(const char *url, uint8_t *out, size_t cap, size_t *n);
/* Decodes a join request: 0 with *version and url (NUL-terminated), or NET_EPROTO. */
NET_API int net_join_decode(const uint8_t *buf, size_t len, uint16_t *version,
			    char url[NET_JOIN_URL_MAX + 1]);
/* The same for the answer. Encode: NET_EINVAL for a bad answer (an id 0, a bad URL, n too
 * large), NET_ELIMIT for a small cap. Decode: NET_EPROTO for anything malformed. */
NET_API int net_join_answer_encode(const struct net_join_answer *a, uint8_t *out, size_t cap,
				   size_t *n);
NET_API int net_join_answer_decode(const uint8_t *buf, size_t len, struct net_join_answer *out);

/* ---- asking a member: ASK and ANSWER ----
 *
 * Besides Raft messages, a member may put a question to another one and get an answer: a
 * follower forwards a client's lease renewal to the leader, which alone keeps lease deadlines.
 * Both travel on the message channel like MSG frames (an ASK on the asker's connection to the
 * member asked, the ANSWER on that member's connection back), so they share its queue bounds,
 * order and loss: an ASK or ANSWER may be lost, and the asker bounds its wait. Their payloads are
 * opaque here; the server pairs answers with questions by an id it puts inside. A member older
 * than these frames refuses them as an unknown type and drops the connection. */

#endif /* CAIRN_NET_FRAME_H */

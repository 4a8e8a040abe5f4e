/* watch.h: the pieces of the Watch service (watch.c) that need no member:
 * which keys a watcher covers, the wire form of its responses, and where a
 * large response is split. The hub itself (streams, watchers, fan-out,
 * catch-up) is declared in member_int.h, since it lives in a member.
 *
 * A WatchResponse carrying events is written by hand rather than through
 * protobuf-c, so that each event of a batch is encoded once and copied into
 * the response of every watcher it matches: a response is a prefix (header,
 * watch_id, fragment) followed by events as field 11, and protobuf readers
 * accept fields in any order and concatenated encodings. */
#ifndef CAIRN_SERVER_WATCH_H
#define CAIRN_SERVER_WATCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kvstore.h"

/* Bounds (etcd has none of these; see docs/api-compat.md, Watch). */
#define WATCH_MAX_PER_STREAM 16384    /* watchers on one stream */
#define WATCH_MAX_STREAMS 8192        /* Watch streams open on one member */
#define WATCH_MAX_WATCHERS 262144     /* watchers on one member */
#define WATCH_CTRL_MAX 64             /* control responses held while a stream cannot send */
#define WATCH_CHUNK_EVENTS 128        /* events read from the store per catch-up step */
#define WATCH_PUMP_STEPS 32           /* catch-up steps per loop iteration, all streams */
#define WATCH_PROGRESS_MS 600000u     /* etcd's progress notification interval: 10 minutes */
#define WATCH_SLOW_MS 120000u         /* a stream not read this long while behind is cut */
#define WATCH_SCRATCH_KEEP (4u << 20) /* encoding buffers kept between batches */

/* What a watcher covers, after etcd's normalisation of the request: an
 * empty key is "\0"; range_end empty: the key alone; range_end "\0": every
 * key >= key; otherwise [key, range_end). */
enum watch_kind { WATCH_KEY = 0, WATCH_RANGE = 1, WATCH_FROM = 2 };

/* Whether k is in the watcher's keys. */
bool watch_key_in(enum watch_kind kind, const uint8_t *key, size_t key_len, const uint8_t *end,
		  size_t end_len, const uint8_t *k, size_t k_len);

/* Writes v as a protobuf varint at p (at most 10 bytes); returns its length. */
size_t watch_put_varint(uint8_t *p, uint64_t v);

/* Appends event e as field 11 of a WatchResponse (tag, length, mvccpb.Event),
 * with prev_kv when with_prev and the event has one, to *buf (grown with
 * realloc; *len bytes used of *cap). 0, or -1 when out of memory. */
int watch_event_encode(const struct kv_event *e, bool with_prev, uint8_t **buf, size_t *len,
		       size_t *cap);

/* Most bytes watch_prefix writes for a header of hlen bytes. */
#define WATCH_PREFIX_MAX(hlen) ((hlen) + 32)

/* Writes the start of a WatchResponse at out: the header (an already packed
 * ResponseHeader of hlen bytes), watch_id and fragment. Events follow as
 * watch_event_encode wrote them. Returns the bytes written. */
size_t watch_prefix(uint8_t *out, const uint8_t *hdr, size_t hlen, int64_t watch_id, bool fragment);

/* Where the n events of one response (sizes[i] bytes encoded, of revision
 * revs[i], in order) are cut into messages of at most `limit` bytes of
 * events: ends[k] is one past the last event of message k; returns the
 * number of messages (at least 1 when n > 0). With fragment (the client
 * accepts fragments, etcd's rule), a response over the limit is cut between
 * any two events; otherwise only between revisions, so a revision is never
 * split. A single event (or revision) over the limit is a message of its own.
 * ends must have room for n entries. */
size_t watch_plan(const size_t *sizes, const int64_t *revs, size_t n, size_t limit, bool fragment,
		  size_t *ends);

#endif /* CAIRN_SERVER_WATCH_H */

/* gossip_store_json.h: the JSON value the Raft leader writes under /cairn/members/<name> for
 * one gossip member (server/gossip_store.c), and the comparison that keeps a new leader from
 * rewriting keys that already say the same. Pure functions: no clock, no store, no allocation.
 *
 * THE VALUE, fields always in this order, one object, no whitespace:
 *
 *   {"name":"node-7","address":"127.0.0.1:7946","state":"alive","incarnation":3,
 *    "tags":{"role":"worker","zone":"a"},"since":"2026-11-28T09:30:00.123Z"}
 *
 *   address      IPv4 as a.b.c.d:port, IPv6 as [x:...]:port (RFC 5952 text, as inet_ntop)
 *   state        alive, suspect, dead or left
 *   incarnation  the member's SWIM incarnation number
 *   tags         the member's tags in the order it gives them (metadata "key=value\n" each,
 *                server/srv_gossip.h); as srv_gossip_meta_next() reads them, a line without
 *                '=' and bytes after the last '\n' are skipped (metadata comes from the
 *                network), the first '=' splits key from value
 *   since        when the leader saw the member enter this state, RFC 3339 UTC with
 *                milliseconds
 *
 * Strings are JSON-escaped: '"' and '\' with a backslash, control bytes as \uXXXX (\n, \r, \t,
 * \b, \f by their short forms), valid UTF-8 copied as is, and each byte that is not part of
 * valid UTF-8 written as the code point of the same value (\u00XX), so the value is always
 * valid JSON text in UTF-8.
 *
 * The "body" is the value without its since field and closing brace: two values say the same
 * about a member when their bodies are equal, whatever their since. */
#ifndef CAIRN_SERVER_GOSSIP_STORE_JSON_H
#define CAIRN_SERVER_GOSSIP_STORE_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gossip.h"

/* Longest value: a name of GOSSIP_MAX_NAME bytes and GOSSIP_MAX_META bytes of metadata, each
 * byte at most 6 bytes of JSON (\u00XX; a short tag line such as "\xff=\n" costs 12 for 3
 * bytes), with room to spare, plus the fixed fields. gstore_json_member never writes more. */
#define GSTORE_JSON_MAX (6 * GOSSIP_MAX_NAME + (GOSSIP_MAX_META / 2) * (6 + 6 + 1) + 256)

/* "a.b.c.d:port" or "[v6]:port" into buf (at least 64 bytes), as srv_gossip_addr_format()
 * writes it. Returns the length, 0 for an address of no known family. */
size_t gstore_addr_format(const struct gossip_addr *a, char *buf, size_t cap);

/* RFC 3339 UTC with milliseconds, "YYYY-MM-DDTHH:MM:SS.mmmZ" (24 bytes and a NUL) for
 * milliseconds since the Unix epoch. buf holds at least 25 bytes. */
void gstore_rfc3339_ms(uint64_t wall_ms, char buf[25]);

/* Appends the JSON string literal of n bytes of s (quotes included) at out[*len], within cap.
 * False, with *len unchanged, when it does not fit. */
bool gstore_json_string(char *out, size_t cap, size_t *len, const void *s, size_t n);

/* Appends the tags object ({...}) of metadata in the "key=value\n" format. False when it does
 * not fit (*len unchanged). */
bool gstore_json_tags(char *out, size_t cap, size_t *len, const uint8_t *meta, size_t n);

/* The body of m's value into out (cap at least GSTORE_JSON_MAX): its length, 0 if it did not
 * fit. */
size_t gstore_json_body(const struct gossip_member *m, char *out, size_t cap);

/* Completes a body of body_len bytes in out with the since field and the closing brace:
 * the value's length, 0 if it did not fit. */
size_t gstore_json_finish(char *out, size_t cap, size_t body_len, uint64_t since_wall_ms);

/* m's full value (body and since): its length, 0 if it did not fit. */
size_t gstore_json_member(const struct gossip_member *m, uint64_t since_wall_ms, char *out,
			  size_t cap);

/* Whether a stored value says what body says: it is body followed by exactly
 * ,"since":"<text without quote or backslash>"} and nothing else. */
bool gstore_json_same(const void *stored, size_t stored_len, const char *body, size_t body_len);

/* The incarnation and state a value written by gstore_json_member() holds: false when it is
 * not in that shape (then nothing is known of it). */
bool gstore_json_order(const void *value, size_t len, uint32_t *incarnation, uint32_t *state);

/* Whether a stored value is newer than what m says, by SWIM's order: a higher incarnation, or
 * the same one with a state that overrides (alive < suspect < dead < left). A leader whose view
 * is behind what an earlier leader wrote (the news has not reached it yet) leaves such a key
 * alone until its periodic sweep, rather than show a watcher a member going back. */
bool gstore_json_newer(const void *stored, size_t stored_len, const struct gossip_member *m);

/* The leader's wall clock at a change gossip saw at since_ms on its own monotonic clock:
 * wall_now_ms - (mono_now_ms - since_ms), clamped to wall_now_ms for a since in the future
 * and to 0 below the epoch. */
uint64_t gstore_since_wall(uint64_t wall_now_ms, uint64_t mono_now_ms, uint64_t since_ms);

#endif /* CAIRN_SERVER_GOSSIP_STORE_JSON_H */

/* srv_gossip.h: gossip on a libuv loop: the SWIM core (gossip/gossip.h) driven by a timer, over
 * the UDP and TCP transport (net/gossip_net.h), with the key file and the tags of the
 * configuration. Used by a server member and by `cairn agent` alike.
 *
 * Tags travel as the core's opaque metadata in one format: each tag is "key=value" followed by
 * '\n', in the order given (keys hold no '=' and no '\n', values no '\n').
 *
 * LIFETIME. srv_gossip_start() binds the port, creates the core and, when join addresses are
 * given, joins through them: each attempt resolves the addresses and asks the core for a join
 * push-pull to each; attempts are repeated (after 2 s, then twice as long each time up to 30 s)
 * until a push-pull with another member has completed. srv_gossip_leave() announces a graceful
 * leave and calls back once the core has sent the news enough times, or after three gossip
 * intervals at most; srv_gossip_stop() then closes the sockets and frees everything.
 *
 * KEYS. The key file (net/gossip_seal.h: one base64 key a line, the first one encrypts) is read
 * at start, where a bad file is an error, and again on SIGHUP (when sighup is set), where a bad
 * file is logged and the keys in use are kept: gossip never falls back to plain text.
 *
 * Everything here runs on the loop thread.
 */
#ifndef CAIRN_SERVER_SRV_GOSSIP_H
#define CAIRN_SERVER_SRV_GOSSIP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <sys/socket.h>
#include <uv.h>

#include "config.h" /* struct srv_hostport, struct srv_tag, struct srv_gossip_timing */
#include "gossip.h"
#include "gossip_net.h"

struct srv_gossip;

/* Join attempts: the first at once, then after this delay, doubling up to the maximum. */
#define SRV_GOSSIP_JOIN_RETRY_MS 2000u
#define SRV_GOSSIP_JOIN_RETRY_MAX_MS 30000u
/* A leave waits for the core at most this many gossip intervals. */
#define SRV_GOSSIP_LEAVE_INTERVALS 3u

/* A change of the view (an update or a removal), in the order the core saw them. The event and
 * what it points to belong to the core and are valid during the call only. The callback may
 * read the view (srv_gossip_core() with the const functions of gossip.h) but must not feed the
 * core, start or stop this gossip. */
typedef void (*srv_gossip_event_cb)(void *data, const struct gossip_event *ev);

struct srv_gossip_options {
	const char *name;                  /* this member's name in the pool */
	const struct srv_hostport *listen; /* numeric IP or localhost; port 0 picks one */
	/* The address others reach this member at, a numeric IP; NULL or "" for the listen host,
	 * or, when that is 0.0.0.0 or ::, the first network interface of its family that is not
	 * a loopback (the loopback when there is none). The port is always the bound one. */
	const char *advertise_host;
	const struct srv_hostport *join; /* addresses to join through (names are resolved) */
	size_t join_n;
	const char *label;    /* NULL or "": none */
	const char *key_file; /* NULL: gossip is not encrypted */
	const struct srv_tag *tags;
	size_t tags_n;
	struct srv_gossip_timing timing; /* all zero: the core's defaults (memberlist's LAN) */
	bool sighup; /* reload the key file on SIGHUP */
	srv_gossip_event_cb on_event;
	void *data;
};

/* The options of a configuration (pointers into cfg, which must outlive the start); name,
 * on_event, data and sighup are left for the caller. */
void srv_gossip_options_from_config(struct srv_gossip_options *o, const struct srv_config *cfg);

/* Start: read the key file, bind, create the core, begin joining. Returns 0 and *out, or -1
 * with a message in err (a bad key file, tags too long, the port taken ...). On failure nothing
 * is left to free, though the loop may still have to run once to close a socket. */
int srv_gossip_start(uv_loop_t *loop, const struct srv_gossip_options *o, struct srv_gossip **out,
		     char *err, size_t err_len);

/* Leave the pool gracefully: `done` runs (once, from the loop, never inside this call) when the
 * leave has been gossiped enough or after SRV_GOSSIP_LEAVE_INTERVALS gossip intervals. Events
 * keep arriving meanwhile. Calling it again does nothing. */
void srv_gossip_leave(struct srv_gossip *sg, void (*done)(void *data), void *data);

/* Close the sockets and free sg (without a leave if srv_gossip_leave() was not called or has
 * not finished); `done`, which may be NULL, runs from the loop once everything is closed. No
 * event is delivered after this call. */
void srv_gossip_stop(struct srv_gossip *sg, void (*done)(void *data), void *data);

/* Read the key file again (what SIGHUP does): 0, or -1 when there is no key file or it cannot
 * be used, the keys in use kept. Logged either way. */
int srv_gossip_reload_keys(struct srv_gossip *sg);

/* The core, to read the view (gossip_member_at() ...). */
const struct gossip *srv_gossip_core(const struct srv_gossip *sg);
/* Now on the clock the core runs on (milliseconds, monotonic). */
uint64_t srv_gossip_now(const struct srv_gossip *sg);
/* True once this member's view can be trusted to be whole: it has merged a push-pull with
 * another member, or it was started with nobody to join. Until then a member missing from the
 * view may simply not be known yet. */
bool srv_gossip_settled(const struct srv_gossip *sg);
/* The address others reach this member at. */
const struct gossip_addr *srv_gossip_self_addr(const struct srv_gossip *sg);
/* The transport's counters (datagrams, drops by reason, streams), for /metrics. */
void srv_gossip_net_stats(const struct srv_gossip *sg, struct net_gossip_stats *out);

/* ---- pure helpers (no I/O) ---- */

/* Tags as metadata: each "key=value\n". Returns the length written, or -1 with a message in
 * err when a key is empty or holds '=' or '\n', a value holds '\n', or the whole is longer than
 * cap (callers pass GOSSIP_MAX_META). */
long srv_gossip_meta_encode(const struct srv_tag *tags, size_t n, uint8_t *buf, size_t cap,
			    char *err, size_t err_len);

/* Walk metadata tag by tag: start with *off = 0; returns true with the key and value (not
 * NUL-terminated, pointing into meta) of the next tag, false at the end. Bytes after the last
 * '\n' and lines without '=' are skipped: metadata from the network is never trusted. */
bool srv_gossip_meta_next(const uint8_t *meta, size_t len, size_t *off, const char **key,
			  size_t *key_len, const char **value, size_t *value_len);

/* Socket addresses and the core's. from_sockaddr maps an IPv4-mapped IPv6 address to IPv4;
 * returns -1 for a family other than IPv4 and IPv6. */
int srv_gossip_addr_from_sockaddr(const struct sockaddr *sa, struct gossip_addr *out);
/* Returns the length of the sockaddr written to *out. */
socklen_t srv_gossip_addr_to_sockaddr(const struct gossip_addr *a, struct sockaddr_storage *out);
/* "10.0.0.1:7946" or "[fd00::1]:7946"; "?" for an unknown family. Returns buf. cap of
 * SRV_GOSSIP_ADDR_STRLEN always suffices. */
#define SRV_GOSSIP_ADDR_STRLEN 56
const char *srv_gossip_addr_format(const struct gossip_addr *a, char *buf, size_t cap);

#endif

/* srv_gossip.c: the gossip core on a libuv loop (srv_gossip.h). One timer runs the core at its
 * deadline; every datagram, stream and timer feeds the core and then takes its updates in a
 * bounded loop (gossip.h, THE LOOP CONTRACT): datagrams are sent at once, events handed to the
 * owner, and push-pulls started only after gossip_advance(), because starting one may ask the
 * core for our state and nothing may call into the core while an update is held. */
#include "srv_gossip.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "gossip_net.h"
#include "log.h"

/* Updates taken in one go before the loop gets a turn (the rest follow from the timer). */
#define PUMP_ROUNDS 64
/* Push-pulls started from one update; more are reported failed to the core. */
#define PUSHPULLS_MAX 128
/* Push-pull failures waiting to be told to the core. */
#define FAILED_MAX 256
/* Addresses taken from one name of --gossip-join. */
#define ADDRS_PER_NAME 4
/* The leave's wait is bounded below and above whatever the gossip interval is. */
#define LEAVE_MIN_MS 100u
#define LEAVE_MAX_MS 5000u

struct resolve {
	uv_getaddrinfo_t req;
	struct srv_gossip *sg;
	size_t idx; /* into join[] */
	bool busy;
};

struct srv_gossip {
	uv_loop_t *loop;
	struct net_gossip *t;
	struct gossip *core;
	uv_timer_t timer;       /* the core's deadline */
	uv_timer_t join_timer;  /* the next join attempt */
	uv_timer_t leave_timer; /* the leave's bound, or its end */
	uv_signal_t sighup;
	int handles; /* initialized, not yet closed */
	bool sighup_on;

	char *name;
	char *key_file;
	struct gossip_addr self;  /* advertised */
	struct gossip_addr bound; /* the listen address */
	uint32_t gossip_interval_ms;
	srv_gossip_event_cb on_event;
	void *data;

	/* joining */
	struct srv_hostport *join; /* copies */
	size_t join_n;
	struct resolve *res;            /* one per join entry */
	size_t resolving;               /* lookups out */
	struct gossip_addr *join_addrs; /* this attempt's, join_n * ADDRS_PER_NAME at most */
	size_t join_addrs_n;
	bool join_self_only; /* every address of the attempt was this member's own */
	bool join_lookup_failed;
	uint32_t join_attempt;
	bool settled;

	/* leaving */
	bool leaving, left;
	void (*left_cb)(void *data);
	void *left_data;

	/* stopping */
	bool stopping;
	bool transport_open;
	void (*stopped_cb)(void *data);
	void *stopped_data;

	bool in_pump;
	struct gossip_addr failed[FAILED_MAX]; /* push-pulls to report to the core */
	size_t n_failed;
};

static void pump(struct srv_gossip *sg);

/* ---- pure helpers ---- */

static void set_err(char *err, size_t len, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void set_err(char *err, size_t len, const char *fmt, ...)
{
	if (err == NULL || len == 0) {
		return;
	}
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, len, fmt, ap);
	va_end(ap);
}

long srv_gossip_meta_encode(const struct srv_tag *tags, size_t n, uint8_t *buf, size_t cap,
			    char *err, size_t err_len)
{
	size_t off = 0;
	for (size_t i = 0; i < n; i++) {
		const char *k = tags[i].key;
		const char *v = tags[i].value != NULL ? tags[i].value : "";
		size_t klen = k != NULL ? strlen(k) : 0;
		size_t vlen = strlen(v);
		if (klen == 0 || memchr(k, '=', klen) != NULL || memchr(k, '\n', klen) != NULL) {
			set_err(err, err_len,
				"gossip tag key \"%s\" is empty or holds '=' or a newline",
				k != NULL ? k : "");
			return -1;
		}
		if (memchr(v, '\n', vlen) != NULL) {
			set_err(err, err_len, "the value of gossip tag \"%s\" holds a newline", k);
			return -1;
		}
		size_t need = klen + 1 + vlen + 1;
		if (off > cap || need > cap - off) {
			set_err(err, err_len,
				"gossip tags take more than %zu bytes (each is key=value and a "
				"newline); the tag \"%s\" does not fit",
				cap, k);
			return -1;
		}
		memcpy(buf + off, k, klen);
		buf[off + klen] = '=';
		memcpy(buf + off + klen + 1, v, vlen);
		buf[off + klen + 1 + vlen] = '\n';
		off += need;
	}
	return (long)off;
}

bool srv_gossip_meta_next(const uint8_t *meta, size_t len, size_t *off, const char **key,
			  size_t *key_len, const char **value, size_t *value_len)
{
	while (meta != NULL && *off < len) {
		const uint8_t *line = meta + *off;
		const uint8_t *nl = memchr(line, '\n', len - *off);
		if (nl == NULL) {
			*off = len; /* an unterminated tail: not a tag */
			return false;
		}
		size_t llen = (size_t)(nl - line);
		*off += llen + 1;
		const uint8_t *eq = memchr(line, '=', llen);
		if (eq == NULL || eq == line) {
			continue;
		}
		*key = (const char *)line;
		*key_len = (size_t)(eq - line);
		*value = (const char *)eq + 1;
		*value_len = llen - *key_len - 1;
		return true;
	}
	return false;
}

int srv_gossip_addr_from_sockaddr(const struct sockaddr *sa, struct gossip_addr *out)
{
	memset(out, 0, sizeof *out);
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
		out->family = 4;
		memcpy(out->ip, &in->sin_addr, 4);
		out->port = ntohs(in->sin_port);
		return 0;
	}
	if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
		static const uint8_t mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
		const uint8_t *b = (const uint8_t *)&in6->sin6_addr;
		out->port = ntohs(in6->sin6_port);
		if (memcmp(b, mapped, sizeof mapped) == 0) {
			out->family = 4; /* from a dual-stack socket: the IPv4 peer it is */
			memcpy(out->ip, b + 12, 4);
		} else {
			out->family = 6;
			memcpy(out->ip, b, 16);
		}
		return 0;
	}
	return -1;
}

socklen_t srv_gossip_addr_to_sockaddr(const struct gossip_addr *a, struct sockaddr_storage *out)
{
	memset(out, 0, sizeof *out);
	if (a->family == 6) {
		struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)out;
		in6->sin6_family = AF_INET6;
		memcpy(&in6->sin6_addr, a->ip, 16);
		in6->sin6_port = htons(a->port);
		return (socklen_t)sizeof *in6;
	}
	struct sockaddr_in *in = (struct sockaddr_in *)out;
	in->sin_family = AF_INET;
	memcpy(&in->sin_addr, a->ip, 4);
	in->sin_port = htons(a->port);
	return (socklen_t)sizeof *in;
}

const char *srv_gossip_addr_format(const struct gossip_addr *a, char *buf, size_t cap)
{
	char ip[INET6_ADDRSTRLEN];
	if (cap == 0) {
		return buf;
	}
	if (a->family == 4 && inet_ntop(AF_INET, a->ip, ip, sizeof ip) != NULL) {
		snprintf(buf, cap, "%s:%u", ip, (unsigned)a->port);
	} else if (a->family == 6 && inet_ntop(AF_INET6, a->ip, ip, sizeof ip) != NULL) {
		snprintf(buf, cap, "[%s]:%u", ip, (unsigned)a->port);
	} else {
		snprintf(buf, cap, "?");
	}
	return buf;
}

/* A numeric IP (no brackets) into a, with port; -1 when it is not one. "localhost" is the
 * IPv4 loopback, as the configuration allows it where an address is bound. */
static int addr_parse(const char *host, uint16_t port, struct gossip_addr *a)
{
	memset(a, 0, sizeof *a);
	a->port = port;
	if (strcmp(host, "localhost") == 0) {
		host = "127.0.0.1";
	}
	if (inet_pton(AF_INET, host, a->ip) == 1) {
		a->family = 4;
		return 0;
	}
	if (inet_pton(AF_INET6, host, a->ip) == 1) {
		a->family = 6;
		return 0;
	}
	return -1;
}

static bool addr_unspecified(const struct gossip_addr *a)
{
	static const uint8_t zero[16] = { 0 };
	return memcmp(a->ip, zero, a->family == 6 ? 16 : 4) == 0;
}

/* ---- logging ---- */

static void net_log(void *data, int level, const char *msg)
{
	static const enum srv_log_level levels[] = { SRV_LOG_DEBUG, SRV_LOG_INFO, SRV_LOG_WARN,
						     SRV_LOG_ERROR };
	(void)data;
	srv_log(levels[level >= 0 && level <= 3 ? level : 3], "gossip-net", "msg", msg, NULL);
}

/* One line per change of a member's state; other updates (metadata, address, a refuted
 * suspicion's new incarnation) at debug. */
static void log_event(const struct gossip_event *ev)
{
	const struct gossip_member *mb = &ev->member;
	bool removed = ev->type == GOSSIP_EV_REMOVE;
	bool changed = removed || ev->prev_state != mb->state;
	enum srv_log_level level = changed ? SRV_LOG_INFO : SRV_LOG_DEBUG;
	if (!srv_log_enabled(level)) {
		return;
	}
	char a[SRV_GOSSIP_ADDR_STRLEN];
	struct srv_log_line l;
	srv_log_begin(&l, level, removed ? "gossip-member-removed" : "gossip-member");
	srv_log_str(&l, "name", mb->name);
	srv_log_str(&l, "state", gossip_state_name(mb->state));
	if (!removed) {
		srv_log_str(&l, "prev",
			    ev->prev_state != 0 ? gossip_state_name(ev->prev_state) : "new");
	}
	srv_log_u64(&l, "incarnation", mb->incarnation);
	srv_log_str(&l, "addr", srv_gossip_addr_format(&mb->addr, a, sizeof a));
	if (mb->self) {
		srv_log_bool(&l, "self", true);
	}
	srv_log_end(&l);
}

/* ---- the loop contract ---- */

static void on_timer(uv_timer_t *h)
{
	struct srv_gossip *sg = h->data;
	if (sg->core != NULL && !sg->stopping) {
		gossip_tick(sg->core, uv_now(sg->loop));
		pump(sg);
	}
}

/* At least 1 ms ahead: a timer re-armed for "now" inside its own callback would run again in
 * the same turn of the loop, before its clock moves or any other handle gets a turn. */
static void arm_timer(struct srv_gossip *sg)
{
	uint64_t now = uv_now(sg->loop);
	uint64_t due = gossip_has_update(sg->core) ? now : gossip_next_deadline(sg->core);
	if (due == UINT64_MAX) {
		uv_timer_stop(&sg->timer); /* nothing left to time: the leave is done */
		return;
	}
	uv_timer_start(&sg->timer, on_timer, due > now ? due - now : 1, 0);
}

static void on_leave_timer(uv_timer_t *h)
{
	struct srv_gossip *sg = h->data;
	if (!sg->leaving || sg->left || sg->stopping) {
		return;
	}
	sg->left = true;
	bool done = sg->core != NULL && gossip_leave_done(sg->core);
	struct srv_log_line l;
	srv_log_begin(&l, SRV_LOG_INFO, "gossip-left");
	srv_log_bool(&l, "announced", done);
	srv_log_end(&l);
	if (sg->left_cb != NULL) {
		sg->left_cb(sg->left_data);
	}
}

/* Remember a push-pull failure for the core (it cannot be told while an update is held). */
static void pushpull_failed(struct srv_gossip *sg, const struct gossip_addr *to)
{
	if (sg->n_failed < FAILED_MAX) {
		sg->failed[sg->n_failed++] = *to;
	}
}

static void pump(struct srv_gossip *sg)
{
	if (sg->core == NULL || sg->stopping || sg->in_pump) {
		return;
	}
	sg->in_pump = true;
	struct gossip_pushpull *pp = NULL;
	uint64_t now = uv_now(sg->loop);
	for (size_t i = 0; i < sg->n_failed; i++) {
		gossip_pushpull_failed(sg->core, now, &sg->failed[i]);
	}
	sg->n_failed = 0;
	for (int round = 0; round < PUMP_ROUNDS && !sg->stopping && gossip_has_update(sg->core);
	     round++) {
		struct gossip_update u;
		gossip_ready(sg->core, &u);
		for (size_t i = 0; i < u.n_sends; i++) {
			struct sockaddr_storage ss;
			srv_gossip_addr_to_sockaddr(&u.sends[i].to, &ss);
			(void)net_gossip_send(sg->t, (const struct sockaddr *)&ss, u.sends[i].data,
					      u.sends[i].len);
		}
		size_t n_pp = 0;
		if (u.n_pushpulls > 0 && pp == NULL) {
			pp = malloc(PUSHPULLS_MAX * sizeof *pp);
		}
		for (size_t i = 0; i < u.n_pushpulls; i++) {
			if (pp != NULL && n_pp < PUSHPULLS_MAX) {
				pp[n_pp++] = u.pushpulls[i];
			} else {
				pushpull_failed(sg, &u.pushpulls[i].to);
			}
		}
		for (size_t i = 0; i < u.n_events; i++) {
			log_event(&u.events[i]);
			if (sg->on_event != NULL) {
				sg->on_event(sg->data, &u.events[i]);
			}
		}
		gossip_advance(sg->core);
		now = uv_now(sg->loop);
		for (size_t i = 0; i < n_pp; i++) {
			struct sockaddr_storage ss;
			srv_gossip_addr_to_sockaddr(&pp[i].to, &ss);
			if (net_gossip_pushpull(sg->t, (const struct sockaddr *)&ss, pp[i].join) !=
			    0) {
				gossip_pushpull_failed(sg->core, now, &pp[i].to);
			}
		}
		for (size_t i = 0; i < sg->n_failed; i++) {
			gossip_pushpull_failed(sg->core, now, &sg->failed[i]);
		}
		sg->n_failed = 0;
	}
	free(pp);
	sg->in_pump = false;
	if (sg->stopping) {
		return;
	}
	arm_timer(sg);
	if (sg->leaving && !sg->left && gossip_leave_done(sg->core)) {
		uv_timer_start(&sg->leave_timer, on_leave_timer, 0, 0);
	}
}

/* ---- the transport's callbacks ---- */

static void on_packet(void *data, const struct sockaddr *from, const uint8_t *payload, size_t len)
{
	struct srv_gossip *sg = data;
	struct gossip_addr a;
	if (sg->core == NULL || sg->stopping || srv_gossip_addr_from_sockaddr(from, &a) != 0) {
		return;
	}
	/* A packet that does not parse is counted by the core; nothing is logged per packet. */
	(void)gossip_recv(sg->core, uv_now(sg->loop), &a, payload, len);
	pump(sg);
}

static void mark_settled(struct srv_gossip *sg, const char *how)
{
	if (sg->settled) {
		return;
	}
	sg->settled = true;
	uv_timer_stop(&sg->join_timer);
	struct srv_log_line l;
	srv_log_begin(&l, SRV_LOG_INFO, "gossip-joined");
	srv_log_str(&l, "through", how);
	srv_log_u64(&l, "members", gossip_member_count(sg->core));
	srv_log_end(&l);
}

static int on_state(void *data, const struct sockaddr *from, const uint8_t *state, size_t len,
		    bool join)
{
	struct srv_gossip *sg = data;
	(void)from;
	(void)join;
	if (sg->core == NULL || sg->stopping) {
		return -1;
	}
	bool remote_join = false;
	int rv = gossip_state_merge(sg->core, uv_now(sg->loop), state, len, &remote_join);
	if (rv != 0) {
		char a[SRV_GOSSIP_ADDR_STRLEN];
		struct gossip_addr ga;
		if (srv_gossip_addr_from_sockaddr(from, &ga) == 0) {
			srv_gossip_addr_format(&ga, a, sizeof a);
		} else {
			snprintf(a, sizeof a, "?");
		}
		srv_log(SRV_LOG_WARN, "gossip-state-refused", "from", a, "error",
			gossip_strerror(rv), NULL);
		pump(sg);
		return -1;
	}
	mark_settled(sg, "push-pull");
	pump(sg);
	return 0;
}

static int local_state(void *data, bool join, uint8_t **buf, size_t *len)
{
	struct srv_gossip *sg = data;
	if (sg->core == NULL || sg->stopping) {
		return -1;
	}
	size_t cap = gossip_state_size(sg->core);
	uint8_t *b = malloc(cap > 0 ? cap : 1);
	if (b == NULL) {
		return -1;
	}
	int n = gossip_state_encode(sg->core, join, b, cap);
	if (n < 0) {
		free(b);
		return -1;
	}
	*buf = b;
	*len = (size_t)n;
	pump(sg);
	return 0;
}

static bool is_join_addr(const struct srv_gossip *sg, const struct gossip_addr *a)
{
	for (size_t i = 0; i < sg->join_addrs_n; i++) {
		if (gossip_addr_equal(&sg->join_addrs[i], a)) {
			return true;
		}
	}
	return false;
}

static void on_pushpull_done(void *data, const struct sockaddr *to, int status)
{
	struct srv_gossip *sg = data;
	struct gossip_addr a;
	if (sg->core == NULL || sg->stopping || srv_gossip_addr_from_sockaddr(to, &a) != 0) {
		return;
	}
	if (status == 0) {
		mark_settled(sg, "push-pull");
		return;
	}
	if (!sg->settled && is_join_addr(sg, &a)) {
		char s[SRV_GOSSIP_ADDR_STRLEN];
		struct srv_log_line l;
		srv_log_begin(&l, SRV_LOG_WARN, "gossip-join-failed");
		srv_log_str(&l, "addr", srv_gossip_addr_format(&a, s, sizeof s));
		srv_log_str(&l, "error", uv_strerror(status));
		srv_log_u64(&l, "attempt", sg->join_attempt);
		srv_log_end(&l);
	}
	if (sg->in_pump) {
		pushpull_failed(sg, &a);
		return;
	}
	gossip_pushpull_failed(sg->core, uv_now(sg->loop), &a);
	pump(sg);
}

/* ---- joining ---- */

static bool is_self(const struct srv_gossip *sg, const struct gossip_addr *a)
{
	return gossip_addr_equal(a, &sg->self) || gossip_addr_equal(a, &sg->bound);
}

static void join_add(struct srv_gossip *sg, const struct gossip_addr *a)
{
	if (is_self(sg, a)) {
		return;
	}
	sg->join_self_only = false;
	for (size_t i = 0; i < sg->join_addrs_n; i++) {
		if (gossip_addr_equal(&sg->join_addrs[i], a)) {
			return;
		}
	}
	if (sg->join_addrs_n < sg->join_n * ADDRS_PER_NAME) {
		sg->join_addrs[sg->join_addrs_n++] = *a;
	}
}

/* Every address of the attempt is known: ask the core to join through them. */
static void join_submit(struct srv_gossip *sg)
{
	if (sg->stopping || sg->leaving || sg->settled) {
		return;
	}
	if (sg->join_addrs_n == 0) {
		if (sg->join_self_only && !sg->join_lookup_failed) {
			/* --gossip-join named this member alone: it is the first of its pool. */
			mark_settled(sg, "self");
		}
		return;
	}
	int rv = gossip_join(sg->core, uv_now(sg->loop), sg->join_addrs, sg->join_addrs_n);
	if (rv != 0) {
		srv_log(SRV_LOG_WARN, "gossip-join-failed", "error", gossip_strerror(rv), NULL);
	}
	pump(sg);
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
	struct resolve *r = req->data;
	struct srv_gossip *sg = r->sg;
	r->busy = false;
	sg->resolving--;
	if (status == 0 && !sg->stopping) {
		size_t taken = 0;
		for (struct addrinfo *ai = res; ai != NULL && taken < ADDRS_PER_NAME;
		     ai = ai->ai_next) {
			struct gossip_addr a;
			if (srv_gossip_addr_from_sockaddr(ai->ai_addr, &a) == 0) {
				a.port = sg->join[r->idx].port;
				join_add(sg, &a);
				taken++;
			}
		}
	} else if (status != UV_ECANCELED && status != UV_EAI_CANCELED && !sg->stopping) {
		sg->join_lookup_failed = true;
		srv_log(SRV_LOG_WARN, "gossip-join-lookup-failed", "host", sg->join[r->idx].host,
			"error", uv_strerror(status), NULL);
	}
	uv_freeaddrinfo(res);
	if (sg->stopping) {
		srv_gossip_stop(sg, sg->stopped_cb, sg->stopped_data); /* finishes the free */
		return;
	}
	if (sg->resolving == 0) {
		join_submit(sg);
	}
}

static void on_join_timer(uv_timer_t *h);

static void join_attempt(struct srv_gossip *sg)
{
	if (sg->stopping || sg->leaving || sg->settled || sg->join_n == 0) {
		return;
	}
	sg->join_attempt++;
	uint64_t delay = SRV_GOSSIP_JOIN_RETRY_MS;
	for (uint32_t i = 1; i < sg->join_attempt && delay < SRV_GOSSIP_JOIN_RETRY_MAX_MS; i++) {
		delay *= 2;
	}
	if (delay > SRV_GOSSIP_JOIN_RETRY_MAX_MS) {
		delay = SRV_GOSSIP_JOIN_RETRY_MAX_MS;
	}
	uv_timer_start(&sg->join_timer, on_join_timer, delay, 0);
	if (sg->resolving > 0) {
		return; /* the last attempt's lookups are still out: it goes on */
	}
	struct srv_log_line l;
	srv_log_begin(&l, sg->join_attempt == 1 ? SRV_LOG_INFO : SRV_LOG_WARN,
		      sg->join_attempt == 1 ? "gossip-join" : "gossip-join-retry");
	srv_log_u64(&l, "attempt", sg->join_attempt);
	srv_log_u64(&l, "addresses", sg->join_n);
	srv_log_u64(&l, "next-in-ms", delay);
	srv_log_end(&l);
	sg->join_addrs_n = 0;
	sg->join_self_only = true;
	sg->join_lookup_failed = false;
	for (size_t i = 0; i < sg->join_n; i++) {
		struct gossip_addr a;
		if (strcmp(sg->join[i].host, "localhost") != 0 &&
		    addr_parse(sg->join[i].host, sg->join[i].port, &a) == 0) {
			join_add(sg, &a); /* a numeric IP; names, localhost too, are looked up */
			continue;
		}
		struct resolve *r = &sg->res[i];
		struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_DGRAM };
		r->req.data = r;
		if (uv_getaddrinfo(sg->loop, &r->req, on_resolved, sg->join[i].host, NULL,
				   &hints) == 0) {
			r->busy = true;
			sg->resolving++;
		} else {
			sg->join_lookup_failed = true;
		}
	}
	if (sg->resolving == 0) {
		join_submit(sg);
	}
}

static void on_join_timer(uv_timer_t *h)
{
	join_attempt(h->data);
}

/* ---- keys ---- */

static void wipe(void *p, size_t n)
{
	volatile uint8_t *v = p;
	while (n-- > 0) {
		*v++ = 0;
	}
}

static int keys_load(const char *path, struct net_keyring *kr, char *err, size_t err_len)
{
	char why[512] = "";
	if (net_keyring_load(path, kr, why, sizeof why) != 0) {
		if (why[0] != '\0') {
			set_err(err, err_len, "gossip key file %s", why); /* names the path */
		} else {
			set_err(err, err_len, "gossip key file %s: unreadable", path);
		}
		return -1;
	}
	if (kr->n == 0) {
		set_err(err, err_len, "gossip key file %s holds no key", path);
		return -1;
	}
	return 0;
}

int srv_gossip_reload_keys(struct srv_gossip *sg)
{
	if (sg->key_file == NULL) {
		srv_log(SRV_LOG_WARN, "gossip-keys-reload-failed", "error",
			"no --gossip-key-file: gossip is not encrypted", NULL);
		return -1;
	}
	struct net_keyring kr;
	char err[600];
	int rv = keys_load(sg->key_file, &kr, err, sizeof err);
	if (rv == 0) {
		net_gossip_set_keyring(sg->t, &kr);
		struct srv_log_line l;
		srv_log_begin(&l, SRV_LOG_INFO, "gossip-keys-reloaded");
		srv_log_str(&l, "file", sg->key_file);
		srv_log_u64(&l, "keys", kr.n);
		srv_log_end(&l);
	} else {
		srv_log(SRV_LOG_ERROR, "gossip-keys-reload-failed", "error", err, "detail",
			"the keys in use are kept", NULL);
	}
	wipe(&kr, sizeof kr);
	return rv;
}

static void on_sighup(uv_signal_t *h, int signum)
{
	(void)signum;
	struct srv_gossip *sg = h->data;
	if (!sg->stopping) {
		(void)srv_gossip_reload_keys(sg);
	}
}

/* ---- start ---- */

/* The address to advertise when listening on 0.0.0.0 or ::: the first interface of that
 * family that is not a loopback, else of the other family, else the loopback. */
static void advertise_any(struct gossip_addr *a)
{
	uv_interface_address_t *ifs = NULL;
	int n = 0;
	uint8_t fam = a->family;
	bool found = false;
	if (uv_interface_addresses(&ifs, &n) == 0) {
		for (int pass = 0; pass < 2 && !found; pass++) {
			uint8_t want = pass == 0 ? fam : (fam == 4 ? 6 : 4);
			for (int i = 0; i < n && !found; i++) {
				struct gossip_addr c;
				if (ifs[i].is_internal ||
				    srv_gossip_addr_from_sockaddr(
					    (const struct sockaddr *)&ifs[i].address, &c) != 0 ||
				    c.family != want) {
					continue;
				}
				/* link-local IPv6 needs a scope the wire format does not carry */
				if (c.family == 6 && c.ip[0] == 0xfe && (c.ip[1] & 0xc0) == 0x80) {
					continue;
				}
				c.port = a->port;
				*a = c;
				found = true;
			}
		}
		uv_free_interface_addresses(ifs, n);
	}
	if (!found) {
		memset(a->ip, 0, sizeof a->ip);
		if (fam == 6) {
			a->ip[15] = 1;
		} else {
			a->ip[0] = 127;
			a->ip[3] = 1;
		}
	}
}

static uint64_t seed_make(void)
{
	uint64_t s = 0;
	if (getrandom(&s, sizeof s, GRND_NONBLOCK) != (ssize_t)sizeof s) {
		s = uv_hrtime() ^ ((uint64_t)getpid() << 32);
	}
	return s ? s : 1;
}

void srv_gossip_options_from_config(struct srv_gossip_options *o, const struct srv_config *cfg)
{
	memset(o, 0, sizeof *o);
	o->listen = &cfg->gossip_listen;
	o->join = cfg->gossip_join;
	o->join_n = cfg->gossip_join_n;
	o->label = cfg->gossip_label;
	o->key_file = cfg->gossip_key_file;
	o->tags = cfg->gossip_tags;
	o->tags_n = cfg->gossip_tags_n;
	o->timing = cfg->gossip_timing;
}

static void handle_closed(uv_handle_t *h);
static void transport_stopped(void *data);

/* Frees sg once its handles, its transport and its lookups are all done. */
static void maybe_free(struct srv_gossip *sg)
{
	if (sg->handles > 0 || sg->transport_open || sg->resolving > 0) {
		return;
	}
	void (*cb)(void *) = sg->stopped_cb;
	void *data = sg->stopped_data;
	if (sg->core != NULL) {
		gossip_free(sg->core);
	}
	for (size_t i = 0; i < sg->join_n; i++) {
		free(sg->join[i].host);
		free(sg->join[i].text);
	}
	free(sg->join);
	free(sg->res);
	free(sg->join_addrs);
	free(sg->name);
	free(sg->key_file);
	free(sg);
	if (cb != NULL) {
		cb(data);
	}
}

static void handle_closed(uv_handle_t *h)
{
	struct srv_gossip *sg = h->data;
	sg->handles--;
	maybe_free(sg);
}

static void transport_stopped(void *data)
{
	struct srv_gossip *sg = data;
	sg->transport_open = false;
	maybe_free(sg);
}

void srv_gossip_stop(struct srv_gossip *sg, void (*done)(void *data), void *data)
{
	if (sg == NULL) {
		if (done != NULL) {
			done(data);
		}
		return;
	}
	if (sg->stopping) {
		/* again from a lookup's callback: only the free may be left to do */
		maybe_free(sg);
		return;
	}
	sg->stopping = true;
	sg->stopped_cb = done;
	sg->stopped_data = data;
	for (size_t i = 0; i < sg->join_n; i++) {
		if (sg->res[i].busy) {
			(void)uv_cancel((uv_req_t *)&sg->res[i].req);
		}
	}
	uv_handle_t *hs[] = { (uv_handle_t *)&sg->timer, (uv_handle_t *)&sg->join_timer,
			      (uv_handle_t *)&sg->leave_timer,
			      sg->sighup_on ? (uv_handle_t *)&sg->sighup : NULL };
	for (size_t i = 0; i < sizeof hs / sizeof hs[0]; i++) {
		if (hs[i] != NULL && hs[i]->loop == sg->loop && !uv_is_closing(hs[i])) {
			uv_close(hs[i], handle_closed);
		}
	}
	if (sg->transport_open) {
		net_gossip_stop(sg->t, transport_stopped, sg);
	}
	maybe_free(sg);
}

void srv_gossip_leave(struct srv_gossip *sg, void (*done)(void *data), void *data)
{
	if (sg == NULL || sg->leaving || sg->stopping) {
		return;
	}
	sg->leaving = true;
	sg->left_cb = done;
	sg->left_data = data;
	uv_timer_stop(&sg->join_timer);
	uint64_t bound = (uint64_t)SRV_GOSSIP_LEAVE_INTERVALS * sg->gossip_interval_ms;
	bound = bound < LEAVE_MIN_MS ? LEAVE_MIN_MS : bound > LEAVE_MAX_MS ? LEAVE_MAX_MS : bound;
	uv_timer_start(&sg->leave_timer, on_leave_timer, bound, 0);
	int rv = gossip_leave(sg->core, uv_now(sg->loop));
	if (rv != 0) {
		srv_log(SRV_LOG_WARN, "gossip-leave-failed", "error", gossip_strerror(rv), NULL);
	} else {
		srv_log(SRV_LOG_INFO, "gossip-leaving", NULL);
	}
	pump(sg);
}

int srv_gossip_start(uv_loop_t *loop, const struct srv_gossip_options *o, struct srv_gossip **out,
		     char *err, size_t err_len)
{
	*out = NULL;
	uint8_t meta[GOSSIP_MAX_META];
	long meta_len = srv_gossip_meta_encode(o->tags, o->tags_n, meta, sizeof meta, err, err_len);
	if (meta_len < 0) {
		return -1;
	}
	if (o->name == NULL || o->name[0] == '\0' || strlen(o->name) > GOSSIP_MAX_NAME) {
		set_err(err, err_len, "a gossip member name is 1 to %d bytes", GOSSIP_MAX_NAME);
		return -1;
	}
	struct gossip_addr bound;
	if (o->listen == NULL || o->listen->host == NULL ||
	    addr_parse(o->listen->host, o->listen->port, &bound) != 0) {
		set_err(err, err_len, "--gossip-listen %s: expected a numeric IP or localhost",
			o->listen != NULL && o->listen->text != NULL ? o->listen->text : "");
		return -1;
	}
	struct gossip_addr adv_host = { 0 };
	bool have_adv = o->advertise_host != NULL && o->advertise_host[0] != '\0';
	if (have_adv && addr_parse(o->advertise_host, 0, &adv_host) != 0) {
		set_err(err, err_len, "gossip advertise address %s is not a numeric IP",
			o->advertise_host);
		return -1;
	}
	struct net_keyring kr = { 0 };
	if (o->key_file != NULL && keys_load(o->key_file, &kr, err, err_len) != 0) {
		wipe(&kr, sizeof kr);
		return -1;
	}

	struct srv_gossip *sg = calloc(1, sizeof *sg);
	if (sg == NULL) {
		wipe(&kr, sizeof kr);
		set_err(err, err_len, "out of memory");
		return -1;
	}
	sg->loop = loop;
	sg->on_event = o->on_event;
	sg->data = o->data;
	sg->gossip_interval_ms = o->timing.gossip_interval_ms ? o->timing.gossip_interval_ms : 200;
	sg->name = strdup(o->name);
	sg->key_file = o->key_file != NULL ? strdup(o->key_file) : NULL;
	sg->join_n = o->join_n;
	sg->join = calloc(o->join_n + 1, sizeof *sg->join);
	sg->res = calloc(o->join_n + 1, sizeof *sg->res);
	sg->join_addrs = calloc(o->join_n * ADDRS_PER_NAME + 1, sizeof *sg->join_addrs);
	bool nomem = sg->name == NULL || (o->key_file != NULL && sg->key_file == NULL) ||
		     sg->join == NULL || sg->res == NULL || sg->join_addrs == NULL;
	for (size_t i = 0; !nomem && i < o->join_n; i++) {
		sg->join[i].host = strdup(o->join[i].host);
		sg->join[i].text = strdup(o->join[i].text != NULL ? o->join[i].text : "");
		sg->join[i].port = o->join[i].port;
		sg->res[i].sg = sg;
		sg->res[i].idx = i;
		nomem = sg->join[i].host == NULL || sg->join[i].text == NULL;
	}
	if (nomem) {
		wipe(&kr, sizeof kr);
		maybe_free(sg);
		set_err(err, err_len, "out of memory");
		return -1;
	}

	struct net_gossip_config nc;
	net_gossip_config_init(&nc);
	nc.loop = loop;
	srv_gossip_addr_to_sockaddr(&bound, &nc.bind);
	nc.label = o->label;
	nc.keyring = kr.n > 0 ? &kr : NULL;
	nc.data = sg;
	nc.on_packet = on_packet;
	nc.on_state = on_state;
	nc.local_state = local_state;
	nc.on_pushpull_done = on_pushpull_done;
	nc.log = net_log;
	int rv = net_gossip_start(&nc, &sg->t);
	uint32_t n_keys = kr.n;
	wipe(&kr, sizeof kr);
	if (rv != 0) {
		set_err(err, err_len, "cannot listen for gossip on %s (udp and tcp): %s",
			o->listen->text != NULL ? o->listen->text : o->listen->host,
			uv_strerror(rv));
		maybe_free(sg);
		return -1;
	}
	sg->transport_open = true;
	bound.port = net_gossip_port(sg->t);
	sg->bound = bound;
	sg->self = have_adv ? adv_host : bound;
	sg->self.port = bound.port;
	if (!have_adv && addr_unspecified(&bound)) {
		advertise_any(&sg->self);
	}

	(void)uv_timer_init(loop, &sg->timer);
	(void)uv_timer_init(loop, &sg->join_timer);
	(void)uv_timer_init(loop, &sg->leave_timer);
	sg->timer.data = sg;
	sg->join_timer.data = sg;
	sg->leave_timer.data = sg;
	sg->handles = 3;
	if (o->sighup) {
		if (uv_signal_init(loop, &sg->sighup) == 0) {
			sg->handles++;
			sg->sighup_on = true;
			sg->sighup.data = sg;
			if (uv_signal_start(&sg->sighup, on_sighup, SIGHUP) == 0) {
				/* SIGHUP alone must not keep the loop running */
				uv_unref((uv_handle_t *)&sg->sighup);
			}
		}
	}

	struct gossip_config gc;
	gossip_config_init(&gc);
	gc.name = o->name;
	gc.addr = sg->self;
	gc.meta = meta;
	gc.meta_len = (uint32_t)meta_len;
	gc.seed = seed_make();
	if (o->timing.probe_interval_ms != 0) {
		gc.probe_interval_ms = o->timing.probe_interval_ms;
		gc.probe_timeout_ms = o->timing.probe_timeout_ms;
		gc.gossip_interval_ms = o->timing.gossip_interval_ms;
		gc.suspicion_mult = o->timing.suspicion_mult;
		gc.pushpull_interval_ms = o->timing.pushpull_interval_ms;
		gc.reap_dead_ms = o->timing.reap_dead_ms;
		gc.reap_left_ms = o->timing.reap_left_ms;
	}
	size_t payload = net_gossip_max_payload(sg->t);
	if (payload < gc.packet_size) {
		gc.packet_size = (uint32_t)payload;
	}
	rv = gossip_new(&gc, uv_now(loop), &sg->core);
	if (rv != 0) {
		set_err(err, err_len, "gossip: %s", gossip_strerror(rv));
		srv_gossip_stop(sg, NULL, NULL);
		return -1;
	}

	char a[SRV_GOSSIP_ADDR_STRLEN], b[SRV_GOSSIP_ADDR_STRLEN];
	struct srv_log_line l;
	srv_log_begin(&l, SRV_LOG_INFO, "gossip-started");
	srv_log_str(&l, "name", sg->name);
	srv_log_str(&l, "listen", srv_gossip_addr_format(&sg->bound, a, sizeof a));
	srv_log_str(&l, "advertise", srv_gossip_addr_format(&sg->self, b, sizeof b));
	srv_log_u64(&l, "keys", n_keys);
	if (o->label != NULL && o->label[0] != '\0') {
		srv_log_str(&l, "label", o->label);
	}
	srv_log_u64(&l, "tags", o->tags_n);
	srv_log_u64(&l, "join", o->join_n);
	srv_log_end(&l);

	sg->settled = o->join_n == 0;
	*out = sg;
	pump(sg);
	join_attempt(sg);
	return 0;
}

const struct gossip *srv_gossip_core(const struct srv_gossip *sg)
{
	return sg->core;
}

void srv_gossip_net_stats(const struct srv_gossip *sg, struct net_gossip_stats *out)
{
	net_gossip_stats(sg->t, out);
}

uint64_t srv_gossip_now(const struct srv_gossip *sg)
{
	return uv_now(sg->loop);
}

bool srv_gossip_settled(const struct srv_gossip *sg)
{
	return sg->settled;
}

const struct gossip_addr *srv_gossip_self_addr(const struct srv_gossip *sg)
{
	return &sg->self;
}

/* raft_bench.c: committed entries per second through the Raft core alone.
 *
 * One thread drives an N-node cluster in memory: every node is a struct raft
 * over a raft_memstore, and messages move between per-node inboxes. No
 * network, no disk, no clock inside the core: what is measured is the core's
 * own work (stepping, replication bookkeeping, building updates) plus the
 * in-memory backend and the copy of each message into its inbox, which stands
 * in for encoding it onto a wire.
 *
 * A run: bootstrap N voters, elect node 1 (warm-up, not timed), then rounds
 * until --entries are applied on the leader. In a round the client proposes a
 * batch of B entries to the leader; then every node takes its updates per
 * THE LOOP CONTRACT of raft.h (send, persist, send after persist, apply,
 * reads, advance) and the inboxes are delivered, over and over, until the
 * whole batch is committed and applied on the leader. The clock
 * (CLOCK_MONOTONIC) covers all rounds, compaction included.
 *
 * Each node's core and memstore get their own counting struct raft_heap, so
 * the bytes and calls of malloc/realloc per committed entry are reported for
 * the core and the memstore apart. The harness's own inbox buffers are not
 * counted (they are reused, and stand for a transport's buffers). Counting
 * has a price (a size header per block, a few additions per call):
 * --plain-heap hands the nodes libc's allocator instead, to show it.
 *
 * After the timed part the followers are brought up to the leader's commit
 * and every node's applied sequence is checked (each entry carries its
 * sequence number in its first 8 bytes): a result is only printed for a run
 * that replicated every entry, once, in order, everywhere.
 *
 * Measures one thing; rerun with the command line it prints. No timing here
 * is ever asserted on.
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif

#include "raft.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ------------------------------------------------------------------------ */
/* Options.                                                                 */

struct opts {
	uint64_t entries;
	uint64_t entry_bytes;
	uint64_t batch;
	uint64_t nodes;
	uint64_t compact_every; /* 0: never compact */
	uint64_t compact_keep;  /* entries kept behind the snapshot */
	uint64_t seed;
	bool plain_heap; /* libc directly: no counting, no size headers */
	bool json;
};

#define DEFAULT_ENTRIES 2000000u
#define DEFAULT_ENTRY_BYTES 128u
#define DEFAULT_BATCH 1024u
#define DEFAULT_NODES 3u
#define DEFAULT_COMPACT_EVERY 65536u
#define DEFAULT_COMPACT_KEEP 1024u
#define DEFAULT_SEED 1u

/* Bounds on the inputs (style: everything has a bound). */
#define MAX_ENTRIES (UINT64_C(1) << 40)
#define MAX_ENTRY_BYTES (1u << 20)
#define MAX_BATCH (1u << 20)
#define SEQ_BYTES 8u /* the sequence number at the head of each entry */

/* A round that makes no progress for this many idle passes (each one ticks
 * every node) is a bug in the cluster, not slowness: stop with an error. */
#define MAX_IDLE_PASSES 10000u

static void die(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));

static void die(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("raft-bench: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	exit(1);
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: raft-bench [options]\n"
		"  --entries N        entries to commit (default %u)\n"
		"  --entry-bytes N    bytes per entry (default %u)\n"
		"  --batch N          entries proposed per round (default %u)\n"
		"  --nodes N          voters, 1..%d (default %u)\n"
		"  --compact-every N  snapshot+compact every node's memstore each N applied\n"
		"                     entries, 0 = never (default %u)\n"
		"  --compact-keep N   entries kept behind each snapshot (default %u)\n"
		"  --seed N           seed of the nodes' generators (default %u)\n"
		"  --plain-heap       give the nodes libc's allocator instead of the counting\n"
		"                     one (no allocation figures; shows what counting costs)\n"
		"  --json             print one JSON line of results instead of text\n",
		DEFAULT_ENTRIES, DEFAULT_ENTRY_BYTES, DEFAULT_BATCH, RAFT_MAX_MEMBERS,
		DEFAULT_NODES, DEFAULT_COMPACT_EVERY, DEFAULT_COMPACT_KEEP, DEFAULT_SEED);
}

static uint64_t parse_u64(const char *flag, const char *s, uint64_t lo, uint64_t hi)
{
	char *end = NULL;
	if (s == NULL)
		die("%s needs a value", flag);
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || s[0] == '-')
		die("%s: not a number: %s", flag, s);
	if ((uint64_t)v < lo || (uint64_t)v > hi)
		die("%s: %s is outside [%" PRIu64 ", %" PRIu64 "]", flag, s, lo, hi);
	return (uint64_t)v;
}

static void parse_opts(int argc, char **argv, struct opts *o)
{
	*o = (struct opts){
		.entries = DEFAULT_ENTRIES,
		.entry_bytes = DEFAULT_ENTRY_BYTES,
		.batch = DEFAULT_BATCH,
		.nodes = DEFAULT_NODES,
		.compact_every = DEFAULT_COMPACT_EVERY,
		.compact_keep = DEFAULT_COMPACT_KEEP,
		.seed = DEFAULT_SEED,
		.plain_heap = false,
		.json = false,
	};
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (strcmp(a, "--entries") == 0) {
			o->entries = parse_u64(a, v, 1, MAX_ENTRIES);
			i++;
		} else if (strcmp(a, "--entry-bytes") == 0) {
			o->entry_bytes = parse_u64(a, v, SEQ_BYTES, MAX_ENTRY_BYTES);
			i++;
		} else if (strcmp(a, "--batch") == 0) {
			o->batch = parse_u64(a, v, 1, MAX_BATCH);
			i++;
		} else if (strcmp(a, "--nodes") == 0) {
			o->nodes = parse_u64(a, v, 1, RAFT_MAX_MEMBERS);
			i++;
		} else if (strcmp(a, "--compact-every") == 0) {
			o->compact_every = parse_u64(a, v, 0, MAX_ENTRIES);
			i++;
		} else if (strcmp(a, "--compact-keep") == 0) {
			o->compact_keep = parse_u64(a, v, 0, MAX_ENTRIES);
			i++;
		} else if (strcmp(a, "--seed") == 0) {
			o->seed = parse_u64(a, v, 0, UINT64_MAX);
			i++;
		} else if (strcmp(a, "--plain-heap") == 0) {
			o->plain_heap = true;
		} else if (strcmp(a, "--json") == 0) {
			o->json = true;
		} else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
			usage(stdout);
			exit(0);
		} else {
			usage(stderr);
			die("unknown option: %s", a);
		}
	}
}

/* ------------------------------------------------------------------------ */
/* A counting allocator: one per node for the core, one for its memstore.  */

/* Each block carries its size in a header, so live and peak bytes are known. */
union heap_hdr {
	size_t size;
	max_align_t align;
};

struct count_heap {
	struct raft_heap heap; /* ctx points back here */
	uint64_t bytes;        /* requested by malloc and realloc */
	uint64_t calls;        /* malloc + realloc calls */
	uint64_t frees;
	uint64_t live;
	uint64_t peak;
};

static void count_grow(struct count_heap *h, size_t size)
{
	h->bytes += size;
	h->calls++;
	h->live += size;
	if (h->live > h->peak)
		h->peak = h->live;
}

static void *count_malloc(void *ctx, size_t size)
{
	struct count_heap *h = ctx;
	if (size > SIZE_MAX - sizeof(union heap_hdr))
		return NULL;
	union heap_hdr *p = malloc(sizeof(*p) + size);
	if (p == NULL)
		return NULL;
	p->size = size;
	count_grow(h, size);
	return p + 1;
}

static void count_free(void *ctx, void *ptr)
{
	struct count_heap *h = ctx;
	if (ptr == NULL)
		return;
	union heap_hdr *p = (union heap_hdr *)ptr - 1;
	h->live -= p->size;
	h->frees++;
	free(p);
}

static void *count_realloc(void *ctx, void *ptr, size_t size)
{
	struct count_heap *h = ctx;
	if (ptr == NULL)
		return count_malloc(ctx, size);
	if (size > SIZE_MAX - sizeof(union heap_hdr))
		return NULL;
	union heap_hdr *old = (union heap_hdr *)ptr - 1;
	size_t old_size = old->size;
	union heap_hdr *p = realloc(old, sizeof(*p) + size);
	if (p == NULL)
		return NULL;
	p->size = size;
	h->live -= old_size;
	count_grow(h, size);
	return p + 1;
}

static void count_heap_init(struct count_heap *h)
{
	memset(h, 0, sizeof(*h));
	h->heap.ctx = h;
	h->heap.malloc = count_malloc;
	h->heap.realloc = count_realloc;
	h->heap.free = count_free;
}

/* ------------------------------------------------------------------------ */
/* Inboxes: messages copied out of an update, delivered after advance.     */

/* Blocks never move once allocated, so pointers into them stay valid until
 * the arena is reset; reset keeps the blocks for reuse. */
struct block {
	struct block *next;
	size_t cap;
	size_t used;
	max_align_t data[]; /* cap bytes */
};

struct arena {
	struct block *head;
	struct block *cur;
};

#define ARENA_BLOCK_BYTES ((size_t)1 << 20)

static void *arena_alloc(struct arena *a, size_t n)
{
	n = (n + 15u) & ~(size_t)15u;
	while (a->cur != NULL && a->cur->cap - a->cur->used < n) {
		if (a->cur->next == NULL)
			break;
		a->cur = a->cur->next;
		a->cur->used = 0;
	}
	if (a->cur == NULL || a->cur->cap - a->cur->used < n) {
		size_t cap = n > ARENA_BLOCK_BYTES ? n : ARENA_BLOCK_BYTES;
		struct block *b = malloc(sizeof(*b) + cap);
		if (b == NULL)
			die("out of memory (inbox)");
		b->cap = cap;
		b->used = 0;
		/* A fresh block goes right after cur; the blocks after it (too
		 * small for this request) stay for later. */
		if (a->cur == NULL) {
			b->next = a->head;
			a->head = b;
		} else {
			b->next = a->cur->next;
			a->cur->next = b;
		}
		a->cur = b;
	}
	void *p = (unsigned char *)a->cur->data + a->cur->used;
	a->cur->used += n;
	return p;
}

static void arena_reset(struct arena *a)
{
	a->cur = a->head;
	if (a->cur != NULL)
		a->cur->used = 0;
}

static void arena_free(struct arena *a)
{
	struct block *b = a->head;
	while (b != NULL) {
		struct block *next = b->next;
		free(b);
		b = next;
	}
	a->head = a->cur = NULL;
}

struct inbox {
	struct raft_msg *msgs;
	size_t n;
	size_t cap;
	struct arena arena;
};

static void inbox_push(struct inbox *in, const struct raft_msg *m)
{
	if (in->n == in->cap) {
		size_t cap = in->cap ? in->cap * 2 : 64;
		struct raft_msg *msgs = realloc(in->msgs, cap * sizeof(*msgs));
		if (msgs == NULL)
			die("out of memory (inbox)");
		in->msgs = msgs;
		in->cap = cap;
	}
	struct raft_msg *c = &in->msgs[in->n++];
	*c = *m;
	if (m->n_entries > 0) {
		struct raft_entry *es = arena_alloc(&in->arena, m->n_entries * sizeof(*es));
		for (uint32_t i = 0; i < m->n_entries; i++) {
			es[i] = m->entries[i];
			if (es[i].len > 0) {
				uint8_t *d = arena_alloc(&in->arena, es[i].len);
				memcpy(d, m->entries[i].data, es[i].len);
				es[i].data = d;
			} else {
				es[i].data = NULL;
			}
		}
		c->entries = es;
	} else {
		c->entries = NULL;
	}
	if (m->len > 0) {
		uint8_t *d = arena_alloc(&in->arena, m->len);
		memcpy(d, m->data, m->len);
		c->data = d;
	} else {
		c->data = NULL;
	}
}

static void inbox_reset(struct inbox *in)
{
	in->n = 0;
	arena_reset(&in->arena);
}

static void inbox_free(struct inbox *in)
{
	free(in->msgs);
	arena_free(&in->arena);
	memset(in, 0, sizeof(*in));
}

/* ------------------------------------------------------------------------ */
/* The cluster.                                                             */

struct node {
	uint64_t id;
	struct raft *r;
	struct raft_memstore *ms;
	struct count_heap core_heap;
	struct count_heap store_heap;
	uint64_t rng;
	struct inbox in;
	uint32_t state;          /* from the last update */
	uint64_t applied;        /* last index applied */
	uint64_t applied_normal; /* NORMAL entries applied */
	uint64_t next_seq;       /* sequence expected in the next NORMAL entry */
	uint64_t snap_index;     /* last compaction point */
};

struct counters {
	uint64_t updates;
	uint64_t msgs;
	uint64_t msg_entries; /* entries carried by the delivered messages */
	uint64_t passes;
	uint64_t idle_passes;
	uint64_t rounds;
	uint64_t compactions;
};

struct cluster {
	const struct opts *o;
	struct node *nodes;
	uint32_t n;
	struct counters c;
	uint64_t dropped_msgs; /* addressed to no node: never expected */
	struct node *leader;   /* node 1, elected in the warm-up */
	uint64_t target;       /* the index the current wait is for */
};

/* splitmix64: the nodes' seeded generators. */
static uint64_t bench_rand(void *ctx)
{
	uint64_t *s = ctx;
	uint64_t z = (*s += UINT64_C(0x9e3779b97f4a7c15));
	z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
	z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
	return z ^ (z >> 31);
}

static struct node *cluster_node(struct cluster *cl, uint64_t id)
{
	if (id == 0 || id > cl->n)
		return NULL;
	return &cl->nodes[id - 1];
}

static void cluster_init(struct cluster *cl, const struct opts *o)
{
	memset(cl, 0, sizeof(*cl));
	cl->o = o;
	cl->n = (uint32_t)o->nodes;
	cl->nodes = calloc(cl->n, sizeof(*cl->nodes));
	if (cl->nodes == NULL)
		die("out of memory");

	struct raft_conf conf = { .n = cl->n };
	for (uint32_t i = 0; i < cl->n; i++) {
		conf.members[i].id = i + 1;
		conf.members[i].role = RAFT_VOTER;
	}

	for (uint32_t i = 0; i < cl->n; i++) {
		struct node *nd = &cl->nodes[i];
		nd->id = i + 1;
		nd->rng = o->seed * 1000003u + nd->id;
		count_heap_init(&nd->core_heap);
		count_heap_init(&nd->store_heap);
		int rv = raft_memstore_new(o->plain_heap ? NULL : &nd->store_heap.heap, &nd->ms);
		if (rv != 0)
			die("raft_memstore_new: %s", raft_strerror(rv));
		rv = raft_memstore_bootstrap(nd->ms, &conf);
		if (rv != 0)
			die("raft_memstore_bootstrap: %s", raft_strerror(rv));

		struct raft_config cfg;
		raft_config_init(&cfg);
		cfg.id = nd->id;
		cfg.storage = raft_memstore_storage(nd->ms);
		cfg.heap = o->plain_heap ? NULL : &nd->core_heap.heap;
		cfg.rand = bench_rand;
		cfg.rand_ctx = &nd->rng;
		cfg.pre_vote = true;
		cfg.check_quorum = true;
		rv = raft_new(&cfg, &nd->r);
		if (rv != 0)
			die("raft_new: %s", raft_strerror(rv));
		nd->state = RAFT_FOLLOWER;
		nd->next_seq = 0;
	}
}

static void cluster_free(struct cluster *cl)
{
	for (uint32_t i = 0; i < cl->n; i++) {
		struct node *nd = &cl->nodes[i];
		raft_free(nd->r);
		raft_memstore_free(nd->ms);
		inbox_free(&nd->in);
	}
	free(cl->nodes);
	cl->nodes = NULL;
}

static void send_msgs(struct cluster *cl, const struct raft_msg *msgs, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++) {
		struct node *to = cluster_node(cl, msgs[i].to);
		if (to == NULL) {
			cl->dropped_msgs++;
			continue;
		}
		inbox_push(&to->in, &msgs[i]);
	}
}

/* The state machine: checks that NORMAL entries arrive once each, in order. */
static void apply_entry(struct node *nd, const struct raft_entry *e)
{
	if (e->index != nd->applied + 1)
		die("node %" PRIu64 ": applied index %" PRIu64 " after %" PRIu64, nd->id, e->index,
		    nd->applied);
	nd->applied = e->index;
	if (e->type != RAFT_ENTRY_NORMAL)
		return;
	uint64_t seq;
	if (e->len < SEQ_BYTES)
		die("node %" PRIu64 ": entry %" PRIu64 " has %" PRIu32 " bytes", nd->id, e->index,
		    e->len);
	memcpy(&seq, e->data, sizeof(seq));
	if (seq != nd->next_seq)
		die("node %" PRIu64 ": entry %" PRIu64 " carries sequence %" PRIu64
		    ", expected %" PRIu64,
		    nd->id, e->index, seq, nd->next_seq);
	nd->next_seq++;
	nd->applied_normal++;
}

/* One update of one node, per THE LOOP CONTRACT. Returns 1 if it had one. */
static int node_process(struct cluster *cl, struct node *nd)
{
	if (!raft_has_update(nd->r))
		return 0;
	struct raft_update u;
	int rv = raft_ready(nd->r, &u);
	if (rv != 0)
		die("node %" PRIu64 ": raft_ready: %s", nd->id, raft_strerror(rv));
	nd->state = u.state;
	/* 1. Messages that do not wait for this update's persistence. */
	send_msgs(cl, u.msgs, u.n_msgs);
	/* 2. Persist (the memstore does snapshot chunks, snapshot, entries,
	 * hard state, in that order). */
	rv = raft_memstore_persist(nd->ms, &u);
	if (rv != 0)
		die("node %" PRIu64 ": raft_memstore_persist: %s", nd->id, raft_strerror(rv));
	/* Compaction keeps --compact-keep entries and every follower is within
	 * one batch of the leader, so no snapshot is ever sent: an install here
	 * is a bug (and would skip entries the sequence check expects). */
	if (u.snapshot != NULL)
		die("node %" PRIu64 ": unexpected snapshot install at %" PRIu64, nd->id,
		    u.snapshot->index);
	/* 3. Messages that announce what was just persisted. */
	send_msgs(cl, u.msgs_after_persist, u.n_msgs_after_persist);
	/* 4. Apply. */
	for (uint32_t i = 0; i < u.n_committed; i++)
		apply_entry(nd, &u.committed[i]);
	/* 5. Reads: the bench issues none. */
	if (u.n_reads != 0)
		die("node %" PRIu64 ": unexpected read states", nd->id);
	/* 6. */
	raft_advance(nd->r);
	cl->c.updates++;
	return 1;
}

static uint64_t deliver(struct cluster *cl, struct node *nd)
{
	uint64_t n = nd->in.n;
	for (size_t i = 0; i < nd->in.n; i++) {
		const struct raft_msg *m = &nd->in.msgs[i];
		cl->c.msg_entries += m->n_entries;
		int rv = raft_step(nd->r, m);
		if (rv != 0)
			die("node %" PRIu64 ": raft_step: %s", nd->id, raft_strerror(rv));
	}
	inbox_reset(&nd->in);
	cl->c.msgs += n;
	return n;
}

/* One pass: each node takes (at most) one update, then every inbox is
 * delivered. Returns how much happened; 0 means the cluster is idle. */
static uint64_t cluster_pass(struct cluster *cl)
{
	uint64_t work = 0;
	for (uint32_t i = 0; i < cl->n; i++)
		work += (uint64_t)node_process(cl, &cl->nodes[i]);
	for (uint32_t i = 0; i < cl->n; i++)
		work += deliver(cl, &cl->nodes[i]);
	cl->c.passes++;
	return work;
}

static void cluster_tick(struct cluster *cl)
{
	for (uint32_t i = 0; i < cl->n; i++)
		raft_tick(cl->nodes[i].r);
}

/* Pass until done(cl) holds; an idle pass ticks every node (so elections,
 * heartbeats and retries can go on), and too many idle passes in a row is an
 * error: `what` names the wait. */
static void cluster_run_until(struct cluster *cl, bool (*done)(struct cluster *), const char *what)
{
	uint32_t idle = 0;
	while (!done(cl)) {
		if (cluster_pass(cl) != 0) {
			idle = 0;
			continue;
		}
		cl->c.idle_passes++;
		if (++idle > MAX_IDLE_PASSES)
			die("no progress after %u idle passes while waiting for %s",
			    MAX_IDLE_PASSES, what);
		cluster_tick(cl);
	}
}

/* ------------------------------------------------------------------------ */
/* The run.                                                                 */

static bool leader_ready(struct cluster *cl)
{
	struct raft_status st;
	raft_status(cl->leader->r, &st);
	/* Elected, and its first entry of the term (the no-op) applied. */
	return st.state == RAFT_LEADER && cl->leader->applied >= st.last_index &&
	       cl->leader->applied > 0;
}

static bool leader_applied_target(struct cluster *cl)
{
	return cl->leader->applied >= cl->target;
}

static bool all_applied_target(struct cluster *cl)
{
	for (uint32_t i = 0; i < cl->n; i++)
		if (cl->nodes[i].applied < cl->target)
			return false;
	return true;
}

static void compact(struct cluster *cl)
{
	uint64_t sm = 0; /* a token state-machine snapshot */
	for (uint32_t i = 0; i < cl->n; i++) {
		struct node *nd = &cl->nodes[i];
		if (nd->applied <= nd->snap_index)
			continue;
		struct raft_status st;
		raft_status(nd->r, &st);
		sm = nd->applied_normal;
		int rv = raft_memstore_snapshot(nd->ms, nd->applied, &st.conf, &sm, sizeof(sm),
						cl->o->compact_keep);
		if (rv != 0)
			die("node %" PRIu64 ": raft_memstore_snapshot at %" PRIu64 ": %s", nd->id,
			    nd->applied, raft_strerror(rv));
		nd->snap_index = nd->applied;
	}
	cl->c.compactions++;
}

static double now_sec(void)
{
	struct timespec ts;
	if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0)
		die("clock_gettime: %s", strerror(errno));
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

struct heap_totals {
	uint64_t bytes;
	uint64_t calls;
	uint64_t peak; /* largest per-node peak of live bytes */
};

static void heap_totals(const struct cluster *cl, bool core, struct heap_totals *t)
{
	memset(t, 0, sizeof(*t));
	for (uint32_t i = 0; i < cl->n; i++) {
		const struct count_heap *h =
			core ? &cl->nodes[i].core_heap : &cl->nodes[i].store_heap;
		t->bytes += h->bytes;
		t->calls += h->calls;
		if (h->peak > t->peak)
			t->peak = h->peak;
	}
}

/* Peak bytes are tracked from here on: reset the peaks to the live bytes. */
static void reset_peaks(struct cluster *cl)
{
	for (uint32_t i = 0; i < cl->n; i++) {
		cl->nodes[i].core_heap.peak = cl->nodes[i].core_heap.live;
		cl->nodes[i].store_heap.peak = cl->nodes[i].store_heap.live;
	}
}

int main(int argc, char **argv)
{
	struct opts o;
	parse_opts(argc, argv, &o);

	struct cluster cl;
	cluster_init(&cl, &o);
	cl.leader = &cl.nodes[0];

	/* Warm-up: elect node 1 and apply its no-op. Not timed. */
	int rv = raft_campaign(cl.leader->r);
	if (rv != 0)
		die("raft_campaign: %s", raft_strerror(rv));
	cluster_run_until(&cl, leader_ready, "the election");
	const uint64_t first_index = cl.leader->applied + 1;

	uint8_t *buf = malloc((size_t)o.entry_bytes);
	if (buf == NULL)
		die("out of memory");
	for (size_t i = 0; i < (size_t)o.entry_bytes; i++)
		buf[i] = (uint8_t)(i * 31u + 7u);

	struct heap_totals core0, store0, core1, store1;
	heap_totals(&cl, true, &core0);
	heap_totals(&cl, false, &store0);
	reset_peaks(&cl);
	struct counters c0 = cl.c;

	/* Timed: rounds of one batch each until every entry is applied on the
	 * leader. */
	uint64_t seq = 0;
	uint64_t last_compact = cl.leader->applied;
	uint64_t busy = 0; /* proposals refused with RAFT_EBUSY (retried) */
	const double t0 = now_sec();
	while (seq < o.entries) {
		uint64_t want = o.entries - seq;
		if (want > o.batch)
			want = o.batch;
		uint64_t proposed = 0;
		for (; proposed < want; proposed++) {
			uint64_t index = 0;
			memcpy(buf, &seq, sizeof(seq));
			rv = raft_propose(cl.leader->r, buf, (size_t)o.entry_bytes, &index);
			if (rv == RAFT_EBUSY) {
				busy++;
				break;
			}
			if (rv != 0)
				die("raft_propose: %s", raft_strerror(rv));
			if (index == 0)
				die("raft_propose: node 1 no longer leads");
			cl.target = index;
			seq++;
		}
		if (proposed == 0)
			cl.target = cl.leader->applied + 1; /* let the log drain */
		cluster_run_until(&cl, leader_applied_target, "a batch to commit");
		if (cl.leader->state != RAFT_LEADER)
			die("node 1 lost leadership during the run");
		cl.c.rounds++;
		if (o.compact_every != 0 && cl.leader->applied - last_compact >= o.compact_every) {
			compact(&cl);
			last_compact = cl.leader->applied;
		}
	}
	const double t1 = now_sec();

	heap_totals(&cl, true, &core1);
	heap_totals(&cl, false, &store1);
	struct counters c1 = cl.c;

	/* Not timed: bring every follower up to the leader and check them all. */
	cl.target = cl.leader->applied;
	cluster_run_until(&cl, all_applied_target, "the followers to catch up");
	for (uint32_t i = 0; i < cl.n; i++) {
		const struct node *nd = &cl.nodes[i];
		if (nd->applied_normal != o.entries)
			die("node %" PRIu64 " applied %" PRIu64 " entries, expected %" PRIu64,
			    nd->id, nd->applied_normal, o.entries);
	}
	if (cl.dropped_msgs != 0)
		die("%" PRIu64 " messages were addressed to no node", cl.dropped_msgs);

	const double secs = t1 - t0;
	const double n = (double)o.entries;
	const double eps = n / secs;
	const double core_b = (double)(core1.bytes - core0.bytes) / n;
	const double core_a = (double)(core1.calls - core0.calls) / n;
	const double store_b = (double)(store1.bytes - store0.bytes) / n;
	const double store_a = (double)(store1.calls - store0.calls) / n;
	const uint64_t rounds = c1.rounds - c0.rounds;
	const uint64_t passes = c1.passes - c0.passes;
	const uint64_t msgs = c1.msgs - c0.msgs;
	const uint64_t updates = c1.updates - c0.updates;
	const uint64_t msg_entries = c1.msg_entries - c0.msg_entries;

	/* The allocation figures, or null/"not counted" with --plain-heap. */
	char alloc_json[320];
	char core_txt[160];
	char store_txt[160];
	if (o.plain_heap) {
		snprintf(alloc_json, sizeof(alloc_json),
			 ",\"core_bytes_per_entry\":null,\"core_allocs_per_entry\":null"
			 ",\"memstore_bytes_per_entry\":null,\"memstore_allocs_per_entry\":null"
			 ",\"core_peak_bytes\":null,\"memstore_peak_bytes\":null");
		snprintf(core_txt, sizeof(core_txt), "not counted (--plain-heap)");
		snprintf(store_txt, sizeof(store_txt), "not counted (--plain-heap)");
	} else {
		snprintf(alloc_json, sizeof(alloc_json),
			 ",\"core_bytes_per_entry\":%.2f,\"core_allocs_per_entry\":%.4f"
			 ",\"memstore_bytes_per_entry\":%.2f,\"memstore_allocs_per_entry\":%.4f"
			 ",\"core_peak_bytes\":%" PRIu64 ",\"memstore_peak_bytes\":%" PRIu64,
			 core_b, core_a, store_b, store_a, core1.peak, store1.peak);
		snprintf(core_txt, sizeof(core_txt),
			 "%.1f bytes, %.3f allocations per committed entry (all nodes), "
			 "peak %" PRIu64 " bytes live on a node",
			 core_b, core_a, core1.peak);
		snprintf(store_txt, sizeof(store_txt),
			 "%.1f bytes, %.3f allocations per committed entry (all nodes), "
			 "peak %" PRIu64 " bytes live on a node",
			 store_b, store_a, store1.peak);
	}

	if (o.json) {
		printf("{\"bench\":\"raft-bench\",\"nodes\":%" PRIu64 ",\"entries\":%" PRIu64
		       ",\"entry_bytes\":%" PRIu64 ",\"batch\":%" PRIu64
		       ",\"compact_every\":%" PRIu64 ",\"compact_keep\":%" PRIu64
		       ",\"seed\":%" PRIu64 ",\"plain_heap\":%s"
		       ",\"pre_vote\":true,\"check_quorum\":true"
		       ",\"seconds\":%.6f,\"entries_per_sec\":%.0f%s"
		       ",\"rounds\":%" PRIu64 ",\"passes\":%" PRIu64 ",\"updates\":%" PRIu64
		       ",\"msgs\":%" PRIu64 ",\"msg_entries\":%" PRIu64
		       ",\"proposals_busy\":%" PRIu64 ",\"compactions\":%" PRIu64
		       ",\"first_index\":%" PRIu64 "}\n",
		       o.nodes, o.entries, o.entry_bytes, o.batch, o.compact_every, o.compact_keep,
		       o.seed, o.plain_heap ? "true" : "false", secs, eps, alloc_json, rounds,
		       passes, updates, msgs, msg_entries, busy, c1.compactions - c0.compactions,
		       first_index);
	} else {
		const char *ph = o.plain_heap ? " --plain-heap" : "";
		printf("raft-bench: Raft core alone, %" PRIu64
		       " in-memory nodes on one thread (raft_memstore)\n",
		       o.nodes);
		printf("config:   nodes=%" PRIu64 " entries=%" PRIu64 " entry_bytes=%" PRIu64
		       " batch=%" PRIu64 " compact_every=%" PRIu64 " compact_keep=%" PRIu64
		       " seed=%" PRIu64 " heap=%s pre_vote=on check_quorum=on\n",
		       o.nodes, o.entries, o.entry_bytes, o.batch, o.compact_every, o.compact_keep,
		       o.seed, o.plain_heap ? "libc" : "counting");
		printf("rerun:    raft-bench --entries %" PRIu64 " --entry-bytes %" PRIu64
		       " --batch %" PRIu64 " --nodes %" PRIu64 " --compact-every %" PRIu64
		       " --compact-keep %" PRIu64 " --seed %" PRIu64 "%s\n",
		       o.entries, o.entry_bytes, o.batch, o.nodes, o.compact_every, o.compact_keep,
		       o.seed, ph);
		printf("result:   %" PRIu64 " entries committed in %.3f s: %.0f entries/s\n",
		       o.entries, secs, eps);
		printf("core:     %s\n", core_txt);
		printf("memstore: %s\n", store_txt);
		printf("work:     %" PRIu64 " rounds, %" PRIu64 " passes, %" PRIu64
		       " updates, %" PRIu64 " messages carrying %" PRIu64 " entries, %" PRIu64
		       " busy proposals, %" PRIu64 " compactions\n",
		       rounds, passes, updates, msgs, msg_entries, busy,
		       c1.compactions - c0.compactions);
		printf("checked:  every node applied all %" PRIu64 " entries once, in order\n",
		       o.entries);
	}

	free(buf);
	cluster_free(&cl);
	return 0;
}

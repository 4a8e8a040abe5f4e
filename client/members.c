/* members.c: cairn_members_follow(), node liveness as the Raft leader records it under
 * /cairn/members/. Built on libcairn's public calls only (cairn.h), like any program would:
 *
 *   1. LIST: a Range of the prefix. Every record read is compared with what is known: a new
 *      node, or one whose state, address, incarnation, name or tags changed, gets a callback;
 *      a known node absent from the list gets a removal callback.
 *   2. WATCH from the Range's revision + 1, so no change between the two is missed. Each event
 *      is compared the same way (a change of `since` alone is not a change of the node).
 *   3. When the watch's revision was compacted away (a follower left behind while
 *      disconnected), back to 1: the relist reports what changed meanwhile, removals included.
 *
 * A record that is not a member record (cairn_node_parse() refuses it, or it is larger than
 * MEMBERS_MAX_RECORD) is treated as an absent key: a node known before is reported removed.
 *
 * Bounds: MEMBERS_MAX_NODES nodes tracked (one more ends the follower with
 * CAIRN_RESOURCE_EXHAUSTED rather than silently missing nodes), records of MEMBERS_MAX_RECORD
 * bytes (the server's largest is GSTORE_JSON_MAX, 4352 bytes), MEMBERS_MAX_TAGS tags (gossip's
 * 512 bytes of metadata hold at most 256), names (the key after the prefix) of
 * MEMBERS_MAX_NAME bytes, and MEMBERS_MAX_RETRIES failed Ranges in a row (each waits for the
 * request's deadline, during which the client fails over and backs off) before the follower
 * ends with the last error. Memory: each node holds a copy of its key and record. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cairn.h"

#define MEMBERS_MAX_NODES 4096
#define MEMBERS_MAX_RECORD 8192
#define MEMBERS_MAX_TAGS 256
#define MEMBERS_MAX_NAME 1024
#define MEMBERS_MAX_PREFIX 1024
#define MEMBERS_MAX_RETRIES 12

static const char default_prefix[] = "/cairn/members/";

/* One node known: its key after the prefix and its last record (always a valid one). */
struct mnode {
	uint8_t *name;
	size_t name_len;
	uint8_t *rec;
	size_t rec_len;
	int64_t mod_revision;
	bool listed; /* seen by the relist in progress */
};

/* A record decoded: the node and the storage its strings and tags point into. */
struct decoded {
	struct cairn_node node;
	struct cairn_tag tags[MEMBERS_MAX_TAGS];
	char scratch[MEMBERS_MAX_RECORD + 1];
};

struct cairn_members {
	struct cairn_client *c;
	uint8_t prefix[MEMBERS_MAX_PREFIX];
	size_t prefix_len;
	uint8_t end[MEMBERS_MAX_PREFIX];
	size_t end_len;
	cairn_members_cb cb;
	void *data;

	struct mnode *nodes; /* sorted by name (memcmp, then length) */
	size_t n_nodes, cap_nodes;

	struct cairn_watch *watch; /* while watching; otherwise a Range is in flight */
	unsigned failures;         /* Ranges failed in a row */

	bool stopping; /* cairn_members_stop(), or an error: the final callback is due */
	int end_code;  /* the final callback's status when it was not a stop */
	char end_msg[96];

	struct decoded now, before; /* the record at hand and the one known before */
};

static const struct cairn_status status_ok = { 0, "", false, "" };

/* ---- the table of nodes ---- */

static int name_cmp(const struct mnode *n, const uint8_t *name, size_t len)
{
	size_t k = n->name_len < len ? n->name_len : len;
	int c = memcmp(n->name, name, k);
	if (c != 0)
		return c;
	return n->name_len < len ? -1 : n->name_len > len ? 1 : 0;
}

/* The index of name, or where it would go (*found false). */
static size_t node_find(const struct cairn_members *m, const uint8_t *name, size_t len, bool *found)
{
	size_t lo = 0, hi = m->n_nodes;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = name_cmp(&m->nodes[mid], name, len);
		if (c == 0) {
			*found = true;
			return mid;
		}
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	*found = false;
	return lo;
}

static void node_remove(struct cairn_members *m, size_t i)
{
	free(m->nodes[i].name);
	free(m->nodes[i].rec);
	memmove(&m->nodes[i], &m->nodes[i + 1], (m->n_nodes - i - 1) * sizeof m->nodes[0]);
	m->n_nodes--;
}

/* Ends the follower with this status once the current callback chain unwinds. */
static void fail(struct cairn_members *m, int code, const char *msg)
{
	if (m->stopping)
		return;
	m->stopping = true;
	m->end_code = code;
	snprintf(m->end_msg, sizeof m->end_msg, "%s", msg);
	if (m->watch != NULL)
		cairn_watch_cancel(m->watch);
}

static bool decode(const uint8_t *rec, size_t len, struct decoded *d)
{
	return len <= MEMBERS_MAX_RECORD &&
	       cairn_node_parse(rec, len, &d->node, d->tags, MEMBERS_MAX_TAGS, d->scratch,
				sizeof d->scratch) == 0;
}

static bool same_str(const char *a, const char *b)
{
	return strcmp(a, b) == 0;
}

/* Whether two records say the same of a node (since aside). */
static bool same_node(const struct cairn_node *a, const struct cairn_node *b)
{
	if (a->state != b->state || a->incarnation != b->incarnation ||
	    !same_str(a->name, b->name) || !same_str(a->address, b->address) ||
	    a->n_tags != b->n_tags)
		return false;
	for (size_t i = 0; i < a->n_tags; i++)
		if (!same_str(a->tags[i].name, b->tags[i].name) ||
		    !same_str(a->tags[i].value, b->tags[i].value))
			return false;
	return true;
}

static void deliver(struct cairn_members *m, struct cairn_node *node)
{
	m->cb(m->data, m, node, &status_ok, false);
}

/* Node i is gone (deleted, no longer a record, or absent from a relist) at revision rev. */
static void node_gone(struct cairn_members *m, size_t i, int64_t rev)
{
	bool ok = decode(m->nodes[i].rec, m->nodes[i].rec_len, &m->before);
	node_remove(m, i);
	if (!ok)
		return; /* cannot happen: only valid records are kept */
	m->before.node.removed = true;
	m->before.node.mod_revision = rev;
	deliver(m, &m->before.node);
}

/* The key name (after the prefix) holds rec at mod_rev: updates the table, and calls back
 * when the node is new or changed. */
static void node_put(struct cairn_members *m, const uint8_t *name, size_t name_len,
		     const uint8_t *rec, size_t rec_len, int64_t mod_rev)
{
	bool found;
	size_t i = node_find(m, name, name_len, &found);
	if (name_len > MEMBERS_MAX_NAME || !decode(rec, rec_len, &m->now)) {
		if (found)
			node_gone(m, i, mod_rev);
		return;
	}
	uint8_t *copy = malloc(rec_len > 0 ? rec_len : 1);
	if (copy == NULL) {
		fail(m, CAIRN_RESOURCE_EXHAUSTED, "cairn: members: out of memory");
		return;
	}
	memcpy(copy, rec, rec_len);
	m->now.node.mod_revision = mod_rev;
	if (found) {
		struct mnode *n = &m->nodes[i];
		bool changed = !decode(n->rec, n->rec_len, &m->before) ||
			       !same_node(&m->before.node, &m->now.node);
		free(n->rec);
		n->rec = copy;
		n->rec_len = rec_len;
		n->mod_revision = mod_rev;
		n->listed = true;
		if (changed)
			deliver(m, &m->now.node);
		return;
	}
	if (m->n_nodes == MEMBERS_MAX_NODES) {
		free(copy);
		fail(m, CAIRN_RESOURCE_EXHAUSTED,
		     "cairn: members: more nodes than the follower tracks");
		return;
	}
	if (m->n_nodes == m->cap_nodes) {
		size_t cap = m->cap_nodes == 0 ? 16 : 2 * m->cap_nodes;
		if (cap > MEMBERS_MAX_NODES)
			cap = MEMBERS_MAX_NODES;
		struct mnode *nodes = realloc(m->nodes, cap * sizeof *nodes);
		if (nodes == NULL) {
			free(copy);
			fail(m, CAIRN_RESOURCE_EXHAUSTED, "cairn: members: out of memory");
			return;
		}
		m->nodes = nodes;
		m->cap_nodes = cap;
	}
	uint8_t *nm = malloc(name_len > 0 ? name_len : 1);
	if (nm == NULL) {
		free(copy);
		fail(m, CAIRN_RESOURCE_EXHAUSTED, "cairn: members: out of memory");
		return;
	}
	memcpy(nm, name, name_len);
	memmove(&m->nodes[i + 1], &m->nodes[i], (m->n_nodes - i) * sizeof m->nodes[0]);
	m->nodes[i] = (struct mnode){ .name = nm,
				      .name_len = name_len,
				      .rec = copy,
				      .rec_len = rec_len,
				      .mod_revision = mod_rev,
				      .listed = true };
	m->n_nodes++;
	deliver(m, &m->now.node);
}

/* ---- the follower's life ---- */

static void finish(struct cairn_members *m, const struct cairn_status *st)
{
	struct cairn_status s;
	if (m->end_code != 0) {
		s = (struct cairn_status){ m->end_code, m->end_msg, false, "" };
		st = &s;
	}
	m->cb(m->data, m, NULL, st, true);
	for (size_t i = 0; i < m->n_nodes; i++) {
		free(m->nodes[i].name);
		free(m->nodes[i].rec);
	}
	free(m->nodes);
	free(m);
}

static const struct cairn_status status_cancelled = { CAIRN_CANCELLED, "cancelled", false, "" };

/* A call that could not start: the follower ends (from the callback that tried). */
static void finish_err(struct cairn_members *m, int err)
{
	struct cairn_status s = { err == CAIRN_ECLOSED ? CAIRN_CANCELLED : CAIRN_UNKNOWN,
				  cairn_strerror(err), false, "" };
	finish(m, &s);
}

static void on_range(void *data, const struct cairn_status *st,
		     const struct cairn_range_result *res);
static void on_watch(void *data, struct cairn_watch *w, const struct cairn_watch_batch *batch);

static int list(struct cairn_members *m)
{
	struct cairn_range_opts o;
	memset(&o, 0, sizeof o);
	o.range_end = m->end;
	o.range_end_len = m->end_len;
	return cairn_range(m->c, m->prefix, m->prefix_len, &o, on_range, m);
}

static void on_range(void *data, const struct cairn_status *st,
		     const struct cairn_range_result *res)
{
	struct cairn_members *m = data;
	if (m->stopping) {
		finish(m, &status_cancelled);
		return;
	}
	if (st->code != 0) {
		bool transient =
			st->code == CAIRN_UNAVAILABLE || st->code == CAIRN_DEADLINE_EXCEEDED;
		int rc;
		if (!transient || ++m->failures >= MEMBERS_MAX_RETRIES) {
			finish(m, st);
		} else if ((rc = list(m)) != 0) {
			finish_err(m, rc);
		}
		return;
	}
	m->failures = 0;
	for (size_t i = 0; i < m->n_nodes; i++)
		m->nodes[i].listed = false;
	for (size_t k = 0; k < res->n_kvs && !m->stopping; k++) {
		const struct cairn_kv *kv = &res->kvs[k];
		if (kv->key_len < m->prefix_len)
			continue;
		node_put(m, kv->key + m->prefix_len, kv->key_len - m->prefix_len, kv->value,
			 kv->value_len, kv->mod_revision);
	}
	/* what the list no longer holds went away while nobody watched */
	for (size_t i = 0; i < m->n_nodes && !m->stopping;) {
		if (m->nodes[i].listed)
			i++;
		else
			node_gone(m, i, res->header.revision);
	}
	if (m->stopping) {
		finish(m, &status_cancelled);
		return;
	}
	struct cairn_watch_opts o;
	memset(&o, 0, sizeof o);
	o.range_end = m->end;
	o.range_end_len = m->end_len;
	o.start_revision = res->header.revision + 1;
	int rc = cairn_watch(m->c, m->prefix, m->prefix_len, &o, on_watch, m, &m->watch);
	if (rc != 0) {
		m->watch = NULL;
		finish_err(m, rc);
	}
}

static void on_watch(void *data, struct cairn_watch *w, const struct cairn_watch_batch *batch)
{
	struct cairn_members *m = data;
	(void)w;
	if (batch->canceled) {
		m->watch = NULL;
		if (m->stopping) {
			finish(m, &status_cancelled);
		} else if (batch->compact_revision > 0) {
			/* left behind a compaction: read the prefix again */
			int rc = list(m);
			if (rc != 0)
				finish_err(m, rc);
		} else if (batch->status.code == 0) {
			struct cairn_status s = batch->status;
			s.code = CAIRN_CANCELLED;
			s.message = "watch ended";
			finish(m, &s);
		} else {
			finish(m, &batch->status);
		}
		return;
	}
	for (size_t k = 0; k < batch->n_events && !m->stopping; k++) {
		const struct cairn_event *ev = &batch->events[k];
		const struct cairn_kv *kv = &ev->kv;
		if (kv->key_len < m->prefix_len || memcmp(kv->key, m->prefix, m->prefix_len) != 0)
			continue;
		const uint8_t *name = kv->key + m->prefix_len;
		size_t name_len = kv->key_len - m->prefix_len;
		if (ev->type == CAIRN_EVENT_DELETE) {
			bool found;
			size_t i = node_find(m, name, name_len, &found);
			if (found)
				node_gone(m, i, kv->mod_revision);
		} else {
			node_put(m, name, name_len, kv->value, kv->value_len, kv->mod_revision);
		}
	}
}

int cairn_members_follow(struct cairn_client *c, const char *prefix, cairn_members_cb cb,
			 void *data, struct cairn_members **out)
{
	if (c == NULL || cb == NULL)
		return CAIRN_EINVAL;
	if (prefix == NULL)
		prefix = default_prefix;
	size_t plen = strlen(prefix);
	if (plen == 0 || plen > MEMBERS_MAX_PREFIX)
		return CAIRN_EINVAL;
	struct cairn_members *m = calloc(1, sizeof *m);
	if (m == NULL)
		return CAIRN_ENOMEM;
	m->c = c;
	m->cb = cb;
	m->data = data;
	memcpy(m->prefix, prefix, plen);
	m->prefix_len = plen;
	m->end_len = cairn_prefix_end(m->prefix, plen, m->end);
	int rc = list(m);
	if (rc != 0) {
		free(m);
		return rc;
	}
	if (out != NULL)
		*out = m;
	return 0;
}

void cairn_members_stop(struct cairn_members *m)
{
	if (m == NULL || m->stopping)
		return;
	m->stopping = true;
	/* the final callback follows from the watch's (or the Range's) own final callback, or
	 * from the callback that is running now, once it returns */
	if (m->watch != NULL)
		cairn_watch_cancel(m->watch);
}

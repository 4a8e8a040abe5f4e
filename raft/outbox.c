/* outbox.c: what the next update hands out. Messages produced by events are
 * queued here; their entries and data live in the outbox's arena until the
 * caller advances the update that carried them. */
#include "raft_int.h"

#include <string.h>

void raft__outbox_init(struct raft__outbox *o, const struct raft_heap *h)
{
	memset(o, 0, sizeof(*o));
	raft__arena_init(&o->arena, h);
}

void raft__outbox_close(struct raft__outbox *o, const struct raft_heap *h)
{
	raft__arena_close(&o->arena);
	raft__free(h, o->msgs);
	raft__free(h, o->after);
	raft__free(h, o->chunks);
	raft__free(h, o->reads);
	raft__free(h, o->ccs);
	raft__free(h, o->cc_index);
	memset(o, 0, sizeof(*o));
}

void raft__outbox_reset(struct raft__outbox *o)
{
	raft__arena_reset(&o->arena);
	o->n_msgs = 0;
	o->n_after = 0;
	o->n_chunks = 0;
	o->chunk_bytes = 0;
	o->n_reads = 0;
	o->n_ccs = 0;
	o->has_snapshot = false;
	o->persist_index = 0;
	o->persist_term = 0;
	o->apply_to = 0;
	o->snapshot_handed = 0;
}

bool raft__outbox_empty(const struct raft__outbox *o)
{
	return o->n_msgs == 0 && o->n_after == 0 && o->n_chunks == 0 && o->n_reads == 0 &&
	       !o->has_snapshot;
}

bool raft__after_persist(uint32_t type)
{
	switch (type) {
	case RAFT_MSG_APPEND_RESP:   /* acknowledges entries: they must be durable */
	case RAFT_MSG_VOTE:          /* the candidate's term and self-vote first */
	case RAFT_MSG_VOTE_RESP:     /* the vote must be durable before it counts */
	case RAFT_MSG_PREVOTE_RESP:  /* ordered with the votes for simplicity */
	case RAFT_MSG_SNAPSHOT_RESP: /* acknowledges staged chunks */
		return true;
	default:
		return false;
	}
}

static int copy_payload(struct raft__arena *a, struct raft_msg *m)
{
	if (m->n_entries > 0) {
		struct raft_entry *ents = raft__arena_alloc(a, sizeof(*ents) * m->n_entries);
		if (ents == NULL) {
			return RAFT_ENOMEM;
		}
		for (uint32_t i = 0; i < m->n_entries; i++) {
			ents[i] = m->entries[i];
			if (ents[i].len > 0) {
				uint8_t *d = raft__arena_alloc(a, ents[i].len);
				if (d == NULL) {
					return RAFT_ENOMEM;
				}
				memcpy(d, ents[i].data, ents[i].len);
				ents[i].data = d;
			} else {
				ents[i].data = NULL;
			}
		}
		m->entries = ents;
	} else {
		m->entries = NULL;
	}
	if (m->len > 0) {
		uint8_t *d = raft__arena_alloc(a, m->len);
		if (d == NULL) {
			return RAFT_ENOMEM;
		}
		memcpy(d, m->data, m->len);
		m->data = d;
	} else {
		m->data = NULL;
	}
	return 0;
}

void raft__send(struct raft *r, const struct raft_msg *m, bool copy)
{
	struct raft__outbox *o = &r->box[r->cur];
	struct raft_msg c = *m;
	c.from = r->id;
	RAFT_ASSERT(c.to != 0 && c.to != r->id);
	if (o->n_msgs >= RAFT__MAX_OUTBOX_MSGS || o->n_after >= RAFT__MAX_OUTBOX_MSGS) {
		return;
	}
	if (copy && copy_payload(&o->arena, &c) != 0) {
		return;
	}
	if (raft__after_persist(c.type)) {
		if (raft__grow(r->heap, (void **)&o->after, &o->cap_after, o->n_after + 1,
			       sizeof(*o->after)) != 0) {
			return;
		}
		o->after[o->n_after++] = c;
	} else {
		if (raft__grow(r->heap, (void **)&o->msgs, &o->cap_msgs, o->n_msgs + 1,
			       sizeof(*o->msgs)) != 0) {
			return;
		}
		o->msgs[o->n_msgs++] = c;
	}
}

int raft__read_out(struct raft *r, uint64_t id, uint64_t index, int status)
{
	struct raft__outbox *o = &r->box[r->cur];
	int rv = raft__grow(r->heap, (void **)&o->reads, &o->cap_reads, o->n_reads + 1,
			    sizeof(*o->reads));
	if (rv != 0) {
		return rv;
	}
	o->reads[o->n_reads].id = id;
	o->reads[o->n_reads].index = index;
	o->reads[o->n_reads].status = status;
	o->n_reads++;
	return 0;
}

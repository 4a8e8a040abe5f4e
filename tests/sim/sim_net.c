/* sim_net.c: the simulated network between the nodes of one seed.
 *
 * A sent message is deep-copied at once (raft_update memory is only valid
 * until raft_advance) and scheduled for delivery after a random delay, so
 * messages overtake each other whenever their delays cross. A message may
 * be lost or delivered twice (the duplicate has its own delay). Partitions
 * are a [from][to] matrix, looked at both when a message is sent and when
 * it arrives: a partition that starts while a message is in flight cuts it,
 * as a broken connection would. One-way entries give asymmetric partitions.
 * In the quiet phase there is no loss, duplication nor long delay.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "sim.h"

const char *sim_msg_name(uint32_t type)
{
	static const char *const names[RAFT_MSG_TYPE_MAX + 1] = {
		"?",
		"APPEND",
		"APPEND_RESP",
		"VOTE",
		"VOTE_RESP",
		"PREVOTE",
		"PREVOTE_RESP",
		"HEARTBEAT",
		"HEARTBEAT_RESP",
		"SNAPSHOT",
		"SNAPSHOT_RESP",
		"PROPOSE",
		"READ_INDEX",
		"READ_INDEX_RESP",
		"TIMEOUT_NOW",
		"TRANSFER",
	};
	return type <= RAFT_MSG_TYPE_MAX ? names[type] : "?";
}

int sim_msg_describe(const struct raft_msg *m, char *buf, size_t cap)
{
	unsigned long long t = m->term;
	int n = snprintf(buf, cap, "%s n%" PRIu64 "->n%" PRIu64 " term %llu", sim_msg_name(m->type),
			 m->from, m->to, t);
	if (n < 0 || (size_t)n >= cap)
		return n;
	char *p = buf + n;
	size_t left = cap - (size_t)n;
	int k = 0;
	switch (m->type) {
	case RAFT_MSG_APPEND:
		if (m->n_entries > 0)
			k = snprintf(p, left,
				     " prev %" PRIu64 "/%" PRIu64 " entries [%" PRIu64 "..%" PRIu64
				     "] commit %" PRIu64,
				     m->index, m->log_term, m->entries[0].index,
				     m->entries[m->n_entries - 1].index, m->commit);
		else
			k = snprintf(p, left, " prev %" PRIu64 "/%" PRIu64 " no entries commit %" PRIu64,
				     m->index, m->log_term, m->commit);
		break;
	case RAFT_MSG_APPEND_RESP:
		k = snprintf(p, left, " %s index %" PRIu64 " hint %" PRIu64 "/%" PRIu64,
			     m->reject ? "REJECT" : "ok", m->index, m->hint_index, m->hint_term);
		break;
	case RAFT_MSG_VOTE:
	case RAFT_MSG_PREVOTE:
		k = snprintf(p, left, " last %" PRIu64 "/%" PRIu64 "%s", m->index, m->log_term,
			     m->context ? " (transfer)" : "");
		break;
	case RAFT_MSG_VOTE_RESP:
	case RAFT_MSG_PREVOTE_RESP:
		k = snprintf(p, left, " %s", m->reject ? "refused" : "granted");
		break;
	case RAFT_MSG_HEARTBEAT:
		k = snprintf(p, left, " commit %" PRIu64 " seq %" PRIu64, m->commit, m->context);
		break;
	case RAFT_MSG_HEARTBEAT_RESP:
		k = snprintf(p, left, " seq %" PRIu64 "%s", m->context, m->reject ? " REJECT" : "");
		break;
	case RAFT_MSG_SNAPSHOT:
		k = snprintf(p, left, " snap %" PRIu64 "/%" PRIu64 " size %" PRIu64 " offset %" PRIu64
			     " len %u%s",
			     m->snap.index, m->snap.term, m->snap.size, m->index, m->len,
			     m->last ? " last" : "");
		break;
	case RAFT_MSG_SNAPSHOT_RESP:
		k = snprintf(p, left, " %s next %" PRIu64, m->reject ? "REJECT" : "ok", m->index);
		break;
	case RAFT_MSG_PROPOSE:
		k = snprintf(p, left, " %u entries", m->n_entries);
		break;
	case RAFT_MSG_READ_INDEX:
		k = snprintf(p, left, " read #%" PRIu64, m->context);
		break;
	case RAFT_MSG_READ_INDEX_RESP:
		k = snprintf(p, left, " read #%" PRIu64 " index %" PRIu64 "%s", m->context, m->index,
			     m->reject ? " REJECT" : "");
		break;
	default:
		break;
	}
	if (k < 0)
		return k;
	return n + k;
}

/* One block: the struct, then the entries, then every byte they and the
 * message point to. */
static struct sim_msg *msg_copy(struct sim *s, const struct raft_msg *m)
{
	size_t bytes = m->len;
	for (uint32_t i = 0; i < m->n_entries; i++)
		bytes += m->entries[i].len;
	size_t size = sizeof(struct sim_msg) + (size_t)m->n_entries * sizeof(struct raft_entry) + bytes;
	struct sim_msg *c = malloc(size);
	if (c == NULL)
		return NULL;
	c->m = *m;
	c->id = ++s->next_msg_id;
	struct raft_entry *ents = (struct raft_entry *)(void *)(c + 1);
	uint8_t *p = (uint8_t *)(ents + m->n_entries);
	for (uint32_t i = 0; i < m->n_entries; i++) {
		ents[i] = m->entries[i];
		ents[i].data = NULL;
		if (m->entries[i].len > 0) {
			memcpy(p, m->entries[i].data, m->entries[i].len);
			ents[i].data = p;
			p += m->entries[i].len;
		}
	}
	c->m.entries = m->n_entries > 0 ? ents : NULL;
	c->m.data = NULL;
	if (m->len > 0) {
		memcpy(p, m->data, m->len);
		c->m.data = p;
	}
	return c;
}

static uint64_t delay(struct sim *s)
{
	if (!s->quiet && sim_rng_pm(&s->net_rng, s->p.long_pm))
		return sim_rng_range(&s->net_rng, s->p.delay_max, s->p.long_max);
	return sim_rng_range(&s->net_rng, s->p.delay_min, s->p.delay_max);
}

void sim_net_send(struct sim *s, struct sim_node *from, const struct raft_msg *m)
{
	s->st.msgs_sent++;
	if (m->from != from->id) {
		sim_fail(s, "n%" PRIu64 " sent a %s with from = %" PRIu64, from->id,
			 sim_msg_name(m->type), m->from);
		return;
	}
	if (m->to == from->id || m->to == 0 || m->to > s->n_slots || m->type == 0 ||
	    m->type > RAFT_MSG_TYPE_MAX) {
		sim_fail(s, "n%" PRIu64 " sent a %s to n%" PRIu64 " (no such peer)", from->id,
			 sim_msg_name(m->type), m->to);
		return;
	}
	uint32_t fs = (uint32_t)(from->id - 1);
	uint32_t ts = (uint32_t)(m->to - 1);
	char d[256];
	if (s->blocked[fs][ts]) {
		s->st.msgs_dropped++;
		if (sim_tracing(s)) {
			sim_msg_describe(m, d, sizeof(d));
			sim_trace(s, "  send %s: cut by the partition", d);
		}
		/* A transport learns of a broken connection now and then. */
		if (sim_rng_pm(&s->net_rng, 100))
			raft_report_unreachable(from->r, m->to);
		return;
	}
	if (!s->quiet && sim_rng_pm(&s->net_rng, s->p.loss_pm)) {
		s->st.msgs_dropped++;
		if (sim_tracing(s)) {
			sim_msg_describe(m, d, sizeof(d));
			sim_trace(s, "  send %s: lost", d);
		}
		return;
	}
	int copies = 1;
	if (!s->quiet && sim_rng_pm(&s->net_rng, s->p.dup_pm)) {
		copies = 2;
		s->st.msgs_duplicated++;
	}
	for (int i = 0; i < copies; i++) {
		struct sim_msg *c = msg_copy(s, m);
		if (c == NULL) {
			sim_fail(s, "simulator out of memory copying a message");
			return;
		}
		uint64_t dl = delay(s);
		if (sim_tracing(s)) {
			sim_msg_describe(m, d, sizeof(d));
			sim_trace(s, "  send %s (msg %" PRIu64 ", arrives in %" PRIu64 " ms%s)", d, c->id,
				  dl, i ? ", duplicate" : "");
		}
		sim_schedule(s, dl, SIM_EV_DELIVER, ts, 0, c);
	}
}

void sim_net_deliver(struct sim *s, struct sim_msg *sm)
{
	uint32_t fs = (uint32_t)(sm->m.from - 1);
	uint32_t ts = (uint32_t)(sm->m.to - 1);
	struct sim_node *n = &s->nodes[ts];
	char d[256];
	if (sim_tracing(s))
		sim_msg_describe(&sm->m, d, sizeof(d));
	if (!n->used || !n->up) {
		s->st.msgs_dropped++;
		if (sim_tracing(s))
			sim_trace(s, "deliver msg %" PRIu64 " %s: n%" PRIu64 " is down", sm->id, d, n->id);
		free(sm);
		return;
	}
	if (s->blocked[fs][ts]) {
		s->st.msgs_dropped++;
		if (sim_tracing(s))
			sim_trace(s, "deliver msg %" PRIu64 " %s: cut by the partition", sm->id, d);
		free(sm);
		return;
	}
	s->st.msgs_delivered++;
	if (sim_tracing(s))
		sim_trace(s, "deliver msg %" PRIu64 " %s", sm->id, d);
	int rc = raft_step(n->r, &sm->m);
	uint32_t type = sm->m.type;
	free(sm);
	if (rc < 0) {
		sim_fail(s, "n%" PRIu64 ": raft_step(%s) failed: %s", n->id, sim_msg_name(type),
			 raft_strerror(rc));
		return;
	}
	sim_node_pump(s, n);
	sim_node_observe(s, n);
}

void sim_net_heal(struct sim *s)
{
	memset(s->blocked, 0, sizeof(s->blocked));
}

void sim_net_split(struct sim *s, const bool *in_a)
{
	sim_net_heal(s);
	for (uint32_t a = 0; a < s->n_slots; a++)
		for (uint32_t b = 0; b < s->n_slots; b++)
			if (in_a[a] != in_a[b])
				s->blocked[a][b] = true;
}

void sim_net_block(struct sim *s, uint32_t from, uint32_t to)
{
	s->blocked[from][to] = true;
}

/* render.c: text forms of messages, entries and states, shared by the
 * harness trace and the transcript runner, so expected outputs stay stable. */
#include "harness.h"

#include <ctype.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void h_buf_printf(struct h_buf *b, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	va_list ap2;
	va_copy(ap2, ap);
	int n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	H_CHECK(n >= 0, "vsnprintf failed");
	size_t need = b->len + (size_t)n + 1;
	if (need > b->cap) {
		size_t cap = b->cap ? b->cap : 256;
		while (cap < need)
			cap *= 2;
		char *s = realloc(b->s, cap);
		H_CHECK(s != NULL, "out of memory");
		b->s = s;
		b->cap = cap;
	}
	vsnprintf(b->s + b->len, (size_t)n + 1, fmt, ap2);
	va_end(ap2);
	b->len += (size_t)n;
}

void h_buf_reset(struct h_buf *b)
{
	b->len = 0;
	if (b->s)
		b->s[0] = '\0';
}

void h_buf_free(struct h_buf *b)
{
	free(b->s);
	memset(b, 0, sizeof *b);
}

const char *h_buf_str(const struct h_buf *b)
{
	return b->s ? b->s : "";
}

static const char *const msg_names[RAFT_MSG_TYPE_MAX + 1] = {
	[RAFT_MSG_APPEND] = "APPEND",
	[RAFT_MSG_APPEND_RESP] = "APPEND_RESP",
	[RAFT_MSG_VOTE] = "VOTE",
	[RAFT_MSG_VOTE_RESP] = "VOTE_RESP",
	[RAFT_MSG_PREVOTE] = "PREVOTE",
	[RAFT_MSG_PREVOTE_RESP] = "PREVOTE_RESP",
	[RAFT_MSG_HEARTBEAT] = "HEARTBEAT",
	[RAFT_MSG_HEARTBEAT_RESP] = "HEARTBEAT_RESP",
	[RAFT_MSG_SNAPSHOT] = "SNAPSHOT",
	[RAFT_MSG_SNAPSHOT_RESP] = "SNAPSHOT_RESP",
	[RAFT_MSG_PROPOSE] = "PROPOSE",
	[RAFT_MSG_READ_INDEX] = "READ_INDEX",
	[RAFT_MSG_READ_INDEX_RESP] = "READ_INDEX_RESP",
	[RAFT_MSG_TIMEOUT_NOW] = "TIMEOUT_NOW",
	[RAFT_MSG_TRANSFER] = "TRANSFER",
};

const char *h_msg_type_name(uint32_t type)
{
	if (type <= RAFT_MSG_TYPE_MAX && msg_names[type])
		return msg_names[type];
	return "UNKNOWN";
}

uint32_t h_msg_type_parse(const char *name)
{
	for (uint32_t t = 1; t <= RAFT_MSG_TYPE_MAX; t++)
		if (strcmp(msg_names[t], name) == 0)
			return t;
	return 0;
}

const char *h_state_name(uint32_t state)
{
	switch (state) {
	case RAFT_FOLLOWER:
		return "FOLLOWER";
	case RAFT_PRE_CANDIDATE:
		return "PRE_CANDIDATE";
	case RAFT_CANDIDATE:
		return "CANDIDATE";
	case RAFT_LEADER:
		return "LEADER";
	default:
		return "?";
	}
}

const char *h_progress_name(uint32_t state)
{
	switch (state) {
	case RAFT_PROGRESS_PROBE:
		return "PROBE";
	case RAFT_PROGRESS_REPLICATE:
		return "REPLICATE";
	case RAFT_PROGRESS_SNAPSHOT:
		return "SNAPSHOT";
	default:
		return "?";
	}
}

const char *h_errname(int err)
{
	switch (err) {
	case 0:
		return "0";
#define H__ERRNAME(name, num, msg)                                               \
	case RAFT_E##name:                                                       \
		return "RAFT_E" #name;
		RAFT_ERRNO_MAP(H__ERRNAME)
#undef H__ERRNAME
	default:
		return "RAFT_E?";
	}
}

static void render_bytes(struct h_buf *b, const uint8_t *d, uint32_t len)
{
	bool printable = true;
	for (uint32_t i = 0; i < len; i++)
		if (!isprint(d[i]) || d[i] == '"' || d[i] == '\\')
			printable = false;
	if (len > 40) {
		h_buf_printf(b, "<%" PRIu32 " bytes>", len);
	} else if (printable) {
		h_buf_printf(b, "\"%.*s\"", (int)len, (const char *)d);
	} else {
		h_buf_printf(b, "0x");
		for (uint32_t i = 0; i < len; i++)
			h_buf_printf(b, "%02x", d[i]);
	}
}

static const char *cc_name(uint32_t type)
{
	switch (type) {
	case RAFT_CC_ADD_VOTER:
		return "add-voter";
	case RAFT_CC_ADD_LEARNER:
		return "add-learner";
	case RAFT_CC_REMOVE:
		return "remove";
	default:
		return "cc?";
	}
}

void h_render_entry(struct h_buf *b, const struct raft_entry *e)
{
	h_buf_printf(b, "%" PRIu64 "/%" PRIu64, e->term, e->index);
	switch (e->type) {
	case RAFT_ENTRY_NORMAL:
		h_buf_printf(b, " ");
		render_bytes(b, e->data, e->len);
		break;
	case RAFT_ENTRY_NOOP:
		h_buf_printf(b, " NOOP");
		if (e->len)
			h_buf_printf(b, " len=%" PRIu32, e->len);
		break;
	case RAFT_ENTRY_CONF_CHANGE: {
		struct raft_conf_change cc;
		if (raft_conf_change_decode(e->data, e->len, &cc) == 0)
			h_buf_printf(b, " CONF %s %" PRIu64, cc_name(cc.type), cc.id);
		else
			h_buf_printf(b, " CONF <undecodable len=%" PRIu32 ">", e->len);
		break;
	}
	default:
		h_buf_printf(b, " type=%" PRIu32 " len=%" PRIu32, e->type, e->len);
	}
}

void h_render_entries(struct h_buf *b, const struct raft_entry *e, uint32_t n)
{
	h_buf_printf(b, "[");
	for (uint32_t i = 0; i < n; i++) {
		if (i)
			h_buf_printf(b, ", ");
		h_render_entry(b, &e[i]);
	}
	h_buf_printf(b, "]");
}

static void render_ids(struct h_buf *b, const struct raft_conf *c, uint32_t role)
{
	h_buf_printf(b, "(");
	bool first = true;
	/* Sorted by id, so the text does not depend on insertion order. */
	uint64_t last = 0;
	for (;;) {
		uint64_t next = UINT64_MAX;
		for (uint32_t i = 0; i < c->n && i < RAFT_MAX_MEMBERS; i++)
			if (c->members[i].role == role && c->members[i].id > last &&
			    c->members[i].id < next)
				next = c->members[i].id;
		if (next == UINT64_MAX)
			break;
		h_buf_printf(b, "%s%" PRIu64, first ? "" : ",", next);
		first = false;
		last = next;
	}
	h_buf_printf(b, ")");
}

void h_render_conf(struct h_buf *b, const struct raft_conf *c)
{
	h_buf_printf(b, "voters=");
	render_ids(b, c, RAFT_VOTER);
	h_buf_printf(b, " learners=");
	render_ids(b, c, RAFT_LEARNER);
}

/* Fields always shown for a type; any other non-zero field is shown too, so
 * an unexpected field never goes unnoticed in a transcript. */
enum {
	F_LOG_TERM = 1 << 0,
	F_INDEX = 1 << 1,
	F_COMMIT = 1 << 2,
	F_CONTEXT = 1 << 3,
	F_ENTRIES = 1 << 4,
};

void h_render_msg(struct h_buf *b, const struct raft_msg *m)
{
	unsigned always = 0;
	switch (m->type) {
	case RAFT_MSG_APPEND:
		always = F_LOG_TERM | F_INDEX | F_COMMIT | F_ENTRIES;
		break;
	case RAFT_MSG_APPEND_RESP:
		always = F_INDEX;
		break;
	case RAFT_MSG_VOTE:
	case RAFT_MSG_PREVOTE:
		always = F_LOG_TERM | F_INDEX;
		break;
	case RAFT_MSG_HEARTBEAT:
		always = F_COMMIT;
		break;
	case RAFT_MSG_SNAPSHOT_RESP:
		always = F_INDEX;
		break;
	case RAFT_MSG_READ_INDEX:
		always = F_CONTEXT;
		break;
	case RAFT_MSG_READ_INDEX_RESP:
		always = F_CONTEXT | F_INDEX;
		break;
	default:
		break;
	}
	h_buf_printf(b, "%" PRIu64 "->%" PRIu64 " %s term=%" PRIu64, m->from, m->to,
		     h_msg_type_name(m->type), m->term);
	if ((always & F_LOG_TERM) || m->log_term)
		h_buf_printf(b, " log_term=%" PRIu64, m->log_term);
	if ((always & F_INDEX) || m->index)
		h_buf_printf(b, " index=%" PRIu64, m->index);
	if ((always & F_COMMIT) || m->commit)
		h_buf_printf(b, " commit=%" PRIu64, m->commit);
	if ((always & F_CONTEXT) || m->context)
		h_buf_printf(b, " context=%" PRIu64, m->context);
	if (m->reject)
		h_buf_printf(b, " reject");
	if (m->hint_index || m->hint_term)
		h_buf_printf(b, " hint=%" PRIu64 "/%" PRIu64, m->hint_term, m->hint_index);
	if ((always & F_ENTRIES) || m->n_entries) {
		h_buf_printf(b, " entries=");
		h_render_entries(b, m->entries, m->entries ? m->n_entries : 0);
	}
	if (m->type == RAFT_MSG_SNAPSHOT || m->snap.index || m->snap.term) {
		h_buf_printf(b,
			     " snap=(index=%" PRIu64 " term=%" PRIu64 " size=%" PRIu64 " ",
			     m->snap.index, m->snap.term, m->snap.size);
		h_render_conf(b, &m->snap.conf);
		h_buf_printf(b, ")");
	}
	if (m->len || m->type == RAFT_MSG_SNAPSHOT) {
		h_buf_printf(b, " data=");
		render_bytes(b, m->data, m->data ? m->len : 0);
	}
	if (m->last)
		h_buf_printf(b, " last");
}

void h_render_status(struct h_buf *b, const struct raft *r)
{
	struct raft_status st;
	raft_status(r, &st);
	h_buf_printf(b,
		     "%" PRIu64 ": %s term=%" PRIu64 " vote=%" PRIu64 " leader=%" PRIu64
		     " commit=%" PRIu64 " applied=%" PRIu64 " log=[%" PRIu64 ",%" PRIu64 "]",
		     st.id, h_state_name(st.state), st.term, st.vote, st.leader, st.commit,
		     st.applied, st.first_index, st.last_index);
	if (st.transferee)
		h_buf_printf(b, " transferee=%" PRIu64, st.transferee);
	h_buf_printf(b, " ");
	h_render_conf(b, &st.conf);
}

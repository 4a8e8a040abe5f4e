/* raftwire.c: struct raft_msg to and from protobuf cairn.raftpb.Message (raftwire.h).
 *
 * Depends on raft/raft.h, the generated raft.pb-c.h and libprotobuf-c only, so a fuzz target
 * can compile this file without the rest of the server. */
#include "raftwire.h"

#include <assert.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "raft.pb-c.h"

/* The schema's enum numbers are the C ones (raft.proto says so); a change on either side
 * breaks the build here rather than the wire. */
#define RAFTWIRE_MSG_TYPES(X) \
	X(APPEND)             \
	X(APPEND_RESP)        \
	X(VOTE)               \
	X(VOTE_RESP)          \
	X(PREVOTE)            \
	X(PREVOTE_RESP)       \
	X(HEARTBEAT)          \
	X(HEARTBEAT_RESP)     \
	X(SNAPSHOT)           \
	X(SNAPSHOT_RESP)      \
	X(PROPOSE)            \
	X(READ_INDEX)         \
	X(READ_INDEX_RESP)    \
	X(TIMEOUT_NOW)        \
	X(TRANSFER)
#define RAFTWIRE_SAME_TYPE(name)                                                             \
	_Static_assert((int)CAIRN__RAFTPB__MESSAGE_TYPE__MSG_##name == (int)RAFT_MSG_##name, \
		       "MSG_" #name " has the C number");
RAFTWIRE_MSG_TYPES(RAFTWIRE_SAME_TYPE)
#undef RAFTWIRE_SAME_TYPE
#undef RAFTWIRE_MSG_TYPES
_Static_assert(RAFT_MSG_TRANSFER == RAFT_MSG_TYPE_MAX, "MSG_TRANSFER is the last type");
_Static_assert((int)CAIRN__RAFTPB__ENTRY_TYPE__ENTRY_NORMAL == (int)RAFT_ENTRY_NORMAL,
	       "entry types");
_Static_assert((int)CAIRN__RAFTPB__ENTRY_TYPE__ENTRY_CONF_CHANGE == (int)RAFT_ENTRY_CONF_CHANGE,
	       "entry types");
_Static_assert((int)CAIRN__RAFTPB__ENTRY_TYPE__ENTRY_NOOP == (int)RAFT_ENTRY_NOOP, "entry types");
_Static_assert((int)CAIRN__RAFTPB__ROLE__ROLE_VOTER == (int)RAFT_VOTER, "roles");
_Static_assert((int)CAIRN__RAFTPB__ROLE__ROLE_LEARNER == (int)RAFT_LEARNER, "roles");

/* Budget allowances (srv_raftwire_budget). Per entry: its pointer (8), its unpacked struct
 * (~56), two allocation headers (32), the unpacker's scratch record while scanning (32, slabs
 * grown by doubling: 64), the raft_entry built from it (32): 224, rounded up. Measured: 2048
 * entries of 64 bytes (test_budget_fits_full_message) still decode at 180 bytes an entry, not
 * at 160, so 256 leaves a third in reserve for another protobuf-c's layout. Per message: the
 * Message struct, a snapshot meta with a conf of RAFT_MAX_MEMBERS members, and the scratch of
 * the scalar fields, a few KiB; the rest tolerates unknown fields a newer peer may add. */
#define BUDGET_PER_ENTRY 256u
#define BUDGET_FIXED (64u * 1024u)

/* ---- a budgeted allocator for protobuf-c ---------------------------------------------------
 * Each block carries its size in a header so that free can give it back to the budget. The
 * budget lives on the decoder's stack: blocks freed after the decode (srv_raftwire_msg_free)
 * go through the same functions with no budget (ctx NULL). */

union block_hdr {
	size_t size;
	max_align_t align;
};

struct budget {
	size_t left;
	bool over;  /* an allocation was refused for the budget */
	bool nomem; /* malloc failed */
};

static void *budget_alloc(void *ctx, size_t size)
{
	struct budget *b = ctx;
	if (size > SIZE_MAX - sizeof(union block_hdr)) {
		if (b != NULL) {
			b->over = true;
		}
		return NULL;
	}
	size_t total = size + sizeof(union block_hdr);
	if (b != NULL && total > b->left) {
		b->over = true;
		return NULL;
	}
	union block_hdr *h = malloc(total);
	if (h == NULL) {
		if (b != NULL) {
			b->nomem = true;
		}
		return NULL;
	}
	h->size = total;
	if (b != NULL) {
		b->left -= total;
	}
	return h + 1;
}

static void budget_free(void *ctx, void *p)
{
	if (p == NULL) {
		return;
	}
	union block_hdr *h = (union block_hdr *)p - 1;
	struct budget *b = ctx;
	if (b != NULL) {
		b->left += h->size;
	}
	free(h);
}

/* For blocks that outlive the decode. protobuf-c takes it non-const but never writes it. */
static ProtobufCAllocator unbudgeted = { .alloc = budget_alloc, .free = budget_free };

/* ---- limits --------------------------------------------------------------------------------- */

static uint64_t sat_add(uint64_t a, uint64_t b)
{
	return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}

void srv_raftwire_limits_init(struct srv_raftwire_limits *lim, const struct raft_config *cfg)
{
	assert(lim != NULL && cfg != NULL);
	/* raft_new() replaces a zero field by its default: the same here */
	struct raft_config d;
	raft_config_init(&d);
	uint32_t entry = cfg->max_entry_bytes != 0 ? cfg->max_entry_bytes : d.max_entry_bytes;
	uint64_t msg = cfg->max_msg_bytes != 0 ? cfg->max_msg_bytes : d.max_msg_bytes;
	uint32_t chunk =
		cfg->snapshot_chunk_bytes != 0 ? cfg->snapshot_chunk_bytes : d.snapshot_chunk_bytes;
	lim->max_entries = SRV_RAFTWIRE_MAX_SLICE_ENTRIES;
	lim->max_entry_bytes = entry;
	lim->max_msg_bytes = sat_add(msg, entry);
	lim->max_chunk_bytes = chunk;
}

size_t srv_raftwire_budget(const struct srv_raftwire_limits *lim)
{
	assert(lim != NULL);
	uint64_t b = BUDGET_FIXED;
	b = sat_add(b, lim->max_msg_bytes);
	b = sat_add(b, lim->max_chunk_bytes);
	b = sat_add(b, (uint64_t)lim->max_entries * BUDGET_PER_ENTRY); /* < 2^40: no overflow */
	return b > SIZE_MAX ? SIZE_MAX : (size_t)b;
}

/* ---- encode --------------------------------------------------------------------------------- */

/* Whether encode can represent m faithfully. The core only emits such messages; the checks
 * guard the pointers and keep the encoder from writing what the decoder refuses by schema. */
static bool encodable(const struct raft_msg *m)
{
	if (m->type == 0 || m->type > RAFT_MSG_TYPE_MAX) {
		return false;
	}
	if ((m->n_entries > 0 && m->entries == NULL) || (m->len > 0 && m->data == NULL)) {
		return false;
	}
	for (uint32_t i = 0; i < m->n_entries; i++) {
		const struct raft_entry *e = &m->entries[i];
		if (e->type > RAFT_ENTRY_NOOP || (e->len > 0 && e->data == NULL)) {
			return false;
		}
	}
	if (m->snap.conf.n > RAFT_MAX_MEMBERS) {
		return false;
	}
	for (uint32_t i = 0; i < m->snap.conf.n; i++) {
		uint32_t role = m->snap.conf.members[i].role;
		if (role != RAFT_VOTER && role != RAFT_LEARNER) {
			return false;
		}
	}
	return true;
}

static bool snap_is_zero(const struct raft_snapshot_meta *s)
{
	return s->index == 0 && s->term == 0 && s->size == 0 && s->conf.n == 0;
}

/* protobuf-c's bytes type is not const; packing only reads it. */
static ProtobufCBinaryData bytes_of(const uint8_t *data, uint32_t len)
{
	ProtobufCBinaryData d = { .len = len, .data = len > 0 ? (uint8_t *)(uintptr_t)data : NULL };
	return d;
}

int srv_raftwire_encode(const struct raft_msg *m, uint8_t **out, size_t *len)
{
	if (out != NULL) {
		*out = NULL;
	}
	if (len != NULL) {
		*len = 0;
	}
	if (m == NULL || out == NULL || len == NULL || !encodable(m)) {
		return RAFT_EINVAL;
	}

	Cairn__Raftpb__Message pb = CAIRN__RAFTPB__MESSAGE__INIT;
	pb.type = (Cairn__Raftpb__MessageType)m->type;
	pb.from = m->from;
	pb.to = m->to;
	pb.term = m->term;
	pb.log_term = m->log_term;
	pb.index = m->index;
	pb.commit = m->commit;
	pb.reject = m->reject;
	pb.last = m->last;
	pb.hint_index = m->hint_index;
	pb.hint_term = m->hint_term;
	pb.context = m->context;
	pb.data = bytes_of(m->data, m->len);

	/* Entries: the structs and the pointer array protobuf-c wants, in one block. */
	void *block = NULL;
	if (m->n_entries > 0) {
		size_t one = sizeof(Cairn__Raftpb__Entry) + sizeof(Cairn__Raftpb__Entry *);
		_Static_assert(sizeof(size_t) >= 8, "n_entries * one cannot overflow");
		block = malloc(m->n_entries * one);
		if (block == NULL) {
			return RAFT_ENOMEM;
		}
		Cairn__Raftpb__Entry *ents = block;
		Cairn__Raftpb__Entry **ptrs = (Cairn__Raftpb__Entry **)(ents + m->n_entries);
		for (uint32_t i = 0; i < m->n_entries; i++) {
			const struct raft_entry *e = &m->entries[i];
			cairn__raftpb__entry__init(&ents[i]);
			ents[i].term = e->term;
			ents[i].index = e->index;
			ents[i].type = (Cairn__Raftpb__EntryType)e->type;
			ents[i].data = bytes_of(e->data, e->len);
			ptrs[i] = &ents[i];
		}
		pb.n_entries = m->n_entries;
		pb.entries = ptrs;
	}

	Cairn__Raftpb__SnapshotMeta snap = CAIRN__RAFTPB__SNAPSHOT_META__INIT;
	Cairn__Raftpb__Conf conf = CAIRN__RAFTPB__CONF__INIT;
	Cairn__Raftpb__Member members[RAFT_MAX_MEMBERS];
	Cairn__Raftpb__Member *member_ptrs[RAFT_MAX_MEMBERS];
	if (!snap_is_zero(&m->snap)) {
		snap.index = m->snap.index;
		snap.term = m->snap.term;
		snap.size = m->snap.size;
		if (m->snap.conf.n > 0) {
			for (uint32_t i = 0; i < m->snap.conf.n; i++) {
				cairn__raftpb__member__init(&members[i]);
				members[i].id = m->snap.conf.members[i].id;
				members[i].role = (Cairn__Raftpb__Role)m->snap.conf.members[i].role;
				member_ptrs[i] = &members[i];
			}
			conf.n_members = m->snap.conf.n;
			conf.members = member_ptrs;
			snap.conf = &conf;
		}
		pb.snap = &snap;
	}

	size_t size = cairn__raftpb__message__get_packed_size(&pb);
	assert(size > 0); /* the type is never 0, so it is always packed */
	uint8_t *buf = malloc(size);
	if (buf == NULL) {
		free(block);
		return RAFT_ENOMEM;
	}
	size_t packed = cairn__raftpb__message__pack(&pb, buf);
	assert(packed == size);
	(void)packed;
	free(block);
	*out = buf;
	*len = size;
	return 0;
}

/* ---- decode --------------------------------------------------------------------------------- */

static int fail(struct srv_raftwire_msg *out, int rv, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int fail(struct srv_raftwire_msg *out, int rv, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	(void)vsnprintf(out->err, sizeof out->err, fmt, ap);
	va_end(ap);
	return rv;
}

/* The schema checks of a snapshot's conf; fills c. */
static int decode_conf(const Cairn__Raftpb__Conf *pc, struct raft_conf *c,
		       struct srv_raftwire_msg *out)
{
	if (pc->n_members > RAFT_MAX_MEMBERS) {
		return fail(out, RAFT_ETOOMANYMEMBERS, "conf: %zu members, at most %d",
			    pc->n_members, RAFT_MAX_MEMBERS);
	}
	for (size_t i = 0; i < pc->n_members; i++) {
		const Cairn__Raftpb__Member *pm = pc->members[i];
		if (pm->id == 0) {
			return fail(out, RAFT_ECORRUPT, "conf: member %zu has id 0", i);
		}
		int role = (int)pm->role; /* any int32 on the wire */
		if (role != RAFT_VOTER && role != RAFT_LEARNER) {
			return fail(out, RAFT_ECORRUPT, "conf: member %" PRIu64 " has role %d",
				    pm->id, role);
		}
		for (size_t j = 0; j < i; j++) { /* at most 16 * 15 / 2 comparisons */
			if (pc->members[j]->id == pm->id) {
				return fail(out, RAFT_ECORRUPT, "conf: member %" PRIu64 " twice",
					    pm->id);
			}
		}
		c->members[i].id = pm->id;
		c->members[i].role = (uint32_t)role;
	}
	c->n = (uint32_t)pc->n_members;
	return 0;
}

/* The schema and limit checks of the entries; on success fills out->msg's entries. */
static int decode_entries(const Cairn__Raftpb__Message *pb, const struct srv_raftwire_limits *lim,
			  struct budget *b, struct srv_raftwire_msg *out)
{
	if (pb->n_entries == 0) {
		return 0;
	}
	if (pb->n_entries > lim->max_entries) {
		return fail(out, RAFT_ETOOBIG, "%zu entries, at most %" PRIu32, pb->n_entries,
			    lim->max_entries);
	}
	uint64_t total = 0;
	for (size_t i = 0; i < pb->n_entries; i++) {
		const Cairn__Raftpb__Entry *pe = pb->entries[i];
		int type = (int)pe->type; /* any int32 on the wire */
		if (type < RAFT_ENTRY_NORMAL || type > RAFT_ENTRY_NOOP) {
			return fail(out, RAFT_ECORRUPT, "entry %zu: type %d", i, type);
		}
		if (pe->data.len > lim->max_entry_bytes) {
			return fail(out, RAFT_ETOOBIG, "entry %zu: %zu bytes, at most %" PRIu32, i,
				    pe->data.len, lim->max_entry_bytes);
		}
		total += pe->data.len; /* each <= UINT32_MAX, count <= UINT32_MAX: no overflow */
		if (total > lim->max_msg_bytes) {
			return fail(out, RAFT_ETOOBIG,
				    "entries: over %" PRIu64 " bytes in total at entry %zu",
				    lim->max_msg_bytes, i);
		}
		if (pe->type == CAIRN__RAFTPB__ENTRY_TYPE__ENTRY_CONF_CHANGE) {
			struct raft_conf_change cc;
			if (raft_conf_change_decode(pe->data.data, pe->data.len, &cc) != 0) {
				return fail(out, RAFT_ECORRUPT,
					    "entry %zu: malformed conf change (%zu bytes)", i,
					    pe->data.len);
			}
		}
	}

	struct raft_entry *ents = budget_alloc(b, pb->n_entries * sizeof *ents);
	if (ents == NULL) {
		return b->nomem ? fail(out, RAFT_ENOMEM, "out of memory") :
				  fail(out, RAFT_ETOOBIG, "over the decode budget");
	}
	for (size_t i = 0; i < pb->n_entries; i++) {
		const Cairn__Raftpb__Entry *pe = pb->entries[i];
		ents[i] = (struct raft_entry){
			.term = pe->term,
			.index = pe->index,
			.type = (uint32_t)pe->type,
			.len = (uint32_t)pe->data.len,
			.data = pe->data.len > 0 ? pe->data.data : NULL,
		};
	}
	out->entries_ = ents;
	out->msg.entries = ents;
	out->msg.n_entries = (uint32_t)pb->n_entries;
	return 0;
}

static int decode_checked(const Cairn__Raftpb__Message *pb, const struct srv_raftwire_limits *lim,
			  struct budget *b, struct srv_raftwire_msg *out)
{
	int type = (int)pb->type; /* any int32 on the wire; 0 is MSG_UNSPECIFIED */
	if (type < RAFT_MSG_APPEND || type > RAFT_MSG_TYPE_MAX) {
		return fail(out, RAFT_ECORRUPT, "message type %d", type);
	}
	if (pb->data.len > lim->max_chunk_bytes) {
		return fail(out, RAFT_ETOOBIG, "chunk of %zu bytes, at most %" PRIu32, pb->data.len,
			    lim->max_chunk_bytes);
	}
	struct raft_msg *m = &out->msg;
	m->type = (uint32_t)pb->type;
	m->from = pb->from;
	m->to = pb->to;
	m->term = pb->term;
	m->log_term = pb->log_term;
	m->index = pb->index;
	m->commit = pb->commit;
	m->reject = pb->reject != 0;
	m->last = pb->last != 0;
	m->hint_index = pb->hint_index;
	m->hint_term = pb->hint_term;
	m->context = pb->context;
	m->len = (uint32_t)pb->data.len;
	m->data = pb->data.len > 0 ? pb->data.data : NULL;
	if (pb->snap != NULL) {
		m->snap.index = pb->snap->index;
		m->snap.term = pb->snap->term;
		m->snap.size = pb->snap->size;
		if (pb->snap->conf != NULL) {
			int rv = decode_conf(pb->snap->conf, &m->snap.conf, out);
			if (rv != 0) {
				return rv;
			}
		}
	}
	return decode_entries(pb, lim, b, out);
}

int srv_raftwire_decode(const uint8_t *buf, size_t len, const struct srv_raftwire_limits *lim,
			struct srv_raftwire_msg *out)
{
	if (out == NULL) {
		return RAFT_EINVAL;
	}
	memset(out, 0, sizeof *out);
	if (lim == NULL || (buf == NULL && len > 0)) {
		return fail(out, RAFT_EINVAL, "invalid argument");
	}
	if (len == 0) {
		return fail(out, RAFT_ECORRUPT, "empty message");
	}

	struct budget b = { .left = srv_raftwire_budget(lim) };
	ProtobufCAllocator a = { .alloc = budget_alloc, .free = budget_free, .allocator_data = &b };
	Cairn__Raftpb__Message *pb = cairn__raftpb__message__unpack(&a, len, buf);
	if (pb == NULL) {
		if (b.nomem) {
			return fail(out, RAFT_ENOMEM, "out of memory unpacking %zu bytes", len);
		}
		if (b.over) {
			return fail(out, RAFT_ETOOBIG,
				    "%zu bytes would need over %zu bytes of memory to unpack", len,
				    srv_raftwire_budget(lim));
		}
		return fail(out, RAFT_ECORRUPT, "%zu bytes are not a raftpb.Message", len);
	}
	out->pb_ = pb;

	int rv = decode_checked(pb, lim, &b, out);
	if (rv != 0) {
		char why[sizeof out->err];
		memcpy(why, out->err, sizeof why);
		srv_raftwire_msg_free(out);
		memcpy(out->err, why, sizeof why);
		return rv;
	}
	assert(out->msg.type >= 1 && out->msg.type <= RAFT_MSG_TYPE_MAX);
	assert(out->msg.n_entries <= lim->max_entries && out->msg.len <= lim->max_chunk_bytes);
	return 0;
}

void srv_raftwire_msg_free(struct srv_raftwire_msg *m)
{
	if (m == NULL) {
		return;
	}
	budget_free(NULL, m->entries_);
	if (m->pb_ != NULL) {
		cairn__raftpb__message__free_unpacked(m->pb_, &unbudgeted);
	}
	memset(m, 0, sizeof *m);
}

/* fuzz_raft_wire.c: libFuzzer target for srv_raftwire_decode() (server/raftwire.h), the decoder
 * of every Raft message a member receives from its peers.
 *
 * Decodes arbitrary bytes under tight limits. Whatever it accepts must respect those limits and
 * the schema checks (types and roles in range, conf ids non-zero and distinct), and must survive
 * a round trip: re-encoding gives bytes that decode to an equal message, and re-encoding that
 * gives the same bytes again (the input itself need not be canonical: protobuf allows repeated
 * scalar fields, unknown fields, over-long varints). A failed check aborts, which libFuzzer
 * reports with the input.
 *
 * raftwire.c depends on the Raft core, the generated raft.pb-c.c and libprotobuf-c only, which
 * fuzz targets already link (cairn_raft, cairn_proto), so it is compiled into this target here
 * rather than by linking all of cairn_server.
 *
 * Run: build-fuzz/bin/fuzz_raft_wire -max_total_time=60 [corpus-dir]
 */
#include "../../server/raftwire.c"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(cond)                                                                              \
	do {                                                                                     \
		if (!(cond)) {                                                                   \
			fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
			abort();                                                                 \
		}                                                                                \
	} while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Small enough that the fuzzer reaches every bound, and the budget, with short inputs. */
static const struct srv_raftwire_limits lim = {
	.max_entries = 8,
	.max_entry_bytes = 256,
	.max_msg_bytes = 1024,
	.max_chunk_bytes = 1024,
};

static bool same(const struct raft_msg *a, const struct raft_msg *b)
{
	if (a->type != b->type || a->from != b->from || a->to != b->to || a->term != b->term ||
	    a->log_term != b->log_term || a->index != b->index || a->commit != b->commit ||
	    a->reject != b->reject || a->last != b->last || a->hint_index != b->hint_index ||
	    a->hint_term != b->hint_term || a->context != b->context ||
	    a->n_entries != b->n_entries || a->len != b->len) {
		return false;
	}
	if (a->len > 0 && memcmp(a->data, b->data, a->len) != 0) {
		return false;
	}
	for (uint32_t i = 0; i < a->n_entries; i++) {
		const struct raft_entry *x = &a->entries[i], *y = &b->entries[i];
		if (x->term != y->term || x->index != y->index || x->type != y->type ||
		    x->len != y->len || (x->len > 0 && memcmp(x->data, y->data, x->len) != 0)) {
			return false;
		}
	}
	if (a->snap.index != b->snap.index || a->snap.term != b->snap.term ||
	    a->snap.size != b->snap.size || a->snap.conf.n != b->snap.conf.n) {
		return false;
	}
	for (uint32_t i = 0; i < a->snap.conf.n; i++) {
		if (a->snap.conf.members[i].id != b->snap.conf.members[i].id ||
		    a->snap.conf.members[i].role != b->snap.conf.members[i].role) {
			return false;
		}
	}
	return true;
}

/* What every accepted message satisfies. */
static void check_valid(const struct raft_msg *m)
{
	CHECK(m->type >= 1 && m->type <= RAFT_MSG_TYPE_MAX);
	CHECK(m->n_entries <= lim.max_entries);
	CHECK(m->n_entries == 0 || m->entries != NULL);
	uint64_t total = 0;
	for (uint32_t i = 0; i < m->n_entries; i++) {
		const struct raft_entry *e = &m->entries[i];
		CHECK(e->type <= RAFT_ENTRY_NOOP);
		CHECK(e->len <= lim.max_entry_bytes);
		CHECK(e->len == 0 || e->data != NULL);
		if (e->type == RAFT_ENTRY_CONF_CHANGE) {
			struct raft_conf_change cc;
			CHECK(raft_conf_change_decode(e->data, e->len, &cc) == 0);
		}
		total += e->len;
	}
	CHECK(total <= lim.max_msg_bytes);
	CHECK(m->len <= lim.max_chunk_bytes);
	CHECK(m->len == 0 || m->data != NULL);
	CHECK(m->snap.conf.n <= RAFT_MAX_MEMBERS);
	for (uint32_t i = 0; i < m->snap.conf.n; i++) {
		const struct raft_member *mb = &m->snap.conf.members[i];
		CHECK(mb->id != 0);
		CHECK(mb->role == RAFT_VOTER || mb->role == RAFT_LEARNER);
		for (uint32_t j = 0; j < i; j++) {
			CHECK(m->snap.conf.members[j].id != mb->id);
		}
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct srv_raftwire_msg d;
	int rv = srv_raftwire_decode(data, size, &lim, &d);
	if (rv != 0) {
		CHECK(rv == RAFT_ECORRUPT || rv == RAFT_ETOOBIG || rv == RAFT_ETOOMANYMEMBERS);
		CHECK(d.err[0] != '\0');
		CHECK(d.msg.type == 0 && d.msg.entries == NULL);
		srv_raftwire_msg_free(&d);
		return 0;
	}
	check_valid(&d.msg);

	uint8_t *enc = NULL;
	size_t enc_len = 0;
	CHECK(srv_raftwire_encode(&d.msg, &enc, &enc_len) == 0);

	struct srv_raftwire_msg again;
	rv = srv_raftwire_decode(enc, enc_len, &lim, &again);
	if (rv != 0) {
		fprintf(stderr, "re-decode: %s: %s\n", raft_strerror(rv), again.err);
		abort();
	}
	CHECK(same(&d.msg, &again.msg));

	uint8_t *enc2 = NULL;
	size_t enc2_len = 0;
	CHECK(srv_raftwire_encode(&again.msg, &enc2, &enc2_len) == 0);
	CHECK(enc2_len == enc_len && memcmp(enc, enc2, enc_len) == 0);

	free(enc2);
	srv_raftwire_msg_free(&again);
	free(enc);
	srv_raftwire_msg_free(&d);
	return 0;
}

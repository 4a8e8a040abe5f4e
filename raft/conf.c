/* conf.c: configurations and one-server-at-a-time changes (thesis §4.1),
 * with learners as non-voting members (§4.2.1). */
#include "raft_int.h"

#include <string.h>

/* Entry data of a change: u32 type, u32 context length, u64 id (all little
 * endian), then the context bytes. */
_Static_assert(RAFT_CONF_CHANGE_HEADER == 16, "conf change header is 16 bytes");

static void put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++) {
		p[i] = (uint8_t)(v >> (8 * i));
	}
}

static void put64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++) {
		p[i] = (uint8_t)(v >> (8 * i));
	}
}

static uint32_t get32(const uint8_t *p)
{
	uint32_t v = 0;
	for (int i = 0; i < 4; i++) {
		v |= (uint32_t)p[i] << (8 * i);
	}
	return v;
}

static uint64_t get64(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 0; i < 8; i++) {
		v |= (uint64_t)p[i] << (8 * i);
	}
	return v;
}

static bool cc_type_valid(uint32_t t)
{
	return t == RAFT_CC_ADD_VOTER || t == RAFT_CC_ADD_LEARNER || t == RAFT_CC_REMOVE;
}

int raft_conf_change_encode(const struct raft_conf_change *cc, uint8_t *buf, size_t cap)
{
	if (cc == NULL || !cc_type_valid(cc->type) || cc->id == 0 ||
	    cc->context_len > RAFT_MAX_CONF_CONTEXT ||
	    (cc->context_len > 0 && cc->context == NULL)) {
		return RAFT_EINVAL;
	}
	size_t need = RAFT_CONF_CHANGE_HEADER + (size_t)cc->context_len;
	if (buf == NULL || cap < need) {
		return RAFT_EINVAL;
	}
	put32(buf, cc->type);
	put32(buf + 4, cc->context_len);
	put64(buf + 8, cc->id);
	if (cc->context_len > 0) {
		memcpy(buf + RAFT_CONF_CHANGE_HEADER, cc->context, cc->context_len);
	}
	return (int)need;
}

int raft_conf_change_decode(const uint8_t *data, size_t len, struct raft_conf_change *cc)
{
	if (data == NULL || len < RAFT_CONF_CHANGE_HEADER) {
		return RAFT_ECORRUPT;
	}
	uint32_t type = get32(data);
	uint32_t clen = get32(data + 4);
	uint64_t id = get64(data + 8);
	if (!cc_type_valid(type) || id == 0 || clen > RAFT_MAX_CONF_CONTEXT ||
	    (size_t)clen != len - RAFT_CONF_CHANGE_HEADER) {
		return RAFT_ECORRUPT;
	}
	cc->type = type;
	cc->id = id;
	cc->context_len = clen;
	cc->context = clen > 0 ? data + RAFT_CONF_CHANGE_HEADER : NULL;
	return 0;
}

uint32_t raft_conf_role(const struct raft_conf *conf, uint64_t id)
{
	for (uint32_t i = 0; i < conf->n; i++) {
		if (conf->members[i].id == id) {
			return conf->members[i].role;
		}
	}
	return 0;
}

uint32_t raft_conf_voters(const struct raft_conf *conf)
{
	uint32_t n = 0;
	for (uint32_t i = 0; i < conf->n; i++) {
		n += conf->members[i].role == RAFT_VOTER;
	}
	return n;
}

/* Apply a change. A change that would leave no voter, exceed the member
 * bound, or remove an absent member is refused and conf left unchanged. */
int raft_conf_apply(struct raft_conf *conf, const struct raft_conf_change *cc)
{
	if (cc->id == 0 || !cc_type_valid(cc->type) || conf->n > RAFT_MAX_MEMBERS) {
		return RAFT_EINVAL;
	}
	uint32_t pos = conf->n;
	for (uint32_t i = 0; i < conf->n; i++) {
		if (conf->members[i].id == cc->id) {
			pos = i;
			break;
		}
	}
	struct raft_conf next = *conf;
	switch (cc->type) {
	case RAFT_CC_ADD_VOTER:
	case RAFT_CC_ADD_LEARNER: {
		uint32_t role = cc->type == RAFT_CC_ADD_VOTER ? RAFT_VOTER : RAFT_LEARNER;
		if (pos == conf->n) {
			if (conf->n == RAFT_MAX_MEMBERS) {
				return RAFT_ETOOMANYMEMBERS;
			}
			next.members[next.n].id = cc->id;
			next.members[next.n].role = role;
			next.n++;
		} else {
			next.members[pos].role = role;
		}
		break;
	}
	case RAFT_CC_REMOVE:
		if (pos == conf->n) {
			return RAFT_EUNKNOWNMEMBER;
		}
		for (uint32_t i = pos; i + 1 < next.n; i++) {
			next.members[i] = next.members[i + 1];
		}
		next.n--;
		memset(&next.members[next.n], 0, sizeof(next.members[next.n]));
		break;
	default:
		return RAFT_EINVAL;
	}
	if (raft_conf_voters(&next) == 0) {
		return RAFT_EINVAL;
	}
	*conf = next;
	return 0;
}

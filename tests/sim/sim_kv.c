/* sim_kv.c: the replicated state machine of the simulator.
 *
 * A map of SIM_KV_KEYS keys. An entry is the text "set k<key>=<op>", where
 * op is the client operation's unique id; the value of a key is the op that
 * last set it, so a read names exactly which write it saw. The snapshot
 * data carries the index it was taken at and a checksum, so a snapshot that
 * is reassembled wrong from its chunks is caught, not silently applied.
 */
#include <stdio.h>
#include <string.h>

#include "sim.h"

static const uint8_t snap_magic[4] = {'C', 'S', 'K', 'V'};

uint32_t sim_kv_format(char *buf, size_t cap, uint32_t key, uint64_t op)
{
	int n = snprintf(buf, cap, "set k%02u=%llu", key, (unsigned long long)op);
	if (n < 0 || (size_t)n >= cap)
		return 0;
	return (uint32_t)n;
}

bool sim_kv_parse(const uint8_t *data, uint32_t len, uint32_t *key, uint64_t *op)
{
	if (len < 9 || len >= SIM_KV_ENTRY_MAX || memcmp(data, "set k", 5) != 0)
		return false;
	uint32_t i = 5;
	uint32_t k = 0;
	for (; i < len && data[i] >= '0' && data[i] <= '9'; i++)
		k = k * 10 + (uint32_t)(data[i] - '0');
	if (i == 5 || i >= len || data[i] != '=' || k >= SIM_KV_KEYS)
		return false;
	i++;
	uint64_t v = 0;
	uint32_t start = i;
	for (; i < len && data[i] >= '0' && data[i] <= '9'; i++)
		v = v * 10 + (uint64_t)(data[i] - '0');
	if (i == start || i != len)
		return false;
	*key = k;
	*op = v;
	return true;
}

static void put64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get64(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 0; i < 8; i++)
		v |= (uint64_t)p[i] << (8 * i);
	return v;
}

size_t sim_kv_save(const struct sim_kv *kv, uint64_t index, uint8_t *buf, size_t cap)
{
	if (cap < SIM_KV_SNAP_BYTES)
		return 0;
	memcpy(buf, snap_magic, 4);
	buf[4] = SIM_KV_KEYS;
	buf[5] = buf[6] = buf[7] = 0;
	put64(buf + 8, index);
	for (size_t k = 0; k < SIM_KV_KEYS; k++)
		put64(buf + 16 + 8 * k, kv->v[k]);
	size_t body = SIM_KV_SNAP_BYTES - 8;
	put64(buf + body, sim_hash(SIM_HASH_INIT, buf, body));
	return SIM_KV_SNAP_BYTES;
}

bool sim_kv_load(const uint8_t *data, size_t len, struct sim_kv *kv, uint64_t *index)
{
	if (len != SIM_KV_SNAP_BYTES || memcmp(data, snap_magic, 4) != 0 || data[4] != SIM_KV_KEYS)
		return false;
	size_t body = SIM_KV_SNAP_BYTES - 8;
	if (get64(data + body) != sim_hash(SIM_HASH_INIT, data, body))
		return false;
	*index = get64(data + 8);
	for (size_t k = 0; k < SIM_KV_KEYS; k++)
		kv->v[k] = get64(data + 16 + 8 * k);
	return true;
}

bool sim_kv_equal(const struct sim_kv *a, const struct sim_kv *b)
{
	return memcmp(a->v, b->v, sizeof(a->v)) == 0;
}

/* util.c: error strings, assertion failure, the replaceable heap and the
 * arena that backs every update handed to the caller. */
#include "raft_int.h"

#include <string.h>

const char *raft_strerror(int err)
{
	switch (err) {
	case 0:
		return "success";
#define RAFT__ERRNO_CASE(name, num, msg) \
	case RAFT_E##name:               \
		return msg;
		RAFT_ERRNO_MAP(RAFT__ERRNO_CASE)
#undef RAFT__ERRNO_CASE
	default:
		return "unknown error";
	}
}

_Noreturn void raft__assert_fail(const char *expr, const char *file, int line, const char *func)
{
	fprintf(stderr, "raft: assertion failed: %s (%s:%d, %s)\n", expr, file, line, func);
	abort();
}

void *raft__malloc(const struct raft_heap *h, size_t size)
{
	if (h != NULL && h->malloc != NULL) {
		return h->malloc(h->ctx, size);
	}
	return malloc(size);
}

void *raft__realloc(const struct raft_heap *h, void *p, size_t size)
{
	if (h != NULL && h->realloc != NULL) {
		return h->realloc(h->ctx, p, size);
	}
	return realloc(p, size);
}

void raft__free(const struct raft_heap *h, void *p)
{
	if (p == NULL) {
		return;
	}
	if (h != NULL && h->free != NULL) {
		h->free(h->ctx, p);
		return;
	}
	free(p);
}

int raft__grow(const struct raft_heap *h, void **arr, uint32_t *cap, uint32_t need, size_t elem)
{
	if (need <= *cap) {
		return 0;
	}
	uint32_t ncap = *cap < 8 ? 8 : *cap;
	while (ncap < need) {
		if (ncap > UINT32_MAX / 2) {
			return RAFT_ENOMEM;
		}
		ncap *= 2;
	}
	void *p = raft__realloc(h, *arr, (size_t)ncap * elem);
	if (p == NULL) {
		return RAFT_ENOMEM;
	}
	*arr = p;
	*cap = ncap;
	return 0;
}

/* Arena: blocks of at least 64 KiB. A reset keeps the blocks (up to
 * ARENA_KEEP bytes) for the next update, so a steady load allocates nothing
 * per update; a burst's extra blocks are given back. */
#define ARENA_BLOCK (64u * 1024u)
#define ARENA_KEEP (8u * 1024u * 1024u)

struct raft__arena_block {
	struct raft__arena_block *next;
	size_t size;
	size_t used;
	_Alignas(16) uint8_t mem[];
};

void raft__arena_init(struct raft__arena *a, const struct raft_heap *h)
{
	memset(a, 0, sizeof(*a));
	a->heap = h;
}

static struct raft__arena_block *take_spare(struct raft__arena *a, size_t size)
{
	struct raft__arena_block **pp = &a->spare;
	while (*pp != NULL) {
		struct raft__arena_block *b = *pp;
		if (b->size >= size) {
			*pp = b->next;
			RAFT_ASSERT(a->spare_bytes >= b->size);
			a->spare_bytes -= b->size;
			return b;
		}
		pp = &b->next;
	}
	return NULL;
}

void *raft__arena_alloc(struct raft__arena *a, size_t size)
{
	size = (size + 15u) & ~(size_t)15u;
	if (size == 0) {
		size = 16;
	}
	struct raft__arena_block *b = a->head;
	if (b == NULL || b->size - b->used < size) {
		b = take_spare(a, size);
		if (b == NULL) {
			size_t bsize = size > ARENA_BLOCK ? size : ARENA_BLOCK;
			b = raft__malloc(a->heap, sizeof(*b) + bsize);
			if (b == NULL) {
				return NULL;
			}
			b->size = bsize;
		}
		b->used = 0;
		b->next = a->head;
		a->head = b;
	}
	void *p = b->mem + b->used;
	b->used += size;
	a->used += size;
	return p;
}

/* Runs at every advance: it costs one step per block used by the update, not
 * one per spare block (up to ARENA_KEEP / ARENA_BLOCK of them). */
void raft__arena_reset(struct raft__arena *a)
{
	size_t kept = a->spare_bytes;
	struct raft__arena_block *b = a->head;
	while (b != NULL) {
		struct raft__arena_block *next = b->next;
		if (kept + b->size <= ARENA_KEEP) {
			kept += b->size;
			b->next = a->spare;
			a->spare = b;
		} else {
			raft__free(a->heap, b);
		}
		b = next;
	}
	a->head = NULL;
	a->spare_bytes = kept;
	a->used = 0;
}

void raft__arena_close(struct raft__arena *a)
{
	raft__arena_reset(a);
	while (a->spare != NULL) {
		struct raft__arena_block *next = a->spare->next;
		raft__free(a->heap, a->spare);
		a->spare = next;
	}
	a->spare_bytes = 0;
}

/* Entry data blocks (see struct raft__block). */
void raft__block_unref(const struct raft_heap *h, struct raft__block *b)
{
	if (b != NULL) {
		RAFT_ASSERT(b->refs > 0);
		if (--b->refs == 0) {
			raft__free(h, b);
		}
	}
}

uint8_t *raft__block_alloc(const struct raft_heap *h, struct raft__block **cur, uint32_t len,
			   struct raft__block **blk)
{
	uint32_t need = (len + 15u) & ~15u;
	if (len > RAFT__BLOCK_BYTES / 4) {
		struct raft__block *b = raft__malloc(h, sizeof(*b) + len);
		if (b == NULL) {
			return NULL;
		}
		b->refs = 1;
		b->used = len;
		b->size = len;
		*blk = b;
		return b->data;
	}
	if (*cur == NULL || (*cur)->size - (*cur)->used < need) {
		struct raft__block *b = raft__malloc(h, sizeof(*b) + RAFT__BLOCK_BYTES);
		if (b == NULL) {
			return NULL;
		}
		b->refs = 1; /* as the current block */
		b->used = 0;
		b->size = RAFT__BLOCK_BYTES;
		raft__block_unref(h, *cur);
		*cur = b;
	}
	uint8_t *p = (*cur)->data + (*cur)->used;
	(*cur)->used += need;
	(*cur)->refs++;
	*blk = *cur;
	return p;
}

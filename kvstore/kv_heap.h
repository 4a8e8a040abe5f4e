/* kv_heap.h: the allocator every allocation of kvstore/ goes through (LMDB's
 * own allocations aside), so that a test can make allocation fail and check
 * that nothing is lost or leaked, and a server can count what the store
 * holds. Responses are freed with the heap that allocated them, so the heap
 * is process-wide: set it before the first kvstore call and keep it until
 * the last response is freed. Not thread-safe to change; its functions are
 * called from every thread that calls kvstore/. */
#ifndef CAIRN_KV_HEAP_H
#define CAIRN_KV_HEAP_H

#include <stddef.h>

#include "kv_err.h"

/* The three functions behave as libc's: realloc(ctx, NULL, n) allocates,
 * free(ctx, ptr) is never called with NULL, and sizes are never 0. */
struct kv_heap {
	void *ctx;
	void *(*malloc)(void *ctx, size_t size);
	void *(*realloc)(void *ctx, void *ptr, size_t size);
	void (*free)(void *ctx, void *ptr);
};

/* Installs heap (copied); NULL restores libc's malloc, realloc and free. */
KV_API void kv_heap_set(const struct kv_heap *heap);

#endif /* CAIRN_KV_HEAP_H */

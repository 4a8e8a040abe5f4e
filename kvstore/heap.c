/* heap.c: kvstore/'s replaceable allocator (kv_heap.h). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kv_heap.h"
#include "kv_internal.h"

static void *libc_malloc(void *ctx, size_t size)
{
	(void)ctx;
	return malloc(size);
}

static void *libc_realloc(void *ctx, void *ptr, size_t size)
{
	(void)ctx;
	return realloc(ptr, size);
}

static void libc_free(void *ctx, void *ptr)
{
	(void)ctx;
	free(ptr);
}

static const struct kv_heap libc_heap = { NULL, libc_malloc, libc_realloc, libc_free };
static struct kv_heap heap = { NULL, libc_malloc, libc_realloc, libc_free };

void kv_heap_set(const struct kv_heap *h)
{
	heap = h != NULL ? *h : libc_heap;
}

void *kv__malloc(size_t size)
{
	return heap.malloc(heap.ctx, size ? size : 1);
}

void *kv__calloc(size_t n, size_t size)
{
	if (size != 0 && n > SIZE_MAX / size)
		return NULL;
	void *p = kv__malloc(n * size);
	if (p != NULL)
		memset(p, 0, n * size);
	return p;
}

void *kv__realloc(void *ptr, size_t size)
{
	return heap.realloc(heap.ctx, ptr, size ? size : 1);
}

void kv__free(void *ptr)
{
	if (ptr != NULL)
		heap.free(heap.ctx, ptr);
}

char *kv__strdup(const char *s)
{
	size_t n = strlen(s) + 1;
	char *p = kv__malloc(n);
	if (p != NULL)
		memcpy(p, s, n);
	return p;
}

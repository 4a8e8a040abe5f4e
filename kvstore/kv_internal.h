/* kv_internal.h: what every kvstore/ file shares; not installed, not public.
 * Every allocation goes through these (kv_heap.h), never libc directly. */
#ifndef CAIRN_KV_INTERNAL_H
#define CAIRN_KV_INTERNAL_H

#include <stddef.h>

void *kv__malloc(size_t size);
void *kv__calloc(size_t n, size_t size);
void *kv__realloc(void *ptr, size_t size);
void kv__free(void *ptr);
char *kv__strdup(const char *s);

#endif /* CAIRN_KV_INTERNAL_H */

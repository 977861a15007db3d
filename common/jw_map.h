/*
 * jw_map.h - a hash map from NUL-terminated string keys to pointers.
 *
 * Open addressing with linear probing and backward-shift deletion, so there
 * are no tombstones and lookups stay short. The map borrows its keys: a key
 * must live (unchanged) as long as its entry, typically inside the value.
 * Not thread-safe; each map belongs to one thread.
 */
#ifndef JW_MAP_H
#define JW_MAP_H

#include <stddef.h>

typedef struct jw_map {
    struct jw_map_slot {
        const char *key;
        void *value;
        size_t hash;
    } * slots;
    size_t cap; /* a power of two, or 0 */
    size_t count;
} jw_map;

void jw_map_init(jw_map *m);
void jw_map_release(jw_map *m);
/* Inserts or replaces; returns the previous value or NULL. */
void *jw_map_put(jw_map *m, const char *key, void *value);
void *jw_map_get(const jw_map *m, const char *key);
/* Removes; returns the value or NULL. */
void *jw_map_del(jw_map *m, const char *key);

/* Iteration: for (size_t i = 0; jw_map_next(m, &i, &k, &v);) ... Do not
 * insert or delete while iterating. */
int jw_map_next(const jw_map *m, size_t *iter, const char **key, void **value);

#endif

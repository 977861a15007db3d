#include "jw_map.h"

#include "jw_log.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static size_t hash_key(const char *k)
{
    uint64_t h = 14695981039346656037ULL;

    while (*k) {
        h ^= (unsigned char)*k++;
        h *= 1099511628211ULL;
    }
    return (size_t)(h ^ (h >> 29));
}

void jw_map_init(jw_map *m)
{
    m->slots = NULL;
    m->cap = m->count = 0;
}

void jw_map_release(jw_map *m)
{
    free(m->slots);
    jw_map_init(m);
}

static struct jw_map_slot *find(const jw_map *m, const char *key, size_t h)
{
    size_t mask = m->cap - 1;

    for (size_t i = h & mask;; i = (i + 1) & mask) {
        struct jw_map_slot *s = &m->slots[i];

        if (!s->key || (s->hash == h && strcmp(s->key, key) == 0))
            return s;
    }
}

static void grow(jw_map *m)
{
    struct jw_map_slot *old = m->slots;
    size_t oldcap = m->cap;

    m->cap = oldcap ? oldcap * 2 : 16;
    m->slots = jw_xcalloc(m->cap, sizeof(*m->slots));
    for (size_t i = 0; i < oldcap; i++)
        if (old[i].key)
            *find(m, old[i].key, old[i].hash) = old[i];
    free(old);
}

void *jw_map_put(jw_map *m, const char *key, void *value)
{
    size_t h = hash_key(key);
    struct jw_map_slot *s;
    void *prev;

    if ((m->count + 1) * 4 > m->cap * 3)
        grow(m);
    s = find(m, key, h);
    if (s->key) {
        prev = s->value;
        s->key = key;
        s->value = value;
        return prev;
    }
    s->key = key;
    s->value = value;
    s->hash = h;
    m->count++;
    return NULL;
}

void *jw_map_get(const jw_map *m, const char *key)
{
    if (!m->cap)
        return NULL;
    return find(m, key, hash_key(key))->value;
}

void *jw_map_del(jw_map *m, const char *key)
{
    size_t mask = m->cap - 1, i, j;
    struct jw_map_slot *s;
    void *value;

    if (!m->cap)
        return NULL;
    s = find(m, key, hash_key(key));
    if (!s->key)
        return NULL;
    value = s->value;
    /* Backward shift: pull later entries of the probe run into the hole. */
    i = (size_t)(s - m->slots);
    for (j = (i + 1) & mask; m->slots[j].key; j = (j + 1) & mask) {
        size_t home = m->slots[j].hash & mask;

        /* Move j into i unless its home lies cyclically in (i, j]. */
        if ((j > i && (home <= i || home > j)) || (j < i && (home <= i && home > j))) {
            m->slots[i] = m->slots[j];
            i = j;
        }
    }
    m->slots[i].key = NULL;
    m->slots[i].value = NULL;
    m->count--;
    return value;
}

int jw_map_next(const jw_map *m, size_t *iter, const char **key, void **value)
{
    while (*iter < m->cap) {
        const struct jw_map_slot *s = &m->slots[(*iter)++];

        if (s->key) {
            if (key)
                *key = s->key;
            if (value)
                *value = s->value;
            return 1;
        }
    }
    return 0;
}

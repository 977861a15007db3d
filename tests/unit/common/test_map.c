/*
 * Unit tests of common/jw_map: insert, replace, lookup, delete, growth, iteration, and
 * the probe runs of keys that share a home slot (also across the end of the table),
 * which backward-shift deletion must keep free of holes.
 *
 * The map's struct is public (jw_map.h), so the tests also check its invariants after
 * every step: cap a power of two, count = occupied slots, at least one slot empty, and
 * every entry reachable from its home slot without crossing an empty one.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "jw_map.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NKEYS 10000

static char keys[NKEYS][16];
static int values[NKEYS];

static void make_keys(void)
{
    for (int i = 0; i < NKEYS; i++) {
        snprintf(keys[i], sizeof(keys[i]), "key-%d", i);
        values[i] = i;
    }
}

/* The structural invariants of an open-addressing map with backward-shift deletion. */
static void check_invariants(const jw_map *m)
{
    size_t used = 0;

    if (m->cap == 0) {
        assert_null(m->slots);
        assert_int_equal(m->count, 0);
        return;
    }
    assert_int_equal(m->cap & (m->cap - 1), 0);
    assert_true(m->count < m->cap); /* an empty slot ends every failed lookup */
    for (size_t i = 0; i < m->cap; i++) {
        const struct jw_map_slot *s = &m->slots[i];

        if (!s->key)
            continue;
        used++;
        /* No empty slot between the entry's home and the entry itself. */
        for (size_t j = s->hash & (m->cap - 1); j != i; j = (j + 1) & (m->cap - 1))
            assert_non_null(m->slots[j].key);
    }
    assert_int_equal(used, m->count);
}

/* The map's hash of a key, read from the slot a one-entry map stores it in. */
static size_t hash_of(const char *key)
{
    jw_map m;
    size_t h = 0;
    int found = 0;

    jw_map_init(&m);
    jw_map_put(&m, key, (void *)key);
    for (size_t i = 0; i < m.cap; i++) {
        if (m.slots[i].key) {
            h = m.slots[i].hash;
            found++;
        }
    }
    jw_map_release(&m);
    assert_int_equal(found, 1);
    return h;
}

static void test_empty(void **state)
{
    jw_map m;
    size_t it = 0;
    const char *k = NULL;
    void *v = NULL;

    (void)state;
    jw_map_init(&m);
    assert_null(jw_map_get(&m, "a"));
    assert_null(jw_map_del(&m, "a"));
    assert_int_equal(jw_map_next(&m, &it, &k, &v), 0);
    assert_int_equal(m.count, 0);
    check_invariants(&m);
    jw_map_release(&m);
    jw_map_release(&m); /* released twice: still an empty map */
    check_invariants(&m);
}

static void test_put_get_replace(void **state)
{
    jw_map m;
    int a = 1, b = 2, c = 3;
    char lookup[8];
    char *first = strdup("same");
    char *second = strdup("same");

    (void)state;
    jw_map_init(&m);
    assert_null(jw_map_put(&m, "alpha", &a));
    assert_null(jw_map_put(&m, "", &b)); /* the empty string is a key like any other */
    assert_ptr_equal(jw_map_get(&m, "alpha"), &a);
    assert_ptr_equal(jw_map_get(&m, ""), &b);
    assert_null(jw_map_get(&m, "alph"));
    assert_null(jw_map_get(&m, "alphaa"));
    assert_int_equal(m.count, 2);

    /* Keys compare by content: another buffer with the same text finds the entry. */
    strcpy(lookup, "alpha");
    assert_ptr_equal(jw_map_get(&m, lookup), &a);

    /* Replacing returns the previous value and keeps the count. */
    assert_ptr_equal(jw_map_put(&m, lookup, &c), &a);
    assert_ptr_equal(jw_map_get(&m, "alpha"), &c);
    assert_int_equal(m.count, 2);

    /* A replace borrows the new key: the old one may die with the old value. */
    assert_null(jw_map_put(&m, first, &a));
    assert_ptr_equal(jw_map_put(&m, second, &b), &a);
    memset(first, 'x', 4);
    free(first);
    assert_ptr_equal(jw_map_get(&m, "same"), &b);
    assert_int_equal(m.count, 3);
    check_invariants(&m);

    jw_map_release(&m);
    free(second);
}

static void test_delete(void **state)
{
    jw_map m;

    (void)state;
    make_keys();
    jw_map_init(&m);
    for (int i = 0; i < 10; i++)
        assert_null(jw_map_put(&m, keys[i], &values[i]));
    assert_ptr_equal(jw_map_del(&m, keys[3]), &values[3]);
    assert_null(jw_map_del(&m, keys[3])); /* gone: a second delete finds nothing */
    assert_null(jw_map_del(&m, "never-there"));
    assert_null(jw_map_get(&m, keys[3]));
    assert_int_equal(m.count, 9);
    for (int i = 0; i < 10; i++)
        if (i != 3)
            assert_ptr_equal(jw_map_get(&m, keys[i]), &values[i]);
    check_invariants(&m);

    /* A deleted key can come back. */
    assert_null(jw_map_put(&m, keys[3], &values[7]));
    assert_ptr_equal(jw_map_get(&m, keys[3]), &values[7]);
    assert_int_equal(m.count, 10);

    /* Empty it entirely, then use it again. */
    for (int i = 0; i < 10; i++)
        assert_non_null(jw_map_del(&m, keys[i]));
    assert_int_equal(m.count, 0);
    for (int i = 0; i < 10; i++)
        assert_null(jw_map_get(&m, keys[i]));
    check_invariants(&m);
    assert_null(jw_map_put(&m, keys[0], &values[0]));
    assert_ptr_equal(jw_map_get(&m, keys[0]), &values[0]);
    jw_map_release(&m);
    check_invariants(&m);
    assert_null(jw_map_get(&m, keys[0]));
}

static void test_growth(void **state)
{
    jw_map m;
    size_t cap = 0;
    int grew = 0;

    (void)state;
    make_keys();
    jw_map_init(&m);
    for (int i = 0; i < NKEYS; i++) {
        assert_null(jw_map_put(&m, keys[i], &values[i]));
        if (m.cap != cap) {
            /* Growth keeps every entry made so far. */
            for (int j = 0; j <= i; j++)
                assert_ptr_equal(jw_map_get(&m, keys[j]), &values[j]);
            check_invariants(&m);
            cap = m.cap;
            grew++;
        }
    }
    assert_int_equal(m.count, NKEYS);
    assert_true(grew > 5);
    check_invariants(&m);
    for (int i = 0; i < NKEYS; i++)
        assert_ptr_equal(jw_map_get(&m, keys[i]), &values[i]);

    /* Delete every other key; the rest stay found. */
    for (int i = 0; i < NKEYS; i += 2)
        assert_ptr_equal(jw_map_del(&m, keys[i]), &values[i]);
    assert_int_equal(m.count, NKEYS / 2);
    check_invariants(&m);
    for (int i = 0; i < NKEYS; i++) {
        if (i % 2)
            assert_ptr_equal(jw_map_get(&m, keys[i]), &values[i]);
        else
            assert_null(jw_map_get(&m, keys[i]));
    }
    jw_map_release(&m);
}

static void test_iteration(void **state)
{
    jw_map m;
    static char seen[NKEYS];
    const char *k;
    void *v;
    size_t n = 0;
    int visits = 0;

    (void)state;
    make_keys();
    jw_map_init(&m);
    for (int i = 0; i < 1000; i++)
        jw_map_put(&m, keys[i], &values[i]);
    for (int i = 0; i < 1000; i += 3)
        jw_map_del(&m, keys[i]);

    memset(seen, 0, sizeof(seen));
    for (size_t it = 0; jw_map_next(&m, &it, &k, &v);) {
        int i = *(int *)v;

        assert_ptr_equal(k, keys[i]); /* the borrowed key itself, not a copy */
        assert_int_equal(seen[i], 0); /* each entry once */
        assert_true(i % 3 != 0);      /* never a deleted one */
        seen[i] = 1;
        n++;
    }
    assert_int_equal(n, m.count);
    for (int i = 0; i < 1000; i++)
        assert_int_equal(seen[i], i % 3 != 0);

    /* key and value may be NULL when the caller wants only one of them. */
    for (size_t it = 0; jw_map_next(&m, &it, NULL, NULL);)
        visits++;
    assert_int_equal(visits, (int)m.count);

    /* An exhausted iterator stays exhausted. */
    {
        size_t it = 0;

        while (jw_map_next(&m, &it, &k, NULL))
            ;
        assert_int_equal(jw_map_next(&m, &it, &k, NULL), 0);
    }
    jw_map_release(&m);
}

/*
 * Keys chosen by their home slot in a 16-slot map (the first size; 8 entries keep it at
 * that size): two with the same home make one probe run, and homes 14, 15 and 0 make a
 * run that wraps past the end. Deleting from the front, the middle and across the wrap
 * must pull the later entries back so every key stays reachable.
 */
static void test_collisions(void **state)
{
    enum { CAP = 16, PER_HOME = 2, N = 4 * PER_HOME };
    static const size_t homes[] = {14, 15, 0, 5};
    const char *pick[4][PER_HOME];
    int have[4] = {0};
    static const int order[][N] = {
        {0, 1, 2, 3, 4, 5, 6, 7}, {7, 6, 5, 4, 3, 2, 1, 0}, {1, 3, 5, 7, 0, 2, 4, 6},
        {4, 0, 7, 2, 5, 1, 6, 3}, {2, 4, 0, 6, 1, 7, 3, 5},
    };
    const char *all[N];

    (void)state;
    make_keys();
    for (int i = 0; i < NKEYS; i++) {
        size_t home = hash_of(keys[i]) & (CAP - 1);

        for (int h = 0; h < 4; h++)
            if (home == homes[h] && have[h] < PER_HOME)
                pick[h][have[h]++] = keys[i];
    }
    for (int h = 0; h < 4; h++)
        assert_int_equal(have[h], PER_HOME);
    for (int h = 0; h < 4; h++)
        for (int j = 0; j < PER_HOME; j++)
            all[h * PER_HOME + j] = pick[h][j];

    for (size_t o = 0; o < sizeof(order) / sizeof(order[0]); o++) {
        jw_map m;
        int gone[N] = {0};

        jw_map_init(&m);
        for (int i = 0; i < N; i++)
            assert_null(jw_map_put(&m, all[i], (void *)all[i]));
        assert_int_equal(m.cap, CAP); /* still the size the homes were chosen for */
        check_invariants(&m);
        /* The four keys of homes 14 and 15 fill slots 14, 15, 0 and 1: the run wraps. */
        assert_non_null(m.slots[0].key);
        assert_true((m.slots[0].hash & (CAP - 1)) >= 14);

        for (int d = 0; d < N; d++) {
            int victim = order[o][d];

            assert_ptr_equal(jw_map_del(&m, all[victim]), all[victim]);
            gone[victim] = 1;
            check_invariants(&m);
            for (int i = 0; i < N; i++) {
                if (gone[i])
                    assert_null(jw_map_get(&m, all[i]));
                else
                    assert_ptr_equal(jw_map_get(&m, all[i]), all[i]);
            }
        }
        assert_int_equal(m.count, 0);
        jw_map_release(&m);
    }
}

/* Random puts, replaces and deletes over a small key set, against a plain array. */
static void test_random_against_model(void **state)
{
    enum { KEYS = 200, STEPS = 20000 };
    void *model[KEYS] = {0};
    size_t live = 0;
    uint32_t x = 2463534242u; /* xorshift32, a fixed seed: the same steps every run */
    jw_map m;

    (void)state;
    make_keys();
    jw_map_init(&m);
    for (int step = 0; step < STEPS; step++) {
        int k, op;

        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        k = (int)(x % KEYS);
        op = (int)((x >> 16) % 3);
        if (op < 2) {
            void *v = &values[(x >> 8) % NKEYS];

            assert_ptr_equal(jw_map_put(&m, keys[k], v), model[k]);
            if (!model[k])
                live++;
            model[k] = v;
        } else {
            assert_ptr_equal(jw_map_del(&m, keys[k]), model[k]);
            if (model[k])
                live--;
            model[k] = NULL;
        }
        assert_int_equal(m.count, live);
        if (step % 500 == 0) {
            check_invariants(&m);
            for (int i = 0; i < KEYS; i++)
                assert_ptr_equal(jw_map_get(&m, keys[i]), model[i]);
        }
    }
    check_invariants(&m);
    for (int i = 0; i < KEYS; i++)
        assert_ptr_equal(jw_map_get(&m, keys[i]), model[i]);
    jw_map_release(&m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty),
        cmocka_unit_test(test_put_get_replace),
        cmocka_unit_test(test_delete),
        cmocka_unit_test(test_growth),
        cmocka_unit_test(test_iteration),
        cmocka_unit_test(test_collisions),
        cmocka_unit_test(test_random_against_model),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}

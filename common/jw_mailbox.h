/*
 * jw_mailbox.h - the only thing jobwire's threads share.
 *
 * A mailbox is a mutex-guarded FIFO of caller-owned items linked through an
 * embedded jw_mailbox_node (no allocation per post). Producers post; the one
 * consumer takes everything queued at once, so one lock round-trip moves a
 * whole burst. Posting hands ownership of the item to the consumer.
 *
 * A consumer that sleeps on a thread of its own uses jw_mailbox_wait(). A
 * consumer that sleeps elsewhere (the loop thread in lws_service) sets a wake
 * callback, which every post calls after unlocking: the server sets it to
 * lws_cancel_service().
 *
 * All functions are safe from any thread; init/release are not concurrent with
 * anything else.
 */
#ifndef JW_MAILBOX_H
#define JW_MAILBOX_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

typedef struct jw_mailbox_node {
    struct jw_mailbox_node *next;
} jw_mailbox_node;

typedef struct jw_mailbox {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    jw_mailbox_node *head, *tail;
    size_t count;
    bool closed;
    bool kicked;          /* jw_mailbox_kick since the last take */
    atomic_bool nonempty; /* head != NULL, readable without the lock (jw_mailbox_has_mail) */
    void (*wake)(void *arg);
    void *wake_arg;
} jw_mailbox;

/* wake may be NULL. */
void jw_mailbox_init(jw_mailbox *mb, void (*wake)(void *arg), void *wake_arg);
/* The mailbox must be empty or its items owned elsewhere. */
void jw_mailbox_release(jw_mailbox *mb);

/* Appends node; returns false (and keeps nothing) when the mailbox is closed. */
bool jw_mailbox_post(jw_mailbox *mb, jw_mailbox_node *node);

/*
 * Appends the chain first..last (n nodes, linked through ->next) at once, so a
 * burst costs one lock and one wake. Returns false when closed.
 */
bool jw_mailbox_post_chain(jw_mailbox *mb, jw_mailbox_node *first, jw_mailbox_node *last, size_t n);

/* Detaches and returns the whole queue in FIFO order (NULL when empty). */
jw_mailbox_node *jw_mailbox_take_all(jw_mailbox *mb);

/*
 * Like take_all, but first waits until something is queued, the mailbox is
 * closed, or timeout_ms passes (timeout_ms < 0 waits without limit).
 */
jw_mailbox_node *jw_mailbox_wait(jw_mailbox *mb, int timeout_ms);

/*
 * Wakes a waiter in jw_mailbox_wait without posting (it returns what is
 * queued, possibly nothing): for a consumer that also serves a second queue.
 */
void jw_mailbox_kick(jw_mailbox *mb);

/* Wakes every waiter; later posts fail. Items already queued stay takeable. */
void jw_mailbox_close(jw_mailbox *mb);

/*
 * Whether something is queued, without taking the lock: for a consumer that
 * checks between pieces of other work (one relaxed load). A post that races
 * with it is seen by the next check, and its wake comes anyway.
 */
static inline bool jw_mailbox_has_mail(jw_mailbox *mb)
{
    return atomic_load_explicit(&mb->nonempty, memory_order_relaxed);
}

bool jw_mailbox_is_closed(jw_mailbox *mb);
size_t jw_mailbox_count(jw_mailbox *mb);

/* Container-of for items that embed a node. */
#define jw_container_of(ptr, type, member) ((type *)(void *)((char *)(ptr)-offsetof(type, member)))

#endif

#include "jw_mailbox.h"

#include <errno.h>
#include <time.h>

void jw_mailbox_init(jw_mailbox *mb, void (*wake)(void *arg), void *wake_arg)
{
    pthread_condattr_t attr;

    pthread_mutex_init(&mb->lock, NULL);
    /* Monotonic, so a wall-clock step never stretches a wait. */
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&mb->cond, &attr);
    pthread_condattr_destroy(&attr);
    mb->head = mb->tail = NULL;
    mb->count = 0;
    mb->closed = false;
    mb->kicked = false;
    atomic_init(&mb->nonempty, false);
    mb->wake = wake;
    mb->wake_arg = wake_arg;
}

void jw_mailbox_release(jw_mailbox *mb)
{
    pthread_cond_destroy(&mb->cond);
    pthread_mutex_destroy(&mb->lock);
}

bool jw_mailbox_post(jw_mailbox *mb, jw_mailbox_node *node)
{
    return jw_mailbox_post_chain(mb, node, node, 1);
}

bool jw_mailbox_post_chain(jw_mailbox *mb, jw_mailbox_node *first, jw_mailbox_node *last, size_t n)
{
    last->next = NULL;
    pthread_mutex_lock(&mb->lock);
    if (mb->closed) {
        pthread_mutex_unlock(&mb->lock);
        return false;
    }
    if (mb->tail)
        mb->tail->next = first;
    else
        mb->head = first;
    mb->tail = last;
    mb->count += n;
    atomic_store_explicit(&mb->nonempty, true, memory_order_relaxed);
    pthread_cond_signal(&mb->cond);
    pthread_mutex_unlock(&mb->lock);
    if (mb->wake)
        mb->wake(mb->wake_arg);
    return true;
}

static jw_mailbox_node *detach_locked(jw_mailbox *mb)
{
    jw_mailbox_node *all = mb->head;

    mb->head = mb->tail = NULL;
    mb->count = 0;
    mb->kicked = false;
    atomic_store_explicit(&mb->nonempty, false, memory_order_relaxed);
    return all;
}

jw_mailbox_node *jw_mailbox_take_all(jw_mailbox *mb)
{
    jw_mailbox_node *all;

    pthread_mutex_lock(&mb->lock);
    all = detach_locked(mb);
    pthread_mutex_unlock(&mb->lock);
    return all;
}

jw_mailbox_node *jw_mailbox_wait(jw_mailbox *mb, int timeout_ms)
{
    struct timespec deadline;
    jw_mailbox_node *all;

    clock_gettime(CLOCK_MONOTONIC, &deadline);
    if (timeout_ms > 0) {
        deadline.tv_sec += timeout_ms / 1000;
        deadline.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
        if (deadline.tv_nsec >= 1000000000L) {
            deadline.tv_sec++;
            deadline.tv_nsec -= 1000000000L;
        }
    }
    pthread_mutex_lock(&mb->lock);
    while (!mb->head && !mb->closed && !mb->kicked && timeout_ms != 0) {
        if (timeout_ms < 0) {
            pthread_cond_wait(&mb->cond, &mb->lock);
        } else if (pthread_cond_timedwait(&mb->cond, &mb->lock, &deadline) == ETIMEDOUT) {
            break;
        }
    }
    all = detach_locked(mb);
    pthread_mutex_unlock(&mb->lock);
    return all;
}

void jw_mailbox_kick(jw_mailbox *mb)
{
    pthread_mutex_lock(&mb->lock);
    mb->kicked = true;
    pthread_cond_broadcast(&mb->cond);
    pthread_mutex_unlock(&mb->lock);
}

void jw_mailbox_close(jw_mailbox *mb)
{
    pthread_mutex_lock(&mb->lock);
    mb->closed = true;
    pthread_cond_broadcast(&mb->cond);
    pthread_mutex_unlock(&mb->lock);
    if (mb->wake)
        mb->wake(mb->wake_arg);
}

bool jw_mailbox_is_closed(jw_mailbox *mb)
{
    bool closed;

    pthread_mutex_lock(&mb->lock);
    closed = mb->closed;
    pthread_mutex_unlock(&mb->lock);
    return closed;
}

size_t jw_mailbox_count(jw_mailbox *mb)
{
    size_t n;

    pthread_mutex_lock(&mb->lock);
    n = mb->count;
    pthread_mutex_unlock(&mb->lock);
    return n;
}

/*
 * sandbox.h - what the files of jobwire-sandbox share; jobwire-sandbox.c
 * says what the tool is for.
 *
 *   jobwire-sandbox.c  start-up: arguments, the listening socket, signals.
 *   sandbox_http.c     HTTP/1.1 serving: connections, the poll() loop,
 *                      request parsing, replies and the timing of held ones.
 *   sandbox_routes.c   what is answered: the steps (through the sim core),
 *                      the armed faults, charges, inbox, health.
 *
 * Threads: one. The loop runs everything, so nothing here locks.
 * Ownership: a conn belongs to sandbox_http.c; a handler only borrows it
 * for the call and answers through the functions below.
 */
#ifndef JW_SANDBOX_H
#define JW_SANDBOX_H

#include "providers/sim.h"

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>

typedef struct conn conn;

/* One parsed request; body points into the connection's buffer. */
typedef struct request {
    char method[16];
    char path[2048];
    char idem_key[JW_IDEMPOTENCY_KEY_MAX]; /* the Idempotency-Key header */
    bool has_idem_key;
    const char *body;
    size_t body_len;
    bool keep_alive;
} request;

/* --- sandbox_http.c --- */

/* Serves listen_fd until *stop is set (by a signal handler). */
void sandbox__run(int listen_fd, volatile sig_atomic_t *stop);
/* Closes every connection (at exit). */
void sandbox__close_all(void);

/* Queues a reply; it goes out after delay_ms (0: now). */
void sandbox__respond_raw(conn *c, int status, const char *body, size_t len, bool keep_alive,
                          int delay_ms);
/* The same with a JSON document, which it takes (decrefs). */
void sandbox__respond_json(conn *c, int status, json_t *doc, bool keep_alive, int delay_ms);
/* The admin endpoints' error shape, as jobwire's API: {"error":{code,message}}. */
void sandbox__respond_error(conn *c, int status, const char *code, bool keep_alive, const char *fmt,
                            ...) __attribute__((format(printf, 5, 6)));
/* A /steps error in the contract's shape, so the provider can quote it. */
void sandbox__respond_step_error(conn *c, int status, bool retryable, bool keep_alive,
                                 const char *fmt, ...) __attribute__((format(printf, 5, 6)));
/* No reply: the connection is reset (SO_LINGER 0) once the handler returns. */
void sandbox__reset(conn *c);
/* The queued reply is withheld: the connection closes delay_ms from now instead. */
void sandbox__hold_then_close(conn *c, int delay_ms);

/* --- sandbox_routes.c --- */

/* The sim core the routes answer with; set once before sandbox__run. */
void sandbox__routes_init(jw_sim *sim);
/* Answers one complete request (404/405 when no route takes it). */
void sandbox__dispatch(conn *c, const request *r);

#endif

/*
 * wire.h - one gate for every byte written to a WebSocket connection's socket,
 * so that jobwire's own writes (from any thread) and lws' (on the loop
 * thread) never split each other's frames.
 *
 * Why
 *   A publish round's writes go straight to the sockets, on helper threads,
 *   while the loop thread goes on running the engine and lws (wsconn.c,
 *   fanout.c). lws writes frames of its own on those sockets, with no
 *   callback before them: the pong answering a client's PING, the echo of a
 *   client's CLOSE, the close frame when it drops a connection. A socket
 *   whose send buffer is full takes part of a frame; another frame written
 *   before the rest would corrupt the stream. So every write to such a
 *   socket passes this gate, which keeps one rule: once part of a frame has
 *   gone, its rest goes before anything else.
 *
 * How
 *   A connection's socket is registered (jw_wire_open) from ESTABLISHED to
 *   CLOSED. The owner (wsconn.c, on the loop thread or a helper) writes whole
 *   frames with jw_wire_send: what the socket does not take is kept here (the
 *   "held" bytes) and sent first at the next write, whoever makes it. lws'
 *   writes reach the gate because jobwire defines send() (lws 4.1 writes a
 *   plain TCP socket with send(); the executable's definition comes first in
 *   the dynamic linker's search, so it is the one lws calls; the C library's
 *   is sendto with no address, which the gate calls). An lws write first
 *   sends what is held, and is told EAGAIN (lws then keeps it and retries
 *   at the socket's next POLLOUT) when the held bytes do not all go; when the
 *   socket takes only part of an lws write, the owner's writes wait until lws
 *   has sent the rest (jw_wire_send answers JW_WIRE_WAIT). A send() on any
 *   other descriptor goes straight to sendto. jw_wire_init checks that the
 *   definition is the one the process uses; if it is not, jw_wire_open
 *   answers NULL and every write goes through lws on the loop thread.
 *
 *   One mutex per socket, held for the sends of one write: a helper's write
 *   and an lws write on the same socket wait for each other for a system
 *   call at most.
 *
 * Ownership and threads
 *   jw_wire_init and jw_wire_shutdown: alone (no other thread running).
 *   jw_wire_open, jw_wire_close, jw_wire_ref, jw_wire_unref:
 *   the loop thread. jw_wire_send, jw_wire_held: any thread holding a
 *   reference. A wire lives while references remain: the connection's, one
 *   per write handed to a helper. After jw_wire_close the socket is no longer
 *   written through it (the descriptor may be closed and reused).
 */
#ifndef JW_WIRE_H
#define JW_WIRE_H

#include <stdbool.h>
#include <stddef.h>

typedef struct jw_wire jw_wire;

/*
 * Registration for descriptors 0..max_fd-1 (the process' open-file limit),
 * before any other thread runs (they call send(), which reads the table).
 * Whether the gate stands in front of lws' writes: false (and every
 * jw_wire_open answers NULL) when the process' send() is not jobwire's.
 */
bool jw_wire_init(int max_fd);
/* Frees the registration table; after every wire was closed. */
void jw_wire_shutdown(void);

/* fd's gate, one reference (the caller's); NULL: no gate, write through lws. */
jw_wire *jw_wire_open(int fd);
/*
 * The connection is closing (CLOSED, before lws closes fd): waits for a write
 * under way on another thread, stops every later one (JW_WIRE_CLOSED), and
 * drops the caller's reference. NULL is ignored.
 */
void jw_wire_close(jw_wire *w);
jw_wire *jw_wire_ref(jw_wire *w);
void jw_wire_unref(jw_wire *w);

typedef enum jw_wire_result {
    JW_WIRE_SENT,   /* everything went, held bytes included */
    JW_WIRE_HELD,   /* the socket took part: the rest is held, and goes first next time */
    JW_WIRE_WAIT,   /* nothing of this write went: held bytes, or the rest of an lws
                       write, still wait for the socket; write again once it drains */
    JW_WIRE_FAILED, /* the socket refused for good (errno in *err) */
    JW_WIRE_CLOSED, /* jw_wire_close was called */
} jw_wire_result;

/*
 * Sends the held bytes, then len bytes of whole frames at p (len may be 0:
 * only the held bytes). Never blocks on the socket.
 */
jw_wire_result jw_wire_send(jw_wire *w, const char *p, size_t len, int *err);
/* Bytes held now (kept here, not yet taken by the socket). */
size_t jw_wire_held(jw_wire *w);

#endif

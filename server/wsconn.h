/*
 * wsconn.h - what every server WebSocket connection does with its output,
 * shared by the jobwire.v1 endpoint (ws.c) and the Supabase endpoint
 * (realtime.c).
 *
 * What it does
 *   A connection has one output queue of encoded messages (jw_wsmsg,
 *   reference-counted: a delta encoded once sits in every subscriber's queue).
 *   The queue is bounded in bytes (max_queue); the endpoint decides what may be
 *   shed when a message does not fit (jw_wsconn_make_room calls its shed hook).
 *   Output leaves in one of two shapes: gathered (jobwire.v1: up to 64 KiB of
 *   messages per frame, newline-separated) or one message per frame (Phoenix),
 *   as many whole frames as fit in 64 KiB going out in one write.
 *
 *   Writes happen in two ways. Normally a connection with something queued
 *   asks lws for a WRITEABLE callback, once until it comes (on libuv each
 *   request restarts the socket's uv_poll and drops readiness already
 *   reported: asking at every publish round can starve a socket). Between
 *   jw_wsconns_hold and jw_wsconns_flush (a publish round), connections given
 *   something wait on a dirty list instead, and the flush writes each one at
 *   once, in the order they were first given something: a round to 2,000
 *   sockets costs 2,000 sends, not 2,000 callbacks.
 *
 *   A plain TCP connection's writes go straight to its socket (send, not
 *   lws_write) through its gate (wire.h), which lws' own writes (pongs,
 *   closes) pass too, so neither splits the other's frames. A round of many
 *   is handed to the helper threads of a jw_fanout pool (in parts of
 *   JW_WSCONN_ROUND_MAX) and the loop thread goes on at once (the engine,
 *   lws; between its turns it takes part, a chunk at a time): the kernel's
 *   send path, most of a round's cost, runs on other cores, and nothing waits
 *   for it. While its write is with a helper a connection is "in flight": the
 *   messages the write carries are off its queue (they are the write's until
 *   it returns), and what it is given meanwhile waits in the queue for the
 *   round after the write came back (jw_fanout_drain, then the flush). What
 *   a socket does not take is held by the gate, which sends it before
 *   anything else; the connection then waits for WRITEABLE. A TLS
 *   connection's writes are lws', on the loop thread.
 *
 *   The process' memory for queued output is bounded too (jw_wsmem,
 *   --ws-max-queue-total), across every connection of both endpoints: a
 *   per-connection bound counts what the client has yet to receive, so
 *   10,000 connections at 1 MiB each could hold 10 GiB of distinct messages.
 *   The budget counts what the process holds: each queued message once,
 *   however many queues share it, each queue entry (in flight too), and what
 *   the gate or lws keeps of a write the socket did not take. Past the limit, the connections
 * furthest behind (most bytes queued) are shed as if past their own bound (the endpoint's shed
 * hook: jobwire.v1 owes snapshots, Phoenix channels get phx_error) until it is under three quarters
 * of the limit. The check runs at the end of a publish round (when no set is held) and, for output
 *   queued outside a round, from a timer due at once.
 *
 *   Closing is polite: jw_wsconn_close marks the connection, what is queued
 *   still leaves, then the closing handshake starts with the code and reason.
 *
 *   Liveness (jw_wsconns_set_liveness): a connection the client has sent no
 *   message or pong on for ping_us is sent a PING; if none comes in ping_us
 *   after the ping went, and none waits unread in the socket, it is dropped
 *   (as it is when the socket has not even taken the ping 2 * ping_us after
 *   it was due). One jw_timer per connection in a heap on the monotonic
 *   clock (a wall-clock step must not drop every connection at once), moved
 *   when it fires and when the ping goes: a frame received just stamps the
 *   time. This replaces lws' own validity timers: lws 4.1 keeps its timers
 *   in one list sorted by walking it from the front, and a connection's
 *   ping timer, re-armed at each pong, landed behind all the others, as did
 *   every HTTP response's keep-alive timer: each walked every WebSocket
 *   connection (at 10,000 connections, 0.3 ms of the loop thread per HTTP
 *   request).
 *
 * Ownership
 *   The endpoint embeds a jw_wsconn in its own connection struct and gives it
 *   to jw_wsconn_open at ESTABLISHED and jw_wsconn_closed at CLOSED. The set
 *   (jw_wsconns) is the endpoint's: its connections by key, the dirty list,
 *   the frame buffer and the counters.
 *
 * Threads
 *   Loop thread only, but for a round's writes handed to helpers (see
 *   above): a helper reads the write's messages (which nothing else writes
 *   until it returns) and calls the gate; the rest waits for the loop
 *   thread, which drains the finished rounds (jw_fanout_drain) inside a
 *   publish round of its own.
 */
#ifndef JW_WSCONN_H
#define JW_WSCONN_H

#include "jw_buf.h"
#include "jw_map.h"
#include "jw_timers.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct lws;

/* One encoded server message, shared by every queue it is in. */
typedef struct jw_wsmsg {
    int refs;
    int qrefs; /* the queue entries holding it: counted in the jw_wsmem while > 0 */
    size_t len;
    char data[]; /* NUL-terminated for convenience */
} jw_wsmsg;

/* A message of n bytes, one reference. */
jw_wsmsg *jw_wsmsg_new(const char *p, size_t n);
/* parts[0..n) joined with '\n' into one message, as a gathered frame joins them. */
jw_wsmsg *jw_wsmsg_join(jw_wsmsg *const *parts, size_t n);
/* doc encoded compactly; takes doc. */
jw_wsmsg *jw_wsmsg_json(json_t *doc);
/* NULL is ignored. */
void jw_wsmsg_unref(jw_wsmsg *m);

/* A queued message: pre (may be NULL) then m, leaving as one message. */
typedef struct jw_wsq {
    struct jw_wsq *next;
    jw_wsmsg *pre, *m;
    const void *tag;  /* the endpoint's: what jw_wsconn_drop_tag matches (a job) */
    unsigned counted; /* the stream messages (deltas, events) it carries, counted and
                         sheddable: one, or a batch joined into one (jobwire.v1); 0: a reply */
} jw_wsq;

/*
 * The socket side; jw_wsconn_lws_io by default. Unit tests give a fake.
 * write gets len bytes at p with LWS_PRE bytes of room before p, and
 * returns 0 when the socket (or lws' own buffer) took them all.
 */
typedef struct jw_wsconn_io {
    void (*ask_writable)(struct lws *wsi);
    int (*write)(struct lws *wsi, unsigned char *p, size_t len);
    /* The same for len bytes that are already whole frames, headers included. */
    int (*write_frames)(struct lws *wsi, unsigned char *p, size_t len);
    bool (*backed_up)(struct lws *wsi); /* lws still holds bytes of an earlier write */
    void (*close)(struct lws *wsi, int code, const char *reason);
    void (*kill)(struct lws *wsi); /* a direct write failed: drop the connection */
    /*
     * At open: the socket jobwire writes itself, through its gate (wire.h),
     * or -1 when only lws may write it (TLS). NULL: always -1.
     */
    int (*direct_fd)(struct lws *wsi);
    /*
     * lws began a closing handshake (a close reason is set: by jobwire, or by
     * lws on the peer's protocol error); from then on only lws writes, and
     * lws may still call WRITEABLE. NULL: never.
     */
    bool (*closing)(struct lws *wsi);
    /* Sends a PING (a short payload the pong echoes); -1: drop it. NULL: no liveness. */
    int (*ping)(struct lws *wsi);
    /* Bytes from the client wait unread in the socket (the loop fell behind). NULL: never. */
    bool (*has_input)(struct lws *wsi);
} jw_wsconn_io;

extern const jw_wsconn_io jw_wsconn_lws_io;

typedef struct jw_wsconn jw_wsconn;
typedef struct jw_wsconns jw_wsconns;
struct jw_fanout;

/* The process' budget for queued output, shared by the sets of both endpoints. */
typedef struct jw_wsmem {
    size_t limit;    /* bytes; 0: no budget */
    size_t used;     /* bytes counted now */
    uint64_t sheds;  /* connections shed to get under the limit */
    uint64_t passes; /* times it was found over the limit and shed */
    jw_wsconns *sets[2];
    int nsets;
    jw_timers *timers; /* where the deferred check is armed; NULL: only at a round's end */
    jw_timer check;
    bool enforcing;
    size_t stuck_at;        /* a pass left it over the limit: no pass again until past this; 0 */
    int64_t (*clock)(void); /* for the log's rate limit: jw_mono_us */
    int64_t logged_us;      /* when the last "shed" line went out; 0: never */
    uint64_t unlogged_sheds, unlogged_passes;
} jw_wsmem;

/* A budget of limit bytes (0: none); a deferred check is armed on timers (may be NULL). */
void jw_wsmem_init(jw_wsmem *m, size_t limit, jw_timers *timers);
/* Cancels the deferred check; after the sets that count against it are released. */
void jw_wsmem_release(jw_wsmem *m);
/*
 * If over the limit, sheds the connections furthest behind until under three
 * quarters of it (or none is left to shed); how many were shed. After a pass
 * that could not get under the limit, none runs until the total grew by an
 * eighth of the limit (or fell under it).
 */
size_t jw_wsmem_enforce(jw_wsmem *m);

typedef struct jw_wsjob jw_wsjob;     /* a round's write of one connection (wsconn.c) */
typedef struct jw_wsround jw_wsround; /* a round's writes handed to helpers (wsconn.c) */
struct jw_wire;

typedef struct jw_wsconns_stats {
    uint64_t connections; /* open now */
    uint64_t counted;     /* counted messages handed to sockets */
    uint64_t frames;
    uint64_t bytes;
    uint64_t slow_closes;     /* closed with 4008 */
    uint64_t direct_writes;   /* publish-round writes sent to the socket by jobwire itself */
    uint64_t parallel_rounds; /* publish rounds whose writes were handed to helper threads */
    uint64_t pings;           /* sent to silent connections */
    uint64_t idle_drops;      /* connections dropped: nothing came after a ping */
} jw_wsconns_stats;

struct jw_wsconns {
    const char *name; /* "ws", "realtime": log lines */
    const jw_wsconn_io *io;
    bool gather;
    size_t max_queue; /* bytes; a gathered message also costs its separator */
    /*
     * Hooks, each may be NULL. shed: drop what may go to make room for a
     * reply. owes / pay: the connection is
     * owed messages built only once its queue is empty (jobwire.v1's resync
     * snapshots); pay queues them.
     */
    void (*shed)(jw_wsconn *c);
    bool (*owes)(const jw_wsconn *c);
    void (*pay)(jw_wsconn *c);
    jw_map conns; /* key -> jw_wsconn */
    uint64_t next_id;
    int hold;
    jw_wsconn *dirty_head, *dirty_tail;
    /* A publish round's direct writes; one scratch buffer per worker, LWS_PRE +
     * the frames being written (the loop thread's is [0], helper i's [i]). */
    struct jw_fanout *pool; /* NULL: the loop thread writes alone */
    size_t parallel_min;    /* writes in a round before they are handed to the pool */
    jw_wsround *round;      /* the flush's, being built; NULL */
    size_t rounds_out;      /* rounds with the pool, not yet drained */
    jw_buf *scratch;
    int nscratch;
    jw_timers *timers; /* liveness, on the clock below: NULL, off */
    int64_t ping_us;
    int64_t (*clock)(void); /* liveness' clock: jw_mono_us (unit tests: a fake) */
    void (*yield)(void);    /* between a round's parts written alone: sched_yield (tests: a fake) */
    jw_wsconns_stats stats;
    jw_wsmem *mem; /* the process' budget (borrowed); NULL: none */
};

struct jw_wsconn {
    jw_wsconns *set;
    struct lws *wsi;
    uint64_t id;
    char key[24];
    bool open;        /* between jw_wsconn_open and jw_wsconn_closed */
    bool closing;     /* jw_wsconn_close was called */
    bool close_begun; /* the closing handshake is under way */
    bool want_write;  /* a WRITEABLE callback was asked for and has not come */
    bool ended;       /* nothing more is written: a close began, or a write failed */
    bool dirty;       /* on the set's dirty list */
    jw_wsconn *dprev, *dnext;
    int close_code;
    char close_reason[64];
    jw_wsq *qhead, *qtail;
    size_t qbytes;
    size_t qcounted;      /* queued counted messages */
    jw_timer live;        /* its liveness check */
    jw_timer close_due;   /* a close asked for and not yet begun: the drop deadline */
    int64_t heard_us;     /* when the client last sent a message or pong (or connected) */
    int64_t pinged_us;    /* when the ping not yet answered was asked for; 0: none */
    int64_t ping_sent_us; /* when it was written; 0: not yet */
    bool ping_owed;       /* a ping waits for the next WRITEABLE */
    size_t lws_held;      /* bytes the gate or lws may still hold of our writes (counted in mem) */
    struct jw_wire *wire; /* the socket's gate: jobwire writes it; NULL: lws does (TLS) */
    jw_wsjob *job;        /* its write with a helper (in flight); NULL */
    size_t fbytes;        /* the bound's bytes of the messages in flight */
};

#define JW_WSCONN_FRAME 65536 /* bytes gathered into one frame, unless one message is bigger */
/*
 * A round's writes go to the helpers in parts of at most this many: each part
 * comes back (its connections may be written again) once its own writes are
 * done, not the whole round's: 2,000 sends are ~10 ms on one core.
 */
#define JW_WSCONN_ROUND_MAX 128

void jw_wsconns_init(jw_wsconns *s, const char *name, bool gather, size_t max_queue);
void jw_wsconns_release(jw_wsconns *s);
/*
 * Hands publish rounds of at least min writes to pool's helper threads
 * (borrowed; NULL: never); the loop thread drains the pool (jw_fanout_drain)
 * inside a publish round. Before any connection opens. Release waits for
 * the set's rounds still with the pool.
 */
void jw_wsconns_set_pool(jw_wsconns *s, struct jw_fanout *pool, size_t min);

/*
 * s's queues count against m (borrowed; at most two sets per budget). Before
 * any connection opens.
 */
void jw_wsconns_set_mem(jw_wsconns *s, jw_wsmem *m);

/*
 * Turns liveness on (see the header comment): timers is the loop's heap on
 * the monotonic clock (borrowed; s->clock reads that clock), ping_us > 0.
 * Before any connection opens; without it, and without an io ping,
 * connections are never pinged.
 */
void jw_wsconns_set_liveness(jw_wsconns *s, jw_timers *timers, int64_t ping_us);

/* ESTABLISHED: numbers c, registers it under c->key. c is zeroed first. */
void jw_wsconn_open(jw_wsconns *s, jw_wsconn *c, struct lws *wsi);
/* The client sent a message or a pong: it is alive (stamped with s->clock). */
void jw_wsconn_heard(jw_wsconn *c);
/* CLOSED: drops its queue and leaves the set. Safe on a connection never opened. */
void jw_wsconn_closed(jw_wsconn *c);
jw_wsconn *jw_wsconn_find(jw_wsconns *s, const char *key);

/*
 * Queues pre (may be NULL) and m as one entry, taking references of its own,
 * without looking at the bound: callers bound it (jw_wsconn_fits,
 * jw_wsconn_make_room). counted: the stream messages the entry carries (0 for
 * a reply); a set that gathers may be given several '\n'-joined in one m.
 */
void jw_wsconn_push(jw_wsconn *c, jw_wsmsg *pre, jw_wsmsg *m, const void *tag, unsigned counted);
/* Whether len more bytes fit under the bound. */
bool jw_wsconn_fits(const jw_wsconn *c, size_t len);
/*
 * Whether len more bytes of a reply fit, once the shed hook dropped what it
 * may. A client whose replies alone pass the bound sends without reading: its
 * queue goes and it is closed with 4008 (false).
 */
bool jw_wsconn_make_room(jw_wsconn *c, size_t len);
/* Drops the queued entries tagged tag; how many. */
size_t jw_wsconn_drop_tag(jw_wsconn *c, const void *tag);
/* Drops the queued entries that carry counted messages; how many entries. */
size_t jw_wsconn_drop_counted(jw_wsconn *c);
void jw_wsconn_drop_all(jw_wsconn *c);
/* Closes with 4008 after what is queued, counted as a slow close; why goes to the log. */
void jw_wsconn_slow_close(jw_wsconn *c, const char *why);

/* Closes after what is queued has left; the first call's code and reason win. */
void jw_wsconn_close(jw_wsconn *c, int code, const char *reason);
/* The connection owes something (its owes hook): ask to be written. */
void jw_wsconn_want_write(jw_wsconn *c);
/* SERVER_WRITEABLE: writes what the socket takes; -1 tells lws to drop it. */
int jw_wsconn_on_writable(jw_wsconn *c);
/*
 * WS_PEER_INITIATED_CLOSE: the client sent a close frame. Nothing more is
 * written to c (lws answers the close itself); it stays open until CLOSED.
 */
void jw_wsconn_peer_closed(jw_wsconn *c);

/* A publish round (nestable): see the header comment. */
void jw_wsconns_hold(jw_wsconns *s);
void jw_wsconns_flush(jw_wsconns *s);
/* Shutdown: closes every connection with code and reason; how many are open. */
size_t jw_wsconns_close_all(jw_wsconns *s, int code, const char *reason);

#endif

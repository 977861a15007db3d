/*
 * jw_util.h - small helpers every module uses: clocks, UUIDs, the signal mask
 * of the threads a module starts.
 * All functions are safe from any thread.
 */
#ifndef JW_UTIL_H
#define JW_UTIL_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define JW_UUID_LEN 36 /* canonical text form, without the NUL */

/* Wall clock in microseconds since the epoch (delta timestamps). */
int64_t jw_now_us(void);
/* Monotonic clock in microseconds (durations, deadlines). */
int64_t jw_mono_us(void);

/* The value of a hex digit (either case), or -1. */
int jw_hex_digit(char c);

/* True for the canonical 8-4-4-4-12 hex form (either case), NUL-terminated. */
bool jw_uuid_valid(const char *s);
/* A random (version 4) UUID in lower-case canonical form; out has 37 bytes. */
void jw_uuid_new(char out[JW_UUID_LEN + 1]);

/* Formats ts_us as ISO 8601 UTC with microseconds; out has at least 32 bytes. */
void jw_format_ts(int64_t ts_us, char *out, size_t size);

/*
 * Blocks SIGTERM and SIGINT in the calling thread, its mask kept in *old, for
 * starting a thread: the thread inherits the mask, so those signals stay with
 * the loop thread. jw_signals_restore(old) once it was started.
 */
void jw_signals_block(sigset_t *old);
void jw_signals_restore(const sigset_t *old);

#endif

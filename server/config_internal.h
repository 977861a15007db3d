/*
 * config_internal.h - what the files of the config module share; not for
 * the rest of the server (config.h is the module's interface).
 *
 *   config.c          loading: command line, environment, defaults, the
 *                     typed rows' one parser, the checks across settings,
 *                     --help.
 *   config_settings.c the table of settings, and the parsers of the values
 *                     that are not a number, a duration, a switch, a choice
 *                     or a bounded string (addresses, URLs, secrets, lists).
 *   config_tls.c      the TLS certificate and key checks (OpenSSL).
 *
 * tests/unit/test_config.c reads the table to check every row's bounds.
 *
 * Threads: the main thread only, like config.h.
 */
#ifndef JW_CONFIG_INTERNAL_H
#define JW_CONFIG_INTERNAL_H

#include "config.h"

#include <stdbool.h>
#include <stddef.h>

/*
 * A parser of a special value gets the value and the name it came under
 * ("--listen" or "JOBWIRE_LISTEN"), so its message speaks the operator's
 * language. It returns 0 or JW_ECONFIG with err filled.
 */
typedef int (*config__parser)(jw_config *c, const char *value, const char *name, char *err,
                              size_t errlen);

/* What a value looks like; every kind but CONFIG_SPECIAL is parsed by config.c alone. */
typedef enum config__kind {
    CONFIG_SPECIAL,  /* .parse does it all */
    CONFIG_INT,      /* a whole number lo..hi (of unit) */
    CONFIG_REAL,     /* a number real_lo..real_hi */
    CONFIG_DURATION, /* seconds, or a whole number with s, m, h or d; lo..hi seconds */
    CONFIG_BOOL,     /* 1/true/yes/on or 0/false/no/off/"" */
    CONFIG_ENUM,     /* one of .names */
    CONFIG_STRING,   /* any text of at most hi bytes */
} config__kind;

/* The C type of the jw_config field a typed row writes, found by CONFIG_FIELD. */
typedef enum config__store {
    CONFIG_STORE_NONE, /* CONFIG_SPECIAL: the parser writes its fields */
    CONFIG_STORE_INT,
    CONFIG_STORE_LONG,
    CONFIG_STORE_SIZE,
    CONFIG_STORE_DOUBLE,
    CONFIG_STORE_BOOL,
    CONFIG_STORE_STRING, /* char *, owned by jw_config */
} config__store;

struct config__choice {
    const char *name;
    int value;
};

struct config__setting {
    const char *flag;     /* long flag without the dashes */
    const char *env;      /* environment variable */
    const char *metavar;  /* shape of the value in --help; NULL: a switch */
    const char *def;      /* value used when neither flag nor variable is set */
    const char *def_text; /* shown in --help instead of def, e.g. for derived defaults */
    const char *help;

    config__kind kind;
    config__parser parse; /* CONFIG_SPECIAL */

    size_t offset; /* typed rows: the field in jw_config */
    config__store store;
    long lo, hi;             /* INT, DURATION (seconds); STRING: hi is the longest */
    double real_lo, real_hi; /* REAL */
    const char *unit;        /* INT: "a whole number of <unit>" in messages; NULL: none */
    const char *expect;      /* DURATION: what the message says the value must be */
    const struct config__choice *choices; /* ENUM: ends with a NULL name */
};

/* The store kind of a jw_config field, from its C type: a row cannot write the wrong width. */
#define CONFIG_STORE_OF(expr)                                                                      \
    _Generic((expr),                                                                               \
        int: CONFIG_STORE_INT,                                                                     \
        long: CONFIG_STORE_LONG,                                                                   \
        size_t: CONFIG_STORE_SIZE,                                                                 \
        double: CONFIG_STORE_DOUBLE,                                                               \
        bool: CONFIG_STORE_BOOL,                                                                   \
        char *: CONFIG_STORE_STRING)
#define CONFIG_FIELD(field)                                                                        \
    .offset = offsetof(jw_config, field), .store = CONFIG_STORE_OF(((jw_config *)0)->field)

/*
 * The one table, in --help order and parse order. The count is spelled out
 * so config.c can size its arrays; config_settings.c does not compile when
 * the table has another number of rows.
 */
#define CONFIG__SETTING_COUNT 42
extern const struct config__setting config__settings[CONFIG__SETTING_COUNT];

/* Parses one value under name into c, by its row's kind. */
int config__parse_value(jw_config *c, const struct config__setting *s, const char *value,
                        const char *name, char *err, size_t errlen);

/* Strict decimal integer in [min, max]: digits only, no sign, no spaces. */
bool config__parse_long(const char *v, long min, long max, long *out);

void config__replace_str(char **slot, const char *v);
/* Frees a secret string after overwriting it. */
void config__free_secret(char **slot);
void config__free_origins(jw_config *c);

/* config_tls.c: read, parse and check the files now, so lws cannot refuse them later. */
int config__parse_tls_cert(jw_config *c, const char *v, const char *name, char *err, size_t errlen);
int config__parse_tls_key(jw_config *c, const char *v, const char *name, char *err, size_t errlen);
/* Both files or neither, and the key belongs to the certificate. */
int config__check_tls(const jw_config *c, char *err, size_t errlen);

#endif

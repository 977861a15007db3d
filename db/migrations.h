/* migrations.h - the schema migrations embedded at build time (db/ internal). */
#ifndef JW_DB_MIGRATIONS_H
#define JW_DB_MIGRATIONS_H

struct jw_migration {
    const char *name; /* "001_initial" */
    const char *sql;
};

/* Ends with a zeroed entry. */
extern const struct jw_migration jw_migrations[];

#endif

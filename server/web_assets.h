/* web_assets.h - the files of web-client/, embedded at build time (server internal). */
#ifndef JW_WEB_ASSETS_H
#define JW_WEB_ASSETS_H

#include <stddef.h>

struct jw_web_asset {
    const char *name; /* "index.html": a top-level file of web-client/ */
    const unsigned char *data;
    size_t len;
};

/* Ends with a zeroed entry. */
extern const struct jw_web_asset jw_web_assets[];

#endif

/*
 * Opening a backend from a repository address:
 *   /srv/backups, file:///srv/backups      -> posix
 *   s3://BUCKET/PREFIX                       -> s3
 */
#ifndef DP_BACKEND_H
#define DP_BACKEND_H

#include "dp/sys/backend.h"

int dp_backend_open(dp_backend **out, const char *url, const dp_backend_opts *opts);
void dp_backend_free(dp_backend *b);

/* remove_many if the backend has it, else remove in a loop. */
int dp_backend_remove_many(dp_backend *b, const char *const *keys, size_t n);

/* Whole-object helpers. */
int dp_backend_get_all(dp_backend *b, const char *key, dp_buf *out);

#endif

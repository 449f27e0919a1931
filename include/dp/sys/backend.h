/*
 * The transport contract: what a repository backend (posix, s3, the test
 * harness's in-memory and faulty backends) implements.
 *
 * A backend moves opaque objects named by keys such as "config",
 * "data/ab/ab12...", "index/<id>". Keys use '/' as separator, never start with
 * '/', and never contain "..", "//" or NUL (the repository code builds them;
 * backends may assert). Only the format code in repos/ knows what an object
 * holds.
 *
 * Guarantees a backend gives:
 *  - put is atomic: a reader sees either no object or the whole object, never
 *    part of one, also after a crash or kill -9 mid-put. When put returns 0 the
 *    object is durable (posix: fsync file and directory).
 *  - put replaces an existing object atomically (used only for lock objects;
 *    everything else in a repository is written once).
 *  - every member may be called from several threads at once.
 *  - retries with backoff happen inside the backend; a final failure folds
 *    all attempts into one dp_error message.
 *
 * Ownership: data passed to put is borrowed for the call. get appends to a
 * caller-owned dp_buf. Strings passed to the list callback are borrowed for
 * the call.
 */
#ifndef DP_SYS_BACKEND_H
#define DP_SYS_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "dp/buf.h"

#define DP_BACKEND_VERSION 1

/* Capability flags: callers test these, never the backend's type. */
enum {
	DP_BACKEND_F_RANGE = 1 << 0, /* get honours off/len without reading the rest */
	DP_BACKEND_F_PARALLEL = 1 << 1, /* puts gain from several in flight (network) */
	DP_BACKEND_F_LOCAL = 1 << 2 /* objects are files on this host */
};

typedef struct dp_backend dp_backend;

/* Called once per object; return non-zero to stop the listing (that value
 * is returned by list). */
typedef int (*dp_backend_list_cb)(const char *key, uint64_t size, void *arg);

struct dp_backend {
	unsigned version; /* DP_BACKEND_VERSION */
	unsigned features; /* DP_BACKEND_F_* */
	const char *name; /* "posix", "s3": for messages */

	/* Required. */
	int (*put)(dp_backend *b, const char *key, const void *data, size_t len);
	/* Appends bytes [off, off+len) of the object to out; len == UINT64_MAX
	 * means to the end. DP_ENOTFOUND if the object does not exist; reading
	 * past the end is DP_ECORRUPT (a truncated object). */
	int (*get)(dp_backend *b, const char *key, uint64_t off, uint64_t len, dp_buf *out);
	/* DP_ENOTFOUND if missing. */
	int (*stat)(dp_backend *b, const char *key, uint64_t *size_out);
	/* Every object whose key starts with prefix (e.g. "index/"), in no
	 * particular order. Temporary or partial objects are never listed. */
	int (*list)(dp_backend *b, const char *prefix, dp_backend_list_cb cb, void *arg);
	/* Removing a missing object is not an error. */
	int (*remove)(dp_backend *b, const char *key);
	void (*free)(dp_backend *b);

	/* Optional (NULL if absent). */
	/* Creates the container (directory, bucket prefix) if needed and checks
	 * it is usable; called by "repo init". */
	int (*create)(dp_backend *b);
	/* Removes several objects; the default loops over remove. */
	int (*remove_many)(dp_backend *b, const char *const *keys, size_t n);
	/* Removes what interrupted puts left under prefix (posix: temporary
	 * files of a process killed mid-put). Called by prune under the
	 * repository's exclusive lock, when no put under prefix can be in
	 * progress. Backends whose puts leave nothing behind (S3) omit it. */
	int (*cleanup)(dp_backend *b, const char *prefix);
};

/* Options every backend may need; fields a backend does not use are ignored.
 * Secrets are never taken from here: backends read them from the
 * environment or files named here. */
typedef struct dp_backend_opts {
	const char *s3_endpoint; /* URL, e.g. http://127.0.0.1:9000 */
	const char *s3_region; /* default us-east-1 */
	const char *s3_uri_style; /* "path" or "virtual" */
	const char *s3_ca_file; /* PEM bundle for https */
	const char *s3_credentials_file; /* AWS-style credentials file */
	int timeout_ms; /* per request, 0 = backend default */
	int retries; /* extra attempts on transient errors, -1 = default */
} dp_backend_opts;

/* Each transport registers a constructor in the table in repos/backend.c.
 * url has had its scheme recognised by the table entry. */
typedef int (*dp_backend_open_fn)(dp_backend **out, const char *url, const dp_backend_opts *opts);

int dp_posix_backend_open(dp_backend **out, const char *url, const dp_backend_opts *opts);
int dp_s3_backend_open(dp_backend **out, const char *url, const dp_backend_opts *opts);

#endif

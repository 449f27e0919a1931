/*
 * Opening a backend from a repository address, and the small helpers every
 * caller of a backend shares (see dp/backend.h).
 *
 * A transport is one line in the table below: a scheme prefix and its
 * constructor. An address with no "scheme://" in front is a posix path
 * (absolute or relative). The table is read-only, so everything here is
 * thread-safe as far as the backends themselves are.
 */
#include "dp/backend.h"

#include <assert.h>
#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "dp/error.h"

static const struct {
	const char *prefix; /* "file://": matched case-insensitively */
	dp_backend_open_fn open;
} transports[] = {
    {"file://", dp_posix_backend_open},
    {"s3://", dp_s3_backend_open},
};

#define NTRANSPORTS (sizeof(transports) / sizeof(transports[0]))

/* Length of a leading "scheme://" (RFC 3986 scheme), or 0 if there is none:
 * then the address is a path. */
static size_t scheme_len(const char *url)
{
	if (!isalpha((unsigned char)url[0]))
		return 0;
	size_t i = 1;
	while (isalnum((unsigned char)url[i]) || url[i] == '+' || url[i] == '-' || url[i] == '.')
		i++;
	return strncmp(url + i, "://", 3) == 0 ? i + 3 : 0;
}

int dp_backend_open(dp_backend **out, const char *url, const dp_backend_opts *opts)
{
	assert(out);
	*out = NULL;
	if (!url || !url[0])
		return dp_error_set(DP_EUSAGE, "no repository address given: use a path, "
		                               "file:///PATH or s3://BUCKET/PREFIX");
	size_t n = scheme_len(url);
	if (n == 0)
		return dp_posix_backend_open(out, url, opts);
	for (size_t i = 0; i < NTRANSPORTS; i++) {
		if (strlen(transports[i].prefix) == n &&
		    strncasecmp(url, transports[i].prefix, n) == 0)
			return transports[i].open(out, url, opts);
	}
	char known[256] = "a path";
	size_t len = strlen(known);
	for (size_t i = 0; i < NTRANSPORTS && len < sizeof(known); i++) {
		int w = snprintf(known + len, sizeof(known) - len, ", %s...", transports[i].prefix);
		if (w < 0)
			break;
		len += (size_t)w;
	}
	return dp_error_set(DP_EUSAGE,
	                    "unsupported repository address \"%s\": scheme \"%.*s\" is not known "
	                    "(use %s)",
	                    url, (int)(n - 3), url, known);
}

void dp_backend_free(dp_backend *b)
{
	if (b)
		b->free(b);
}

int dp_backend_remove_many(dp_backend *b, const char *const *keys, size_t n)
{
	if (n == 0)
		return 0;
	if (b->remove_many)
		return b->remove_many(b, keys, n);
	for (size_t i = 0; i < n; i++) {
		int rc = b->remove(b, keys[i]);
		if (rc < 0)
			return rc;
	}
	return 0;
}

int dp_backend_get_all(dp_backend *b, const char *key, dp_buf *out)
{
	return b->get(b, key, 0, UINT64_MAX, out);
}

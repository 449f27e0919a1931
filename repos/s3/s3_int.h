/*
 * Private to the S3 transport (repos/s3/): the pure helpers that s3.c builds
 * requests with, split out so that tests/unit/repos/s3_test.c can check them
 * without a server.
 *
 *  - s3_uri_encode / s3_query_build: RFC 3986 percent-encoding and the
 *    SigV4 canonical query (sorted by encoded name, then value). libcurl
 *    7.88 signs the path and query exactly as they appear in the URL, so
 *    the URL we hand it must already be canonical.
 *  - s3_xml_parse: a small, bounded, non-validating XML reader for the few
 *    S3 responses we read (ListBucketResult, DeleteResult, Error).
 *  - s3_cred_*: credentials from the environment or an AWS credentials file.
 *  - s3_addr_parse: "s3://BUCKET/PREFIX" and the endpoint URL.
 *
 * Everything here is reentrant; nothing keeps global state.
 */
#ifndef DP_REPOS_S3_INT_H
#define DP_REPOS_S3_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dp/buf.h"

/* Appends s[0..n) percent-encoded: unreserved characters (A-Z a-z 0-9 - . _ ~)
 * are kept, '/' is kept when keep_slash, every other byte becomes %XX
 * (upper-case hex). The result is NUL-terminated outside len. */
int s3_uri_encode(dp_buf *out, const char *s, size_t n, bool keep_slash);

/* One query parameter; value NULL is written as "name=" (SigV4 canonical
 * form of a valueless parameter such as "delete"). */
typedef struct s3_param {
	const char *name;
	const char *value;
} s3_param;

/* Appends the canonical query string: each name and value encoded with
 * s3_uri_encode (slash encoded too), pairs sorted by encoded name then
 * value, joined with '&'. Sorts params in place. */
int s3_query_build(dp_buf *out, s3_param *params, size_t n);

/* Called at the end of every element with its path from the root, e.g.
 * "ListBucketResult/Contents/Key", and its own text content (entities
 * decoded, NUL-terminated; "" for an element that only holds elements).
 * A non-zero return stops the parse and is returned by s3_xml_parse. */
typedef int (*s3_xml_cb)(const char *path, const char *text, size_t len, void *arg);

/* Parses doc[0..len). DP_ECORRUPT (message set) on malformed input, on
 * nesting deeper than 16 or on a path longer than 256 bytes. DOCTYPE and
 * entity declarations are refused, so there is no entity expansion. */
int s3_xml_parse(const char *doc, size_t len, s3_xml_cb cb, void *arg);

/* Credentials. Strings are owned and wiped by s3_cred_wipe. */
typedef struct s3_cred {
	char *key_id;
	char *secret;
	char *token; /* NULL if none */
	char source[300]; /* "environment" or "credentials file \"PATH\" [profile]" */
} s3_cred;

/* Environment first (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, optional
 * AWS_SESSION_TOKEN), then the credentials file: file if not NULL, else
 * AWS_SHARED_CREDENTIALS_FILE, else ~/.aws/credentials if it exists; the
 * profile is AWS_PROFILE or "default". DP_EAUTH with a message saying what
 * to set when none is found. Never puts a secret into a message. */
int s3_cred_load(s3_cred *out, const char *file);
void s3_cred_wipe(s3_cred *c);

/* A parsed repository address and endpoint. Owned strings, freed by
 * s3_addr_free. */
typedef struct s3_addr {
	char *bucket;
	char *prefix; /* "" or "some/prefix/" (always ends with '/') */
	char *scheme; /* "https" or "http" */
	char *host; /* host[:port] of the endpoint, without the bucket */
	char *base; /* "" or an endpoint path such as "/s3" (no trailing '/') */
	char *region;
	bool virtual_host; /* bucket in the host name, else in the path */
} s3_addr;

/* url: "s3://BUCKET[/PREFIX]". endpoint: "http[s]://HOST[:PORT][/PATH]",
 * a bare host (https), or NULL for AWS (https://s3.REGION.amazonaws.com).
 * region NULL: AWS_REGION, AWS_DEFAULT_REGION or us-east-1. style NULL:
 * "virtual" for AWS, "path" for any other endpoint. DP_EUSAGE on bad input. */
int s3_addr_parse(s3_addr *out, const char *url, const char *endpoint, const char *region,
                  const char *style);
void s3_addr_free(s3_addr *a);

#endif

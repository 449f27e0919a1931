/*
 * A throwaway s3rver (the npm S3-protocol server pinned in tests/package.json)
 * for tests: started on a free 127.0.0.1 port with its data in a directory
 * the test names, and stopped by PID.
 *
 * The server runs as a child of the process that started it, with
 * PR_SET_PDEATHSIG so it dies with that process, and an atexit hook in that
 * process (not in forked test children) kills it too: a failed test never
 * leaves a server behind. It answers to the credentials S3RVER / S3RVER
 * (dp_s3rver_env sets them). s3rver checks V2 signatures only; V4 requests
 * are accepted after checking the access key id, so signature bytes are
 * checked elsewhere (tests/unit/repos/s3_test.c).
 *
 * A missing s3rver (npm install not run) fails the test loudly.
 */
#ifndef DP_TEST_S3RVER_H
#define DP_TEST_S3RVER_H

#include <limits.h>
#include <stdbool.h>
#include <sys/types.h>

typedef struct dp_s3rver {
	pid_t pid;
	int port;
	char dir[PATH_MAX]; /* data directory */
	char log[PATH_MAX]; /* server output */
	char endpoint[64]; /* "http://127.0.0.1:PORT" */
} dp_s3rver;

/* Starts s3rver with data in dir (created if missing) on port (0: a free
 * one), creating bucket (NULL: none). Waits until it accepts connections.
 * Returns 0, or -1 with a message on stderr. */
int dp_s3rver_start(dp_s3rver *s, const char *dir, int port, const char *bucket);

/* The same over https with the given PEM key and certificate; endpoint is
 * then "https://127.0.0.1:PORT". */
int dp_s3rver_start_tls(dp_s3rver *s, const char *dir, int port, const char *bucket,
                        const char *key_pem, const char *cert_pem);

/* Writes a fresh self-signed certificate for 127.0.0.1 and localhost
 * (P-256 key; usable as its own CA bundle). Returns 0 or -1. */
int dp_s3rver_make_cert(const char *key_pem, const char *cert_pem);

/* SIGTERM (or SIGKILL with hard) and wait for the PID. Idempotent. */
void dp_s3rver_stop(dp_s3rver *s, bool hard);

/* s3rver is not crash-safe (real S3 is): it writes an object's bytes in
 * place, then an .md5 file, then a metadata file, and lists whatever object
 * file exists. After a kill -9 its store can hold objects cut off mid-write
 * (listed, with the short size) and truncated metadata (every listing of
 * that prefix then fails with 500). This removes, from a stopped server's
 * directory, every object whose metadata does not parse or whose bytes do
 * not match its stored MD5: exactly the puts that were in flight, which the
 * server never acknowledged. Returns how many objects it removed, -1 on
 * error. */
int dp_s3rver_repair(const char *dir);

/* Sets AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY to s3rver's and clears
 * AWS_SESSION_TOKEN, AWS_PROFILE and the credentials file variables. */
void dp_s3rver_env(void);

/* Path of s3rver.js: $DP_S3RVER_JS, else tests/node_modules/s3rver/bin/s3rver.js
 * under the current directory or its parents. NULL if not found. */
const char *dp_s3rver_script(void);

#endif

/*
 * Error codes and the thread-local error record.
 *
 * Every fallible function returns 0 or a negative DP_E* code and, on failure,
 * leaves a human message in a thread-local record (dp_error_set). Callers
 * propagate the code without rewrapping; the layer that handles the error
 * (usually main) prints dp_error_last() once. Each code maps to one process
 * exit status (dp_error_exit_code), the same for every binary:
 *
 *   0 ok   1 error   2 usage   3 wrong passphrase or credentials
 *   4 corrupted or unauthenticated data   5 not found   6 locked
 */
#ifndef DP_ERROR_H
#define DP_ERROR_H

enum {
	DP_OK = 0,
	DP_ERROR = -1, /* anything else: I/O, out of memory, a failed tool */
	DP_EUSAGE = -2, /* bad arguments or input from the user */
	DP_EAUTH = -3, /* wrong passphrase, rejected credentials */
	DP_ECORRUPT = -4, /* data failed authentication or does not parse */
	DP_ENOTFOUND = -5,
	DP_ELOCKED = -6,
	DP_EEXIST = -7, /* exit status 1 */
	DP_ENOSPACE = -8, /* exit status 1 */
	DP_ETRANSIENT = -9 /* a retryable transport failure (exit status 1) */
};

/* Sets the calling thread's error record and returns rc, so that
 * `return dp_error_set(DP_ENOTFOUND, "snapshot \"%s\" not found", n);` reads
 * naturally. */
int dp_error_set(int rc, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Like dp_error_set, appending ": <strerror(errnum)>". */
int dp_error_errno(int rc, int errnum, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Prepends "prefix: " to the current message (for context at a boundary
 * that knows more, e.g. the object name). Returns the current code. */
int dp_error_prefix(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* The calling thread's last message ("" if none) and code (0 if none). */
const char *dp_error_last(void);
int dp_error_code(void);
void dp_error_clear(void);

/* Copies another thread's error into this one (used to carry a worker
 * thread's failure to the caller). */
void dp_error_restore(int rc, const char *msg);

/* Maps a DP_E* code to the process exit status above. */
int dp_error_exit_code(int rc);

#endif

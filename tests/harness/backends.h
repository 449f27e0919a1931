/*
 * Test backends: an in-memory backend that counts calls, and a faulty
 * wrapper around any backend that fails chosen calls or damages what get
 * returns. Both implement the contract in dp/sys/backend.h (atomic put,
 * ranges, thread-safe) so repository code can run on them unchanged.
 *
 * Test-only code: out of memory aborts.
 */
#ifndef DP_TEST_BACKENDS_H
#define DP_TEST_BACKENDS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dp/sys/backend.h"

/* Operations, for counters and fault rules. */
typedef enum dp_test_op {
	DP_OP_PUT,
	DP_OP_GET,
	DP_OP_STAT,
	DP_OP_LIST,
	DP_OP_REMOVE, /* each key of a remove_many counts as one remove too */
	DP_OP_REMOVE_MANY,
	DP_OP_CREATE,
	DP_OP_COUNT
} dp_test_op;

const char *dp_test_op_name(dp_test_op op); /* "put", "get", ... */

/* ---- in-memory backend ---- */

/* A fresh, empty in-memory backend (name "mem", features DP_BACKEND_F_RANGE).
 * Free it with b->free(b) or dp_backend_free. */
int dp_mem_backend_new(dp_backend **out);

/* Calls made so far of one operation (also failed ones), and bytes moved. */
unsigned long dp_mem_backend_calls(dp_backend *b, dp_test_op op);
uint64_t dp_mem_backend_bytes_put(dp_backend *b);
uint64_t dp_mem_backend_bytes_got(dp_backend *b);
void dp_mem_backend_reset_counts(dp_backend *b);

/* Number of objects and their total size. */
size_t dp_mem_backend_objects(dp_backend *b, uint64_t *total_bytes);

/* Damage a stored object in place: XOR byte off with 0xff, or cut it to
 * len bytes. DP_ENOTFOUND if the key is missing, DP_EUSAGE if off/len is
 * past its end. */
int dp_mem_backend_flip(dp_backend *b, const char *key, uint64_t off);
int dp_mem_backend_truncate(dp_backend *b, const char *key, uint64_t len);

/* ---- faulty wrapper ---- */

/* Wraps inner (owned: freed with the wrapper). Name "faulty", same features
 * as inner. With no rule set it forwards every call unchanged. */
int dp_faulty_backend_new(dp_backend **out, dp_backend *inner);

/* Calls of op, counted from 1 since the wrapper was made (also those that
 * a rule failed). */
unsigned long dp_faulty_calls(dp_backend *b, dp_test_op op);

/* Makes calls nth .. nth+count-1 of op (count 0: every call from nth on)
 * fail with rc, without reaching the inner backend, setting the message
 * "injected fault: <op> call N of \"<key>\"". One rule per op; a new one
 * replaces it; rc 0 clears it. DP_OP_REMOVE rules also hit the keys of a
 * remove_many (which then falls back to one remove per key). */
void dp_faulty_fail(dp_backend *b, dp_test_op op, unsigned long nth, unsigned long count, int rc);

/* Data rules for get, applied to keys starting with key_prefix ("" = all):
 * flip: XOR with 0xff the byte at offset off of the object (only if the
 * range a get returns covers it); one rule at a time. */
void dp_faulty_flip(dp_backend *b, const char *key_prefix, uint64_t off);
/* truncate: matching objects look cut to len bytes: stat says so, get past
 * len is DP_ECORRUPT "truncated", list shows the smaller size. */
void dp_faulty_truncate(dp_backend *b, const char *key_prefix, uint64_t len);
/* Removes the flip and truncate rules. */
void dp_faulty_clear_data_rules(dp_backend *b);

/* Sleeps usec microseconds before each call of op (0 = none): widens race
 * windows, simulates a slow network. */
void dp_faulty_delay(dp_backend *b, dp_test_op op, unsigned usec);

#endif

/*
 * Shared helpers for dp's check tests: temp dirs, running the built programs,
 * making and comparing test data. Each test program has its own main, made by
 * DP_TEST_MAIN(suite_fn). Tests run forked (CK_FORK), each in a fresh temp dir.
 */
#ifndef DP_TEST_H
#define DP_TEST_H

#include <check.h>
#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

typedef struct dp_test_result {
	int status; /* exit status, or 128+signal */
	char *out; /* stdout, NUL-terminated, owned */
	char *err; /* stderr, NUL-terminated, owned */
} dp_test_result;

/* Runs `sh -c CMD` with the arguments formatted in, capturing stdout and
 * stderr. $BIN in the environment points at the built programs. */
int dp_test_run(dp_test_result *res, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void dp_test_result_free(dp_test_result *res);

/* Path of a built program: "$BIN/name" (BIN defaults to "bin"). Static
 * storage, one per name, valid for the process. */
const char *dp_test_bin(const char *name);

/* A fresh directory under $TMPDIR (or /tmp), removed by dp_test_rmrf. */
void dp_test_mkdtemp(char out[PATH_MAX], const char *tag);
void dp_test_rmrf(const char *path);

/* Writes size bytes to path: a deterministic mix (by seed) of random and
 * compressible runs, like real database files. */
void dp_test_write_data(const char *path, uint64_t size, uint32_t seed, bool compressible);
/* true if both files have the same bytes. */
bool dp_test_files_equal(const char *a, const char *b);
/* Total size of the regular files under dir. */
uint64_t dp_test_du(const char *dir);

/* The per-test temp dir made by dp_test_setup (and removed by teardown). */
extern char dp_test_dir[PATH_MAX];
void dp_test_setup(void);
void dp_test_teardown(void);

#define DP_TEST_MAIN(suite_fn)                                                                     \
	int main(void)                                                                             \
	{                                                                                          \
		SRunner *sr = srunner_create(suite_fn());                                          \
		srunner_set_fork_status(sr, CK_FORK);                                              \
		srunner_run_all(sr, CK_NORMAL);                                                    \
		int failed = srunner_ntests_failed(sr);                                            \
		srunner_free(sr);                                                                  \
		return failed ? 1 : 0;                                                             \
	}

#endif

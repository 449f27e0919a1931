/*
 * dp-worker's tree verbs that the file-level database methods use:
 * push --trailer (a producer drives a tree push over stdin/stdout and adds
 * files after the tree), --exclude-from, pull --untar (a stream snapshot
 * holding another tool's tar) and pull --owner. Each test gets a fresh
 * temp dir (the working directory) and repository.
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../harness/dp_test.h"

/* The programs by absolute path ($BIN may be relative), for commands that
 * run in the test's directory. */
static const char *prog(const char *name)
{
	static char paths[2][PATH_MAX];
	char *p = paths[strcmp(name, "dp") == 0];
	if (!p[0])
		ck_assert_ptr_nonnull(realpath(dp_test_bin(name), p));
	return p;
}

/* Every command runs in the test's own directory. */
static void init_repo(void)
{
	prog("dp"); /* resolved before the chdir */
	prog("dp-worker");
	ck_assert_int_eq(chdir(dp_test_dir), 0);
	setenv("DP_REPO_PASSPHRASE", "tree-test-passphrase", 1);
	char repo[PATH_MAX + 8];
	snprintf(repo, sizeof(repo), "%s/repo", dp_test_dir);
	setenv("DP_REPO", repo, 1);
	dp_test_result r;
	int st = dp_test_run(&r, "'%s' repo init >/dev/null", prog("dp"));
	ck_assert_msg(st == 0, "repo init: %s", r.err);
	dp_test_result_free(&r);
	st = dp_test_run(&r,
	                 "mkdir -p t/sub t/skip && printf one > t/a && printf two > t/sub/b && "
	                 "printf x > t/skip/c && printf y > t/sub/junk.tmp && "
	                 "printf 'extra bytes' > extra && printf 'skip\\n# comment\\n\\n*.tmp\\n' "
	                 "> excl");
	ck_assert_int_eq(st, 0);
	dp_test_result_free(&r);
}

/* Runs a --trailer push of t fed with INPUT (printf format, after "tree");
 * returns the exit status, output in r. */
static int trailer_push(dp_test_result *r, const char *name, const char *input)
{
	return dp_test_run(r,
	                   "printf 'tree\\n%s' | '%s' push --quiet --trailer --exclude-from excl "
	                   "%s t",
	                   input, prog("dp-worker"), name);
}

static int snapshots(void)
{
	dp_test_result r;
	ck_assert_int_eq(dp_test_run(&r, "'%s' ls --json | jq length", prog("dp-worker")), 0);
	int n = (int)strtol(r.out, NULL, 10);
	dp_test_result_free(&r);
	return n;
}

START_TEST(trailer_adds_files_and_meta)
{
	init_repo();
	dp_test_result r;
	int st = trailer_push(
	    &r, "tr1", "file\\tlate/added\\textra\\nmeta\\t{\"stop\":\"0/100\"}\\ncommit\\n");
	ck_assert_msg(st == 0, "trailer push: %s", r.err);
	/* The handshake lines come first, then the snapshot id. */
	ck_assert_msg(strncmp(r.out, "ready\ntree-read\n", 16) == 0, "stdout: %s", r.out);
	dp_test_result_free(&r);
	st = dp_test_run(&r,
	                 "'%s' pull --quiet tr1 out && cat out/late/added && echo && cat out/a && "
	                 "test -f out/sub/b && ! test -e out/skip && ! test -e out/sub/junk.tmp && "
	                 "'%s' stat --json tr1 | jq -r .meta.stop",
	                 prog("dp-worker"), prog("dp-worker"));
	ck_assert_msg(st == 0, "pull: %s %s", r.out, r.err);
	ck_assert_str_eq(r.out, "extra bytes\none0/100\n");
	dp_test_result_free(&r);
}
END_TEST

START_TEST(trailer_unfinished_or_bad_stores_nothing)
{
	init_repo();
	dp_test_result r;
	/* Input ends without "commit". */
	int st = trailer_push(&r, "tr2", "file\\tlate/added\\textra\\n");
	ck_assert_int_ne(st, 0);
	ck_assert_msg(strstr(r.err, "without \"commit\"") && strstr(r.err, "nothing was stored"),
	              "%s", r.err);
	dp_test_result_free(&r);
	/* A path that would leave the tree. */
	st = trailer_push(&r, "tr3", "file\\t../evil\\textra\\ncommit\\n");
	ck_assert_int_ne(st, 0);
	ck_assert_msg(strstr(r.err, "\"../evil\""), "%s", r.err);
	dp_test_result_free(&r);
	/* A source that is not a regular file, an unknown instruction. */
	st = trailer_push(&r, "tr4", "file\\tx\\tt/sub\\ncommit\\n");
	ck_assert_int_ne(st, 0);
	ck_assert_msg(strstr(r.err, "not a regular file"), "%s", r.err);
	dp_test_result_free(&r);
	st = trailer_push(&r, "tr5", "frobnicate\\ncommit\\n");
	ck_assert_int_ne(st, 0);
	ck_assert_msg(strstr(r.err, "unknown instruction"), "%s", r.err);
	dp_test_result_free(&r);
	/* No "tree": nothing is read. */
	st = dp_test_run(&r, "'%s' push --quiet --trailer tr6 t </dev/null", prog("dp-worker"));
	ck_assert_int_ne(st, 0);
	ck_assert_msg(strstr(r.err, "before \"tree\""), "%s", r.err);
	dp_test_result_free(&r);
	/* --trailer needs a directory. */
	st = dp_test_run(&r, "'%s' push --trailer tr7 extra </dev/null", prog("dp-worker"));
	ck_assert_int_eq(st, 2);
	dp_test_result_free(&r);
	ck_assert_int_eq(snapshots(), 0);
}
END_TEST

START_TEST(pull_untar_and_owner)
{
	init_repo();
	dp_test_result r;
	/* Another tool's tar (GNU tar, ustar) stored as a stream. */
	int st = dp_test_run(&r, "tar -C t -cf - . | '%s' push --quiet gnutar - >/dev/null",
	                     prog("dp-worker"));
	ck_assert_msg(st == 0, "%s", r.err);
	dp_test_result_free(&r);
	st = dp_test_run(&r, "mkdir un && '%s' pull --quiet --untar gnutar un && cat un/sub/b",
	                 prog("dp-worker"));
	ck_assert_msg(st == 0, "%s", r.err);
	ck_assert_str_eq(r.out, "two");
	dp_test_result_free(&r);
	/* Without --untar a stream cannot go into a directory. */
	st = dp_test_run(&r, "mkdir un2 && '%s' pull --quiet gnutar un2", prog("dp-worker"));
	ck_assert_int_ne(st, 0);
	dp_test_result_free(&r);
	if (geteuid() == 0) {
		/* As root, --owner gives every file to that user. */
		st = dp_test_run(
		    &r,
		    "mkdir own && '%s' pull --quiet --untar --owner nobody gnutar own && "
		    "find own -not -user nobody | wc -l",
		    prog("dp-worker"));
		ck_assert_msg(st == 0, "%s", r.err);
		ck_assert_str_eq(r.out, "0\n");
		dp_test_result_free(&r);
	}
	st = dp_test_run(&r, "'%s' pull --untar --owner no-such-user-here gnutar x",
	                 prog("dp-worker"));
	ck_assert_int_eq(st, 2);
	ck_assert_msg(strstr(r.err, "no such user"), "%s", r.err);
	dp_test_result_free(&r);
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("worker_tree");
	TCase *tc = tcase_create("worker_tree");
	tcase_add_checked_fixture(tc, dp_test_setup, dp_test_teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, trailer_adds_files_and_meta);
	tcase_add_test(tc, trailer_unfinished_or_bad_stores_nothing);
	tcase_add_test(tc, pull_untar_and_owner);
	suite_add_tcase(s, tc);
	return s;
}

DP_TEST_MAIN(suite)

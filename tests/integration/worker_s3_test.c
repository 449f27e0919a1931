/*
 * The data verbs against an S3 repository: the --s3-* flags and the
 * credentials file reach the S3 transport through dp_backend_opts. Each
 * test starts its own s3rver (tests/harness/s3rver.h) on a loopback port;
 * it dies with the test process. A missing s3rver fails loudly.
 */
#include "../harness/dp_test.h"
#include "../harness/s3rver.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define MiB (1024ull * 1024)

static dp_s3rver srv;
static char s3opts[256];
static const char *repo = "s3://bkt/team/repo";

static void setup(void)
{
	dp_test_setup();
	setenv("DP_REPO_PASSPHRASE", "s3 passphrase", 1);
	unsetenv("DP_REPO");
	dp_s3rver_env();
	setenv("DP_S3_BACKOFF_MS", "10", 1);
	char dir[PATH_MAX];
	snprintf(dir, sizeof(dir), "%s/s3", dp_test_dir);
	ck_assert_msg(dp_s3rver_start(&srv, dir, 0, "bkt") == 0, "s3rver did not start");
	snprintf(s3opts, sizeof(s3opts),
	         "--s3-endpoint %s --s3-uri-style path --s3-region us-east-1", srv.endpoint);
}

static void teardown(void)
{
	dp_s3rver_stop(&srv, false);
	dp_test_teardown();
}

static const char *P(const char *name)
{
	char *b = malloc(PATH_MAX);
	ck_assert_ptr_nonnull(b);
	snprintf(b, PATH_MAX, "%s/%s", dp_test_dir, name);
	return b;
}

static int run(dp_test_result *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int run(dp_test_result *r, const char *fmt, ...)
{
	char cmd[8192];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	return dp_test_run(r, "%s", cmd);
}

#define RUN_EXPECT(want, ...)                                                                      \
	do {                                                                                       \
		dp_test_result r_;                                                                 \
		int st_ = run(&r_, __VA_ARGS__);                                                   \
		ck_assert_msg(st_ == (want), "exit %d (want %d)\nstdout: %s\nstderr: %s", st_,     \
		              (want), r_.out, r_.err);                                             \
		dp_test_result_free(&r_);                                                          \
	} while (0)

START_TEST(test_s3_roundtrip)
{
	const char *W = dp_test_bin("dp-worker"), *DP = dp_test_bin("dp");
	RUN_EXPECT(0, "%s repo init --repo %s %s --pack-size 4M", DP, repo, s3opts);
	RUN_EXPECT(1, "%s repo init --repo %s %s", DP, repo, s3opts);
	dp_test_write_data(P("in"), 24 * MiB + 5, 3, true);
	RUN_EXPECT(0, "%s push --repo %s %s f %s", W, repo, s3opts, P("in"));
	RUN_EXPECT(0, "cat %s | %s push --repo %s %s s", P("in"), W, repo, s3opts);
	RUN_EXPECT(0, "%s pull --repo %s %s f %s", W, repo, s3opts, P("out"));
	ck_assert(dp_test_files_equal(P("in"), P("out")));
	RUN_EXPECT(0, "%s pull --repo %s %s s > %s", W, repo, s3opts, P("out2"));
	ck_assert(dp_test_files_equal(P("in"), P("out2")));

	/* A small tree. */
	RUN_EXPECT(0, "mkdir -p %s/t/d && echo hi > %s/t/d/f && ln -s d/f %s/t/l", dp_test_dir,
	           dp_test_dir, dp_test_dir);
	RUN_EXPECT(0, "%s push --repo %s %s tree %s", W, repo, s3opts, P("t"));
	RUN_EXPECT(0, "%s pull --repo %s %s tree %s", W, repo, s3opts, P("t2"));
	RUN_EXPECT(0, "diff -r --no-dereference %s %s", P("t"), P("t2"));

	dp_test_result r;
	ck_assert_int_eq(run(&r, "%s ls --repo %s %s", W, repo, s3opts), 0);
	ck_assert_msg(strstr(r.out, "tree") && strstr(r.out, "stream") && strstr(r.out, "file"),
	              "%s", r.out);
	dp_test_result_free(&r);
	RUN_EXPECT(0, "%s repo check --repo %s %s --read-data", DP, repo, s3opts);
	RUN_EXPECT(0, "%s rm --repo %s %s f", W, repo, s3opts);
	RUN_EXPECT(0, "%s repo prune --repo %s %s", DP, repo, s3opts);
	RUN_EXPECT(0, "%s pull --repo %s %s s %s", W, repo, s3opts, P("out3"));
	ck_assert(dp_test_files_equal(P("in"), P("out3")));
	RUN_EXPECT(5, "%s pull --repo %s %s f %s", W, repo, s3opts, P("out4"));
	/* No repository under another prefix. */
	RUN_EXPECT(5, "%s ls --repo s3://bkt/elsewhere %s", W, s3opts);
}
END_TEST

START_TEST(test_s3_credentials)
{
	const char *W = dp_test_bin("dp-worker"), *DP = dp_test_bin("dp");
	RUN_EXPECT(0, "%s repo init --repo %s %s", DP, repo, s3opts);
	/* Keys from a credentials file instead of the environment. */
	FILE *f = fopen(P("creds"), "w");
	fprintf(f, "[default]\naws_access_key_id = S3RVER\naws_secret_access_key = S3RVER\n");
	fclose(f);
	f = fopen(P("bad-creds"), "w");
	fprintf(f, "[default]\naws_access_key_id = NOT-A-KEY\naws_secret_access_key = x\n");
	fclose(f);
	RUN_EXPECT(0,
	           "env -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY %s ls --repo %s %s "
	           "--s3-credentials-file %s",
	           W, repo, s3opts, P("creds"));
	dp_test_result r;
	int st = run(&r,
	             "env -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY %s ls --repo %s %s "
	             "--s3-credentials-file %s",
	             W, repo, s3opts, P("bad-creds"));
	ck_assert_msg(st == 3, "exit %d: %s", st, r.err);
	dp_test_result_free(&r);
	/* A bad flag value is a usage error; an endpoint that does not answer
	 * is an error that names it. */
	RUN_EXPECT(2, "%s ls --repo %s --s3-endpoint %s --s3-uri-style sideways", W, repo,
	           srv.endpoint);
	st = run(&r, "%s ls --repo %s --s3-endpoint http://127.0.0.1:1 --s3-uri-style path", W,
	         repo);
	ck_assert_msg(st == 1 && strstr(r.err, "127.0.0.1:1"), "exit %d: %s", st, r.err);
	dp_test_result_free(&r);
}
END_TEST

static Suite *worker_s3_suite(void)
{
	Suite *s = suite_create("worker_s3");
	TCase *tc = tcase_create("s3");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_s3_roundtrip);
	tcase_add_test(tc, test_s3_credentials);
	suite_add_tcase(s, tc);
	return s;
}

DP_TEST_MAIN(worker_s3_suite)

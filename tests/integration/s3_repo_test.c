/*
 * A dp repository on S3 (s3rver on a loopback port), driven through the
 * programs: dedup measured on the stored objects, a flipped byte in a pack
 * caught by pull and check, the aws CLI reading a real repository's packs
 * byte for byte, and s3rver killed with SIGKILL in the middle of a push
 * (the push fails clearly; after a restart on the same directory, check
 * --read-data passes, no snapshot of that name exists and a new push works).
 *
 * (tests/integration/worker_s3_test.c covers the verbs and the --s3-*
 * flags; this file covers what the issue asks of the S3 transport.)
 */
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../harness/dp_test.h"
#include "../harness/s3rver.h"
#include "dp/backend.h"
#include "dp/error.h"

#define MiB (1024ull * 1024)
#define BUCKET "bkt"

static dp_s3rver srv;
static char srv_dir[PATH_MAX];
static pid_t srv_owner;
static char repo[PATH_MAX];
static char s3opts[256];

static void cleanup_dir(void)
{
	if (getpid() != srv_owner || !srv_dir[0])
		return;
	dp_s3rver_stop(&srv, true);
	char cmd[PATH_MAX + 32];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", srv_dir);
	if (system(cmd) != 0)
		fprintf(stderr, "cannot remove %s\n", srv_dir);
}

static void use_server(const dp_s3rver *s)
{
	snprintf(s3opts, sizeof(s3opts), "--s3-endpoint %s --s3-uri-style path", s->endpoint);
}

static void setup(void)
{
	dp_test_setup();
	setenv("DP_REPO_PASSPHRASE", "s3 repo passphrase", 1);
	unsetenv("DP_REPO");
	dp_s3rver_env();
	setenv("DP_S3_BACKOFF_MS", "20", 1);
	const char *slash = strrchr(dp_test_dir, '/');
	snprintf(repo, sizeof(repo), "s3://%s/%s/repo", BUCKET, slash ? slash + 1 : "x");
	use_server(&srv);
}

static const char *P(const char *name)
{
	static char b[8][PATH_MAX];
	static int i;
	char *p = b[i++ % 8];
	snprintf(p, PATH_MAX, "%s/%s", dp_test_dir, name);
	return p;
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

/* The repository's backend, opened directly, to measure and tamper. */
static dp_backend *backend(const dp_s3rver *s)
{
	dp_backend_opts o = {.s3_endpoint = s->endpoint, .retries = -1};
	dp_backend *b = NULL;
	ck_assert_msg(dp_backend_open(&b, repo, &o) == 0, "%s", dp_error_last());
	return b;
}

typedef struct tally {
	uint64_t bytes;
	unsigned long n;
	char first[256];
} tally;

static int count(const char *key, uint64_t size, void *arg)
{
	tally *t = arg;
	t->bytes += size;
	if (t->n++ == 0)
		snprintf(t->first, sizeof(t->first), "%s", key);
	return 0;
}

static tally stored(dp_backend *b, const char *prefix)
{
	tally t = {0};
	ck_assert_msg(b->list(b, prefix, count, &t) == 0, "%s", dp_error_last());
	return t;
}

/* Overwrites 8 KiB pages at scattered offsets (about pct percent). */
static void scatter_pages(const char *path, uint64_t size, double pct)
{
	FILE *f = fopen(path, "r+b");
	ck_assert_ptr_nonnull(f);
	uint64_t pages = size / 8192, n = (uint64_t)((double)pages * pct / 100.0);
	uint8_t page[8192];
	uint64_t s = 12345;
	for (uint64_t i = 0; i < n; i++) {
		for (size_t j = 0; j < sizeof(page); j++) {
			s ^= s << 13;
			s ^= s >> 7;
			s ^= s << 17;
			page[j] = (uint8_t)s;
		}
		uint64_t at = (s % pages) * 8192;
		ck_assert_int_eq(fseeko(f, (off_t)at, SEEK_SET), 0);
		ck_assert_uint_eq(fwrite(page, 1, sizeof(page), f), sizeof(page));
	}
	fclose(f);
}

START_TEST(t_roundtrip_and_dedup)
{
	const char *W = dp_test_bin("dp-worker"), *DP = dp_test_bin("dp");
	RUN_EXPECT(0, "%s repo init --repo %s %s --pack-size 4M", DP, repo, s3opts);
	uint64_t size = 48 * MiB + 123;
	dp_test_write_data(P("in"), size, 11, true);
	RUN_EXPECT(0, "%s push --repo %s %s db %s", W, repo, s3opts, P("in"));
	dp_backend *b = backend(&srv);
	tally t1 = stored(b, "");
	ck_assert_uint_gt(stored(b, "data/").n, 2); /* several packs */
	RUN_EXPECT(0, "%s push --repo %s %s db %s", W, repo, s3opts, P("in"));
	tally t2 = stored(b, "");
	double again = (double)(t2.bytes - t1.bytes) / (double)t1.bytes;
	ck_assert_msg(again < 0.01, "the same data again added %.2f%%", again * 100);
	scatter_pages(P("in"), size, 1.0);
	RUN_EXPECT(0, "%s push --repo %s %s db %s", W, repo, s3opts, P("in"));
	tally t3 = stored(b, "");
	double changed = (double)(t3.bytes - t2.bytes) / (double)t1.bytes;
	ck_assert_msg(changed < 0.30, "1%% changed pages added %.1f%%", changed * 100);
	fprintf(stderr,
	        "s3 dedup: first push %.1f MiB stored, same again +%.2f%%, 1%% pages "
	        "changed +%.1f%%\n",
	        (double)t1.bytes / MiB, again * 100, changed * 100);
	RUN_EXPECT(0, "%s pull --repo %s %s db %s", W, repo, s3opts, P("out"));
	ck_assert(dp_test_files_equal(P("in"), P("out")));
	RUN_EXPECT(0, "%s repo check --repo %s %s --read-data", DP, repo, s3opts);
	dp_backend_free(b);
}
END_TEST

START_TEST(t_flipped_byte_in_pack)
{
	const char *W = dp_test_bin("dp-worker"), *DP = dp_test_bin("dp");
	RUN_EXPECT(0, "%s repo init --repo %s %s", DP, repo, s3opts);
	dp_test_write_data(P("in"), 6 * MiB, 5, false);
	RUN_EXPECT(0, "%s push --repo %s %s x %s", W, repo, s3opts, P("in"));
	RUN_EXPECT(0, "%s repo check --repo %s %s --read-data", DP, repo, s3opts);
	/* Replace one pack with a copy that has one byte flipped. */
	dp_backend *b = backend(&srv);
	tally t = stored(b, "data/");
	ck_assert_uint_ge(t.n, 1);
	dp_buf pack = {0};
	ck_assert_int_eq(b->get(b, t.first, 0, UINT64_MAX, &pack), 0);
	pack.data[pack.len / 2] ^= 0x20;
	ck_assert_int_eq(b->put(b, t.first, pack.data, pack.len), 0);
	const char *id = strrchr(t.first, '/') + 1;
	dp_test_result r;
	int st = run(&r, "%s pull --repo %s %s x %s", W, repo, s3opts, P("out"));
	ck_assert_msg(st == 4, "pull exit %d: %s", st, r.err);
	ck_assert_msg(strstr(r.err, id), "pull does not name pack %s: %s", id, r.err);
	dp_test_result_free(&r);
	st = run(&r, "%s repo check --repo %s %s --read-data", DP, repo, s3opts);
	ck_assert_msg(st == 4, "check exit %d: %s", st, r.err);
	ck_assert_msg(strstr(r.err, id) || strstr(r.out, id), "check does not name pack %s: %s%s",
	              id, r.out, r.err);
	dp_test_result_free(&r);
	dp_buf_free(&pack);
	dp_backend_free(b);
}
END_TEST

START_TEST(t_aws_cli_reads_the_repository)
{
	const char *W = dp_test_bin("dp-worker"), *DP = dp_test_bin("dp");
	RUN_EXPECT(0, "%s repo init --repo %s %s --pack-size 4M", DP, repo, s3opts);
	dp_test_write_data(P("in"), 20 * MiB, 9, true);
	RUN_EXPECT(0, "%s push --repo %s %s y %s", W, repo, s3opts, P("in"));
	setenv("AWS_DEFAULT_REGION", "us-east-1", 1);
	setenv("AWS_EC2_METADATA_DISABLED", "true", 1);
	const char *prefix = repo + strlen("s3://" BUCKET "/");
	dp_test_result r;
	int st = run(&r, "aws --endpoint-url %s s3 ls --recursive s3://%s/%s/", srv.endpoint,
	             BUCKET, prefix);
	ck_assert_msg(st == 0, "aws s3 ls: %s", r.err);
	/* The layout of DESIGN.md, as aws sees it. */
	const char *parts[] = {"/config", "/keys/", "/data/", "/index/", "/snapshots/"};
	for (size_t i = 0; i < sizeof(parts) / sizeof(parts[0]); i++)
		ck_assert_msg(strstr(r.out, parts[i]), "no %s in:\n%s", parts[i], r.out);
	dp_test_result_free(&r);
	dp_backend *b = backend(&srv);
	tally t = stored(b, "data/");
	ck_assert_uint_ge(t.n, 2);
	/* aws downloads a pack; its bytes equal what dp reads. */
	st = run(&r, "aws --endpoint-url %s s3 cp --only-show-errors s3://%s/%s/%s %s",
	         srv.endpoint, BUCKET, prefix, t.first, P("pack"));
	ck_assert_msg(st == 0, "aws s3 cp: %s", r.err);
	dp_test_result_free(&r);
	dp_buf pack = {0};
	ck_assert_int_eq(b->get(b, t.first, 0, UINT64_MAX, &pack), 0);
	FILE *f = fopen(P("pack"), "rb");
	ck_assert_ptr_nonnull(f);
	uint8_t *disk = malloc(pack.len + 1);
	size_t n = fread(disk, 1, pack.len + 1, f);
	fclose(f);
	ck_assert_uint_eq(n, pack.len);
	ck_assert(memcmp(disk, pack.data, n) == 0);
	free(disk);
	dp_buf_free(&pack);
	dp_backend_free(b);
}
END_TEST

/* Starts `sh -c cmd` in the background with stderr to errfile. */
static pid_t spawn(const char *cmd, const char *errfile)
{
	pid_t pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		if (!freopen(errfile, "w", stderr) || !freopen("/dev/null", "w", stdout))
			_exit(126);
		execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
		_exit(127);
	}
	return pid;
}

static char *slurp(const char *path)
{
	FILE *f = fopen(path, "r");
	ck_assert_ptr_nonnull(f);
	char *s = calloc(1, 65536);
	size_t n = fread(s, 1, 65535, f);
	s[n] = 0;
	fclose(f);
	return s;
}

START_TEST(t_kill9_s3rver_mid_push)
{
	const char *W = dp_test_bin("dp-worker"), *DP = dp_test_bin("dp");
	dp_s3rver own;
	ck_assert_int_eq(dp_s3rver_start(&own, P("s3"), 0, BUCKET), 0);
	use_server(&own);
	RUN_EXPECT(0, "%s repo init --repo %s %s --pack-size 4M", DP, repo, s3opts);
	dp_test_write_data(P("small"), 3 * MiB, 2, true);
	RUN_EXPECT(0, "%s push --repo %s %s before %s", W, repo, s3opts, P("small"));

	/* A long push from a pipe; kill the server once packs are landing. */
	char cmd[4096];
	snprintf(cmd, sizeof(cmd), "head -c 2000M /dev/urandom | %s push --repo %s %s big", W, repo,
	         s3opts);
	pid_t push = spawn(cmd, P("push.err"));
	dp_backend *b = backend(&own);
	unsigned long before = stored(b, "data/").n;
	for (int i = 0; i < 600 && stored(b, "data/").n < before + 3; i++) {
		struct timespec ts = {0, 50 * 1000000L};
		nanosleep(&ts, NULL);
	}
	ck_assert_msg(stored(b, "data/").n >= before + 3, "the push wrote no packs in 30 s");
	dp_backend_free(b);
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	int port = own.port;
	dp_s3rver_stop(&own, true);
	int wst;
	ck_assert_int_eq(waitpid(push, &wst, 0), push);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	char *err = slurp(P("push.err"));
	ck_assert_msg(WIFEXITED(wst) && WEXITSTATUS(wst) != 0, "push did not fail: %s", err);
	ck_assert_msg(strstr(err, "s3") && strstr(err, own.endpoint + 7),
	              "the error does not name the server: %s", err);
	ck_assert_msg(strstr(err, "attempts"), "the error does not fold the attempts: %s", err);
	ck_assert_msg(secs < 60, "the push took %.1f s to fail", secs);
	fprintf(stderr, "kill -9 s3rver: push failed after %.1f s with exit %d: %s", secs,
	        WEXITSTATUS(wst), err);
	free(err);

	/* Restart on the same directory and port (s3rver's store is not
	 * crash-safe: drop what it was writing; see s3rver.h). */
	int removed = dp_s3rver_repair(own.dir);
	ck_assert_int_ge(removed, 0);
	char dir[PATH_MAX];
	snprintf(dir, sizeof(dir), "%s", own.dir);
	ck_assert_int_eq(dp_s3rver_start(&own, dir, port, NULL), 0);
	RUN_EXPECT(0, "%s repo check --repo %s %s --read-data", DP, repo, s3opts);
	dp_test_result r;
	ck_assert_int_eq(run(&r, "%s ls --repo %s %s", W, repo, s3opts), 0);
	ck_assert_msg(strstr(r.out, "before") && !strstr(r.out, "big"), "%s", r.out);
	dp_test_result_free(&r);
	RUN_EXPECT(5, "%s pull --repo %s %s big %s", W, repo, s3opts, P("nope"));
	dp_test_write_data(P("after"), 9 * MiB, 4, true);
	RUN_EXPECT(0, "%s push --repo %s %s after %s", W, repo, s3opts, P("after"));
	RUN_EXPECT(0, "%s pull --repo %s %s after %s", W, repo, s3opts, P("after.out"));
	ck_assert(dp_test_files_equal(P("after"), P("after.out")));
	RUN_EXPECT(0, "%s pull --repo %s %s before %s", W, repo, s3opts, P("before.out"));
	ck_assert(dp_test_files_equal(P("small"), P("before.out")));
	RUN_EXPECT(0, "%s repo check --repo %s %s --read-data", DP, repo, s3opts);
	dp_s3rver_stop(&own, false);
}
END_TEST

static Suite *s3_repo_suite(void)
{
	Suite *s = suite_create("s3 repository (s3rver)");
	srv_owner = getpid();
	const char *tmp = getenv("TMPDIR");
	snprintf(srv_dir, sizeof(srv_dir), "%s/dp-s3repo-XXXXXX", tmp && *tmp ? tmp : "/tmp");
	if (!mkdtemp(srv_dir)) {
		srv_dir[0] = 0;
		fprintf(stderr, "cannot make a temp dir for s3rver\n");
	} else {
		atexit(cleanup_dir);
		char data[PATH_MAX + 8];
		snprintf(data, sizeof(data), "%s/data", srv_dir);
		if (dp_s3rver_start(&srv, data, 0, BUCKET) != 0)
			fprintf(stderr, "s3rver did not start: the tests below fail\n");
	}
	TCase *tc = tcase_create("repo");
	tcase_add_checked_fixture(tc, setup, dp_test_teardown);
	tcase_set_timeout(tc, 300);
	tcase_add_test(tc, t_roundtrip_and_dedup);
	tcase_add_test(tc, t_flipped_byte_in_pack);
	tcase_add_test(tc, t_aws_cli_reads_the_repository);
	tcase_add_test(tc, t_kill9_s3rver_mid_push);
	suite_add_tcase(s, tc);
	return s;
}

DP_TEST_MAIN(s3_repo_suite)

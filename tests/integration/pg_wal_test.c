/*
 * dp-worker wal-push / wal-fetch, the archive verbs behind archive_command
 * and restore_command: failures (missing file, wrong repository, wrong
 * passphrase, a full disk simulated with `ulimit -f`, an unsafe config file)
 * exit non-zero and store nothing; identical re-push succeeds, different
 * bytes fail and change nothing. Then the same failures under a real
 * PostgreSQL archiver: it keeps the segment, retries, and once archiving
 * works again every segment is in the archive and a restore to the end of
 * the archive has every change.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../harness/dp_test.h"
#include "../harness/pg.h"

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

START_TEST(wal_push_cli_failures)
{
	char repo[PATH_MAX], seg[PATH_MAX], other[PATH_MAX], back[PATH_MAX];
	dp_test_result r;
	snprintf(repo, sizeof(repo), "%s/repo", dp_test_dir);
	setenv("DP_REPO_PASSPHRASE", "wal-test", 1);
	const char *w = dp_test_bin("dp-worker");
	ck_assert_int_eq(dp_test_run(&r, "%s repo init --repo %s", dp_test_bin("dp"), repo), 0);
	dp_test_result_free(&r);
	snprintf(seg, sizeof(seg), "%s/000000010000000000000007", dp_test_dir);
	snprintf(other, sizeof(other), "%s/other", dp_test_dir);
	snprintf(back, sizeof(back), "%s/back", dp_test_dir);
	dp_test_write_data(seg, 16u << 20, 7, true);
	dp_test_write_data(other, 16u << 20, 8, true);

	/* Missing file. */
	ck_assert_int_ne(dp_test_run(&r, "%s wal-push --repo %s %s/000000010000000000000009", w,
	                             repo, dp_test_dir),
	                 0);
	ck_assert_ptr_nonnull(strstr(r.err, "000000010000000000000009"));
	dp_test_result_free(&r);
	/* Wrong repository, wrong passphrase. */
	ck_assert_int_ne(dp_test_run(&r, "%s wal-push --repo %s/nope %s", w, dp_test_dir, seg), 0);
	dp_test_result_free(&r);
	ck_assert_int_eq(
	    dp_test_run(&r, "DP_REPO_PASSPHRASE=wrong %s wal-push --repo %s %s", w, repo, seg), 3);
	dp_test_result_free(&r);
	/* A full disk: the file size limit makes the write fail (not a signal). */
	char rnd[PATH_MAX];
	snprintf(rnd, sizeof(rnd), "%s/000000010000000000000008", dp_test_dir);
	dp_test_write_data(rnd, 16u << 20, 9, false);
	int st = dp_test_run(&r, "ulimit -f 1024; %s wal-push --repo %s %s", w, repo, rnd);
	ck_assert_msg(st != 0 && st < 128, "ulimit: exit %d: %s", st, r.err);
	dp_test_result_free(&r);
	ck_assert_int_eq(dp_test_run(&r, "%s wal-ls --repo %s", w, repo), 0);
	ck_assert_str_eq(r.out, ""); /* nothing stored by any failure */
	dp_test_result_free(&r);
	/* An unsafe config file is refused. */
	char conf[PATH_MAX];
	snprintf(conf, sizeof(conf), "%s/archive.conf", dp_test_dir);
	FILE *f = fopen(conf, "w");
	ck_assert_ptr_nonnull(f);
	fprintf(f, "repo = %s\npassphrase = wal-test\narchive = a1\n", repo);
	ck_assert_int_eq(fclose(f), 0);
	ck_assert_int_eq(chmod(conf, 0644), 0);
	ck_assert_int_eq(
	    dp_test_run(&r, "env -u DP_REPO_PASSPHRASE %s wal-push --config %s %s", w, conf, seg),
	    2);
	ck_assert_ptr_nonnull(strstr(r.err, "0600"));
	dp_test_result_free(&r);
	ck_assert_int_eq(chmod(conf, 0600), 0);

	/* Works; timed. Then identical re-push ok, different bytes refused. */
	double t0 = now_s();
	st = dp_test_run(&r, "env -u DP_REPO_PASSPHRASE %s wal-push --config %s %s", w, conf, seg);
	double dt = now_s() - t0;
	ck_assert_msg(st == 0, "%s", r.err);
	dp_test_result_free(&r);
	fprintf(stderr, "wal-push of a 16 MiB segment: %.0f ms (including the key derivation)\n",
	        dt * 1000);
	st = dp_test_run(&r, "ulimit -f 1024; %s wal-push --repo %s %s", w, repo, rnd);
	ck_assert_int_ne(st, 0);
	dp_test_result_free(&r);
	ck_assert_int_eq(dp_test_run(&r, "%s wal-push --config %s %s", w, conf, seg), 0);
	dp_test_result_free(&r);
	ck_assert_int_eq(
	    dp_test_run(&r, "%s wal-push --config %s %s 000000010000000000000007", w, conf, other),
	    1);
	ck_assert_ptr_nonnull(strstr(r.err, "different content"));
	dp_test_result_free(&r);
	ck_assert_int_eq(
	    dp_test_run(&r, "%s wal-fetch --config %s 000000010000000000000007 %s", w, conf, back),
	    0);
	dp_test_result_free(&r);
	ck_assert(dp_test_files_equal(seg, back));
	/* Missing: exit 5, so restore_command ends recovery there. */
	ck_assert_int_eq(
	    dp_test_run(&r, "%s wal-fetch --config %s 000000010000000000000099 %s", w, conf, back),
	    5);
	dp_test_result_free(&r);
	ck_assert_int_eq(dp_test_run(&r, "%s wal-ls --config %s", w, conf), 0);
	ck_assert_str_eq(r.out, "000000010000000000000007\n");
	dp_test_result_free(&r);
}
END_TEST

static char *archiver_stats(const dp_pg *pg)
{
	return dp_pg_query(pg, "SELECT failed_count, coalesce(last_failed_wal, '') FROM "
	                       "pg_stat_archiver");
}

/* Sets archive_command and waits until the archiver failed on a new segment. */
static char *fail_archiving(const dp_pg *pg, const char *command)
{
	free(dp_pg_query(pg, "ALTER SYSTEM SET archive_command = '%s'; SELECT pg_reload_conf()",
	                 command));
	usleep(300 * 1000);
	char *before = archiver_stats(pg);
	free(dp_pg_query(pg,
	                 "INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 20000) g"));
	char *seg = dp_pg_query(pg, "SELECT pg_walfile_name(pg_switch_wal())");
	for (int i = 0; i < 100; i++) {
		char *now = archiver_stats(pg);
		bool changed = strcmp(now, before) != 0;
		free(now);
		if (changed)
			break;
		usleep(100 * 1000);
	}
	char *after = archiver_stats(pg);
	ck_assert_msg(strcmp(after, before) != 0, "archiver did not fail: %s", after);
	free(after);
	free(before);
	/* PostgreSQL keeps the segment and its .ready marker. */
	char ready[PATH_MAX + 64];
	snprintf(ready, sizeof(ready), "%s/pg_wal/archive_status/%s.ready", pg->data, seg);
	ck_assert_msg(access(ready, F_OK) == 0, "%s missing", ready);
	return seg;
}

START_TEST(archiver_retries_nothing_lost)
{
	dp_pg pg;
	char repo[PATH_MAX];
	dp_pg_create(&pg, NULL);
	dp_pg_start(&pg);
	dp_pg_repo_init(repo);
	dp_test_result r;
	free(dp_pg_query(&pg, "CREATE TABLE t(id int, v text)"));
	int st = dp_pg_script(&r, &pg, "DP_BACKUP_NAME=pg-wal bash $S/archive.sh");
	ck_assert_msg(st == 0, "archive.sh: %s", r.err);
	dp_test_result_free(&r);
	char *good = dp_pg_query(&pg, "SHOW archive_command");
	st = dp_pg_script(&r, &pg, "DP_BACKUP_NAME=pg-base bash $S/backup-full.sh");
	ck_assert_msg(st == 0, "backup: %s", r.err);
	dp_test_result_free(&r);

	/* A full disk, then a wrong repository. */
	char cmd[PATH_MAX * 2];
	char *conf = strstr(good, "--config ") + 9;
	*strchr(conf, ' ') = 0;
	snprintf(cmd, sizeof(cmd), "ulimit -f 64; %s wal-push --config %s %%p",
	         dp_test_bin("dp-worker"), conf);
	char *seg1 = fail_archiving(&pg, cmd);
	snprintf(cmd, sizeof(cmd), "%s wal-push --repo %s.missing %%p", dp_test_bin("dp-worker"),
	         repo);
	char *seg2 = fail_archiving(&pg, cmd);
	st = dp_pg_script(&r, &pg, "$DP_WORKER wal-ls --archive pg-wal");
	ck_assert_ptr_null(strstr(r.out, seg1));
	ck_assert_ptr_null(strstr(r.out, seg2));
	dp_test_result_free(&r);

	/* Archiving restored: the kept segments go out, none is missing. */
	free(dp_pg_query(&pg, "UPDATE t SET v = 'changed' WHERE id %% 7 = 0"));
	char *want = dp_pg_checksums(&pg);
	st = dp_pg_script(&r, &pg, "DP_BACKUP_NAME=pg-wal bash $S/archive.sh");
	ck_assert_msg(st == 0, "archive.sh again: %s", r.err);
	dp_test_result_free(&r);
	st = dp_pg_script(&r, &pg,
	                  "$DP_WORKER wal-ls --archive pg-wal | grep -c '^%s$\\|^%s$'; "
	                  "bash $S/window.sh pg-wal | jq -r '.firstWal == .runStartWal'",
	                  seg1, seg2);
	ck_assert_msg(st == 0 && strcmp(r.out, "2\ntrue\n") == 0,
	              "kept segments not archived or a gap: %s %s", r.out, r.err);
	dp_test_result_free(&r);

	/* Retention: WAL older than the oldest base backup goes; the restore
	 * below still needs everything after it. */
	st = dp_pg_script(&r, &pg,
	                  "DP_BACKUP_NAME=pg-wal bash $S/archive.sh prune && "
	                  "$DP_WORKER wal-ls --archive pg-wal | head -n 1");
	ck_assert_msg(st == 0 && strncmp(r.out, "000000010000000000000001", 24) != 0,
	              "prune: %s %s", r.out, r.err);
	ck_assert_ptr_nonnull(strstr(r.err, "pruned "));
	dp_test_result_free(&r);

	char parent[PATH_MAX], dir[PATH_MAX + 8];
	dp_pg_mkdtemp(parent, "pgdst");
	snprintf(dir, sizeof(dir), "%s/data", parent);
	int port = dp_pg_free_port();
	st = dp_pg_script(&r, &pg, "bash $S/restore.sh --backup pg-wal --latest --to %s --port %d",
	                  dir, port);
	ck_assert_msg(st == 0, "restore: %s", r.err);
	dp_test_result_free(&r);
	dp_pg r2;
	dp_pg_attach(&r2, dir, port);
	char *got = dp_pg_checksums(&r2);
	dp_pg_stop(&r2);
	ck_assert_str_eq(got, want);
	free(got);
	free(want);
	free(seg1);
	free(seg2);
	free(good);
	dp_pg_destroy(&pg);
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("pg_wal");
	TCase *tc = tcase_create("pg_wal");
	tcase_add_checked_fixture(tc, dp_test_setup, dp_test_teardown);
	tcase_set_timeout(tc, 180);
	tcase_add_test(tc, wal_push_cli_failures);
	tcase_add_test(tc, archiver_retries_nothing_lost);
	suite_add_tcase(s, tc);
	return s;
}

DP_TEST_MAIN(suite)

/*
 * End to end with a real PostgreSQL 15, through `dp` as its users type it,
 * run as the database's OS user (nobody):
 *  - embedded mode (no daemon): apply a repo and a minimal policy, start WAL
 *    archiving (the backup stays Running with a window), a full backup,
 *    changes, a point-in-time restore to a moment between two changes that
 *    has exactly the data of that moment; a time outside the window fails
 *    before anything is created; then a fresh $DP_HOME rebuilt with
 *    `dp catalog import` lists the same backups and restores from them;
 *    deleting the continuous backup turns archiving off.
 *  - daemon mode: dp-controller runs (API on a free port); `dp backup
 *    --wait` hands the backup to it; a Backup PUT through the API with the
 *    token is run by it; /metrics reports it; a restore through it; kill -9
 *    mid-backup and a restart finish that backup once; SIGTERM stops it
 *    cleanly (pid file gone).
 */
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../harness/dp_test.h"
#include "../harness/pg.h"

static dp_pg pg;
static char home[PATH_MAX], repo[PATH_MAX], manifest[PATH_MAX];

static void setup_env(void)
{
	char methods[PATH_MAX];
	snprintf(methods, sizeof(methods), "%s", dp_pg_scripts());
	char *s = strstr(methods, "/postgresql/scripts");
	ck_assert_ptr_nonnull(s);
	*s = 0;
	setenv("DP_METHODS_DIR", methods, 1);
	setenv("DP_TEST_PASS", "controller-e2e-passphrase", 1);
	unsetenv("DP_REPO");
	unsetenv("DP_REPO_PASSPHRASE");
	char base[PATH_MAX];
	dp_pg_mkdtemp(base, "dphome");
	snprintf(home, sizeof(home), "%s/home", base);
	setenv("DP_HOME", home, 1);
	dp_pg_mkdtemp(base, "dprepo");
	snprintf(repo, sizeof(repo), "%s/repo", base);
	snprintf(manifest, sizeof(manifest), "%s/dp.yaml", base);
	FILE *f = fopen(manifest, "w");
	ck_assert_ptr_nonnull(f);
	fprintf(f,
	        "apiVersion: dataprotection.dp.io/v1alpha1\n"
	        "kind: BackupRepo\n"
	        "metadata: {name: nas}\n"
	        "spec: {posix: {path: %s}, encryption: {passphraseFrom: {env: DP_TEST_PASS}}}\n"
	        "---\n"
	        "apiVersion: dataprotection.dp.io/v1alpha1\n"
	        "kind: BackupPolicy\n"
	        "metadata: {name: pg}\n"
	        "spec:\n"
	        "  backupRepoName: nas\n"
	        "  target: {engine: postgresql, host: 127.0.0.1, port: %d, user: nobody, "
	        "dataDir: %s}\n",
	        repo, pg.port, pg.data);
	fclose(f);
	chmod(manifest, 0644);
}

static void setup(void)
{
	dp_test_setup();
	dp_pg_create(&pg, NULL);
	dp_pg_start(&pg);
	free(dp_pg_query(&pg, "CREATE TABLE t (id int PRIMARY KEY, v text)"));
	free(dp_pg_query(&pg,
	                 "INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 5000) g"));
	setup_env();
}

static void teardown(void)
{
	dp_pg_destroy(&pg);
	dp_test_teardown();
}

/* `dp ARGS` as nobody; returns the exit status, output in r. */
static int dp(dp_test_result *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int dp(dp_test_result *r, const char *fmt, ...)
{
	char args[4096];
	va_list ap;
	va_start(ap, fmt);
	ck_assert_int_lt(vsnprintf(args, sizeof(args), fmt, ap), (int)sizeof(args));
	va_end(ap);
	return dp_test_run(r, "runuser -u nobody -- '%s' %s", dp_test_bin("dp"), args);
}

static void dp_ok(const char *what, const char *fmt, const char *arg)
{
	dp_test_result r;
	char args[4096];
	snprintf(args, sizeof(args), fmt, arg);
	int st = dp(&r, "%s", args);
	ck_assert_msg(st == 0, "%s: dp %s: exit %d\n%s\n%s", what, args, st, r.out, r.err);
	dp_test_result_free(&r);
}

static void archive_now(const dp_pg *p)
{
	char *seg = dp_pg_query(p, "SELECT pg_walfile_name(pg_switch_wal())");
	for (int i = 0; i < 300; i++) {
		char *done = dp_pg_query(
		    p, "SELECT coalesce(last_archived_wal, '') >= '%s' FROM pg_stat_archiver", seg);
		bool ok = strcmp(done, "t") == 0;
		free(done);
		if (ok) {
			free(seg);
			return;
		}
		usleep(100000);
	}
	ck_abort_msg("segment %s was not archived", seg);
}

static void now_rfc3339(char *out, size_t outlen)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	struct tm tm;
	gmtime_r(&ts.tv_sec, &tm);
	char b[32];
	strftime(b, sizeof(b), "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(out, outlen, "%s.%06ldZ", b, ts.tv_nsec / 1000);
}

/* Name of the backup of method m, from `dp get backups -o json`. */
static void backup_of(const char *method, char *out, size_t outlen)
{
	dp_test_result r;
	ck_assert_int_eq(
	    dp_test_run(&r,
	                "'%s' get backups -o json | jq -r '.items[] | "
	                "select(.spec.backupMethod == \"%s\") | .metadata.name' | head -n 1",
	                dp_test_bin("dp"), method),
	    0);
	snprintf(out, outlen, "%.*s", (int)strcspn(r.out, "\n"), r.out);
	dp_test_result_free(&r);
	ck_assert_msg(out[0], "no %s backup listed", method);
}

static char *restore_and_count(const char *args, const char *query)
{
	char parent[PATH_MAX], dir[PATH_MAX + 8], full[PATH_MAX * 2];
	dp_pg_mkdtemp(parent, "dprestore");
	snprintf(dir, sizeof(dir), "%s/data", parent);
	int port = dp_pg_free_port();
	snprintf(full, sizeof(full), "restore %s --to %s --port %d", args, dir, port);
	dp_ok("restore", "%s", full);
	dp_pg r2;
	dp_pg_attach(&r2, dir, port);
	char *out = dp_pg_query(&r2, "%s", query);
	dp_pg_stop(&r2);
	return out;
}

START_TEST(embedded_backup_pitr_import_restore)
{
	dp_test_result r;
	dp_ok("apply", "apply -f %s", manifest);
	/* WAL archiving: Running with a window. */
	int st = dp(&r, "backup --policy pg --method wal");
	ck_assert_msg(st == 0 && strstr(r.out, "Running (continuous)"), "wal: %d\n%s\n%s", st,
	              r.out, r.err);
	dp_test_result_free(&r);
	char *ac = dp_pg_query(&pg, "SHOW archive_command");
	ck_assert_msg(strstr(ac, "wal-push"), "archive_command: %s", ac);
	free(ac);
	/* A full backup. */
	st = dp(&r, "backup --policy pg --wait");
	ck_assert_msg(st == 0 && strstr(r.out, "Completed"), "full: %d\n%s\n%s", st, r.out, r.err);
	dp_test_result_free(&r);
	/* Changes around T. */
	free(dp_pg_query(&pg,
	                 "INSERT INTO t SELECT g, 'before' FROM generate_series(5001, 5100) g"));
	usleep(1100000);
	char T[64];
	now_rfc3339(T, sizeof(T));
	usleep(1100000);
	free(
	    dp_pg_query(&pg, "INSERT INTO t SELECT g, 'after' FROM generate_series(5101, 5300) g"));
	free(dp_pg_query(&pg, "DELETE FROM t WHERE id <= 10"));
	archive_now(&pg);
	/* Point in time: the rows at T, exactly. */
	char args[256];
	snprintf(args, sizeof(args), "--policy pg --time %s", T);
	char *got =
	    restore_and_count(args, "SELECT count(*) || ' ' || max(id) || ' ' || min(id) FROM t");
	ck_assert_str_eq(got, "5100 5100 1");
	free(got);
	/* Outside the window: refused, nothing created. */
	char parent[PATH_MAX];
	dp_pg_mkdtemp(parent, "dpnever");
	st = dp(&r, "restore --policy pg --time 2001-01-01T00:00:00Z --to %s/data --port %d",
	        parent, dp_pg_free_port());
	ck_assert_msg(st == 1 && strstr(r.err, "outside the recoverable window"), "%d\n%s", st,
	              r.err);
	dp_test_result_free(&r);
	char never[PATH_MAX + 8];
	snprintf(never, sizeof(never), "%s/data", parent);
	ck_assert_int_ne(access(never, F_OK), 0);
	/* dp get backups. */
	ck_assert_int_eq(dp_test_run(&r, "'%s' get backups", dp_test_bin("dp")), 0);
	ck_assert_msg(strstr(r.out, "Completed") && strstr(r.out, "Running"), "%s", r.out);
	char listing[4096];
	ck_assert_int_eq(dp_test_run(&r,
	                             "'%s' get backups -o json | jq -c '[.items[] | "
	                             ".metadata.name] | sort'",
	                             dp_test_bin("dp")),
	                 0);
	snprintf(listing, sizeof(listing), "%s", r.out);
	dp_test_result_free(&r);
	char wal[256], full[256];
	backup_of("wal", wal, sizeof(wal));
	backup_of("full", full, sizeof(full));

	/* A fresh $DP_HOME: the repo only, then import. */
	char base2[PATH_MAX], home2[PATH_MAX + 8], repo_only[PATH_MAX + 16];
	dp_pg_mkdtemp(base2, "dphome2");
	snprintf(home2, sizeof(home2), "%s/h", base2);
	snprintf(repo_only, sizeof(repo_only), "%s/repo.yaml", base2);
	ck_assert_int_eq(dp_test_run(&r, "sed -n '1,/^---$/p' %s | sed '$d' >%s && chmod 644 %s",
	                             manifest, repo_only, repo_only),
	                 0);
	dp_test_result_free(&r);
	setenv("DP_HOME", home2, 1);
	dp_ok("apply repo", "apply -f %s", repo_only);
	st = dp(&r, "catalog import --repo nas");
	ck_assert_msg(st == 0 && strstr(r.out, "imported 2 backup(s)"), "%d\n%s\n%s", st, r.out,
	              r.err);
	dp_test_result_free(&r);
	ck_assert_int_eq(dp_test_run(&r,
	                             "'%s' get backups -o json | jq -c '[.items[] | "
	                             ".metadata.name] | sort'",
	                             dp_test_bin("dp")),
	                 0);
	ck_assert_str_eq(r.out, listing);
	dp_test_result_free(&r);
	snprintf(args, sizeof(args), "--backup %s", full);
	got = restore_and_count(args, "SELECT count(*) FROM t");
	ck_assert_str_eq(got, "5000"); /* the full backup was taken before the changes */
	free(got);

	/* Deleting the continuous backup (in the first home) stops archiving. */
	setenv("DP_HOME", home, 1);
	dp_ok("delete wal", "backup delete %s", wal);
	ac = dp_pg_query(&pg, "SHOW archive_command");
	ck_assert_msg(ac[0] == 0 || strcmp(ac, "(disabled)") == 0, "archive_command: %s", ac);
	free(ac);
	ck_assert_int_eq(dp_test_run(&r, "'%s' get backups -o name 2>/dev/null || '%s' get backups",
	                             dp_test_bin("dp"), dp_test_bin("dp")),
	                 0);
	ck_assert_msg(!strstr(r.out, wal), "%s still listed: %s", wal, r.out);
	dp_test_result_free(&r);

	/* In place: the server's own directory goes back to the full backup. */
	st = dp(&r, "restore --backup %s --in-place", full);
	ck_assert_msg(st == 0 && strstr(r.out, "Completed"), "in place: %d\n%s\n%s", st, r.out,
	              r.err);
	dp_test_result_free(&r);
	got = dp_pg_query(&pg, "SELECT count(*) FROM t");
	ck_assert_str_eq(got, "5000");
	free(got);
}
END_TEST

/* Waits until the daemon logged its API port (the log was removed before
 * it started: the shell opens it in the background). */
static long daemon_pid(const char *log, int *port)
{
	for (int i = 0; i < 100; i++) {
		FILE *f = fopen(log, "r");
		char line[1024];
		while (f && fgets(line, sizeof(line), f)) {
			const char *p = strstr(line, "(port ");
			if (p) {
				*port = (int)strtol(p + 6, NULL, 10);
				fclose(f);
				return 1;
			}
		}
		if (f)
			fclose(f);
		usleep(100000);
	}
	return 0;
}

/* The file-level method through the controller: a policy without
 * backupMethods offers it as "files"; its backup restores like any other. */
START_TEST(embedded_files_method)
{
	dp_test_result r;
	dp_ok("apply", "apply -f %s", manifest);
	int st = dp(&r, "backup --policy pg --method files --wait");
	ck_assert_msg(st == 0 && strstr(r.out, "Completed"), "files: %d\n%s\n%s", st, r.out, r.err);
	dp_test_result_free(&r);
	char files[256];
	backup_of("files", files, sizeof(files));
	free(dp_pg_query(&pg, "DELETE FROM t WHERE id > 100"));
	char args[512];
	snprintf(args, sizeof(args), "--backup %s", files);
	char *got = restore_and_count(args, "SELECT count(*) || ' ' || max(id) FROM t");
	ck_assert_str_eq(got, "5000 5000");
	free(got);
}
END_TEST

START_TEST(daemon_and_api)
{
	dp_test_result r;
	dp_ok("apply", "apply -f %s", manifest);
	char log[PATH_MAX + 16], pidf[PATH_MAX + 32];
	snprintf(log, sizeof(log), "%s.log", home);
	snprintf(pidf, sizeof(pidf), "%s/dp-controller.pid", home);
	unlink(log);
	ck_assert_int_eq(dp_test_run(&r,
	                             "runuser -u nobody -- '%s' --listen 127.0.0.1:0 --sync-ms 300 "
	                             "</dev/null >%s 2>&1 & echo $!",
	                             dp_test_bin("dp-controller"), log),
	                 0);
	long runuser_pid = strtol(r.out, NULL, 10);
	dp_test_result_free(&r);
	int port = 0;
	ck_assert_msg(daemon_pid(log, &port) && port > 0, "dp-controller did not start");
	FILE *f = fopen(pidf, "r");
	ck_assert_ptr_nonnull(f);
	long pid = 0;
	ck_assert_int_eq(fscanf(f, "%ld", &pid), 1);
	fclose(f);
	/* A second daemon on the same home is refused. */
	int st2 =
	    dp_test_run(&r, "runuser -u nobody -- '%s' --no-api", dp_test_bin("dp-controller"));
	ck_assert_msg(st2 == 6 && strstr(r.err, "another dp-controller runs"), "%d %s", st2, r.err);
	dp_test_result_free(&r);
	/* dp hands the backup to the daemon and waits. */
	int st = dp(&r, "backup --policy pg --wait --timeout 120");
	ck_assert_msg(st == 0 && strstr(r.out, "Completed"), "%d\n%s\n%s", st, r.out, r.err);
	dp_test_result_free(&r);
	/* Through the API: PUT a Backup, the daemon runs it. */
	ck_assert_int_eq(
	    dp_test_run(
	        &r,
	        "curl -sS -o /dev/null -w '%%{http_code}' -X PUT "
	        "-H \"Authorization: Bearer $(cat %s/api-token)\" "
	        "-H 'Content-Type: application/json' --data "
	        "'{\"apiVersion\":\"dataprotection.dp.io/v1alpha1\",\"kind\":\"Backup\","
	        "\"metadata\":{\"name\":\"via-api\"},\"spec\":{\"backupPolicyName\":\"pg\","
	        "\"backupMethod\":\"full\"}}' http://127.0.0.1:%d/api/v1alpha1/backups/via-api",
	        home, port),
	    0);
	ck_assert_msg(r.out[0] == '2', "PUT: %s %s", r.out, r.err);
	dp_test_result_free(&r);
	bool done = false;
	for (int i = 0; i < 600 && !done; i++) {
		ck_assert_int_eq(
		    dp_test_run(&r,
		                "curl -sS -H \"Authorization: Bearer $(cat %s/api-token)\" "
		                "http://127.0.0.1:%d/api/v1alpha1/backups/via-api | jq -r "
		                ".status.phase",
		                home, port),
		    0);
		done = strncmp(r.out, "Completed", 9) == 0;
		ck_assert_msg(strncmp(r.out, "Failed", 6) != 0, "via-api failed");
		dp_test_result_free(&r);
		if (!done)
			usleep(200000);
	}
	ck_assert_msg(done, "the daemon did not complete the API's backup");
	/* /metrics with the token (401 without). */
	ck_assert_int_eq(dp_test_run(&r,
	                             "curl -sS -H \"Authorization: Bearer $(cat %s/api-token)\" "
	                             "http://127.0.0.1:%d/metrics",
	                             home, port),
	                 0);
	ck_assert_msg(
	    strstr(r.out, "dp_backups{phase=\"Completed\"} 2\n") &&
	        strstr(r.out, "dp_backuprepo_ready{repo=\"nas\"} 1\n") &&
	        strstr(r.out,
	               "dp_backup_last_success_timestamp_seconds{policy=\"pg\",method=\"full\"}"),
	    "%s", r.out);
	dp_test_result_free(&r);
	ck_assert_int_eq(
	    dp_test_run(&r, "curl -sS -o /dev/null -w '%%{http_code}' http://127.0.0.1:%d/metrics",
	                port),
	    0);
	ck_assert_str_eq(r.out, "401");
	dp_test_result_free(&r);

	/* A restore through the daemon. */
	char parent[PATH_MAX];
	dp_pg_mkdtemp(parent, "dprestore");
	int rport = dp_pg_free_port();
	st = dp(&r, "restore --backup via-api --to %s/data --port %d --wait --timeout 120", parent,
	        rport);
	ck_assert_msg(st == 0 && strstr(r.out, "Completed"), "%d\n%s\n%s", st, r.out, r.err);
	dp_test_result_free(&r);
	char rdir[PATH_MAX + 8];
	snprintf(rdir, sizeof(rdir), "%s/data", parent);
	dp_pg r2;
	dp_pg_attach(&r2, rdir, rport);
	char *cnt = dp_pg_query(&r2, "SELECT count(*) FROM t");
	ck_assert_str_eq(cnt, "5000");
	free(cnt);
	dp_pg_stop(&r2);

	/* kill -9 while a backup runs; a new daemon finishes it exactly once. */
	dp_ok("hand over", "backup --policy pg --name %s", "killed-daemon");
	bool running = false;
	for (int i = 0; i < 500 && !running; i++) {
		ck_assert_int_eq(dp_test_run(&r,
		                             "'%s' get backup killed-daemon -o json | jq -r "
		                             ".status.phase",
		                             dp_test_bin("dp")),
		                 0);
		running = strncmp(r.out, "Running", 7) == 0;
		ck_assert_msg(strncmp(r.out, "Completed", 9) != 0,
		              "the backup ended before the kill");
		dp_test_result_free(&r);
		if (!running)
			usleep(10000);
	}
	ck_assert_msg(running, "the backup never ran");
	ck_assert_int_eq(kill((pid_t)pid, SIGKILL), 0);
	for (int i = 0; i < 100 && kill((pid_t)pid, 0) == 0; i++)
		usleep(50000);
	unlink(log);
	long old_pid = pid;
	ck_assert_int_eq(dp_test_run(&r,
	                             "runuser -u nobody -- '%s' --listen 127.0.0.1:0 --sync-ms 300 "
	                             "</dev/null >%s 2>&1 & echo $!",
	                             dp_test_bin("dp-controller"), log),
	                 0);
	dp_test_result_free(&r);
	ck_assert_msg(daemon_pid(log, &port) && port > 0, "dp-controller did not restart");
	f = fopen(pidf, "r");
	ck_assert_ptr_nonnull(f);
	ck_assert_int_eq(fscanf(f, "%ld", &pid), 1);
	fclose(f);
	ck_assert_int_ne(pid, old_pid);
	st = dp(&r, "backup --policy pg --name after-restart --wait --timeout 120");
	ck_assert_msg(st == 0 && strstr(r.out, "Completed"), "%d\n%s\n%s", st, r.out, r.err);
	dp_test_result_free(&r);
	ck_assert_int_eq(dp_test_run(&r,
	                             "'%s' get backup killed-daemon -o json | jq -r .status.phase",
	                             dp_test_bin("dp")),
	                 0);
	ck_assert_str_eq(r.out, "Completed\n");
	dp_test_result_free(&r);
	ck_assert_int_eq(
	    dp_test_run(&r,
	                "DP_REPO=%s DP_REPO_PASSPHRASE=$DP_TEST_PASS runuser -u nobody -- "
	                "'%s' ls --json | jq '[.[] | select(.name == \"killed-daemon\")] "
	                "| length'",
	                repo, dp_test_bin("dp-worker")),
	    0);
	ck_assert_msg(strcmp(r.out, "1\n") == 0, "snapshots of killed-daemon: %s %s", r.out, r.err);
	dp_test_result_free(&r);
	/* SIGTERM: clean stop. */
	if (kill((pid_t)pid, SIGTERM) != 0) {
		dp_test_run(&r, "cat %s", log);
		ck_abort_msg("dp-controller %ld is gone: %s", pid, r.out);
	}
	bool gone = false;
	for (int i = 0; i < 100 && !gone; i++) {
		gone = kill((pid_t)pid, 0) != 0;
		if (!gone)
			usleep(100000);
	}
	ck_assert_msg(gone, "dp-controller did not stop on SIGTERM");
	ck_assert_int_ne(access(pidf, F_OK), 0);
	ck_assert_int_eq(
	    dp_test_run(&r, "wait %ld 2>/dev/null; grep -c stopping %s", runuser_pid, log), 0);
	dp_test_result_free(&r);
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("integration/controller_pg");
	TCase *t = tcase_create("controller_pg");
	tcase_add_checked_fixture(t, setup, teardown);
	tcase_set_timeout(t, 300);
	tcase_add_test(t, embedded_backup_pitr_import_restore);
	tcase_add_test(t, embedded_files_method);
	tcase_add_test(t, daemon_and_api);
	suite_add_tcase(s, t);
	return s;
}

DP_TEST_MAIN(suite)

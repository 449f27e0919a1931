/*
 * Point-in-time recovery on a real PostgreSQL 15: continuous archiving
 * through archive_command = dp-worker wal-push, a base backup, changes,
 * then restores to a time T (exactly the data at T), to an LSN, and to the
 * end of the archive (every change); times outside the recoverable window
 * are refused before anything is touched. Also: archive_mode=off is
 * refused with a clear message.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../harness/dp_test.h"
#include "../harness/pg.h"

static void new_target(char dir[PATH_MAX])
{
	char parent[PATH_MAX];
	dp_pg_mkdtemp(parent, "pgdst");
	ck_assert_int_lt(snprintf(dir, PATH_MAX, "%s/data", parent), PATH_MAX);
}

/* Restores with ARGS into a new directory, returns the checksums of every
 * table and stops the restored server. */
static char *restore_to(const dp_pg *pg, const char *args)
{
	char dir[PATH_MAX];
	new_target(dir);
	int port = dp_pg_free_port();
	dp_test_result r;
	int st = dp_pg_script(&r, pg, "bash $S/restore.sh %s --to %s --port %d", args, dir, port);
	ck_assert_msg(st == 0, "restore %s failed (%d): %s", args, st, r.err);
	dp_test_result_free(&r);
	dp_pg r2;
	dp_pg_attach(&r2, dir, port);
	char *sums = dp_pg_checksums(&r2);
	char *rec = dp_pg_query(&r2, "SELECT pg_is_in_recovery()::text || ' ' || "
	                             "(SELECT timeline_id FROM pg_control_checkpoint())");
	ck_assert_msg(strncmp(rec, "false ", 6) == 0 && strcmp(rec, "false 1") != 0,
	              "restored server not promoted to a new timeline: %s", rec);
	free(rec);
	dp_pg_stop(&r2);
	return sums;
}

START_TEST(pitr_time_lsn_latest)
{
	dp_pg pg;
	char repo[PATH_MAX];
	dp_pg_create(&pg, NULL);
	dp_pg_start(&pg);
	dp_pg_repo_init(repo);
	dp_test_result r;
	int st = dp_pg_script(&r, &pg, "DP_BACKUP_NAME=pg-wal bash $S/archive.sh");
	ck_assert_msg(st == 0, "archive.sh failed (%d): %s", st, r.err);
	ck_assert_ptr_nonnull(strstr(r.out, "\"archive\": \"pg-wal\""));
	dp_test_result_free(&r);
	char *cmd = dp_pg_query(&pg, "SHOW archive_command");
	ck_assert_msg(strstr(cmd, "wal-push --config ") && !strstr(cmd, "pg-test-passphrase"),
	              "archive_command: %s", cmd);
	free(cmd);

	st = dp_pg_script(&r, &pg, "DP_BACKUP_NAME=pg-base-1 bash $S/backup-full.sh");
	ck_assert_msg(st == 0, "backup failed (%d): %s", st, r.err);
	dp_test_result_free(&r);

	char T[32], *lsn, *at_t, *latest;
	dp_pg_pitr_scenario(&pg, T, &lsn, &at_t, &latest);

	/* Outside the window: refused, with the window, nothing created. */
	char dir[PATH_MAX];
	new_target(dir);
	st = dp_pg_script(&r, &pg,
	                  "bash $S/restore.sh --backup pg-wal --time 2099-01-01T00:00:00Z "
	                  "--to %s --port %d",
	                  dir, dp_pg_free_port());
	ck_assert_int_ne(st, 0);
	ck_assert_msg(strstr(r.err, "outside the recoverable window") &&
	                  strstr(r.err, "nothing was changed") && strstr(r.err, " .. "),
	              "%s", r.err);
	dp_test_result_free(&r);
	ck_assert_int_ne(access(dir, F_OK), 0);
	st = dp_pg_script(&r, &pg,
	                  "bash $S/restore.sh --backup pg-wal --time 2001-01-01T00:00:00Z "
	                  "--to %s --port %d",
	                  dir, dp_pg_free_port());
	ck_assert_int_ne(st, 0);
	ck_assert_msg(strstr(r.err, "outside the recoverable window"), "%s", r.err);
	dp_test_result_free(&r);
	ck_assert_int_ne(access(dir, F_OK), 0);

	char args[256];
	snprintf(args, sizeof(args), "--backup pg-wal --time %s", T);
	char *got = restore_to(&pg, args);
	ck_assert_str_eq(got, at_t);
	free(got);

	snprintf(args, sizeof(args), "--archive pg-wal --lsn %s", lsn);
	got = restore_to(&pg, args);
	ck_assert_str_eq(got, at_t);
	free(got);

	got = restore_to(&pg, "--backup pg-wal --latest");
	ck_assert_str_eq(got, latest);
	free(got);

	/* The window is stored in the repository. */
	st = dp_pg_script(&r, &pg,
	                  "bash $S/window.sh pg-wal >/dev/null && "
	                  "$DP_WORKER get-file archives/pg-wal.json - | jq -r '.end'");
	ck_assert_msg(st == 0 && strncmp(r.out, "20", 2) == 0, "window: %s %s", r.out, r.err);
	dp_test_result_free(&r);

	free(lsn);
	free(at_t);
	free(latest);
	dp_pg_destroy(&pg);
}
END_TEST

START_TEST(archive_mode_off_is_refused)
{
	dp_pg pg;
	char repo[PATH_MAX];
	dp_pg_create(&pg, "archive_mode = off");
	dp_pg_start(&pg);
	dp_pg_repo_init(repo);
	dp_test_result r;
	int st = dp_pg_script(&r, &pg, "DP_BACKUP_NAME=pg-wal bash $S/archive.sh");
	ck_assert_int_ne(st, 0);
	ck_assert_msg(strstr(r.err, "set archive_mode=on") && strstr(r.err, "restart"), "%s",
	              r.err);
	dp_test_result_free(&r);
	/* Nothing was set: no archive_command in postgresql.auto.conf. */
	dp_test_result g;
	ck_assert_int_ne(
	    dp_test_run(&g, "grep -q archive_command '%s/postgresql.auto.conf'", pg.data), 0);
	dp_test_result_free(&g);
	dp_pg_destroy(&pg);
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("pg_pitr");
	TCase *tc = tcase_create("pg_pitr");
	tcase_set_timeout(tc, 180);
	tcase_add_test(tc, pitr_time_lsn_latest);
	tcase_add_test(tc, archive_mode_off_is_refused);
	suite_add_tcase(s, tc);
	return s;
}

DP_TEST_MAIN(suite)

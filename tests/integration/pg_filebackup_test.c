/*
 * The file-level PostgreSQL 15 method (postgresql-filebackup:
 * scripts/backup-files.sh) end to end, on a throwaway server run as nobody
 * on a loopback port: backup -> drop -> restore to a new directory gives
 * exactly the data (per-table checksums over every row; an unlogged table
 * comes back empty, as the documentation prescribes); a second backup
 * after changes stores a fraction and restores exactly; a backup taken
 * while pgbench writes restores to a consistent state (pgbench's balance
 * invariants, no page checksum failure); a push that does not finish
 * records nothing and leaves no replication slot; point-in-time recovery on
 * top of a file-level base backup.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../harness/dp_test.h"
#include "../harness/pg.h"

static void load(const dp_pg *pg)
{
	free(dp_pg_query(pg, "CREATE TABLE items(id int PRIMARY KEY, name text, qty int);"
	                     "INSERT INTO items SELECT g, md5(g::text), g %% 100 FROM "
	                     "generate_series(1, 20000) g;"
	                     "CREATE TABLE notes(id serial PRIMARY KEY, body text);"
	                     "INSERT INTO notes(body) SELECT repeat(md5(g::text), 10) FROM "
	                     "generate_series(1, 2000) g;"
	                     "CREATE UNLOGGED TABLE scratch AS SELECT g AS id FROM "
	                     "generate_series(1, 1000) g"));
}

/* The checksum lines without the unlogged table's (it is not backed up). */
static char *logged_only(char *sums)
{
	size_t n = strlen(sums), o = 0;
	char *out = calloc(1, n + 1);
	ck_assert_ptr_nonnull(out);
	for (const char *line = sums; *line;) {
		const char *nl = strchr(line, '\n');
		size_t len = nl ? (size_t)(nl - line) + 1 : strlen(line);
		if (strncmp(line, "scratch|", 8) != 0) {
			memcpy(out + o, line, len);
			o += len;
		}
		line += len;
	}
	free(sums);
	return out;
}

/* Runs backup-files.sh; returns the stored bytes, *size the logical ones. */
static double file_backup(const dp_pg *pg, const char *name, const char *parent, double *size)
{
	dp_test_result r;
	int st =
	    dp_pg_script(&r, pg,
	                 "DP_BACKUP_NAME=%s DP_PARENT_BACKUP_NAME=%s "
	                 "DP_BACKUP_INFO_FILE=/tmp/dp-pgfb-info-$$.json "
	                 "bash $S/backup-files.sh > /tmp/dp-pgfb-out-$$.json && "
	                 "jq -r '\"\\(.size) \\(.stored) \\(.meta.method) \\(.meta.stopLsn) "
	                 "\\(.meta.firstWal)\"' /tmp/dp-pgfb-out-$$.json && "
	                 "jq -e '.timeRange.end and .extras[0].stopLsn' "
	                 "/tmp/dp-pgfb-info-$$.json >/dev/null; "
	                 "s=$?; rm -f /tmp/dp-pgfb-info-$$.json /tmp/dp-pgfb-out-$$.json; exit $s",
	                 name, parent ? parent : "");
	ck_assert_msg(st == 0, "file backup %s failed (%d): %s", name, st, r.err);
	double sz = 0, stored = 0;
	char method[32] = "", lsn[32] = "", wal[32] = "";
	ck_assert_int_eq(sscanf(r.out, "%lf %lf %31s %31s %31s", &sz, &stored, method, lsn, wal),
	                 5);
	ck_assert_str_eq(method, "filebackup");
	ck_assert_msg(strchr(lsn, '/') && strlen(wal) == 24, "no LSN or WAL in %s", r.out);
	dp_test_result_free(&r);
	if (size)
		*size = sz;
	return stored;
}

/* Restores NAME into a new directory on a free port (as root: files go to
 * the source directory's owner); returns the checksums, leaves the
 * server running in *out. */
static char *restore_new(const dp_pg *pg, const char *name, dp_pg *out)
{
	char parent[PATH_MAX], dir[PATH_MAX];
	dp_pg_mkdtemp(parent, "pgdst");
	ck_assert_int_lt(snprintf(dir, PATH_MAX, "%s/data", parent), PATH_MAX);
	int port = dp_pg_free_port();
	dp_test_result r;
	int st = dp_pg_script_root(&r, pg, "bash $S/restore.sh --backup %s --to %s --port %d", name,
	                           dir, port);
	ck_assert_msg(st == 0, "restore of %s failed (%d): %s", name, st, r.err);
	dp_test_result_free(&r);
	dp_pg_attach(out, dir, port);
	ck_assert(dp_pg_running(out));
	char *rec = dp_pg_query(out, "SELECT pg_is_in_recovery()");
	ck_assert_str_eq(rec, "f");
	free(rec);
	return dp_pg_checksums(out);
}

START_TEST(filebackup_restore_exact_and_incremental)
{
	dp_pg pg, r1, r2;
	char repo[PATH_MAX];
	dp_pg_create(&pg, NULL);
	dp_pg_start(&pg);
	dp_pg_repo_init(repo);
	load(&pg);
	char *before = logged_only(dp_pg_checksums(&pg));
	ck_assert_ptr_nonnull(strstr(before, "items|20000|"));
	double size1, size2;
	double stored1 = file_backup(&pg, "pg-fb-1", NULL, &size1);

	/* The snapshot is a tree with the label and the WAL in it, and
	 * without what must be left out. */
	dp_test_result r;
	(void)dp_pg_script(&r, &pg,
	                   "$DP_WORKER pull --tar pg-fb-1 - | tar -t | sort > /tmp/dp-pgfb-ls-$$; "
	                   "grep -c -e '^backup_label$' -e '^pg_wal/0000000[0-9A-F]*$' "
	                   "-e '^global/pg_control$' /tmp/dp-pgfb-ls-$$; "
	                   "grep -c -e '^postmaster.pid$' -e '^pg_replslot/.' "
	                   "-e '^pg_stat_tmp/.' /tmp/dp-pgfb-ls-$$; "
	                   "rm -f /tmp/dp-pgfb-ls-$$");
	int good = -1, bad = -1;
	ck_assert_int_eq(sscanf(r.out, "%d %d", &good, &bad), 2);
	ck_assert_msg(good >= 3 && bad == 0, "tree listing: %d wanted, %d unwanted: %s", good, bad,
	              r.err);
	dp_test_result_free(&r);

	free(dp_pg_query(&pg, "DROP TABLE items"));
	char *after = logged_only(restore_new(&pg, "pg-fb-1", &r1));
	ck_assert_str_eq(after, before);
	char *ul = dp_pg_query(&r1, "SELECT count(*) FROM scratch");
	ck_assert_str_eq(ul, "0"); /* unlogged: reset from its init fork */
	free(ul);
	dp_pg_stop(&r1);

	/* A second backup after changes stores a fraction; both restore. */
	free(dp_pg_query(&pg, "UPDATE notes SET body = 'changed' WHERE id %% 50 = 0"));
	char *sums2 = logged_only(dp_pg_checksums(&pg));
	double stored2 = file_backup(&pg, "pg-fb-2", "pg-fb-1", &size2);
	fprintf(stderr, "filebackup: first %.0f of %.0f bytes stored, second %.0f of %.0f\n",
	        stored1, size1, stored2, size2);
	ck_assert_msg(stored2 < stored1 * 0.5, "second backup stored %.0f bytes, first %.0f",
	              stored2, stored1);
	char *got2 = logged_only(restore_new(&pg, "pg-fb-2", &r2));
	ck_assert_str_eq(got2, sums2);
	dp_pg_stop(&r2);

	free(before);
	free(after);
	free(sums2);
	free(got2);
	dp_pg_destroy(&pg);
}
END_TEST

START_TEST(filebackup_under_load_is_consistent)
{
	dp_pg pg, rs;
	char repo[PATH_MAX];
	dp_pg_create(&pg, NULL);
	dp_pg_start(&pg);
	dp_pg_repo_init(repo);
	dp_test_result r;
	int st = dp_test_run(
	    &r, DP_PG_BIN "/pgbench -i -s 5 -q -h 127.0.0.1 -p %d -U " DP_PG_USER " postgres",
	    pg.port);
	ck_assert_msg(st == 0, "pgbench -i: %s", r.err);
	dp_test_result_free(&r);
	/* Writers all through the backup (they outlive it). */
	st = dp_test_run(&r,
	                 DP_PG_BIN "/pgbench -n -c 2 -j 2 -T 8 -h 127.0.0.1 -p %d -U " DP_PG_USER
	                           " postgres >/dev/null 2>&1 & echo $!",
	                 pg.port);
	ck_assert_int_eq(st, 0);
	int bench = (int)strtol(r.out, NULL, 10);
	dp_test_result_free(&r);
	ck_assert_int_gt(bench, 0);
	usleep(500 * 1000);
	file_backup(&pg, "pg-fb-load", NULL, NULL);
	bool running = kill(bench, 0) == 0;
	for (int i = 0; i < 200 && kill(bench, 0) == 0; i++)
		usleep(100 * 1000);
	ck_assert_msg(running, "pgbench ended before the backup did: the test proves nothing");

	dp_pg_stop(&pg);
	char *sums = restore_new(&pg, "pg-fb-load", &rs);
	free(sums);
	/* pgbench's invariant: every transaction adds the same delta to one
	 * account, teller and branch and logs it in the history. */
	char *inv = dp_pg_query(&rs, "SELECT (SELECT sum(abalance) FROM pgbench_accounts) = "
	                             "(SELECT sum(bbalance) FROM pgbench_branches) AND "
	                             "(SELECT sum(bbalance) FROM pgbench_branches) = "
	                             "(SELECT sum(tbalance) FROM pgbench_tellers) AND "
	                             "(SELECT sum(tbalance) FROM pgbench_tellers) = "
	                             "(SELECT coalesce(sum(delta), 0) FROM pgbench_history), "
	                             "(SELECT count(*) FROM pgbench_history) > 0");
	ck_assert_msg(strcmp(inv, "t|t") == 0, "restored data inconsistent: %s", inv);
	free(inv);
	/* Every page read back passes its checksum (torn pages were
	 * repaired by replaying the backup's WAL). */
	char *cf = dp_pg_query(&rs, "SELECT count(*) FROM pgbench_accounts");
	free(cf);
	cf = dp_pg_query(&rs, "SELECT coalesce(sum(checksum_failures), 0) FROM pg_stat_database");
	ck_assert_str_eq(cf, "0");
	free(cf);
	dp_pg_stop(&rs);
	dp_pg_destroy(&pg);
}
END_TEST

START_TEST(filebackup_unfinished_records_nothing)
{
	dp_pg pg;
	char repo[PATH_MAX];
	dp_pg_create(&pg, NULL);
	dp_pg_start(&pg);
	dp_pg_repo_init(repo);
	load(&pg);

	/* dp-worker push whose trailer never comes (input ends after the
	 * tree): no snapshot, the session ends, no slot is left behind. */
	char wdir[PATH_MAX], wrapper[PATH_MAX + 16];
	dp_pg_mkdtemp(wdir, "pgwrap");
	snprintf(wrapper, sizeof(wrapper), "%s/dp-worker", wdir);
	FILE *f = fopen(wrapper, "w");
	ck_assert_ptr_nonnull(f);
	fprintf(f,
	        "#!/bin/sh\nif [ \"$1\" = push ]; then exec \"%s\" \"$@\" </dev/null; fi\n"
	        "exec \"%s\" \"$@\"\n",
	        dp_test_bin("dp-worker"), dp_test_bin("dp-worker"));
	ck_assert_int_eq(fclose(f), 0);
	ck_assert_int_eq(chmod(wrapper, 0755), 0);
	dp_test_result r;
	int st = dp_pg_script(
	    &r, &pg, "DP_WORKER=%s DP_BACKUP_NAME=pg-fb-broken bash $S/backup-files.sh", wrapper);
	ck_assert_int_ne(st, 0);
	ck_assert_msg(strstr(r.err, "no backup \"pg-fb-broken\" was recorded"), "%s", r.err);
	dp_test_result_free(&r);
	st = dp_pg_script(&r, &pg, "$DP_WORKER ls --json | jq -r '.[].name'");
	ck_assert_int_eq(st, 0);
	ck_assert_str_eq(r.out, "");
	dp_test_result_free(&r);
	char *slots = NULL;
	for (int i = 0; i < 50; i++) { /* the backend may take a moment to exit */
		free(slots);
		slots = dp_pg_query(&pg, "SELECT count(*) FROM pg_replication_slots");
		if (strcmp(slots, "0") == 0)
			break;
		usleep(100 * 1000);
	}
	ck_assert_str_eq(slots, "0");
	free(slots);

	/* A directory that is not the server's: refused before anything. */
	st = dp_pg_script(&r, &pg,
	                  "DP_DATA_DIR=/tmp DP_BACKUP_NAME=pg-fb-x bash $S/backup-files.sh");
	ck_assert_int_ne(st, 0);
	ck_assert_msg(strstr(r.err, "pg_control"), "%s", r.err);
	dp_test_result_free(&r);

	/* And then a good one works. */
	file_backup(&pg, "pg-fb-ok", NULL, NULL);
	dp_test_rmrf(wdir);
	dp_pg_destroy(&pg);
}
END_TEST

static char *restore_pitr(const dp_pg *pg, const char *args)
{
	char parent[PATH_MAX], dir[PATH_MAX];
	dp_pg_mkdtemp(parent, "pgdst");
	ck_assert_int_lt(snprintf(dir, PATH_MAX, "%s/data", parent), PATH_MAX);
	int port = dp_pg_free_port();
	dp_test_result r;
	int st = dp_pg_script(&r, pg, "bash $S/restore.sh %s --to %s --port %d", args, dir, port);
	ck_assert_msg(st == 0, "restore %s failed (%d): %s", args, st, r.err);
	ck_assert_msg(strstr(r.err, "pg-fb-base"), "restore did not use the file backup: %s",
	              r.err);
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

START_TEST(pitr_on_a_file_backup)
{
	dp_pg pg;
	char repo[PATH_MAX];
	dp_pg_create(&pg, NULL);
	dp_pg_start(&pg);
	dp_pg_repo_init(repo);
	dp_test_result r;
	int st = dp_pg_script(&r, &pg, "DP_BACKUP_NAME=pg-wal bash $S/archive.sh");
	ck_assert_msg(st == 0, "archive.sh failed (%d): %s", st, r.err);
	dp_test_result_free(&r);
	file_backup(&pg, "pg-fb-base", NULL, NULL);

	char T[32], *at_t, *latest;
	dp_pg_pitr_scenario(&pg, T, NULL, &at_t, &latest);

	char args[256];
	snprintf(args, sizeof(args), "--backup pg-wal --time %s", T);
	char *got = restore_pitr(&pg, args);
	ck_assert_str_eq(got, at_t);
	free(got);
	got = restore_pitr(&pg, "--backup pg-wal --latest");
	ck_assert_str_eq(got, latest);
	free(got);
	free(at_t);
	free(latest);
	dp_pg_destroy(&pg);
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("pg_filebackup");
	TCase *tc = tcase_create("pg_filebackup");
	tcase_set_timeout(tc, 180);
	tcase_add_test(tc, filebackup_restore_exact_and_incremental);
	tcase_add_test(tc, filebackup_under_load_is_consistent);
	tcase_add_test(tc, filebackup_unfinished_records_nothing);
	tcase_add_test(tc, pitr_on_a_file_backup);
	suite_add_tcase(s, tc);
	return s;
}

DP_TEST_MAIN(suite)

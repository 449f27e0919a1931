/*
 * PostgreSQL 15 full backups end to end, through the postgresql method
 * scripts and dp-worker, on a throwaway server run as nobody on a loopback
 * port: backup -> drop -> restore to a new directory; incremental (dedup)
 * backups; in-place restore; an in-place restore killed half-way.
 * Data is compared with per-table checksums over every row.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
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
	                     "generate_series(1, 2000) g;"));
}

static void full_backup(const dp_pg *pg, const char *name, const char *parent)
{
	dp_test_result r;
	int st =
	    dp_pg_script(&r, pg,
	                 "DP_BACKUP_NAME=%s DP_PARENT_BACKUP_NAME=%s "
	                 "DP_BACKUP_INFO_FILE=/tmp/dp-pg-info-$$.json bash $S/backup-full.sh && "
	                 "cat /tmp/dp-pg-info-$$.json >&2; rm -f /tmp/dp-pg-info-$$.json",
	                 name, parent ? parent : "");
	ck_assert_msg(st == 0, "backup %s failed (%d): %s", name, st, r.err);
	ck_assert_msg(strstr(r.out, "\"stopLsn\"") && strstr(r.err, "\"totalSize\""),
	              "backup result lacks LSNs or the info file: %s / %s", r.out, r.err);
	dp_test_result_free(&r);
}

/* Stored bytes of the last backup result line printed by backup-full.sh,
 * with the ActionSet's DP_CHUNK_AVG=16K: its chunks are finer than the
 * repository's 32 KiB default. */
static double backup_stored(const dp_pg *pg, const char *name, const char *parent, double *size)
{
	dp_test_result r;
	int st = dp_pg_script(&r, pg,
	                      "DP_BACKUP_NAME=%s DP_PARENT_BACKUP_NAME=%s DP_CHUNK_AVG=16K "
	                      "bash $S/backup-full.sh | "
	                      "jq -r '\"\\(.size) \\(.stored) \\(.blobs) \\(.meta.parent)\"'",
	                      name, parent ? parent : "");
	ck_assert_msg(st == 0, "backup %s failed (%d): %s", name, st, r.err);
	double sz = 0, stored = 0, blobs = 0;
	char par[256] = "";
	ck_assert_int_ge(sscanf(r.out, "%lf %lf %lf %255s", &sz, &stored, &blobs, par), 3);
	if (parent)
		ck_assert_str_eq(par, parent);
	/* 16K chunks with a 4K minimum average ~20-24K; the default, over 40K */
	ck_assert_msg(blobs > 0 && sz / blobs < 32000, "average chunk %.0f bytes", sz / blobs);
	fprintf(stderr, "pg_backup_test: %s: average chunk %.0f bytes\n", name, sz / blobs);
	dp_test_result_free(&r);
	*size = sz;
	return stored;
}

/* Restores NAME into a new directory on a free port (as root: files go to
 * the source directory's owner), checks the server came up, returns the
 * checksums and stops it. */
static char *restore_new(const dp_pg *pg, const char *name, char dir[PATH_MAX])
{
	char parent[PATH_MAX];
	dp_pg_mkdtemp(parent, "pgdst");
	ck_assert_int_lt(snprintf(dir, PATH_MAX, "%s/data", parent), PATH_MAX);
	int port = dp_pg_free_port();
	dp_test_result r;
	int st = dp_pg_script_root(&r, pg, "bash $S/restore.sh --backup %s --to %s --port %d", name,
	                           dir, port);
	ck_assert_msg(st == 0, "restore of %s failed (%d): %s", name, st, r.err);
	dp_test_result_free(&r);
	struct stat sb;
	ck_assert_int_eq(stat(dir, &sb), 0);
	struct stat src;
	ck_assert_int_eq(stat(pg->data, &src), 0);
	ck_assert_uint_eq(sb.st_uid, src.st_uid); /* owner of the source data dir */
	dp_pg r2;
	dp_pg_attach(&r2, dir, port);
	ck_assert(dp_pg_running(&r2));
	char *sums = dp_pg_checksums(&r2);
	char *rec = dp_pg_query(&r2, "SELECT pg_is_in_recovery()");
	ck_assert_str_eq(rec, "f");
	free(rec);
	dp_pg_stop(&r2);
	return sums;
}

START_TEST(full_backup_drop_restore_new_dir)
{
	dp_pg pg;
	char repo[PATH_MAX], dir[PATH_MAX];
	dp_pg_create(&pg, NULL);
	dp_pg_start(&pg);
	dp_pg_repo_init(repo);
	load(&pg);
	char *before = dp_pg_checksums(&pg);
	ck_assert_ptr_nonnull(strstr(before, "items|20000|"));
	full_backup(&pg, "pg-full-1", NULL);

	/* pg_basebackup dying half-way through the stream records nothing. */
	char fake[PATH_MAX];
	dp_pg_mkdtemp(fake, "pgfake");
	dp_test_result r;
	int st = dp_test_run(&r,
	                     "for f in " DP_PG_BIN
	                     "/*; do ln -s \"$f\" %s/; done && rm %s/pg_basebackup && "
	                     "printf '#!/bin/sh\\n" DP_PG_BIN
	                     "/pg_basebackup \"$@\" | head -c 3000000\\nexit 1\\n' > "
	                     "%s/pg_basebackup && chmod 755 %s/pg_basebackup",
	                     fake, fake, fake, fake);
	ck_assert_msg(st == 0, "%s", r.err);
	dp_test_result_free(&r);
	st = dp_pg_script(&r, &pg, "DP_PG_BIN=%s DP_BACKUP_NAME=pg-broken bash $S/backup-full.sh",
	                  fake);
	ck_assert_int_ne(st, 0);
	ck_assert_msg(strstr(r.err, "no backup \"pg-broken\" was recorded"), "%s", r.err);
	dp_test_result_free(&r);
	st = dp_pg_script(&r, &pg, "$DP_WORKER ls --json | jq -r '.[].name'");
	ck_assert_int_eq(st, 0);
	ck_assert_str_eq(r.out, "pg-full-1\n");
	dp_test_result_free(&r);

	free(dp_pg_query(&pg, "DROP TABLE items"));
	char *dropped = dp_pg_checksums(&pg);
	ck_assert_ptr_null(strstr(dropped, "items|"));

	char *after = restore_new(&pg, "pg-full-1", dir);
	ck_assert_str_eq(after, before);

	/* A second restore into a non-empty directory is refused. */
	ck_assert_int_ne(
	    dp_pg_script_root(&r, &pg, "bash $S/restore.sh --backup pg-full-1 --to %s", dir), 0);
	ck_assert_ptr_nonnull(strstr(r.err, "not empty"));
	dp_test_result_free(&r);
	/* A backup name that does not exist: clear error, nothing created. */
	char other[PATH_MAX + 8];
	snprintf(other, sizeof(other), "%s.x", dir);
	ck_assert_int_ne(
	    dp_pg_script_root(&r, &pg, "bash $S/restore.sh --backup nope --to %s", other), 0);
	ck_assert_msg(strstr(r.err, "\"nope\" not found") != NULL, "%s", r.err);
	ck_assert_int_ne(access(other, F_OK), 0);
	dp_test_result_free(&r);

	free(before);
	free(dropped);
	free(after);
	dp_pg_destroy(&pg);
}
END_TEST

START_TEST(incremental_stores_a_fraction)
{
	dp_pg pg;
	char repo[PATH_MAX], d1[PATH_MAX], d2[PATH_MAX];
	dp_pg_create(&pg, NULL);
	dp_pg_start(&pg);
	dp_pg_repo_init(repo);
	dp_test_result r;
	int st = dp_test_run(
	    &r, DP_PG_BIN "/pgbench -i -s 3 -q -h 127.0.0.1 -p %d -U " DP_PG_USER " postgres",
	    pg.port);
	ck_assert_msg(st == 0, "pgbench -i: %s", r.err);
	dp_test_result_free(&r);
	double size1, size2;
	double stored1 = backup_stored(&pg, "pg-inc-1", NULL, &size1);
	char *sums1 = dp_pg_checksums(&pg);

	st = dp_test_run(&r,
	                 DP_PG_BIN "/pgbench -n -c 2 -j 2 -t 100 -h 127.0.0.1 -p %d -U " DP_PG_USER
	                           " postgres",
	                 pg.port);
	ck_assert_msg(st == 0, "pgbench: %s", r.err);
	dp_test_result_free(&r);
	double stored2 = backup_stored(&pg, "pg-inc-2", "pg-inc-1", &size2);
	char *sums2 = dp_pg_checksums(&pg);
	ck_assert_str_ne(sums1, sums2);
	fprintf(stderr, "incremental: first %.0f of %.0f bytes stored, second %.0f of %.0f\n",
	        stored1, size1, stored2, size2);
	ck_assert_msg(stored2 < stored1 * 0.5, "second backup stored %.0f bytes, first %.0f",
	              stored2, stored1);

	char *got1 = restore_new(&pg, "pg-inc-1", d1);
	char *got2 = restore_new(&pg, "pg-inc-2", d2);
	ck_assert_str_eq(got1, sums1);
	ck_assert_str_eq(got2, sums2);
	free(sums1);
	free(sums2);
	free(got1);
	free(got2);
	dp_pg_destroy(&pg);
}
END_TEST

START_TEST(in_place_restore)
{
	dp_pg pg;
	char repo[PATH_MAX];
	dp_pg_create(&pg, NULL);
	dp_pg_start(&pg);
	dp_pg_repo_init(repo);
	load(&pg);
	char *at_backup = dp_pg_checksums(&pg);
	full_backup(&pg, "pg-ip-1", NULL);
	free(dp_pg_query(&pg,
	                 "DELETE FROM items WHERE id %% 3 = 0; DROP TABLE notes;"
	                 "CREATE TABLE later(x int PRIMARY KEY); INSERT INTO later VALUES (1)"));
	int pid_before = dp_pg_pid(&pg);

	/* The ActionSet path: prepareData then postReady, driven by the DP_*
	 * environment alone. */
	dp_test_result r;
	int st = dp_pg_script(
	    &r, &pg, "DP_BACKUP_NAME=pg-ip-1 DP_RESTORE_IN_PLACE=true bash $S/restore.sh prepare");
	ck_assert_msg(st == 0, "in-place prepare failed (%d): %s", st, r.err);
	dp_test_result_free(&r);
	ck_assert(!dp_pg_running(&pg)); /* swapped in, not started yet */
	st = dp_pg_script(&r, &pg, "DP_RESTORE_IN_PLACE=true bash $S/restore.sh ready");
	ck_assert_msg(st == 0, "in-place ready failed (%d): %s", st, r.err);
	dp_test_result_free(&r);
	ck_assert(dp_pg_running(&pg));
	ck_assert_int_ne(dp_pg_pid(&pg), pid_before);
	char *now = dp_pg_checksums(&pg);
	ck_assert_str_eq(now, at_backup);
	/* The old directory was removed once the new one was checked. */
	char old[PATH_MAX + 16];
	snprintf(old, sizeof(old), "%s.dp-old", pg.data);
	ck_assert_int_ne(access(old, F_OK), 0);
	free(at_backup);
	free(now);
	dp_pg_destroy(&pg);
}
END_TEST

/* Kills the restore at the worst moments (server stopped; old directory moved
 * aside but the new one not yet in place). The original must come back intact:
 * by starting it, or by the rollback that the next run also does by itself. */
START_TEST(in_place_restore_killed)
{
	dp_pg pg;
	char repo[PATH_MAX];
	dp_pg_create(&pg, NULL);
	dp_pg_start(&pg);
	dp_pg_repo_init(repo);
	load(&pg);
	full_backup(&pg, "pg-kill-1", NULL);
	free(dp_pg_query(&pg, "UPDATE items SET qty = -1 WHERE id < 100; DROP TABLE notes"));
	char *orig = dp_pg_checksums(&pg);

	/* 1: the worker dies half-way through pulling the backup: nothing
	 * was touched, the server still runs. */
	char wdir[PATH_MAX], wrapper[PATH_MAX + 16];
	dp_pg_mkdtemp(wdir, "pgwrap");
	snprintf(wrapper, sizeof(wrapper), "%s/dp-worker", wdir);
	FILE *f = fopen(wrapper, "w");
	ck_assert_ptr_nonnull(f);
	/* pull extracts into its last argument: killed (-9) as soon as the
	 * first files appear there. */
	fprintf(f,
	        "#!/bin/sh\nif [ \"$1\" = pull ]; then for a; do last=$a; done\n"
	        "  \"%s\" \"$@\" & p=$!\n"
	        "  while [ -z \"$(ls -A \"$last\" 2>/dev/null)\" ] && kill -0 $p 2>/dev/null; do "
	        "sleep 0.01; done\n"
	        "  kill -9 $p; exit 137\nfi\n"
	        "exec \"%s\" \"$@\"\n",
	        dp_test_bin("dp-worker"), dp_test_bin("dp-worker"));
	ck_assert_int_eq(fclose(f), 0);
	ck_assert_int_eq(chmod(wrapper, 0755), 0);
	dp_test_result r;
	int st = dp_pg_script(
	    &r, &pg, "DP_WORKER=%s bash $S/restore.sh --backup pg-kill-1 --in-place", wrapper);
	ck_assert_int_ne(st, 0);
	ck_assert_msg(strstr(r.err, "nothing was changed") != NULL, "%s", r.err);
	dp_test_result_free(&r);
	dp_test_rmrf(wdir);
	ck_assert(dp_pg_running(&pg));
	char *now = dp_pg_checksums(&pg);
	ck_assert_str_eq(now, orig);
	free(now);

	/* The restore killed after pulling, before stopping anything. */
	st = dp_pg_script(
	    &r, &pg, "DP_TEST_KILL_AT=pulled bash $S/restore.sh --backup pg-kill-1 --in-place");
	ck_assert_int_eq(st, 137);
	dp_test_result_free(&r);
	ck_assert(dp_pg_running(&pg));
	now = dp_pg_checksums(&pg);
	ck_assert_str_eq(now, orig);
	free(now);

	/* 2: killed right after stopping the server: the original is intact
	 * and startable as it is. */
	st = dp_pg_script(
	    &r, &pg, "DP_TEST_KILL_AT=stopped bash $S/restore.sh --backup pg-kill-1 --in-place");
	ck_assert_int_eq(st, 137);
	dp_test_result_free(&r);
	ck_assert(!dp_pg_running(&pg));
	dp_pg_start(&pg);
	now = dp_pg_checksums(&pg);
	ck_assert_str_eq(now, orig);
	free(now);

	/* 3: killed between the two renames: no data directory in place;
	 * rollback puts the original back and starts it again. */
	st = dp_pg_script(
	    &r, &pg, "DP_TEST_KILL_AT=swapped bash $S/restore.sh --backup pg-kill-1 --in-place");
	ck_assert_int_eq(st, 137);
	dp_test_result_free(&r);
	ck_assert_int_ne(access(pg.data, F_OK), 0);
	st = dp_pg_script(&r, &pg, "bash $S/restore.sh rollback --in-place");
	ck_assert_msg(st == 0, "rollback failed: %s", r.err);
	dp_test_result_free(&r);
	ck_assert(dp_pg_running(&pg));
	now = dp_pg_checksums(&pg);
	ck_assert_str_eq(now, orig);
	free(now);
	free(orig);
	dp_pg_destroy(&pg);
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("pg_backup");
	TCase *tc = tcase_create("pg_backup");
	tcase_set_timeout(tc, 180);
	tcase_add_test(tc, full_backup_drop_restore_new_dir);
	tcase_add_test(tc, incremental_stores_a_fraction);
	tcase_add_test(tc, in_place_restore);
	tcase_add_test(tc, in_place_restore_killed);
	suite_add_tcase(s, tc);
	return s;
}

DP_TEST_MAIN(suite)

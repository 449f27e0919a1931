/*
 * dp-worker wal-push / wal-fetch, the archive verbs behind archive_command
 * and restore_command: failures (missing file, wrong repository, wrong
 * passphrase, a full disk simulated with `ulimit -f`, an unsafe config file)
 * exit non-zero and store nothing; identical re-push succeeds, different
 * bytes fail and change nothing. Then the same failures under a real
 * PostgreSQL archiver: it keeps the segment, retries, and once archiving
 * works again every segment is in the archive and a restore to the end of
 * the archive has every change. Slot keys: key-add / key-rm and wal-push with
 * a key (no passphrase; wrong or revoked: exit 3), and archive.sh writing a
 * key, never the passphrase, rotating it on restart and revoking it on stop.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../harness/dp_test.h"
#include "../harness/pg.h"
#include "dp/repo.h"

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
	/* As PostgreSQL hands over a segment: already on disk (a fresh dirty
	 * file would be flushed by the push's own fsync on ext4). */
	sync();
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
	/* restore_command used a key slot of its own, revoked once recovery
	 * ended; the archive's key is still there. */
	st = dp_pg_script(&r, &pg,
	                  "$DP_WORKER key-ls --json | jq -r '[.[] | select(.kind == \"random\")] "
	                  "| map(.label | split(\" \")[0]) | join(\",\")'");
	ck_assert_msg(st == 0 && strcmp(r.out, "archive\n") == 0, "keys after restore: %s %s",
	              r.out, r.err);
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

/* Slot keys from the command line: key-add writes a 0600 key file (never
 * stdout), wal-push/wal-fetch open with it and need no passphrase; a wrong,
 * revoked or unsafe key file fails (exit 3, 3, 2) and stores nothing. */
START_TEST(key_slot_cli)
{
	char repo[PATH_MAX], seg[PATH_MAX], kf[PATH_MAX], conf[PATH_MAX], back[PATH_MAX];
	dp_test_result r;
	const char *w = dp_test_bin("dp-worker");
	snprintf(repo, sizeof(repo), "%s/repo", dp_test_dir);
	snprintf(seg, sizeof(seg), "%s/000000010000000000000003", dp_test_dir);
	snprintf(kf, sizeof(kf), "%s/archive.key", dp_test_dir);
	snprintf(conf, sizeof(conf), "%s/archive.conf", dp_test_dir);
	snprintf(back, sizeof(back), "%s/back", dp_test_dir);
	setenv("DP_REPO_PASSPHRASE", "wal-key-test-pass", 1);
	ck_assert_int_eq(dp_test_run(&r, "%s repo init --repo %s", dp_test_bin("dp"), repo), 0);
	dp_test_result_free(&r);
	dp_test_write_data(seg, 16u << 20, 3, true);

	ck_assert_int_eq(
	    dp_test_run(&r, "%s key-add --repo %s --label 'archive t' --out %s", w, repo, kf), 0);
	char id[DP_ID_HEX];
	ck_assert_int_eq(strlen(r.out), 65);
	memcpy(id, r.out, 64);
	id[64] = 0;
	ck_assert_ptr_null(strstr(r.out, "dpk1-")); /* the key is not printed */
	ck_assert_ptr_null(strstr(r.err, "dpk1-"));
	dp_test_result_free(&r);
	struct stat st;
	ck_assert_int_eq(stat(kf, &st), 0);
	ck_assert_int_eq(st.st_mode & 0777, 0600);
	/* An existing file is not overwritten, and no slot is added then. */
	ck_assert_int_eq(dp_test_run(&r, "%s key-add --repo %s --out %s", w, repo, kf), 1);
	dp_test_result_free(&r);
	ck_assert_int_eq(dp_test_run(&r,
	                             "%s key-ls --repo %s --json | jq -r "
	                             "'[.[] | select(.kind == \"random\")] | length'",
	                             w, repo),
	                 0);
	ck_assert_str_eq(r.out, "1\n");
	dp_test_result_free(&r);

	FILE *f = fopen(conf, "w");
	ck_assert_ptr_nonnull(f);
	fprintf(f, "repo = %s\nkey-file = %s\narchive = a1\n", repo, kf);
	ck_assert_int_eq(fclose(f), 0);
	ck_assert_int_eq(chmod(conf, 0600), 0);
	/* No passphrase anywhere in the environment from here on. */
	/* As PostgreSQL hands over a segment: already on disk (a fresh dirty
	 * file would be flushed by the push's own fsync on ext4). */
	sync();
	double t0 = now_s();
	int rc =
	    dp_test_run(&r, "env -u DP_REPO_PASSPHRASE %s wal-push --config %s %s", w, conf, seg);
	double dt = now_s() - t0;
	ck_assert_msg(rc == 0, "%s", r.err);
	dp_test_result_free(&r);
	fprintf(stderr, "wal-push of a 16 MiB segment with a slot key: %.0f ms\n", dt * 1000);
	ck_assert_int_eq(dp_test_run(&r,
	                             "env -u DP_REPO_PASSPHRASE %s wal-fetch --config %s "
	                             "000000010000000000000003 %s",
	                             w, conf, back),
	                 0);
	dp_test_result_free(&r);
	ck_assert(dp_test_files_equal(seg, back));
	/* The passphrase reads what the key wrote. */
	unlink(back);
	ck_assert_int_eq(
	    dp_test_run(&r, "%s wal-fetch --repo %s --archive a1 000000010000000000000003 %s", w,
	                repo, back),
	    0);
	dp_test_result_free(&r);
	ck_assert(dp_test_files_equal(seg, back));

	/* A key file others can read is refused. */
	ck_assert_int_eq(chmod(kf, 0640), 0);
	ck_assert_int_eq(
	    dp_test_run(&r, "env -u DP_REPO_PASSPHRASE %s wal-ls --config %s", w, conf), 2);
	ck_assert_ptr_nonnull(strstr(r.err, "0600"));
	dp_test_result_free(&r);
	ck_assert_int_eq(chmod(kf, 0600), 0);

	/* A wrong key: exit 3, nothing stored. */
	char bad[PATH_MAX];
	snprintf(bad, sizeof(bad), "%s/bad.conf", dp_test_dir);
	char key[256] = {0};
	f = fopen(kf, "r");
	ck_assert_ptr_nonnull(f);
	ck_assert_ptr_nonnull(fgets(key, sizeof(key), f));
	fclose(f);
	key[strcspn(key, "\n")] = 0;
	ck_assert_int_eq(strlen(key), DP_KEYSLOT_TOKEN_LEN - 1);
	key[strlen(key) - 1] = key[strlen(key) - 1] == '0' ? '1' : '0';
	f = fopen(bad, "w");
	ck_assert_ptr_nonnull(f);
	fprintf(f, "repo = %s\nkey = %s\narchive = a1\n", repo, key);
	ck_assert_int_eq(fclose(f), 0);
	ck_assert_int_eq(chmod(bad, 0600), 0);
	char seg2[PATH_MAX];
	snprintf(seg2, sizeof(seg2), "%s/000000010000000000000004", dp_test_dir);
	dp_test_write_data(seg2, 16u << 20, 4, true);
	ck_assert_int_eq(
	    dp_test_run(&r, "env -u DP_REPO_PASSPHRASE %s wal-push --config %s %s", w, bad, seg2),
	    3);
	ck_assert_ptr_nonnull(strstr(r.err, "wrong repository key"));
	dp_test_result_free(&r);

	/* Revoked: exit 3. The last passphrase key cannot be removed. */
	ck_assert_int_eq(dp_test_run(&r, "%s key-rm --repo %s %.12s", w, repo, id), 0);
	dp_test_result_free(&r);
	ck_assert_int_eq(
	    dp_test_run(&r, "env -u DP_REPO_PASSPHRASE %s wal-push --config %s %s", w, conf, seg2),
	    3);
	ck_assert_ptr_nonnull(strstr(r.err, "revoked"));
	dp_test_result_free(&r);
	ck_assert_int_eq(dp_test_run(&r,
	                             "%s key-rm --repo %s $(%s key-ls --repo %s --json | jq -r "
	                             "'.[0].id')",
	                             w, repo, w, repo),
	                 2);
	ck_assert_ptr_nonnull(strstr(r.err, "last passphrase key"));
	dp_test_result_free(&r);
	ck_assert_int_eq(dp_test_run(&r, "%s wal-ls --repo %s --archive a1", w, repo), 0);
	ck_assert_str_eq(r.out, "000000010000000000000003\n");
	dp_test_result_free(&r);
}
END_TEST

/* archive.sh gives the server a key slot, not the passphrase: the config
 * holds "key = dpk1-...", no passphrase, mode 0600, owned by the server's OS
 * user; a restart of archiving rotates the key (the old one exits 3); stop
 * revokes it and removes the config. */
START_TEST(archive_uses_a_key_slot)
{
	dp_pg pg;
	char repo[PATH_MAX], conf[PATH_MAX + 32];
	dp_pg_create(&pg, NULL);
	dp_pg_start(&pg);
	dp_pg_repo_init(repo);
	const char *pass = getenv("DP_REPO_PASSPHRASE");
	ck_assert_ptr_nonnull(pass);
	dp_test_result r;
	free(dp_pg_query(&pg, "CREATE TABLE t(id int, v text)"));
	int st = dp_pg_script(&r, &pg, "DP_BACKUP_NAME=pg-wal bash $S/archive.sh");
	ck_assert_msg(st == 0, "archive.sh: %s", r.err);
	ck_assert_ptr_null(strstr(r.err, pass));
	dp_test_result_free(&r);
	snprintf(conf, sizeof(conf), "%s/dp-archive-pg-wal.conf", pg.base);
	struct stat st_conf;
	ck_assert_int_eq(stat(conf, &st_conf), 0);
	ck_assert_int_eq(st_conf.st_mode & 0777, 0600);
	FILE *f = fopen(conf, "r");
	ck_assert_ptr_nonnull(f);
	char text[4096] = {0};
	size_t n = fread(text, 1, sizeof(text) - 1, f);
	fclose(f);
	ck_assert_int_gt(n, 0);
	ck_assert_ptr_nonnull(strstr(text, "\nkey = dpk1-"));
	ck_assert_ptr_null(strstr(text, pass));
	ck_assert_ptr_null(strstr(text, "passphrase ="));
	char *cmd = dp_pg_query(&pg, "SHOW archive_command");
	ck_assert_ptr_null(strstr(cmd, "dpk1-"));
	free(cmd);

	/* The server archives with it (archive.sh checked one segment); one
	 * random slot, labelled with the archive; nobody owns the config. */
	st = dp_pg_script(&r, &pg,
	                  "test -O %s && $DP_WORKER key-ls --json | jq -r '[.[] | select(.kind == "
	                  "\"random\")] | (length|tostring), .[0].label, .[0].id'",
	                  conf);
	ck_assert_msg(st == 0, "%s", r.err);
	ck_assert_msg(strncmp(r.out, "1\narchive pg-wal (", 18) == 0, "%s", r.out);
	char id1[DP_ID_HEX];
	memcpy(id1, strrchr(r.out, ')') + 2, 64);
	id1[64] = 0;
	dp_test_result_free(&r);

	/* Pushing as the server would, timed. */
	char seg[PATH_MAX + 32];
	snprintf(seg, sizeof(seg), "%s/000000010000000000000077", pg.base);
	dp_test_write_data(seg, 16u << 20, 77, true);
	ck_assert_int_eq(chmod(seg, 0644), 0);
	/* As PostgreSQL hands over a segment: already on disk (a fresh dirty
	 * file would be flushed by the push's own fsync on ext4). */
	sync();
	double t0 = now_s();
	st = dp_pg_script(&r, &pg, "env -u DP_REPO_PASSPHRASE $DP_WORKER wal-push --config %s %s",
	                  conf, seg);
	double dt = now_s() - t0;
	ck_assert_msg(st == 0, "%s", r.err);
	dp_test_result_free(&r);
	fprintf(stderr, "wal-push with archive.sh's config (as nobody, through runuser): %.0f ms\n",
	        dt * 1000);

	/* Starting again rotates the key: the previous one is revoked. */
	char old[PATH_MAX + 32];
	snprintf(old, sizeof(old), "%s/old.conf", pg.base);
	st = dp_pg_script(&r, &pg, "cp -p %s %s && DP_BACKUP_NAME=pg-wal bash $S/archive.sh", conf,
	                  old);
	ck_assert_msg(st == 0, "archive.sh again: %s", r.err);
	dp_test_result_free(&r);
	st = dp_pg_script(&r, &pg,
	                  "$DP_WORKER key-ls --json | jq -r '[.[] | select(.kind == \"random\")] | "
	                  "(length|tostring), .[0].id'");
	ck_assert_msg(st == 0 && strncmp(r.out, "1\n", 2) == 0, "%s %s", r.out, r.err);
	ck_assert_msg(strncmp(r.out + 2, id1, 64) != 0, "the key was not rotated");
	dp_test_result_free(&r);
	snprintf(seg, sizeof(seg), "%s/000000010000000000000078", pg.base);
	dp_test_write_data(seg, 1u << 20, 78, true);
	ck_assert_int_eq(chmod(seg, 0644), 0);
	st = dp_pg_script(&r, &pg, "env -u DP_REPO_PASSPHRASE $DP_WORKER wal-push --config %s %s",
	                  old, seg);
	ck_assert_msg(st == 3, "revoked key: exit %d: %s", st, r.err);
	dp_test_result_free(&r);

	/* Stop: archive_command reset, key revoked, config removed. */
	st = dp_pg_script(&r, &pg, "cp -p %s %s && DP_BACKUP_NAME=pg-wal bash $S/archive.sh stop",
	                  conf, old);
	ck_assert_msg(st == 0, "archive.sh stop: %s", r.err);
	dp_test_result_free(&r);
	ck_assert_int_ne(access(conf, F_OK), 0);
	st = dp_pg_script(&r, &pg,
	                  "$DP_WORKER key-ls --json | jq -r '[.[] | select(.kind == \"random\")] | "
	                  "length'; env -u DP_REPO_PASSPHRASE $DP_WORKER wal-push --config %s %s",
	                  old, seg);
	ck_assert_msg(st == 3 && strcmp(r.out, "0\n") == 0, "after stop: exit %d: %s %s", st, r.out,
	              r.err);
	dp_test_result_free(&r);
	dp_pg_destroy(&pg);
}
END_TEST

/* wal-fetch checks what it writes: an object whose bytes do not match the
 * SHA-256 in its header, or a stored object with one byte flipped, exits 4
 * and leaves nothing at DEST. */
START_TEST(fetch_checks_what_it_writes)
{
	char repo[PATH_MAX], dest[PATH_MAX], obj[PATH_MAX];
	dp_test_result r;
	const char *w = dp_test_bin("dp-worker");
	snprintf(repo, sizeof(repo), "%s/repo", dp_test_dir);
	snprintf(dest, sizeof(dest), "%s/dest", dp_test_dir);
	setenv("DP_REPO_PASSPHRASE", "wal-fetch-test", 1);
	ck_assert_int_eq(dp_test_run(&r, "%s repo init --repo %s", dp_test_bin("dp"), repo), 0);
	dp_test_result_free(&r);

	/* A well-sealed object whose header names the wrong hash. */
	dp_repo *rp = NULL;
	ck_assert_int_eq(dp_repo_open(&rp, repo, NULL, "wal-fetch-test"), 0);
	uint8_t o[48 + 100] = {'D', 'P', 'W', '1', 0};
	o[8] = 100; /* raw size 100, little endian */
	memset(o + 16, 0xab, 32); /* not the SHA-256 of the payload */
	memset(o + 48, 'x', 100);
	ck_assert_int_eq(dp_repo_put_file(rp, "wal/a1/000000010000000000000005", o, sizeof(o)), 0);
	dp_repo_free(rp);
	ck_assert_int_eq(dp_test_run(&r,
	                             "%s wal-fetch --repo %s --archive a1 "
	                             "000000010000000000000005 %s",
	                             w, repo, dest),
	                 4);
	ck_assert_ptr_nonnull(strstr(r.err, "does not match its hash"));
	dp_test_result_free(&r);
	ck_assert_int_ne(access(dest, F_OK), 0);

	/* A real segment, then one byte of its stored object flipped. */
	char seg[PATH_MAX];
	snprintf(seg, sizeof(seg), "%s/000000010000000000000006", dp_test_dir);
	dp_test_write_data(seg, 16u << 20, 6, true);
	ck_assert_int_eq(dp_test_run(&r, "%s wal-push --repo %s --archive a1 %s", w, repo, seg), 0);
	dp_test_result_free(&r);
	snprintf(obj, sizeof(obj), "%s/wal/a1/000000010000000000000006", repo);
	FILE *f = fopen(obj, "r+b");
	ck_assert_ptr_nonnull(f);
	ck_assert_int_eq(fseek(f, 1000, SEEK_SET), 0);
	int ch = fgetc(f);
	ck_assert_int_eq(fseek(f, 1000, SEEK_SET), 0);
	fputc(ch ^ 0xff, f);
	fclose(f);
	ck_assert_int_eq(dp_test_run(&r,
	                             "%s wal-fetch --repo %s --archive a1 "
	                             "000000010000000000000006 %s",
	                             w, repo, dest),
	                 4);
	dp_test_result_free(&r);
	ck_assert_int_ne(access(dest, F_OK), 0);
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
	tcase_add_test(tc, key_slot_cli);
	tcase_add_test(tc, fetch_checks_what_it_writes);
	tcase_add_test(tc, archive_uses_a_key_slot);
	suite_add_tcase(s, tc);
	return s;
}

DP_TEST_MAIN(suite)

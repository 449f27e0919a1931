/*
 * Retention and deletion with a fake clock and a real repository:
 * expiration = completion + retentionPeriod and GC deletes what expired
 * (data, catalog copy and record); retainLatestBackup keeps the newest
 * completed backup of a policy; a parent is not deleted while a child names
 * it (refused, or cascaded with the flag; GC skips it); deletionPolicy
 * Retain keeps the data and the repository's record, so an import brings
 * the backup back.
 */
#include "ctl_fixture.h"

static void backup(dp_ctl *c, const char *name, const char *retention, const char *parent,
                   const char *deletion)
{
	dp_ctl_backup_req req = {0};
	req.policy = "p";
	req.name = name;
	req.retention_period = retention;
	req.parent = parent;
	req.deletion_policy = deletion;
	ck_assert_msg(dp_ctl_backup_create(c, &req, NULL, 0) == 0, "create %s: %s", name,
	              dp_error_last());
	ck_assert_int_eq(dp_ctl_drive(c, DP_KIND_BACKUP, name, 30, NULL, NULL), 0);
	char ph[32];
	fx_status(c, name, "phase", ph, sizeof(ph));
	ck_assert_str_eq(ph, "Completed");
	fx_now += 60;
}

static bool in_repo(const char *name)
{
	dp_repo *r = fx_repo_open();
	dp_snapshot_info si;
	int rc = dp_snapshot_find(r, name, &si);
	if (rc == 0)
		free(si.meta);
	dp_repo_free(r);
	dp_error_clear();
	return rc == 0;
}

static bool record_in_repo(const char *name)
{
	dp_repo *r = fx_repo_open();
	dp_buf b = {0};
	char key[300];
	snprintf(key, sizeof(key), "catalog/%s.json", name);
	int rc = dp_repo_get_file(r, key, &b);
	dp_buf_free(&b);
	dp_repo_free(r);
	dp_error_clear();
	return rc == 0;
}

START_TEST(gc_deletes_expired_backups)
{
	dp_ctl *c = fx_open();
	backup(c, "a", "7d", NULL, NULL);
	backup(c, "b", NULL, NULL, NULL); /* no retention: kept forever */
	char exp[64];
	fx_status(c, "a", "expiration", exp, sizeof(exp));
	ck_assert_str_eq(exp, "2026-03-08T00:30:00Z");
	fx_status(c, "b", "expiration", exp, sizeof(exp));
	ck_assert_str_eq(exp, "");
	ck_assert(in_repo("a") && record_in_repo("a"));
	fx_now = fx_t("2026-03-08T00:29:00Z");
	fx_settle(c);
	ck_assert(fx_exists(c, "a"));
	fx_now = fx_t("2026-03-08T00:31:00Z");
	fx_settle(c);
	ck_assert(!fx_exists(c, "a"));
	ck_assert(!in_repo("a"));
	ck_assert(!record_in_repo("a"));
	ck_assert(fx_exists(c, "b") && in_repo("b"));
	/* The repository is still whole after the prune. */
	dp_repo *r = fx_repo_open();
	dp_check_report rep;
	ck_assert_int_eq(dp_repo_check(r, true, &rep, NULL, NULL), 0);
	ck_assert_uint_eq(rep.snapshots, 1);
	dp_repo_free(r);
	dp_ctl_close(c);
}
END_TEST

START_TEST(retain_latest_backup)
{
	dp_ctl *c = fx_open();
	fx_apply(c,
	         "apiVersion: dataprotection.dp.io/v1alpha1\n"
	         "kind: BackupPolicy\n"
	         "metadata: {name: p}\n"
	         "spec: {backupRepoName: r, backoffLimit: 1, retentionPolicy: retainLatestBackup,"
	         " target: {engine: testdb}}\n");
	backup(c, "one", "1d", NULL, NULL);
	backup(c, "two", "1d", NULL, NULL);
	backup(c, "three", "1d", NULL, NULL);
	fx_now += 30 * 86400;
	fx_settle(c);
	ck_assert(!fx_exists(c, "one"));
	ck_assert(!fx_exists(c, "two"));
	ck_assert(fx_exists(c, "three")); /* the newest completed one stays */
	ck_assert(in_repo("three") && !in_repo("one") && !in_repo("two"));
	dp_ctl_close(c);
}
END_TEST

START_TEST(parents_refuse_or_cascade)
{
	dp_ctl *c = fx_open();
	backup(c, "base", "1d", NULL, NULL);
	backup(c, "child", "30d", "base", NULL);
	backup(c, "grandchild", "30d", "child", NULL);
	/* Refused, naming the child; nothing changes. */
	int rc = dp_ctl_backup_delete(c, "base", false);
	ck_assert_int_eq(rc, DP_EUSAGE);
	ck_assert_msg(strstr(dp_error_last(), "\"child\"") && strstr(dp_error_last(), "--cascade"),
	              "%s", dp_error_last());
	dp_error_clear();
	char ph[32];
	fx_status(c, "base", "phase", ph, sizeof(ph));
	ck_assert_str_eq(ph, "Completed");
	/* GC leaves an expired parent alone while children exist. */
	fx_now += 2 * 86400;
	fx_settle(c);
	ck_assert(fx_exists(c, "base") && in_repo("base"));
	/* Cascade: the whole chain goes. */
	ck_assert_int_eq(dp_ctl_backup_delete(c, "base", true), 0);
	fx_settle(c);
	for (int i = 0; i < 20 && fx_count(c); i++)
		fx_settle(c);
	ck_assert_uint_eq(fx_count(c), 0);
	ck_assert(!in_repo("base") && !in_repo("child") && !in_repo("grandchild"));
	dp_ctl_close(c);
}
END_TEST

START_TEST(retain_keeps_data_and_import_brings_it_back)
{
	dp_ctl *c = fx_open();
	backup(c, "kept", NULL, NULL, "Retain");
	backup(c, "gone", NULL, NULL, "Delete");
	ck_assert_int_eq(dp_ctl_backup_delete(c, "kept", false), 0);
	ck_assert_int_eq(dp_ctl_backup_delete(c, "gone", false), 0);
	fx_settle(c);
	ck_assert(!fx_exists(c, "kept") && !fx_exists(c, "gone"));
	ck_assert(in_repo("kept") && record_in_repo("kept"));
	ck_assert(!in_repo("gone") && !record_in_repo("gone"));
	size_t imported = 0, skipped = 0;
	ck_assert_msg(dp_ctl_catalog_import(c, "r", &imported, &skipped) == 0, "import: %s",
	              dp_error_last());
	ck_assert_uint_eq(imported, 1);
	ck_assert(fx_exists(c, "kept"));
	char ph[32], total[32];
	fx_status(c, "kept", "phase", ph, sizeof(ph));
	fx_status(c, "kept", "totalSize", total, sizeof(total));
	ck_assert_str_eq(ph, "Completed");
	ck_assert_str_eq(total, "42");
	/* Importing again adds nothing. */
	ck_assert_int_eq(dp_ctl_catalog_import(c, "r", &imported, &skipped), 0);
	ck_assert_uint_eq(imported, 0);
	ck_assert_uint_eq(skipped, 1);
	dp_ctl_close(c);
}
END_TEST

START_TEST(import_on_a_fresh_home)
{
	dp_ctl *c = fx_open();
	backup(c, "x1", "7d", NULL, NULL);
	backup(c, "x2", NULL, "x1", NULL);
	dp_ctl_close(c);
	/* A new $DP_HOME with only the repo and the engine's ActionSet: the
	 * policy comes back from the records. */
	char old_home[PATH_MAX];
	snprintf(old_home, sizeof(old_home), "%s", fx_home);
	snprintf(fx_home, sizeof(fx_home), "%s/home2", dp_test_dir);
	c = fx_open();
	fx_apply(
	    c,
	    "apiVersion: dataprotection.dp.io/v1alpha1\n"
	    "kind: BackupRepo\n"
	    "metadata: {name: again}\n"
	    "spec: {posix: {path: \"%s\"}, encryption: {passphraseFrom: {env: DP_TEST_PASS}}}\n"
	    "---\n"
	    "apiVersion: dataprotection.dp.io/v1alpha1\n"
	    "kind: ActionSet\n"
	    "metadata: {name: t-full, labels: {dataprotection.dp.io/engine: testdb}}\n"
	    "spec: {backupType: Full, backup: {backupData: {command: [\"true\"]}}}\n",
	    fx_repo);
	size_t imported = 0, skipped = 0;
	ck_assert_msg(dp_ctl_catalog_import(c, "again", &imported, &skipped) == 0, "import: %s",
	              dp_error_last());
	ck_assert_uint_eq(imported, 2);
	ck_assert(fx_exists(c, "x1") && fx_exists(c, "x2"));
	char exp[64], repo[64];
	fx_status(c, "x1", "expiration", exp, sizeof(exp));
	ck_assert_str_eq(exp, "2026-03-08T00:30:00Z");
	fx_status(c, "x2", "backupRepoName", repo, sizeof(repo));
	ck_assert_str_eq(repo, "again");
	dp_resource pol = {0};
	ck_assert_int_eq(dp_catalog_get(dp_ctl_catalog(c), DP_KIND_BACKUP_POLICY, "p", &pol), 0);
	ck_assert_ptr_nonnull(strstr(pol.spec, "\"again\""));
	dp_resource_clear(&pol);
	/* The parent link survived: deleting x1 alone is refused. */
	ck_assert_int_eq(dp_ctl_backup_delete(c, "x1", false), DP_EUSAGE);
	dp_ctl_close(c);
}
END_TEST

/* Without an info file, the sizes come from dp-worker's result events. */
START_TEST(sizes_from_worker_events)
{
	dp_ctl *c = fx_open();
	fx_file("noinfo", "1");
	backup(c, "plain", NULL, NULL, NULL);
	char total[32], stored[32];
	fx_status(c, "plain", "totalSize", total, sizeof(total));
	fx_status(c, "plain", "storedSize", stored, sizeof(stored));
	ck_assert_str_eq(total, "13"); /* "data of plain" */
	ck_assert_msg(strtol(stored, NULL, 10) > 13, "stored %s", stored);
	dp_ctl_close(c);
}
END_TEST

/* A backup deleted and made again under the same name runs again: it does
 * not adopt the old one's job. */
START_TEST(same_name_again_runs_again)
{
	dp_ctl *c = fx_open();
	backup(c, "again", NULL, NULL, NULL);
	ck_assert_int_eq(dp_ctl_backup_delete(c, "again", false), 0);
	ck_assert_int_eq(dp_ctl_drive(c, DP_KIND_BACKUP, "again", 30, NULL, NULL), 0);
	ck_assert(!fx_exists(c, "again"));
	backup(c, "again", NULL, NULL, NULL);
	ck_assert_int_eq(fx_runs_of("again"), 2);
	ck_assert(in_repo("again"));
	dp_ctl_close(c);
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("controller/retention");
	TCase *t = tcase_create("retention");
	tcase_add_checked_fixture(t, fx_setup, fx_teardown);
	tcase_set_timeout(t, 120);
	tcase_add_test(t, gc_deletes_expired_backups);
	tcase_add_test(t, retain_latest_backup);
	tcase_add_test(t, parents_refuse_or_cascade);
	tcase_add_test(t, retain_keeps_data_and_import_brings_it_back);
	tcase_add_test(t, import_on_a_fresh_home);
	tcase_add_test(t, sizes_from_worker_events);
	tcase_add_test(t, same_name_again_runs_again);
	suite_add_tcase(s, t);
	return s;
}

DP_TEST_MAIN(suite)

/*
 * BackupSchedule and Backup reconciliation with a fake clock and real
 * workers: the right slots fire (one backup per slot, named from the slot,
 * missed slots collapsed to the newest), startingDeadlineMinutes, disabled
 * entries, no concurrent runs of one policy, retries and failure reasons,
 * and restart safety: the controller killed (SIGKILL) at every step between
 * "slot due" and "backup recorded" never runs a slot twice nor loses it.
 */
#include <dirent.h>

#include "ctl_fixture.h"

static const char sched_fmt[] = "apiVersion: dataprotection.dp.io/v1alpha1\n"
                                "kind: BackupSchedule\n"
                                "metadata: {name: s}\n"
                                "spec:\n"
                                "  backupPolicyName: p\n"
                                "%s"
                                "  schedules:\n"
                                "    - {backupMethod: full, cronExpression: \"%s\", "
                                "retentionPeriod: 7d}\n"
                                "    - {name: off, backupMethod: full, cronExpression: \"* * * * "
                                "*\", enabled: false}\n";

START_TEST(fires_the_right_backups)
{
	dp_ctl *c = fx_open();
	fx_apply(c, sched_fmt, "", "0 * * * *");
	ck_assert_int_eq(dp_ctl_sync(c), 0); /* first seen at 00:30: nothing due */
	ck_assert_uint_eq(fx_count(c), 0);
	fx_now = fx_t("2026-03-01T00:59:59Z");
	fx_settle(c);
	ck_assert_uint_eq(fx_count(c), 0);
	fx_now = fx_t("2026-03-01T01:00:30Z");
	fx_settle(c);
	ck_assert_uint_eq(fx_count(c), 1);
	ck_assert(fx_exists(c, "p-full-20260301010000"));
	char ph[64], exp[64], total[64];
	fx_status(c, "p-full-20260301010000", "phase", ph, sizeof(ph));
	ck_assert_str_eq(ph, "Completed");
	fx_status(c, "p-full-20260301010000", "expiration", exp, sizeof(exp));
	ck_assert_str_eq(exp, "2026-03-08T01:00:30Z"); /* completion + 7d */
	fx_status(c, "p-full-20260301010000", "totalSize", total, sizeof(total));
	ck_assert_str_eq(total, "42");
	ck_assert_int_eq(fx_runs_of("p-full-20260301010000"), 1);
	ck_assert_int_eq(dp_ctl_sync(c), 0); /* the schedule sees the result */
	dp_resource sr = {0};
	ck_assert_int_eq(dp_catalog_get(dp_ctl_catalog(c), DP_KIND_BACKUP_SCHEDULE, "s", &sr), 0);
	ck_assert_msg(strstr(sr.status, "\"lastSuccessfulTime\":\"2026-03-01T01:00:30Z\"") &&
	                  strstr(sr.status, "\"lastScheduleTime\":\"2026-03-01T01:00:00Z\""),
	              "%s", sr.status);
	dp_resource_clear(&sr);
	/* Down from 01:10 to 04:10: 02:00 and 03:00 are skipped, 04:00 runs. */
	fx_now = fx_t("2026-03-01T01:10:00Z");
	fx_settle(c);
	ck_assert_uint_eq(fx_count(c), 1);
	fx_now = fx_t("2026-03-01T04:10:00Z");
	fx_settle(c);
	fx_settle(c);
	ck_assert_uint_eq(fx_count(c), 2);
	ck_assert(fx_exists(c, "p-full-20260301040000"));
	/* The second full names the first as its parent (for dedup). */
	char env[PATH_MAX + 64], line[256] = "";
	snprintf(env, sizeof(env), "%s/p-full-20260301040000.env", fx_runs);
	FILE *f = fopen(env, "r");
	ck_assert_ptr_nonnull(f);
	ck_assert_ptr_nonnull(fgets(line, sizeof(line), f));
	fclose(f);
	ck_assert_str_eq(line, "parent=p-full-20260301010000\n");
	/* The disabled entry never fired (it would have every minute). */
	dp_repo *r = fx_repo_open();
	dp_snapshot_info si;
	ck_assert_int_eq(dp_snapshot_find(r, "p-full-20260301040000", &si), 0);
	free(si.meta);
	/* The record went into the repository. */
	dp_buf b = {0};
	ck_assert_int_eq(dp_repo_get_file(r, "catalog/p-full-20260301040000.json", &b), 0);
	dp_buf_free(&b);
	dp_repo_free(r);
	dp_ctl_close(c);
}
END_TEST

START_TEST(honours_starting_deadline)
{
	dp_ctl *c = fx_open();
	fx_apply(c, sched_fmt, "  startingDeadlineMinutes: 5\n", "0 * * * *");
	ck_assert_int_eq(dp_ctl_sync(c), 0);
	fx_now = fx_t("2026-03-01T01:10:00Z"); /* 01:00 is 10 minutes late */
	fx_settle(c);
	ck_assert_uint_eq(fx_count(c), 0);
	fx_now = fx_t("2026-03-01T01:59:00Z");
	fx_settle(c);
	ck_assert_uint_eq(fx_count(c), 0); /* and it does not come back */
	fx_now = fx_t("2026-03-01T02:04:59Z"); /* 02:00 within 5 minutes */
	fx_settle(c);
	ck_assert_uint_eq(fx_count(c), 1);
	ck_assert(fx_exists(c, "p-full-20260301020000"));
	dp_ctl_close(c);
}
END_TEST

START_TEST(no_concurrent_runs_of_a_policy)
{
	dp_ctl *c = fx_open();
	fx_apply(c, sched_fmt, "", "* * * * *");
	ck_assert_int_eq(dp_ctl_sync(c), 0);
	fx_file("sleep", "2");
	fx_now = fx_t("2026-03-01T00:31:00Z");
	ck_assert_int_eq(dp_ctl_sync(c), 0);
	ck_assert_int_eq(dp_ctl_sync(c), 0);
	char ph[64];
	fx_status(c, "p-full-20260301003100", "phase", ph, sizeof(ph));
	ck_assert_str_eq(ph, "Running");
	fx_now = fx_t("2026-03-01T00:32:00Z");
	ck_assert_int_eq(dp_ctl_sync(c), 0);
	ck_assert_uint_eq(fx_count(c), 1); /* the 00:32 slot waits */
	/* A manual backup of the same policy waits too (New, waitingFor). */
	char name[DP_NAME_MAX + 1];
	dp_ctl_backup_req req = {0};
	req.policy = "p";
	req.name = "manual";
	ck_assert_int_eq(dp_ctl_backup_create(c, &req, name, sizeof(name)), 0);
	ck_assert_int_eq(dp_ctl_sync(c), 0);
	fx_status(c, "manual", "phase", ph, sizeof(ph));
	ck_assert_str_eq(ph, "New");
	fx_file("sleep", NULL);
	fx_settle(c);
	fx_settle(c);
	fx_settle(c);
	ck_assert(fx_exists(c, "p-full-20260301003200"));
	dp_resource r = {0};
	ck_assert_int_eq(
	    dp_catalog_get(dp_ctl_catalog(c), DP_KIND_BACKUP, "p-full-20260301003100", &r), 0);
	ck_assert_msg(fx_runs_of("p-full-20260301003100") == 1, "ran %d times: %s",
	              fx_runs_of("p-full-20260301003100"), r.status);
	dp_resource_clear(&r);
	ck_assert_int_eq(fx_runs_of("p-full-20260301003200"), 1);
	ck_assert_int_eq(fx_runs_of("manual"), 1);
	dp_ctl_close(c);
}
END_TEST

START_TEST(failure_reason_and_retries)
{
	dp_ctl *c = fx_open();
	fx_file("fail", "boom: the database said no\n");
	dp_ctl_backup_req req = {0};
	req.policy = "p";
	req.name = "bad";
	ck_assert_int_eq(dp_ctl_backup_create(c, &req, NULL, 0), 0);
	fx_settle(c);
	char ph[64], reason[1024];
	fx_status(c, "bad", "phase", ph, sizeof(ph));
	fx_status(c, "bad", "failureReason", reason, sizeof(reason));
	ck_assert_str_eq(ph, "Failed");
	ck_assert_msg(strstr(reason, "exit status 3") &&
	                  strstr(reason, "boom: the database said no"),
	              "reason: %s", reason);
	ck_assert_int_eq(fx_runs_of("bad"), 2); /* backoffLimit 1: one retry */
	/* A worker killed with no result is retried, then succeeds. */
	fx_file("fail", NULL);
	fx_file("sleep", "30");
	req.name = "killed";
	ck_assert_int_eq(dp_ctl_backup_create(c, &req, NULL, 0), 0);
	for (int i = 0; i < 100 && fx_runs_of("killed") == 0; i++) {
		ck_assert_int_eq(dp_ctl_sync(c), 0);
		fx_nap(50);
	}
	ck_assert_int_eq(fx_runs_of("killed"), 1);
	char pidf[PATH_MAX + 64];
	dp_resource r = {0};
	ck_assert_int_eq(dp_catalog_get(dp_ctl_catalog(c), DP_KIND_BACKUP, "killed", &r), 0);
	const char *p = strstr(r.status, "\"pid\":");
	ck_assert_ptr_nonnull(p);
	long pid = strtol(p + 6, NULL, 10);
	dp_resource_clear(&r);
	ck_assert_int_gt(pid, 1);
	fx_file("sleep", NULL);
	ck_assert_int_eq(kill(-(pid_t)pid, SIGKILL), 0);
	(void)pidf;
	fx_settle(c);
	fx_status(c, "killed", "phase", ph, sizeof(ph));
	ck_assert_str_eq(ph, "Completed");
	ck_assert_int_eq(fx_runs_of("killed"), 2);
	dp_ctl_close(c);
}
END_TEST

/* A continuous method: one long-lived backup at its first slot, the cron
 * period as its refresh interval, no second one while it runs, and
 * disabling the entry stops it (preDelete runs, Completed, worker gone). */
static const char cont_fmt[] =
    "apiVersion: dataprotection.dp.io/v1alpha1\n"
    "kind: ActionSet\n"
    "metadata: {name: t-wal, labels: {dataprotection.dp.io/engine: testdb}}\n"
    "spec:\n"
    "  backupType: Continuous\n"
    "  env: [{name: RUNS, value: \"%s\"}]\n"
    "  backup:\n"
    "    backupData:\n"
    "      command: [bash, -c, 'echo \"$DP_ARCHIVE_INTERVAL\" >>\"$RUNS/$DP_BACKUP_NAME\"; "
    "printf \"{\\\"timeRange\\\":{\\\"start\\\":\\\"2026-03-01T00:00:00Z\\\",\\\"end\\\":"
    "\\\"2026-03-01T00:35:00Z\\\"}}\" >\"$DP_BACKUP_INFO_FILE\"; while :; do sleep 0.2; done']\n"
    "    preDelete:\n"
    "      command: [bash, -c, 'echo stopped >\"$RUNS/$DP_BACKUP_NAME.stopped\"']\n"
    "---\n"
    "apiVersion: dataprotection.dp.io/v1alpha1\n"
    "kind: BackupSchedule\n"
    "metadata: {name: s}\n"
    "spec:\n"
    "  backupPolicyName: p\n"
    "  schedules:\n"
    "    - {backupMethod: wal, cronExpression: \"*/5 * * * *\", enabled: %s}\n";

START_TEST(continuous_method_runs_once_and_stops_when_disabled)
{
	dp_ctl *c = fx_open();
	fx_apply(c, cont_fmt, fx_runs, "true");
	ck_assert_int_eq(dp_ctl_sync(c), 0);
	fx_now = fx_t("2026-03-01T00:35:10Z");
	fx_settle(c);
	const char *name = "p-wal-20260301003500";
	ck_assert(fx_exists(c, name));
	char ph[64], buf[512];
	fx_status(c, name, "phase", ph, sizeof(ph));
	ck_assert_str_eq(ph, "Running");
	dp_resource r = {0};
	ck_assert_int_eq(dp_catalog_get(dp_ctl_catalog(c), DP_KIND_BACKUP, name, &r), 0);
	ck_assert_msg(strstr(r.status, "\"archiveInterval\":300") &&
	                  strstr(r.status, "\"end\":\"2026-03-01T00:35:00Z\""),
	              "%s", r.status);
	const char *p = strstr(r.status, "\"pid\":");
	ck_assert_ptr_nonnull(p);
	long pid = strtol(p + 6, NULL, 10);
	dp_resource_clear(&r);
	snprintf(buf, sizeof(buf), "%s/%s", fx_runs, name);
	FILE *f = fopen(buf, "r");
	ck_assert_ptr_nonnull(f);
	ck_assert_ptr_nonnull(fgets(buf, sizeof(buf), f));
	fclose(f);
	ck_assert_str_eq(buf, "300s\n");
	/* The worker holds nothing of the controller's (catalog, locks). */
	char fdd[64], link[PATH_MAX], target[PATH_MAX];
	snprintf(fdd, sizeof(fdd), "/proc/%ld/fd", pid);
	DIR *d = opendir(fdd);
	ck_assert_ptr_nonnull(d);
	struct dirent *e;
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		snprintf(link, sizeof(link), "%s/%s", fdd, e->d_name);
		ssize_t n = readlink(link, target, sizeof(target) - 1);
		if (n <= 0)
			continue;
		target[n] = 0;
		ck_assert_msg(!strstr(target, "catalog.db") && !strstr(target, ".lock"),
		              "worker fd %s -> %s", e->d_name, target);
	}
	closedir(d);
	/* Later slots: still one continuous backup. */
	fx_now = fx_t("2026-03-01T00:50:10Z");
	fx_settle(c);
	ck_assert_uint_eq(fx_count(c), 1);
	ck_assert_int_eq(kill((pid_t)pid, 0), 0);
	/* A second archiver of the same policy and method is refused. */
	dp_ctl_backup_req req = {0};
	req.policy = "p";
	req.method = "wal";
	ck_assert_int_eq(dp_ctl_backup_create(c, &req, NULL, 0), DP_EEXIST);
	ck_assert_ptr_nonnull(strstr(dp_error_last(), "dp backup stop"));
	dp_error_clear();
	/* Disable: stopped, Completed, preDelete ran, the worker is gone. */
	fx_apply(c, cont_fmt, fx_runs, "false");
	fx_settle(c);
	for (int i = 0; i < 40; i++) {
		fx_status(c, name, "phase", ph, sizeof(ph));
		if (strcmp(ph, "Completed") == 0)
			break;
		fx_settle(c);
		fx_nap(50);
	}
	ck_assert_str_eq(ph, "Completed");
	snprintf(buf, sizeof(buf), "%s/%s.stopped", fx_runs, name);
	ck_assert_int_eq(access(buf, F_OK), 0);
	waitpid((pid_t)pid, NULL, WNOHANG);
	ck_assert_int_ne(kill((pid_t)pid, 0), 0);
	ck_assert_uint_eq(fx_count(c), 1);
	dp_ctl_close(c);
}
END_TEST

/* An action over its timeout is stopped and fails, saying so. */
START_TEST(action_timeout)
{
	dp_ctl *c = fx_open();
	char script[PATH_MAX + 16];
	snprintf(script, sizeof(script), "%s/full.sh", dp_test_dir);
	fx_apply(c,
	         "apiVersion: dataprotection.dp.io/v1alpha1\n"
	         "kind: ActionSet\n"
	         "metadata: {name: t-slow, labels: {dataprotection.dp.io/engine: slowdb}}\n"
	         "spec:\n"
	         "  backupType: Full\n"
	         "  env: [{name: RUNS, value: \"%s\"}]\n"
	         "  backup:\n"
	         "    backupData: {command: [bash, \"%s\"], timeout: 5m}\n"
	         "---\n"
	         "apiVersion: dataprotection.dp.io/v1alpha1\n"
	         "kind: BackupPolicy\n"
	         "metadata: {name: slow}\n"
	         "spec: {backupRepoName: r, backoffLimit: 0, target: {engine: slowdb}}\n",
	         fx_runs, script);
	fx_file("sleep", "60");
	dp_ctl_backup_req req = {0};
	req.policy = "slow";
	req.name = "stuck";
	ck_assert_int_eq(dp_ctl_backup_create(c, &req, NULL, 0), 0);
	for (int i = 0; i < 100 && fx_runs_of("stuck") == 0; i++) {
		ck_assert_int_eq(dp_ctl_sync(c), 0);
		fx_nap(50);
	}
	fx_now += 4 * 60;
	ck_assert_int_eq(dp_ctl_sync(c), 0);
	char ph[64], reason[1024];
	fx_status(c, "stuck", "phase", ph, sizeof(ph));
	ck_assert_str_eq(ph, "Running");
	fx_now += 2 * 60;
	fx_settle(c);
	fx_status(c, "stuck", "phase", ph, sizeof(ph));
	fx_status(c, "stuck", "failureReason", reason, sizeof(reason));
	ck_assert_str_eq(ph, "Failed");
	ck_assert_msg(strstr(reason, "timed out after 5m"), "%s", reason);
	fx_file("sleep", NULL);
	dp_ctl_close(c);
}
END_TEST

/* Backups of a database wait while it is restored in place; a restore
 * validates first and runs prepareData then postReady. */
START_TEST(backups_wait_for_an_in_place_restore)
{
	dp_ctl *c = fx_open();
	char script[PATH_MAX + 16];
	snprintf(script, sizeof(script), "%s/full.sh", dp_test_dir);
	fx_apply(c,
	         "apiVersion: dataprotection.dp.io/v1alpha1\n"
	         "kind: ActionSet\n"
	         "metadata: {name: t-rest, labels: {dataprotection.dp.io/engine: restdb}}\n"
	         "spec:\n"
	         "  backupType: Full\n"
	         "  env: [{name: RUNS, value: \"%s\"}]\n"
	         "  backup:\n"
	         "    backupData: {command: [bash, \"%s\"]}\n"
	         "  restore:\n"
	         "    prepareData: {command: [bash, -c, 'sleep 1; echo \"$DP_BACKUP_NAME "
	         "$DP_RESTORE_IN_PLACE\" >\"$RUNS/prepared\"']}\n"
	         "    postReady:\n"
	         "      - {command: [bash, -c, 'echo ready >\"$RUNS/ready\"']}\n"
	         "---\n"
	         "apiVersion: dataprotection.dp.io/v1alpha1\n"
	         "kind: BackupPolicy\n"
	         "metadata: {name: rp}\n"
	         "spec: {backupRepoName: r, target: {engine: restdb, dataDir: \"%s\"}}\n",
	         fx_runs, script, dp_test_dir);
	dp_ctl_backup_req req = {0};
	req.policy = "rp";
	req.name = "b1";
	ck_assert_int_eq(dp_ctl_backup_create(c, &req, NULL, 0), 0);
	ck_assert_int_eq(dp_ctl_drive(c, DP_KIND_BACKUP, "b1", 30, NULL, NULL), 0);
	dp_ctl_restore_req rr = {0};
	rr.backup = "b1";
	rr.in_place = true;
	rr.name = "r1";
	ck_assert_int_eq(dp_ctl_restore_create(c, &rr, NULL, 0), 0);
	ck_assert_int_eq(dp_ctl_sync(c), 0);
	req.name = "b2";
	ck_assert_int_eq(dp_ctl_backup_create(c, &req, NULL, 0), 0);
	ck_assert_int_eq(dp_ctl_sync(c), 0);
	char ph[64], why[128];
	fx_status(c, "b2", "phase", ph, sizeof(ph));
	fx_status(c, "b2", "waitingFor", why, sizeof(why));
	ck_assert_str_eq(ph, "New");
	ck_assert_str_eq(why, "restore/r1");
	ck_assert_int_eq(dp_ctl_drive(c, DP_KIND_RESTORE, "r1", 30, NULL, NULL), 0);
	fx_settle(c);
	fx_status(c, "b2", "phase", ph, sizeof(ph));
	ck_assert_str_eq(ph, "Completed");
	char p[PATH_MAX + 32], line[128] = "";
	snprintf(p, sizeof(p), "%s/prepared", fx_runs);
	FILE *f = fopen(p, "r");
	ck_assert_ptr_nonnull(f);
	ck_assert_ptr_nonnull(fgets(line, sizeof(line), f));
	fclose(f);
	ck_assert_str_eq(line, "b1 true\n");
	snprintf(p, sizeof(p), "%s/ready", fx_runs);
	ck_assert_int_eq(access(p, F_OK), 0);
	/* Validation: a target that is not empty is refused before anything runs. */
	rr.in_place = false;
	rr.to_dir = dp_test_dir;
	rr.name = "r2";
	ck_assert_int_eq(dp_ctl_restore_create(c, &rr, NULL, 0), 0);
	ck_assert_int_eq(dp_ctl_drive(c, DP_KIND_RESTORE, "r2", 30, NULL, NULL), 0);
	dp_resource r = {0};
	ck_assert_int_eq(dp_catalog_get(dp_ctl_catalog(c), DP_KIND_RESTORE, "r2", &r), 0);
	ck_assert_msg(strstr(r.status, "\"phase\":\"Failed\"") &&
	                  strstr(r.status, "exists and is not empty") &&
	                  !strstr(r.status, "\"actions\""),
	              "%s", r.status);
	dp_resource_clear(&r);
	dp_ctl_close(c);
}
END_TEST

/* The controller dies (SIGKILL) at a step; a new one must finish the slot
 * exactly once. */
static void crash_at(const char *point)
{
	dp_ctl *c = fx_open();
	fx_apply(c, sched_fmt, "", "0 * * * *");
	ck_assert_int_eq(dp_ctl_sync(c), 0);
	dp_ctl_close(c);
	fx_now = fx_t("2026-03-01T01:00:10Z");
	pid_t child = fork();
	ck_assert_int_ge(child, 0);
	if (child == 0) {
		setenv("DP_CTL_CRASH_AT", point, 1);
		dp_ctl *cc = fx_open();
		for (int i = 0; i < 200; i++) {
			dp_ctl_sync(cc);
			fx_nap(25);
		}
		_exit(0); /* the point was never reached */
	}
	int st = 0;
	ck_assert_int_eq(waitpid(child, &st, 0), child);
	ck_assert_msg(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "%s: the crash point was not hit",
	              point);
	c = fx_open();
	fx_settle(c);
	fx_now += 120; /* later passes change nothing */
	fx_settle(c);
	ck_assert_msg(fx_count(c) == 1, "%s: %zu backups", point, fx_count(c));
	char ph[64];
	fx_status(c, "p-full-20260301010000", "phase", ph, sizeof(ph));
	ck_assert_msg(strcmp(ph, "Completed") == 0, "%s: phase %s", point, ph);
	ck_assert_msg(fx_runs_of("p-full-20260301010000") == 1, "%s: %d runs", point,
	              fx_runs_of("p-full-20260301010000"));
	dp_repo *r = fx_repo_open();
	dp_buf b = {0};
	ck_assert_msg(dp_repo_get_file(r, "catalog/p-full-20260301010000.json", &b) == 0,
	              "%s: no record in the repository", point);
	dp_buf_free(&b);
	dp_repo_free(r);
	dp_ctl_close(c);
}

START_TEST(restart_after_schedule_created)
{
	crash_at("schedule-created");
}
END_TEST

START_TEST(restart_after_backup_planned)
{
	crash_at("backup-planned");
}
END_TEST

START_TEST(restart_after_action_launched)
{
	crash_at("action-launched");
}
END_TEST

START_TEST(restart_after_action_exited)
{
	crash_at("action-exited");
}
END_TEST

START_TEST(restart_after_backup_completed)
{
	crash_at("backup-completed");
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("controller/schedule");
	TCase *t = tcase_create("schedule");
	tcase_add_checked_fixture(t, fx_setup, fx_teardown);
	tcase_set_timeout(t, 120);
	tcase_add_test(t, fires_the_right_backups);
	tcase_add_test(t, honours_starting_deadline);
	tcase_add_test(t, no_concurrent_runs_of_a_policy);
	tcase_add_test(t, failure_reason_and_retries);
	tcase_add_test(t, action_timeout);
	tcase_add_test(t, backups_wait_for_an_in_place_restore);
	tcase_add_test(t, continuous_method_runs_once_and_stops_when_disabled);
	tcase_add_test(t, restart_after_schedule_created);
	tcase_add_test(t, restart_after_backup_planned);
	tcase_add_test(t, restart_after_action_launched);
	tcase_add_test(t, restart_after_action_exited);
	tcase_add_test(t, restart_after_backup_completed);
	suite_add_tcase(s, t);
	return s;
}

DP_TEST_MAIN(suite)

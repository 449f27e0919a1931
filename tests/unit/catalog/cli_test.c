/*
 * `dp apply`, `dp get`, `dp describe` and `dp delete` through the built
 * $BIN/dp, with DP_HOME in the test's temp dir: outputs, exit statuses,
 * messages, and that a rejected apply stores nothing.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../../harness/dp_test.h"

static char data_dir[PATH_MAX];

/* Runs dp with DP_HOME set and no built-in methods (an empty dir);
 * stdout/stderr in res. */
#define DP(res, fmt, ...)                                                                          \
	dp_test_run(res, "cd '%s' && export DP_HOME='%s/home' DP_METHODS_DIR='%s' && '%s' " fmt,   \
	            data_dir, dp_test_dir, dp_test_dir, dp_bin, ##__VA_ARGS__)

static char dp_bin[PATH_MAX];

static void setup(void)
{
	dp_test_setup();
	if (!realpath(dp_test_bin("dp"), dp_bin))
		ck_abort_msg("no dp program at %s (set BIN)", dp_test_bin("dp"));
}

START_TEST(test_apply_get_describe_delete)
{
	dp_test_result r;
	ck_assert_int_eq(DP(&r, "apply -f good-manifests/postgres-full.yaml"), 0);
	ck_assert_str_eq(r.out, "backuprepo/nas created\n"
	                        "actionset/pg-basebackup created\n"
	                        "backuppolicy/pg created\n"
	                        "backupschedule/nightly created\n"
	                        "backup/pg-full-1 created\n"
	                        "restore/r1 created\n");
	dp_test_result_free(&r);

	/* DP_HOME is created 0700. */
	char home[PATH_MAX + 16];
	struct stat st;
	snprintf(home, sizeof(home), "%s/home", dp_test_dir);
	ck_assert_int_eq(stat(home, &st), 0);
	ck_assert_int_eq(st.st_mode & 0777, 0700);

	ck_assert_int_eq(DP(&r, "apply -f good-manifests/postgres-full.yaml"), 0);
	ck_assert_ptr_nonnull(strstr(r.out, "backuppolicy/pg unchanged\n"));
	dp_test_result_free(&r);

	/* Kind names: plural, short, any case. */
	const char *forms[] = {"backups", "backup", "bk", "BACKUPS", "Backup"};
	for (int i = 0; i < 5; i++) {
		ck_assert_int_eq(DP(&r, "get %s", forms[i]), 0);
		ck_assert_msg(strncmp(r.out,
		                      "NAME        POLICY   METHOD   STATUS   TOTAL-SIZE   "
		                      "STORED   DURATION   CREATED                EXPIRES\n",
		                      95) == 0,
		              "%s", r.out);
		ck_assert_ptr_nonnull(strstr(r.out, "\npg-full-1   pg       full     -        -"));
		dp_test_result_free(&r);
	}
	ck_assert_int_eq(DP(&r, "get backups -o wide"), 0);
	ck_assert_ptr_nonnull(strstr(r.out, "REPO   DELETION-POLICY   COMPLETED   PARENT\n"));
	ck_assert_ptr_nonnull(strstr(r.out, "Delete"));
	dp_test_result_free(&r);

	ck_assert_int_eq(DP(&r, "get bs nightly"), 0);
	ck_assert_ptr_nonnull(strstr(r.out, "nightly   pg       full@0 2 * * *"));
	dp_test_result_free(&r);

	ck_assert_int_eq(DP(&r, "get bp pg -o json"), 0);
	ck_assert_ptr_nonnull(strstr(r.out, "\"kind\":\t\"BackupPolicy\""));
	ck_assert_ptr_nonnull(strstr(r.out, "\"backoffLimit\":\t2"));
	dp_test_result_free(&r);

	/* -o yaml of a list applies back unchanged, through stdin. */
	ck_assert_int_eq(DP(&r, "get repos -o yaml"), 0);
	ck_assert_ptr_nonnull(strstr(r.out, "kind: List\nitems:\n- apiVersion: "));
	dp_test_result_free(&r);
	ck_assert_int_eq(dp_test_run(&r,
	                             "export DP_HOME='%s/home' DP_METHODS_DIR='%s'; '%s' get "
	                             "policies -o yaml | '%s' apply -f -",
	                             dp_test_dir, dp_test_dir, dp_bin, dp_bin),
	                 0);
	ck_assert_str_eq(r.out, "backuppolicy/pg unchanged\n");
	dp_test_result_free(&r);

	ck_assert_int_eq(DP(&r, "describe backupschedule nightly"), 0);
	ck_assert_ptr_nonnull(strstr(r.out, "Name:              nightly\n"
	                                    "Kind:              BackupSchedule\n"));
	ck_assert_ptr_nonnull(strstr(r.out, "    cronExpression: 0 2 * * *\n"));
	ck_assert_ptr_nonnull(
	    strstr(r.out, "Status:\n  <none>\nNext Runs:\n  full (full, 0 2 * * *): 20"));
	ck_assert_ptr_nonnull(strstr(r.out, "T02:00:00Z\nEvents:\n"));
	ck_assert_ptr_nonnull(strstr(r.out, "Normal   Created   created by "));
	dp_test_result_free(&r);

	/* delete: refused while referenced, then in order. */
	ck_assert_int_eq(DP(&r, "delete repo nas"), 2);
	ck_assert_str_eq(
	    r.err, "dp delete: backuprepo \"nas\" is used by backuppolicy \"pg\"; delete that "
	           "first\n");
	dp_test_result_free(&r);
	ck_assert_int_eq(DP(&r, "delete restore r1"), 0);
	ck_assert_str_eq(r.out, "restore \"r1\" deleted\n");
	dp_test_result_free(&r);
	ck_assert_int_eq(DP(&r,
	                    "delete bk pg-full-1 && '%s' delete bs nightly && '%s' delete bp pg",
	                    dp_bin, dp_bin),
	                 0);
	dp_test_result_free(&r);
	ck_assert_int_eq(DP(&r, "delete as pg-basebackup"), 0);
	dp_test_result_free(&r);
	ck_assert_int_eq(DP(&r, "delete repo nas"), 0);
	dp_test_result_free(&r);
	ck_assert_int_eq(DP(&r, "get repos"), 0);
	ck_assert_str_eq(r.out, "");
	ck_assert_str_eq(r.err, "No resources found.\n");
	dp_test_result_free(&r);
	ck_assert_int_eq(DP(&r, "describe repo nas"), 5);
	ck_assert_str_eq(r.err, "dp describe: backuprepo \"nas\" not found\n");
	dp_test_result_free(&r);
}
END_TEST

START_TEST(test_rejected_apply_stores_nothing)
{
	dp_test_result r;
	ck_assert_int_eq(DP(&r, "apply -f bad-manifests/bad-cron-minute.yaml"), 2);
	ck_assert_str_eq(r.out, "");
	ck_assert_str_eq(r.err, "dp apply: backupschedule \"nightly\": "
	                        "spec.schedules[0].cronExpression: \"61 * * * *\": minute out of "
	                        "range\n");
	dp_test_result_free(&r);
	/* The three valid documents before it were not stored either. */
	const char *kinds[] = {"repo", "as", "bp", "bs"};
	for (int i = 0; i < 4; i++) {
		ck_assert_int_eq(DP(&r, "get %s -o json", kinds[i]), 0);
		ck_assert_ptr_nonnull(strstr(r.out, "\"items\":\t[]"));
		dp_test_result_free(&r);
	}
	ck_assert_int_eq(DP(&r, "apply -f bad-manifests/inline-password.yaml"), 2);
	ck_assert_ptr_nonnull(
	    strstr(r.err, "spec.target.password: secrets are never given inline"));
	ck_assert_ptr_null(strstr(r.err, "hunter2"));
	dp_test_result_free(&r);
	ck_assert_int_eq(DP(&r, "apply -f does-not-exist.yaml"), 5);
	ck_assert_str_eq(r.err, "dp apply: cannot open \"does-not-exist.yaml\": No such file or "
	                        "directory\n");
	dp_test_result_free(&r);
}
END_TEST

START_TEST(test_dry_run_and_usage)
{
	dp_test_result r;
	ck_assert_int_eq(DP(&r, "apply --dry-run -f good-manifests/s3-repo.yaml"), 0);
	ck_assert_str_eq(r.out, "backuprepo/s3-main created (dry run)\n");
	dp_test_result_free(&r);
	ck_assert_int_eq(DP(&r, "get repos"), 0);
	ck_assert_str_eq(r.err, "No resources found.\n");
	dp_test_result_free(&r);

	const char *cmds[] = {"apply", "get", "describe", "delete"};
	for (int i = 0; i < 4; i++) {
		ck_assert_int_eq(DP(&r, "%s --help", cmds[i]), 0);
		char want[64];
		snprintf(want, sizeof(want), "usage: dp %s ", cmds[i]);
		ck_assert_msg(strncmp(r.out, want, strlen(want)) == 0, "%s", r.out);
		dp_test_result_free(&r);
	}
	ck_assert_int_eq(DP(&r, "apply"), 2);
	ck_assert_ptr_nonnull(strstr(r.err, "dp apply: -f FILE is required\n"));
	dp_test_result_free(&r);
	ck_assert_int_eq(DP(&r, "get pods"), 2);
	ck_assert_ptr_nonnull(strstr(r.err, "dp get: unknown kind \"pods\""));
	dp_test_result_free(&r);
	ck_assert_int_eq(DP(&r, "get backups -o xml"), 2);
	ck_assert_str_eq(r.err, "dp get: -o \"xml\": use table, wide, json or yaml\n");
	dp_test_result_free(&r);
	ck_assert_int_eq(DP(&r, "describe backup"), 2);
	dp_test_result_free(&r);
	ck_assert_int_eq(DP(&r, "delete backup"), 2);
	dp_test_result_free(&r);
	ck_assert_int_eq(DP(&r, "--help"), 0);
	ck_assert_ptr_nonnull(strstr(r.out, "  apply "));
	ck_assert_ptr_nonnull(strstr(r.out, "  describe "));
	dp_test_result_free(&r);
}
END_TEST

START_TEST(test_label_selector)
{
	dp_test_result r;
	ck_assert_int_eq(DP(&r, "apply -f good-manifests/pitr.yaml"), 0);
	dp_test_result_free(&r);
	const struct {
		const char *sel, *want;
	} cases[] = {
	    {"autobackup=true", "base1\n"},     {"autobackup", "base1\n"},
	    {"!autobackup", "inc1\n"},          {"autobackup!=true", "inc1\n"},
	    {"autobackup==true,!x", "base1\n"}, {"autobackup=false", ""},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		ck_assert_int_eq(
		    DP(&r, "get backups -l '%s' | tail -n +2 | cut -d' ' -f1", cases[i].sel), 0);
		ck_assert_msg(strcmp(r.out, cases[i].want) == 0, "-l %s: got \"%s\"", cases[i].sel,
		              r.out);
		dp_test_result_free(&r);
	}
	ck_assert_int_eq(DP(&r, "get backups -l ,"), 2);
	ck_assert_str_eq(r.err, "dp get: bad label selector \",\"\n");
	dp_test_result_free(&r);
	ck_assert_int_eq(DP(&r, "get backups base1 -l a=b"), 2);
	dp_test_result_free(&r);
}
END_TEST

START_TEST(test_builtin_actionsets)
{
	/* DP_METHODS_DIR with one good engine and two broken files: the good
	 * ActionSets load, the broken ones are warnings, the command works. */
	dp_test_result r;
	ck_assert_int_eq(
	    dp_test_run(&r,
	                "export DP_HOME='%s/home' DP_METHODS_DIR='%s/methods'; '%s' get "
	                "as",
	                dp_test_dir, data_dir, dp_bin),
	    0);
	ck_assert_ptr_nonnull(strstr(r.out, "\ntestdb-full   Full          -        "));
	ck_assert_ptr_nonnull(strstr(r.out, "\ntestdb-wal    Continuous    -        "));
	ck_assert_ptr_nonnull(strstr(r.err, "dp: warning: built-in methods: \""));
	ck_assert_ptr_nonnull(strstr(r.err, "broken/repo.yaml\" skipped: "));
	ck_assert_ptr_nonnull(strstr(r.err,
	                             "broken/typo.yaml\" skipped: actionset \"broken-typo\": "
	                             "spec.backup.backupDate: unknown field"));
	dp_test_result_free(&r);
	/* A missing DP_METHODS_DIR is a warning too. */
	ck_assert_int_eq(
	    dp_test_run(&r, "export DP_HOME='%s/home' DP_METHODS_DIR='%s/nope'; '%s' get as",
	                dp_test_dir, dp_test_dir, dp_bin),
	    0);
	ck_assert_ptr_nonnull(strstr(r.err, "is not a directory"));
	dp_test_result_free(&r);
}
END_TEST

START_TEST(test_json_stdin_and_list)
{
	dp_test_result r;
	ck_assert_int_eq(dp_test_run(&r,
	                             "cd '%s' && export DP_HOME='%s/home' DP_METHODS_DIR='%s'; cat "
	                             "good-manifests/documents.json | '%s' apply -f -",
	                             data_dir, dp_test_dir, dp_test_dir, dp_bin),
	                 0);
	ck_assert_str_eq(r.out, "backuprepo/json-repo created\nactionset/mariabackup created\n"
	                        "backuppolicy/json-policy created\n"
	                        "backup/j1 created\nbackup/j2 created\n");
	dp_test_result_free(&r);
	ck_assert_int_eq(DP(&r, "get bk j2 -o yaml"), 0);
	ck_assert_ptr_nonnull(strstr(r.out, "spec:\n  backupMethod: full\n  backupPolicyName: "
	                                    "json-policy\n  deletionPolicy: Delete\n  "
	                                    "retentionPeriod: 12h\nstatus: {}\n"));
	dp_test_result_free(&r);
}
END_TEST

static Suite *cli_suite(void)
{
	const char *env = getenv("DP_TEST_DATA");
	char guess[PATH_MAX];
	if (env) {
		snprintf(guess, sizeof(guess), "%s", env);
	} else {
		const char *f = __FILE__, *p = strstr(f, "tests/unit/");
		snprintf(guess, sizeof(guess), "%.*stests/data", p ? (int)(p - f) : 0, f);
	}
	if (!realpath(guess, data_dir)) {
		fprintf(stderr,
		        "test data not found at %s (run from the repo root or set "
		        "DP_TEST_DATA)\n",
		        guess);
		exit(1);
	}
	Suite *s = suite_create("cli-resources");
	TCase *tc = tcase_create("cli");
	tcase_add_checked_fixture(tc, setup, dp_test_teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_apply_get_describe_delete);
	tcase_add_test(tc, test_rejected_apply_stores_nothing);
	tcase_add_test(tc, test_dry_run_and_usage);
	tcase_add_test(tc, test_builtin_actionsets);
	tcase_add_test(tc, test_label_selector);
	tcase_add_test(tc, test_json_stdin_and_list);
	suite_add_tcase(s, tc);
	return s;
}

DP_TEST_MAIN(cli_suite)

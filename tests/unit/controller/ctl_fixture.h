/*
 * Shared fixture of the controller tests: a fresh $DP_HOME and posix
 * repository in the test's temp dir, a fake clock, and a test engine
 * ("testdb") whose Full ActionSet is a small bash script that counts its runs
 * (RUNS/<backup name>, one line per run), optionally sleeps or fails, and
 * pushes a real snapshot named after the backup with dp-worker. Real
 * workers, real repository; only the clock is fake.
 */
#ifndef DP_TEST_CTL_FIXTURE_H
#define DP_TEST_CTL_FIXTURE_H

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "../../harness/dp_test.h"
#include "dp/controller.h"
#include "dp/cron.h"
#include "dp/error.h"
#include "dp/repo.h"
#include "dp/resource.h"

static int64_t fx_now;
static char fx_home[PATH_MAX], fx_repo[PATH_MAX], fx_runs[PATH_MAX];

static int64_t fx_clock(void *arg)
{
	(void)arg;
	return fx_now;
}

static int64_t fx_t(const char *rfc3339)
{
	int64_t t = 0;
	ck_assert_msg(dp_time_parse(&t, rfc3339) == 0, "bad time %s", rfc3339);
	return t;
}

static dp_ctl *fx_open(void)
{
	dp_ctl_opts o = {0};
	o.home = fx_home;
	o.clock = fx_clock;
	o.worker_path = dp_test_bin("dp-worker");
	o.gc_interval = 1;
	dp_ctl *c = NULL;
	int rc = dp_ctl_open(&c, &o);
	ck_assert_msg(rc == 0, "dp_ctl_open: %s", dp_error_last());
	return c;
}

static void fx_apply(dp_ctl *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void fx_apply(dp_ctl *c, const char *fmt, ...)
{
	char text[8192];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	ck_assert_int_lt(n, (int)sizeof(text));
	dp_manifest *m = NULL;
	int rc = dp_manifest_parse(&m, text, (size_t)n, "test");
	if (!rc)
		rc = dp_manifest_validate(m);
	if (!rc)
		rc = dp_catalog_apply(dp_ctl_catalog(c), m, false, NULL);
	dp_manifest_free(m);
	ck_assert_msg(rc == 0, "apply: %s\n%s", dp_error_last(), text);
}

/* The test engine's script: counts the run, sleeps RUNS/sleep seconds if
 * present, fails with RUNS/fail's content as its message if present, then
 * pushes a snapshot named after the backup and writes the info file. */
static const char fx_script[] =
    "set -e\n"
    "echo run >>\"$RUNS/$DP_BACKUP_NAME\"\n"
    "echo \"parent=${DP_PARENT_BACKUP_NAME:-}\" >\"$RUNS/$DP_BACKUP_NAME.env\"\n"
    "if s=$(cat \"$RUNS/sleep\" 2>/dev/null); then sleep \"$s\"; fi\n"
    "if [ -f \"$RUNS/fail\" ]; then cat \"$RUNS/fail\" >&2; exit 3; fi\n"
    "printf 'data of %s' \"$DP_BACKUP_NAME\" | \"$DP_WORKER\" push --quiet \"$DP_BACKUP_NAME\" -\n"
    "[ -f \"$RUNS/noinfo\" ] ||\n"
    "  printf '{\"totalSize\":\"42\",\"storedSize\":\"7\"}' >\"$DP_BACKUP_INFO_FILE\"\n";

static void fx_setup(void)
{
	dp_test_setup();
	snprintf(fx_home, sizeof(fx_home), "%s/home", dp_test_dir);
	snprintf(fx_repo, sizeof(fx_repo), "%s/repo", dp_test_dir);
	snprintf(fx_runs, sizeof(fx_runs), "%s/runs", dp_test_dir);
	ck_assert_int_eq(mkdir(fx_runs, 0700), 0);
	setenv("DP_TEST_PASS", "controller-test-passphrase", 1);
	unsetenv("DP_CTL_CRASH_AT");
	char script[PATH_MAX + 16];
	snprintf(script, sizeof(script), "%s/full.sh", dp_test_dir);
	FILE *f = fopen(script, "w");
	ck_assert_ptr_nonnull(f);
	fputs(fx_script, f);
	fclose(f);
	fx_now = fx_t("2026-03-01T00:30:00Z");
	dp_ctl *c = fx_open();
	fx_apply(
	    c,
	    "apiVersion: dataprotection.dp.io/v1alpha1\n"
	    "kind: BackupRepo\n"
	    "metadata: {name: r}\n"
	    "spec: {posix: {path: \"%s\"}, encryption: {passphraseFrom: {env: DP_TEST_PASS}}}\n"
	    "---\n"
	    "apiVersion: dataprotection.dp.io/v1alpha1\n"
	    "kind: ActionSet\n"
	    "metadata: {name: t-full, labels: {dataprotection.dp.io/engine: testdb}}\n"
	    "spec:\n"
	    "  backupType: Full\n"
	    "  env: [{name: RUNS, value: \"%s\"}]\n"
	    "  backup:\n"
	    "    backupData: {command: [bash, \"%s\"]}\n"
	    "---\n"
	    "apiVersion: dataprotection.dp.io/v1alpha1\n"
	    "kind: BackupPolicy\n"
	    "metadata: {name: p}\n"
	    "spec: {backupRepoName: r, backoffLimit: 1, target: {engine: testdb}}\n",
	    fx_repo, fx_runs, script);
	dp_ctl_close(c);
}

static void fx_teardown(void)
{
	dp_test_teardown();
}

static void fx_nap(int ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}

/* Syncs until every backup is final (or gone); fails after 30 s. */
static void fx_settle(dp_ctl *c)
{
	for (int i = 0; i < 600; i++) {
		ck_assert_msg(dp_ctl_sync(c) == 0, "sync: %s", dp_error_last());
		dp_resource *v = NULL;
		size_t n = 0;
		ck_assert_int_eq(dp_catalog_list(dp_ctl_catalog(c), DP_KIND_BACKUP, &v, &n), 0);
		bool all = true;
		for (size_t k = 0; k < n; k++)
			if (!dp_ctl_status_final(DP_KIND_BACKUP, v[k].status))
				all = false;
		dp_resources_free(v, n);
		if (all)
			return;
		fx_nap(50);
	}
	ck_abort_msg("backups did not settle in 30 s");
}

static size_t fx_count(dp_ctl *c)
{
	dp_resource *v = NULL;
	size_t n = 0;
	ck_assert_int_eq(dp_catalog_list(dp_ctl_catalog(c), DP_KIND_BACKUP, &v, &n), 0);
	dp_resources_free(v, n);
	return n;
}

static bool fx_exists(dp_ctl *c, const char *name)
{
	dp_resource r = {0};
	int rc = dp_catalog_get(dp_ctl_catalog(c), DP_KIND_BACKUP, name, &r);
	dp_resource_clear(&r);
	dp_error_clear();
	return rc == 0;
}

/* A status field (string) of a backup, copied into out ("" if none). */
static void fx_status(dp_ctl *c, const char *name, const char *key, char *out, size_t outlen)
{
	dp_resource r = {0};
	ck_assert_msg(dp_catalog_get(dp_ctl_catalog(c), DP_KIND_BACKUP, name, &r) == 0,
	              "backup %s: %s", name, dp_error_last());
	out[0] = 0;
	cJSON *st = cJSON_Parse(r.status);
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(st, key);
	if (cJSON_IsString(v))
		snprintf(out, outlen, "%s", v->valuestring);
	cJSON_Delete(st);
	dp_resource_clear(&r);
}

/* How many times the test script ran for a backup. */
__attribute__((unused)) static int fx_runs_of(const char *name)
{
	char p[PATH_MAX + 300], line[64];
	snprintf(p, sizeof(p), "%s/%s", fx_runs, name);
	FILE *f = fopen(p, "r");
	if (!f)
		return 0;
	int n = 0;
	while (fgets(line, sizeof(line), f))
		n++;
	fclose(f);
	return n;
}

__attribute__((unused)) static void fx_file(const char *name, const char *content)
{
	char p[PATH_MAX + 300];
	snprintf(p, sizeof(p), "%s/%s", fx_runs, name);
	if (!content) {
		unlink(p);
		return;
	}
	FILE *f = fopen(p, "w");
	ck_assert_ptr_nonnull(f);
	fputs(content, f);
	fclose(f);
}

static dp_repo *fx_repo_open(void)
{
	dp_repo *r = NULL;
	int rc = dp_repo_open(&r, fx_repo, NULL, "controller-test-passphrase");
	ck_assert_msg(rc == 0, "open repo: %s", dp_error_last());
	return r;
}

#endif

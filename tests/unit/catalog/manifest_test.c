/*
 * Tests for manifest parsing and validation (catalog/manifest.c,
 * catalog/validate.c) through dp_catalog_apply: the corpus of malformed
 * manifests in tests/data/bad-manifests (each rejected with the message in
 * its "# expect:" first line or its .expected sidecar, nothing stored), the
 * good manifests in tests/data/good-manifests (stored, idempotent, and
 * round-tripping through `get -o json|yaml` output), and specific rules.
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../harness/dp_test.h"
#include "dp/catalog.h"
#include "dp/error.h"
#include "dp/resource.h"

#define MAX_FILES 256
static char data_dir[PATH_MAX];
static char *bad_files[MAX_FILES], *good_files[MAX_FILES];
static int n_bad, n_good;

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static int scan(const char *sub, char **out)
{
	char dir[PATH_MAX + 64];
	snprintf(dir, sizeof(dir), "%s/%s", data_dir, sub);
	DIR *d = opendir(dir);
	int n = 0;
	if (!d)
		return 0;
	struct dirent *e;
	while ((e = readdir(d)) && n < MAX_FILES) {
		size_t len = strlen(e->d_name);
		if (e->d_name[0] == '.' ||
		    (len > 9 && strcmp(e->d_name + len - 9, ".expected") == 0))
			continue;
		out[n++] = strdup(e->d_name);
	}
	closedir(d);
	qsort(out, (size_t)n, sizeof(*out), cmp_str);
	return n;
}

static char *slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	ck_assert_msg(f != NULL, "cannot open %s", path);
	char *s = malloc(1 << 20);
	ck_assert_ptr_nonnull(s);
	size_t n = fread(s, 1, (1 << 20) - 1, f);
	fclose(f);
	s[n] = 0;
	if (len)
		*len = n;
	return s;
}

static dp_catalog *fresh_catalog(void)
{
	char path[PATH_MAX + 16];
	snprintf(path, sizeof(path), "%s/catalog.db", dp_test_dir);
	dp_catalog *c = NULL;
	ck_assert_msg(dp_catalog_open(&c, path) == 0, "%s", dp_error_last());
	return c;
}

static size_t count_all(dp_catalog *c)
{
	size_t total = 0;
	for (int k = 0; k < DP_KIND_COUNT; k++) {
		dp_resource *v;
		size_t n;
		ck_assert_int_eq(dp_catalog_list(c, (dp_kind)k, &v, &n), 0);
		total += n;
		dp_resources_free(v, n);
	}
	return total;
}

static size_t count_audit(dp_catalog *c)
{
	dp_audit_entry *a;
	size_t n;
	ck_assert_int_eq(dp_catalog_audit(c, 0, 0, &a, &n), 0);
	dp_audit_free(a, n);
	return n;
}

/* Parses, validates and applies text; returns the first failing code. */
static int apply_text(dp_catalog *c, const char *text, size_t len, const char *source,
                      dp_apply_action *actions)
{
	dp_manifest *m = NULL;
	int rc = dp_manifest_parse(&m, text, len, source);
	if (!rc)
		rc = dp_manifest_validate(m);
	if (!rc)
		rc = dp_catalog_apply(c, m, false, actions);
	dp_manifest_free(m);
	return rc;
}

START_TEST(test_bad_manifest)
{
	const char *name = bad_files[_i];
	char path[PATH_MAX + 300], expected[2048] = "";
	size_t len;
	snprintf(path, sizeof(path), "%s/bad-manifests/%s", data_dir, name);
	char *text = slurp(path, &len);
	if (strncmp(text, "# expect: ", 10) == 0) {
		const char *nl = strchr(text, '\n');
		snprintf(expected, sizeof(expected), "%.*s", (int)(nl - text - 10), text + 10);
	} else {
		char side[PATH_MAX + 320];
		snprintf(side, sizeof(side), "%s.expected", path);
		char *e = slurp(side, NULL);
		size_t n = strcspn(e, "\n");
		snprintf(expected, sizeof(expected), "%.*s", (int)n, e);
		free(e);
	}
	ck_assert_msg(expected[0], "%s: no expected message", name);

	dp_catalog *c = fresh_catalog();
	dp_error_clear();
	int rc = apply_text(c, text, len, name, NULL);
	ck_assert_msg(rc == DP_EUSAGE, "%s: got rc %d (%s)", name, rc, dp_error_last());
	ck_assert_msg(strcmp(dp_error_last(), expected) == 0, "%s:\n got  %s\n want %s", name,
	              dp_error_last(), expected);
	/* Nothing stored, nothing audited. */
	ck_assert_uint_eq(count_all(c), 0);
	ck_assert_uint_eq(count_audit(c), 0);
	dp_catalog_close(c);
	free(text);
}
END_TEST

START_TEST(test_good_manifest)
{
	const char *name = good_files[_i];
	char path[PATH_MAX + 300];
	size_t len;
	snprintf(path, sizeof(path), "%s/good-manifests/%s", data_dir, name);
	char *text = slurp(path, &len);
	dp_catalog *c = fresh_catalog();
	dp_manifest *m = NULL;
	ck_assert_msg(dp_manifest_parse(&m, text, len, name) == 0, "%s", dp_error_last());
	ck_assert_msg(dp_manifest_validate(m) == 0, "%s: %s", name, dp_error_last());
	size_t n = dp_manifest_count(m);
	dp_apply_action act[64];
	ck_assert_uint_le(n, 64);
	ck_assert_msg(dp_catalog_apply(c, m, false, act) == 0, "%s: %s", name, dp_error_last());
	for (size_t i = 0; i < n; i++)
		ck_assert_int_eq(act[i], DP_APPLY_CREATED);
	ck_assert_uint_eq(count_all(c), n);
	ck_assert_uint_eq(count_audit(c), n);
	dp_manifest_free(m);

	/* Applying again changes nothing. */
	ck_assert_int_eq(apply_text(c, text, len, name, act), 0);
	for (size_t i = 0; i < n; i++)
		ck_assert_int_eq(act[i], DP_APPLY_UNCHANGED);
	ck_assert_uint_eq(count_audit(c), n);

	/* What get -o json / -o yaml prints applies back unchanged. */
	for (int k = 0; k < DP_KIND_COUNT; k++) {
		dp_resource *v;
		size_t nv;
		ck_assert_int_eq(dp_catalog_list(c, (dp_kind)k, &v, &nv), 0);
		if (nv == 0)
			continue;
		for (int yaml = 0; yaml < 2; yaml++) {
			dp_buf out = {0};
			ck_assert_int_eq(yaml ? dp_resource_list_yaml(&out, v, nv)
			                      : dp_resource_list_json(&out, v, nv, true),
			                 0);
			ck_assert_msg(
			    apply_text(c, (const char *)out.data, out.len, "round-trip", act) == 0,
			    "%s: %s\n%.*s", name, dp_error_last(), (int)out.len, out.data);
			for (size_t i = 0; i < nv; i++)
				ck_assert_int_eq(act[i], DP_APPLY_UNCHANGED);
			dp_buf_free(&out);
		}
		dp_resources_free(v, nv);
	}
	dp_catalog_close(c);
	free(text);
}
END_TEST

static const char repo_yaml[] = "apiVersion: dataprotection.dp.io/v1alpha1\n"
                                "kind: BackupRepo\n"
                                "metadata: {name: nas}\n"
                                "spec:\n"
                                "  posix: {path: /srv}\n"
                                "  encryption: {passphraseFrom: {env: P}}\n";

START_TEST(test_defaults_and_canonical)
{
	const char *text = "apiVersion: dataprotection.dp.io/v1alpha1\n"
	                   "kind: BackupSchedule\n"
	                   "metadata: {name: s}\n"
	                   "spec:\n"
	                   "  schedules: [{cronExpression: '@daily', backupMethod: full}]\n"
	                   "  backupPolicyName: pg\n";
	dp_manifest *m;
	ck_assert_int_eq(dp_manifest_parse(&m, text, strlen(text), "t"), 0);
	ck_assert_int_eq(dp_manifest_validate(m), 0);
	ck_assert_int_eq(dp_manifest_kind(m, 0), DP_KIND_BACKUP_SCHEDULE);
	ck_assert_str_eq(dp_manifest_name(m, 0), "s");
	/* Keys sorted; enabled, name and retentionPeriod defaulted. */
	ck_assert_str_eq(dp_manifest_spec(m, 0),
	                 "{\"backupPolicyName\":\"pg\",\"schedules\":[{\"backupMethod\":\"full\","
	                 "\"cronExpression\":\"@daily\",\"enabled\":true,\"name\":\"full\","
	                 "\"retentionPeriod\":\"7d\"}]}");
	ck_assert_str_eq(dp_manifest_meta(m, 0), "{}");
	dp_manifest_free(m);

	const char *bk = "{\"kind\":\"Backup\",\"apiVersion\":\"dataprotection.dp.io/v1alpha1\","
	                 "\"metadata\":{\"name\":\"b\",\"labels\":{\"z\":\"1\",\"a\":\"2\"}},"
	                 "\"spec\":{\"backupMethod\":\"full\",\"backupPolicyName\":\"pg\"}}";
	ck_assert_int_eq(dp_manifest_parse(&m, bk, strlen(bk), "t"), 0);
	ck_assert_int_eq(dp_manifest_validate(m), 0);
	ck_assert_str_eq(dp_manifest_spec(m, 0), "{\"backupMethod\":\"full\",\"backupPolicyName\":"
	                                         "\"pg\",\"deletionPolicy\":\"Delete\"}");
	ck_assert_str_eq(dp_manifest_meta(m, 0), "{\"labels\":{\"a\":\"2\",\"z\":\"1\"}}");
	dp_manifest_free(m);
}
END_TEST

START_TEST(test_reordered_spec_is_unchanged)
{
	dp_catalog *c = fresh_catalog();
	dp_apply_action a;
	ck_assert_int_eq(apply_text(c, repo_yaml, strlen(repo_yaml), "t", &a), 0);
	const char *same = "apiVersion: dataprotection.dp.io/v1alpha1\n"
	                   "kind: BackupRepo\n"
	                   "metadata: {name: nas}\n"
	                   "spec:\n"
	                   "  encryption: {passphraseFrom: {env: P}}\n"
	                   "  compression: {level: 3}\n"
	                   "  posix: {path: /srv}\n";
	ck_assert_int_eq(apply_text(c, same, strlen(same), "t", &a), 0);
	ck_assert_int_eq(a, DP_APPLY_UNCHANGED);
	dp_catalog_close(c);
}
END_TEST

START_TEST(test_yaml_scalars)
{
	/* A quoted number is a string (wrong type for a port); a plain one is
	 * a number; "true" quoted is not a boolean. */
	const char *fmt = "apiVersion: dataprotection.dp.io/v1alpha1\nkind: BackupPolicy\n"
	                  "metadata: {name: p}\nspec:\n  backupRepoName: nas\n"
	                  "  target: {engine: postgresql, port: %s}\n";
	char text[512];
	dp_manifest *m;
	const char *ports[] = {"5432", "'5432'", "5432.5", "0x10", "~"};
	int want[] = {0, DP_EUSAGE, DP_EUSAGE, DP_EUSAGE, 0};
	for (int i = 0; i < 5; i++) {
		snprintf(text, sizeof(text), fmt, ports[i]);
		ck_assert_int_eq(dp_manifest_parse(&m, text, strlen(text), "t"), 0);
		ck_assert_msg(dp_manifest_validate(m) == want[i], "port %s: %s", ports[i],
		              dp_error_last());
		dp_manifest_free(m);
	}
}
END_TEST

START_TEST(test_apply_all_or_nothing_across_existing)
{
	/* A good document before a bad one: neither is stored, and an object
	 * already in the catalog keeps its spec. */
	dp_catalog *c = fresh_catalog();
	ck_assert_int_eq(apply_text(c, repo_yaml, strlen(repo_yaml), "t", NULL), 0);
	const char *text = "apiVersion: dataprotection.dp.io/v1alpha1\n"
	                   "kind: BackupRepo\n"
	                   "metadata: {name: nas}\n"
	                   "spec:\n"
	                   "  posix: {path: /changed}\n"
	                   "  encryption: {passphraseFrom: {env: P}}\n"
	                   "---\n"
	                   "apiVersion: dataprotection.dp.io/v1alpha1\n"
	                   "kind: BackupPolicy\n"
	                   "metadata: {name: p}\n"
	                   "spec: {backupRepoName: nas, target: {engine: PostgreSQL}}\n";
	ck_assert_int_eq(apply_text(c, text, strlen(text), "t", NULL), DP_EUSAGE);
	ck_assert_str_eq(dp_error_last(), "backuppolicy \"p\": spec.target.engine: \"PostgreSQL\": "
	                                  "use lowercase letters, digits and '-'");
	dp_resource r;
	ck_assert_int_eq(dp_catalog_get(c, DP_KIND_BACKUP_REPO, "nas", &r), 0);
	ck_assert_ptr_nonnull(strstr(r.spec, "\"/srv\""));
	ck_assert_int_eq(r.generation, 1);
	dp_resource_clear(&r);
	ck_assert_uint_eq(count_all(c), 1);
	ck_assert_uint_eq(count_audit(c), 1);
	dp_catalog_close(c);
}
END_TEST

START_TEST(test_dry_run)
{
	dp_catalog *c = fresh_catalog();
	dp_manifest *m;
	dp_apply_action a;
	ck_assert_int_eq(dp_manifest_parse(&m, repo_yaml, strlen(repo_yaml), "t"), 0);
	ck_assert_int_eq(dp_catalog_apply(c, m, true, &a), 0);
	ck_assert_int_eq(a, DP_APPLY_CREATED);
	ck_assert_uint_eq(count_all(c), 0);
	ck_assert_uint_eq(count_audit(c), 0);
	dp_manifest_free(m);
	dp_catalog_close(c);
}
END_TEST

START_TEST(test_kind_names)
{
	const struct {
		const char *text;
		dp_kind kind;
	} ok[] = {
	    {"backups", DP_KIND_BACKUP},
	    {"Backup", DP_KIND_BACKUP},
	    {"bk", DP_KIND_BACKUP},
	    {"BACKUPREPOS", DP_KIND_BACKUP_REPO},
	    {"repo", DP_KIND_BACKUP_REPO},
	    {"br", DP_KIND_BACKUP_REPO},
	    {"as", DP_KIND_ACTION_SET},
	    {"actionsets", DP_KIND_ACTION_SET},
	    {"backuppolicies", DP_KIND_BACKUP_POLICY},
	    {"bp", DP_KIND_BACKUP_POLICY},
	    {"policy", DP_KIND_BACKUP_POLICY},
	    {"bs", DP_KIND_BACKUP_SCHEDULE},
	    {"BackupSchedules", DP_KIND_BACKUP_SCHEDULE},
	    {"restores", DP_KIND_RESTORE},
	    {"rs", DP_KIND_RESTORE},
	};
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		dp_kind k;
		ck_assert_msg(dp_kind_parse(&k, ok[i].text) == 0, "%s", ok[i].text);
		ck_assert_int_eq(k, ok[i].kind);
	}
	dp_kind k;
	ck_assert_int_eq(dp_kind_parse(&k, "pods"), DP_EUSAGE);
	ck_assert_int_eq(dp_kind_parse(&k, "backupz"), DP_EUSAGE);
	ck_assert_str_eq(dp_kind_name(DP_KIND_BACKUP_SCHEDULE), "BackupSchedule");
}
END_TEST

START_TEST(test_names)
{
	ck_assert_int_eq(dp_name_check("pg-full-20261125020000"), 0);
	ck_assert_int_eq(dp_name_check("a.b-c"), 0);
	ck_assert_int_eq(dp_name_check("a"), 0);
	const char *bad[] = {"", "-a", "a-", "A", "a_b", "a/b", "a..b", "a b", ".a"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		ck_assert_msg(dp_name_check(bad[i]) == DP_EUSAGE, "\"%s\" accepted", bad[i]);
	char longname[300];
	memset(longname, 'a', 254);
	longname[254] = 0;
	ck_assert_int_eq(dp_name_check(longname), DP_EUSAGE);
	longname[253] = 0;
	ck_assert_int_eq(dp_name_check(longname), 0);
}
END_TEST

START_TEST(test_deep_nesting_rejected)
{
	char text[1024];
	size_t n = 0;
	for (int i = 0; i < 100; i++)
		text[n++] = '[';
	for (int i = 0; i < 100; i++)
		text[n++] = ']';
	text[n] = 0;
	/* JSON: a list of lists is no document; YAML: past our nesting
	 * limit (64). Both refuse and return no manifest. */
	dp_manifest *m = NULL;
	ck_assert_int_ne(dp_manifest_parse(&m, text, n, "deep.json"), 0);
	ck_assert_ptr_null(m);
	char yaml[2048] = "a: ";
	memcpy(yaml + 3, text, n + 1);
	ck_assert_int_eq(dp_manifest_parse(&m, yaml, strlen(yaml), "deep.yaml"), DP_EUSAGE);
	ck_assert_ptr_null(m);
}
END_TEST

/* Mutated good manifests (bytes flipped, dropped, YAML punctuation
 * inserted) never crash the parser or validator: each is accepted or
 * rejected as bad input with a message, and apply agrees. */
START_TEST(test_mutations)
{
	const char *name = good_files[_i];
	char path[PATH_MAX + 300];
	size_t len;
	snprintf(path, sizeof(path), "%s/good-manifests/%s", data_dir, name);
	char *text = slurp(path, &len);
	char *buf = malloc(len + 64);
	ck_assert_ptr_nonnull(buf);
	dp_catalog *c = fresh_catalog();
	static const char punct[] = ":-[]{},&*!|>'\"%@#\n ";
	unsigned seed = 12345u + (unsigned)_i;
	int accepted = 0, rejected = 0;
	for (int iter = 0; iter < 1500; iter++) {
		memcpy(buf, text, len);
		size_t n = len;
		int edits = 1 + (int)(rand_r(&seed) % 3);
		for (int e = 0; e < edits && n > 1; e++) {
			size_t at = (size_t)rand_r(&seed) % n;
			switch (rand_r(&seed) % 3) {
			case 0:
				buf[at] = (char)(rand_r(&seed) % 256);
				if (buf[at] == 0)
					buf[at] = '0';
				break;
			case 1:
				memmove(buf + at, buf + at + 1, n - at - 1);
				n--;
				break;
			default:
				memmove(buf + at + 1, buf + at, n - at);
				buf[at] = punct[(size_t)rand_r(&seed) % (sizeof(punct) - 1)];
				n++;
			}
		}
		dp_manifest *m = NULL;
		dp_error_clear();
		int rc = dp_manifest_parse(&m, buf, n, "mutated");
		if (!rc)
			rc = dp_manifest_validate(m);
		if (!rc)
			rc = dp_catalog_apply(c, m, true, NULL);
		dp_manifest_free(m);
		ck_assert_msg(rc == 0 || rc == DP_EUSAGE, "rc %d: %s", rc, dp_error_last());
		if (rc) {
			ck_assert_msg(dp_error_last()[0], "rejected without a message");
			rejected++;
		} else {
			accepted++;
		}
	}
	ck_assert_int_gt(rejected, 0);
	dp_catalog_close(c);
	free(buf);
	free(text);
}
END_TEST

static Suite *manifest_suite(void)
{
	const char *env = getenv("DP_TEST_DATA");
	char guess[PATH_MAX];
	if (env) {
		snprintf(guess, sizeof(guess), "%s", env);
	} else {
		/* __FILE__ is tests/unit/catalog/manifest_test.c, from the repo root. */
		const char *f = __FILE__, *p = strstr(f, "tests/unit/");
		snprintf(guess, sizeof(guess), "%.*stests/data", p ? (int)(p - f) : 0, f);
	}
	if (!realpath(guess, data_dir))
		snprintf(data_dir, sizeof(data_dir), "%s", guess);
	n_bad = scan("bad-manifests", bad_files);
	n_good = scan("good-manifests", good_files);

	Suite *s = suite_create("manifest");
	TCase *tc = tcase_create("manifest");
	tcase_add_checked_fixture(tc, dp_test_setup, dp_test_teardown);
	tcase_set_timeout(tc, 30);
	/* An empty corpus is a failure, not a pass. */
	if (n_bad < 30 || n_good < 5) {
		fprintf(stderr,
		        "test data not found under %s (run from the repo root or set "
		        "DP_TEST_DATA)\n",
		        data_dir);
		exit(1);
	}
	tcase_add_loop_test(tc, test_bad_manifest, 0, n_bad);
	tcase_add_loop_test(tc, test_good_manifest, 0, n_good);
	tcase_add_test(tc, test_defaults_and_canonical);
	tcase_add_test(tc, test_reordered_spec_is_unchanged);
	tcase_add_test(tc, test_yaml_scalars);
	tcase_add_test(tc, test_apply_all_or_nothing_across_existing);
	tcase_add_test(tc, test_dry_run);
	tcase_add_test(tc, test_kind_names);
	tcase_add_test(tc, test_names);
	tcase_add_test(tc, test_deep_nesting_rejected);
	tcase_add_loop_test(tc, test_mutations, 0, n_good);
	suite_add_tcase(s, tc);
	return s;
}

DP_TEST_MAIN(manifest_suite)

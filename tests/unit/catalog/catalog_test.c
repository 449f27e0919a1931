/*
 * Tests for catalog/catalog.c: schema migrations (from an empty database,
 * from version 1, refusal of a newer schema), WAL mode, DP_HOME creation,
 * the audit log (actors, actions, phase changes), events, status updates
 * with resourceVersion checks, delete rules, immutable fields, and
 * concurrent writers from several processes.
 */
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../../../catalog/catalog_int.h"
#include "../../harness/dp_test.h"
#include "dp/catalog.h"
#include "dp/error.h"
#include "dp/resource.h"

static char db_path[PATH_MAX + 32];
static char data_dir[PATH_MAX];

static void setup(void)
{
	dp_test_setup();
	snprintf(db_path, sizeof(db_path), "%s/catalog.db", dp_test_dir);
}

static dp_catalog *open_cat(void)
{
	dp_catalog *c = NULL;
	ck_assert_msg(dp_catalog_open(&c, db_path) == 0, "%s", dp_error_last());
	return c;
}

static int apply(dp_catalog *c, const char *text)
{
	dp_manifest *m = NULL;
	int rc = dp_manifest_parse(&m, text, strlen(text), "test");
	if (!rc)
		rc = dp_catalog_apply(c, m, false, NULL);
	dp_manifest_free(m);
	return rc;
}

#define H "apiVersion: dataprotection.dp.io/v1alpha1\n"
static const char setup_yaml[] =
    H "kind: BackupRepo\nmetadata: {name: nas}\n"
      "spec: {posix: {path: /srv}, encryption: {passphraseFrom: {env: P}}}\n---\n" H
      "kind: ActionSet\nmetadata: {name: full-as}\n"
      "spec: {backupType: Full, backup: {backupData: {command: [sh, -c, 'true']}}}\n---\n" H
      "kind: BackupPolicy\nmetadata: {name: pg}\n"
      "spec: {backupRepoName: nas, target: {engine: postgresql},"
      " backupMethods: [{name: full, actionSetName: full-as}]}\n---\n" H
      "kind: Backup\nmetadata: {name: b1}\nspec: {backupPolicyName: pg, backupMethod: full}\n";

static sqlite3 *raw_open(void)
{
	sqlite3 *db;
	ck_assert_int_eq(sqlite3_open(db_path, &db), SQLITE_OK);
	return db;
}

static int raw_int(sqlite3 *db, const char *sql)
{
	sqlite3_stmt *st;
	ck_assert_int_eq(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
	ck_assert_int_eq(sqlite3_step(st), SQLITE_ROW);
	int v = sqlite3_column_int(st, 0);
	sqlite3_finalize(st);
	return v;
}

START_TEST(test_migrate_from_empty)
{
	dp_catalog *c = open_cat();
	ck_assert_int_eq(dp_catalog_schema_version(c), DP_CATALOG_SCHEMA_VERSION);
	dp_catalog_close(c);
	sqlite3 *db = raw_open();
	ck_assert_int_eq(raw_int(db, "PRAGMA user_version"), DP_CATALOG_SCHEMA_VERSION);
	ck_assert_int_eq(raw_int(db, "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND "
	                             "name IN ('resources', 'events', 'audit', 'seq', 'changes')"),
	                 5);
	ck_assert_int_eq(raw_int(db, "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND "
	                             "name = 'events_by_object'"),
	                 1);
	sqlite3_stmt *st;
	ck_assert_int_eq(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &st, NULL), SQLITE_OK);
	ck_assert_int_eq(sqlite3_step(st), SQLITE_ROW);
	ck_assert_str_eq((const char *)sqlite3_column_text(st, 0), "wal");
	sqlite3_finalize(st);
	sqlite3_close(db);
	/* Opening again is a no-op. */
	c = open_cat();
	ck_assert_int_eq(dp_catalog_schema_version(c), DP_CATALOG_SCHEMA_VERSION);
	dp_catalog_close(c);
}
END_TEST

START_TEST(test_migrate_from_v1_keeps_data)
{
	ck_assert_int_eq(dp_catalog_migrate_to(db_path, 1), 0);
	sqlite3 *db = raw_open();
	ck_assert_int_eq(raw_int(db, "PRAGMA user_version"), 1);
	ck_assert_int_eq(raw_int(db, "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND "
	                             "name = 'events_by_object'"),
	                 0);
	ck_assert_int_eq(sqlite3_exec(db,
	                              "INSERT INTO resources VALUES ('BackupRepo', 'old', "
	                              "'{\"posix\":{\"path\":\"/old\"}}', '{}', '{}', 3, 9, 100, "
	                              "200)",
	                              NULL, NULL, NULL),
	                 SQLITE_OK);
	sqlite3_close(db);
	dp_catalog *c = open_cat();
	ck_assert_int_eq(dp_catalog_schema_version(c), DP_CATALOG_SCHEMA_VERSION);
	dp_resource r;
	ck_assert_int_eq(dp_catalog_get(c, DP_KIND_BACKUP_REPO, "old", &r), 0);
	ck_assert_int_eq(r.generation, 3);
	ck_assert_int_eq(r.created, 100);
	ck_assert_str_eq(r.spec, "{\"posix\":{\"path\":\"/old\"}}");
	dp_resource_clear(&r);
	dp_catalog_close(c);
	db = raw_open();
	ck_assert_int_eq(raw_int(db, "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND "
	                             "name = 'events_by_object'"),
	                 1);
	sqlite3_close(db);
}
END_TEST

START_TEST(test_migrate_from_v2_adds_change_feed)
{
	ck_assert_int_eq(dp_catalog_migrate_to(db_path, 2), 0);
	sqlite3 *db = raw_open();
	ck_assert_int_eq(raw_int(db, "PRAGMA user_version"), 2);
	ck_assert_int_eq(raw_int(db, "SELECT count(*) FROM sqlite_master WHERE name = 'changes'"),
	                 0);
	sqlite3_close(db);
	dp_catalog *c = open_cat();
	ck_assert_int_eq(dp_catalog_schema_version(c), 3);
	ck_assert_int_eq(apply(c, setup_yaml), 0);
	dp_catalog_close(c);
	db = raw_open();
	ck_assert_int_eq(raw_int(db, "SELECT count(*) FROM changes"), 4);
	sqlite3_close(db);
}
END_TEST

START_TEST(test_change_feed)
{
	dp_catalog *c = open_cat();
	int64_t v0;
	ck_assert_int_eq(dp_catalog_version(c, &v0), 0);
	ck_assert_int_eq(v0, 0);
	ck_assert_int_eq(apply(c, setup_yaml), 0);
	int64_t v1;
	ck_assert_int_eq(dp_catalog_version(c, &v1), 0);
	ck_assert_int_eq(v1, 4);
	ck_assert_int_eq(
	    dp_catalog_set_status(c, DP_KIND_BACKUP, "b1", "{\"phase\":\"New\"}", 0, NULL), 0);
	ck_assert_int_eq(dp_catalog_delete(c, DP_KIND_BACKUP, "b1"), 0);
	/* Unchanged objects and a rejected apply hand out no version. */
	ck_assert_int_eq(apply(c, setup_yaml), 0); /* only b1 is new again */
	ck_assert_int_eq(apply(c, "kind: Backup"), DP_EUSAGE);
	dp_change *ch;
	size_t n;
	ck_assert_int_eq(dp_catalog_changes(c, 3, 0, &ch, &n), 0);
	ck_assert_uint_eq(n, 4);
	ck_assert_int_eq(ch[0].resource_version, 4);
	ck_assert_int_eq(ch[0].kind, DP_KIND_BACKUP);
	ck_assert_str_eq(ch[0].name, "b1");
	ck_assert_str_eq(ch[0].op, "create");
	ck_assert_str_eq(ch[1].op, "status");
	ck_assert_str_eq(ch[2].op, "delete");
	ck_assert_str_eq(ch[3].op, "create");
	ck_assert_int_eq(ch[3].resource_version, 7);
	dp_resource r;
	ck_assert_int_eq(dp_catalog_get(c, DP_KIND_BACKUP, "b1", &r), 0);
	ck_assert_int_eq(r.resource_version, 7);
	dp_resource_clear(&r);
	free(ch);
	ck_assert_int_eq(dp_catalog_changes(c, 0, 2, &ch, &n), 0);
	ck_assert_uint_eq(n, 2);
	ck_assert_str_eq(ch[1].name, "full-as");
	free(ch);
	dp_catalog_close(c);
}
END_TEST

START_TEST(test_newer_schema_refused)
{
	dp_catalog *c = open_cat();
	dp_catalog_close(c);
	sqlite3 *db = raw_open();
	ck_assert_int_eq(sqlite3_exec(db, "PRAGMA user_version = 99", NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(db);
	c = NULL;
	ck_assert_int_eq(dp_catalog_open(&c, db_path), DP_ERROR);
	ck_assert_ptr_null(c);
	ck_assert_ptr_nonnull(strstr(dp_error_last(), "schema version 99, newer than this dp"));
}
END_TEST

START_TEST(test_dp_home)
{
	char home[PATH_MAX + 32], out[PATH_MAX];
	struct stat st;
	snprintf(home, sizeof(home), "%s/a/b/dp", dp_test_dir);
	setenv("DP_HOME", home, 1);
	ck_assert_int_eq(dp_home(out, sizeof(out)), 0);
	ck_assert_str_eq(out, home);
	ck_assert_int_eq(stat(home, &st), 0);
	ck_assert_int_eq(st.st_mode & 0777, 0700);
	/* Default: $HOME/.local/share/dp; the catalog goes inside. */
	unsetenv("DP_HOME");
	setenv("HOME", dp_test_dir, 1);
	ck_assert_int_eq(dp_home(out, sizeof(out)), 0);
	snprintf(home, sizeof(home), "%s/.local/share/dp", dp_test_dir);
	ck_assert_str_eq(out, home);
	ck_assert_int_eq(stat(home, &st), 0);
	ck_assert_int_eq(st.st_mode & 0777, 0700);
	dp_catalog *c = NULL;
	ck_assert_int_eq(dp_catalog_open(&c, NULL), 0);
	dp_catalog_close(c);
	snprintf(home, sizeof(home), "%s/.local/share/dp/catalog.db", dp_test_dir);
	ck_assert_int_eq(stat(home, &st), 0);
}
END_TEST

START_TEST(test_audit_log)
{
	dp_catalog *c = open_cat();
	dp_catalog_set_actor(c, "alice");
	ck_assert_msg(apply(c, setup_yaml) == 0, "%s", dp_error_last());
	dp_catalog_set_actor(c, "token:ci");
	/* Change the repo's spec: update, generation 2. */
	const char *repo2 =
	    H "kind: BackupRepo\nmetadata: {name: nas}\n"
	      "spec: {posix: {path: /srv2}, encryption: {passphraseFrom: {env: P}}}\n";
	ck_assert_int_eq(apply(c, repo2), 0);
	/* Status: a phase change is audited, a progress update is not. */
	ck_assert_int_eq(
	    dp_catalog_set_status(c, DP_KIND_BACKUP, "b1", "{\"phase\":\"Running\"}", 0, NULL), 0);
	ck_assert_int_eq(dp_catalog_set_status(c, DP_KIND_BACKUP, "b1",
	                                       "{\"phase\":\"Running\",\"totalSize\":10}", 0, NULL),
	                 0);
	ck_assert_int_eq(dp_catalog_remove(c, DP_KIND_BACKUP, "b1"), 0);

	dp_audit_entry *a;
	size_t n;
	ck_assert_int_eq(dp_catalog_audit(c, 0, 0, &a, &n), 0);
	ck_assert_uint_eq(n, 7);
	const struct {
		const char *actor, *action, *kind, *name;
		int gen;
	} want[] = {
	    {"alice", "create", "BackupRepo", "nas", 1},
	    {"alice", "create", "ActionSet", "full-as", 1},
	    {"alice", "create", "BackupPolicy", "pg", 1},
	    {"alice", "create", "Backup", "b1", 1},
	    {"token:ci", "update", "BackupRepo", "nas", 2},
	    {"token:ci", "status", "Backup", "b1", 1},
	    {"token:ci", "delete", "Backup", "b1", 1},
	};
	for (size_t i = 0; i < n; i++) {
		ck_assert_str_eq(a[i].actor, want[i].actor);
		ck_assert_str_eq(a[i].action, want[i].action);
		ck_assert_str_eq(a[i].kind, want[i].kind);
		ck_assert_str_eq(a[i].name, want[i].name);
		ck_assert_int_eq(a[i].generation, want[i].gen);
		ck_assert_int_gt(a[i].time, 1700000000);
		if (i)
			ck_assert_int_gt(a[i].id, a[i - 1].id);
	}
	ck_assert_str_eq(a[5].detail, "phase (none) -> Running");
	ck_assert_str_eq(a[4].detail, "spec changed");
	int64_t last = a[3].id;
	dp_audit_free(a, n);
	/* since_id and limit. */
	ck_assert_int_eq(dp_catalog_audit(c, last, 2, &a, &n), 0);
	ck_assert_uint_eq(n, 2);
	ck_assert_str_eq(a[0].action, "update");
	dp_audit_free(a, n);
	dp_catalog_close(c);
}
END_TEST

START_TEST(test_default_actor_is_local_user)
{
	dp_catalog *c = open_cat();
	ck_assert_int_eq(apply(c, setup_yaml), 0);
	dp_audit_entry *a;
	size_t n;
	ck_assert_int_eq(dp_catalog_audit(c, 0, 1, &a, &n), 0);
	ck_assert_uint_eq(n, 1);
	ck_assert_str_ne(a[0].actor, "");
	dp_test_result res;
	dp_test_run(&res, "id -un");
	res.out[strcspn(res.out, "\n")] = 0;
	ck_assert_str_eq(a[0].actor, res.out);
	dp_test_result_free(&res);
	dp_audit_free(a, n);
	dp_catalog_close(c);
}
END_TEST

START_TEST(test_events)
{
	dp_catalog *c = open_cat();
	dp_catalog_set_actor(c, "bob");
	ck_assert_int_eq(apply(c, setup_yaml), 0);
	ck_assert_int_eq(dp_catalog_event(c, DP_KIND_BACKUP, "b1", "Warning", "BackupFailed",
	                                  "action %s exited %d", "backupData", 3),
	                 0);
	dp_event *ev;
	size_t n;
	ck_assert_int_eq(dp_catalog_events(c, DP_KIND_BACKUP, "b1", &ev, &n), 0);
	ck_assert_uint_eq(n, 2);
	ck_assert_str_eq(ev[0].type, "Normal");
	ck_assert_str_eq(ev[0].reason, "Created");
	ck_assert_str_eq(ev[0].message, "created by bob");
	ck_assert_str_eq(ev[1].type, "Warning");
	ck_assert_str_eq(ev[1].reason, "BackupFailed");
	ck_assert_str_eq(ev[1].message, "action backupData exited 3");

	/* describe shows them. */
	dp_resource r;
	dp_buf out = {0};
	ck_assert_int_eq(dp_catalog_get(c, DP_KIND_BACKUP, "b1", &r), 0);
	ck_assert_int_eq(dp_resource_describe(&out, &r, ev, n), 0);
	ck_assert_int_eq(dp_buf_append(&out, "", 1), 0);
	ck_assert_ptr_nonnull(strstr((char *)out.data, "Name:              b1\n"));
	ck_assert_ptr_nonnull(strstr((char *)out.data, "  backupMethod: full\n"));
	ck_assert_ptr_nonnull(
	    strstr((char *)out.data, "Warning   BackupFailed   action backupData"));
	dp_buf_free(&out);
	dp_resource_clear(&r);
	dp_events_free(ev, n);

	/* Events of other objects are separate; a deleted object's go too. */
	ck_assert_int_eq(dp_catalog_events(c, DP_KIND_BACKUP_REPO, "nas", &ev, &n), 0);
	ck_assert_uint_eq(n, 1);
	dp_events_free(ev, n);
	ck_assert_int_eq(dp_catalog_delete(c, DP_KIND_BACKUP, "b1"), 0);
	ck_assert_int_eq(dp_catalog_events(c, DP_KIND_BACKUP, "b1", &ev, &n), 0);
	ck_assert_uint_eq(n, 0);
	dp_events_free(ev, n);
	dp_catalog_close(c);
}
END_TEST

START_TEST(test_update_event_and_generation)
{
	dp_catalog *c = open_cat();
	ck_assert_int_eq(apply(c, setup_yaml), 0);
	dp_resource r;
	ck_assert_int_eq(dp_catalog_get(c, DP_KIND_BACKUP_POLICY, "pg", &r), 0);
	int64_t rv1 = r.resource_version;
	dp_resource_clear(&r);
	/* Labels only: configured, same generation, new resourceVersion. */
	const char *labels = H "kind: BackupPolicy\nmetadata: {name: pg, labels: {team: db}}\n"
	                       "spec: {backupRepoName: nas, target: {engine: postgresql},"
	                       " backupMethods: [{name: full, actionSetName: full-as}]}\n";
	dp_manifest *m;
	dp_apply_action act;
	ck_assert_int_eq(dp_manifest_parse(&m, labels, strlen(labels), "t"), 0);
	ck_assert_int_eq(dp_catalog_apply(c, m, false, &act), 0);
	dp_manifest_free(m);
	ck_assert_int_eq(act, DP_APPLY_CONFIGURED);
	ck_assert_int_eq(dp_catalog_get(c, DP_KIND_BACKUP_POLICY, "pg", &r), 0);
	ck_assert_int_eq(r.generation, 1);
	ck_assert_int_gt(r.resource_version, rv1);
	ck_assert_str_eq(r.meta, "{\"labels\":{\"team\":\"db\"}}");
	dp_resource_clear(&r);
	dp_event *ev;
	size_t n;
	ck_assert_int_eq(dp_catalog_events(c, DP_KIND_BACKUP_POLICY, "pg", &ev, &n), 0);
	ck_assert_uint_eq(n, 2);
	ck_assert_str_eq(ev[1].reason, "Updated");
	ck_assert_ptr_nonnull(strstr(ev[1].message, "labels changed"));
	dp_events_free(ev, n);
	dp_catalog_close(c);
}
END_TEST

START_TEST(test_status_versions)
{
	dp_catalog *c = open_cat();
	ck_assert_int_eq(apply(c, setup_yaml), 0);
	dp_resource r;
	ck_assert_int_eq(dp_catalog_get(c, DP_KIND_BACKUP, "b1", &r), 0);
	ck_assert_str_eq(r.status, "{}");
	int64_t rv = r.resource_version, rv2;
	dp_resource_clear(&r);
	ck_assert_int_eq(dp_catalog_set_status(c, DP_KIND_BACKUP, "b1",
	                                       "{\"totalSize\":5,\"phase\":\"Running\"}", rv, &rv2),
	                 0);
	ck_assert_int_gt(rv2, rv);
	/* A writer holding the old version loses. */
	ck_assert_int_eq(
	    dp_catalog_set_status(c, DP_KIND_BACKUP, "b1", "{\"phase\":\"Failed\"}", rv, NULL),
	    DP_ETRANSIENT);
	ck_assert_int_eq(dp_catalog_get(c, DP_KIND_BACKUP, "b1", &r), 0);
	ck_assert_str_eq(r.status, "{\"phase\":\"Running\",\"totalSize\":5}");
	ck_assert_int_eq(r.resource_version, rv2);
	ck_assert_int_eq(r.generation, 1);
	dp_resource_clear(&r);
	ck_assert_int_eq(dp_catalog_set_status(c, DP_KIND_BACKUP, "b1", "[1]", 0, NULL), DP_EUSAGE);
	ck_assert_int_eq(dp_catalog_set_status(c, DP_KIND_BACKUP, "nope", "{}", 0, NULL),
	                 DP_ENOTFOUND);
	dp_catalog_close(c);
}
END_TEST

START_TEST(test_delete_rules)
{
	dp_catalog *c = open_cat();
	ck_assert_int_eq(apply(c, setup_yaml), 0);
	ck_assert_int_eq(dp_catalog_delete(c, DP_KIND_BACKUP_REPO, "nas"), DP_EUSAGE);
	ck_assert_str_eq(dp_error_last(),
	                 "backuprepo \"nas\" is used by backuppolicy \"pg\"; delete that first");
	ck_assert_int_eq(dp_catalog_delete(c, DP_KIND_ACTION_SET, "full-as"), DP_EUSAGE);
	ck_assert_str_eq(dp_error_last(),
	                 "actionset \"full-as\" is used by backuppolicy \"pg\"; delete that first");
	ck_assert_int_eq(dp_catalog_delete(c, DP_KIND_BACKUP_POLICY, "pg"), DP_EUSAGE);
	ck_assert_str_eq(dp_error_last(),
	                 "backuppolicy \"pg\" is used by backup \"b1\"; delete that first");
	/* A backup with data is the controller's to delete. */
	ck_assert_int_eq(
	    dp_catalog_set_status(c, DP_KIND_BACKUP, "b1", "{\"phase\":\"Completed\"}", 0, NULL),
	    0);
	ck_assert_int_eq(dp_catalog_delete(c, DP_KIND_BACKUP, "b1"), DP_EUSAGE);
	ck_assert_ptr_nonnull(strstr(dp_error_last(), "backup \"b1\" is Completed: deleting it"));
	ck_assert_int_eq(
	    dp_catalog_set_status(c, DP_KIND_BACKUP, "b1", "{\"phase\":\"New\"}", 0, NULL), 0);
	ck_assert_int_eq(dp_catalog_delete(c, DP_KIND_BACKUP, "b1"), 0);
	ck_assert_int_eq(dp_catalog_delete(c, DP_KIND_BACKUP, "b1"), DP_ENOTFOUND);
	ck_assert_str_eq(dp_error_last(), "backup \"b1\" not found");
	/* Now the chain unwinds. */
	ck_assert_int_eq(dp_catalog_delete(c, DP_KIND_BACKUP_POLICY, "pg"), 0);
	ck_assert_int_eq(dp_catalog_delete(c, DP_KIND_ACTION_SET, "full-as"), 0);
	ck_assert_int_eq(dp_catalog_delete(c, DP_KIND_BACKUP_REPO, "nas"), 0);
	dp_catalog_close(c);
}
END_TEST

START_TEST(test_immutable_fields)
{
	dp_catalog *c = open_cat();
	ck_assert_int_eq(apply(c, setup_yaml), 0);
	const char *more = H "kind: BackupPolicy\nmetadata: {name: pg}\n"
	                     "spec: {backupRepoName: nas, target: {engine: postgresql},"
	                     " backupMethods: [{name: full, actionSetName: full-as},"
	                     " {name: other, actionSetName: full-as}]}\n";
	ck_assert_int_eq(apply(c, more), 0);
	const char *changed =
	    H "kind: Backup\nmetadata: {name: b1}\nspec: {backupPolicyName: pg, backupMethod: "
	      "other}\n";
	ck_assert_int_eq(apply(c, changed), DP_EUSAGE);
	ck_assert_str_eq(dp_error_last(), "backup \"b1\": spec.backupMethod: cannot be changed (it "
	                                  "is \"full\"); create another backup instead");
	/* Mutable fields may change. */
	const char *retention =
	    H "kind: Backup\nmetadata: {name: b1}\nspec: {backupPolicyName: pg, "
	      "backupMethod: full, retentionPeriod: 3d}\n";
	ck_assert_int_eq(apply(c, retention), 0);
	const char *restore = H "kind: Restore\nmetadata: {name: r}\n"
	                        "spec: {backup: {name: b1}, target: {dataDir: /tmp/x}}\n";
	const char *restore2 = H "kind: Restore\nmetadata: {name: r}\n"
	                         "spec: {backup: {name: b1}, target: {dataDir: /tmp/y}}\n";
	ck_assert_int_eq(apply(c, restore), 0);
	ck_assert_int_eq(apply(c, restore2), DP_EUSAGE);
	ck_assert_str_eq(dp_error_last(),
	                 "restore \"r\": spec: a restore cannot be changed; delete "
	                 "it and create another");
	dp_catalog_close(c);
}
END_TEST

START_TEST(test_concurrent_writers)
{
	/* Four processes apply 25 backups each at the same time; the busy
	 * timeout serialises them and every backup is stored once. */
	dp_catalog *c = open_cat();
	ck_assert_int_eq(apply(c, setup_yaml), 0);
	dp_catalog_close(c);
	pid_t pids[4];
	for (int p = 0; p < 4; p++) {
		pids[p] = fork();
		ck_assert_int_ge(pids[p], 0);
		if (pids[p] == 0) {
			dp_catalog *cc = NULL;
			if (dp_catalog_open(&cc, db_path))
				_exit(1);
			for (int i = 0; i < 25; i++) {
				char text[512];
				snprintf(text, sizeof(text),
				         H "kind: Backup\nmetadata: {name: p%d-b%d}\n"
				           "spec: {backupPolicyName: pg, backupMethod: full}\n",
				         p, i);
				if (apply(cc, text)) {
					fprintf(stderr, "%s\n", dp_error_last());
					_exit(2);
				}
			}
			dp_catalog_close(cc);
			_exit(0);
		}
	}
	for (int p = 0; p < 4; p++) {
		int st;
		ck_assert_int_eq(waitpid(pids[p], &st, 0), pids[p]);
		ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "writer %d failed", p);
	}
	c = open_cat();
	dp_resource *v;
	size_t n;
	ck_assert_int_eq(dp_catalog_list(c, DP_KIND_BACKUP, &v, &n), 0);
	ck_assert_uint_eq(n, 101);
	/* resourceVersions are unique. */
	for (size_t i = 0; i < n; i++)
		for (size_t j = i + 1; j < n; j++)
			ck_assert_int_ne(v[i].resource_version, v[j].resource_version);
	dp_resources_free(v, n);
	dp_catalog_close(c);
}
END_TEST

START_TEST(test_render)
{
	dp_catalog *c = open_cat();
	ck_assert_int_eq(apply(c, setup_yaml), 0);
	ck_assert_int_eq(
	    dp_catalog_set_status(c, DP_KIND_BACKUP, "b1",
	                          "{\"phase\":\"Completed\",\"totalSize\":\"1610612736\","
	                          "\"storedSize\":524288,\"startTimestamp\":"
	                          "\"2026-11-25T02:00:00Z\",\"completionTimestamp\":"
	                          "\"2026-11-25T02:01:30Z\",\"expiration\":"
	                          "\"2026-12-02T02:01:30Z\"}",
	                          0, NULL),
	    0);
	dp_resource *v;
	size_t n;
	ck_assert_int_eq(dp_catalog_list(c, DP_KIND_BACKUP, &v, &n), 0);
	dp_buf out = {0};
	ck_assert_int_eq(dp_resource_table(&out, DP_KIND_BACKUP, v, n, false), 0);
	dp_buf_append(&out, "", 1);
	const char *t = (const char *)out.data;
	ck_assert_msg(strncmp(t,
	                      "NAME   POLICY   METHOD   STATUS      TOTAL-SIZE   STORED      "
	                      "DURATION   CREATED                EXPIRES\n",
	                      95) == 0,
	              "%s", t);
	ck_assert_ptr_nonnull(strstr(t,
	                             "b1     pg       full     Completed   1.5 GiB      512.0 KiB"
	                             "   1m30s      "));
	ck_assert_ptr_nonnull(strstr(t, "2026-12-02T02:01:30Z\n"));
	dp_buf_free(&out);
	ck_assert_int_eq(dp_resource_json(&out, &v[0], false), 0);
	dp_buf_append(&out, "", 1);
	ck_assert_ptr_nonnull(strstr((const char *)out.data,
	                             "{\"apiVersion\":\"dataprotection.dp.io/v1alpha1\",\"kind\":"
	                             "\"Backup\",\"metadata\":{\"name\":\"b1\",\"generation\":1,"));
	dp_buf_free(&out);
	dp_resources_free(v, n);
	dp_catalog_close(c);
}
END_TEST

START_TEST(test_builtins)
{
	char dir[PATH_MAX + 16];
	snprintf(dir, sizeof(dir), "%s/methods", data_dir);
	dp_catalog *c = open_cat();
	dp_catalog_set_actor(c, "carol");
	size_t loaded, failed;
	ck_assert_int_eq(dp_catalog_load_builtins(c, dir, &loaded, &failed), 0);
	ck_assert_uint_eq(loaded, 2);
	ck_assert_uint_eq(failed, 2); /* broken/repo.yaml, broken/typo.yaml */
	ck_assert_str_eq(dp_catalog_actor(c), "carol");
	dp_resource r;
	ck_assert_int_eq(dp_catalog_get(c, DP_KIND_ACTION_SET, "testdb-wal", &r), 0);
	char want[PATH_MAX + 256];
	snprintf(want, sizeof(want),
	         "{\"annotations\":{\"dataprotection.dp.io/method-dir\":\"%s/methods/testdb\"},"
	         "\"labels\":{\"dataprotection.dp.io/builtin\":\"true\","
	         "\"dataprotection.dp.io/engine\":\"testdb\"}}",
	         data_dir);
	ck_assert_str_eq(r.meta, want);
	dp_resource_clear(&r);
	ck_assert_int_eq(dp_catalog_get(c, DP_KIND_BACKUP_REPO, "sneaky", &r), DP_ENOTFOUND);
	dp_audit_entry *a;
	size_t n;
	ck_assert_int_eq(dp_catalog_audit(c, 0, 0, &a, &n), 0);
	ck_assert_uint_eq(n, 2);
	ck_assert_str_eq(a[0].actor, "builtin");
	dp_audit_free(a, n);
	/* Loading again, even through another spelling of the path, changes
	 * nothing. */
	snprintf(dir, sizeof(dir), "%s/methods/../methods", data_dir);
	ck_assert_int_eq(dp_catalog_load_builtins(c, dir, &loaded, &failed), 0);
	ck_assert_uint_eq(loaded, 2);
	ck_assert_int_eq(dp_catalog_audit(c, 0, 0, &a, &n), 0);
	ck_assert_uint_eq(n, 2);
	dp_audit_free(a, n);

	/* A policy without backupMethods gets its engine's defaults. */
	const char *pol =
	    H "kind: BackupRepo\nmetadata: {name: nas}\n"
	      "spec: {posix: {path: /srv}, encryption: {passphraseFrom: {env: P}}}\n---\n" H
	      "kind: BackupPolicy\nmetadata: {name: t}\n"
	      "spec: {backupRepoName: nas, target: {engine: testdb}}\n";
	ck_assert_int_eq(apply(c, pol), 0);
	dp_buf out = {0};
	ck_assert_int_eq(dp_catalog_policy_methods(c, "t", &out), 0);
	dp_buf_append(&out, "", 1);
	ck_assert_str_eq((char *)out.data, "[{\"actionSetName\":\"testdb-full\",\"name\":\"full\"},"
	                                   "{\"actionSetName\":\"testdb-wal\",\"name\":\"wal\"}]");
	dp_buf_free(&out);
	ck_assert_int_eq(apply(c, H "kind: Backup\nmetadata: {name: w}\n"
	                            "spec: {backupPolicyName: t, backupMethod: wal}\n"),
	                 0);
	ck_assert_int_eq(apply(c, H "kind: Backup\nmetadata: {name: i}\n"
	                            "spec: {backupPolicyName: t, backupMethod: incremental}\n"),
	                 DP_EUSAGE);
	ck_assert_str_eq(dp_error_last(),
	                 "backup \"i\": spec.backupMethod: \"incremental\": "
	                 "backuppolicy \"t\" has no such method (it has: full, wal)");
	/* An engine nobody provides. */
	ck_assert_int_eq(apply(c,
	                       H "kind: BackupPolicy\nmetadata: {name: u}\n"
	                         "spec: {backupRepoName: nas, target: {engine: nosuchdb}}\n---\n" H
	                         "kind: Backup\nmetadata: {name: u1}\n"
	                         "spec: {backupPolicyName: u, backupMethod: full}\n"),
	                 DP_EUSAGE);
	ck_assert_str_eq(dp_error_last(),
	                 "backup \"u1\": spec.backupMethod: \"full\": backuppolicy \"u\" lists no "
	                 "backupMethods and no ActionSet is labelled dataprotection.dp.io/engine: "
	                 "nosuchdb");
	dp_catalog_close(c);
}
END_TEST

START_TEST(test_policy_change_cannot_break_schedule)
{
	dp_catalog *c = open_cat();
	ck_assert_int_eq(apply(c, setup_yaml), 0);
	const char *sched = H "kind: BackupSchedule\nmetadata: {name: nightly}\n"
	                      "spec: {backupPolicyName: pg, schedules: [{backupMethod: full, "
	                      "cronExpression: '@daily'}]}\n";
	ck_assert_int_eq(apply(c, sched), 0);
	const char *renamed = H "kind: BackupPolicy\nmetadata: {name: pg}\n"
	                        "spec: {backupRepoName: nas, target: {engine: postgresql},"
	                        " backupMethods: [{name: base, actionSetName: full-as}]}\n";
	ck_assert_int_eq(apply(c, renamed), DP_EUSAGE);
	ck_assert_str_eq(dp_error_last(),
	                 "this change would break a stored schedule (change or delete it first): "
	                 "backupschedule \"nightly\": spec.schedules[0].backupMethod: \"full\": "
	                 "backuppolicy \"pg\" has no such method (it has: base)");
	dp_resource r;
	ck_assert_int_eq(dp_catalog_get(c, DP_KIND_BACKUP_POLICY, "pg", &r), 0);
	ck_assert_ptr_nonnull(strstr(r.spec, "\"name\":\"full\""));
	dp_resource_clear(&r);
	/* Changing both in one apply is fine. */
	char both[2048];
	snprintf(both, sizeof(both),
	         "%s---\n" H "kind: BackupSchedule\nmetadata: {name: nightly}\n"
	         "spec: {backupPolicyName: pg, schedules: [{backupMethod: base, "
	         "cronExpression: '@daily'}]}\n",
	         renamed);
	ck_assert_msg(apply(c, both) == 0, "%s", dp_error_last());
	dp_catalog_close(c);
}
END_TEST

START_TEST(test_methods_dir)
{
	char out[PATH_MAX], dir[PATH_MAX + 16];
	snprintf(dir, sizeof(dir), "%s/methods", data_dir);
	setenv("DP_METHODS_DIR", dir, 1);
	ck_assert_int_eq(dp_methods_dir(out, sizeof(out)), 0);
	ck_assert_str_eq(out, dir);
	setenv("DP_METHODS_DIR", "/nonexistent/methods", 1);
	ck_assert_int_eq(dp_methods_dir(out, sizeof(out)), DP_ENOTFOUND);
	ck_assert_str_eq(dp_error_last(),
	                 "DP_METHODS_DIR \"/nonexistent/methods\" is not a directory");
}
END_TEST

static Suite *catalog_suite(void)
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
	Suite *s = suite_create("catalog");
	TCase *tc = tcase_create("catalog");
	tcase_add_checked_fixture(tc, setup, dp_test_teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_migrate_from_empty);
	tcase_add_test(tc, test_migrate_from_v1_keeps_data);
	tcase_add_test(tc, test_migrate_from_v2_adds_change_feed);
	tcase_add_test(tc, test_change_feed);
	tcase_add_test(tc, test_newer_schema_refused);
	tcase_add_test(tc, test_dp_home);
	tcase_add_test(tc, test_audit_log);
	tcase_add_test(tc, test_default_actor_is_local_user);
	tcase_add_test(tc, test_events);
	tcase_add_test(tc, test_update_event_and_generation);
	tcase_add_test(tc, test_status_versions);
	tcase_add_test(tc, test_delete_rules);
	tcase_add_test(tc, test_immutable_fields);
	tcase_add_test(tc, test_concurrent_writers);
	tcase_add_test(tc, test_render);
	tcase_add_test(tc, test_builtins);
	tcase_add_test(tc, test_methods_dir);
	tcase_add_test(tc, test_policy_change_cannot_break_schedule);
	suite_add_tcase(s, tc);
	return s;
}

DP_TEST_MAIN(catalog_suite)

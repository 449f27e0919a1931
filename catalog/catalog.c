/*
 * The catalog over sqlite3 (see dp/catalog.h for the model).
 *
 * Schema (version in PRAGMA user_version; see `migrations` below):
 *   resources(kind, name, spec, status, meta, generation, resource_version,
 *             created_at, updated_at)   primary key (kind, name)
 *   events(id, time, kind, name, type, reason, message)
 *   audit(id, time, actor, action, kind, name, generation, detail)
 *   seq(value)   one row: the last resourceVersion handed out
 *   changes(resource_version, time, kind, name, op)   one row per version
 *                handed out: what changed (op: create, update, status,
 *                delete), for watchers; never rewritten
 * kind is the CamelCase kind name; times are unix seconds. Migrations only
 * ever go forward, each in its own transaction with its version bump, so a
 * crash leaves the schema at a known version.
 *
 * Every change runs in BEGIN IMMEDIATE ... COMMIT, so readers see whole
 * applies only; the busy timeout makes concurrent writers wait rather than
 * fail. A dp_catalog is one connection, used by one thread at a time.
 */
#include "dp/catalog.h"

#include <errno.h>
#include <pwd.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "catalog_int.h"
#include "dp/error.h"
#include "manifest_int.h"

struct dp_catalog {
	sqlite3 *db;
	char path[4096];
	char actor[128];
};

static const struct {
	int version;
	const char *what;
	const char *sql;
} migrations[] = {
    {1, "resources, events, audit log",
     "CREATE TABLE resources("
     " kind TEXT NOT NULL, name TEXT NOT NULL, spec TEXT NOT NULL,"
     " status TEXT NOT NULL DEFAULT '{}', meta TEXT NOT NULL DEFAULT '{}',"
     " generation INTEGER NOT NULL, resource_version INTEGER NOT NULL,"
     " created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL,"
     " PRIMARY KEY (kind, name));"
     "CREATE TABLE events(id INTEGER PRIMARY KEY AUTOINCREMENT, time INTEGER NOT NULL,"
     " kind TEXT NOT NULL, name TEXT NOT NULL, type TEXT NOT NULL, reason TEXT NOT NULL,"
     " message TEXT NOT NULL);"
     "CREATE TABLE audit(id INTEGER PRIMARY KEY AUTOINCREMENT, time INTEGER NOT NULL,"
     " actor TEXT NOT NULL, action TEXT NOT NULL, kind TEXT NOT NULL, name TEXT NOT NULL,"
     " generation INTEGER NOT NULL, detail TEXT NOT NULL);"
     "CREATE TABLE seq(value INTEGER NOT NULL);"
     "INSERT INTO seq VALUES (0);"},
    {2, "indexes: events and audit by object, objects by version",
     "CREATE INDEX events_by_object ON events(kind, name, id);"
     "CREATE INDEX audit_by_object ON audit(kind, name, id);"
     "CREATE INDEX resources_by_version ON resources(resource_version);"},
    {3, "a change feed for watchers",
     "CREATE TABLE changes(resource_version INTEGER PRIMARY KEY, time INTEGER NOT NULL,"
     " kind TEXT NOT NULL, name TEXT NOT NULL, op TEXT NOT NULL);"},
};
_Static_assert(sizeof(migrations) / sizeof(migrations[0]) == DP_CATALOG_SCHEMA_VERSION,
               "one migration step per schema version");

static int db_error(dp_catalog *c, const char *what)
{
	int code = sqlite3_errcode(c->db);
	int rc = code == SQLITE_BUSY || code == SQLITE_LOCKED ? DP_ELOCKED : DP_ERROR;
	return dp_error_set(rc, "catalog \"%s\": %s: %s", c->path, what, sqlite3_errmsg(c->db));
}

static int exec(dp_catalog *c, const char *sql)
{
	char *err = NULL;
	if (sqlite3_exec(c->db, sql, NULL, NULL, &err) != SQLITE_OK) {
		int code = sqlite3_errcode(c->db);
		int rc = dp_error_set(code == SQLITE_BUSY ? DP_ELOCKED : DP_ERROR,
		                      "catalog \"%s\": %s", c->path, err ? err : "error");
		sqlite3_free(err);
		return rc;
	}
	return 0;
}

static int prepare(dp_catalog *c, sqlite3_stmt **st, const char *sql)
{
	if (sqlite3_prepare_v2(c->db, sql, -1, st, NULL) != SQLITE_OK)
		return db_error(c, "prepare");
	return 0;
}

static int64_t now(void)
{
	return (int64_t)time(NULL);
}

/* ---- DP_HOME ---- */

static int mkdir_p(const char *path, mode_t mode)
{
	char tmp[4096];
	size_t len = strlen(path);
	if (len == 0 || len >= sizeof(tmp))
		return dp_error_set(DP_EUSAGE, "bad directory \"%s\"", path);
	memcpy(tmp, path, len + 1);
	for (char *p = tmp + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = 0;
		if (mkdir(tmp, mode) != 0 && errno != EEXIST)
			return dp_error_errno(DP_ERROR, errno, "cannot create \"%s\"", tmp);
		*p = '/';
	}
	if (mkdir(tmp, mode) != 0 && errno != EEXIST)
		return dp_error_errno(DP_ERROR, errno, "cannot create \"%s\"", tmp);
	return 0;
}

int dp_home(char *out, size_t outlen)
{
	const char *env = getenv("DP_HOME");
	int n;
	if (env && *env) {
		n = snprintf(out, outlen, "%s", env);
	} else {
		const char *home = getenv("HOME");
		if (!home || !*home) {
			struct passwd *pw = getpwuid(geteuid());
			home = pw ? pw->pw_dir : NULL;
		}
		if (!home)
			return dp_error_set(DP_ERROR, "cannot find a home directory: set DP_HOME");
		n = snprintf(out, outlen, "%s/.local/share/dp", home);
	}
	if (n < 0 || (size_t)n >= outlen)
		return dp_error_set(DP_EUSAGE, "DP_HOME is too long");
	return mkdir_p(out, 0700);
}

/* ---- open and migrate ---- */

static int schema_version(dp_catalog *c, int *out)
{
	sqlite3_stmt *st;
	int rc = prepare(c, &st, "PRAGMA user_version");
	if (rc)
		return rc;
	if (sqlite3_step(st) == SQLITE_ROW)
		*out = sqlite3_column_int(st, 0);
	else
		rc = db_error(c, "read schema version");
	sqlite3_finalize(st);
	return rc;
}

static int migrate(dp_catalog *c, int target)
{
	int v, rc;
	if ((rc = schema_version(c, &v)))
		return rc;
	if (v > DP_CATALOG_SCHEMA_VERSION)
		return dp_error_set(DP_ERROR,
		                    "catalog \"%s\" has schema version %d, newer than this dp "
		                    "understands (%d): upgrade dp",
		                    c->path, v, DP_CATALOG_SCHEMA_VERSION);
	while (v < target) {
		if ((rc = exec(c, "BEGIN IMMEDIATE")))
			return rc;
		/* Another process may have migrated while we waited for the lock. */
		if ((rc = schema_version(c, &v)) || v >= target) {
			exec(c, rc ? "ROLLBACK" : "COMMIT");
			return rc;
		}
		char bump[64];
		snprintf(bump, sizeof(bump), "PRAGMA user_version = %d", migrations[v].version);
		if ((rc = exec(c, migrations[v].sql)) || (rc = exec(c, bump)) ||
		    (rc = exec(c, "COMMIT"))) {
			exec(c, "ROLLBACK");
			return dp_error_prefix("migrating to schema %d (%s)", migrations[v].version,
			                       migrations[v].what);
		}
		v = migrations[v].version;
	}
	return 0;
}

static int open_db(dp_catalog **out, const char *path)
{
	char home[4096], dbpath[4096];
	int rc = 0;
	*out = NULL;
	if (!path) {
		if ((rc = dp_home(home, sizeof(home))))
			return rc;
		int n = snprintf(dbpath, sizeof(dbpath), "%s/catalog.db", home);
		if (n < 0 || (size_t)n >= sizeof(dbpath))
			return dp_error_set(DP_EUSAGE, "DP_HOME is too long");
		path = dbpath;
	}
	dp_catalog *c = calloc(1, sizeof(*c));
	if (!c)
		return dp_error_set(DP_ERROR, "out of memory");
	snprintf(c->path, sizeof(c->path), "%s", path);
	struct passwd *pw = getpwuid(geteuid());
	if (pw && pw->pw_name)
		snprintf(c->actor, sizeof(c->actor), "%s", pw->pw_name);
	else
		snprintf(c->actor, sizeof(c->actor), "uid:%ld", (long)geteuid());
	if (sqlite3_open_v2(path, &c->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) !=
	    SQLITE_OK) {
		rc = dp_error_set(DP_ERROR, "cannot open catalog \"%s\": %s", path,
		                  c->db ? sqlite3_errmsg(c->db) : "out of memory");
		goto out;
	}
	sqlite3_busy_timeout(c->db, 5000);
	if ((rc = exec(c, "PRAGMA journal_mode = WAL")) ||
	    (rc = exec(c, "PRAGMA synchronous = FULL")))
		goto out;
	*out = c;
	c = NULL;
out:
	dp_catalog_close(c);
	return rc;
}

int dp_catalog_open(dp_catalog **out, const char *path)
{
	dp_catalog *c;
	int rc = open_db(&c, path);
	if (rc)
		return rc;
	if ((rc = migrate(c, DP_CATALOG_SCHEMA_VERSION))) {
		dp_catalog_close(c);
		return rc;
	}
	*out = c;
	return 0;
}

int dp_catalog_migrate_to(const char *path, int version)
{
	dp_catalog *c;
	int rc = open_db(&c, path);
	if (rc)
		return rc;
	rc = migrate(c, version);
	dp_catalog_close(c);
	return rc;
}

void dp_catalog_close(dp_catalog *c)
{
	if (!c)
		return;
	sqlite3_close(c->db);
	free(c);
}

int dp_catalog_schema_version(dp_catalog *c)
{
	int v = -1;
	schema_version(c, &v);
	return v;
}

void dp_catalog_set_actor(dp_catalog *c, const char *actor)
{
	snprintf(c->actor, sizeof(c->actor), "%s", actor);
}

const char *dp_catalog_actor(const dp_catalog *c)
{
	return c->actor;
}

/* ---- small helpers ---- */

static char *col_text(sqlite3_stmt *st, int i)
{
	const unsigned char *t = sqlite3_column_text(st, i);
	return dp_strdup(t ? (const char *)t : "");
}

/* Hands out the next resourceVersion and records what it is for. */
static int bump(dp_catalog *c, dp_kind kind, const char *name, const char *op, int64_t *out)
{
	sqlite3_stmt *st;
	int rc = prepare(c, &st, "UPDATE seq SET value = value + 1 RETURNING value");
	if (rc)
		return rc;
	if (sqlite3_step(st) == SQLITE_ROW)
		*out = sqlite3_column_int64(st, 0);
	else
		rc = db_error(c, "next resource version");
	sqlite3_finalize(st);
	if (rc || (rc = prepare(c, &st,
	                        "INSERT INTO changes(resource_version, time, kind, name, op) "
	                        "VALUES (?, ?, ?, ?, ?)")))
		return rc;
	sqlite3_bind_int64(st, 1, *out);
	sqlite3_bind_int64(st, 2, now());
	sqlite3_bind_text(st, 3, dp_kind_name(kind), -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 4, name, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 5, op, -1, SQLITE_STATIC);
	if (sqlite3_step(st) != SQLITE_DONE)
		rc = db_error(c, "record change");
	sqlite3_finalize(st);
	return rc;
}

static int audit(dp_catalog *c, const char *action, dp_kind kind, const char *name,
                 int64_t generation, const char *detail)
{
	sqlite3_stmt *st;
	int rc = prepare(c, &st,
	                 "INSERT INTO audit(time, actor, action, kind, name, generation, detail) "
	                 "VALUES (?, ?, ?, ?, ?, ?, ?)");
	if (rc)
		return rc;
	sqlite3_bind_int64(st, 1, now());
	sqlite3_bind_text(st, 2, c->actor, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 3, action, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 4, dp_kind_name(kind), -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 5, name, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 6, generation);
	sqlite3_bind_text(st, 7, detail ? detail : "", -1, SQLITE_STATIC);
	if (sqlite3_step(st) != SQLITE_DONE)
		rc = db_error(c, "write audit log");
	sqlite3_finalize(st);
	return rc;
}

static int event_add(dp_catalog *c, dp_kind kind, const char *name, const char *type,
                     const char *reason, const char *message)
{
	sqlite3_stmt *st;
	int rc = prepare(c, &st,
	                 "INSERT INTO events(time, kind, name, type, reason, message) "
	                 "VALUES (?, ?, ?, ?, ?, ?)");
	if (rc)
		return rc;
	sqlite3_bind_int64(st, 1, now());
	sqlite3_bind_text(st, 2, dp_kind_name(kind), -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 3, name, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 4, type, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 5, reason, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 6, message, -1, SQLITE_STATIC);
	if (sqlite3_step(st) != SQLITE_DONE)
		rc = db_error(c, "write event");
	sqlite3_finalize(st);
	return rc;
}

void dp_resource_clear(dp_resource *r)
{
	if (!r)
		return;
	free(r->spec);
	free(r->status);
	free(r->meta);
	r->spec = r->status = r->meta = NULL;
}

void dp_resources_free(dp_resource *v, size_t n)
{
	for (size_t i = 0; v && i < n; i++)
		dp_resource_clear(&v[i]);
	free(v);
}

#define RESOURCE_COLS                                                                              \
	"kind, name, spec, status, meta, generation, resource_version, created_at, updated_at"

static int row_to_resource(sqlite3_stmt *st, dp_resource *r)
{
	memset(r, 0, sizeof(*r));
	const char *kind = (const char *)sqlite3_column_text(st, 0);
	for (int k = 0; k < DP_KIND_COUNT; k++)
		if (kind && strcmp(kind, dp_kind_name((dp_kind)k)) == 0)
			r->kind = (dp_kind)k;
	snprintf(r->name, sizeof(r->name), "%s", (const char *)sqlite3_column_text(st, 1));
	r->spec = col_text(st, 2);
	r->status = col_text(st, 3);
	r->meta = col_text(st, 4);
	r->generation = sqlite3_column_int64(st, 5);
	r->resource_version = sqlite3_column_int64(st, 6);
	r->created = sqlite3_column_int64(st, 7);
	r->updated = sqlite3_column_int64(st, 8);
	if (!r->spec || !r->status || !r->meta) {
		dp_resource_clear(r);
		return dp_error_set(DP_ERROR, "out of memory");
	}
	return 0;
}

int dp_catalog_get(dp_catalog *c, dp_kind kind, const char *name, dp_resource *out)
{
	sqlite3_stmt *st;
	memset(out, 0, sizeof(*out));
	int rc =
	    prepare(c, &st, "SELECT " RESOURCE_COLS " FROM resources WHERE kind = ? AND name = ?");
	if (rc)
		return rc;
	sqlite3_bind_text(st, 1, dp_kind_name(kind), -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, name, -1, SQLITE_STATIC);
	int s = sqlite3_step(st);
	if (s == SQLITE_ROW)
		rc = row_to_resource(st, out);
	else if (s == SQLITE_DONE)
		rc = dp_error_set(DP_ENOTFOUND, "%s \"%s\" not found", dp_kind_lower(kind), name);
	else
		rc = db_error(c, "read");
	sqlite3_finalize(st);
	return rc;
}

int dp_catalog_list(dp_catalog *c, dp_kind kind, dp_resource **out, size_t *n)
{
	sqlite3_stmt *st;
	dp_resource *v = NULL;
	size_t len = 0, cap = 0;
	*out = NULL;
	*n = 0;
	int rc =
	    prepare(c, &st, "SELECT " RESOURCE_COLS " FROM resources WHERE kind = ? ORDER BY name");
	if (rc)
		return rc;
	sqlite3_bind_text(st, 1, dp_kind_name(kind), -1, SQLITE_STATIC);
	int s;
	while ((s = sqlite3_step(st)) == SQLITE_ROW) {
		if ((rc = dp_array_grow(&v, &cap, len, sizeof(*v))))
			goto out;
		if ((rc = row_to_resource(st, &v[len])))
			goto out;
		len++;
	}
	if (s != SQLITE_DONE) {
		rc = db_error(c, "list");
		goto out;
	}
	*out = v;
	*n = len;
	v = NULL;
	len = 0;
out:
	sqlite3_finalize(st);
	dp_resources_free(v, len);
	return rc;
}

/* ---- apply ---- */

static int lookup_spec(void *arg, dp_kind kind, const char *name, cJSON **spec_out)
{
	dp_catalog *c = arg;
	dp_resource r;
	*spec_out = NULL;
	int rc = dp_catalog_get(c, kind, name, &r);
	if (rc == DP_ENOTFOUND) {
		dp_error_clear();
		return DP_ENOTFOUND;
	}
	if (rc)
		return rc;
	*spec_out = cJSON_Parse(r.spec);
	dp_resource_clear(&r);
	if (!*spec_out)
		return dp_error_set(DP_ECORRUPT, "catalog: %s \"%s\": stored spec does not parse",
		                    dp_kind_lower(kind), name);
	return 0;
}

/* Every ActionSet as [{name, labels, backupType}] (dp_policy_methods). */
static int list_actionsets(void *arg, cJSON **out)
{
	dp_catalog *c = arg;
	dp_resource *v;
	size_t n;
	*out = NULL;
	int rc = dp_catalog_list(c, DP_KIND_ACTION_SET, &v, &n);
	if (rc)
		return rc;
	cJSON *arr = cJSON_CreateArray();
	for (size_t i = 0; arr && i < n; i++) {
		cJSON *a = cJSON_CreateObject(), *meta = cJSON_Parse(v[i].meta),
		      *spec = cJSON_Parse(v[i].spec);
		cJSON *labels = cJSON_DetachItemFromObjectCaseSensitive(meta, "labels");
		const cJSON *type = cJSON_GetObjectItemCaseSensitive(spec, "backupType");
		cJSON_AddItemToArray(arr, a);
		cJSON_AddStringToObject(a, "name", v[i].name);
		cJSON_AddItemToObject(a, "labels", labels ? labels : cJSON_CreateObject());
		cJSON_AddStringToObject(a, "backupType",
		                        cJSON_IsString(type) ? type->valuestring : "");
		cJSON_Delete(meta);
		cJSON_Delete(spec);
	}
	dp_resources_free(v, n);
	if (!arr)
		return dp_error_set(DP_ERROR, "out of memory");
	*out = arr;
	return 0;
}

int dp_catalog_policy_methods(dp_catalog *c, const char *policy, dp_buf *out)
{
	dp_resource r;
	cJSON *spec = NULL, *sets = NULL, *methods = NULL;
	char *text = NULL;
	int rc = dp_catalog_get(c, DP_KIND_BACKUP_POLICY, policy, &r);
	if (rc)
		return rc;
	if (!(spec = cJSON_Parse(r.spec))) {
		rc = dp_error_set(DP_ECORRUPT, "backuppolicy \"%s\": stored spec does not parse",
		                  policy);
		goto out;
	}
	if ((rc = list_actionsets(c, &sets)))
		goto out;
	if (!(methods = dp_policy_methods(spec, sets)) ||
	    !(text = cJSON_PrintUnformatted(methods))) {
		rc = dp_error_set(DP_ERROR, "out of memory");
		goto out;
	}
	rc = dp_buf_appendf(out, "%s", text);
out:
	cJSON_free(text);
	cJSON_Delete(methods);
	cJSON_Delete(sets);
	cJSON_Delete(spec);
	dp_resource_clear(&r);
	return rc;
}

static int apply_doc(dp_catalog *c, const dp_manifest *m, size_t i, dp_apply_action *action)
{
	dp_kind kind = dp_manifest_kind(m, i);
	const char *name = dp_manifest_name(m, i);
	const char *spec = dp_manifest_spec(m, i), *meta = dp_manifest_meta(m, i);
	dp_resource old;
	int64_t rv, t = now();
	sqlite3_stmt *st = NULL;
	char msg[256];
	int rc = dp_catalog_get(c, kind, name, &old);
	if (rc == DP_ENOTFOUND) {
		dp_error_clear();
		if ((rc = bump(c, kind, name, "create", &rv)) ||
		    (rc = prepare(c, &st,
		                  "INSERT INTO resources(" RESOURCE_COLS
		                  ") VALUES (?, ?, ?, '{}', ?, 1, ?, ?, ?)")))
			return rc;
		sqlite3_bind_text(st, 1, dp_kind_name(kind), -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 2, name, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 3, spec, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 4, meta, -1, SQLITE_STATIC);
		sqlite3_bind_int64(st, 5, rv);
		sqlite3_bind_int64(st, 6, t);
		sqlite3_bind_int64(st, 7, t);
		if (sqlite3_step(st) != SQLITE_DONE)
			rc = db_error(c, "insert");
		sqlite3_finalize(st);
		snprintf(msg, sizeof(msg), "created by %s", c->actor);
		if (!rc && !(rc = audit(c, "create", kind, name, 1, "")))
			rc = event_add(c, kind, name, "Normal", "Created", msg);
		*action = DP_APPLY_CREATED;
		return rc;
	}
	if (rc)
		return rc;
	bool spec_changed = strcmp(old.spec, spec) != 0;
	bool meta_changed = strcmp(old.meta, meta) != 0;
	if (!spec_changed && !meta_changed) {
		*action = DP_APPLY_UNCHANGED;
		goto out;
	}
	if (spec_changed) {
		cJSON *a = cJSON_Parse(old.spec), *b = cJSON_Parse(spec);
		rc = a && b ? dp_resource_check_update(kind, name, a, b)
		            : dp_error_set(DP_ECORRUPT, "%s \"%s\": stored spec does not parse",
		                           dp_kind_lower(kind), name);
		cJSON_Delete(a);
		cJSON_Delete(b);
		if (rc)
			goto out;
	}
	int64_t gen = old.generation + (spec_changed ? 1 : 0);
	if ((rc = bump(c, kind, name, "update", &rv)) ||
	    (rc = prepare(c, &st,
	                  "UPDATE resources SET spec = ?, meta = ?, generation = ?, "
	                  "resource_version = ?, updated_at = ? WHERE kind = ? AND name = ?")))
		goto out;
	sqlite3_bind_text(st, 1, spec, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, meta, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 3, gen);
	sqlite3_bind_int64(st, 4, rv);
	sqlite3_bind_int64(st, 5, t);
	sqlite3_bind_text(st, 6, dp_kind_name(kind), -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 7, name, -1, SQLITE_STATIC);
	if (sqlite3_step(st) != SQLITE_DONE)
		rc = db_error(c, "update");
	sqlite3_finalize(st);
	if (rc)
		goto out;
	const char *what = spec_changed && meta_changed ? "spec and labels changed"
	                   : spec_changed               ? "spec changed"
	                                                : "labels changed";
	snprintf(msg, sizeof(msg), "%s by %s (generation %lld)", what, c->actor, (long long)gen);
	if (!(rc = audit(c, "update", kind, name, gen, what)))
		rc = event_add(c, kind, name, "Normal", "Updated", msg);
	*action = DP_APPLY_CONFIGURED;
out:
	dp_resource_clear(&old);
	return rc;
}

/* A changed policy (or ActionSet, which can change a policy's default
 * methods) must not take away a method a stored schedule runs. Called
 * inside the apply transaction, after the new specs are stored: each
 * schedule outside m that may be affected is checked again against them. */
static int recheck_schedules(dp_catalog *c, const dp_manifest *m)
{
	bool any_actionset = false, any_policy = false;
	for (size_t i = 0; i < m->n; i++) {
		any_actionset |= m->docs[i].kind == DP_KIND_ACTION_SET;
		any_policy |= m->docs[i].kind == DP_KIND_BACKUP_POLICY;
	}
	if (!any_actionset && !any_policy)
		return 0;
	dp_resource *v;
	size_t n;
	int rc = dp_catalog_list(c, DP_KIND_BACKUP_SCHEDULE, &v, &n);
	if (rc)
		return rc;
	struct dp_ref_source src = {lookup_spec, list_actionsets, c};
	for (size_t i = 0; i < n && !rc; i++) {
		bool in_m = false, affected = any_actionset;
		cJSON *spec = cJSON_Parse(v[i].spec);
		const cJSON *pol = cJSON_GetObjectItemCaseSensitive(spec, "backupPolicyName");
		for (size_t j = 0; j < m->n; j++) {
			const struct dp_doc *d = &m->docs[j];
			if (d->kind == DP_KIND_BACKUP_SCHEDULE && strcmp(d->name, v[i].name) == 0)
				in_m = true; /* checked with the manifest */
			if (d->kind == DP_KIND_BACKUP_POLICY && cJSON_IsString(pol) &&
			    strcmp(d->name, pol->valuestring) == 0)
				affected = true;
		}
		if (in_m || !affected || !spec) {
			cJSON_Delete(spec);
			continue;
		}
		/* The stored schedule as a one-document manifest. */
		cJSON *doc = cJSON_CreateObject();
		cJSON_AddStringToObject(doc, "apiVersion", DP_API_VERSION);
		cJSON_AddStringToObject(doc, "kind", "BackupSchedule");
		cJSON_AddStringToObject(cJSON_AddObjectToObject(doc, "metadata"), "name",
		                        v[i].name);
		cJSON_AddItemToObject(doc, "spec", spec);
		char *text = cJSON_PrintUnformatted(doc);
		cJSON_Delete(doc);
		dp_manifest *sm = NULL;
		if (!text)
			rc = dp_error_set(DP_ERROR, "out of memory");
		else if (!(rc = dp_manifest_parse(&sm, text, strlen(text), "catalog")) &&
		         !(rc = dp_manifest_validate(sm)))
			rc = dp_manifest_check_refs(sm, &src);
		if (rc == DP_EUSAGE)
			dp_error_prefix(
			    "this change would break a stored schedule (change or delete "
			    "it first)");
		dp_manifest_free(sm);
		cJSON_free(text);
	}
	dp_resources_free(v, n);
	return rc;
}

int dp_catalog_apply(dp_catalog *c, dp_manifest *m, bool dry_run, dp_apply_action *actions)
{
	int rc;
	if (!m->validated && (rc = dp_manifest_validate(m)))
		return rc;
	if ((rc = exec(c, "BEGIN IMMEDIATE")))
		return rc;
	struct dp_ref_source src = {lookup_spec, list_actionsets, c};
	if ((rc = dp_manifest_check_refs(m, &src)))
		goto out;
	for (size_t i = 0; i < m->n; i++) {
		dp_apply_action a = DP_APPLY_UNCHANGED;
		if ((rc = apply_doc(c, m, i, &a)))
			goto out;
		if (actions)
			actions[i] = a;
	}
	rc = recheck_schedules(c, m);
out:
	if (rc || dry_run) {
		/* Keep the message of the failure, not of the rollback. */
		int code = dp_error_code();
		char msg[1024];
		snprintf(msg, sizeof(msg), "%s", dp_error_last());
		exec(c, "ROLLBACK");
		if (rc)
			dp_error_restore(code, msg);
		return rc;
	}
	return exec(c, "COMMIT");
}

/* ---- delete ---- */

static int first_user(dp_catalog *c, const char *sql, const char *name, char *who, size_t wholen)
{
	sqlite3_stmt *st;
	int rc = prepare(c, &st, sql);
	if (rc)
		return rc;
	sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
	int s = sqlite3_step(st);
	if (s == SQLITE_ROW) {
		const char *kind = (const char *)sqlite3_column_text(st, 0);
		dp_kind k = DP_KIND_BACKUP;
		for (int i = 0; i < DP_KIND_COUNT; i++)
			if (strcmp(kind, dp_kind_name((dp_kind)i)) == 0)
				k = (dp_kind)i;
		snprintf(who, wholen, "%s \"%s\"", dp_kind_lower(k),
		         (const char *)sqlite3_column_text(st, 1));
		rc = 1;
	} else if (s != SQLITE_DONE) {
		rc = db_error(c, "find references");
	}
	sqlite3_finalize(st);
	return rc;
}

static int check_delete(dp_catalog *c, const dp_resource *r)
{
	static const char *const users[DP_KIND_COUNT] = {
	    [DP_KIND_BACKUP_REPO] =
	        "SELECT kind, name FROM resources WHERE kind = 'BackupPolicy' AND "
	        "json_extract(spec, '$.backupRepoName') = ?1 ORDER BY name LIMIT 1",
	    [DP_KIND_ACTION_SET] =
	        "SELECT kind, name FROM resources WHERE kind = 'BackupPolicy' AND EXISTS "
	        "(SELECT 1 FROM json_each(spec, '$.backupMethods') WHERE "
	        "json_extract(value, '$.actionSetName') = ?1) ORDER BY name LIMIT 1",
	    [DP_KIND_BACKUP_POLICY] =
	        "SELECT kind, name FROM resources WHERE kind IN ('BackupSchedule', "
	        "'Backup', 'Restore') AND json_extract(spec, '$.backupPolicyName') = ?1 "
	        "ORDER BY kind, name LIMIT 1",
	    [DP_KIND_BACKUP] = "SELECT kind, name FROM resources WHERE kind = 'Backup' AND "
	                       "json_extract(spec, '$.parentBackupName') = ?1 ORDER BY name "
	                       "LIMIT 1",
	};
	char who[DP_NAME_MAX + 32];
	const char *kl = dp_kind_lower(r->kind);
	if (users[r->kind]) {
		int rc = first_user(c, users[r->kind], r->name, who, sizeof(who));
		if (rc < 0)
			return rc;
		if (rc == 1)
			return dp_error_set(DP_EUSAGE, "%s \"%s\" is used by %s; delete that first",
			                    kl, r->name, who);
	}
	cJSON *status = cJSON_Parse(r->status);
	const cJSON *ph = cJSON_GetObjectItemCaseSensitive(status, "phase");
	char phase[64];
	snprintf(phase, sizeof(phase), "%s", cJSON_IsString(ph) ? ph->valuestring : "");
	cJSON_Delete(status);
	if (r->kind == DP_KIND_BACKUP && phase[0] && strcmp(phase, "New") != 0)
		return dp_error_set(
		    DP_EUSAGE,
		    "backup \"%s\" is %s: deleting it also removes its data from the "
		    "repository, which the controller does ('dp backup delete %s'); "
		    "nothing was deleted",
		    r->name, phase, r->name);
	if (r->kind == DP_KIND_RESTORE && strcmp(phase, "Running") == 0)
		return dp_error_set(DP_EUSAGE, "restore \"%s\" is Running; wait until it ends",
		                    r->name);
	return 0;
}

static int delete_record(dp_catalog *c, dp_kind kind, const char *name, bool checks)
{
	dp_resource r = {0};
	sqlite3_stmt *st = NULL;
	int rc = exec(c, "BEGIN IMMEDIATE");
	if (rc)
		return rc;
	if ((rc = dp_catalog_get(c, kind, name, &r)))
		goto out;
	if (checks && (rc = check_delete(c, &r)))
		goto out;
	const char *sql[] = {"DELETE FROM resources WHERE kind = ?1 AND name = ?2",
	                     "DELETE FROM events WHERE kind = ?1 AND name = ?2"};
	for (int i = 0; i < 2 && !rc; i++) {
		if ((rc = prepare(c, &st, sql[i])))
			break;
		sqlite3_bind_text(st, 1, dp_kind_name(kind), -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 2, name, -1, SQLITE_STATIC);
		if (sqlite3_step(st) != SQLITE_DONE)
			rc = db_error(c, "delete");
		sqlite3_finalize(st);
	}
	int64_t rv;
	if (!rc && !(rc = bump(c, kind, name, "delete", &rv)))
		rc = audit(c, "delete", kind, name, r.generation, checks ? "" : "record removed");
out:
	dp_resource_clear(&r);
	if (rc) {
		int code = dp_error_code();
		char msg[1024];
		snprintf(msg, sizeof(msg), "%s", dp_error_last());
		exec(c, "ROLLBACK");
		dp_error_restore(code, msg);
		return rc;
	}
	return exec(c, "COMMIT");
}

int dp_catalog_delete(dp_catalog *c, dp_kind kind, const char *name)
{
	return delete_record(c, kind, name, true);
}

int dp_catalog_remove(dp_catalog *c, dp_kind kind, const char *name)
{
	return delete_record(c, kind, name, false);
}

/* ---- status ---- */

static void phase_of(const char *json, char *out, size_t outlen)
{
	cJSON *v = cJSON_Parse(json);
	const cJSON *p = cJSON_GetObjectItemCaseSensitive(v, "phase");
	snprintf(out, outlen, "%s", cJSON_IsString(p) ? p->valuestring : "");
	cJSON_Delete(v);
}

int dp_catalog_set_status(dp_catalog *c, dp_kind kind, const char *name, const char *status_json,
                          int64_t expect_rv, int64_t *new_rv)
{
	dp_resource r = {0};
	sqlite3_stmt *st = NULL;
	cJSON *status = cJSON_Parse(status_json);
	char *text = NULL;
	int64_t rv = 0;
	int rc;
	if (!cJSON_IsObject(status)) {
		cJSON_Delete(status);
		return dp_error_set(DP_EUSAGE, "%s \"%s\": status must be a JSON object",
		                    dp_kind_lower(kind), name);
	}
	dp_json_sort(status);
	text = cJSON_PrintUnformatted(status);
	cJSON_Delete(status);
	if (!text)
		return dp_error_set(DP_ERROR, "out of memory");
	if ((rc = exec(c, "BEGIN IMMEDIATE")))
		goto done;
	if ((rc = dp_catalog_get(c, kind, name, &r)))
		goto out;
	if (expect_rv && r.resource_version != expect_rv) {
		rc = dp_error_set(DP_ETRANSIENT,
		                  "%s \"%s\" changed since it was read (version %lld, now %lld); "
		                  "read it again",
		                  dp_kind_lower(kind), name, (long long)expect_rv,
		                  (long long)r.resource_version);
		goto out;
	}
	if ((rc = bump(c, kind, name, "status", &rv)) ||
	    (rc = prepare(c, &st,
	                  "UPDATE resources SET status = ?, resource_version = ?, updated_at = ? "
	                  "WHERE kind = ? AND name = ?")))
		goto out;
	sqlite3_bind_text(st, 1, text, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, rv);
	sqlite3_bind_int64(st, 3, now());
	sqlite3_bind_text(st, 4, dp_kind_name(kind), -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 5, name, -1, SQLITE_STATIC);
	if (sqlite3_step(st) != SQLITE_DONE)
		rc = db_error(c, "update status");
	sqlite3_finalize(st);
	if (rc)
		goto out;
	char before[64], after[64], detail[160];
	phase_of(r.status, before, sizeof(before));
	phase_of(text, after, sizeof(after));
	if (strcmp(before, after) != 0) {
		snprintf(detail, sizeof(detail), "phase %s -> %s", before[0] ? before : "(none)",
		         after[0] ? after : "(none)");
		rc = audit(c, "status", kind, name, r.generation, detail);
	}
out:
	dp_resource_clear(&r);
	if (rc) {
		int code = dp_error_code();
		char msg[1024];
		snprintf(msg, sizeof(msg), "%s", dp_error_last());
		exec(c, "ROLLBACK");
		dp_error_restore(code, msg);
	} else {
		rc = exec(c, "COMMIT");
		if (!rc && new_rv)
			*new_rv = rv;
	}
done:
	cJSON_free(text);
	return rc;
}

/* ---- events and audit ---- */

int dp_catalog_event(dp_catalog *c, dp_kind kind, const char *name, const char *type,
                     const char *reason, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	return event_add(c, kind, name, type, reason, msg);
}

int dp_catalog_events(dp_catalog *c, dp_kind kind, const char *name, dp_event **out, size_t *n)
{
	sqlite3_stmt *st;
	dp_event *v = NULL;
	size_t len = 0, cap = 0;
	*out = NULL;
	*n = 0;
	int rc = prepare(c, &st,
	                 "SELECT id, time, type, reason, message FROM events WHERE kind = ? AND "
	                 "name = ? ORDER BY id");
	if (rc)
		return rc;
	sqlite3_bind_text(st, 1, dp_kind_name(kind), -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, name, -1, SQLITE_STATIC);
	int s;
	while ((s = sqlite3_step(st)) == SQLITE_ROW) {
		if ((rc = dp_array_grow(&v, &cap, len, sizeof(*v))))
			goto out;
		dp_event *e = &v[len];
		memset(e, 0, sizeof(*e));
		e->id = sqlite3_column_int64(st, 0);
		e->time = sqlite3_column_int64(st, 1);
		snprintf(e->type, sizeof(e->type), "%s", (const char *)sqlite3_column_text(st, 2));
		snprintf(e->reason, sizeof(e->reason), "%s",
		         (const char *)sqlite3_column_text(st, 3));
		if (!(e->message = col_text(st, 4))) {
			rc = dp_error_set(DP_ERROR, "out of memory");
			goto out;
		}
		len++;
	}
	if (s != SQLITE_DONE) {
		rc = db_error(c, "read events");
		goto out;
	}
	*out = v;
	*n = len;
	v = NULL;
	len = 0;
out:
	sqlite3_finalize(st);
	dp_events_free(v, len);
	return rc;
}

void dp_events_free(dp_event *v, size_t n)
{
	for (size_t i = 0; v && i < n; i++)
		free(v[i].message);
	free(v);
}

int dp_catalog_audit(dp_catalog *c, int64_t since_id, size_t limit, dp_audit_entry **out, size_t *n)
{
	sqlite3_stmt *st;
	dp_audit_entry *v = NULL;
	size_t len = 0, cap = 0;
	*out = NULL;
	*n = 0;
	int rc =
	    prepare(c, &st,
	            "SELECT id, time, generation, actor, action, kind, name, detail FROM audit "
	            "WHERE id > ? ORDER BY id LIMIT ?");
	if (rc)
		return rc;
	sqlite3_bind_int64(st, 1, since_id);
	sqlite3_bind_int64(st, 2, limit ? (int64_t)limit : -1);
	int s;
	while ((s = sqlite3_step(st)) == SQLITE_ROW) {
		if ((rc = dp_array_grow(&v, &cap, len, sizeof(*v))))
			goto out;
		dp_audit_entry *e = &v[len++];
		e->id = sqlite3_column_int64(st, 0);
		e->time = sqlite3_column_int64(st, 1);
		e->generation = sqlite3_column_int64(st, 2);
		e->actor = col_text(st, 3);
		e->action = col_text(st, 4);
		e->kind = col_text(st, 5);
		e->name = col_text(st, 6);
		e->detail = col_text(st, 7);
		if (!e->actor || !e->action || !e->kind || !e->name || !e->detail) {
			rc = dp_error_set(DP_ERROR, "out of memory");
			goto out;
		}
	}
	if (s != SQLITE_DONE) {
		rc = db_error(c, "read audit log");
		goto out;
	}
	*out = v;
	*n = len;
	v = NULL;
	len = 0;
out:
	sqlite3_finalize(st);
	dp_audit_free(v, len);
	return rc;
}

void dp_audit_free(dp_audit_entry *v, size_t n)
{
	for (size_t i = 0; v && i < n; i++) {
		free(v[i].actor);
		free(v[i].action);
		free(v[i].kind);
		free(v[i].name);
		free(v[i].detail);
	}
	free(v);
}

/* ---- changes ---- */

int dp_catalog_changes(dp_catalog *c, int64_t since_rv, size_t limit, dp_change **out, size_t *n)
{
	sqlite3_stmt *st;
	dp_change *v = NULL;
	size_t len = 0, cap = 0;
	*out = NULL;
	*n = 0;
	int rc = prepare(c, &st,
	                 "SELECT resource_version, time, kind, name, op FROM changes "
	                 "WHERE resource_version > ? ORDER BY resource_version LIMIT ?");
	if (rc)
		return rc;
	sqlite3_bind_int64(st, 1, since_rv);
	sqlite3_bind_int64(st, 2, limit ? (int64_t)limit : -1);
	int s;
	while ((s = sqlite3_step(st)) == SQLITE_ROW) {
		if ((rc = dp_array_grow(&v, &cap, len, sizeof(*v))))
			goto out;
		dp_change *e = &v[len++];
		memset(e, 0, sizeof(*e));
		e->resource_version = sqlite3_column_int64(st, 0);
		e->time = sqlite3_column_int64(st, 1);
		const char *kind = (const char *)sqlite3_column_text(st, 2);
		for (int k = 0; k < DP_KIND_COUNT; k++)
			if (kind && strcmp(kind, dp_kind_name((dp_kind)k)) == 0)
				e->kind = (dp_kind)k;
		snprintf(e->name, sizeof(e->name), "%s", (const char *)sqlite3_column_text(st, 3));
		snprintf(e->op, sizeof(e->op), "%s", (const char *)sqlite3_column_text(st, 4));
	}
	if (s != SQLITE_DONE) {
		rc = db_error(c, "read changes");
		goto out;
	}
	*out = v;
	*n = len;
	v = NULL;
out:
	sqlite3_finalize(st);
	free(v);
	return rc;
}

int dp_catalog_version(dp_catalog *c, int64_t *out)
{
	sqlite3_stmt *st;
	int rc = prepare(c, &st, "SELECT value FROM seq");
	if (rc)
		return rc;
	if (sqlite3_step(st) == SQLITE_ROW)
		*out = sqlite3_column_int64(st, 0);
	else
		rc = db_error(c, "read version");
	sqlite3_finalize(st);
	return rc;
}

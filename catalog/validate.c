/*
 * Validation of manifests: one table of fields per kind (types, required,
 * ranges, enums, defaults), a walker that checks a document against it, and
 * a few rules per kind that a table cannot say (one of posix/s3, unique
 * method names, ...). References between objects are checked in
 * dp_manifest_check_refs, against the manifest and then the catalog.
 *
 * Every message is "<kind> \"<name>\": <field path>: <problem>" (or
 * "<source>: document N: ..." before the kind and name are known), and the
 * first problem stops validation. Validation fills defaults into the tree
 * and leaves canonical JSON text (sorted keys) in each document.
 * Thread safety: none needed; it touches only the manifest given.
 */
#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "dp/cron.h"
#include "dp/error.h"
#include "manifest_int.h"

enum ftype {
	T_STR, /* non-empty string */
	T_NAME, /* a resource name (dp_name_check) */
	T_INT, /* integer in [min, max] */
	T_BOOL,
	T_ENUM, /* one of enums */
	T_DURATION, /* "7d", "1y2mo3w4d5h6m" */
	T_CRON,
	T_TIME, /* RFC 3339 */
	T_PATH, /* absolute path */
	T_WORD, /* [a-z0-9][a-z0-9-]* (engine names) */
	T_URL, /* http:// or https:// */
	T_SECRET, /* {env: NAME} | {file: PATH} */
	T_OBJ, /* object with sub fields */
	T_ARR_OBJ, /* array of objects with sub fields, at least min items */
	T_STRINGS, /* array of strings, at least min items */
	T_ENV, /* [{name, value} | {name, valueFrom: {env|file}}] */
	T_MAP, /* {string: string} */
	T_ANY_STR /* any string, also empty */
};

enum { F_REQ = 1 };

struct field {
	const char *name;
	enum ftype type;
	unsigned flags;
	long min, max;
	const char *const *enums;
	const struct field *sub;
	const char *def; /* default, as JSON text */
};

#define END                                                                                        \
	{                                                                                          \
		NULL, 0, 0, 0, 0, NULL, NULL, NULL                                                 \
	}

static const char *const e_compression[] = {"zstd", "none", NULL};
static const char *const e_uri_style[] = {"path", "virtual", NULL};
static const char *const e_backup_type[] = {"Full", "Incremental", "Continuous", NULL};
static const char *const e_on_error[] = {"Fail", "Continue", NULL};
static const char *const e_retention_policy[] = {"retainLatestBackup", "", NULL};
static const char *const e_deletion_policy[] = {"Delete", "Retain", NULL};

/* BackupRepo */
static const struct field f_posix[] = {{"path", T_PATH, F_REQ}, END};
static const struct field f_s3_cred[] = {
    {"accessKeyIdFrom", T_SECRET, F_REQ},
    {"secretAccessKeyFrom", T_SECRET, F_REQ},
    {"sessionTokenFrom", T_SECRET},
    END,
};
static const struct field f_s3[] = {
    {"endpoint", T_URL},
    {"bucket", T_STR, F_REQ},
    {"region", T_STR},
    {"prefix", T_ANY_STR},
    {"uriStyle", T_ENUM, 0, 0, 0, e_uri_style},
    {"tls", T_BOOL},
    {"credentials", T_OBJ, 0, 0, 0, NULL, f_s3_cred},
    END,
};
static const struct field f_compression[] = {
    {"algorithm", T_ENUM, 0, 0, 0, e_compression, NULL, "\"zstd\""},
    {"level", T_INT, 0, 1, 19, NULL, NULL, "3"},
    END,
};
static const struct field f_encryption[] = {{"passphraseFrom", T_SECRET, F_REQ}, END};
static const struct field f_repo[] = {
    {"posix", T_OBJ, 0, 0, 0, NULL, f_posix},
    {"s3", T_OBJ, 0, 0, 0, NULL, f_s3},
    {"compression", T_OBJ, 0, 0, 0, NULL, f_compression, "{}"},
    {"encryption", T_OBJ, F_REQ, 0, 0, NULL, f_encryption},
    END,
};

/* ActionSet */
static const struct field f_action[] = {
    {"name", T_STR},
    {"command", T_STRINGS, F_REQ, 1},
    {"onError", T_ENUM, 0, 0, 0, e_on_error, NULL, "\"Fail\""},
    {"timeout", T_DURATION},
    END,
};
static const struct field f_sync_progress[] = {
    {"enabled", T_BOOL},
    {"intervalSeconds", T_INT, 0, 1, 3600},
    END,
};
static const struct field f_backup_data[] = {
    {"command", T_STRINGS, F_REQ, 1},
    {"onError", T_ENUM, 0, 0, 0, e_on_error, NULL, "\"Fail\""},
    {"timeout", T_DURATION},
    {"syncProgress", T_OBJ, 0, 0, 0, NULL, f_sync_progress},
    END,
};
static const struct field f_as_backup[] = {
    {"preBackup", T_ARR_OBJ, 0, 0, 0, NULL, f_action},
    {"backupData", T_OBJ, F_REQ, 0, 0, NULL, f_backup_data},
    {"postBackup", T_ARR_OBJ, 0, 0, 0, NULL, f_action},
    {"preDelete", T_OBJ, 0, 0, 0, NULL, f_action},
    END,
};
static const struct field f_as_restore[] = {
    {"prepareData", T_OBJ, 0, 0, 0, NULL, f_action},
    {"postReady", T_ARR_OBJ, 0, 0, 0, NULL, f_action},
    {"baseBackupRequired", T_BOOL},
    END,
};
static const struct field f_actionset[] = {
    {"backupType", T_ENUM, F_REQ, 0, 0, e_backup_type},
    {"backup", T_OBJ, F_REQ, 0, 0, NULL, f_as_backup},
    {"restore", T_OBJ, 0, 0, 0, NULL, f_as_restore},
    {"env", T_ENV},
    END,
};

/* BackupPolicy */
static const struct field f_target[] = {
    {"engine", T_WORD, F_REQ},
    {"host", T_STR},
    {"port", T_INT, 0, 1, 65535},
    {"user", T_STR},
    {"passwordFrom", T_SECRET},
    {"dataDir", T_PATH},
    {"role", T_STR},
    END,
};
static const struct field f_method[] = {
    {"name", T_NAME, F_REQ},
    {"actionSetName", T_NAME},
    {"snapshotVolumes", T_BOOL},
    {"compatibleMethod", T_NAME},
    {"env", T_ENV},
    END,
};
static const struct field f_policy[] = {
    {"backupRepoName", T_NAME, F_REQ},
    {"target", T_OBJ, F_REQ, 0, 0, NULL, f_target},
    {"backupMethods", T_ARR_OBJ, 0, 0, 0, NULL, f_method},
    {"backoffLimit", T_INT, 0, 0, 10, NULL, NULL, "2"},
    {"retentionPolicy", T_ENUM, 0, 0, 0, e_retention_policy},
    END,
};

/* BackupSchedule */
static const struct field f_sched_item[] = {
    {"name", T_NAME},
    {"enabled", T_BOOL, 0, 0, 0, NULL, NULL, "true"},
    {"backupMethod", T_NAME, F_REQ},
    {"cronExpression", T_CRON, F_REQ},
    {"retentionPeriod", T_DURATION, 0, 0, 0, NULL, NULL, "\"7d\""},
    END,
};
static const struct field f_schedule[] = {
    {"backupPolicyName", T_NAME, F_REQ},
    {"startingDeadlineMinutes", T_INT, 0, 0, 1440},
    {"schedules", T_ARR_OBJ, F_REQ, 1, 0, NULL, f_sched_item},
    END,
};

/* Backup */
static const struct field f_backup[] = {
    {"backupPolicyName", T_NAME, F_REQ},
    {"backupMethod", T_NAME, F_REQ},
    {"deletionPolicy", T_ENUM, 0, 0, 0, e_deletion_policy, NULL, "\"Delete\""},
    {"retentionPeriod", T_DURATION},
    {"parentBackupName", T_NAME},
    END,
};

/* Restore */
static const struct field f_restore_backup[] = {{"name", T_NAME, F_REQ}, END};
static const struct field f_restore_target[] = {
    {"dataDir", T_PATH, F_REQ},
    {"port", T_INT, 0, 1, 65535},
    END,
};
static const struct field f_restore[] = {
    {"backup", T_OBJ, 0, 0, 0, NULL, f_restore_backup},
    {"backupPolicyName", T_NAME},
    {"restoreTime", T_TIME},
    {"target", T_OBJ, 0, 0, 0, NULL, f_restore_target},
    {"inPlace", T_BOOL},
    END,
};

static const struct field *const kind_fields[DP_KIND_COUNT] = {
    [DP_KIND_BACKUP_REPO] = f_repo,     [DP_KIND_ACTION_SET] = f_actionset,
    [DP_KIND_BACKUP_POLICY] = f_policy, [DP_KIND_BACKUP_SCHEDULE] = f_schedule,
    [DP_KIND_BACKUP] = f_backup,        [DP_KIND_RESTORE] = f_restore,
};

/* ---- context and messages ---- */

struct vctx {
	char who[DP_NAME_MAX + 64];
	char path[512];
};

static int verr(struct vctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int verr(struct vctx *c, const char *fmt, ...)
{
	char msg[600];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	return dp_error_set(DP_EUSAGE, "%s: %s: %s", c->who, c->path, msg);
}

/* Appends ".name" or "[i]" to the path; returns the old length to restore. */
static size_t push_key(struct vctx *c, const char *key)
{
	size_t len = strlen(c->path);
	snprintf(c->path + len, sizeof(c->path) - len, "%s%s", len ? "." : "", key);
	return len;
}

static size_t push_index(struct vctx *c, int i)
{
	size_t len = strlen(c->path);
	snprintf(c->path + len, sizeof(c->path) - len, "[%d]", i);
	return len;
}

static const char *type_name(const cJSON *v)
{
	if (cJSON_IsString(v))
		return "a string";
	if (cJSON_IsNumber(v))
		return "a number";
	if (cJSON_IsBool(v))
		return "a boolean";
	if (cJSON_IsArray(v))
		return "a list";
	if (cJSON_IsObject(v))
		return "a mapping";
	return "null";
}

/* Field names that carry a secret when given as a plain value. */
static bool secret_like(const char *key)
{
	static const char *const words[] = {"password",  "passphrase", "secret", "token",
	                                    "accesskey", "privatekey", NULL};
	char low[128];
	size_t n = 0;
	for (; key[n] && n < sizeof(low) - 1; n++)
		low[n] = (char)tolower((unsigned char)key[n]);
	low[n] = 0;
	for (int i = 0; words[i]; i++)
		if (strstr(low, words[i]))
			return true;
	return false;
}

static bool env_name_ok(const char *s)
{
	if (!(isalpha((unsigned char)*s) || *s == '_'))
		return false;
	for (; *s; s++)
		if (!(isalnum((unsigned char)*s) || *s == '_'))
			return false;
	return true;
}

static int check_object(struct vctx *c, const struct field *fields, cJSON *obj);

static int check_secret(struct vctx *c, cJSON *v)
{
	if (cJSON_IsString(v) || cJSON_IsNumber(v))
		return verr(c, "secrets are never given inline; use {env: NAME} or {file: PATH}");
	if (!cJSON_IsObject(v))
		return verr(c, "expected {env: NAME} or {file: PATH}, got %s", type_name(v));
	cJSON *env = NULL, *file = NULL;
	for (cJSON *k = v->child; k; k = k->next) {
		if (strcmp(k->string, "env") == 0) {
			env = k;
		} else if (strcmp(k->string, "file") == 0) {
			file = k;
		} else {
			size_t old = push_key(c, k->string);
			int rc = verr(c, "unknown field (known: env, file)");
			c->path[old] = 0;
			return rc;
		}
	}
	if (!env == !file)
		return verr(c, "give exactly one of env: NAME or file: PATH");
	if (env) {
		size_t old = push_key(c, "env");
		int rc = 0;
		if (!cJSON_IsString(env))
			rc = verr(c, "expected an environment variable name, got %s",
			          type_name(env));
		else if (!env_name_ok(env->valuestring))
			rc = verr(c, "\"%s\": not an environment variable name", env->valuestring);
		c->path[old] = 0;
		return rc;
	}
	size_t old = push_key(c, "file");
	int rc = 0;
	if (!cJSON_IsString(file))
		rc = verr(c, "expected a file path, got %s", type_name(file));
	else if (file->valuestring[0] != '/')
		rc = verr(c, "\"%s\": must be an absolute path", file->valuestring);
	c->path[old] = 0;
	return rc;
}

static int check_env(struct vctx *c, cJSON *v)
{
	if (!cJSON_IsArray(v))
		return verr(c, "expected a list of {name, value}, got %s", type_name(v));
	int i = 0;
	for (cJSON *e = v->child; e; e = e->next, i++) {
		size_t old = push_index(c, i);
		int rc = 0;
		if (!cJSON_IsObject(e)) {
			rc = verr(c, "expected {name, value}, got %s", type_name(e));
			goto next;
		}
		cJSON *name = NULL, *value = NULL, *from = NULL;
		for (cJSON *k = e->child; k; k = k->next) {
			if (strcmp(k->string, "name") == 0)
				name = k;
			else if (strcmp(k->string, "value") == 0)
				value = k;
			else if (strcmp(k->string, "valueFrom") == 0)
				from = k;
			else {
				size_t o2 = push_key(c, k->string);
				rc = verr(c, "unknown field (known: name, value, valueFrom)");
				c->path[o2] = 0;
				goto next;
			}
		}
		if (!name) {
			size_t o2 = push_key(c, "name");
			rc = verr(c, "required field is missing");
			c->path[o2] = 0;
			goto next;
		}
		if (!cJSON_IsString(name) || !env_name_ok(name->valuestring)) {
			size_t o2 = push_key(c, "name");
			rc = verr(c, "not an environment variable name");
			c->path[o2] = 0;
			goto next;
		}
		if (!value == !from) {
			rc = verr(c, "give exactly one of value or valueFrom");
			goto next;
		}
		if (value) {
			size_t o2 = push_key(c, "value");
			if (!cJSON_IsString(value) && !cJSON_IsNumber(value) &&
			    !cJSON_IsBool(value))
				rc = verr(c, "expected a string, got %s", type_name(value));
			else if (secret_like(name->valuestring))
				rc = verr(c,
				          "\"%s\" holds a secret, which is never given inline; use "
				          "valueFrom: {env: NAME} or {file: PATH}",
				          name->valuestring);
			c->path[o2] = 0;
		} else {
			size_t o2 = push_key(c, "valueFrom");
			rc = check_secret(c, from);
			c->path[o2] = 0;
		}
	next:
		c->path[old] = 0;
		if (rc)
			return rc;
	}
	return 0;
}

static int check_value(struct vctx *c, const struct field *f, cJSON *v)
{
	int64_t dummy;
	if (f->type == T_DURATION && cJSON_IsNumber(v))
		return verr(c, "%g: a duration needs a unit, as in 7d, 12h or 30m", v->valuedouble);
	switch (f->type) {
	case T_STR:
	case T_ANY_STR:
	case T_NAME:
	case T_ENUM:
	case T_DURATION:
	case T_CRON:
	case T_TIME:
	case T_PATH:
	case T_WORD:
	case T_URL:
		if (!cJSON_IsString(v))
			return verr(c, "expected a string, got %s", type_name(v));
		if (strlen(v->valuestring) > 4096)
			return verr(c, "longer than 4096 characters");
		break;
	default:
		break;
	}
	const char *s = cJSON_IsString(v) ? v->valuestring : "";
	switch (f->type) {
	case T_STR:
		if (!*s)
			return verr(c, "must not be empty");
		return 0;
	case T_ANY_STR:
		return 0;
	case T_NAME:
		if (dp_name_check(s))
			return verr(c, "\"%s\": %s", s, dp_error_last());
		return 0;
	case T_WORD:
		for (const char *p = s; *p; p++)
			if (!(islower((unsigned char)*p) || isdigit((unsigned char)*p) ||
			      (*p == '-' && p > s)))
				return verr(c, "\"%s\": use lowercase letters, digits and '-'", s);
		if (!*s)
			return verr(c, "must not be empty");
		return 0;
	case T_PATH:
		if (s[0] != '/')
			return verr(c, "\"%s\": must be an absolute path", s);
		return 0;
	case T_URL:
		if (strncmp(s, "http://", 7) != 0 && strncmp(s, "https://", 8) != 0)
			return verr(c, "\"%s\": must start with http:// or https://", s);
		return 0;
	case T_ENUM:
		for (int i = 0; f->enums[i]; i++)
			if (strcmp(s, f->enums[i]) == 0)
				return 0;
		{
			char list[256] = "";
			size_t len = 0;
			for (int i = 0; f->enums[i]; i++) {
				int n = snprintf(list + len, sizeof(list) - len, "%s%s%s%s",
				                 i ? ", " : "", f->enums[i][0] ? "" : "\"",
				                 f->enums[i], f->enums[i][0] ? "" : "\"");
				if (n < 0 || (size_t)n >= sizeof(list) - len)
					break;
				len += (size_t)n;
			}
			return verr(c, "\"%s\": must be one of %s", s, list);
		}
	case T_DURATION:
		if (dp_duration_parse(&dummy, s))
			return verr(c, "\"%s\": %s", s, dp_error_last());
		return 0;
	case T_CRON: {
		dp_cron cr;
		if (dp_cron_parse(&cr, s))
			return verr(c, "\"%s\": %s", s, dp_error_last());
		return 0;
	}
	case T_TIME:
		if (dp_time_parse(&dummy, s))
			return verr(c, "\"%s\": %s", s, dp_error_last());
		return 0;
	case T_INT: {
		if (!cJSON_IsNumber(v))
			return verr(c, "expected an integer, got %s", type_name(v));
		double d = v->valuedouble;
		if (d != floor(d))
			return verr(c, "%g: expected an integer", d);
		if (d < (double)f->min || d > (double)f->max)
			return verr(c, "%.0f: out of range (%ld-%ld)", d, f->min, f->max);
		return 0;
	}
	case T_BOOL:
		if (!cJSON_IsBool(v))
			return verr(c, "expected true or false, got %s", type_name(v));
		return 0;
	case T_SECRET:
		return check_secret(c, v);
	case T_OBJ:
		if (!cJSON_IsObject(v))
			return verr(c, "expected a mapping, got %s", type_name(v));
		return check_object(c, f->sub, v);
	case T_ARR_OBJ: {
		if (!cJSON_IsArray(v))
			return verr(c, "expected a list, got %s", type_name(v));
		if (cJSON_GetArraySize(v) < f->min)
			return verr(c, "needs at least %ld item%s", f->min, f->min == 1 ? "" : "s");
		int i = 0;
		for (cJSON *e = v->child; e; e = e->next, i++) {
			size_t old = push_index(c, i);
			int rc = cJSON_IsObject(e)
			             ? check_object(c, f->sub, e)
			             : verr(c, "expected a mapping, got %s", type_name(e));
			c->path[old] = 0;
			if (rc)
				return rc;
		}
		return 0;
	}
	case T_STRINGS: {
		if (!cJSON_IsArray(v))
			return verr(c, "expected a list of strings, got %s", type_name(v));
		if (cJSON_GetArraySize(v) < f->min)
			return verr(c, "needs at least %ld item%s", f->min, f->min == 1 ? "" : "s");
		int i = 0;
		for (cJSON *e = v->child; e; e = e->next, i++) {
			if (cJSON_IsString(e))
				continue;
			size_t old = push_index(c, i);
			int rc = verr(c, "expected a string, got %s", type_name(e));
			c->path[old] = 0;
			return rc;
		}
		return 0;
	}
	case T_ENV:
		return check_env(c, v);
	case T_MAP:
		if (!cJSON_IsObject(v))
			return verr(c, "expected a mapping of strings, got %s", type_name(v));
		for (cJSON *e = v->child; e; e = e->next) {
			if (cJSON_IsString(e))
				continue;
			size_t old = push_key(c, e->string);
			int rc = verr(c, "expected a string, got %s", type_name(e));
			c->path[old] = 0;
			return rc;
		}
		return 0;
	}
	return 0;
}

static int unknown_field(struct vctx *c, const struct field *fields, const char *key)
{
	if (secret_like(key)) {
		/* Point at the reference field for it: "<key>From", else the
		 * only reference field of this object. */
		char from[160];
		const struct field *exact = NULL, *only = NULL;
		int refs = 0;
		snprintf(from, sizeof(from), "%sFrom", key);
		for (const struct field *f = fields; f->name; f++) {
			if (f->type != T_SECRET)
				continue;
			refs++;
			only = f;
			if (strcasecmp(f->name, from) == 0)
				exact = f;
		}
		const struct field *ref = exact ? exact : refs == 1 ? only : NULL;
		if (ref)
			return verr(c,
			            "secrets are never given inline; use %s: {env: NAME} or "
			            "{file: PATH}",
			            ref->name);
		return verr(c, "secrets are never given inline; use {env: NAME} or {file: PATH} "
		               "references");
	}
	char list[512] = "";
	size_t len = 0;
	for (const struct field *f = fields; f->name; f++) {
		int n = snprintf(list + len, sizeof(list) - len, "%s%s", len ? ", " : "", f->name);
		if (n < 0 || (size_t)n >= sizeof(list) - len)
			break;
		len += (size_t)n;
	}
	return verr(c, "unknown field (known: %s)", list);
}

static int check_object(struct vctx *c, const struct field *fields, cJSON *obj)
{
	int rc = 0;
	/* Unknown fields first; null values count as absent. */
	for (cJSON *k = obj->child, *next; k; k = next) {
		next = k->next;
		const struct field *f = fields;
		while (f->name && strcmp(f->name, k->string) != 0)
			f++;
		if (!f->name) {
			size_t old = push_key(c, k->string);
			rc = unknown_field(c, fields, k->string);
			c->path[old] = 0;
			return rc;
		}
		if (cJSON_IsNull(k))
			cJSON_DeleteItemFromObjectCaseSensitive(obj, k->string);
	}
	for (const struct field *f = fields; f->name; f++) {
		cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, f->name);
		size_t old = push_key(c, f->name);
		if (!v && (f->flags & F_REQ)) {
			rc = verr(c, "required field is missing");
		} else if (!v && f->def) {
			cJSON *d = cJSON_Parse(f->def);
			if (!d) {
				rc = dp_error_set(DP_ERROR, "out of memory");
			} else {
				cJSON_AddItemToObject(obj, f->name, d);
				rc = check_value(c, f, d);
			}
		} else if (v) {
			rc = check_value(c, f, v);
		}
		c->path[old] = 0;
		if (rc)
			return rc;
	}
	return 0;
}

/* ---- rules a table cannot say ---- */

static int at(struct vctx *c, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int at(struct vctx *c, const char *path, const char *fmt, ...)
{
	char msg[600];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	return dp_error_set(DP_EUSAGE, "%s: %s: %s", c->who, path, msg);
}

static const char *str_of(const cJSON *obj, const char *key)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
	return cJSON_IsString(v) ? v->valuestring : NULL;
}

static int rules_repo(struct vctx *c, cJSON *spec)
{
	bool posix = cJSON_GetObjectItemCaseSensitive(spec, "posix") != NULL;
	bool s3 = cJSON_GetObjectItemCaseSensitive(spec, "s3") != NULL;
	if (posix == s3)
		return at(c, "spec", "give exactly one storage: posix {path} or s3 {bucket, ...}");
	return 0;
}

static int rules_policy(struct vctx *c, cJSON *spec)
{
	cJSON *methods = cJSON_GetObjectItemCaseSensitive(spec, "backupMethods");
	int i = 0;
	char path[128];
	for (cJSON *m = methods ? methods->child : NULL; m; m = m->next, i++) {
		const char *name = str_of(m, "name");
		snprintf(path, sizeof(path), "spec.backupMethods[%d]", i);
		int j = 0;
		for (cJSON *o = methods->child; o != m; o = o->next, j++)
			if (strcmp(str_of(o, "name"), name) == 0)
				return at(c, path, "method \"%s\" is defined twice (also at [%d])",
				          name, j);
		bool as = str_of(m, "actionSetName") != NULL;
		bool snap = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(m, "snapshotVolumes"));
		if (as == snap)
			return at(c, path,
			          "give exactly one of actionSetName or snapshotVolumes: true");
		const char *compat = str_of(m, "compatibleMethod");
		if (compat) {
			bool found = false;
			for (cJSON *o = methods->child; o; o = o->next)
				if (o != m && strcmp(str_of(o, "name"), compat) == 0)
					found = true;
			if (!found)
				return at(
				    c, path,
				    "compatibleMethod \"%s\" is not another method of this policy",
				    compat);
		}
	}
	return 0;
}

static int rules_schedule(struct vctx *c, cJSON *spec)
{
	cJSON *list = cJSON_GetObjectItemCaseSensitive(spec, "schedules");
	int i = 0;
	char path[128];
	for (cJSON *s = list->child; s; s = s->next, i++) {
		if (!str_of(s, "name"))
			cJSON_AddItemToObject(s, "name",
			                      cJSON_CreateString(str_of(s, "backupMethod")));
		const char *name = str_of(s, "name");
		snprintf(path, sizeof(path), "spec.schedules[%d]", i);
		int j = 0;
		for (cJSON *o = list->child; o != s; o = o->next, j++)
			if (strcmp(str_of(o, "name"), name) == 0)
				return at(
				    c, path,
				    "schedule \"%s\" is defined twice (also at [%d]); give each a "
				    "distinct name",
				    name, j);
	}
	return 0;
}

static int rules_restore(struct vctx *c, cJSON *spec)
{
	bool backup = cJSON_GetObjectItemCaseSensitive(spec, "backup") != NULL;
	bool policy = str_of(spec, "backupPolicyName") != NULL;
	if (backup == policy)
		return at(c, "spec",
		          "give exactly one of backup: {name: B} or backupPolicyName (with "
		          "restoreTime)");
	if (policy && !str_of(spec, "restoreTime"))
		return at(c, "spec.restoreTime",
		          "required with backupPolicyName (the time to restore to)");
	bool target = cJSON_GetObjectItemCaseSensitive(spec, "target") != NULL;
	bool in_place = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(spec, "inPlace"));
	if (target == in_place)
		return at(c, "spec",
		          "give exactly one of target: {dataDir, port} or inPlace: true");
	return 0;
}

/* ---- documents ---- */

static int check_metadata(struct vctx *c, struct dp_doc *d, cJSON *meta)
{
	static const char *const ignored[] = {
	    "generation", "resourceVersion", "creationTimestamp", "updateTimestamp", "uid", NULL};
	static const struct field f_meta[] = {
	    {"name", T_NAME, F_REQ},
	    {"labels", T_MAP},
	    {"annotations", T_MAP},
	    END,
	};
	for (int i = 0; ignored[i]; i++)
		cJSON_DeleteItemFromObjectCaseSensitive(meta, ignored[i]);
	if (cJSON_GetObjectItemCaseSensitive(meta, "namespace"))
		return at(c, "metadata.namespace", "dp has no namespaces; remove this field");
	snprintf(c->path, sizeof(c->path), "metadata");
	int rc = check_object(c, f_meta, meta);
	if (rc)
		return rc;
	cJSON *out = cJSON_CreateObject();
	const char *keys[] = {"annotations", "labels"};
	for (int i = 0; out && i < 2; i++) {
		cJSON *v = cJSON_GetObjectItemCaseSensitive(meta, keys[i]);
		if (v && v->child)
			cJSON_AddItemToObject(out, keys[i], cJSON_Duplicate(v, 1));
	}
	dp_json_sort(out);
	d->meta = out ? cJSON_PrintUnformatted(out) : NULL;
	cJSON_Delete(out);
	if (!d->meta)
		return dp_error_set(DP_ERROR, "out of memory");
	return 0;
}

static int validate_doc(dp_manifest *m, struct dp_doc *d)
{
	struct vctx c = {{0}, {0}};
	cJSON *root = d->root;
	snprintf(c.who, sizeof(c.who), "%s: document %d", m->source, d->index);

	/* Who: kind and name first, so every later message can name them. */
	const cJSON *kind = cJSON_GetObjectItemCaseSensitive(root, "kind");
	if (!kind)
		return at(&c, "kind", "required field is missing");
	if (!cJSON_IsString(kind))
		return at(&c, "kind", "expected a string, got %s", type_name(kind));
	int k = 0;
	while (k < DP_KIND_COUNT && strcmp(kind->valuestring, dp_kind_name((dp_kind)k)) != 0)
		k++;
	if (k == DP_KIND_COUNT)
		return at(&c, "kind",
		          "\"%s\": unknown kind (use BackupRepo, ActionSet, BackupPolicy, "
		          "BackupSchedule, Backup or Restore)",
		          kind->valuestring);
	d->kind = (dp_kind)k;
	cJSON *meta = cJSON_GetObjectItemCaseSensitive(root, "metadata");
	if (!meta)
		return at(&c, "metadata.name", "required field is missing");
	if (!cJSON_IsObject(meta))
		return at(&c, "metadata", "expected a mapping, got %s", type_name(meta));
	const char *name = str_of(meta, "name");
	if (name && dp_name_check(name) == 0)
		snprintf(c.who, sizeof(c.who), "%s \"%s\"", dp_kind_lower(d->kind), name);

	for (cJSON *f = root->child; f; f = f->next) {
		if (strcmp(f->string, "apiVersion") && strcmp(f->string, "kind") &&
		    strcmp(f->string, "metadata") && strcmp(f->string, "spec") &&
		    strcmp(f->string, "status"))
			return at(&c, f->string,
			          "unknown field (known: apiVersion, kind, metadata, "
			          "spec)");
	}
	const char *api = str_of(root, "apiVersion");
	if (!cJSON_GetObjectItemCaseSensitive(root, "apiVersion"))
		return at(&c, "apiVersion", "required field is missing (use %s)", DP_API_VERSION);
	if (!api || strcmp(api, DP_API_VERSION) != 0)
		return at(&c, "apiVersion", "%s%s%s: use %s", api ? "\"" : "",
		          api ? api : "not a string", api ? "\"" : "", DP_API_VERSION);
	int rc = check_metadata(&c, d, meta);
	if (rc)
		return rc;
	if (!(d->name = dp_strdup(name)))
		return dp_error_set(DP_ERROR, "out of memory");
	cJSON *spec = cJSON_GetObjectItemCaseSensitive(root, "spec");
	if (!spec)
		return at(&c, "spec", "required field is missing");
	if (!cJSON_IsObject(spec))
		return at(&c, "spec", "expected a mapping, got %s", type_name(spec));
	snprintf(c.path, sizeof(c.path), "spec");
	if ((rc = check_object(&c, kind_fields[d->kind], spec)))
		return rc;
	switch (d->kind) {
	case DP_KIND_BACKUP_REPO:
		rc = rules_repo(&c, spec);
		break;
	case DP_KIND_BACKUP_POLICY:
		rc = rules_policy(&c, spec);
		break;
	case DP_KIND_BACKUP_SCHEDULE:
		rc = rules_schedule(&c, spec);
		break;
	case DP_KIND_RESTORE:
		rc = rules_restore(&c, spec);
		break;
	default:
		break;
	}
	if (rc)
		return rc;
	dp_json_sort(spec);
	d->spec_tree = spec;
	if (!(d->spec = cJSON_PrintUnformatted(spec)))
		return dp_error_set(DP_ERROR, "out of memory");
	return 0;
}

int dp_manifest_validate(dp_manifest *m)
{
	for (size_t i = 0; i < m->n; i++) {
		struct dp_doc *d = &m->docs[i];
		free(d->name);
		free(d->spec);
		free(d->meta);
		d->name = d->spec = d->meta = NULL;
		int rc = validate_doc(m, d);
		if (rc)
			return rc;
		for (size_t j = 0; j < i; j++)
			if (m->docs[j].kind == d->kind && strcmp(m->docs[j].name, d->name) == 0)
				return dp_error_set(
				    DP_EUSAGE,
				    "%s \"%s\": defined twice in %s (documents %d and %d)",
				    dp_kind_lower(d->kind), d->name, m->source, m->docs[j].index,
				    d->index);
	}
	m->validated = true;
	return 0;
}

/* ---- references ---- */

struct ref {
	cJSON *spec; /* borrowed (manifest) or owned (lookup) */
	bool owned;
};

static int find_ref(dp_manifest *m, const struct dp_ref_source *src, dp_kind kind, const char *name,
                    struct ref *out)
{
	out->spec = NULL;
	out->owned = false;
	for (size_t i = 0; i < m->n; i++)
		if (m->docs[i].kind == kind && strcmp(m->docs[i].name, name) == 0) {
			out->spec = m->docs[i].spec_tree;
			return 0;
		}
	if (!src || !src->get)
		return DP_ENOTFOUND;
	int rc = src->get(src->arg, kind, name, &out->spec);
	out->owned = rc == 0;
	return rc;
}

static void ref_free(struct ref *r)
{
	if (r->owned)
		cJSON_Delete(r->spec);
	r->spec = NULL;
	r->owned = false;
}

static int need(struct vctx *c, dp_manifest *m, const struct dp_ref_source *src, const char *path,
                dp_kind kind, const char *name, struct ref *out)
{
	int rc = find_ref(m, src, kind, name, out);
	if (rc == DP_ENOTFOUND)
		return at(c, path, "%s \"%s\" not found (apply it first, or in the same file)",
		          dp_kind_lower(kind), name);
	return rc;
}

static int cmp_by_name(const void *a, const void *b)
{
	const cJSON *x = *(const cJSON *const *)a, *y = *(const cJSON *const *)b;
	return strcmp(str_of(x, "name"), str_of(y, "name"));
}

cJSON *dp_policy_methods(const cJSON *policy, const cJSON *actionsets)
{
	const cJSON *explicit = cJSON_GetObjectItemCaseSensitive(policy, "backupMethods");
	if (explicit && explicit->child)
		return cJSON_Duplicate(explicit, 1);
	cJSON *out = cJSON_CreateArray();
	const char *engine = str_of(cJSON_GetObjectItemCaseSensitive(policy, "target"), "engine");
	size_t n = (size_t)cJSON_GetArraySize(actionsets), k = 0;
	const cJSON **sorted = calloc(n ? n : 1, sizeof(*sorted));
	if (!out || !sorted) {
		cJSON_Delete(out);
		free(sorted);
		return NULL;
	}
	for (const cJSON *a = actionsets ? actionsets->child : NULL; a; a = a->next)
		if (str_of(a, "name"))
			sorted[k++] = a;
	qsort(sorted, k, sizeof(*sorted), cmp_by_name);
	for (size_t i = 0; engine && i < k; i++) {
		const cJSON *labels = cJSON_GetObjectItemCaseSensitive(sorted[i], "labels");
		const char *e = str_of(labels, DP_LABEL_ENGINE);
		if (!e || strcmp(e, engine) != 0)
			continue;
		const char *name = str_of(labels, DP_LABEL_METHOD);
		const char *type = str_of(sorted[i], "backupType");
		if (!name && type)
			name = strcmp(type, "Full") == 0          ? "full"
			       : strcmp(type, "Incremental") == 0 ? "incremental"
			       : strcmp(type, "Continuous") == 0  ? "wal"
			                                          : NULL;
		if (!name)
			continue;
		bool dup = false;
		for (const cJSON *x = out->child; x; x = x->next)
			if (strcmp(str_of(x, "name"), name) == 0)
				dup = true;
		if (dup)
			continue;
		cJSON *mth = cJSON_CreateObject();
		if (!mth ||
		    !cJSON_AddStringToObject(mth, "actionSetName", str_of(sorted[i], "name")) ||
		    !cJSON_AddStringToObject(mth, "name", name)) {
			cJSON_Delete(mth);
			cJSON_Delete(out);
			free(sorted);
			return NULL;
		}
		cJSON_AddItemToArray(out, mth);
	}
	free(sorted);
	return out;
}

/* Every ActionSet the manifest and src know, as dp_policy_methods wants
 * them; the manifest's version of one wins. */
static int all_actionsets(dp_manifest *m, const struct dp_ref_source *src, cJSON **out)
{
	cJSON *from_src = NULL, *all = cJSON_CreateArray();
	int rc = 0;
	*out = NULL;
	if (!all)
		return dp_error_set(DP_ERROR, "out of memory");
	for (size_t i = 0; i < m->n; i++) {
		struct dp_doc *d = &m->docs[i];
		if (d->kind != DP_KIND_ACTION_SET)
			continue;
		const cJSON *meta = cJSON_GetObjectItemCaseSensitive(d->root, "metadata");
		const cJSON *labels = cJSON_GetObjectItemCaseSensitive(meta, "labels");
		cJSON *a = cJSON_CreateObject();
		cJSON_AddItemToArray(all, a);
		cJSON_AddStringToObject(a, "name", d->name);
		cJSON_AddItemToObject(a, "labels",
		                      labels ? cJSON_Duplicate(labels, 1) : cJSON_CreateObject());
		cJSON_AddStringToObject(a, "backupType", str_of(d->spec_tree, "backupType"));
	}
	if (src && src->actionsets && (rc = src->actionsets(src->arg, &from_src))) {
		cJSON_Delete(all);
		return rc;
	}
	while (from_src && from_src->child) {
		cJSON *a = cJSON_DetachItemViaPointer(from_src, from_src->child);
		bool dup = false;
		for (const cJSON *x = all->child; x; x = x->next)
			if (strcmp(str_of(x, "name"), str_of(a, "name")) == 0)
				dup = true;
		if (dup)
			cJSON_Delete(a);
		else
			cJSON_AddItemToArray(all, a);
	}
	cJSON_Delete(from_src);
	*out = all;
	return 0;
}

/* The policy must offer the method: one it lists, or one of its engine's
 * default methods if it lists none. */
static int need_method(struct vctx *c, dp_manifest *m, const struct dp_ref_source *src,
                       const char *path, const char *policy_name, const cJSON *policy,
                       const char *method)
{
	cJSON *sets = NULL, *methods = NULL;
	const cJSON *explicit = cJSON_GetObjectItemCaseSensitive(policy, "backupMethods");
	int rc = 0;
	if (!(explicit && explicit->child) && (rc = all_actionsets(m, src, &sets)))
		return rc;
	if (!(methods = dp_policy_methods(policy, sets))) {
		rc = dp_error_set(DP_ERROR, "out of memory");
		goto out;
	}
	char names[512] = "";
	size_t len = 0;
	for (cJSON *x = methods->child; x; x = x->next) {
		const char *n = str_of(x, "name");
		if (n && strcmp(n, method) == 0)
			goto out;
		int w = snprintf(names + len, sizeof(names) - len, "%s%s", len ? ", " : "",
		                 n ? n : "?");
		if (w > 0 && (size_t)w < sizeof(names) - len)
			len += (size_t)w;
	}
	if (!methods->child) {
		const char *engine =
		    str_of(cJSON_GetObjectItemCaseSensitive(policy, "target"), "engine");
		rc = at(c, path,
		        "\"%s\": backuppolicy \"%s\" lists no backupMethods and no ActionSet "
		        "is labelled %s: %s",
		        method, policy_name, DP_LABEL_ENGINE, engine ? engine : "?");
	} else {
		rc = at(c, path, "\"%s\": backuppolicy \"%s\" has no such method (it has: %s)",
		        method, policy_name, names);
	}
out:
	cJSON_Delete(sets);
	cJSON_Delete(methods);
	return rc;
}

static int check_doc_refs(dp_manifest *m, struct dp_doc *d, const struct dp_ref_source *src)
{
	struct vctx c = {{0}, {0}};
	struct ref r = {0};
	char path[128];
	int rc = 0;
	cJSON *spec = d->spec_tree;
	snprintf(c.who, sizeof(c.who), "%s \"%s\"", dp_kind_lower(d->kind), d->name);
	switch (d->kind) {
	case DP_KIND_BACKUP_POLICY: {
		rc = need(&c, m, src, "spec.backupRepoName", DP_KIND_BACKUP_REPO,
		          str_of(spec, "backupRepoName"), &r);
		ref_free(&r);
		cJSON *methods = cJSON_GetObjectItemCaseSensitive(spec, "backupMethods");
		int i = 0;
		for (cJSON *x = methods ? methods->child : NULL; !rc && x; x = x->next, i++) {
			const char *as = str_of(x, "actionSetName");
			if (!as)
				continue;
			snprintf(path, sizeof(path), "spec.backupMethods[%d].actionSetName", i);
			rc = need(&c, m, src, path, DP_KIND_ACTION_SET, as, &r);
			ref_free(&r);
		}
		break;
	}
	case DP_KIND_BACKUP_SCHEDULE: {
		const char *pn = str_of(spec, "backupPolicyName");
		if ((rc = need(&c, m, src, "spec.backupPolicyName", DP_KIND_BACKUP_POLICY, pn, &r)))
			break;
		cJSON *list = cJSON_GetObjectItemCaseSensitive(spec, "schedules");
		int i = 0;
		for (cJSON *s = list->child; !rc && s; s = s->next, i++) {
			snprintf(path, sizeof(path), "spec.schedules[%d].backupMethod", i);
			rc = need_method(&c, m, src, path, pn, r.spec, str_of(s, "backupMethod"));
		}
		ref_free(&r);
		break;
	}
	case DP_KIND_BACKUP: {
		const char *pn = str_of(spec, "backupPolicyName");
		if ((rc = need(&c, m, src, "spec.backupPolicyName", DP_KIND_BACKUP_POLICY, pn, &r)))
			break;
		rc = need_method(&c, m, src, "spec.backupMethod", pn, r.spec,
		                 str_of(spec, "backupMethod"));
		ref_free(&r);
		const char *parent = str_of(spec, "parentBackupName");
		if (!rc && parent) {
			if (strcmp(parent, d->name) == 0)
				rc = at(&c, "spec.parentBackupName",
				        "a backup cannot be its own parent");
			else
				rc = need(&c, m, src, "spec.parentBackupName", DP_KIND_BACKUP,
				          parent, &r);
			const char *ppol = rc ? NULL : str_of(r.spec, "backupPolicyName");
			if (ppol && strcmp(ppol, pn) != 0)
				rc = at(&c, "spec.parentBackupName",
				        "backup \"%s\" belongs to backuppolicy \"%s\", not \"%s\"",
				        parent, ppol, pn);
			ref_free(&r);
		}
		break;
	}
	case DP_KIND_RESTORE: {
		cJSON *b = cJSON_GetObjectItemCaseSensitive(spec, "backup");
		if (b)
			rc = need(&c, m, src, "spec.backup.name", DP_KIND_BACKUP, str_of(b, "name"),
			          &r);
		else
			rc = need(&c, m, src, "spec.backupPolicyName", DP_KIND_BACKUP_POLICY,
			          str_of(spec, "backupPolicyName"), &r);
		ref_free(&r);
		break;
	}
	default:
		break;
	}
	return rc;
}

int dp_manifest_check_refs(dp_manifest *m, const struct dp_ref_source *src)
{
	if (!m->validated)
		return dp_error_set(DP_ERROR, "manifest not validated");
	for (size_t i = 0; i < m->n; i++) {
		int rc = check_doc_refs(m, &m->docs[i], src);
		if (rc)
			return rc;
	}
	return 0;
}

static bool same_string(const cJSON *a, const cJSON *b, const char *key)
{
	const char *x = str_of(a, key), *y = str_of(b, key);
	if (!x || !y)
		return x == y;
	return strcmp(x, y) == 0;
}

int dp_resource_check_update(dp_kind kind, const char *name, const cJSON *old_spec,
                             const cJSON *new_spec)
{
	static const char *const backup_fixed[] = {"backupPolicyName", "backupMethod",
	                                           "parentBackupName", NULL};
	if (kind == DP_KIND_BACKUP) {
		for (int i = 0; backup_fixed[i]; i++) {
			if (same_string(old_spec, new_spec, backup_fixed[i]))
				continue;
			const char *was = str_of(old_spec, backup_fixed[i]);
			return dp_error_set(
			    DP_EUSAGE,
			    "backup \"%s\": spec.%s: cannot be changed (it is \"%s\"); "
			    "create another backup instead",
			    name, backup_fixed[i], was ? was : "");
		}
	}
	if (kind == DP_KIND_RESTORE && !cJSON_Compare(old_spec, new_spec, 1))
		return dp_error_set(
		    DP_EUSAGE,
		    "restore \"%s\": spec: a restore cannot be changed; delete it and "
		    "create another",
		    name);
	return 0;
}

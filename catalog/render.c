/*
 * Output of resources: the full object as JSON or YAML (what `dp get -o
 * json|yaml` prints and `dp apply` accepts back), kubectl-like tables, and
 * `dp describe` text. Pure functions over dp_resource values; thread-safe.
 */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dp/catalog.h"
#include "dp/cron.h"
#include "dp/error.h"
#include "manifest_int.h"

static cJSON *parse_or_empty(const char *text)
{
	cJSON *v = text ? cJSON_Parse(text) : NULL;
	return v ? v : cJSON_CreateObject();
}

static cJSON *resource_tree(const dp_resource *r)
{
	char t[32];
	cJSON *o = cJSON_CreateObject();
	cJSON *meta = parse_or_empty(r->meta);
	if (!o || !meta) {
		cJSON_Delete(o);
		cJSON_Delete(meta);
		return NULL;
	}
	cJSON_AddStringToObject(o, "apiVersion", DP_API_VERSION);
	cJSON_AddStringToObject(o, "kind", dp_kind_name(r->kind));
	cJSON *m = cJSON_CreateObject();
	cJSON_AddStringToObject(m, "name", r->name);
	for (cJSON *c = meta->child; c; c = c->next)
		cJSON_AddItemToObject(m, c->string, cJSON_Duplicate(c, 1));
	cJSON_Delete(meta);
	cJSON_AddNumberToObject(m, "generation", (double)r->generation);
	snprintf(t, sizeof(t), "%" PRId64, r->resource_version);
	cJSON_AddStringToObject(m, "resourceVersion", t);
	dp_time_format(t, sizeof(t), r->created);
	cJSON_AddStringToObject(m, "creationTimestamp", t);
	dp_time_format(t, sizeof(t), r->updated);
	cJSON_AddStringToObject(m, "updateTimestamp", t);
	cJSON_AddItemToObject(o, "metadata", m);
	cJSON_AddItemToObject(o, "spec", parse_or_empty(r->spec));
	cJSON_AddItemToObject(o, "status", parse_or_empty(r->status));
	return o;
}

static cJSON *list_tree(const dp_resource *v, size_t n)
{
	cJSON *o = cJSON_CreateObject();
	cJSON *items = cJSON_CreateArray();
	if (!o || !items) {
		cJSON_Delete(o);
		cJSON_Delete(items);
		return NULL;
	}
	cJSON_AddStringToObject(o, "apiVersion", DP_API_VERSION);
	cJSON_AddStringToObject(o, "kind", "List");
	for (size_t i = 0; i < n; i++)
		cJSON_AddItemToArray(items, resource_tree(&v[i]));
	cJSON_AddItemToObject(o, "items", items);
	return o;
}

static int print_json(dp_buf *out, cJSON *tree, bool pretty)
{
	if (!tree)
		return dp_error_set(DP_ERROR, "out of memory");
	char *s = pretty ? cJSON_Print(tree) : cJSON_PrintUnformatted(tree);
	cJSON_Delete(tree);
	if (!s)
		return dp_error_set(DP_ERROR, "out of memory");
	int rc = dp_buf_appendf(out, "%s\n", s);
	cJSON_free(s);
	return rc;
}

static int print_yaml(dp_buf *out, cJSON *tree)
{
	if (!tree)
		return dp_error_set(DP_ERROR, "out of memory");
	int rc = dp_json_to_yaml(out, tree, 0);
	cJSON_Delete(tree);
	return rc;
}

int dp_resource_json(dp_buf *out, const dp_resource *r, bool pretty)
{
	return print_json(out, resource_tree(r), pretty);
}

int dp_resource_yaml(dp_buf *out, const dp_resource *r)
{
	return print_yaml(out, resource_tree(r));
}

int dp_resource_list_json(dp_buf *out, const dp_resource *v, size_t n, bool pretty)
{
	return print_json(out, list_tree(v, n), pretty);
}

int dp_resource_list_yaml(dp_buf *out, const dp_resource *v, size_t n)
{
	return print_yaml(out, list_tree(v, n));
}

/* ---- label selectors ---- */

int dp_resource_match_labels(const dp_resource *r, const char *selector, bool *out)
{
	cJSON *meta = parse_or_empty(r->meta);
	const cJSON *labels = cJSON_GetObjectItemCaseSensitive(meta, "labels");
	char term[512];
	const char *p = selector;
	int rc = 0;
	*out = true;
	while (*p && !rc) {
		size_t n = strcspn(p, ",");
		if (n == 0 || n >= sizeof(term)) {
			rc = dp_error_set(DP_EUSAGE, "bad label selector \"%s\"", selector);
			break;
		}
		memcpy(term, p, n);
		term[n] = 0;
		p += n + (p[n] == ',');
		bool neg = false, exists_only = false;
		char *key = term, *val = NULL, *eq = strchr(term, '=');
		if (eq) {
			if (eq > term && eq[-1] == '!') {
				neg = true;
				eq[-1] = 0;
			}
			*eq = 0;
			val = eq + 1;
			if (*val == '=') /* k==v */
				val++;
		} else {
			exists_only = true;
			if (*key == '!') {
				neg = true;
				key++;
			}
		}
		if (!*key) {
			rc = dp_error_set(DP_EUSAGE, "bad label selector \"%s\"", selector);
			break;
		}
		const cJSON *v = cJSON_GetObjectItemCaseSensitive(labels, key);
		bool hit =
		    exists_only ? v != NULL : cJSON_IsString(v) && strcmp(v->valuestring, val) == 0;
		if (hit == neg)
			*out = false;
	}
	cJSON_Delete(meta);
	return rc;
}

/* ---- tables ---- */

#define MAX_COLS 16

struct table {
	int ncols;
	size_t rows, cap;
	char **cells; /* rows * ncols, owned */
	size_t width[MAX_COLS];
};

static int table_add(struct table *t, const char *const *row)
{
	if (t->rows == t->cap) {
		size_t cap = t->cap ? t->cap * 2 : 16;
		char **c = realloc(t->cells, cap * (size_t)t->ncols * sizeof(*c));
		if (!c)
			return dp_error_set(DP_ERROR, "out of memory");
		t->cells = c;
		t->cap = cap;
	}
	for (int i = 0; i < t->ncols; i++) {
		const char *s = row[i] && row[i][0] ? row[i] : "-";
		char *d = dp_strdup(s);
		if (!d)
			return dp_error_set(DP_ERROR, "out of memory");
		t->cells[t->rows * (size_t)t->ncols + (size_t)i] = d;
		if (strlen(s) > t->width[i])
			t->width[i] = strlen(s);
	}
	t->rows++;
	return 0;
}

static int table_print(dp_buf *out, struct table *t)
{
	int rc = 0;
	for (size_t r = 0; r < t->rows && !rc; r++) {
		for (int i = 0; i < t->ncols && !rc; i++) {
			const char *s = t->cells[r * (size_t)t->ncols + (size_t)i];
			if (i == t->ncols - 1)
				rc = dp_buf_appendf(out, "%s\n", s);
			else
				rc = dp_buf_appendf(out, "%-*s   ", (int)t->width[i], s);
		}
	}
	return rc;
}

static void table_free(struct table *t)
{
	for (size_t i = 0; i < t->rows * (size_t)t->ncols; i++)
		free(t->cells[i]);
	free(t->cells);
}

static const char *get_str(const cJSON *o, const char *key)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
	return cJSON_IsString(v) ? v->valuestring : "";
}

static const cJSON *get(const cJSON *o, const char *key)
{
	return cJSON_GetObjectItemCaseSensitive(o, key);
}

/* Bytes as "512 B", "1.5 KiB", "20.0 GiB"; "" if absent. */
static void fmt_size(char *out, size_t outlen, const cJSON *v)
{
	static const char *units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
	double b;
	out[0] = 0;
	if (cJSON_IsNumber(v))
		b = v->valuedouble;
	else if (cJSON_IsString(v) && v->valuestring[0])
		b = strtod(v->valuestring, NULL);
	else
		return;
	int u = 0;
	while (b >= 1024 && u < 5) {
		b /= 1024;
		u++;
	}
	if (u == 0)
		snprintf(out, outlen, "%.0f B", b);
	else
		snprintf(out, outlen, "%.1f %s", b, units[u]);
}

static void fmt_duration(char *out, size_t outlen, const cJSON *status)
{
	const cJSON *d = get(status, "duration");
	int64_t a, b;
	out[0] = 0;
	if (cJSON_IsNumber(d)) {
		dp_duration_format(out, outlen, (int64_t)llround(d->valuedouble));
	} else if (cJSON_IsString(d)) {
		snprintf(out, outlen, "%s", d->valuestring);
	} else if (dp_time_parse(&a, get_str(status, "startTimestamp")) == 0 &&
	           dp_time_parse(&b, get_str(status, "completionTimestamp")) == 0) {
		dp_duration_format(out, outlen, b - a);
	}
	dp_error_clear();
}

static void list_names(char *out, size_t outlen, const cJSON *arr, const char *key,
                       const char *key2)
{
	size_t len = 0;
	out[0] = 0;
	for (const cJSON *x = arr ? arr->child : NULL; x; x = x->next) {
		const char *a = get_str(x, key);
		const char *b = key2 ? get_str(x, key2) : "";
		int n = snprintf(out + len, outlen - len, "%s%s%s%s", len ? "," : "", a,
		                 b[0] ? "=" : "", b);
		if (n < 0 || (size_t)n >= outlen - len)
			break;
		len += (size_t)n;
	}
}

/* One row with every column; the table keeps the first ncols (narrow or
 * wide). */
static int row_for(struct table *t, const dp_resource *r)
{
	cJSON *spec = parse_or_empty(r->spec), *status = parse_or_empty(r->status);
	char created[32], a[512], b[512], c[64], d[64];
	const char *row[MAX_COLS] = {0};
	int rc;
	dp_time_format(created, sizeof(created), r->created);
	const char *phase = get_str(status, "phase");
	row[0] = r->name;
	switch (r->kind) {
	case DP_KIND_BACKUP_REPO: {
		const cJSON *posix = get(spec, "posix"), *s3 = get(spec, "s3");
		if (posix)
			snprintf(a, sizeof(a), "%s", get_str(posix, "path"));
		else
			snprintf(a, sizeof(a), "s3://%s/%s", get_str(s3, "bucket"),
			         get_str(s3, "prefix"));
		const cJSON *comp = get(spec, "compression");
		const cJSON *lvl = get(comp, "level");
		snprintf(c, sizeof(c), "%s%s%.0f", get_str(comp, "algorithm"),
		         cJSON_IsNumber(lvl) ? ":" : "",
		         cJSON_IsNumber(lvl) ? lvl->valuedouble : 0.0);
		const char *cols[] = {r->name, posix ? "posix" : "s3",           a, phase, created,
		                      c,       s3 ? get_str(s3, "endpoint") : ""};
		memcpy(row, cols, sizeof(cols));
		break;
	}
	case DP_KIND_ACTION_SET: {
		const cJSON *bd = get(get(spec, "backup"), "backupData");
		const cJSON *cmd = get(bd, "command");
		a[0] = 0;
		size_t len = 0;
		for (const cJSON *x = cmd ? cmd->child : NULL; x; x = x->next) {
			int n = snprintf(a + len, sizeof(a) - len, "%s%s", len ? " " : "",
			                 cJSON_IsString(x) ? x->valuestring : "");
			if (n < 0 || (size_t)n >= sizeof(a) - len)
				break;
			len += (size_t)n;
		}
		if (strlen(a) > 60)
			memcpy(a + 57, "...", 4);
		const char *cols[] = {r->name, get_str(spec, "backupType"), phase, created, a};
		memcpy(row, cols, sizeof(cols));
		break;
	}
	case DP_KIND_BACKUP_POLICY: {
		const cJSON *target = get(spec, "target");
		list_names(a, sizeof(a), get(spec, "backupMethods"), "name", NULL);
		const cJSON *port = get(target, "port");
		snprintf(b, sizeof(b), "%s%s%.0f", get_str(target, "host"),
		         cJSON_IsNumber(port) ? ":" : "",
		         cJSON_IsNumber(port) ? port->valuedouble : 0.0);
		if (!cJSON_IsNumber(port) && !get_str(target, "host")[0])
			b[0] = 0;
		const char *cols[] = {r->name,
		                      get_str(spec, "backupRepoName"),
		                      get_str(target, "engine"),
		                      a[0] ? a : "(engine defaults)",
		                      phase,
		                      created,
		                      b,
		                      get_str(target, "dataDir")};
		memcpy(row, cols, sizeof(cols));
		break;
	}
	case DP_KIND_BACKUP_SCHEDULE: {
		a[0] = 0;
		size_t len = 0;
		const cJSON *list = get(spec, "schedules");
		for (const cJSON *x = list ? list->child : NULL; x; x = x->next) {
			int n = snprintf(a + len, sizeof(a) - len, "%s%s@%s%s", len ? ", " : "",
			                 get_str(x, "backupMethod"), get_str(x, "cronExpression"),
			                 cJSON_IsFalse(get(x, "enabled")) ? " (disabled)" : "");
			if (n < 0 || (size_t)n >= sizeof(a) - len)
				break;
			len += (size_t)n;
		}
		const cJSON *dl = get(spec, "startingDeadlineMinutes");
		snprintf(c, sizeof(c), "%s", "");
		if (cJSON_IsNumber(dl))
			snprintf(c, sizeof(c), "%.0fm", dl->valuedouble);
		const char *cols[] = {r->name, get_str(spec, "backupPolicyName"), a, phase, created,
		                      c};
		memcpy(row, cols, sizeof(cols));
		break;
	}
	case DP_KIND_BACKUP: {
		fmt_size(a, sizeof(a), get(status, "totalSize"));
		fmt_size(b, sizeof(b), get(status, "storedSize"));
		fmt_duration(c, sizeof(c), status);
		const char *exp = get_str(status, "expiration");
		if (!exp[0] && !get(spec, "retentionPeriod") && phase[0])
			exp = "never";
		snprintf(d, sizeof(d), "%s", exp);
		const char *cols[] = {r->name,
		                      get_str(spec, "backupPolicyName"),
		                      get_str(spec, "backupMethod"),
		                      phase,
		                      a,
		                      b,
		                      c,
		                      created,
		                      d,
		                      get_str(status, "backupRepoName"),
		                      get_str(spec, "deletionPolicy"),
		                      get_str(status, "completionTimestamp"),
		                      get_str(spec, "parentBackupName")};
		memcpy(row, cols, sizeof(cols));
		break;
	}
	case DP_KIND_RESTORE: {
		const cJSON *bk = get(spec, "backup");
		const cJSON *target = get(spec, "target");
		if (bk)
			snprintf(a, sizeof(a), "%s", get_str(bk, "name"));
		else
			snprintf(a, sizeof(a), "policy:%s", get_str(spec, "backupPolicyName"));
		if (target)
			snprintf(b, sizeof(b), "%s", get_str(target, "dataDir"));
		else
			snprintf(b, sizeof(b), "in place");
		fmt_duration(c, sizeof(c), status);
		const char *cols[] = {r->name, a,      get_str(spec, "restoreTime"), b, phase,
		                      c,       created};
		memcpy(row, cols, sizeof(cols));
		break;
	}
	default:
		break;
	}
	rc = table_add(t, row);
	cJSON_Delete(spec);
	cJSON_Delete(status);
	return rc;
}

static const struct {
	int narrow, wide;
	const char *head[MAX_COLS];
} headers[DP_KIND_COUNT] = {
    [DP_KIND_BACKUP_REPO] =
        {5, 7, {"NAME", "STORAGE", "LOCATION", "STATUS", "CREATED", "COMPRESSION", "ENDPOINT"}},
    [DP_KIND_ACTION_SET] = {4, 5, {"NAME", "BACKUP-TYPE", "STATUS", "CREATED", "COMMAND"}},
    [DP_KIND_BACKUP_POLICY] =
        {6, 8, {"NAME", "REPO", "ENGINE", "METHODS", "STATUS", "CREATED", "TARGET", "DATA-DIR"}},
    [DP_KIND_BACKUP_SCHEDULE] =
        {5, 6, {"NAME", "POLICY", "SCHEDULES", "STATUS", "CREATED", "STARTING-DEADLINE"}},
    [DP_KIND_BACKUP] = {9,
                        13,
                        {"NAME", "POLICY", "METHOD", "STATUS", "TOTAL-SIZE", "STORED", "DURATION",
                         "CREATED", "EXPIRES", "REPO", "DELETION-POLICY", "COMPLETED", "PARENT"}},
    [DP_KIND_RESTORE] =
        {7, 7, {"NAME", "BACKUP", "RESTORE-TIME", "TARGET", "STATUS", "DURATION", "CREATED"}},
};

int dp_resource_table(dp_buf *out, dp_kind kind, const dp_resource *v, size_t n, bool wide)
{
	struct table t = {0};
	int rc;
	t.ncols = wide ? headers[kind].wide : headers[kind].narrow;
	if ((rc = table_add(&t, headers[kind].head)))
		goto out;
	for (size_t i = 0; i < n && !rc; i++)
		rc = row_for(&t, &v[i]);
	if (!rc)
		rc = table_print(out, &t);
out:
	table_free(&t);
	return rc;
}

/* ---- describe ---- */

/* "Next Runs:" of a BackupSchedule: each enabled schedule's next fire time
 * after now (UTC). */
static int next_runs(dp_buf *out, const cJSON *spec, int64_t now)
{
	const cJSON *list = get(spec, "schedules");
	int rc = dp_buf_appendf(out, "Next Runs:\n");
	for (const cJSON *x = list ? list->child : NULL; x && !rc; x = x->next) {
		char when[32] = "never";
		dp_cron cron;
		int64_t t;
		if (cJSON_IsFalse(get(x, "enabled")))
			snprintf(when, sizeof(when), "disabled");
		else if (dp_cron_parse(&cron, get_str(x, "cronExpression")) == 0 &&
		         dp_cron_next(&cron, now, &t) == 0)
			dp_time_format(when, sizeof(when), t);
		dp_error_clear();
		rc = dp_buf_appendf(out, "  %s (%s, %s): %s\n", get_str(x, "name"),
		                    get_str(x, "backupMethod"), get_str(x, "cronExpression"), when);
	}
	return rc;
}

int dp_resource_describe(dp_buf *out, const dp_resource *r, const dp_event *ev, size_t nev)
{
	char created[32], updated[32];
	cJSON *meta = parse_or_empty(r->meta), *spec = parse_or_empty(r->spec),
	      *status = parse_or_empty(r->status);
	int rc = 0;
	dp_time_format(created, sizeof(created), r->created);
	dp_time_format(updated, sizeof(updated), r->updated);
	rc = dp_buf_appendf(out,
	                    "Name:              %s\nKind:              %s\n"
	                    "API Version:       %s\n",
	                    r->name, dp_kind_name(r->kind), DP_API_VERSION);
	const char *sect[] = {"labels", "annotations"};
	const char *title[] = {"Labels:            ", "Annotations:       "};
	for (int s = 0; s < 2 && !rc; s++) {
		const cJSON *m = get(meta, sect[s]);
		rc = dp_buf_appendf(out, "%s", title[s]);
		if (!m || !m->child)
			rc = rc || dp_buf_appendf(out, "<none>\n");
		for (const cJSON *x = m ? m->child : NULL; x && !rc; x = x->next)
			rc = dp_buf_appendf(out, "%s%s=%s\n",
			                    x == m->child ? "" : "                   ", x->string,
			                    cJSON_IsString(x) ? x->valuestring : "");
	}
	if (!rc)
		rc = dp_buf_appendf(out,
		                    "Generation:        %" PRId64 "\nResource Version:  %" PRId64
		                    "\nCreated:           %s\nUpdated:           %s\nSpec:\n",
		                    r->generation, r->resource_version, created, updated);
	if (!rc)
		rc = dp_json_to_yaml(out, spec, 2);
	if (!rc)
		rc = dp_buf_appendf(out, "Status:\n");
	if (!rc)
		rc = status->child ? dp_json_to_yaml(out, status, 2)
		                   : dp_buf_appendf(out, "  <none>\n");
	if (!rc && r->kind == DP_KIND_BACKUP_SCHEDULE)
		rc = next_runs(out, spec, (int64_t)time(NULL));
	if (!rc)
		rc = dp_buf_appendf(out, "Events:\n");
	if (!rc && nev == 0)
		rc = dp_buf_appendf(out, "  <none>\n");
	if (!rc && nev) {
		struct table t = {0};
		t.ncols = 4;
		const char *head[] = {"TIME", "TYPE", "REASON", "MESSAGE"};
		rc = table_add(&t, head);
		for (size_t i = 0; i < nev && !rc; i++) {
			char when[32];
			dp_time_format(when, sizeof(when), ev[i].time);
			const char *row[] = {when, ev[i].type, ev[i].reason, ev[i].message};
			rc = table_add(&t, row);
		}
		for (size_t i = 0; i < t.rows && !rc; i++) {
			rc = dp_buf_appendf(out, "  ");
			for (int j = 0; j < 4 && !rc; j++) {
				const char *s = t.cells[i * 4 + (size_t)j];
				rc = j == 3 ? dp_buf_appendf(out, "%s\n", s)
				            : dp_buf_appendf(out, "%-*s   ", (int)t.width[j], s);
			}
		}
		table_free(&t);
	}
	cJSON_Delete(meta);
	cJSON_Delete(spec);
	cJSON_Delete(status);
	return rc ? (rc < 0 ? rc : DP_ERROR) : 0;
}

/*
 * Backup reconciler: New -> Running -> Completed | Failed; Deleting.
 *
 * New: resolves policy -> method -> ActionSet -> repository (which must be
 * Ready), waits while another non-continuous backup of the same policy runs,
 * then records the plan in status.actions (preBackup..., backupData,
 * postBackup...) and goes Running. Running: one worker per action, in
 * order (ctl_actions_step); the backupData worker's info file
 * (DP_BACKUP_INFO_FILE) and events fill totalSize, storedSize, timeRange,
 * extras and progress. A continuous backup (ActionSet backupType
 * Continuous) stays Running: its worker keeps archiving and refreshes the
 * recoverable window (DP_ARCHIVE_INTERVAL); it is retried up to backoffLimit
 * when it dies. Completed: expiration = completion + retentionPeriod, and
 * the record is written, encrypted, into the repository as
 * catalog/NAME.json (with its policy), so `dp catalog import` can rebuild it.
 *
 * Deleting (dp_ctl_backup_delete, or GC): children first (cascade), stop a
 * live worker, run the ActionSet's preDelete, then with deletionPolicy
 * Delete remove the snapshots named NAME, the WAL archive wal/NAME/ and the
 * catalog copy, and prune under the repository's exclusive lock; Retain
 * keeps the data (and the copy, so an import brings the record back).
 * Finally the record leaves the catalog.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ctl_int.h"
#include "dp/backend.h"
#include "dp/cron.h"
#include "dp/error.h"
#include "dp/log.h"
#include "dp/resource.h"

/* ---- creating ---- */

int ctl_apply_doc(dp_ctl *c, cJSON *doc);
int ctl_apply_doc(dp_ctl *c, cJSON *doc)
{
	char *text = cJSON_PrintUnformatted(doc);
	dp_manifest *m = NULL;
	if (!text)
		return dp_error_set(DP_ERROR, "out of memory");
	int rc = dp_manifest_parse(&m, text, strlen(text), "dp");
	if (!rc && !(rc = dp_manifest_validate(m)))
		rc = dp_catalog_apply(c->cat, m, false, NULL);
	dp_manifest_free(m);
	free(text);
	return rc;
}

static bool is_continuous_method(dp_ctl *c, const cJSON *method)
{
	ctl_res as;
	if (!js(method, "actionSetName") ||
	    ctl_load(c, DP_KIND_ACTION_SET, js(method, "actionSetName"), &as) != 0) {
		dp_error_clear();
		return false;
	}
	bool cont =
	    js(as.spec, "backupType") && strcmp(js(as.spec, "backupType"), "Continuous") == 0;
	ctl_res_free(&as);
	return cont;
}

/* One continuous backup per policy and method at a time: a second archiver
 * would take the database's archive_command from the first. */
static int continuous_active(dp_ctl *c, const char *policy, const char *method)
{
	dp_resource *v = NULL;
	size_t n = 0;
	int rc = dp_catalog_list(c->cat, DP_KIND_BACKUP, &v, &n);
	for (size_t i = 0; !rc && i < n; i++) {
		cJSON *sp = cJSON_Parse(v[i].spec), *st = cJSON_Parse(v[i].status);
		const char *ph = js(st, "phase");
		if (js(sp, "backupPolicyName") && strcmp(js(sp, "backupPolicyName"), policy) == 0 &&
		    js(sp, "backupMethod") && strcmp(js(sp, "backupMethod"), method) == 0 &&
		    (!ph || strcmp(ph, "New") == 0 || strcmp(ph, "Running") == 0))
			rc =
			    dp_error_set(DP_EEXIST,
			                 "backup \"%s\" already runs method \"%s\" of backuppolicy "
			                 "\"%s\" (continuous): stop it first (dp backup stop %s)",
			                 v[i].name, method, policy, v[i].name);
		cJSON_Delete(sp);
		cJSON_Delete(st);
	}
	dp_resources_free(v, n);
	return rc;
}

int dp_ctl_backup_create(dp_ctl *c, const dp_ctl_backup_req *req, char *name_out, size_t name_len)
{
	char method[DP_NAME_MAX + 1] = "", name[DP_NAME_MAX + 1], stamp[32];
	int rc = 0;
	cJSON *m = NULL;
	if (!req->policy)
		return dp_error_set(DP_EUSAGE, "no policy: give --policy NAME");
	if (req->method) {
		snprintf(method, sizeof(method), "%s", req->method);
	} else {
		dp_buf b = {0};
		if ((rc = dp_catalog_policy_methods(c->cat, req->policy, &b)) ||
		    (rc = dp_buf_append(&b, "", 1))) {
			dp_buf_free(&b);
			return rc;
		}
		cJSON *arr = cJSON_Parse((const char *)b.data);
		dp_buf_free(&b);
		for (cJSON *x = arr ? arr->child : NULL; x; x = x->next)
			if (js(x, "name") && strcmp(js(x, "name"), "full") == 0)
				snprintf(method, sizeof(method), "full");
		for (cJSON *x = arr ? arr->child : NULL; !method[0] && x; x = x->next)
			if (js(x, "name") && !is_continuous_method(c, x))
				snprintf(method, sizeof(method), "%s", js(x, "name"));
		cJSON_Delete(arr);
		if (!method[0])
			return dp_error_set(DP_EUSAGE,
			                    "backuppolicy \"%s\" has no backup method to run: give "
			                    "--method, or list backupMethods in the policy",
			                    req->policy);
	}
	if ((rc = ctl_policy_method(c, req->policy, method, &m)))
		return rc;
	bool cont = is_continuous_method(c, m);
	cJSON_Delete(m);
	if (cont && (rc = continuous_active(c, req->policy, method)))
		return rc;
	if (req->name) {
		snprintf(name, sizeof(name), "%s", req->name);
	} else {
		ctl_stamp(dp_ctl_now(c), stamp, sizeof(stamp));
		snprintf(name, sizeof(name), "%s-%s-%s", req->policy, method, stamp);
	}
	dp_resource ex = {0};
	if (dp_catalog_get(c->cat, DP_KIND_BACKUP, name, &ex) == 0) {
		dp_resource_clear(&ex);
		return dp_error_set(DP_EEXIST, "backup \"%s\" already exists", name);
	}
	dp_error_clear();
	cJSON *doc = cJSON_CreateObject();
	cJSON_AddStringToObject(doc, "apiVersion", DP_API_VERSION);
	cJSON_AddStringToObject(doc, "kind", "Backup");
	cJSON *meta = cJSON_AddObjectToObject(doc, "metadata");
	cJSON_AddStringToObject(meta, "name", name);
	cJSON *labels = cJSON_AddObjectToObject(meta, "labels");
	cJSON_AddStringToObject(labels, "dataprotection.dp.io/backup-policy", req->policy);
	cJSON_AddStringToObject(labels, "dataprotection.dp.io/backup-method", method);
	if (req->schedule) {
		cJSON_AddStringToObject(labels, DP_LABEL_SCHEDULE, req->schedule);
		cJSON_AddStringToObject(labels, "dataprotection.dp.io/autobackup", "true");
	}
	cJSON *spec = cJSON_AddObjectToObject(doc, "spec");
	cJSON_AddStringToObject(spec, "backupPolicyName", req->policy);
	cJSON_AddStringToObject(spec, "backupMethod", method);
	if (req->deletion_policy)
		cJSON_AddStringToObject(spec, "deletionPolicy", req->deletion_policy);
	if (req->retention_period)
		cJSON_AddStringToObject(spec, "retentionPeriod", req->retention_period);
	if (req->parent)
		cJSON_AddStringToObject(spec, "parentBackupName", req->parent);
	rc = ctl_apply_doc(c, doc);
	cJSON_Delete(doc);
	if (!rc && name_out)
		snprintf(name_out, name_len, "%s", name);
	return rc;
}

/* ---- helpers ---- */

static bool phase_is(const cJSON *status, const char *p)
{
	const char *ph = js(status, "phase");
	return ph && strcmp(ph, p) == 0;
}

static bool continuous(const cJSON *status)
{
	return js(status, "backupType") && strcmp(js(status, "backupType"), "Continuous") == 0;
}

/* Another backup of the same policy that runs and is not continuous. */
static int policy_busy(dp_ctl *c, const char *policy, const char *self, char *who, size_t wl)
{
	dp_resource *v = NULL;
	size_t n = 0;
	int rc = dp_catalog_list(c->cat, DP_KIND_BACKUP, &v, &n);
	if (rc)
		return rc;
	int busy = 0;
	for (size_t i = 0; i < n && !busy; i++) {
		if (strcmp(v[i].name, self) == 0)
			continue;
		cJSON *sp = cJSON_Parse(v[i].spec), *st = cJSON_Parse(v[i].status);
		if (js(sp, "backupPolicyName") && strcmp(js(sp, "backupPolicyName"), policy) == 0 &&
		    phase_is(st, "Running") && !continuous(st)) {
			busy = 1;
			snprintf(who, wl, "%s", v[i].name);
		}
		cJSON_Delete(sp);
		cJSON_Delete(st);
	}
	dp_resources_free(v, n);
	return busy;
}

/* A Restore of the policy's database that is running: 1 and its name
 * ("restore/NAME") in who. */
static int policy_restoring(dp_ctl *c, const char *policy, char *who, size_t wl)
{
	dp_resource *v = NULL;
	size_t n = 0;
	int rc = dp_catalog_list(c->cat, DP_KIND_RESTORE, &v, &n);
	if (rc)
		return rc;
	int busy = 0;
	for (size_t i = 0; i < n && !busy; i++) {
		cJSON *st = cJSON_Parse(v[i].status);
		if (phase_is(st, "Running") && js(st, "backupPolicyName") &&
		    strcmp(js(st, "backupPolicyName"), policy) == 0 &&
		    cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(st, "inPlace"))) {
			busy = 1;
			snprintf(who, wl, "restore/%s", v[i].name);
		}
		cJSON_Delete(st);
	}
	dp_resources_free(v, n);
	return busy;
}

/* The newest Completed backup of policy+method (for DP_PARENT_BACKUP_NAME). */
static void previous_completed(dp_ctl *c, const char *policy, const char *method, const char *self,
                               char *out, size_t outlen)
{
	dp_resource *v = NULL;
	size_t n = 0;
	int64_t best = -1;
	out[0] = 0;
	if (dp_catalog_list(c->cat, DP_KIND_BACKUP, &v, &n) != 0) {
		dp_error_clear();
		return;
	}
	for (size_t i = 0; i < n; i++) {
		if (strcmp(v[i].name, self) == 0)
			continue;
		cJSON *sp = cJSON_Parse(v[i].spec), *st = cJSON_Parse(v[i].status);
		if (js(sp, "backupPolicyName") && strcmp(js(sp, "backupPolicyName"), policy) == 0 &&
		    js(sp, "backupMethod") && strcmp(js(sp, "backupMethod"), method) == 0 &&
		    phase_is(st, "Completed") && jtime(st, "completionTimestamp") > best) {
			best = jtime(st, "completionTimestamp");
			snprintf(out, outlen, "%s", v[i].name);
		}
		cJSON_Delete(sp);
		cJSON_Delete(st);
	}
	dp_resources_free(v, n);
}

static cJSON *read_json_file(const char *path)
{
	FILE *f = fopen(path, "r");
	if (!f)
		return NULL;
	dp_buf b = {0};
	char buf[4096];
	size_t got;
	while ((got = fread(buf, 1, sizeof(buf), f)) > 0 && b.len < (1 << 20))
		dp_buf_append(&b, buf, got);
	fclose(f);
	dp_buf_append(&b, "", 1);
	cJSON *v = b.data ? cJSON_Parse((const char *)b.data) : NULL;
	dp_buf_free(&b);
	return v;
}

/* The last progress event of a job's events file, and the sums of the
 * size and stored bytes of its result events (every stream the job pushed:
 * the backup's size when the method writes no info file). */
static cJSON *last_progress(dp_ctl *c, const char *job, uint64_t *size, uint64_t *stored,
                            int *results)
{
	char p[PATH_MAX + 600];
	*size = *stored = 0;
	*results = 0;
	c->rt->path(c->rt, job, "events", p, sizeof(p));
	FILE *f = fopen(p, "r");
	if (!f)
		return NULL;
	char line[4096];
	cJSON *last = NULL;
	while (fgets(line, sizeof(line), f)) {
		cJSON *e = cJSON_Parse(line);
		const char *ev = js(e, "event");
		if (ev && strcmp(ev, "progress") == 0) {
			cJSON_Delete(last);
			last = e;
			continue;
		}
		if (ev && strcmp(ev, "result") == 0 && jnum(e, "size", -1) >= 0) {
			*size += (uint64_t)jnum(e, "size", 0);
			*stored += (uint64_t)jnum(e, "stored", 0);
			(*results)++;
		}
		cJSON_Delete(e);
	}
	fclose(f);
	return last;
}

/* Info file and progress of the backupData action into status. */
static bool ingest(dp_ctl *c, cJSON *status)
{
	cJSON *actions = cJSON_GetObjectItemCaseSensitive(status, "actions");
	bool changed = false;
	for (cJSON *a = actions ? actions->child : NULL; a; a = a->next) {
		if (!js(a, "type") || strcmp(js(a, "type"), "backupData") != 0 || !js(a, "job"))
			continue;
		char id[600], p[PATH_MAX + 700];
		ctl_action_job(a, id, sizeof(id));
		c->rt->path(c->rt, id, "info", p, sizeof(p));
		cJSON *info = read_json_file(p);
		static const char *const keys[] = {"totalSize", "storedSize", "timeRange",
		                                   "extras",    "snapshotId", NULL};
		for (int i = 0; info && keys[i]; i++) {
			cJSON *v = cJSON_GetObjectItemCaseSensitive(info, keys[i]);
			if (!v)
				continue;
			cJSON *old = cJSON_GetObjectItemCaseSensitive(status, keys[i]);
			if (old && cJSON_Compare(old, v, 1))
				continue;
			cJSON_DeleteItemFromObjectCaseSensitive(status, keys[i]);
			cJSON_AddItemToObject(status, keys[i], cJSON_Duplicate(v, 1));
			changed = true;
		}
		bool has_size = info && cJSON_GetObjectItemCaseSensitive(info, "totalSize");
		cJSON_Delete(info);
		uint64_t size, stored;
		int results;
		cJSON *pg = last_progress(c, id, &size, &stored, &results);
		if (results && !has_size) {
			char num[32];
			snprintf(num, sizeof(num), "%llu", (unsigned long long)size);
			if (!js(status, "totalSize") || strcmp(js(status, "totalSize"), num)) {
				jset_str(status, "totalSize", num);
				changed = true;
			}
			snprintf(num, sizeof(num), "%llu", (unsigned long long)stored);
			if (!js(status, "storedSize") || strcmp(js(status, "storedSize"), num)) {
				jset_str(status, "storedSize", num);
				changed = true;
			}
		}
		if (pg) {
			cJSON *pr = cJSON_CreateObject();
			cJSON_AddNumberToObject(pr, "done", (double)jnum(pg, "done", 0));
			cJSON_AddNumberToObject(pr, "stored", (double)jnum(pg, "stored", 0));
			cJSON_AddNumberToObject(pr, "total", (double)jnum(pg, "total", 0));
			cJSON *old = cJSON_GetObjectItemCaseSensitive(status, "progress");
			if (!old || !cJSON_Compare(old, pr, 1)) {
				cJSON_DeleteItemFromObjectCaseSensitive(status, "progress");
				cJSON_AddItemToObject(status, "progress", pr);
				changed = true;
			} else {
				cJSON_Delete(pr);
			}
			cJSON_Delete(pg);
		}
	}
	return changed;
}

/* ---- the record in the repository ---- */

int ctl_backup_store_record(dp_ctl *c, const char *name)
{
	dp_resource r = {0}, p = {0};
	dp_buf out = {0}, pol = {0};
	dp_repo *repo = NULL;
	cJSON *doc = NULL, *status = NULL;
	int rc = dp_catalog_get(c->cat, DP_KIND_BACKUP, name, &r);
	if (rc)
		return rc;
	status = cJSON_Parse(r.status);
	const char *repo_name = js(status, "backupRepoName");
	if (!repo_name) {
		rc = 0;
		goto out;
	}
	if ((rc = dp_resource_json(&out, &r, false)) || (rc = dp_buf_append(&out, "", 1)))
		goto out;
	doc = cJSON_Parse((const char *)out.data);
	cJSON *sp = cJSON_Parse(r.spec);
	if (js(sp, "backupPolicyName") &&
	    dp_catalog_get(c->cat, DP_KIND_BACKUP_POLICY, js(sp, "backupPolicyName"), &p) == 0 &&
	    dp_resource_json(&pol, &p, false) == 0 && dp_buf_append(&pol, "", 1) == 0)
		cJSON_AddItemToObject(doc, "policy", cJSON_Parse((const char *)pol.data));
	dp_error_clear();
	cJSON_Delete(sp);
	char *text = cJSON_PrintUnformatted(doc);
	char key[DP_NAME_MAX + 32];
	snprintf(key, sizeof(key), "catalog/%s.json", name);
	if (!text) {
		rc = dp_error_set(DP_ERROR, "out of memory");
		goto out;
	}
	if ((rc = ctl_repo_open(c, repo_name, &repo)) == 0)
		rc = dp_repo_put_file(repo, key, text, strlen(text));
	free(text);
out:
	dp_repo_free(repo);
	cJSON_Delete(doc);
	cJSON_Delete(status);
	dp_buf_free(&out);
	dp_buf_free(&pol);
	dp_resource_clear(&r);
	dp_resource_clear(&p);
	return rc;
}

/* Writes the record of a Completed backup into its repository once
 * (status.recordStored); a failure is an event and is retried next pass. */
static int store_record_once(dp_ctl *c, ctl_res *x)
{
	if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(x->status, "recordStored")))
		return 0;
	if (ctl_backup_store_record(c, x->r.name) != 0) {
		dp_catalog_event(c->cat, DP_KIND_BACKUP, x->r.name, "Warning", "RecordNotStored",
		                 "%s", dp_error_last());
		dp_warn("backup \"%s\": record not stored in the repository: %s", x->r.name,
		        dp_error_last());
		dp_error_clear();
		return 0;
	}
	cJSON_DeleteItemFromObjectCaseSensitive(x->status, "recordStored");
	cJSON_AddTrueToObject(x->status, "recordStored");
	return ctl_save(c, x);
}

/* ---- New -> Running ---- */

static int fail(dp_ctl *c, ctl_res *x, const char *reason)
{
	int64_t now = dp_ctl_now(c);
	jset_str(x->status, "phase", "Failed");
	jset_str(x->status, "failureReason", reason);
	jset_time(x->status, "completionTimestamp", now);
	int64_t start = jtime(x->status, "startTimestamp");
	if (start)
		jset_num(x->status, "duration", (double)(now - start));
	int64_t ret = 0;
	if (js(x->spec, "retentionPeriod") &&
	    dp_duration_parse(&ret, js(x->spec, "retentionPeriod")) == 0 && ret > 0)
		jset_time(x->status, "expiration", now + ret);
	dp_catalog_event(c->cat, DP_KIND_BACKUP, x->r.name, "Warning", "BackupFailed", "%s",
	                 reason);
	dp_info("backup \"%s\" failed: %s", x->r.name, reason);
	return ctl_save(c, x);
}

static int start(dp_ctl *c, ctl_res *x, bool *waiting)
{
	ctl_res pol = {0}, as = {0}, repo = {0};
	cJSON *method = NULL;
	char msg[1024], who[DP_NAME_MAX + 1];
	const char *pn = js(x->spec, "backupPolicyName"), *mn = js(x->spec, "backupMethod");
	int rc;
	*waiting = false;
	if (!phase_is(x->status, "New")) {
		jset_str(x->status, "phase", "New");
		if ((rc = ctl_save(c, x)))
			return rc;
	}
	if ((rc = ctl_load(c, DP_KIND_BACKUP_POLICY, pn, &pol))) {
		snprintf(msg, sizeof(msg), "%s", dp_error_last());
		dp_error_clear();
		return fail(c, x, msg);
	}
	if ((rc = ctl_policy_method(c, pn, mn, &method)) ||
	    (!js(method, "actionSetName") &&
	     (rc = dp_error_set(DP_EUSAGE,
	                        "method \"%s\" of backuppolicy \"%s\" has no actionSetName "
	                        "(volume snapshots are not supported locally)",
	                        mn, pn))) ||
	    (rc = ctl_load(c, DP_KIND_ACTION_SET, js(method, "actionSetName"), &as))) {
		snprintf(msg, sizeof(msg), "%s", dp_error_last());
		dp_error_clear();
		rc = fail(c, x, msg);
		goto out;
	}
	const char *rn = js(pol.spec, "backupRepoName");
	bool rfin;
	if ((rc = dp_ctl_reconcile(c, DP_KIND_BACKUP_REPO, rn, &rfin)))
		goto out;
	if ((rc = ctl_load(c, DP_KIND_BACKUP_REPO, rn, &repo)))
		goto out;
	if (!phase_is(repo.status, "Ready")) {
		if (!rfin) { /* another process is checking it */
			*waiting = true;
			goto out;
		}
		snprintf(msg, sizeof(msg), "backuprepo \"%s\" is not ready: %s", rn,
		         js(repo.status, "failureReason") ? js(repo.status, "failureReason")
		                                          : "pre-check not done");
		rc = fail(c, x, msg);
		goto out;
	}
	bool cont =
	    js(as.spec, "backupType") && strcmp(js(as.spec, "backupType"), "Continuous") == 0;
	/* Backups of a database wait while it is being restored. */
	int restoring = policy_restoring(c, pn, who, sizeof(who));
	if (restoring < 0) {
		rc = restoring;
		goto out;
	}
	if (restoring) {
		if (!js(x->status, "waitingFor") || strcmp(js(x->status, "waitingFor"), who)) {
			jset_str(x->status, "waitingFor", who);
			rc = ctl_save(c, x);
		}
		*waiting = true;
		goto out;
	}
	if (!cont) {
		int busy = policy_busy(c, pn, x->r.name, who, sizeof(who));
		if (busy < 0) {
			rc = busy;
			goto out;
		}
		if (busy) {
			if (!js(x->status, "waitingFor") ||
			    strcmp(js(x->status, "waitingFor"), who)) {
				jset_str(x->status, "waitingFor", who);
				rc = ctl_save(c, x);
			}
			*waiting = true;
			goto out;
		}
	}
	jset_str(x->status, "waitingFor", NULL);
	int64_t now = dp_ctl_now(c);
	jset_str(x->status, "phase", "Running");
	jset_str(x->status, "backupRepoName", rn);
	jset_str(x->status, "actionSetName", as.r.name);
	jset_str(x->status, "backupType", js(as.spec, "backupType"));
	jset_time(x->status, "startTimestamp", now);
	jset_num(x->status, "backoffLimit", (double)jnum(pol.spec, "backoffLimit", 2));
	char parent[DP_NAME_MAX + 1] = "";
	if (js(x->spec, "parentBackupName"))
		snprintf(parent, sizeof(parent), "%s", js(x->spec, "parentBackupName"));
	else if (!cont)
		previous_completed(c, pn, mn, x->r.name, parent, sizeof(parent));
	jset_str(x->status, "parentBackupName", parent[0] ? parent : NULL);
	if (cont) {
		int iv = (int)jnum(x->status, "archiveInterval", 0);
		jset_num(x->status, "archiveInterval", iv > 0 ? iv : c->archive_interval);
	}
	cJSON *actions = cJSON_CreateArray();
	const cJSON *b = cJSON_GetObjectItemCaseSensitive(as.spec, "backup");
	int i = 0;
	const cJSON *pre = cJSON_GetObjectItemCaseSensitive(b, "preBackup");
	for (const cJSON *a = pre ? pre->child : NULL; a; a = a->next, i++) {
		char nm[64];
		snprintf(nm, sizeof(nm), "preBackup-%d", i);
		ctl_action_add(actions, js(a, "name") ? js(a, "name") : nm, "preBackup", a);
	}
	ctl_action_add(actions, "backupData", "backupData",
	               cJSON_GetObjectItemCaseSensitive(b, "backupData"));
	i = 0;
	const cJSON *post = cJSON_GetObjectItemCaseSensitive(b, "postBackup");
	for (const cJSON *a = post ? post->child : NULL; a; a = a->next, i++) {
		char nm[64];
		snprintf(nm, sizeof(nm), "postBackup-%d", i);
		ctl_action_add(actions, js(a, "name") ? js(a, "name") : nm, "postBackup", a);
	}
	cJSON_DeleteItemFromObjectCaseSensitive(x->status, "actions");
	cJSON_AddItemToObject(x->status, "actions", actions);
	if ((rc = ctl_save(c, x)) == 0)
		ctl_crashpoint("backup-planned");
	if (rc == 0)
		dp_catalog_event(c->cat, DP_KIND_BACKUP, x->r.name, "Normal", "Started",
		                 "method %s (actionset %s, %s) into backuprepo %s", mn, as.r.name,
		                 js(as.spec, "backupType"), rn);
out:
	cJSON_Delete(method);
	ctl_res_free(&pol);
	ctl_res_free(&as);
	ctl_res_free(&repo);
	return rc;
}

/* ---- Running ---- */

static int backup_env(dp_ctl *c, ctl_res *x, ctl_env *env, ctl_res *as, char *cwd, size_t cwdl)
{
	ctl_res pol = {0};
	cJSON *method = NULL;
	char buf[64];
	const char *pn = js(x->spec, "backupPolicyName");
	int rc;
	if ((rc = ctl_load(c, DP_KIND_BACKUP_POLICY, pn, &pol)) ||
	    (rc = ctl_load(c, DP_KIND_ACTION_SET, js(x->status, "actionSetName"), as)))
		goto out;
	if ((rc = ctl_policy_method(c, pn, js(x->spec, "backupMethod"), &method)))
		dp_error_clear(); /* the method env is optional */
	rc = ctl_env_build(c, env, pol.spec, js(x->status, "backupRepoName"), as->spec, method);
	if (!rc)
		rc = ctl_env_set(env, "DP_BACKUP_NAME", x->r.name);
	if (!rc && js(x->status, "parentBackupName"))
		rc = ctl_env_set(env, "DP_PARENT_BACKUP_NAME", js(x->status, "parentBackupName"));
	if (!rc && continuous(x->status)) {
		snprintf(buf, sizeof(buf), "%llds",
		         (long long)jnum(x->status, "archiveInterval", 60));
		rc = ctl_env_set(env, "DP_ARCHIVE_INTERVAL", buf);
	}
	int64_t ttl = 0;
	if (!rc && js(x->spec, "retentionPeriod") &&
	    dp_duration_parse(&ttl, js(x->spec, "retentionPeriod")) == 0 && ttl > 0) {
		snprintf(buf, sizeof(buf), "%lld", (long long)ttl);
		rc = ctl_env_set(env, "DP_TTL_SECONDS", buf);
	}
	ctl_actionset_dir(c, as, cwd, cwdl);
out:
	cJSON_Delete(method);
	ctl_res_free(&pol);
	return rc;
}

static int run(dp_ctl *c, ctl_res *x, bool *final)
{
	ctl_env env = {0};
	ctl_res as = {0};
	dp_buf reason = {0};
	char cwd[PATH_MAX], prefix[DP_NAME_MAX + 64];
	bool changed = false;
	enum ctl_step step;
	int rc = backup_env(c, x, &env, &as, cwd, sizeof(cwd));
	if (rc) {
		char msg[1024];
		snprintf(msg, sizeof(msg), "%s", dp_error_last());
		dp_error_clear();
		rc = fail(c, x, msg);
		*final = true;
		goto out;
	}
	snprintf(prefix, sizeof(prefix), "backup-%s-%lld", x->r.name, (long long)x->r.created);
	rc = ctl_actions_step(c, prefix, cJSON_GetObjectItemCaseSensitive(x->status, "actions"),
	                      &env, cwd, as.spec, (int)jnum(x->status, "backoffLimit", 2), &step,
	                      &reason, &changed);
	if (rc)
		goto out;
	if (ingest(c, x->status))
		changed = true;
	int64_t now = dp_ctl_now(c);
	if (step == CTL_STEP_FAILED) {
		dp_buf_append(&reason, "", 1);
		rc = fail(c, x, (const char *)reason.data);
		*final = true;
		goto out;
	}
	if (step == CTL_STEP_DONE && !continuous(x->status)) {
		int64_t st = jtime(x->status, "startTimestamp");
		jset_str(x->status, "phase", "Completed");
		jset_time(x->status, "completionTimestamp", now);
		jset_num(x->status, "duration", (double)(now - (st ? st : now)));
		cJSON_DeleteItemFromObjectCaseSensitive(x->status, "progress");
		int64_t ret = 0;
		if (js(x->spec, "retentionPeriod") &&
		    dp_duration_parse(&ret, js(x->spec, "retentionPeriod")) == 0 && ret > 0)
			jset_time(x->status, "expiration", now + ret);
		if ((rc = ctl_save(c, x)))
			goto out;
		ctl_crashpoint("backup-completed");
		dp_catalog_event(c->cat, DP_KIND_BACKUP, x->r.name, "Normal", "Completed",
		                 "%s bytes, %s new bytes stored",
		                 js(x->status, "totalSize") ? js(x->status, "totalSize") : "?",
		                 js(x->status, "storedSize") ? js(x->status, "storedSize") : "?");
		dp_info("backup \"%s\" completed in %llds: %s bytes, %s new bytes stored",
		        x->r.name, (long long)(now - (st ? st : now)),
		        js(x->status, "totalSize") ? js(x->status, "totalSize") : "?",
		        js(x->status, "storedSize") ? js(x->status, "storedSize") : "?");
		rc = store_record_once(c, x);
		*final = true;
		goto out;
	}
	/* Running (or a continuous backup whose worker ended after turning
	 * archiving on: it stays Running). */
	if (continuous(x->status) && cJSON_GetObjectItemCaseSensitive(x->status, "timeRange")) {
		const cJSON *tr = cJSON_GetObjectItemCaseSensitive(x->status, "timeRange");
		const char *end = js(tr, "end") ? js(tr, "end") : "";
		const char *stored = js(x->status, "recordedWindowEnd");
		if (!stored ||
		    (strcmp(stored, end) != 0 && now - jtime(x->status, "recordedAt") >= 600)) {
			jset_str(x->status, "recordedWindowEnd", end);
			jset_time(x->status, "recordedAt", now);
			changed = true;
			if ((rc = ctl_save(c, x)))
				goto out;
			changed = false;
			if (ctl_backup_store_record(c, x->r.name) != 0) {
				dp_warn("backup \"%s\": record not stored in the repository: %s",
				        x->r.name, dp_error_last());
				dp_error_clear();
			}
		}
		*final = true;
	}
	if (changed)
		rc = ctl_save(c, x);
out:
	ctl_env_free(&env);
	ctl_res_free(&as);
	dp_buf_free(&reason);
	return rc;
}

/* ---- deletion ---- */

static int children(dp_ctl *c, const char *name, char *list, size_t ll, int *n_out)
{
	dp_resource *v = NULL;
	size_t n = 0, len = 0;
	int rc = dp_catalog_list(c->cat, DP_KIND_BACKUP, &v, &n);
	*n_out = 0;
	list[0] = 0;
	if (rc)
		return rc;
	for (size_t i = 0; i < n; i++) {
		cJSON *sp = cJSON_Parse(v[i].spec);
		if (js(sp, "parentBackupName") && strcmp(js(sp, "parentBackupName"), name) == 0) {
			int w =
			    snprintf(list + len, ll - len, "%s\"%s\"", len ? ", " : "", v[i].name);
			if (w > 0 && (size_t)w < ll - len)
				len += (size_t)w;
			(*n_out)++;
		}
		cJSON_Delete(sp);
	}
	dp_resources_free(v, n);
	return 0;
}

static int request_delete(dp_ctl *c, const char *name, bool cascade, int depth)
{
	ctl_res x;
	char list[1024];
	int nchild = 0;
	if (depth > 64)
		return dp_error_set(DP_ERROR, "backup \"%s\": parent chain too deep", name);
	int rc = ctl_load(c, DP_KIND_BACKUP, name, &x);
	if (rc)
		return rc;
	if ((rc = children(c, name, list, sizeof(list), &nchild)))
		goto out;
	if (nchild && !cascade) {
		rc = dp_error_set(DP_EUSAGE,
		                  "backup \"%s\" is the parent of %s: delete %s first, or use "
		                  "--cascade to delete them too",
		                  name, list, nchild == 1 ? "it" : "them");
		goto out;
	}
	if (nchild) {
		dp_resource *v = NULL;
		size_t n = 0;
		if ((rc = dp_catalog_list(c->cat, DP_KIND_BACKUP, &v, &n)))
			goto out;
		for (size_t i = 0; i < n && !rc; i++) {
			cJSON *sp = cJSON_Parse(v[i].spec);
			if (js(sp, "parentBackupName") &&
			    strcmp(js(sp, "parentBackupName"), name) == 0)
				rc = request_delete(c, v[i].name, true, depth + 1);
			cJSON_Delete(sp);
		}
		dp_resources_free(v, n);
		if (rc)
			goto out;
	}
	if (!phase_is(x.status, "Deleting")) {
		const char *ph = js(x.status, "phase");
		jset_str(x.status, "phaseBeforeDeletion", ph ? ph : "");
		jset_str(x.status, "phase", "Deleting");
		if (cascade)
			cJSON_AddTrueToObject(x.status, "deleteCascade");
		if ((rc = ctl_save(c, &x)) == 0)
			dp_catalog_event(c->cat, DP_KIND_BACKUP, name, "Normal", "Deleting",
			                 "deletion requested%s", cascade ? " (cascade)" : "");
	}
out:
	ctl_res_free(&x);
	return rc;
}

int dp_ctl_backup_delete(dp_ctl *c, const char *name, bool cascade)
{
	return request_delete(c, name, cascade, 0);
}

struct rm_ctx {
	dp_repo *r;
	size_t n;
	int rc;
};

static int rm_file_cb(const char *key, uint64_t size, void *arg)
{
	(void)size;
	struct rm_ctx *x = arg;
	int rc = dp_repo_remove_file(x->r, key);
	if (rc) {
		x->rc = rc;
		return 1;
	}
	x->n++;
	return 0;
}

static int remove_data(dp_ctl *c, ctl_res *x)
{
	dp_repo *r = NULL;
	char key[DP_NAME_MAX + 64];
	size_t removed = 0;
	int rc = ctl_repo_open(c, js(x->status, "backupRepoName"), &r);
	if (rc)
		return rc;
	rc = dp_snapshot_remove(r, x->r.name, &removed);
	if (rc == DP_ENOTFOUND) {
		dp_error_clear();
		rc = 0;
	}
	if (rc)
		goto out;
	/* A continuous backup's archive: wal/NAME/... and archives/NAME.json. */
	struct rm_ctx rx = {r, 0, 0};
	snprintf(key, sizeof(key), "wal/%s/", x->r.name);
	dp_backend *b = dp_repo_backend(r);
	if ((rc = b->list(b, key, rm_file_cb, &rx)) != 0 && rx.rc)
		rc = rx.rc;
	if (rc)
		goto out;
	snprintf(key, sizeof(key), "archives/%s.json", x->r.name);
	dp_repo_remove_file(r, key);
	snprintf(key, sizeof(key), "catalog/%s.json", x->r.name);
	if ((rc = dp_repo_remove_file(r, key)))
		goto out;
	dp_repo_set_lock_wait(r, 30);
	dp_prune_report pr = {0};
	if (dp_repo_prune(r, 0.5, &pr) != 0) {
		/* The data stays until the next prune; the deletion itself is done. */
		dp_warn("backup \"%s\": prune after deletion: %s", x->r.name, dp_error_last());
		dp_catalog_event(c->cat, DP_KIND_BACKUP_REPO, js(x->status, "backupRepoName"),
		                 "Warning", "PruneFailed", "%s", dp_error_last());
		dp_error_clear();
	} else {
		dp_catalog_event(c->cat, DP_KIND_BACKUP_REPO, js(x->status, "backupRepoName"),
		                 "Normal", "Pruned",
		                 "after deleting backup %s: %llu snapshot(s) and %zu archived "
		                 "file(s) removed, %llu bytes freed",
		                 x->r.name, (unsigned long long)removed, rx.n,
		                 (unsigned long long)pr.bytes_freed);
	}
out:
	dp_repo_free(r);
	return rc;
}

/* Stops the live workers of a backup (a continuous backup's archiver). */
static void stop_workers(dp_ctl *c, ctl_res *x)
{
	cJSON *actions = cJSON_GetObjectItemCaseSensitive(x->status, "actions");
	for (cJSON *a = actions ? actions->child : NULL; a; a = a->next) {
		if (!phase_is(a, "Running"))
			continue;
		char id[600];
		ctl_action_job(a, id, sizeof(id));
		dp_rt_handle h = {(long)jnum(a, "pid", 0),
		                  (unsigned long long)jnum(a, "pidStart", 0)};
		enum dp_rt_state st;
		int code;
		if (c->rt->poll(c->rt, id, &h, &st, &code) == 0 && st == DP_RT_RUNNING)
			c->rt->stop(c->rt, &h, 10000);
		jset_str(a, "phase", "Stopped");
	}
}

/* Runs the ActionSet's backup.preDelete (if any) as status[key], with jobs
 * named PREFIX-NAME-CREATED. *running: still going (status saved). A
 * failure is a Warning event, not a stop: the caller goes on. */
static int run_predelete(dp_ctl *c, ctl_res *x, const char *key, const char *prefix_word,
                         bool *running)
{
	ctl_res as = {0};
	int rc = 0;
	*running = false;
	if (!js(x->status, "actionSetName") ||
	    ctl_load(c, DP_KIND_ACTION_SET, js(x->status, "actionSetName"), &as) != 0) {
		dp_error_clear();
		return 0;
	}
	const cJSON *pd = cJSON_GetObjectItemCaseSensitive(
	    cJSON_GetObjectItemCaseSensitive(as.spec, "backup"), "preDelete");
	if (!pd)
		goto out;
	cJSON *da = cJSON_GetObjectItemCaseSensitive(x->status, key);
	if (!da) {
		da = cJSON_AddArrayToObject(x->status, key);
		ctl_action_add(da, "preDelete", "preDelete", pd);
	}
	ctl_env env = {0};
	ctl_res tmp = {0};
	char cwd[PATH_MAX], prefix[DP_NAME_MAX + 64];
	enum ctl_step step = CTL_STEP_DONE;
	bool changed = false;
	dp_buf reason = {0};
	rc = backup_env(c, x, &env, &tmp, cwd, sizeof(cwd));
	snprintf(prefix, sizeof(prefix), "%s-%s-%lld", prefix_word, x->r.name,
	         (long long)x->r.created);
	if (!rc)
		rc = ctl_actions_step(c, prefix, da, &env, cwd, as.spec, 0, &step, &reason,
		                      &changed);
	ctl_env_free(&env);
	ctl_res_free(&tmp);
	if (rc) {
		/* Cannot even build the environment: go on, say so. */
		dp_catalog_event(c->cat, DP_KIND_BACKUP, x->r.name, "Warning", "PreDeleteFailed",
		                 "%s", dp_error_last());
		dp_error_clear();
		rc = 0;
	} else if (step == CTL_STEP_RUNNING) {
		*running = true;
		rc = changed ? ctl_save(c, x) : 0;
	} else if (step == CTL_STEP_FAILED) {
		dp_buf_append(&reason, "", 1);
		dp_catalog_event(c->cat, DP_KIND_BACKUP, x->r.name, "Warning", "PreDeleteFailed",
		                 "%s", (const char *)reason.data);
	}
	dp_buf_free(&reason);
out:
	ctl_res_free(&as);
	return rc;
}

/* Removes the state files of the backup's jobs (the logs stay), so a
 * backup made again under the same name never adopts their results. */
static void forget_jobs(dp_ctl *c, ctl_res *x)
{
	static const char *const lists[] = {"actions", "deleteActions", "stopActions", NULL};
	static const char *const sfx[] = {"pid", "exit", "info", "events", NULL};
	for (int l = 0; lists[l]; l++) {
		const cJSON *acts = cJSON_GetObjectItemCaseSensitive(x->status, lists[l]);
		for (const cJSON *a = acts ? acts->child : NULL; a; a = a->next) {
			if (!js(a, "job"))
				continue;
			for (int64_t att = 0; att <= jnum(a, "attempt", 0); att++) {
				char id[600], p[PATH_MAX + 700];
				snprintf(id, sizeof(id), "%s.%lld", js(a, "job"), (long long)att);
				for (int k = 0; sfx[k]; k++) {
					c->rt->path(c->rt, id, sfx[k], p, sizeof(p));
					unlink(p);
				}
			}
		}
	}
}

static int delete_step(dp_ctl *c, ctl_res *x, bool *final)
{
	char list[1024];
	int nchild = 0, rc;
	*final = false;
	if ((rc = children(c, x->r.name, list, sizeof(list), &nchild)))
		return rc;
	if (nchild) {
		if (!cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(x->status, "deleteCascade"))) {
			char msg[1200];
			snprintf(msg, sizeof(msg), "waiting: %s still name it as parent", list);
			if (!js(x->status, "deletionFailureReason") ||
			    strcmp(js(x->status, "deletionFailureReason"), msg)) {
				jset_str(x->status, "deletionFailureReason", msg);
				return ctl_save(c, x);
			}
		}
		return 0; /* children go first */
	}
	stop_workers(c, x);
	const char *before = js(x->status, "phaseBeforeDeletion");
	bool had_data = js(x->status, "backupRepoName") && before && strcmp(before, "New") != 0 &&
	                strcmp(before, "") != 0;
	if (had_data) {
		bool running = false;
		if ((rc = run_predelete(c, x, "deleteActions", "delete", &running)) || running)
			return rc;
	}
	dp_error_clear();
	const char *pol = js(x->spec, "deletionPolicy");
	bool retain = pol && strcmp(pol, "Retain") == 0;
	if (had_data && !retain && (rc = remove_data(c, x))) {
		char msg[1024];
		snprintf(msg, sizeof(msg), "%s", dp_error_last());
		dp_error_clear();
		jset_str(x->status, "deletionFailureReason", msg);
		dp_catalog_event(c->cat, DP_KIND_BACKUP, x->r.name, "Warning", "DeleteFailed", "%s",
		                 msg);
		return ctl_save(c, x);
	}
	if (retain && had_data)
		dp_info("backup \"%s\": deletionPolicy Retain: the data stays in the repository",
		        x->r.name);
	forget_jobs(c, x);
	rc = dp_catalog_remove(c->cat, DP_KIND_BACKUP, x->r.name);
	if (rc == DP_ENOTFOUND) {
		dp_error_clear();
		rc = 0;
	}
	*final = true;
	return rc;
}

/* ---- stopping a continuous backup ---- */

int dp_ctl_backup_stop(dp_ctl *c, const char *name)
{
	ctl_res x;
	int rc = ctl_load(c, DP_KIND_BACKUP, name, &x);
	if (rc)
		return rc;
	if (!phase_is(x.status, "Running") || !continuous(x.status)) {
		rc =
		    dp_error_set(DP_EUSAGE,
		                 "backup \"%s\" is not a running continuous backup: only those can "
		                 "be stopped (delete it instead)",
		                 name);
	} else if (!cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(x.status, "stopRequested"))) {
		cJSON_AddTrueToObject(x.status, "stopRequested");
		if ((rc = ctl_save(c, &x)) == 0)
			dp_catalog_event(c->cat, DP_KIND_BACKUP, name, "Normal", "Stopping",
			                 "stop requested");
	}
	ctl_res_free(&x);
	return rc;
}

/* A continuous backup asked to stop: its archiver ends, the ActionSet's
 * preDelete turns archiving off (the data stays), and it is Completed with
 * the window it had. */
static int stop_step(dp_ctl *c, ctl_res *x, bool *final)
{
	bool running = false;
	int rc;
	*final = false;
	stop_workers(c, x);
	ingest(c, x->status);
	if ((rc = run_predelete(c, x, "stopActions", "stop", &running)) || running)
		return rc;
	int64_t now = dp_ctl_now(c), st = jtime(x->status, "startTimestamp");
	jset_str(x->status, "phase", "Completed");
	cJSON_DeleteItemFromObjectCaseSensitive(x->status, "stopRequested");
	cJSON_DeleteItemFromObjectCaseSensitive(x->status, "recordStored");
	jset_time(x->status, "completionTimestamp", now);
	jset_num(x->status, "duration", (double)(now - (st ? st : now)));
	int64_t ret = 0;
	if (js(x->spec, "retentionPeriod") &&
	    dp_duration_parse(&ret, js(x->spec, "retentionPeriod")) == 0 && ret > 0)
		jset_time(x->status, "expiration", now + ret);
	if ((rc = ctl_save(c, x)))
		return rc;
	dp_catalog_event(c->cat, DP_KIND_BACKUP, x->r.name, "Normal", "Completed",
	                 "continuous backup stopped");
	*final = true;
	return store_record_once(c, x);
}

/* ---- the reconciler ---- */

int ctl_backup_reconcile(dp_ctl *c, const char *name, bool *final)
{
	ctl_res x;
	*final = false;
	int rc = ctl_load(c, DP_KIND_BACKUP, name, &x);
	if (rc == DP_ENOTFOUND) {
		dp_error_clear();
		*final = true;
		return 0;
	}
	if (rc)
		return rc;
	if (phase_is(x.status, "Deleting")) {
		rc = delete_step(c, &x, final);
		goto out;
	}
	if (phase_is(x.status, "Completed") || phase_is(x.status, "Failed")) {
		*final = true;
		if (phase_is(x.status, "Completed"))
			rc = store_record_once(c, &x);
		goto out;
	}
	if (phase_is(x.status, "Running") &&
	    cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(x.status, "stopRequested"))) {
		rc = stop_step(c, &x, final);
		goto out;
	}
	if (!js(x.status, "phase") || phase_is(x.status, "New")) {
		bool waiting;
		if ((rc = start(c, &x, &waiting)) || waiting || !phase_is(x.status, "Running")) {
			*final = phase_is(x.status, "Failed");
			goto out;
		}
	}
	rc = run(c, &x, final);
out:
	ctl_res_free(&x);
	return rc;
}

/* ---- retention ---- */

int ctl_gc(dp_ctl *c)
{
	dp_resource *v = NULL;
	size_t n = 0;
	int64_t now = dp_ctl_now(c);
	int rc = dp_catalog_list(c->cat, DP_KIND_BACKUP, &v, &n);
	if (rc)
		return rc;
	for (size_t i = 0; i < n; i++) {
		cJSON *sp = cJSON_Parse(v[i].spec), *st = cJSON_Parse(v[i].status);
		int64_t exp = jtime(st, "expiration");
		bool due =
		    exp > 0 && exp <= now && (phase_is(st, "Completed") || phase_is(st, "Failed"));
		const char *pn = js(sp, "backupPolicyName");
		if (due && pn && phase_is(st, "Completed")) {
			/* retainLatestBackup: the newest Completed backup of the
			 * policy stays. */
			ctl_res pol;
			if (ctl_load(c, DP_KIND_BACKUP_POLICY, pn, &pol) == 0) {
				const char *rp = js(pol.spec, "retentionPolicy");
				if (rp && strcmp(rp, "retainLatestBackup") == 0) {
					bool newest = true;
					int64_t mine = jtime(st, "completionTimestamp");
					for (size_t j = 0; j < n && newest; j++) {
						if (j == i)
							continue;
						cJSON *sp2 = cJSON_Parse(v[j].spec),
						      *st2 = cJSON_Parse(v[j].status);
						if (js(sp2, "backupPolicyName") &&
						    strcmp(js(sp2, "backupPolicyName"), pn) == 0 &&
						    phase_is(st2, "Completed") &&
						    jtime(st2, "completionTimestamp") > mine)
							newest = false;
						cJSON_Delete(sp2);
						cJSON_Delete(st2);
					}
					if (newest)
						due = false;
				}
				ctl_res_free(&pol);
			}
			dp_error_clear();
		}
		cJSON_Delete(sp);
		cJSON_Delete(st);
		if (!due)
			continue;
		if (request_delete(c, v[i].name, false, 0) != 0) {
			/* A parent of live backups: kept until they go. */
			dp_debug("gc: %s", dp_error_last());
			dp_error_clear();
			continue;
		}
		dp_catalog_event(c->cat, DP_KIND_BACKUP, v[i].name, "Normal", "Expired",
		                 "expired; deleting");
		bool fin;
		if (dp_ctl_reconcile(c, DP_KIND_BACKUP, v[i].name, &fin) != 0) {
			dp_warn("gc: backup \"%s\": %s", v[i].name, dp_error_last());
			dp_error_clear();
		}
	}
	dp_resources_free(v, n);
	return 0;
}

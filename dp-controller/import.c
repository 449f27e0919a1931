/*
 * `dp catalog import`: rebuilds Backups from the records every Backup leaves
 * in its repository (catalog/NAME.json, encrypted; see backup_rc.c). Used
 * after a reinstall or on another machine: apply the BackupRepo, then
 * import. A backup already in the catalog is skipped; a missing policy is
 * recreated from the copy stored with the record, pointing at this repo.
 * The data is never touched, and nothing of the other host's processes is
 * kept: worker pids are dropped, and a continuous backup that was archiving
 * there is imported as Completed with the window it had.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl_int.h"
#include "dp/backend.h"
#include "dp/error.h"
#include "dp/log.h"
#include "dp/resource.h"

int ctl_apply_doc(dp_ctl *c, cJSON *doc);

struct keys {
	char **v;
	size_t n, cap;
};

static int key_cb(const char *key, uint64_t size, void *arg)
{
	(void)size;
	struct keys *k = arg;
	size_t l = strlen(key);
	if (l < 6 || strcmp(key + l - 5, ".json") != 0)
		return 0;
	if (k->n == k->cap) {
		size_t cap = k->cap ? k->cap * 2 : 64;
		char **v = realloc(k->v, cap * sizeof(*v));
		if (!v)
			return -1;
		k->v = v;
		k->cap = cap;
	}
	k->v[k->n] = strdup(key);
	if (!k->v[k->n])
		return -1;
	k->n++;
	return 0;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static bool exists(dp_ctl *c, dp_kind kind, const char *name)
{
	dp_resource r = {0};
	int rc = dp_catalog_get(c->cat, kind, name, &r);
	dp_resource_clear(&r);
	dp_error_clear();
	return rc == 0;
}

/* A document for apply: {apiVersion, kind, metadata {name, labels}, spec}. */
static cJSON *doc_of(const cJSON *rec, const char *kind)
{
	const cJSON *meta = cJSON_GetObjectItemCaseSensitive(rec, "metadata");
	cJSON *d = cJSON_CreateObject();
	cJSON_AddStringToObject(d, "apiVersion", DP_API_VERSION);
	cJSON_AddStringToObject(d, "kind", kind);
	cJSON *m = cJSON_AddObjectToObject(d, "metadata");
	cJSON_AddStringToObject(m, "name", js(meta, "name"));
	const cJSON *labels = cJSON_GetObjectItemCaseSensitive(meta, "labels");
	if (labels)
		cJSON_AddItemToObject(m, "labels", cJSON_Duplicate(labels, 1));
	cJSON_AddItemToObject(d, "spec",
	                      cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(rec, "spec"), 1));
	return d;
}

static int import_one(dp_ctl *c, const char *repo_name, const cJSON *rec, bool *done)
{
	const cJSON *meta = cJSON_GetObjectItemCaseSensitive(rec, "metadata");
	const char *name = js(meta, "name");
	const cJSON *spec = cJSON_GetObjectItemCaseSensitive(rec, "spec");
	const char *pn = js(spec, "backupPolicyName");
	int rc = 0;
	*done = false;
	if (!name || !pn || !js(rec, "kind") || strcmp(js(rec, "kind"), "Backup") != 0)
		return dp_error_set(DP_ECORRUPT, "not a backup record");
	if (exists(c, DP_KIND_BACKUP, name))
		return 0;
	if (!exists(c, DP_KIND_BACKUP_POLICY, pn)) {
		const cJSON *pol = cJSON_GetObjectItemCaseSensitive(rec, "policy");
		if (!pol)
			return dp_error_set(
			    DP_ENOTFOUND,
			    "backup \"%s\": backuppolicy \"%s\" is not in the catalog "
			    "and the record has no copy of it: apply it first",
			    name, pn);
		cJSON *d = doc_of(pol, "BackupPolicy");
		jset_str(cJSON_GetObjectItemCaseSensitive(d, "spec"), "backupRepoName", repo_name);
		rc = ctl_apply_doc(c, d);
		cJSON_Delete(d);
		if (rc)
			return dp_error_prefix("backup \"%s\": recreating backuppolicy \"%s\"",
			                       name, pn);
		dp_info("recreated backuppolicy \"%s\" from the repository", pn);
	}
	cJSON *d = doc_of(rec, "Backup");
	rc = ctl_apply_doc(c, d);
	cJSON_Delete(d);
	if (rc)
		return rc;
	cJSON *st = cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(rec, "status"), 1);
	if (!cJSON_IsObject(st)) {
		cJSON_Delete(st);
		st = cJSON_CreateObject();
	}
	cJSON *actions = cJSON_GetObjectItemCaseSensitive(st, "actions");
	for (cJSON *a = actions ? actions->child : NULL; a; a = a->next) {
		cJSON_DeleteItemFromObjectCaseSensitive(a, "pid");
		cJSON_DeleteItemFromObjectCaseSensitive(a, "pidStart");
		if (js(a, "phase") && strcmp(js(a, "phase"), "Running") == 0)
			jset_str(a, "phase", "Stopped");
	}
	if (js(st, "phase") && strcmp(js(st, "phase"), "Running") == 0) {
		jset_str(st, "phase", "Completed");
		if (!js(st, "completionTimestamp"))
			jset_time(st, "completionTimestamp", dp_ctl_now(c));
	}
	jset_str(st, "backupRepoName", repo_name);
	jset_str(st, "importedFrom", repo_name);
	cJSON_DeleteItemFromObjectCaseSensitive(st, "progress");
	cJSON_DeleteItemFromObjectCaseSensitive(st, "recordStored");
	cJSON_AddTrueToObject(st, "recordStored"); /* it came from there */
	char *text = cJSON_PrintUnformatted(st);
	cJSON_Delete(st);
	if (!text)
		return dp_error_set(DP_ERROR, "out of memory");
	rc = dp_catalog_set_status(c->cat, DP_KIND_BACKUP, name, text, 0, NULL);
	free(text);
	if (!rc) {
		dp_catalog_event(c->cat, DP_KIND_BACKUP, name, "Normal", "Imported",
		                 "imported from backuprepo %s", repo_name);
		*done = true;
	}
	return rc;
}

int dp_ctl_catalog_import(dp_ctl *c, const char *repo_name, size_t *imported, size_t *skipped)
{
	dp_repo *r = NULL;
	struct keys k = {0};
	dp_buf b = {0};
	size_t ni = 0, ns = 0;
	bool fin;
	int rc = dp_ctl_reconcile(c, DP_KIND_BACKUP_REPO, repo_name, &fin);
	if (rc || (rc = ctl_repo_open(c, repo_name, &r)))
		goto out;
	dp_backend *be = dp_repo_backend(r);
	if ((rc = be->list(be, "catalog/", key_cb, &k))) {
		if (rc == -1)
			rc = dp_error_set(DP_ERROR, "out of memory");
		goto out;
	}
	qsort(k.v, k.n, sizeof(*k.v), cmp_str);
	for (size_t i = 0; i < k.n; i++) {
		dp_buf_reset(&b);
		cJSON *rec = NULL;
		bool done = false;
		int one = dp_repo_get_file(r, k.v[i], &b);
		if (!one && !(one = dp_buf_append(&b, "", 1)))
			rec = cJSON_Parse((const char *)b.data);
		if (!one && !rec)
			one = dp_error_set(DP_ECORRUPT, "not JSON");
		if (!one)
			one = import_one(c, repo_name, rec, &done);
		cJSON_Delete(rec);
		if (one) {
			dp_warn("%s: %s (skipped)", k.v[i], dp_error_last());
			dp_error_clear();
		}
		if (done)
			ni++;
		else
			ns++;
	}
out:
	for (size_t i = 0; i < k.n; i++)
		free(k.v[i]);
	free(k.v);
	dp_buf_free(&b);
	dp_repo_free(r);
	if (imported)
		*imported = ni;
	if (skipped)
		*skipped = ns;
	return rc;
}

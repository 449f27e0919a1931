/*
 * Restore reconciler: validate first, then prepareData, then postReady
 * (the method's postReady starts the database and checks it), each step
 * recorded in status.actions.
 *
 * Validation fails the Restore at once, before any worker runs, with a
 * message that says what to change: the backup must be Completed (or a
 * continuous backup with a recorded window), a restoreTime needs a
 * continuous backup and must lie inside its window (a running archive's
 * window grows: up to now is accepted, and the method checks the exact end
 * before touching anything), and the target must be free (a new data
 * directory that does not exist or is empty) or, in place, the policy's
 * data directory. With spec.backupPolicyName + restoreTime the continuous
 * backup of that policy whose window holds the time is chosen; the method
 * picks the base backup. Restores are not retried (an in-place restore
 * rolls itself back on failure).
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "ctl_int.h"
#include "dp/cron.h"
#include "dp/error.h"
#include "dp/log.h"
#include "dp/resource.h"

int ctl_apply_doc(dp_ctl *c, cJSON *doc);

static bool phase_is(const cJSON *st, const char *p)
{
	const char *ph = js(st, "phase");
	return ph && strcmp(ph, p) == 0;
}

static bool is_cont(const cJSON *st)
{
	return js(st, "backupType") && strcmp(js(st, "backupType"), "Continuous") == 0;
}

int dp_ctl_restore_create(dp_ctl *c, const dp_ctl_restore_req *req, char *name_out, size_t name_len)
{
	char name[DP_NAME_MAX + 1], stamp[32];
	if (!!req->backup == !!req->policy)
		return dp_error_set(DP_EUSAGE,
		                    "give either --backup NAME or --policy NAME --time T");
	if (req->policy && !req->time)
		return dp_error_set(DP_EUSAGE, "--policy needs --time T (RFC 3339, UTC)");
	if (!!req->to_dir == req->in_place)
		return dp_error_set(DP_EUSAGE, "give either --to DIR or --in-place");
	if (req->name) {
		snprintf(name, sizeof(name), "%s", req->name);
	} else {
		ctl_stamp(dp_ctl_now(c), stamp, sizeof(stamp));
		snprintf(name, sizeof(name), "restore-%s", stamp);
		dp_resource ex = {0};
		for (int i = 2; dp_catalog_get(c->cat, DP_KIND_RESTORE, name, &ex) == 0 && i < 100;
		     i++) {
			dp_resource_clear(&ex);
			snprintf(name, sizeof(name), "restore-%s-%d", stamp, i);
		}
		dp_error_clear();
	}
	cJSON *doc = cJSON_CreateObject();
	cJSON_AddStringToObject(doc, "apiVersion", DP_API_VERSION);
	cJSON_AddStringToObject(doc, "kind", "Restore");
	cJSON_AddStringToObject(cJSON_AddObjectToObject(doc, "metadata"), "name", name);
	cJSON *spec = cJSON_AddObjectToObject(doc, "spec");
	if (req->backup)
		cJSON_AddStringToObject(cJSON_AddObjectToObject(spec, "backup"), "name",
		                        req->backup);
	if (req->policy)
		cJSON_AddStringToObject(spec, "backupPolicyName", req->policy);
	if (req->time)
		cJSON_AddStringToObject(spec, "restoreTime", req->time);
	if (req->to_dir) {
		cJSON *t = cJSON_AddObjectToObject(spec, "target");
		cJSON_AddStringToObject(t, "dataDir", req->to_dir);
		if (req->port > 0)
			cJSON_AddNumberToObject(t, "port", req->port);
	}
	if (req->in_place)
		cJSON_AddTrueToObject(spec, "inPlace");
	int rc = ctl_apply_doc(c, doc);
	cJSON_Delete(doc);
	if (!rc && name_out)
		snprintf(name_out, name_len, "%s", name);
	return rc;
}

static int fail(dp_ctl *c, ctl_res *x, const char *reason)
{
	int64_t now = dp_ctl_now(c);
	jset_str(x->status, "phase", "Failed");
	jset_str(x->status, "failureReason", reason);
	jset_time(x->status, "completionTimestamp", now);
	if (jtime(x->status, "startTimestamp"))
		jset_num(x->status, "duration", (double)(now - jtime(x->status, "startTimestamp")));
	dp_catalog_event(c->cat, DP_KIND_RESTORE, x->r.name, "Warning", "RestoreFailed", "%s",
	                 reason);
	dp_info("restore \"%s\" failed: %s", x->r.name, reason);
	return ctl_save(c, x);
}

static bool dir_free(const char *p)
{
	DIR *d = opendir(p);
	if (!d)
		return true; /* missing (or not a directory: the method says so) */
	struct dirent *e;
	bool empty = true;
	while (empty && (e = readdir(d)))
		if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
			empty = false;
	closedir(d);
	return empty;
}

/* The continuous backup of policy whose window holds t. */
static int pick_continuous(dp_ctl *c, const char *policy, int64_t t, char *out, size_t outlen,
                           char *why, size_t whylen)
{
	dp_resource *v = NULL;
	size_t n = 0, wl = 0;
	int rc = dp_catalog_list(c->cat, DP_KIND_BACKUP, &v, &n);
	int64_t now = dp_ctl_now(c);
	out[0] = why[0] = 0;
	if (rc)
		return rc;
	for (size_t i = 0; i < n; i++) {
		cJSON *sp = cJSON_Parse(v[i].spec), *st = cJSON_Parse(v[i].status);
		const cJSON *tr = cJSON_GetObjectItemCaseSensitive(st, "timeRange");
		if (js(sp, "backupPolicyName") && strcmp(js(sp, "backupPolicyName"), policy) == 0 &&
		    is_cont(st) && tr && (phase_is(st, "Running") || phase_is(st, "Completed"))) {
			int64_t s = jtime(tr, "start"), e = jtime(tr, "end");
			/* A running archive's window grows, and its start appears
			 * with the first base backup inside it: until the next
			 * refresh, accept up to now (the method checks the
			 * exact window before it changes anything). */
			bool run = phase_is(st, "Running");
			int64_t hi = run ? now : e;
			if ((s ? t >= s : run) && t <= hi && (!out[0] || run))
				snprintf(out, outlen, "%s", v[i].name);
			int w = snprintf(why + wl, whylen - wl, "%s%s: %s .. %s%s", wl ? "; " : "",
			                 v[i].name, js(tr, "start") ? js(tr, "start") : "?",
			                 js(tr, "end") ? js(tr, "end") : "?",
			                 phase_is(st, "Running") ? " (archiving)" : "");
			if (w > 0 && (size_t)w < whylen - wl)
				wl += (size_t)w;
		}
		cJSON_Delete(sp);
		cJSON_Delete(st);
	}
	dp_resources_free(v, n);
	return 0;
}

/* Checks everything and plans the actions. Returns 0 with *reason set on a
 * validation failure. */
static int validate(dp_ctl *c, ctl_res *x, char *reason, size_t rl)
{
	ctl_res bk = {0}, pol = {0}, as = {0};
	char bname[DP_NAME_MAX + 1] = "", why[2048];
	const char *rt = js(x->spec, "restoreTime");
	int64_t t = 0;
	int rc = 0;
	reason[0] = 0;
	if (rt && dp_time_parse(&t, rt) != 0) {
		snprintf(reason, rl, "spec.restoreTime \"%s\": %s", rt, dp_error_last());
		dp_error_clear();
		goto out;
	}
	const cJSON *b = cJSON_GetObjectItemCaseSensitive(x->spec, "backup");
	if (js(b, "name")) {
		snprintf(bname, sizeof(bname), "%s", js(b, "name"));
	} else {
		const char *pn = js(x->spec, "backupPolicyName");
		if ((rc = pick_continuous(c, pn, t, bname, sizeof(bname), why, sizeof(why))))
			goto out;
		if (!bname[0]) {
			snprintf(
			    reason, rl,
			    "restore time %s is outside the recoverable window of every "
			    "continuous backup of backuppolicy \"%s\" (%s); nothing was changed",
			    rt, pn,
			    why[0] ? why : "it has none: start one with dp backup --method wal");
			goto out;
		}
	}
	if (ctl_load(c, DP_KIND_BACKUP, bname, &bk) != 0) {
		snprintf(reason, rl, "%s", dp_error_last());
		dp_error_clear();
		goto out;
	}
	bool cont = is_cont(bk.status);
	const cJSON *tr = cJSON_GetObjectItemCaseSensitive(bk.status, "timeRange");
	if (!(phase_is(bk.status, "Completed") || (cont && phase_is(bk.status, "Running") && tr))) {
		snprintf(reason, rl, "backup \"%s\" is %s, not Completed: it cannot be restored%s",
		         bname, js(bk.status, "phase") ? js(bk.status, "phase") : "New",
		         phase_is(bk.status, "Running") ? " yet (wait for it)" : "");
		goto out;
	}
	if (!rt && cont) {
		snprintf(reason, rl,
		         "backup \"%s\" is continuous: give the point in time to restore to "
		         "(--time, spec.restoreTime) inside its window %s .. %s, or restore a full "
		         "backup",
		         bname, js(tr, "start") ? js(tr, "start") : "?",
		         phase_is(bk.status, "Running") ? "now"
		                                        : (js(tr, "end") ? js(tr, "end") : "?"));
		goto out;
	}
	if (rt && !cont) {
		snprintf(reason, rl,
		         "spec.restoreTime needs a continuous backup; backup \"%s\" is %s (restore "
		         "it without a time, or name the policy's continuous backup)",
		         bname, js(bk.status, "backupType") ? js(bk.status, "backupType") : "Full");
		goto out;
	}
	if (rt) {
		int64_t s = jtime(tr, "start"), e = jtime(tr, "end");
		bool run = phase_is(bk.status, "Running");
		int64_t hi = run ? dp_ctl_now(c) : e;
		if ((s ? t < s : !run) || t > hi) {
			snprintf(
			    reason, rl,
			    "restore time %s is outside the recoverable window of backup \"%s\": "
			    "%s .. %s; nothing was changed",
			    rt, bname, js(tr, "start") ? js(tr, "start") : "?",
			    phase_is(bk.status, "Running") ? "now"
			                                   : (js(tr, "end") ? js(tr, "end") : "?"));
			goto out;
		}
	}
	const char *pn = js(bk.spec, "backupPolicyName");
	if (ctl_load(c, DP_KIND_BACKUP_POLICY, pn, &pol) != 0 ||
	    ctl_load(c, DP_KIND_ACTION_SET, js(bk.status, "actionSetName"), &as) != 0) {
		snprintf(reason, rl, "%s", dp_error_last());
		dp_error_clear();
		goto out;
	}
	const cJSON *target = cJSON_GetObjectItemCaseSensitive(x->spec, "target");
	bool in_place = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(x->spec, "inPlace"));
	if (target && !dir_free(js(target, "dataDir"))) {
		snprintf(
		    reason, rl,
		    "target \"%s\" exists and is not empty: choose a new directory (or restore "
		    "in place); nothing was changed",
		    js(target, "dataDir"));
		goto out;
	}
	const char *dd = js(cJSON_GetObjectItemCaseSensitive(pol.spec, "target"), "dataDir");
	struct stat sb;
	if (in_place && (!dd || stat(dd, &sb) != 0)) {
		snprintf(
		    reason, rl,
		    "in-place restore needs the policy's target.dataDir%s%s%s to exist on this "
		    "host",
		    dd ? " (\"" : "", dd ? dd : "", dd ? "\")" : "");
		goto out;
	}
	const cJSON *r = cJSON_GetObjectItemCaseSensitive(as.spec, "restore");
	if (!cJSON_GetObjectItemCaseSensitive(r, "prepareData")) {
		snprintf(reason, rl,
		         "actionset \"%s\" has no restore.prepareData: it cannot restore",
		         as.r.name);
		goto out;
	}
	cJSON *actions = cJSON_CreateArray();
	ctl_action_add(actions, "prepareData", "prepareData",
	               cJSON_GetObjectItemCaseSensitive(r, "prepareData"));
	const cJSON *pr = cJSON_GetObjectItemCaseSensitive(r, "postReady");
	int i = 0;
	for (const cJSON *a = pr ? pr->child : NULL; a; a = a->next, i++) {
		char nm[64];
		snprintf(nm, sizeof(nm), "postReady-%d", i);
		ctl_action_add(actions, js(a, "name") ? js(a, "name") : nm, "postReady", a);
	}
	cJSON_DeleteItemFromObjectCaseSensitive(x->status, "actions");
	cJSON_AddItemToObject(x->status, "actions", actions);
	jset_str(x->status, "backupName", bname);
	jset_str(x->status, "backupRepoName", js(bk.status, "backupRepoName"));
	jset_str(x->status, "actionSetName", as.r.name);
	jset_str(x->status, "backupPolicyName", pn);
	if (in_place)
		cJSON_AddTrueToObject(x->status, "inPlace");
	if (rt)
		jset_str(x->status, "restoreTime", rt);
out:
	ctl_res_free(&bk);
	ctl_res_free(&pol);
	ctl_res_free(&as);
	return rc;
}

static int restore_env(dp_ctl *c, ctl_res *x, ctl_env *env, ctl_res *as, char *cwd, size_t cl)
{
	ctl_res pol = {0};
	char buf[32];
	int rc;
	if ((rc = ctl_load(c, DP_KIND_BACKUP_POLICY, js(x->status, "backupPolicyName"), &pol)) ||
	    (rc = ctl_load(c, DP_KIND_ACTION_SET, js(x->status, "actionSetName"), as)))
		goto out;
	if ((rc = ctl_env_build(c, env, pol.spec, js(x->status, "backupRepoName"), as->spec,
	                        NULL)) ||
	    (rc = ctl_env_set(env, "DP_BACKUP_NAME", js(x->status, "backupName"))))
		goto out;
	if (js(x->status, "restoreTime") &&
	    (rc = ctl_env_set(env, "DP_RESTORE_TIME", js(x->status, "restoreTime"))))
		goto out;
	const cJSON *t = cJSON_GetObjectItemCaseSensitive(x->spec, "target");
	if (t) {
		if ((rc = ctl_env_set(env, "DP_RESTORE_DATA_DIR", js(t, "dataDir"))))
			goto out;
		if (jnum(t, "port", 0) > 0) {
			snprintf(buf, sizeof(buf), "%lld", (long long)jnum(t, "port", 0));
			if ((rc = ctl_env_set(env, "DP_RESTORE_PORT", buf)))
				goto out;
		}
	}
	if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(x->spec, "inPlace")))
		rc = ctl_env_set(env, "DP_RESTORE_IN_PLACE", "true");
	ctl_actionset_dir(c, as, cwd, cl);
out:
	ctl_res_free(&pol);
	return rc;
}

int ctl_restore_reconcile(dp_ctl *c, const char *name, bool *final)
{
	ctl_res x, as = {0};
	ctl_env env = {0};
	dp_buf reason = {0};
	char msg[4096], cwd[PATH_MAX], prefix[DP_NAME_MAX + 64];
	*final = false;
	int rc = ctl_load(c, DP_KIND_RESTORE, name, &x);
	if (rc == DP_ENOTFOUND) {
		dp_error_clear();
		*final = true;
		return 0;
	}
	if (rc)
		return rc;
	if (phase_is(x.status, "Completed") || phase_is(x.status, "Failed")) {
		*final = true;
		goto out;
	}
	if (!js(x.status, "phase")) {
		jset_time(x.status, "startTimestamp", dp_ctl_now(c));
		if ((rc = validate(c, &x, msg, sizeof(msg))))
			goto out;
		if (msg[0]) {
			rc = fail(c, &x, msg);
			*final = true;
			goto out;
		}
		jset_str(x.status, "phase", "Running");
		cJSON *cond = cJSON_AddArrayToObject(x.status, "conditions");
		cJSON *v = cJSON_CreateObject();
		cJSON_AddStringToObject(v, "type", "ValidationPassed");
		cJSON_AddStringToObject(v, "status", "True");
		cJSON_AddItemToArray(cond, v);
		if ((rc = ctl_save(c, &x)))
			goto out;
		dp_catalog_event(c->cat, DP_KIND_RESTORE, name, "Normal", "ValidationPassed",
		                 "restoring backup %s%s%s", js(x.status, "backupName"),
		                 js(x.status, "restoreTime") ? " to " : "",
		                 js(x.status, "restoreTime") ? js(x.status, "restoreTime") : "");
	}
	if ((rc = restore_env(c, &x, &env, &as, cwd, sizeof(cwd)))) {
		snprintf(msg, sizeof(msg), "%s", dp_error_last());
		dp_error_clear();
		rc = fail(c, &x, msg);
		*final = true;
		goto out;
	}
	snprintf(prefix, sizeof(prefix), "restore-%s-%lld", name, (long long)x.r.created);
	enum ctl_step step;
	bool changed = false;
	rc = ctl_actions_step(c, prefix, cJSON_GetObjectItemCaseSensitive(x.status, "actions"),
	                      &env, cwd, as.spec, 0, &step, &reason, &changed);
	if (rc)
		goto out;
	if (step == CTL_STEP_FAILED) {
		dp_buf_append(&reason, "", 1);
		rc = fail(c, &x, (const char *)reason.data);
		*final = true;
		goto out;
	}
	if (step == CTL_STEP_DONE) {
		int64_t now = dp_ctl_now(c);
		jset_str(x.status, "phase", "Completed");
		jset_time(x.status, "completionTimestamp", now);
		jset_num(x.status, "duration", (double)(now - jtime(x.status, "startTimestamp")));
		rc = ctl_save(c, &x);
		dp_catalog_event(c->cat, DP_KIND_RESTORE, name, "Normal", "Completed",
		                 "restored backup %s", js(x.status, "backupName"));
		*final = true;
		goto out;
	}
	if (changed)
		rc = ctl_save(c, &x);
out:
	ctl_env_free(&env);
	ctl_res_free(&as);
	ctl_res_free(&x);
	dp_buf_free(&reason);
	return rc;
}

/*
 * BackupSchedule reconciler: turns cron fire times into Backups.
 *
 * Per schedule entry, status.schedules[NAME].lastScheduleTime is the last
 * slot handled (first seen: the clock's now, so a new schedule never fires
 * for the past). Each pass takes the newest slot after it that is not in
 * the future (older missed slots are skipped, as a CronJob does); a slot
 * older than startingDeadlineMinutes is recorded as missed. The Backup is
 * named POLICY-METHOD-yyyymmddHHMMSS from the slot and created BEFORE the
 * slot is recorded, so a controller killed between the two steps finds the
 * Backup on its next pass and records the slot without a second run: a
 * slot never runs twice, whenever the process dies. While another
 * non-continuous backup of the policy runs, the slot waits (no concurrent
 * runs of one policy) until it runs or passes its deadline.
 * A Continuous method gets one long-lived Backup (created at its first
 * slot if none of that policy and method is active); the cron interval
 * becomes its window refresh interval (DP_ARCHIVE_INTERVAL).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl_int.h"
#include "dp/cron.h"
#include "dp/error.h"
#include "dp/log.h"

static bool phase_in(const cJSON *st, const char *a, const char *b)
{
	const char *ph = js(st, "phase");
	return ph && (strcmp(ph, a) == 0 || (b && strcmp(ph, b) == 0));
}

/* Backups of the policy: busy (a non-continuous one New or Running),
 * active continuous one of method (New or Running). */
static int scan(dp_ctl *c, const char *policy, const char *method, bool *busy, bool *cont_active)
{
	dp_resource *v = NULL;
	size_t n = 0;
	int rc = dp_catalog_list(c->cat, DP_KIND_BACKUP, &v, &n);
	*busy = *cont_active = false;
	if (rc)
		return rc;
	for (size_t i = 0; i < n; i++) {
		cJSON *sp = cJSON_Parse(v[i].spec), *st = cJSON_Parse(v[i].status);
		if (js(sp, "backupPolicyName") && strcmp(js(sp, "backupPolicyName"), policy) == 0) {
			bool cont =
			    js(st, "backupType") && strcmp(js(st, "backupType"), "Continuous") == 0;
			bool active = !js(st, "phase") || phase_in(st, "New", "Running");
			if (active && cont && js(sp, "backupMethod") &&
			    strcmp(js(sp, "backupMethod"), method) == 0)
				*cont_active = true;
			/* A New backup's type is not known yet: count it as busy
			 * unless it is of this continuous method. */
			if (active && !cont)
				*busy = true;
		}
		cJSON_Delete(sp);
		cJSON_Delete(st);
	}
	dp_resources_free(v, n);
	return 0;
}

static bool method_continuous(dp_ctl *c, const char *policy, const char *method)
{
	cJSON *m = NULL;
	ctl_res as;
	bool cont = false;
	if (ctl_policy_method(c, policy, method, &m) == 0 && js(m, "actionSetName") &&
	    ctl_load(c, DP_KIND_ACTION_SET, js(m, "actionSetName"), &as) == 0) {
		cont = js(as.spec, "backupType") &&
		       strcmp(js(as.spec, "backupType"), "Continuous") == 0;
		ctl_res_free(&as);
	}
	dp_error_clear();
	cJSON_Delete(m);
	return cont;
}

/* Stops the running continuous backups of method that schedule made. */
static int stop_continuous(dp_ctl *c, const char *schedule, const char *method)
{
	dp_resource *v = NULL;
	size_t n = 0;
	int rc = dp_catalog_list(c->cat, DP_KIND_BACKUP, &v, &n);
	if (rc)
		return rc;
	for (size_t i = 0; i < n && !rc; i++) {
		cJSON *sp = cJSON_Parse(v[i].spec), *st = cJSON_Parse(v[i].status),
		      *meta = cJSON_Parse(v[i].meta);
		const char *by =
		    js(cJSON_GetObjectItemCaseSensitive(meta, "labels"), DP_LABEL_SCHEDULE);
		if (by && strcmp(by, schedule) == 0 && js(sp, "backupMethod") &&
		    strcmp(js(sp, "backupMethod"), method) == 0 && phase_in(st, "Running", NULL) &&
		    js(st, "backupType") && strcmp(js(st, "backupType"), "Continuous") == 0 &&
		    !cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(st, "stopRequested"))) {
			rc = dp_ctl_backup_stop(c, v[i].name);
			if (rc == 0)
				dp_catalog_event(c->cat, DP_KIND_BACKUP_SCHEDULE, schedule,
				                 "Normal", "Stopped",
				                 "%s disabled: stopping continuous backup %s",
				                 method, v[i].name);
		}
		cJSON_Delete(sp);
		cJSON_Delete(st);
		cJSON_Delete(meta);
	}
	dp_resources_free(v, n);
	return rc;
}

static bool exists(dp_ctl *c, const char *name)
{
	dp_resource r = {0};
	int rc = dp_catalog_get(c->cat, DP_KIND_BACKUP, name, &r);
	dp_resource_clear(&r);
	dp_error_clear();
	return rc == 0;
}

int ctl_schedule_reconcile(dp_ctl *c, const char *name, bool *final)
{
	ctl_res x;
	bool changed = false;
	*final = true;
	int rc = ctl_load(c, DP_KIND_BACKUP_SCHEDULE, name, &x);
	if (rc == DP_ENOTFOUND) {
		dp_error_clear();
		return 0;
	}
	if (rc)
		return rc;
	int64_t now = dp_ctl_now(c);
	const char *pn = js(x.spec, "backupPolicyName");
	int64_t deadline = jnum(x.spec, "startingDeadlineMinutes", 0) * 60;
	cJSON *all = jobj(x.status, "schedules");
	const cJSON *list = cJSON_GetObjectItemCaseSensitive(x.spec, "schedules");
	for (const cJSON *it = list ? list->child : NULL; it; it = it->next) {
		const char *sn = js(it, "name") ? js(it, "name") : js(it, "backupMethod");
		const char *mn = js(it, "backupMethod");
		const char *expr = js(it, "cronExpression");
		if (!sn || !mn || !expr)
			continue;
		cJSON *st = jobj(all, sn);
		const cJSON *en = cJSON_GetObjectItemCaseSensitive(it, "enabled");
		if (cJSON_IsFalse(en)) {
			if (!js(st, "phase") || strcmp(js(st, "phase"), "Disabled")) {
				jset_str(st, "phase", "Disabled");
				changed = true;
			}
			/* A continuous backup this schedule started ends (Completed). */
			if ((rc = stop_continuous(c, name, mn)))
				goto out;
			continue;
		}
		dp_cron cron;
		if (dp_cron_parse(&cron, expr) != 0) {
			jset_str(st, "phase", "Failed");
			jset_str(st, "failureReason", dp_error_last());
			dp_error_clear();
			changed = true;
			continue;
		}
		/* lastSuccessfulTime: when the last backup it made completed. */
		if (js(st, "lastBackupName")) {
			ctl_res lb;
			if (ctl_load(c, DP_KIND_BACKUP, js(st, "lastBackupName"), &lb) == 0) {
				const char *done = js(lb.status, "completionTimestamp");
				if (phase_in(lb.status, "Completed", NULL) && done &&
				    (!js(st, "lastSuccessfulTime") ||
				     strcmp(js(st, "lastSuccessfulTime"), done))) {
					jset_str(st, "lastSuccessfulTime", done);
					changed = true;
				}
				ctl_res_free(&lb);
			}
			dp_error_clear();
		}
		int64_t last = jtime(st, "lastScheduleTime");
		if (!last) {
			jset_time(st, "lastScheduleTime", now);
			jset_str(st, "phase", "Running");
			changed = true;
			continue;
		}
		int64_t slot = 0, t = last, next;
		for (int guard = 0; guard < 1000000; guard++) {
			if (dp_cron_next(&cron, t, &next) != 0 || next > now)
				break;
			slot = t = next;
		}
		if (!slot)
			continue;
		char stamp[32], bname[DP_NAME_MAX + 1];
		ctl_stamp(slot, stamp, sizeof(stamp));
		snprintf(bname, sizeof(bname), "%s-%s-%s", pn, mn, stamp);
		if (exists(c, bname)) { /* created before a crash: just record it */
			jset_time(st, "lastScheduleTime", slot);
			jset_str(st, "lastBackupName", bname);
			changed = true;
			continue;
		}
		if (deadline > 0 && now - slot > deadline) {
			jset_time(st, "lastScheduleTime", slot);
			jset_time(st, "lastMissedTime", slot);
			dp_catalog_event(c->cat, DP_KIND_BACKUP_SCHEDULE, name, "Warning", "Missed",
			                 "%s: the run due at %s was not started within "
			                 "startingDeadlineMinutes (%lld)",
			                 sn, stamp, (long long)(deadline / 60));
			changed = true;
			continue;
		}
		bool busy, cont_active;
		if ((rc = scan(c, pn, mn, &busy, &cont_active)))
			goto out;
		bool cont = method_continuous(c, pn, mn);
		if (cont && cont_active) {
			jset_time(st, "lastScheduleTime", slot);
			changed = true;
			continue;
		}
		if (!cont && busy) {
			*final = false; /* waits for the running one */
			continue;
		}
		dp_ctl_backup_req req = {0};
		req.policy = pn;
		req.method = mn;
		req.name = bname;
		req.retention_period = js(it, "retentionPeriod");
		req.schedule = name;
		if ((rc = dp_ctl_backup_create(c, &req, NULL, 0))) {
			jset_str(st, "phase", "Failed");
			jset_str(st, "failureReason", dp_error_last());
			dp_catalog_event(c->cat, DP_KIND_BACKUP_SCHEDULE, name, "Warning",
			                 "BackupNotCreated", "%s: %s", bname, dp_error_last());
			dp_error_clear();
			rc = 0;
			changed = true;
			continue;
		}
		ctl_crashpoint("schedule-created");
		if (cont) {
			/* The cron period is the refresh interval of the window. */
			int64_t a = 0, b = 0;
			if (dp_cron_next(&cron, slot, &a) == 0 && dp_cron_next(&cron, a, &b) == 0) {
				ctl_res bk;
				if (ctl_load(c, DP_KIND_BACKUP, bname, &bk) == 0) {
					jset_num(bk.status, "archiveInterval", (double)(b - a));
					ctl_save(c, &bk);
					ctl_res_free(&bk);
				}
				dp_error_clear();
			}
		}
		dp_catalog_event(c->cat, DP_KIND_BACKUP_SCHEDULE, name, "Normal", "Scheduled",
		                 "%s: created backup %s", sn, bname);
		jset_time(st, "lastScheduleTime", slot);
		jset_str(st, "lastBackupName", bname);
		jset_str(st, "phase", "Running");
		jset_str(st, "failureReason", NULL);
		changed = true;
	}
	const char *ph = js(x.status, "phase");
	if (!ph || strcmp(ph, "Available")) {
		jset_str(x.status, "phase", "Available");
		changed = true;
	}
	if (changed)
		rc = ctl_save(c, &x);
out:
	ctl_res_free(&x);
	return rc;
}

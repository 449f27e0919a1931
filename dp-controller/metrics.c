/*
 * GET /metrics: Prometheus text exposition of the catalog, served through
 * the API's route hook (dp_api_opts.route) with the API's bearer token.
 *
 *   dp_backups{phase}                                      gauge
 *   dp_backup_last_success_timestamp_seconds{policy,method} gauge
 *   dp_backup_last_total_bytes{policy,method}              gauge
 *   dp_backup_stored_bytes{policy}                         gauge (sum over backups)
 *   dp_backup_window_end_timestamp_seconds{backup,policy}  gauge (continuous)
 *   dp_restores{phase}                                     gauge
 *   dp_backuprepo_ready{repo}                              gauge (1 Ready, 0 not)
 *
 * Runs on an API connection thread: it opens its own catalog connection for
 * each request. Label values are resource names ([a-z0-9.-]), so they need
 * no escaping.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl_int.h"
#include "dp/cron.h"
#include "dp/error.h"
#include "metrics.h"

struct pm {
	char policy[DP_NAME_MAX + 1], method[DP_NAME_MAX + 1];
	int64_t last;
	int64_t total;
};

static int64_t num_of(const cJSON *o, const char *k)
{
	return jnum(o, k, 0);
}

static int render(dp_catalog *cat, dp_buf *out)
{
	dp_resource *v = NULL;
	size_t n = 0;
	int rc = dp_catalog_list(cat, DP_KIND_BACKUP, &v, &n);
	if (rc)
		return rc;
	static const char *const phases[] = {"New",    "Running",  "Completed",
	                                     "Failed", "Deleting", NULL};
	long count[6] = {0};
	struct pm *pm = calloc(n ? n : 1, sizeof(*pm));
	size_t npm = 0;
	struct {
		char policy[DP_NAME_MAX + 1];
		int64_t stored;
	} *ps = calloc(n ? n : 1, sizeof(*ps));
	size_t nps = 0;
	if (!pm || !ps) {
		free(pm);
		free(ps);
		dp_resources_free(v, n);
		return dp_error_set(DP_ERROR, "out of memory");
	}
	dp_buf_appendf(out, "# HELP dp_backup_window_end_timestamp_seconds End of the recoverable "
	                    "window of a continuous backup.\n"
	                    "# TYPE dp_backup_window_end_timestamp_seconds gauge\n");
	for (size_t i = 0; i < n; i++) {
		cJSON *sp = cJSON_Parse(v[i].spec), *st = cJSON_Parse(v[i].status);
		const char *ph = js(st, "phase") ? js(st, "phase") : "New";
		for (int k = 0; phases[k]; k++)
			if (strcmp(ph, phases[k]) == 0)
				count[k]++;
		const char *pol = js(sp, "backupPolicyName"), *mth = js(sp, "backupMethod");
		if (pol && mth && strcmp(ph, "Completed") == 0) {
			size_t k = 0;
			while (k < npm && (strcmp(pm[k].policy, pol) || strcmp(pm[k].method, mth)))
				k++;
			if (k == npm) {
				snprintf(pm[k].policy, sizeof(pm[k].policy), "%s", pol);
				snprintf(pm[k].method, sizeof(pm[k].method), "%s", mth);
				npm++;
			}
			int64_t t = jtime(st, "completionTimestamp");
			if (t >= pm[k].last) {
				pm[k].last = t;
				pm[k].total = num_of(st, "totalSize");
			}
		}
		if (pol) {
			size_t k = 0;
			while (k < nps && strcmp(ps[k].policy, pol))
				k++;
			if (k == nps) {
				snprintf(ps[k].policy, sizeof(ps[k].policy), "%s", pol);
				nps++;
			}
			ps[k].stored += num_of(st, "storedSize");
		}
		const cJSON *tr = cJSON_GetObjectItemCaseSensitive(st, "timeRange");
		if (js(st, "backupType") && strcmp(js(st, "backupType"), "Continuous") == 0 && tr &&
		    jtime(tr, "end"))
			dp_buf_appendf(
			    out,
			    "dp_backup_window_end_timestamp_seconds{backup=\"%s\",policy=\"%s\"}"
			    " %lld\n",
			    v[i].name, pol ? pol : "", (long long)jtime(tr, "end"));
		cJSON_Delete(sp);
		cJSON_Delete(st);
	}
	dp_buf_appendf(out, "# HELP dp_backups Backups by phase.\n# TYPE dp_backups gauge\n");
	for (int k = 0; phases[k]; k++)
		dp_buf_appendf(out, "dp_backups{phase=\"%s\"} %ld\n", phases[k], count[k]);
	dp_buf_appendf(out,
	               "# HELP dp_backup_last_success_timestamp_seconds Completion time of the "
	               "newest completed backup.\n"
	               "# TYPE dp_backup_last_success_timestamp_seconds gauge\n");
	for (size_t k = 0; k < npm; k++)
		dp_buf_appendf(
		    out,
		    "dp_backup_last_success_timestamp_seconds{policy=\"%s\",method=\"%s\"} "
		    "%lld\n",
		    pm[k].policy, pm[k].method, (long long)pm[k].last);
	dp_buf_appendf(out,
	               "# HELP dp_backup_last_total_bytes Logical size of the newest completed "
	               "backup.\n# TYPE dp_backup_last_total_bytes gauge\n");
	for (size_t k = 0; k < npm; k++)
		dp_buf_appendf(out,
		               "dp_backup_last_total_bytes{policy=\"%s\",method=\"%s\"} %lld\n",
		               pm[k].policy, pm[k].method, (long long)pm[k].total);
	dp_buf_appendf(out, "# HELP dp_backup_stored_bytes Bytes the policy's backups added to "
	                    "their repository.\n# TYPE dp_backup_stored_bytes gauge\n");
	for (size_t k = 0; k < nps; k++)
		dp_buf_appendf(out, "dp_backup_stored_bytes{policy=\"%s\"} %lld\n", ps[k].policy,
		               (long long)ps[k].stored);
	free(pm);
	free(ps);
	dp_resources_free(v, n);

	long rcount[3] = {0};
	static const char *const rph[] = {"Running", "Completed", "Failed", NULL};
	if ((rc = dp_catalog_list(cat, DP_KIND_RESTORE, &v, &n)))
		return rc;
	for (size_t i = 0; i < n; i++) {
		cJSON *st = cJSON_Parse(v[i].status);
		for (int k = 0; rph[k]; k++)
			if (js(st, "phase") && strcmp(js(st, "phase"), rph[k]) == 0)
				rcount[k]++;
		cJSON_Delete(st);
	}
	dp_resources_free(v, n);
	dp_buf_appendf(out, "# HELP dp_restores Restores by phase.\n# TYPE dp_restores gauge\n");
	for (int k = 0; rph[k]; k++)
		dp_buf_appendf(out, "dp_restores{phase=\"%s\"} %ld\n", rph[k], rcount[k]);

	if ((rc = dp_catalog_list(cat, DP_KIND_BACKUP_REPO, &v, &n)))
		return rc;
	dp_buf_appendf(out, "# HELP dp_backuprepo_ready 1 if the repository passed its pre-check.\n"
	                    "# TYPE dp_backuprepo_ready gauge\n");
	for (size_t i = 0; i < n; i++) {
		cJSON *st = cJSON_Parse(v[i].status);
		dp_buf_appendf(out, "dp_backuprepo_ready{repo=\"%s\"} %d\n", v[i].name,
		               js(st, "phase") && strcmp(js(st, "phase"), "Ready") == 0);
		cJSON_Delete(st);
	}
	dp_resources_free(v, n);
	return 0;
}

int dp_ctl_metrics_route(void *arg, const char *method, const char *path, int authorized,
                         dp_buf *body, const char **content_type)
{
	const char *catalog_path = arg;
	if (strcmp(path, "/metrics") != 0)
		return 0;
	if (!authorized)
		return DP_EAUTH;
	if (strcmp(method, "GET") != 0) {
		*content_type = "text/plain; charset=utf-8";
		dp_buf_appendf(body, "use GET\n");
		return 405;
	}
	dp_catalog *cat = NULL;
	int rc = dp_catalog_open(&cat, catalog_path);
	if (!rc) {
		dp_catalog_set_actor(cat, "metrics");
		rc = render(cat, body);
	}
	dp_catalog_close(cat);
	if (rc)
		return rc;
	*content_type = "text/plain; version=0.0.4; charset=utf-8";
	return 200;
}

/*
 * Private to dp-controller/: the controller object and the helpers the
 * reconcilers share (resource load/save as cJSON, secrets, worker env, the
 * action runner). cJSON stays out of include/dp/.
 */
#ifndef DP_CTL_INT_H
#define DP_CTL_INT_H

#include <cjson/cJSON.h>
#include <limits.h>
#include <stdbool.h>

#include "dp/buf.h"
#include "dp/catalog.h"
#include "dp/controller.h"
#include "dp/repo.h"
#include "dp/resource.h"
#include "runtime.h"

#define DP_LABEL_SCHEDULE "dataprotection.dp.io/backup-schedule"

struct dp_ctl {
	dp_catalog *cat;
	dp_rt *rt;
	char home[PATH_MAX];
	char logdir[PATH_MAX];
	char lockdir[PATH_MAX];
	char methods[PATH_MAX]; /* "" if none found */
	char worker[PATH_MAX]; /* dp-worker, absolute, or "" */
	dp_ctl_clock_fn clock;
	void *clock_arg;
	int archive_interval;
	int gc_interval;
	int64_t last_gc;
};

/* A resource with its JSON parsed. */
typedef struct ctl_res {
	dp_resource r;
	cJSON *spec, *status, *meta;
} ctl_res;

int ctl_load(dp_ctl *c, dp_kind kind, const char *name, ctl_res *out);
void ctl_res_free(ctl_res *x);
/* Writes x->status (expecting x->r.resource_version), refreshes the rv. */
int ctl_save(dp_ctl *c, ctl_res *x);

const char *js(const cJSON *o, const char *key); /* string member or NULL */
int64_t jnum(const cJSON *o, const char *key, int64_t dflt); /* number or numeric string */
void jset_str(cJSON *o, const char *key, const char *v); /* replace; NULL removes */
void jset_num(cJSON *o, const char *key, double v);
void jset_time(cJSON *o, const char *key, int64_t t); /* RFC 3339 */
int64_t jtime(const cJSON *o, const char *key); /* RFC 3339 member, 0 if none */
cJSON *jobj(cJSON *o, const char *key); /* member object, created if missing */

/* A secret from {env: NAME} or {file: PATH}: value read into out (wipe it). */
int ctl_secret_read(const cJSON *from, const char *what, dp_buf *out);

/* Opens the repository of BackupRepo spec (passphrase from its source). */
int ctl_repo_open(dp_ctl *c, const char *repo_name, dp_repo **out);
/* The repository URL of a BackupRepo spec. */
int ctl_repo_url(const cJSON *spec, char *out, size_t outlen);

/* Per-resource advisory lock (non-blocking): 1 locked, 0 busy. */
int ctl_lock(dp_ctl *c, dp_kind kind, const char *name, int *fd);
void ctl_unlock(int fd);

/* ---- environment of a worker ---- */
typedef struct ctl_env {
	char **v;
	size_t n, cap;
} ctl_env;
int ctl_env_set(ctl_env *e, const char *key, const char *val); /* replaces */
void ctl_env_free(ctl_env *e); /* wipes the values */
/* Base env (PATH, HOME, ...), the repository (DP_REPO + passphrase source),
 * the policy's target (DP_DB_*, DP_DATA_DIR), DP_WORKER, then the ActionSet's
 * env and the method's env. */
int ctl_env_build(dp_ctl *c, ctl_env *e, const cJSON *policy, const char *repo_name,
                  const cJSON *actionset, const cJSON *method);

/* ---- actions ---- */
/* status.actions: [{name, type, phase (Pending|Running|Completed|Failed),
 * job, pid, pidStart, attempt, exitCode, startTimestamp,
 * completionTimestamp, onError}] built from an ActionSet. */
enum ctl_step { CTL_STEP_DONE, CTL_STEP_RUNNING, CTL_STEP_FAILED };
/* Advances the actions as far as they go: launches the next pending one,
 * polls a running one. keep_running: the index of an action that may run
 * forever (continuous backupData), -1 if none. On FAILED, reason holds the
 * failed action's name, exit and last stderr lines. retries: the attempts
 * left per action (backoffLimit). *changed: status was modified. */
int ctl_actions_step(dp_ctl *c, const char *prefix, cJSON *actions, ctl_env *env, const char *cwd,
                     const cJSON *actionset, int backoff_limit, enum ctl_step *step, dp_buf *reason,
                     bool *changed);
/* Adds an action entry. */
void ctl_action_add(cJSON *actions, const char *name, const char *type, const cJSON *def);
/* The job id of an action entry's current attempt. */
void ctl_action_job(const cJSON *a, char *out, size_t outlen);

/* Reconcilers. */
int ctl_repo_reconcile(dp_ctl *c, const char *name, bool *final);
int ctl_backup_reconcile(dp_ctl *c, const char *name, bool *final);
int ctl_schedule_reconcile(dp_ctl *c, const char *name, bool *final);
int ctl_restore_reconcile(dp_ctl *c, const char *name, bool *final);
int ctl_gc(dp_ctl *c);
/* Writes the backup record into its repository (catalog/NAME.json). */
int ctl_backup_store_record(dp_ctl *c, const char *name);

/* Looks up the method of a policy: its {name, actionSetName, env} (owned). */
int ctl_policy_method(dp_ctl *c, const char *policy, const char *method, cJSON **out);
/* The ActionSet's working directory: its method-dir annotation, else home. */
void ctl_actionset_dir(dp_ctl *c, const ctl_res *as, char *out, size_t outlen);

/* Fault injection for tests: if $DP_CTL_CRASH_AT names this point, the
 * process kills itself (SIGKILL) here, as a crash between two steps would. */
void ctl_crashpoint(const char *point);

/* "20260507092000" from t. */
void ctl_stamp(int64_t t, char *out, size_t outlen);

#endif

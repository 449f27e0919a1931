/*
 * The controller object and what every reconciler shares: loading and saving
 * resources as cJSON, secrets, per-resource locks, worker environments, the
 * built-in ActionSets, the sync pass and the drive/wait loops.
 *
 * Invariant: status is only written with the resourceVersion that was read
 * (ctl_save), so two reconcilers never overwrite each other silently; the
 * loser gets DP_ETRANSIENT and its next pass starts again from the catalog.
 * One thread per dp_ctl.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ctl_int.h"
#include "dp/cron.h"
#include "dp/crypto.h"
#include "dp/error.h"
#include "dp/log.h"
#include "dp/resource.h"

/* ---- JSON helpers ---- */

const char *js(const cJSON *o, const char *key)
{
	const cJSON *v = o ? cJSON_GetObjectItemCaseSensitive(o, key) : NULL;
	return cJSON_IsString(v) ? v->valuestring : NULL;
}

int64_t jnum(const cJSON *o, const char *key, int64_t dflt)
{
	const cJSON *v = o ? cJSON_GetObjectItemCaseSensitive(o, key) : NULL;
	if (cJSON_IsNumber(v))
		return (int64_t)v->valuedouble;
	if (cJSON_IsString(v) && v->valuestring[0]) {
		char *end;
		long long x = strtoll(v->valuestring, &end, 10);
		if (*end == 0)
			return x;
	}
	return dflt;
}

void jset_str(cJSON *o, const char *key, const char *v)
{
	cJSON_DeleteItemFromObjectCaseSensitive(o, key);
	if (v)
		cJSON_AddStringToObject(o, key, v);
}

void jset_num(cJSON *o, const char *key, double v)
{
	cJSON_DeleteItemFromObjectCaseSensitive(o, key);
	cJSON_AddNumberToObject(o, key, v);
}

void jset_time(cJSON *o, const char *key, int64_t t)
{
	char b[32];
	dp_time_format(b, sizeof(b), t);
	jset_str(o, key, b);
}

int64_t jtime(const cJSON *o, const char *key)
{
	const char *s = js(o, key);
	int64_t t = 0;
	if (!s || dp_time_parse(&t, s) != 0)
		return 0;
	return t;
}

cJSON *jobj(cJSON *o, const char *key)
{
	cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
	if (cJSON_IsObject(v))
		return v;
	cJSON_DeleteItemFromObjectCaseSensitive(o, key);
	v = cJSON_CreateObject();
	cJSON_AddItemToObject(o, key, v);
	return v;
}

void ctl_crashpoint(const char *point)
{
	const char *at = getenv("DP_CTL_CRASH_AT");
	if (at && strcmp(at, point) == 0)
		raise(SIGKILL);
}

void ctl_stamp(int64_t t, char *out, size_t outlen)
{
	time_t tt = (time_t)t;
	struct tm tm;
	gmtime_r(&tt, &tm);
	strftime(out, outlen, "%Y%m%d%H%M%S", &tm);
}

/* ---- resources ---- */

static cJSON *parse_obj(const char *s)
{
	cJSON *v = s ? cJSON_Parse(s) : NULL;
	if (!cJSON_IsObject(v)) {
		cJSON_Delete(v);
		v = cJSON_CreateObject();
	}
	return v;
}

int ctl_load(dp_ctl *c, dp_kind kind, const char *name, ctl_res *out)
{
	memset(out, 0, sizeof(*out));
	int rc = dp_catalog_get(c->cat, kind, name, &out->r);
	if (rc)
		return rc;
	out->spec = parse_obj(out->r.spec);
	out->status = parse_obj(out->r.status);
	out->meta = parse_obj(out->r.meta);
	return 0;
}

void ctl_res_free(ctl_res *x)
{
	dp_resource_clear(&x->r);
	cJSON_Delete(x->spec);
	cJSON_Delete(x->status);
	cJSON_Delete(x->meta);
	memset(x, 0, sizeof(*x));
}

int ctl_save(dp_ctl *c, ctl_res *x)
{
	char *text = cJSON_PrintUnformatted(x->status);
	if (!text)
		return dp_error_set(DP_ERROR, "out of memory");
	int64_t rv = 0;
	int rc =
	    dp_catalog_set_status(c->cat, x->r.kind, x->r.name, text, x->r.resource_version, &rv);
	free(text);
	if (rc == 0)
		x->r.resource_version = rv;
	return rc;
}

/* ---- secrets ---- */

int ctl_secret_read(const cJSON *from, const char *what, dp_buf *out)
{
	const char *env = js(from, "env"), *file = js(from, "file");
	if (env) {
		const char *v = getenv(env);
		if (!v || !v[0])
			return dp_error_set(
			    DP_EUSAGE,
			    "%s: environment variable \"%s\" is not set (set it in the "
			    "environment of dp or dp-controller)",
			    what, env);
		return dp_buf_append(out, v, strlen(v));
	}
	if (file) {
		FILE *f = fopen(file, "r");
		if (!f)
			return dp_error_errno(DP_EUSAGE, errno, "%s: cannot read \"%s\"", what,
			                      file);
		char line[4096];
		if (!fgets(line, sizeof(line), f)) {
			fclose(f);
			return dp_error_set(DP_EUSAGE, "%s: \"%s\" is empty", what, file);
		}
		fclose(f);
		size_t n = strcspn(line, "\r\n");
		int rc = dp_buf_append(out, line, n);
		dp_wipe(line, sizeof(line));
		return rc;
	}
	return dp_error_set(DP_EUSAGE, "%s: give {env: NAME} or {file: PATH}", what);
}

/* ---- repositories ---- */

int ctl_repo_url(const cJSON *spec, char *out, size_t outlen)
{
	const cJSON *posix = cJSON_GetObjectItemCaseSensitive(spec, "posix");
	const cJSON *s3 = cJSON_GetObjectItemCaseSensitive(spec, "s3");
	if (posix && js(posix, "path"))
		snprintf(out, outlen, "%s", js(posix, "path"));
	else if (s3 && js(s3, "bucket"))
		snprintf(out, outlen, "s3://%s/%s", js(s3, "bucket"),
		         js(s3, "prefix") ? js(s3, "prefix") : "");
	else
		return dp_error_set(DP_EUSAGE, "the repository has neither posix nor s3 storage");
	return 0;
}

static void s3_opts(const cJSON *spec, dp_backend_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->retries = -1;
	const cJSON *s3 = cJSON_GetObjectItemCaseSensitive(spec, "s3");
	if (!s3)
		return;
	o->s3_endpoint = js(s3, "endpoint");
	o->s3_region = js(s3, "region");
	o->s3_uri_style = js(s3, "uriStyle");
}

int ctl_repo_open(dp_ctl *c, const char *repo_name, dp_repo **out)
{
	ctl_res r;
	dp_buf pass = {0};
	char url[PATH_MAX], what[300];
	int rc = ctl_load(c, DP_KIND_BACKUP_REPO, repo_name, &r);
	if (rc)
		return rc;
	if ((rc = ctl_repo_url(r.spec, url, sizeof(url))))
		goto out;
	snprintf(what, sizeof(what), "backuprepo \"%s\": spec.encryption.passphraseFrom",
	         repo_name);
	if ((rc = ctl_secret_read(
	         cJSON_GetObjectItemCaseSensitive(
	             cJSON_GetObjectItemCaseSensitive(r.spec, "encryption"), "passphraseFrom"),
	         what, &pass)) ||
	    (rc = dp_buf_append(&pass, "", 1)))
		goto out;
	dp_backend_opts o;
	s3_opts(r.spec, &o);
	rc = dp_repo_open(out, url, &o, (const char *)pass.data);
	if (rc)
		dp_error_prefix("backuprepo \"%s\"", repo_name);
out:
	dp_buf_wipe(&pass);
	ctl_res_free(&r);
	return rc;
}

/* ---- locks ---- */

int ctl_lock(dp_ctl *c, dp_kind kind, const char *name, int *fd)
{
	char p[PATH_MAX + 300];
	snprintf(p, sizeof(p), "%s/%s-%s.lock", c->lockdir, dp_kind_lower(kind), name);
	int f = open(p, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (f < 0)
		return dp_error_errno(DP_ERROR, errno, "cannot open lock \"%s\"", p);
	if (flock(f, LOCK_EX | LOCK_NB) != 0) {
		close(f);
		*fd = -1;
		return 0;
	}
	*fd = f;
	return 1;
}

void ctl_unlock(int fd)
{
	if (fd >= 0)
		close(fd);
}

/* ---- worker environment ---- */

int ctl_env_set(ctl_env *e, const char *key, const char *val)
{
	size_t kl = strlen(key);
	char *kv = malloc(kl + strlen(val) + 2);
	if (!kv)
		return dp_error_set(DP_ERROR, "out of memory");
	memcpy(kv, key, kl);
	kv[kl] = '=';
	memcpy(kv + kl + 1, val, strlen(val) + 1);
	for (size_t i = 0; i < e->n; i++) {
		if (strncmp(e->v[i], key, kl) == 0 && e->v[i][kl] == '=') {
			dp_wipe(e->v[i], strlen(e->v[i]));
			free(e->v[i]);
			e->v[i] = kv;
			return 0;
		}
	}
	if (e->n + 2 > e->cap) {
		size_t cap = e->cap ? e->cap * 2 : 32;
		char **v = realloc(e->v, cap * sizeof(*v));
		if (!v) {
			free(kv);
			return dp_error_set(DP_ERROR, "out of memory");
		}
		e->v = v;
		e->cap = cap;
	}
	e->v[e->n++] = kv;
	e->v[e->n] = NULL;
	return 0;
}

void ctl_env_free(ctl_env *e)
{
	for (size_t i = 0; i < e->n; i++) {
		dp_wipe(e->v[i], strlen(e->v[i]));
		free(e->v[i]);
	}
	free(e->v);
	memset(e, 0, sizeof(*e));
}

/* env: [{name, value}|{name, valueFrom: {env|file}}] */
static int env_list(ctl_env *e, const cJSON *list, const char *what)
{
	for (const cJSON *x = list ? list->child : NULL; x; x = x->next) {
		const char *n = js(x, "name");
		if (!n)
			continue;
		const cJSON *from = cJSON_GetObjectItemCaseSensitive(x, "valueFrom");
		int rc;
		if (from) {
			dp_buf v = {0};
			if ((rc = ctl_secret_read(from, what, &v)) == 0 &&
			    (rc = dp_buf_append(&v, "", 1)) == 0)
				rc = ctl_env_set(e, n, (const char *)v.data);
			dp_buf_wipe(&v);
		} else {
			rc = ctl_env_set(e, n, js(x, "value") ? js(x, "value") : "");
		}
		if (rc)
			return rc;
	}
	return 0;
}

int ctl_env_build(dp_ctl *c, ctl_env *e, const cJSON *policy, const char *repo_name,
                  const cJSON *actionset, const cJSON *method)
{
	static const char *const keep[] = {"PATH",   "HOME",   "USER", "LANG",
	                                   "LC_ALL", "TMPDIR", "TZ",   NULL};
	char buf[PATH_MAX + 64], what[300];
	int rc = 0;
	for (int i = 0; keep[i]; i++)
		if (getenv(keep[i]) && (rc = ctl_env_set(e, keep[i], getenv(keep[i]))))
			return rc;
	if (!getenv("PATH") && (rc = ctl_env_set(e, "PATH", "/usr/local/bin:/usr/bin:/bin")))
		return rc;
	if (c->worker[0] && (rc = ctl_env_set(e, "DP_WORKER", c->worker)))
		return rc;
	if ((rc = ctl_env_set(e, "DP_HOME", c->home)))
		return rc;
	if (repo_name) {
		ctl_res r;
		if ((rc = ctl_load(c, DP_KIND_BACKUP_REPO, repo_name, &r)))
			return rc;
		if ((rc = ctl_repo_url(r.spec, buf, sizeof(buf))) == 0)
			rc = ctl_env_set(e, "DP_REPO", buf);
		const cJSON *from = cJSON_GetObjectItemCaseSensitive(
		    cJSON_GetObjectItemCaseSensitive(r.spec, "encryption"), "passphraseFrom");
		if (!rc && js(from, "file")) {
			rc = ctl_env_set(e, "DP_REPO_PASSPHRASE_FILE", js(from, "file"));
		} else if (!rc) {
			dp_buf v = {0};
			snprintf(what, sizeof(what),
			         "backuprepo \"%s\": spec.encryption.passphraseFrom", repo_name);
			if ((rc = ctl_secret_read(from, what, &v)) == 0 &&
			    (rc = dp_buf_append(&v, "", 1)) == 0)
				rc = ctl_env_set(e, "DP_REPO_PASSPHRASE", (const char *)v.data);
			dp_buf_wipe(&v);
		}
		/* S3: where, and the credentials (read from their sources). */
		const cJSON *s3 = cJSON_GetObjectItemCaseSensitive(r.spec, "s3");
		static const char *const s3env[][2] = {{"endpoint", "DP_S3_ENDPOINT"},
		                                       {"region", "DP_S3_REGION"},
		                                       {"uriStyle", "DP_S3_URI_STYLE"}};
		for (int i = 0; !rc && s3 && i < 3; i++)
			if (js(s3, s3env[i][0]))
				rc = ctl_env_set(e, s3env[i][1], js(s3, s3env[i][0]));
		if (!rc && s3 && js(s3, "region"))
			rc = ctl_env_set(e, "AWS_REGION", js(s3, "region"));
		const cJSON *cred = cJSON_GetObjectItemCaseSensitive(s3, "credentials");
		static const char *const credenv[][2] = {
		    {"accessKeyIdFrom", "AWS_ACCESS_KEY_ID"},
		    {"secretAccessKeyFrom", "AWS_SECRET_ACCESS_KEY"},
		    {"sessionTokenFrom", "AWS_SESSION_TOKEN"}};
		for (int i = 0; !rc && cred && i < 3; i++) {
			const cJSON *src = cJSON_GetObjectItemCaseSensitive(cred, credenv[i][0]);
			if (!src)
				continue;
			dp_buf v = {0};
			snprintf(what, sizeof(what), "backuprepo \"%s\": spec.s3.credentials.%s",
			         repo_name, credenv[i][0]);
			if ((rc = ctl_secret_read(src, what, &v)) == 0 &&
			    (rc = dp_buf_append(&v, "", 1)) == 0)
				rc = ctl_env_set(e, credenv[i][1], (const char *)v.data);
			dp_buf_wipe(&v);
		}
		ctl_res_free(&r);
		if (rc)
			return rc;
	}
	const cJSON *t = cJSON_GetObjectItemCaseSensitive(policy, "target");
	if (t) {
		if (js(t, "host") && (rc = ctl_env_set(e, "DP_DB_HOST", js(t, "host"))))
			return rc;
		if (jnum(t, "port", 0) > 0) {
			snprintf(buf, sizeof(buf), "%lld", (long long)jnum(t, "port", 0));
			if ((rc = ctl_env_set(e, "DP_DB_PORT", buf)))
				return rc;
		}
		if (js(t, "user") && (rc = ctl_env_set(e, "DP_DB_USER", js(t, "user"))))
			return rc;
		if (js(t, "dataDir") && (rc = ctl_env_set(e, "DP_DATA_DIR", js(t, "dataDir"))))
			return rc;
		if (js(t, "engine") && (rc = ctl_env_set(e, "DP_ENGINE", js(t, "engine"))))
			return rc;
		const cJSON *pw = cJSON_GetObjectItemCaseSensitive(t, "passwordFrom");
		if (pw) {
			dp_buf v = {0};
			snprintf(what, sizeof(what), "backuppolicy: spec.target.passwordFrom");
			if ((rc = ctl_secret_read(pw, what, &v)) == 0 &&
			    (rc = dp_buf_append(&v, "", 1)) == 0)
				rc = ctl_env_set(e, "DP_DB_PASSWORD", (const char *)v.data);
			dp_buf_wipe(&v);
			if (rc)
				return rc;
		}
	}
	if ((rc = env_list(e, cJSON_GetObjectItemCaseSensitive(actionset, "env"), "actionset env")))
		return rc;
	return env_list(e, cJSON_GetObjectItemCaseSensitive(method, "env"), "backup method env");
}

/* ---- actions ---- */

void ctl_action_add(cJSON *actions, const char *name, const char *type, const cJSON *def)
{
	cJSON *a = cJSON_CreateObject();
	cJSON_AddStringToObject(a, "name", name);
	cJSON_AddStringToObject(a, "type", type);
	cJSON_AddStringToObject(a, "phase", "Pending");
	cJSON_AddNumberToObject(a, "attempt", 0);
	cJSON_AddStringToObject(a, "onError", js(def, "onError") ? js(def, "onError") : "Fail");
	if (js(def, "timeout"))
		cJSON_AddStringToObject(a, "timeout", js(def, "timeout"));
	cJSON_AddItemToObject(a, "command",
	                      cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(def, "command"), 1));
	cJSON_AddItemToArray(actions, a);
}

void ctl_action_job(const cJSON *a, char *out, size_t outlen)
{
	snprintf(out, outlen, "%s.%lld", js(a, "job") ? js(a, "job") : "job",
	         (long long)jnum(a, "attempt", 0));
}

static int launch_action(dp_ctl *c, cJSON *a, ctl_env *env, const char *cwd)
{
	char id[600];
	ctl_action_job(a, id, sizeof(id));
	const cJSON *cmd = cJSON_GetObjectItemCaseSensitive(a, "command");
	size_t n = (size_t)cJSON_GetArraySize(cmd);
	if (!n)
		return dp_error_set(DP_EUSAGE, "action \"%s\" has no command", js(a, "name"));
	char **argv = calloc(n + 1, sizeof(*argv));
	if (!argv)
		return dp_error_set(DP_ERROR, "out of memory");
	size_t i = 0;
	for (const cJSON *x = cmd->child; x; x = x->next)
		argv[i++] = cJSON_IsString(x) ? x->valuestring : "";
	char info[PATH_MAX];
	c->rt->path(c->rt, id, "info", info, sizeof(info));
	int rc = ctl_env_set(env, "DP_BACKUP_INFO_FILE", info);
	dp_rt_handle h = {0};
	if (!rc) {
		dp_rt_job job = {id, argv, cwd, env->v};
		rc = c->rt->launch(c->rt, &job, &h);
		if (rc == DP_EEXIST) {
			/* Started before (by us before a crash, or another process):
			 * adopt it instead. */
			dp_error_clear();
			rc = 0;
		}
	}
	free(argv);
	if (rc)
		return rc;
	ctl_crashpoint("action-launched");
	jset_str(a, "phase", "Running");
	jset_num(a, "pid", (double)h.pid);
	jset_num(a, "pidStart", (double)h.start);
	jset_time(a, "startTimestamp", dp_ctl_now(c));
	return 0;
}

int ctl_actions_step(dp_ctl *c, const char *prefix, cJSON *actions, ctl_env *env, const char *cwd,
                     const cJSON *actionset, int backoff_limit, enum ctl_step *step, dp_buf *reason,
                     bool *changed)
{
	(void)actionset;
	*step = CTL_STEP_DONE;
	int i = 0;
	for (cJSON *a = actions ? actions->child : NULL; a; a = a->next, i++) {
		const char *ph = js(a, "phase");
		if (ph && (strcmp(ph, "Completed") == 0 || strcmp(ph, "Skipped") == 0))
			continue;
		if (ph && strcmp(ph, "Failed") == 0) {
			if (js(a, "onError") && strcmp(js(a, "onError"), "Continue") == 0)
				continue;
			*step = CTL_STEP_FAILED;
			if (reason && js(a, "reason"))
				dp_buf_appendf(reason, "%s", js(a, "reason"));
			return 0;
		}
		if (!js(a, "job")) {
			char job[520];
			snprintf(job, sizeof(job), "%s.%d-%s", prefix, i, js(a, "type"));
			jset_str(a, "job", job);
		}
		if (!ph || strcmp(ph, "Pending") == 0) {
			int rc = launch_action(c, a, env, cwd);
			*changed = true;
			if (rc) {
				jset_str(a, "phase", "Failed");
				jset_str(a, "reason", dp_error_last());
				*step = CTL_STEP_FAILED;
				if (reason)
					dp_buf_appendf(reason, "%s", dp_error_last());
				return 0;
			}
			*step = CTL_STEP_RUNNING;
			return 0;
		}
		/* Running: look at the worker. */
		char id[600];
		ctl_action_job(a, id, sizeof(id));
		dp_rt_handle h = {(long)jnum(a, "pid", 0),
		                  (unsigned long long)jnum(a, "pidStart", 0)};
		enum dp_rt_state st;
		int code = -1;
		int rc = c->rt->poll(c->rt, id, &h, &st, &code);
		if (rc)
			return rc;
		if (jnum(a, "pid", 0) != h.pid) {
			jset_num(a, "pid", (double)h.pid);
			jset_num(a, "pidStart", (double)h.start);
			*changed = true;
		}
		int64_t limit = 0;
		bool timed_out = false;
		if (st == DP_RT_RUNNING && js(a, "timeout") &&
		    dp_duration_parse(&limit, js(a, "timeout")) == 0 && limit > 0 &&
		    dp_ctl_now(c) - jtime(a, "startTimestamp") > limit) {
			/* Over its timeout: stopped, and failed like a worker that
			 * died (retried within backoffLimit). */
			c->rt->stop(c->rt, &h, 5000);
			c->rt->poll(c->rt, id, &h, &st, &code);
			timed_out = true;
		}
		dp_error_clear();
		if (st == DP_RT_RUNNING) {
			*step = CTL_STEP_RUNNING;
			return 0;
		}
		*changed = true;
		jset_time(a, "completionTimestamp", dp_ctl_now(c));
		jset_num(a, "exitCode", code);
		if (st == DP_RT_EXITED && code == 0) {
			ctl_crashpoint("action-exited");
			jset_str(a, "phase", "Completed");
			continue;
		}
		dp_buf tail = {0}, msg = {0};
		dp_rt_log_tail(c->rt, id, 5, &tail);
		dp_buf_append(&tail, "", 1);
		if (timed_out)
			dp_buf_appendf(&msg,
			               "action \"%s\" (%s) timed out after %s and was stopped",
			               js(a, "name"), js(a, "type"), js(a, "timeout"));
		else if (st == DP_RT_LOST)
			dp_buf_appendf(&msg,
			               "action \"%s\" (%s): worker pid %ld ended without a result "
			               "(killed, or the host restarted)",
			               js(a, "name"), js(a, "type"), h.pid);
		else
			dp_buf_appendf(&msg, "action \"%s\" (%s) failed with exit status %d",
			               js(a, "name"), js(a, "type"), code);
		if (tail.len > 1)
			dp_buf_appendf(&msg, ": %s", (const char *)tail.data);
		dp_buf_append(&msg, "", 1);
		dp_buf_free(&tail);
		int attempt = (int)jnum(a, "attempt", 0);
		if (attempt < backoff_limit) {
			dp_warn("%s; retrying (attempt %d of %d)", (const char *)msg.data,
			        attempt + 2, backoff_limit + 1);
			jset_num(a, "attempt", attempt + 1);
			jset_str(a, "lastFailure", (const char *)msg.data);
			dp_buf_free(&msg);
			if ((rc = launch_action(c, a, env, cwd))) {
				jset_str(a, "phase", "Failed");
				jset_str(a, "reason", dp_error_last());
				*step = CTL_STEP_FAILED;
				if (reason)
					dp_buf_appendf(reason, "%s", dp_error_last());
				return 0;
			}
			*step = CTL_STEP_RUNNING;
			return 0;
		}
		jset_str(a, "phase", "Failed");
		jset_str(a, "reason", (const char *)msg.data);
		if (js(a, "onError") && strcmp(js(a, "onError"), "Continue") == 0) {
			dp_buf_free(&msg);
			continue;
		}
		*step = CTL_STEP_FAILED;
		if (reason)
			dp_buf_appendf(reason, "%s", (const char *)msg.data);
		dp_buf_free(&msg);
		return 0;
	}
	return 0;
}

/* ---- policies, methods, ActionSets ---- */

int ctl_policy_method(dp_ctl *c, const char *policy, const char *method, cJSON **out)
{
	dp_buf b = {0};
	int rc = dp_catalog_policy_methods(c->cat, policy, &b);
	cJSON *arr = NULL;
	*out = NULL;
	if (rc)
		goto out;
	if ((rc = dp_buf_append(&b, "", 1)))
		goto out;
	arr = cJSON_Parse((const char *)b.data);
	for (cJSON *m = arr ? arr->child : NULL; m; m = m->next) {
		if (js(m, "name") && strcmp(js(m, "name"), method) == 0) {
			*out = cJSON_DetachItemViaPointer(arr, m);
			goto out;
		}
	}
	rc = dp_error_set(DP_ENOTFOUND, "backuppolicy \"%s\" has no method \"%s\"", policy, method);
out:
	cJSON_Delete(arr);
	dp_buf_free(&b);
	return rc;
}

void ctl_actionset_dir(dp_ctl *c, const ctl_res *as, char *out, size_t outlen)
{
	const char *d =
	    js(cJSON_GetObjectItemCaseSensitive(as->meta, "annotations"), DP_ANNOT_METHOD_DIR);
	snprintf(out, outlen, "%s", d ? d : c->home);
}

/* ---- open/close ---- */

static int64_t sys_clock(void *arg)
{
	(void)arg;
	return (int64_t)time(NULL);
}

int64_t dp_ctl_now(dp_ctl *c)
{
	return c->clock(c->clock_arg);
}

static bool is_dir(const char *p)
{
	struct stat st;
	return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

static void self_dir(char *out, size_t outlen)
{
	char exe[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	out[0] = 0;
	if (n <= 0)
		return;
	exe[n] = 0;
	char *s = strrchr(exe, '/');
	if (s)
		*s = 0;
	snprintf(out, outlen, "%s", exe);
}

static void find_methods(char *out, size_t outlen, const char *given)
{
	char self[PATH_MAX], p[PATH_MAX + 64];
	out[0] = 0;
	if (given && given[0]) {
		snprintf(out, outlen, "%s", given);
		return;
	}
	const char *env = getenv("DP_METHODS_DIR");
	if (env && env[0] && is_dir(env)) {
		snprintf(out, outlen, "%s", env);
		return;
	}
	self_dir(self, sizeof(self));
	const char *rel[] = {"methods", "../methods", "../share/dp/methods", NULL};
	for (int i = 0; self[0] && rel[i]; i++) {
		snprintf(p, sizeof(p), "%s/%s", self, rel[i]);
		if (is_dir(p)) {
			if (!realpath(p, out))
				snprintf(out, outlen, "%s", p);
			return;
		}
	}
	if (is_dir("/usr/local/share/dp/methods"))
		snprintf(out, outlen, "%s", "/usr/local/share/dp/methods");
}

static void find_worker(char *out, size_t outlen, const char *given)
{
	char self[PATH_MAX], p[PATH_MAX + 32];
	out[0] = 0;
	if (given && given[0]) {
		if (!realpath(given, out))
			snprintf(out, outlen, "%s", given);
		return;
	}
	const char *env = getenv("DP_WORKER");
	if (env && env[0]) {
		snprintf(out, outlen, "%s", env);
		return;
	}
	self_dir(self, sizeof(self));
	snprintf(p, sizeof(p), "%s/dp-worker", self);
	if (self[0] && access(p, X_OK) == 0)
		snprintf(out, outlen, "%s", p);
}

int dp_ctl_open(dp_ctl **out, const dp_ctl_opts *opts)
{
	dp_ctl_opts none = {0};
	if (!opts)
		opts = &none;
	dp_ctl *c = calloc(1, sizeof(*c));
	int rc;
	if (!c)
		return dp_error_set(DP_ERROR, "out of memory");
	if (opts->home) {
		snprintf(c->home, sizeof(c->home), "%s", opts->home);
		if (mkdir(c->home, 0700) != 0 && errno != EEXIST) {
			rc = dp_error_errno(DP_ERROR, errno, "cannot create \"%s\"", c->home);
			goto fail;
		}
	} else if ((rc = dp_home(c->home, sizeof(c->home)))) {
		goto fail;
	}
	snprintf(c->logdir, sizeof(c->logdir), "%s/logs", c->home);
	snprintf(c->lockdir, sizeof(c->lockdir), "%s/locks", c->home);
	if (mkdir(c->lockdir, 0700) != 0 && errno != EEXIST) {
		rc = dp_error_errno(DP_ERROR, errno, "cannot create \"%s\"", c->lockdir);
		goto fail;
	}
	if ((rc = dp_rt_local_new(&c->rt, c->logdir)))
		goto fail;
	char cat[PATH_MAX + 16];
	snprintf(cat, sizeof(cat), "%s/catalog.db", c->home);
	if ((rc = dp_catalog_open(&c->cat, opts->catalog_path ? opts->catalog_path : cat)))
		goto fail;
	find_methods(c->methods, sizeof(c->methods), opts->methods_dir);
	find_worker(c->worker, sizeof(c->worker), opts->worker_path);
	c->clock = opts->clock ? opts->clock : sys_clock;
	c->clock_arg = opts->clock_arg;
	c->archive_interval = opts->archive_interval > 0 ? opts->archive_interval : 60;
	c->gc_interval = opts->gc_interval > 0 ? opts->gc_interval : 60;
	*out = c;
	return 0;
fail:
	dp_ctl_close(c);
	return rc;
}

void dp_ctl_close(dp_ctl *c)
{
	if (!c)
		return;
	dp_catalog_close(c->cat);
	if (c->rt)
		c->rt->free(c->rt);
	free(c);
}

dp_catalog *dp_ctl_catalog(dp_ctl *c)
{
	return c->cat;
}

const char *dp_ctl_home(const dp_ctl *c)
{
	return c->home;
}

/* ---- built-in ActionSets ---- */

int dp_ctl_load_methods(dp_ctl *c, size_t *loaded)
{
	size_t n = 0, failed = 0;
	if (loaded)
		*loaded = 0;
	if (!c->methods[0]) {
		dp_debug("no methods directory found (set DP_METHODS_DIR): no built-in ActionSets");
		return 0;
	}
	int rc = dp_catalog_load_builtins(c->cat, c->methods, &n, &failed);
	if (loaded)
		*loaded = n;
	if (!rc && failed)
		dp_warn("%zu built-in ActionSet file(s) in \"%s\" did not load (see above)", failed,
		        c->methods);
	return rc;
}

/* ---- reconcile, sync, drive ---- */

bool dp_ctl_status_final(dp_kind kind, const char *status_json)
{
	cJSON *s = status_json ? cJSON_Parse(status_json) : NULL;
	const char *ph = js(s, "phase");
	bool fin = false;
	if (ph) {
		switch (kind) {
		case DP_KIND_BACKUP_REPO:
			fin = strcmp(ph, "Ready") == 0 || strcmp(ph, "Failed") == 0;
			break;
		case DP_KIND_BACKUP:
			fin = strcmp(ph, "Completed") == 0 || strcmp(ph, "Failed") == 0 ||
			      (strcmp(ph, "Running") == 0 && js(s, "backupType") &&
			       strcmp(js(s, "backupType"), "Continuous") == 0 &&
			       cJSON_GetObjectItemCaseSensitive(s, "timeRange") &&
			       !cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(s, "stopRequested")));
			break;
		case DP_KIND_RESTORE:
			fin = strcmp(ph, "Completed") == 0 || strcmp(ph, "Failed") == 0;
			break;
		default:
			fin = true;
		}
	} else if (kind != DP_KIND_BACKUP_REPO && kind != DP_KIND_BACKUP &&
	           kind != DP_KIND_RESTORE) {
		fin = true;
	}
	cJSON_Delete(s);
	return fin;
}

int dp_ctl_reconcile(dp_ctl *c, dp_kind kind, const char *name, bool *final)
{
	int fd = -1;
	bool fin = false;
	int rc = ctl_lock(c, kind, name, &fd);
	if (rc < 0)
		return rc;
	if (rc == 0) { /* another process is at it */
		if (final)
			*final = false;
		return 0;
	}
	switch (kind) {
	case DP_KIND_BACKUP_REPO:
		rc = ctl_repo_reconcile(c, name, &fin);
		break;
	case DP_KIND_BACKUP:
		rc = ctl_backup_reconcile(c, name, &fin);
		break;
	case DP_KIND_BACKUP_SCHEDULE:
		rc = ctl_schedule_reconcile(c, name, &fin);
		break;
	case DP_KIND_RESTORE:
		rc = ctl_restore_reconcile(c, name, &fin);
		break;
	default:
		rc = 0;
		fin = true;
	}
	ctl_unlock(fd);
	if (rc == DP_ETRANSIENT) { /* someone else wrote first: next pass */
		dp_error_clear();
		rc = 0;
		fin = false;
	}
	if (final)
		*final = fin;
	return rc;
}

static int sync_kind(dp_ctl *c, dp_kind kind)
{
	dp_resource *v = NULL;
	size_t n = 0;
	int rc = dp_catalog_list(c->cat, kind, &v, &n);
	if (rc)
		return rc;
	for (size_t i = 0; i < n; i++) {
		bool fin;
		if (dp_ctl_reconcile(c, kind, v[i].name, &fin) != 0) {
			dp_warn("%s \"%s\": %s", dp_kind_lower(kind), v[i].name, dp_error_last());
			dp_error_clear();
		}
	}
	dp_resources_free(v, n);
	return 0;
}

int dp_ctl_sync(dp_ctl *c)
{
	int rc;
	if ((rc = sync_kind(c, DP_KIND_BACKUP_REPO)) ||
	    (rc = sync_kind(c, DP_KIND_BACKUP_SCHEDULE)) || (rc = sync_kind(c, DP_KIND_BACKUP)) ||
	    (rc = sync_kind(c, DP_KIND_RESTORE)))
		return rc;
	int64_t now = dp_ctl_now(c);
	if (now - c->last_gc >= c->gc_interval) {
		c->last_gc = now;
		if ((rc = ctl_gc(c))) {
			dp_warn("garbage collection: %s", dp_error_last());
			dp_error_clear();
		}
	}
	return 0;
}

static void nap(int ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}

static int follow(dp_ctl *c, dp_kind kind, const char *name, int timeout_s, bool drive,
                  dp_ctl_progress_fn progress, void *arg)
{
	time_t t0 = time(NULL);
	for (;;) {
		bool fin = false;
		int rc = 0;
		if (drive && (rc = dp_ctl_reconcile(c, kind, name, &fin)))
			return rc;
		dp_resource r = {0};
		rc = dp_catalog_get(c->cat, kind, name, &r);
		if (rc == DP_ENOTFOUND) {
			dp_error_clear();
			if (progress)
				progress(kind, name, NULL, arg);
			return 0;
		}
		if (rc)
			return rc;
		fin = dp_ctl_status_final(kind, r.status);
		if (progress)
			progress(kind, name, r.status, arg);
		dp_resource_clear(&r);
		if (fin)
			return 0;
		if (timeout_s > 0 && time(NULL) - t0 > timeout_s)
			return dp_error_set(DP_ERROR, "%s \"%s\": not finished after %d s",
			                    dp_kind_lower(kind), name, timeout_s);
		nap(200);
	}
}

int dp_ctl_drive(dp_ctl *c, dp_kind kind, const char *name, int timeout_s,
                 dp_ctl_progress_fn progress, void *arg)
{
	return follow(c, kind, name, timeout_s, true, progress, arg);
}

int dp_ctl_wait(dp_ctl *c, dp_kind kind, const char *name, int timeout_s,
                dp_ctl_progress_fn progress, void *arg)
{
	return follow(c, kind, name, timeout_s, false, progress, arg);
}

/* ---- the daemon's pid file ---- */

int dp_ctl_pidfile_acquire(const char *home, int *fd_out)
{
	char p[PATH_MAX + 32], line[32];
	snprintf(p, sizeof(p), "%s/dp-controller.pid", home);
	int fd = open(p, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0)
		return dp_error_errno(DP_ERROR, errno, "cannot open \"%s\"", p);
	/* A dp checking for a daemon holds a shared lock for an instant. */
	int locked = -1;
	for (int i = 0; i < 20 && (locked = flock(fd, LOCK_EX | LOCK_NB)) != 0; i++)
		nap(100);
	if (locked != 0) {
		close(fd);
		return dp_error_set(DP_ELOCKED,
		                    "another dp-controller runs on \"%s\" (see %s); stop it first",
		                    home, p);
	}
	int n = snprintf(line, sizeof(line), "%ld\n", (long)getpid());
	if (ftruncate(fd, 0) != 0 || pwrite(fd, line, (size_t)n, 0) != n) {
		close(fd);
		return dp_error_errno(DP_ERROR, errno, "cannot write \"%s\"", p);
	}
	*fd_out = fd;
	return 0;
}

void dp_ctl_pidfile_release(int fd, const char *home)
{
	char p[PATH_MAX + 32];
	snprintf(p, sizeof(p), "%s/dp-controller.pid", home);
	if (fd >= 0) {
		unlink(p);
		close(fd);
	}
}

bool dp_ctl_daemon_running(const char *home, long *pid)
{
	char p[PATH_MAX + 32];
	snprintf(p, sizeof(p), "%s/dp-controller.pid", home);
	int fd = open(p, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return false;
	bool running = flock(fd, LOCK_SH | LOCK_NB) != 0;
	if (running && pid) {
		char line[32] = {0};
		if (pread(fd, line, sizeof(line) - 1, 0) > 0)
			*pid = strtol(line, NULL, 10);
	}
	close(fd);
	return running;
}

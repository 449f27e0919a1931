/*
 * dp backup: create a Backup of a policy and follow it; dp backup delete.
 *
 *   dp backup --policy P [--method M] [--name N] [--wait] ...
 *   dp backup delete NAME [--cascade] [--wait]
 *   dp backup stop NAME [--wait]          (a continuous backup)
 *
 * With no dp-controller running on $DP_HOME (the embedded default) dp runs
 * the reconciler itself until the backup is final: Completed or Failed, or,
 * for a continuous method, Running with its first recoverable window (the
 * archiver keeps running in the background, in its own session, and any
 * later dp or dp-controller adopts it). With a daemon running, dp only
 * writes the Backup to the catalog, and --wait follows it.
 * Also the helpers of cmd_ctl.h. Single-threaded.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "cli.h"
#include "cmd_ctl.h"
#include "dp/cliopt.h"
#include "dp/error.h"
#include "dp/log.h"

/* ---- shared: open, follow ---- */

int dp_cli_ctl_open(dp_ctl **out, bool *daemon)
{
	dp_ctl *c = NULL;
	/* The summary line and the error say how it ended; the reconciler's
	 * info lines would repeat them. Warnings (retries) still show. */
	dp_log_set_level(DP_LOG_WARN);
	int rc = dp_ctl_open(&c, NULL);
	if (rc)
		return rc;
	long pid = 0;
	*daemon = dp_ctl_daemon_running(dp_ctl_home(c), &pid);
	if (!*daemon && (rc = dp_ctl_load_methods(c, NULL))) {
		dp_ctl_close(c);
		return rc;
	}
	*out = c;
	return 0;
}

struct follow {
	bool tty, quiet;
	char last[64];
	int shown;
};

static const char *sget(const cJSON *o, const char *k)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
	return cJSON_IsString(v) ? v->valuestring : NULL;
}

static uint64_t nget(const cJSON *o, const char *k)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
	if (cJSON_IsNumber(v))
		return (uint64_t)v->valuedouble;
	if (cJSON_IsString(v))
		return strtoull(v->valuestring, NULL, 10);
	return 0;
}

/* The running action of a status, for the progress line. */
static const char *current_action(const cJSON *st)
{
	const cJSON *acts = cJSON_GetObjectItemCaseSensitive(st, "actions");
	for (const cJSON *a = acts ? acts->child : NULL; a; a = a->next) {
		const char *ph = sget(a, "phase");
		if (ph && strcmp(ph, "Running") == 0)
			return sget(a, "name");
	}
	return NULL;
}

static void on_progress(dp_kind kind, const char *name, const char *status, void *arg)
{
	struct follow *f = arg;
	if (f->quiet)
		return;
	cJSON *st = status ? cJSON_Parse(status) : NULL;
	const char *ph = status ? sget(st, "phase") : "deleted";
	char line[512], done[32] = "", stored[32] = "";
	const cJSON *pr = cJSON_GetObjectItemCaseSensitive(st, "progress");
	if (pr) {
		dp_cli_fmt_bytes(done, sizeof(done), nget(pr, "done"));
		dp_cli_fmt_bytes(stored, sizeof(stored), nget(pr, "stored"));
	}
	const char *act = current_action(st);
	snprintf(line, sizeof(line), "%s %s: %s%s%s%s%s%s%s", dp_kind_lower(kind), name,
	         ph ? ph : "New", act ? " (" : "", act ? act : "", act ? ")" : "", pr ? "  " : "",
	         pr ? done : "", pr ? " read" : "");
	if (pr) {
		size_t l = strlen(line);
		snprintf(line + l, sizeof(line) - l, ", %s stored", stored);
	}
	if (f->tty) {
		fprintf(stderr, "\r\033[K%s", line);
		f->shown = 1;
	} else if (strcmp(f->last, ph ? ph : "New") != 0 && status &&
	           !dp_ctl_status_final(kind, status)) {
		fprintf(stderr, "%s\n", line);
	}
	snprintf(f->last, sizeof(f->last), "%s", ph ? ph : "New");
	fflush(stderr);
	cJSON_Delete(st);
}

static void summary(dp_kind kind, const char *name, const dp_resource *r)
{
	cJSON *st = cJSON_Parse(r->status);
	const char *ph = sget(st, "phase");
	char total[32], stored[32];
	dp_cli_fmt_bytes(total, sizeof(total), nget(st, "totalSize"));
	dp_cli_fmt_bytes(stored, sizeof(stored), nget(st, "storedSize"));
	const cJSON *tr = cJSON_GetObjectItemCaseSensitive(st, "timeRange");
	if (kind == DP_KIND_BACKUP && ph && strcmp(ph, "Completed") == 0)
		printf("backup %s: Completed in %" PRIu64 " s: %s, %s new stored\n", name,
		       nget(st, "duration"), total, stored);
	else if (kind == DP_KIND_BACKUP && ph && strcmp(ph, "Running") == 0 && tr)
		printf("backup %s: Running (continuous): recoverable from %s to %s\n", name,
		       sget(tr, "start") ? sget(tr, "start") : "?",
		       sget(tr, "end") ? sget(tr, "end") : "?");
	else if (kind == DP_KIND_RESTORE && ph && strcmp(ph, "Completed") == 0)
		printf("restore %s: Completed in %" PRIu64 " s (backup %s%s%s)\n", name,
		       nget(st, "duration"), sget(st, "backupName") ? sget(st, "backupName") : "?",
		       sget(st, "restoreTime") ? " at " : "",
		       sget(st, "restoreTime") ? sget(st, "restoreTime") : "");
	else
		printf("%s %s: %s\n", dp_kind_lower(kind), name, ph ? ph : "New");
	cJSON_Delete(st);
}

int dp_cli_ctl_follow(dp_ctl *c, bool daemon, bool wait, bool quiet, dp_kind kind, const char *name,
                      int timeout_s)
{
	struct follow f = {isatty(2) == 1, quiet, "", 0};
	int rc;
	if (daemon && !wait) {
		printf(
		    "%s %s: handed to the running dp-controller (follow it with: dp get %s %s)\n",
		    dp_kind_lower(kind), name, dp_kind_lower(kind), name);
		return 0;
	}
	if (daemon)
		rc = dp_ctl_wait(c, kind, name, timeout_s, on_progress, &f);
	else
		rc = dp_ctl_drive(c, kind, name, timeout_s, on_progress, &f);
	if (f.shown)
		fprintf(stderr, "\n");
	if (rc)
		return rc;
	dp_resource r = {0};
	rc = dp_catalog_get(dp_ctl_catalog(c), kind, name, &r);
	if (rc == DP_ENOTFOUND) {
		dp_error_clear();
		printf("%s %s: deleted\n", dp_kind_lower(kind), name);
		return 0;
	}
	if (rc)
		return rc;
	cJSON *st = cJSON_Parse(r.status);
	const char *ph = sget(st, "phase");
	if (!ph || strcmp(ph, "Failed") != 0)
		summary(kind, name, &r);
	else
		rc = dp_error_set(DP_ERROR, "%s \"%s\" failed: %s", dp_kind_lower(kind), name,
		                  sget(st, "failureReason") ? sget(st, "failureReason") : "?");
	cJSON_Delete(st);
	dp_resource_clear(&r);
	return rc;
}

/* ---- dp backup ---- */

enum {
	O_POLICY = 1,
	O_METHOD,
	O_NAME,
	O_WAIT,
	O_DELPOL,
	O_RETENTION,
	O_PARENT,
	O_TIMEOUT,
	O_CASCADE
};

struct bopts {
	dp_ctl_backup_req req;
	bool wait, cascade;
	long timeout;
};

static int on_opt(int val, const char *arg, void *ctx)
{
	struct bopts *o = ctx;
	switch (val) {
	case O_POLICY:
		o->req.policy = arg;
		break;
	case O_METHOD:
		o->req.method = arg;
		break;
	case O_NAME:
		o->req.name = arg;
		break;
	case O_WAIT:
		o->wait = true;
		break;
	case O_DELPOL:
		if (strcmp(arg, "Delete") && strcmp(arg, "Retain"))
			return dp_error_set(DP_EUSAGE, "--deletion-policy: use Delete or Retain");
		o->req.deletion_policy = arg;
		break;
	case O_RETENTION:
		o->req.retention_period = arg;
		break;
	case O_PARENT:
		o->req.parent = arg;
		break;
	case O_TIMEOUT:
		return dp_cli_parse_int(&o->timeout, "--timeout", arg, 0, 7 * 86400);
	case O_CASCADE:
		o->cascade = true;
		break;
	}
	return 0;
}

static const struct option backup_opts[] = {
    {"policy", required_argument, NULL, O_POLICY},
    {"method", required_argument, NULL, O_METHOD},
    {"name", required_argument, NULL, O_NAME},
    {"wait", no_argument, NULL, O_WAIT},
    {"deletion-policy", required_argument, NULL, O_DELPOL},
    {"retention-period", required_argument, NULL, O_RETENTION},
    {"parent", required_argument, NULL, O_PARENT},
    {"timeout", required_argument, NULL, O_TIMEOUT},
    {0},
};

static const struct option delete_opts[] = {
    {"cascade", no_argument, NULL, O_CASCADE},
    {"wait", no_argument, NULL, O_WAIT},
    {"timeout", required_argument, NULL, O_TIMEOUT},
    {0},
};

static int backup_delete(int argc, char **argv)
{
	struct bopts o = {0};
	dp_cli_cmd cmd = {
	    "dp backup delete",
	    "NAME [--cascade] [--wait]",
	    "Deletes a backup: its worker is stopped, the ActionSet's preDelete runs, and\n"
	    "with deletionPolicy Delete its data (snapshots, WAL archive, catalog copy) leaves\n"
	    "the repository, which is then pruned under its exclusive lock; with Retain the\n"
	    "data stays. Refused while other backups name it as their parent, unless\n"
	    "--cascade (they are deleted too).\n\n"
	    "  --cascade      delete the backups that depend on it too\n"
	    "  --wait         with a dp-controller running, wait until it is gone\n"
	    "  --timeout S    give up waiting after S seconds\n",
	    "  dp backup delete pg-full-20261125101500\n",
	    DP_CLI_QUIET,
	    delete_opts,
	    on_opt,
	    &o,
	    1,
	    1,
	};
	dp_cli cli;
	int rc = dp_cli_parse(&cli, &cmd, argc, argv);
	if (rc)
		return rc == DP_CLI_HELP ? 0 : rc;
	dp_ctl *c = NULL;
	bool daemon;
	if ((rc = dp_cli_ctl_open(&c, &daemon)))
		return rc;
	const char *name = cli.args[0];
	if ((rc = dp_ctl_backup_delete(c, name, o.cascade)) == 0)
		rc = dp_cli_ctl_follow(c, daemon, o.wait, cli.quiet, DP_KIND_BACKUP, name,
		                       (int)o.timeout);
	dp_ctl_close(c);
	return rc;
}

static int backup_stop(int argc, char **argv)
{
	struct bopts o = {0};
	dp_cli_cmd cmd = {
	    "dp backup stop",
	    "NAME [--wait]",
	    "Stops a running continuous backup (WAL archiving): its archiver ends, the\n"
	    "method turns archiving off, and the backup becomes Completed with the\n"
	    "recoverable window it had. Its data stays.\n\n"
	    "  --wait         with a dp-controller running, wait until it is stopped\n"
	    "  --timeout S    give up waiting after S seconds\n",
	    "  dp backup stop pg-wal-20261125101500\n",
	    DP_CLI_QUIET,
	    delete_opts,
	    on_opt,
	    &o,
	    1,
	    1,
	};
	dp_cli cli;
	int rc = dp_cli_parse(&cli, &cmd, argc, argv);
	if (rc)
		return rc == DP_CLI_HELP ? 0 : rc;
	dp_ctl *c = NULL;
	bool daemon;
	if ((rc = dp_cli_ctl_open(&c, &daemon)))
		return rc;
	if ((rc = dp_ctl_backup_stop(c, cli.args[0])) == 0)
		rc = dp_cli_ctl_follow(c, daemon, o.wait, cli.quiet, DP_KIND_BACKUP, cli.args[0],
		                       (int)o.timeout);
	dp_ctl_close(c);
	return rc;
}

int dp_cli_backup(int argc, char **argv)
{
	if (argc > 1 && strcmp(argv[1], "delete") == 0)
		return backup_delete(argc - 1, argv + 1);
	if (argc > 1 && strcmp(argv[1], "stop") == 0)
		return backup_stop(argc - 1, argv + 1);
	struct bopts o = {0};
	dp_cli_cmd cmd = {
	    "dp backup",
	    "--policy P [--method M] [--name N] [--wait] [OPTIONS]",
	    "Creates a Backup of backuppolicy P with method M (default: full, else the\n"
	    "policy's first method that is not continuous) and follows it. Without a\n"
	    "dp-controller running, dp runs the backup itself until it is Completed or\n"
	    "Failed; a continuous method (WAL archiving) stays Running once its first\n"
	    "recoverable window is recorded, and its archiver keeps running in the\n"
	    "background. With a dp-controller running, the backup is handed to it and\n"
	    "--wait follows it. 'dp backup delete NAME' deletes one, 'dp backup stop NAME'\n"
	    "ends a continuous one (see their --help).\n\n"
	    "  --policy P              the backuppolicy\n"
	    "  --method M              its backup method\n"
	    "  --name N                the backup's name (default POLICY-METHOD-yyyymmddHHMMSS)\n"
	    "  --wait                  with a dp-controller running, wait for the result\n"
	    "  --deletion-policy D     Delete (default) or Retain\n"
	    "  --retention-period R    e.g. 7d, 1y2mo3w4d5h6m (default: keep)\n"
	    "  --parent B              the parent backup (incremental methods)\n"
	    "  --timeout S             give up following after S seconds\n",
	    "  dp backup --policy pg --wait\n  dp backup --policy pg --method wal\n",
	    DP_CLI_QUIET,
	    backup_opts,
	    on_opt,
	    &o,
	    0,
	    0,
	};
	dp_cli cli;
	int rc = dp_cli_parse(&cli, &cmd, argc, argv);
	if (rc)
		return rc == DP_CLI_HELP ? 0 : rc;
	if (!o.req.policy)
		return dp_error_set(DP_EUSAGE, "--policy is required ('dp backup --help')");
	dp_ctl *c = NULL;
	bool daemon;
	char name[DP_NAME_MAX + 1];
	if ((rc = dp_cli_ctl_open(&c, &daemon)))
		return rc;
	if ((rc = dp_ctl_backup_create(c, &o.req, name, sizeof(name))) == 0) {
		fprintf(stderr, "backup %s created\n", name);
		rc = dp_cli_ctl_follow(c, daemon, o.wait, cli.quiet, DP_KIND_BACKUP, name,
		                       (int)o.timeout);
	}
	dp_ctl_close(c);
	return rc;
}

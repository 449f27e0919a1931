/*
 * dp restore: create a Restore and follow it.
 *
 *   dp restore (--backup B | --policy P --time T) (--to DIR [--port N] | --in-place)
 *
 * The restore is validated before anything runs (backup Completed, time
 * inside the recoverable window, target free) and fails at once otherwise;
 * then the method's prepareData and postReady run (the latter starts the
 * database and checks it). Embedded default as for dp backup (cmd_backup.c).
 * Single-threaded.
 */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "cmd_ctl.h"
#include "dp/cliopt.h"
#include "dp/error.h"

enum { O_BACKUP = 1, O_POLICY, O_TIME, O_TO, O_PORT, O_INPLACE, O_NAME, O_WAIT, O_TIMEOUT };

struct ropts {
	dp_ctl_restore_req req;
	bool wait;
	long timeout;
};

static int on_opt(int val, const char *arg, void *ctx)
{
	struct ropts *o = ctx;
	long v;
	int rc;
	switch (val) {
	case O_BACKUP:
		o->req.backup = arg;
		break;
	case O_POLICY:
		o->req.policy = arg;
		break;
	case O_TIME:
		o->req.time = arg;
		break;
	case O_TO:
		o->req.to_dir = arg;
		break;
	case O_PORT:
		if ((rc = dp_cli_parse_int(&v, "--port", arg, 1, 65535)))
			return rc;
		o->req.port = (int)v;
		break;
	case O_INPLACE:
		o->req.in_place = true;
		break;
	case O_NAME:
		o->req.name = arg;
		break;
	case O_WAIT:
		o->wait = true;
		break;
	case O_TIMEOUT:
		return dp_cli_parse_int(&o->timeout, "--timeout", arg, 0, 7 * 86400);
	}
	return 0;
}

static const struct option opts[] = {
    {"backup", required_argument, NULL, O_BACKUP},   {"policy", required_argument, NULL, O_POLICY},
    {"time", required_argument, NULL, O_TIME},       {"to", required_argument, NULL, O_TO},
    {"port", required_argument, NULL, O_PORT},       {"in-place", no_argument, NULL, O_INPLACE},
    {"name", required_argument, NULL, O_NAME},       {"wait", no_argument, NULL, O_WAIT},
    {"timeout", required_argument, NULL, O_TIMEOUT}, {0},
};

int dp_cli_restore(int argc, char **argv)
{
	struct ropts o = {0};
	dp_cli_cmd cmd = {
	    "dp restore",
	    "(--backup B | --policy P --time T) (--to DIR [--port N] | --in-place) [--wait]",
	    "Restores a backup into a new data directory (and starts the database there on\n"
	    "port N) or in place of the policy's data directory (the old one is kept aside\n"
	    "until the restored database answers, and put back if it does not). With\n"
	    "--policy and --time, dp picks the continuous backup whose recoverable window\n"
	    "holds T, and the method picks the base backup. Everything is checked before\n"
	    "anything changes; a time outside the window fails at once.\n\n"
	    "  --backup B      the backup (a continuous one with --time)\n"
	    "  --policy P      the backuppolicy (with --time)\n"
	    "  --time T        the point in time, RFC 3339 UTC (2026-05-07T09:20:00Z)\n"
	    "  --to DIR        a new data directory (missing or empty)\n"
	    "  --port N        the port of the restored database\n"
	    "  --in-place      replace the policy's data directory\n"
	    "  --name N        the Restore's name (default restore-yyyymmddHHMMSS)\n"
	    "  --wait          with a dp-controller running, wait for the result\n"
	    "  --timeout S     give up following after S seconds\n",
	    "  dp restore --backup pg-full-20261125101500 --to /srv/pg-copy --port 5433\n"
	    "  dp restore --policy pg --time 2026-11-25T10:20:00Z --to /srv/pg-pitr --port 5434\n",
	    DP_CLI_QUIET,
	    opts,
	    on_opt,
	    &o,
	    0,
	    0,
	};
	dp_cli cli;
	int rc = dp_cli_parse(&cli, &cmd, argc, argv);
	if (rc)
		return rc == DP_CLI_HELP ? 0 : rc;
	if (o.req.port && !o.req.to_dir)
		return dp_error_set(DP_EUSAGE, "--port goes with --to DIR");
	dp_ctl *c = NULL;
	bool daemon;
	char name[DP_NAME_MAX + 1];
	if ((rc = dp_cli_ctl_open(&c, &daemon)))
		return rc;
	if ((rc = dp_ctl_restore_create(c, &o.req, name, sizeof(name))) == 0) {
		fprintf(stderr, "restore %s created\n", name);
		rc = dp_cli_ctl_follow(c, daemon, o.wait, cli.quiet, DP_KIND_RESTORE, name,
		                       (int)o.timeout);
	}
	dp_ctl_close(c);
	return rc;
}

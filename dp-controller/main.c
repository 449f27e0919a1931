/*
 * dp-controller: the reconciler as a foreground daemon.
 *
 *   dp-controller [--listen HOST:PORT] [--no-api] [--methods DIR] [--sync-ms N]
 *
 * Holds $DP_HOME/dp-controller.pid (locked) while it runs, so `dp` knows to
 * hand resources to it instead of reconciling them itself. Loads the
 * built-in ActionSets, re-adopts or fails the workers of the previous run
 * (the first sync pass does that: every Running action is polled by pid and
 * start time), serves the REST API (dp_api_start, its own threads and
 * catalog connection) and GET /metrics (metrics.c, with the API's token),
 * and runs a sync pass whenever the catalog changes,
 * and at least every --sync-ms. Logs go to stderr. SIGTERM or SIGINT stops
 * it cleanly after the current pass: workers are left running in their own
 * sessions, to be adopted by the next controller.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ctl_int.h"
#include "dp/api.h"
#include "dp/cliopt.h"
#include "dp/error.h"
#include "dp/log.h"
#include "metrics.h"

static volatile sig_atomic_t stop_sig;

static void on_signal(int sig)
{
	stop_sig = sig;
}

enum { O_LISTEN = 1, O_NOAPI, O_METHODS, O_SYNC };

struct opts {
	const char *listen, *methods;
	bool no_api;
	long sync_ms;
};

static int on_opt(int val, const char *arg, void *ctx)
{
	struct opts *o = ctx;
	switch (val) {
	case O_LISTEN:
		o->listen = arg;
		break;
	case O_NOAPI:
		o->no_api = true;
		break;
	case O_METHODS:
		o->methods = arg;
		break;
	case O_SYNC:
		return dp_cli_parse_int(&o->sync_ms, "--sync-ms", arg, 50, 600000);
	}
	return 0;
}

static const struct option long_opts[] = {
    {"listen", required_argument, NULL, O_LISTEN},
    {"no-api", no_argument, NULL, O_NOAPI},
    {"methods", required_argument, NULL, O_METHODS},
    {"sync-ms", required_argument, NULL, O_SYNC},
    {0},
};

/* DELETE through the API: a Backup is marked Deleting (its data goes in the
 * next pass); the rest as `dp delete`. Runs on a connection thread with the
 * request's catalog connection: a dp_ctl made on the spot around it. */
static dp_ctl *proto;

static int api_delete(void *arg, dp_catalog *cat, dp_kind kind, const char *name)
{
	(void)arg;
	if (kind != DP_KIND_BACKUP)
		return dp_catalog_delete(cat, kind, name);
	dp_ctl tmp = *proto;
	tmp.cat = cat;
	int rc = dp_ctl_backup_delete(&tmp, name, false);
	return rc ? rc : DP_API_ACCEPTED;
}

static void nap_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}

int main(int argc, char **argv)
{
	struct opts o = {NULL, NULL, false, 1000};
	dp_cli_cmd cmd = {
	    "dp-controller",
	    "[--listen HOST:PORT] [--no-api] [--methods DIR] [--sync-ms N]",
	    "Runs dp's reconciler in the foreground on the catalog in $DP_HOME: schedules,\n"
	    "backups, retention, deletions, restores, and the REST API. Logs go to stderr.\n"
	    "SIGTERM stops it; running workers are left to the next controller.\n\n"
	    "  --listen HOST:PORT   API address (default 127.0.0.1:8780; port 0: any)\n"
	    "  --no-api             do not serve the API\n"
	    "  --methods DIR        the built-in methods directory\n"
	    "  --sync-ms N          a full pass at least every N ms (default 1000)\n",
	    "  DP_HOME=/var/lib/dp dp-controller\n",
	    0,
	    long_opts,
	    on_opt,
	    &o,
	    0,
	    0,
	};
	dp_log_set_prog("dp-controller");
	dp_cli cli;
	int rc = dp_cli_parse(&cli, &cmd, argc, argv);
	if (rc == DP_CLI_HELP)
		return 0;
	if (rc) {
		fprintf(stderr, "dp-controller: %s\n", dp_error_last());
		return dp_error_exit_code(rc);
	}
	dp_ctl *c = NULL;
	dp_api *api = NULL;
	int pidfd = -1;
	dp_ctl_opts co = {0};
	co.methods_dir = o.methods;
	if ((rc = dp_ctl_open(&c, &co)))
		goto out;
	proto = c;
	if ((rc = dp_ctl_pidfile_acquire(dp_ctl_home(c), &pidfd)))
		goto out;
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	size_t loaded = 0;
	if ((rc = dp_ctl_load_methods(c, &loaded)))
		goto out;
	dp_info("home %s, %zu built-in ActionSet(s) from %s", dp_ctl_home(c), loaded,
	        c->methods[0] ? c->methods : "(none)");
	if (!o.no_api) {
		dp_api_opts ao = {0};
		static char cat[PATH_MAX + 16]; /* outlives the server (metrics) */
		snprintf(cat, sizeof(cat), "%s/catalog.db", dp_ctl_home(c));
		ao.listen = o.listen;
		ao.home = dp_ctl_home(c);
		ao.on_delete = api_delete;
		ao.route = dp_ctl_metrics_route;
		ao.route_arg = cat;
		if ((rc = dp_api_start(&api, cat, &ao)))
			goto out;
		dp_info("API on %s (port %d), token in %s/%s",
		        o.listen ? o.listen : DP_API_LISTEN_DEFAULT, dp_api_port(api),
		        dp_ctl_home(c), DP_API_TOKEN_FILE);
	}
	int64_t seen = -1;
	while (!stop_sig) {
		if ((rc = dp_ctl_sync(c))) {
			dp_log(DP_LOG_ERROR, "sync: %s", dp_error_last());
			dp_error_clear();
			rc = 0;
		}
		/* Sleep until the catalog changes (ours included: a pass that
		 * moved something is followed by another) or sync_ms passes. */
		int64_t v = 0;
		dp_catalog_version(c->cat, &seen);
		for (long waited = 0; !stop_sig && waited < o.sync_ms; waited += 100) {
			nap_ms(100);
			if (dp_catalog_version(c->cat, &v) == 0 && v != seen)
				break;
		}
	}
	dp_info("stopping (signal %d); running workers are left to the next controller",
	        (int)stop_sig);
out:
	if (rc)
		fprintf(stderr, "dp-controller: %s\n", dp_error_last());
	dp_api_stop(api);
	if (c)
		dp_ctl_pidfile_release(pidfd, dp_ctl_home(c));
	dp_ctl_close(c);
	return rc ? dp_error_exit_code(rc) : 0;
}

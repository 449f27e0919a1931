/*
 * dp catalog import --repo R: rebuilds the catalog's Backups from the
 * records kept in the repository of BackupRepo R (see
 * dp-controller/import.c). Apply the BackupRepo first (on a fresh $DP_HOME,
 * after a reinstall, or on another machine); the data is never touched.
 * Single-threaded.
 */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "cmd_ctl.h"
#include "dp/cliopt.h"
#include "dp/error.h"

enum { O_REPO = 1 };

static int on_opt(int val, const char *arg, void *ctx)
{
	if (val == O_REPO)
		*(const char **)ctx = arg;
	return 0;
}

static const struct option opts[] = {
    {"repo", required_argument, NULL, O_REPO},
    {0},
};

static int import(int argc, char **argv)
{
	const char *repo = NULL;
	dp_cli_cmd cmd = {
	    "dp catalog import",
	    "--repo R",
	    "Rebuilds the catalog's backups from the repository of backuprepo R: every\n"
	    "backup dp wrote there (catalog/NAME.json, encrypted) that the catalog lacks\n"
	    "is added with its recorded status; its policy too, if missing. Apply the\n"
	    "BackupRepo first. The data in the repository is not touched.\n\n"
	    "  --repo R   the backuprepo (a name in the catalog)\n",
	    "  dp apply -f repo.yaml && dp catalog import --repo nas\n",
	    0,
	    opts,
	    on_opt,
	    &repo,
	    0,
	    0,
	};
	dp_cli cli;
	int rc = dp_cli_parse(&cli, &cmd, argc, argv);
	if (rc)
		return rc == DP_CLI_HELP ? 0 : rc;
	if (!repo)
		return dp_error_set(DP_EUSAGE, "--repo is required ('dp catalog import --help')");
	dp_ctl *c = NULL;
	bool daemon;
	size_t imported = 0, skipped = 0;
	if ((rc = dp_cli_ctl_open(&c, &daemon)))
		return rc;
	if (daemon)
		dp_ctl_load_methods(c, NULL);
	if ((rc = dp_ctl_catalog_import(c, repo, &imported, &skipped)) == 0)
		printf("imported %zu backup(s) from backuprepo %s (%zu already in the catalog or "
		       "skipped)\n",
		       imported, repo, skipped);
	dp_ctl_close(c);
	return rc;
}

int dp_cli_catalog(int argc, char **argv)
{
	if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
		fprintf(argc < 2 ? stderr : stdout,
		        "usage: dp catalog import --repo R\n\n"
		        "  import   rebuild the catalog's backups from a repository\n");
		return argc < 2 ? DP_EUSAGE : 0;
	}
	if (strcmp(argv[1], "import") == 0)
		return import(argc - 1, argv + 1);
	return dp_error_set(DP_EUSAGE, "unknown catalog command \"%s\" (try 'dp catalog --help')",
	                    argv[1]);
}

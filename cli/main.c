/*
 * dp: the command-line interface. One table entry per command group; each
 * group lives in its own cmd_*.c file.
 */
#include "cli.h"
#include "dp/cliopt.h"

static const dp_cli_command commands[] = {
    {"repo", dp_cli_repo, "create, check, prune and repair repositories"},
    {"apply", dp_cli_apply, "create or update resources from a YAML or JSON file"},
    {"get", dp_cli_get, "list resources, or show one (-o table|wide|json|yaml)"},
    {"describe", dp_cli_describe, "show a resource with its status and events"},
    {"delete", dp_cli_delete, "delete resources from the catalog"},
    {"backup", dp_cli_backup, "back up a policy now, or delete a backup"},
    {"restore", dp_cli_restore, "restore a backup or a point in time"},
    {"catalog", dp_cli_catalog, "rebuild the catalog from a repository"},
};

int main(int argc, char **argv)
{
	return dp_cli_main("dp", commands, sizeof(commands) / sizeof(commands[0]), argc, argv);
}

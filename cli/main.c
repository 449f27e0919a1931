/*
 * dp: the command-line interface. One table entry per command group; each
 * group lives in its own cmd_*.c file.
 */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "dp/error.h"
#include "dp/log.h"

static const struct {
	const char *name;
	int (*run)(int argc, char **argv);
	const char *summary;
} commands[] = {
    {"repo", dp_cli_repo, "create, check and prune repositories"},
    {"apply", dp_cli_apply, "create or update resources from a YAML or JSON file"},
    {"get", dp_cli_get, "list resources, or show one (-o table|wide|json|yaml)"},
    {"describe", dp_cli_describe, "show a resource with its status and events"},
    {"delete", dp_cli_delete, "delete resources from the catalog"},
    {"backup", dp_cli_backup, "back up a policy now, or delete a backup"},
    {"restore", dp_cli_restore, "restore a backup or a point in time"},
    {"catalog", dp_cli_catalog, "rebuild the catalog from a repository"},
};

static void usage(FILE *f)
{
	fprintf(f, "usage: dp COMMAND [OPTIONS] [ARGS]\n\ncommands:\n");
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].summary);
	fprintf(f, "\n'dp COMMAND --help' describes a command.\n"
	           "exit status: 0 ok, 1 error, 2 usage, 3 wrong passphrase or credentials,\n"
	           "4 corrupted data, 5 not found, 6 locked\n");
}

int main(int argc, char **argv)
{
	dp_log_set_prog("dp");
	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
	    strcmp(argv[1], "help") == 0) {
		usage(stdout);
		return 0;
	}
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
		if (strcmp(argv[1], commands[i].name) != 0)
			continue;
		int rc = commands[i].run(argc - 1, argv + 1);
		if (rc && dp_error_last()[0])
			fprintf(stderr, "dp %s: %s\n", argv[1], dp_error_last());
		return dp_error_exit_code(rc);
	}
	fprintf(stderr, "dp: unknown command \"%s\"; 'dp --help' lists them\n", argv[1]);
	return 2;
}

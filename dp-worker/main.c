/*
 * dp-worker: moves data between a process's stdin/stdout or files and a
 * repository, and runs a method's actions for the controller. One table
 * entry per command; each command lives in its own file.
 */
#include <stdio.h>
#include <string.h>

#include "dp/error.h"
#include "dp/log.h"
#include "worker.h"

static const struct {
	const char *name;
	int (*run)(int argc, char **argv);
	const char *summary;
} commands[] = {
    {"push", dp_worker_push, "store a file, a directory tree or stdin as a snapshot"},
    {"pull", dp_worker_pull, "restore a snapshot to a file, a directory or stdout"},
    {"ls", dp_worker_ls, "list snapshots"},
    {"stat", dp_worker_stat, "show one snapshot"},
    {"rm", dp_worker_rm, "remove snapshots by name or id (prune frees the data)"},
    {"stream-push", dp_worker_stream_push, "store stdin with metadata read at its end"},
    {"wal-push", dp_worker_wal_push, "archive one file (archive_command), idempotently"},
    {"wal-fetch", dp_worker_wal_fetch, "fetch an archived file (restore_command)"},
    {"wal-ls", dp_worker_wal_ls, "list an archive's files"},
    {"wal-rm", dp_worker_wal_rm, "remove files from an archive (retention)"},
    {"put-file", dp_worker_put_file, "store a small metadata file"},
    {"get-file", dp_worker_get_file, "print a small metadata file"},
};

static void usage(FILE *f)
{
	fprintf(f, "usage: dp-worker COMMAND [OPTIONS] [ARGS]\n\ncommands:\n");
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		fprintf(f, "  %-12s %s\n", commands[i].name, commands[i].summary);
	fprintf(f, "\n'dp-worker COMMAND --help' describes a command.\n"
	           "exit status: 0 ok, 1 error, 2 usage, 3 wrong passphrase or credentials,\n"
	           "4 corrupted data, 5 not found, 6 locked\n");
}

int main(int argc, char **argv)
{
	dp_log_set_prog("dp-worker");
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
			fprintf(stderr, "dp-worker %s: %s\n", argv[1], dp_error_last());
		return dp_error_exit_code(rc);
	}
	fprintf(stderr, "dp-worker: unknown command \"%s\"; 'dp-worker --help' lists them\n",
	        argv[1]);
	return 2;
}

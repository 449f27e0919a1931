/*
 * dp-worker: moves data between a process's stdin/stdout or files and a
 * repository, and runs a method's actions for the controller. One table
 * entry per command; each command lives in its own file.
 */
#include "dp/cliopt.h"
#include "worker.h"

static const dp_cli_command commands[] = {
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
    {"key-add", dp_worker_key_add, "add a random key that opens the repository (no passphrase)"},
    {"key-ls", dp_worker_key_ls, "list the repository's keys"},
    {"key-rm", dp_worker_key_rm, "revoke keys"},
};

int main(int argc, char **argv)
{
	return dp_cli_main("dp-worker", commands, sizeof(commands) / sizeof(commands[0]), argc,
	                   argv);
}

/*
 * dp-worker's commands. Each takes the arguments after its name (argv[0] is
 * the command name) and returns a DP_E* code; main prints dp_error_last()
 * once and exits with dp_error_exit_code().
 */
#ifndef DP_WORKER_H
#define DP_WORKER_H

#include "dp/cliopt.h"
#include "dp/repo.h"

int dp_worker_push(int argc, char **argv); /* push.c */
int dp_worker_pull(int argc, char **argv); /* pull.c */
int dp_worker_ls(int argc, char **argv); /* snapshots.c */
int dp_worker_stat(int argc, char **argv); /* snapshots.c */
int dp_worker_rm(int argc, char **argv); /* snapshots.c */
int dp_worker_stream_push(int argc, char **argv); /* wal.c */
int dp_worker_wal_push(int argc, char **argv); /* wal.c */
int dp_worker_wal_fetch(int argc, char **argv); /* wal.c */
int dp_worker_wal_ls(int argc, char **argv); /* wal.c */
int dp_worker_wal_rm(int argc, char **argv); /* wal.c */
int dp_worker_put_file(int argc, char **argv); /* wal.c */
int dp_worker_get_file(int argc, char **argv); /* wal.c */
int dp_worker_key_add(int argc, char **argv); /* key.c */
int dp_worker_key_ls(int argc, char **argv); /* key.c */
int dp_worker_key_rm(int argc, char **argv); /* key.c */

/* Opens the repository named by c (--repo/DP_REPO, the S3 flags) with the
 * passphrase from --passphrase-file/DP_REPO_PASSPHRASE, which is wiped
 * before this returns, and applies --threads. (open.c) */
int dp_worker_open_repo(dp_repo **out, const dp_cli *c);

/* Pushes everything fd gives until its end, read straight into the push's
 * buffers (no copy), 1 MiB at most per read; a signal caught by
 * dp_cli_catch_signals stops it ("interrupted by ..."). what names fd in a
 * read error. (push.c) */
int dp_worker_push_fd(dp_push *p, int fd, const char *what);

#endif

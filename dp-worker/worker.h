/*
 * dp-worker's commands. Each takes the arguments after its name (argv[0] is
 * the command name) and returns a DP_E* code; main prints dp_error_last()
 * once and exits with dp_error_exit_code().
 */
#ifndef DP_WORKER_H
#define DP_WORKER_H

int dp_worker_push(int argc, char **argv);  /* push.c */
int dp_worker_pull(int argc, char **argv);  /* pull.c */
int dp_worker_ls(int argc, char **argv);    /* snapshots.c */
int dp_worker_stat(int argc, char **argv);  /* snapshots.c */
int dp_worker_rm(int argc, char **argv);    /* snapshots.c */

#endif

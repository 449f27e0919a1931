/*
 * The dp CLI's command groups. Each takes the arguments after the group name
 * (argv[0] is the group name) and returns a DP_E* code; main prints
 * dp_error_last() once and exits with dp_error_exit_code().
 */
#ifndef DP_CLI_H
#define DP_CLI_H

int dp_cli_repo(int argc, char **argv); /* cmd_repo.c: init, check, prune */
int dp_cli_apply(int argc, char **argv); /* cmd_resource.c */
int dp_cli_get(int argc, char **argv); /* cmd_resource.c */
int dp_cli_describe(int argc, char **argv); /* cmd_resource.c */
int dp_cli_delete(int argc, char **argv); /* cmd_resource.c */
int dp_cli_backup(int argc, char **argv); /* cmd_backup.c */
int dp_cli_restore(int argc, char **argv); /* cmd_restore.c */
int dp_cli_catalog(int argc, char **argv); /* cmd_catalog.c */

#endif

/*
 * Shared by the dp commands that drive the controller (cmd_backup.c,
 * cmd_restore.c, cmd_catalog.c): opening the reconciler on $DP_HOME with the
 * built-in ActionSets loaded, and following a resource to a final phase,
 * either in-process (the embedded default, when no dp-controller runs) or by
 * watching what the running daemon does. Single-threaded.
 */
#ifndef DP_CLI_CMD_CTL_H
#define DP_CLI_CMD_CTL_H

#include <stdbool.h>

#include "dp/controller.h"

/* Opens the controller on $DP_HOME and loads the built-in ActionSets;
 * *daemon: a dp-controller runs there (its pid in the message). */
int dp_cli_ctl_open(dp_ctl **out, bool *daemon);

/* Follows kind/name to a final phase: drives it in-process unless a daemon
 * runs (then waits for it, if wait). Shows a progress line on a terminal
 * unless quiet. Prints a one-line summary on stdout; returns DP_ERROR with
 * the failure reason if the resource Failed. */
int dp_cli_ctl_follow(dp_ctl *c, bool daemon, bool wait, bool quiet, dp_kind kind, const char *name,
                      int timeout_s);

#endif

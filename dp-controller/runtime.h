/*
 * The runtime: how the reconciler starts and watches workers, without
 * knowing where they run. The local implementation (runtime_local.c) runs a
 * job as a detached child process; a Kubernetes one would run a Job. The
 * reconciler keeps a job's handle (pid + start time) in the catalog, so any
 * process can look at it later (re-adoption after a restart).
 *
 * Files of a job ID (local runtime, all in DIR = $DP_HOME/logs):
 *   ID.log     stdout and stderr of the command
 *   ID.events  JSON-line events written to DP_STATUS_FD (fd 3)
 *   ID.pid     "PID STARTTIME\n", written by the job before it runs anything
 *   ID.exit    the command's exit status, written when it ends
 *   ID.info    DP_BACKUP_INFO_FILE: the status fragment the method writes
 * A job whose .pid or .exit exists has been started: launching it again is
 * refused (DP_EEXIST), so a slot is never run twice.
 *
 * Not thread safe; one runtime per dp_ctl.
 */
#ifndef DP_CTL_RUNTIME_H
#define DP_CTL_RUNTIME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dp/buf.h"

typedef struct dp_rt_job {
	const char *id; /* [A-Za-z0-9._-], unique per attempt */
	char *const *argv; /* the command; argv[0] looked up in PATH */
	const char *cwd; /* working directory */
	char *const *env; /* the whole environment, "K=V" */
} dp_rt_job;

typedef struct dp_rt_handle {
	long pid;
	unsigned long long start; /* /proc start time (clock ticks since boot) */
} dp_rt_handle;

enum dp_rt_state { DP_RT_RUNNING, DP_RT_EXITED, DP_RT_LOST };

typedef struct dp_rt dp_rt;
struct dp_rt {
	int (*launch)(dp_rt *rt, const dp_rt_job *job, dp_rt_handle *out);
	/* state of a job; *exit_code for EXITED. Reads ID.pid if h->pid is 0
	 * (a launch the caller did not get to record) and fills h. A job never
	 * launched is LOST with h->pid == 0. */
	int (*poll)(dp_rt *rt, const char *id, dp_rt_handle *h, enum dp_rt_state *state,
	            int *exit_code);
	/* SIGTERM to the job's process group (then SIGKILL after grace_ms). */
	int (*stop)(dp_rt *rt, const dp_rt_handle *h, int grace_ms);
	/* Path of the job's file with that suffix ("log", "events", "info"). */
	void (*path)(dp_rt *rt, const char *id, const char *suffix, char *out, size_t outlen);
	void (*free)(dp_rt *rt);
};

int dp_rt_local_new(dp_rt **out, const char *logdir);

/* The last n lines of a job's log (for failureReason); appended to out. */
int dp_rt_log_tail(dp_rt *rt, const char *id, int n, dp_buf *out);

#endif

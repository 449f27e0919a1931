/*
 * The controller: a level-triggered reconciler over the catalog's resources
 * (BackupRepo, BackupSchedule, Backup, Restore). Each pass reads a
 * resource's spec and status from the catalog, compares it with the world
 * (workers, the repository, the clock) and moves it one or more steps
 * toward its goal, writing the new status back. The catalog is the truth:
 * a controller that restarts (or a `dp` that embeds the reconciler) picks
 * everything up from there; workers are re-adopted by pid and start time,
 * and a worker that vanished without a result fails its action with a reason.
 *
 * Workers run through a small runtime (dp-controller/runtime.h): locally they
 * are detached child processes (their own session) running an ActionSet
 * command under bash with the DP_* environment; stdout and stderr go to
 * $DP_HOME/logs/JOB.log, JSON-line events (DP_STATUS_FD=3) to JOB.events,
 * the exit status to JOB.exit. Job names are deterministic (resource,
 * action, attempt), so a job is never started twice.
 *
 * Engines are data: nothing here knows an engine. The built-in ActionSets
 * are the YAML files under methods/ (found next to the binary, in ../methods,
 * $DP_METHODS_DIR or /usr/local/share/dp/methods).
 *
 * Secrets: repository passphrases and database passwords are read from
 * their `{env}`/`{file}` sources when a worker is launched and handed to it
 * in its environment (file sources as file names); they are never stored in
 * the catalog or logged.
 *
 * Thread safety: a dp_ctl is used by one thread at a time (it owns one
 * catalog connection). Several processes may reconcile the same catalog: a
 * resource is reconciled under a per-resource file lock in $DP_HOME/locks.
 */
#ifndef DP_CONTROLLER_H
#define DP_CONTROLLER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dp/catalog.h"

typedef struct dp_ctl dp_ctl;

/* The clock (unix seconds, UTC); tests inject a fake one. */
typedef int64_t (*dp_ctl_clock_fn)(void *arg);

typedef struct dp_ctl_opts {
	const char *home; /* NULL: dp_home() */
	const char *catalog_path; /* NULL: HOME/catalog.db */
	const char *methods_dir; /* NULL: searched (see above) */
	const char *worker_path; /* dp-worker; NULL: next to this binary, else PATH */
	dp_ctl_clock_fn clock; /* NULL: time() */
	void *clock_arg;
	/* Seconds between window refreshes of a continuous backup started
	 * without a schedule (DP_ARCHIVE_INTERVAL); 0: 60. */
	int archive_interval;
	/* GC every N seconds in dp_ctl_sync (0: 60). */
	int gc_interval;
} dp_ctl_opts;

int dp_ctl_open(dp_ctl **out, const dp_ctl_opts *opts);
void dp_ctl_close(dp_ctl *c);
dp_catalog *dp_ctl_catalog(dp_ctl *c); /* borrowed */
const char *dp_ctl_home(const dp_ctl *c);
int64_t dp_ctl_now(dp_ctl *c);

/* Applies the built-in ActionSets (methods/x/actionset-*.yaml) to the catalog,
 * labelled DP_LABEL_BUILTIN and annotated with their directory (the working
 * directory of their commands). loaded may be NULL. */
int dp_ctl_load_methods(dp_ctl *c, size_t *loaded);

/* One pass over everything: repositories, schedules (creating due backups),
 * backups, restores, then garbage collection of expired backups. Errors of
 * single resources go into their status; the return is for the catalog. */
int dp_ctl_sync(dp_ctl *c);

/* Reconciles one resource as far as it goes without waiting. *final: it
 * reached a phase where nothing more happens by itself (Completed, Failed,
 * Ready, a continuous backup Running with its window recorded, or gone). */
int dp_ctl_reconcile(dp_ctl *c, dp_kind kind, const char *name, bool *final);

/* Reconciles one resource until it is final (see above), polling every
 * 200 ms. progress (may be NULL) is called after each pass with the
 * current status JSON (NULL once the resource is gone). timeout_s 0: none. */
typedef void (*dp_ctl_progress_fn)(dp_kind kind, const char *name, const char *status_json,
                                   void *arg);
int dp_ctl_drive(dp_ctl *c, dp_kind kind, const char *name, int timeout_s,
                 dp_ctl_progress_fn progress, void *arg);
/* Waits (reading only) until another process has made the resource final. */
int dp_ctl_wait(dp_ctl *c, dp_kind kind, const char *name, int timeout_s,
                dp_ctl_progress_fn progress, void *arg);
/* Whether a status (JSON text) of that kind is final, as above. */
bool dp_ctl_status_final(dp_kind kind, const char *status_json);

/* Creates a Backup of policy with method (NULL: "full" if the policy has
 * it, else its first method that is not continuous). name (NULL: made as
 * POLICY-METHOD-yyyymmddHHMMSS from the clock). The name is written to
 * name_out. */
typedef struct dp_ctl_backup_req {
	const char *policy, *method, *name;
	const char *deletion_policy; /* NULL: Delete */
	const char *retention_period; /* NULL: none */
	const char *parent; /* NULL: none */
	const char *schedule; /* the BackupSchedule that made it, or NULL */
} dp_ctl_backup_req;
int dp_ctl_backup_create(dp_ctl *c, const dp_ctl_backup_req *req, char *name_out, size_t name_len);

/* Creates a Restore. Either backup, or policy + time (the continuous backup
 * whose window holds the time is chosen). Either to_dir (+ port) or
 * in_place. */
typedef struct dp_ctl_restore_req {
	const char *name; /* NULL: restore-yyyymmddHHMMSS */
	const char *backup;
	const char *policy;
	const char *time; /* RFC 3339 */
	const char *to_dir;
	int port; /* 0: the script's default */
	bool in_place;
} dp_ctl_restore_req;
int dp_ctl_restore_create(dp_ctl *c, const dp_ctl_restore_req *req, char *name_out,
                          size_t name_len);

/* Asks for a backup's deletion: refused (DP_EUSAGE) while other backups
 * name it as their parent unless cascade (then they are deleted too). The
 * backup goes to phase Deleting; the reconciler stops its worker, runs the
 * ActionSet's preDelete, removes its data (deletionPolicy Delete: the
 * snapshots and the catalog copy in the repository, then a prune under the
 * exclusive lock) and finally the record. */
int dp_ctl_backup_delete(dp_ctl *c, const char *name, bool cascade);

/* Stops a running continuous backup: its archiver ends, the ActionSet's
 * preDelete runs (for PostgreSQL: archiving off), and it becomes Completed
 * with the recoverable window it had; the data stays. DP_EUSAGE for any
 * other backup. A BackupSchedule does this when its continuous entry is
 * disabled. */
int dp_ctl_backup_stop(dp_ctl *c, const char *name);

/* Rebuilds Backups from the repository of BackupRepo repo_name (records
 * under catalog/ in it): each backup that is not in the catalog is
 * created with its recorded status (and its policy, if missing, pointing
 * at repo_name). Never touches the data. */
int dp_ctl_catalog_import(dp_ctl *c, const char *repo_name, size_t *imported, size_t *skipped);

/* ---- the daemon's presence ---- */

/* Holds $DP_HOME/dp-controller.pid (locked) while the daemon runs. */
int dp_ctl_pidfile_acquire(const char *home, int *fd_out);
void dp_ctl_pidfile_release(int fd, const char *home);
/* true if a live dp-controller holds the pid file of home; its pid in *pid. */
bool dp_ctl_daemon_running(const char *home, long *pid);

#endif

/*
 * A throwaway PostgreSQL 15 for integration tests.
 *
 * dp_pg_create makes a temp directory owned by `nobody` (mode 0755 so that
 * root-run checks can read it), runs initdb there as nobody with data
 * checksums, and writes the settings every test needs into postgresql.conf:
 * listen on 127.0.0.1 only, a free port, the unix socket in the temp dir,
 * archive_mode=on (archive_command empty until a method sets it). Servers
 * are started with pg_ctl as nobody and stopped by the PID in
 * postmaster.pid, never by name.
 *
 * Test-only code: failures abort the test with ck_abort_msg. One dp_pg per
 * server; not thread safe.
 */
#ifndef DP_TEST_PG_H
#define DP_TEST_PG_H

#include <limits.h>
#include <stdbool.h>

#include "dp_test.h"

#define DP_PG_BIN "/usr/lib/postgresql/15/bin"
#define DP_PG_USER "nobody"

typedef struct dp_pg {
	char base[PATH_MAX]; /* temp dir owned by nobody; removed by dp_pg_destroy */
	char data[PATH_MAX]; /* the data directory (base/data unless attached) */
	char log[PATH_MAX]; /* server log */
	int port;
} dp_pg;

/* A free TCP port on 127.0.0.1 (bound and released; tests run one at a time). */
int dp_pg_free_port(void);

/* A temp dir owned by nobody, mode 0755 (for repos and restore targets). */
void dp_pg_mkdtemp(char out[PATH_MAX], const char *tag);

/* initdb + settings; extra_conf (may be NULL) is appended to postgresql.conf. */
void dp_pg_create(dp_pg *pg, const char *extra_conf);
/* Another server over an existing data directory (e.g. a restored one):
 * shares nothing with the first but the conventions. base is not removed. */
void dp_pg_attach(dp_pg *pg, const char *data_dir, int port);

void dp_pg_start(dp_pg *pg);
/* Fast shutdown by PID; waits until the postmaster has gone. No-op if it is
 * not running. */
void dp_pg_stop(dp_pg *pg);
/* PID of the running postmaster, or 0. */
int dp_pg_pid(const dp_pg *pg);
bool dp_pg_running(const dp_pg *pg);

/* Runs SQL with psql (-X -A -t -q, ON_ERROR_STOP) on database postgres over
 * TCP; returns the exit status and, if out is not NULL, the output (owned,
 * trailing newline removed). */
int dp_pg_sql(const dp_pg *pg, char **out, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Like dp_pg_sql but aborts the test on failure and returns the output. */
char *dp_pg_query(const dp_pg *pg, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* One line per user table: "name count md5" over every row in primary-key
 * order (text form), for comparing two servers. Owned. */
char *dp_pg_checksums(const dp_pg *pg);

/* Switches WAL and waits until the server has archived the segment. */
void dp_pg_archive_now(const dp_pg *pg);

/* The point-in-time scenario of the PITR tests, on a server whose WAL is
 * archived: loads two tables (lsn, if not NULL: the WAL position after the
 * load), marks T, the first whole second after it, as YYYY-MM-DDTHH:MM:SSZ,
 * waits until the server's clock is past T, changes the data, and has the
 * WAL archived. *at_t and *latest: dp_pg_checksums at T and at the end
 * (different). Caller frees the strings. */
void dp_pg_pitr_scenario(const dp_pg *pg, char T[32], char **lsn, char **at_t, char **latest);

/* ---- running the postgresql method scripts ---- */

/* Absolute path of methods/postgresql/scripts (from the working directory,
 * the repository root, or $DP_METHODS_DIR). Static storage. */
const char *dp_pg_scripts(void);

/* Makes a repository owned by nobody in a fresh nobody-owned temp dir
 * (out: the repository path; the dir is out's parent) and exports DP_REPO,
 * DP_REPO_PASSPHRASE, DP_WORKER and DP_PG_BIN for the scripts. */
void dp_pg_repo_init(char out[PATH_MAX]);

/* Runs `sh -c CMD` as nobody (runuser) with DP_DB_HOST/PORT/USER and
 * DP_DATA_DIR of pg in the environment; CMD may use $S for the scripts
 * directory. Returns the exit status; output in *r (caller frees). */
int dp_pg_script(dp_test_result *r, const dp_pg *pg, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The same, as root (scripts then act for the data directory's owner). */
int dp_pg_script_root(dp_test_result *r, const dp_pg *pg, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Stops the server if running and removes base. */
void dp_pg_destroy(dp_pg *pg);

#endif

/*
 * Implementation of the throwaway PostgreSQL in pg.h. Every server command
 * runs as nobody through runuser; clients connect over 127.0.0.1 as the
 * superuser "nobody" that initdb created (trust auth, loopback only).
 * Test-only code: failures abort the test.
 */
#include "pg.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "dp_test.h"

/* snprintf that fails the test instead of truncating. */
#define FMT(dst, ...)                                                                              \
	ck_assert_msg(snprintf((dst), sizeof(dst), __VA_ARGS__) < (int)sizeof(dst), "too long")

int dp_pg_free_port(void)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	ck_assert_int_ge(fd, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ck_assert_int_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	socklen_t len = sizeof(a);
	ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&a, &len), 0);
	close(fd);
	return ntohs(a.sin_port);
}

static void chown_nobody(const char *path)
{
	struct passwd *pw = getpwnam(DP_PG_USER);
	ck_assert_msg(pw != NULL, "no user %s", DP_PG_USER);
	ck_assert_msg(chown(path, pw->pw_uid, pw->pw_gid) == 0, "chown %s: %s", path,
	              strerror(errno));
}

/* Temp dirs made for this test process; dp_pg_destroy removes them. Any
 * server still running over a data directory inside them is stopped first
 * (by the reaper below if the test ends early). */
static char made[32][PATH_MAX];
static int nmade;

/* The reaper: check ends a failed forked test with _exit(), so neither
 * atexit nor teardown runs. One small process per test process, started with
 * the first temp dir, waits for the test process to go, then stops the
 * servers (by the PID in postmaster.pid) over data directories in the temp
 * dirs listed in its file and removes those dirs. dp_pg_destroy empties the
 * list after cleaning up itself. */
static char reaper_list[PATH_MAX];

static const char reaper_script[] =
    "while kill -0 \"$1\" 2>/dev/null; do sleep 0.5; done\n"
    "[ -f \"$2\" ] || exit 0\n"
    "while read -r d; do\n"
    "  for f in \"$d\"/*/postmaster.pid; do\n"
    "    [ -f \"$f\" ] || continue\n"
    "    p=$(head -n 1 \"$f\"); kill -INT \"$p\" 2>/dev/null\n"
    "    for i in $(seq 100); do kill -0 \"$p\" 2>/dev/null || break; sleep 0.1; done\n"
    "  done\n"
    "  rm -rf \"$d\"\n"
    "done < \"$2\"\n"
    "rm -f \"$2\"\n";

static void reaper_start(void)
{
	const char *tmp = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
	FMT(reaper_list, "%s/dp-pg-reaper-%ld.list", tmp, (long)getpid());
	FILE *f = fopen(reaper_list, "w");
	ck_assert_ptr_nonnull(f);
	fclose(f);
	char pid[32];
	snprintf(pid, sizeof(pid), "%ld", (long)getpid());
	pid_t c = fork();
	ck_assert_int_ge(c, 0);
	if (c == 0) {
		setsid();
		int nul = open("/dev/null", O_RDWR);
		for (int fd = 0; fd < 3; fd++)
			dup2(nul, fd);
		for (int fd = 3; fd < 1024; fd++)
			close(fd);
		execl("/bin/sh", "sh", "-c", reaper_script, "dp-pg-reaper", pid, reaper_list,
		      (char *)NULL);
		_exit(127);
	}
}

static void reaper_add(const char *dir)
{
	FILE *f = fopen(reaper_list, "a");
	ck_assert_ptr_nonnull(f);
	fprintf(f, "%s\n", dir);
	fclose(f);
}

void dp_pg_mkdtemp(char out[PATH_MAX], const char *tag)
{
	if (!reaper_list[0])
		reaper_start();
	dp_test_mkdtemp(out, tag);
	reaper_add(out);
	if (nmade < 32)
		snprintf(made[nmade++], PATH_MAX, "%s", out);
	ck_assert_int_eq(chmod(out, 0755), 0);
	chown_nobody(out);
}

static void run_ok(const char *what, const char *cmd)
{
	dp_test_result r;
	int st = dp_test_run(&r, "%s", cmd);
	ck_assert_msg(st == 0, "%s failed (exit %d): %s\n%s", what, st, r.err, r.out);
	dp_test_result_free(&r);
}

void dp_pg_create(dp_pg *pg, const char *extra_conf)
{
	memset(pg, 0, sizeof(*pg));
	dp_pg_mkdtemp(pg->base, "pg");
	FMT(pg->data, "%s/data", pg->base);
	FMT(pg->log, "%s/server.log", pg->base);
	pg->port = dp_pg_free_port();

	char cmd[PATH_MAX * 2];
	FMT(cmd,
	    "runuser -u " DP_PG_USER " -- " DP_PG_BIN "/initdb -D '%s' -U " DP_PG_USER
	    " --data-checksums -E UTF8 --locale=C.UTF-8 -A trust >/dev/null",
	    pg->data);
	run_ok("initdb", cmd);

	char conf[PATH_MAX];
	FMT(conf, "%s/postgresql.conf", pg->data);
	FILE *f = fopen(conf, "a");
	ck_assert_ptr_nonnull(f);
	fprintf(f,
	        "\n# dp test harness\nlisten_addresses = '127.0.0.1'\nport = %d\n"
	        "unix_socket_directories = '%s'\narchive_mode = on\nmax_wal_size = 256MB\n"
	        "shared_buffers = 64MB\nfsync = on\nlog_min_messages = warning\n"
	        "logging_collector = off\n%s\n",
	        pg->port, pg->base, extra_conf ? extra_conf : "");
	ck_assert_int_eq(fclose(f), 0);
}

void dp_pg_attach(dp_pg *pg, const char *data_dir, int port)
{
	memset(pg, 0, sizeof(*pg));
	FMT(pg->data, "%s", data_dir);
	FMT(pg->log, "%s.log", data_dir);
	pg->port = port;
}

int dp_pg_pid(const dp_pg *pg)
{
	char path[PATH_MAX];
	FMT(path, "%s/postmaster.pid", pg->data);
	FILE *f = fopen(path, "r");
	if (!f)
		return 0;
	long pid = 0;
	if (fscanf(f, "%ld", &pid) != 1)
		pid = 0;
	fclose(f);
	if (pid <= 0 || kill((pid_t)pid, 0) != 0)
		return 0;
	return (int)pid;
}

bool dp_pg_running(const dp_pg *pg)
{
	return dp_pg_pid(pg) > 0;
}

void dp_pg_start(dp_pg *pg)
{
	char cmd[PATH_MAX * 3];
	FMT(cmd,
	    "touch '%s' && chown " DP_PG_USER " '%s' && runuser -u " DP_PG_USER " -- " DP_PG_BIN
	    "/pg_ctl -D '%s' -l '%s' -o '-p %d' -w -t 60 start >/dev/null",
	    pg->log, pg->log, pg->data, pg->log, pg->port);
	dp_test_result r;
	int st = dp_test_run(&r, "%s", cmd);
	if (st != 0) {
		dp_test_result lr;
		dp_test_run(&lr, "tail -n 30 '%s'", pg->log);
		ck_abort_msg("pg_ctl start %s failed (exit %d): %s\n%s", pg->data, st, r.err,
		             lr.out);
	}
	dp_test_result_free(&r);
}

void dp_pg_stop(dp_pg *pg)
{
	int pid = dp_pg_pid(pg);
	if (pid <= 0)
		return;
	kill(pid, SIGINT); /* fast shutdown */
	for (int i = 0; i < 600; i++) {
		if (kill(pid, 0) != 0 && errno == ESRCH)
			return;
		struct timespec ts = {0, 100 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
	kill(pid, SIGQUIT);
	ck_abort_msg("postgres pid %d did not stop", pid);
}

static int vsql(const dp_pg *pg, char **out, const char *fmt, va_list ap)
{
	char sqlpath[PATH_MAX];
	const char *tmp = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
	snprintf(sqlpath, sizeof(sqlpath), "%s/dp-pg-sql-XXXXXX", tmp);
	int fd = mkstemp(sqlpath);
	ck_assert_int_ge(fd, 0);
	FILE *f = fdopen(fd, "w");
	ck_assert_ptr_nonnull(f);
	vfprintf(f, fmt, ap);
	fputc('\n', f);
	ck_assert_int_eq(fclose(f), 0);

	dp_test_result r;
	int st = dp_test_run(
	    &r,
	    DP_PG_BIN "/psql -X -A -t -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p %d -U " DP_PG_USER
	              " -d postgres -f '%s'",
	    pg->port, sqlpath);
	unlink(sqlpath);
	if (st != 0)
		fprintf(stderr, "psql (port %d) failed: %s\n", pg->port, r.err);
	size_t n = strlen(r.out);
	while (n > 0 && r.out[n - 1] == '\n')
		r.out[--n] = 0;
	if (out) {
		*out = r.out;
		r.out = NULL;
	}
	dp_test_result_free(&r);
	return st;
}

int dp_pg_sql(const dp_pg *pg, char **out, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int st = vsql(pg, out, fmt, ap);
	va_end(ap);
	return st;
}

char *dp_pg_query(const dp_pg *pg, const char *fmt, ...)
{
	char *out = NULL;
	va_list ap;
	va_start(ap, fmt);
	int st = vsql(pg, &out, fmt, ap);
	va_end(ap);
	ck_assert_msg(st == 0, "query on port %d failed: %s", pg->port, out ? out : "");
	return out;
}

char *dp_pg_checksums(const dp_pg *pg)
{
	return dp_pg_query(
	    pg, "SELECT format('SELECT %%L, count(*), md5(coalesce(string_agg(t::text, "
	        "''|'' ORDER BY t::text), '''')) FROM %%I.%%I t', relname, schemaname, "
	        "relname) FROM pg_stat_user_tables ORDER BY schemaname, relname \\gexec");
}

void dp_pg_archive_now(const dp_pg *pg)
{
	char *seg = dp_pg_query(pg, "SELECT pg_walfile_name(pg_switch_wal())");
	for (int i = 0; i < 300; i++) {
		char *last = dp_pg_query(
		    pg, "SELECT coalesce(last_archived_wal, '') >= '%s' FROM pg_stat_archiver",
		    seg);
		bool done = strcmp(last, "t") == 0;
		free(last);
		if (done) {
			free(seg);
			return;
		}
		usleep(100 * 1000);
	}
	ck_abort_msg("segment %s was not archived", seg);
}

void dp_pg_pitr_scenario(const dp_pg *pg, char T[32], char **lsn, char **at_t, char **latest)
{
	free(dp_pg_query(
	    pg, "CREATE TABLE items(id int PRIMARY KEY, qty int);"
	        "INSERT INTO items SELECT g, g FROM generate_series(1, 5000) g;"
	        "CREATE TABLE notes(id int PRIMARY KEY, body text);"
	        "INSERT INTO notes SELECT g, md5(g::text) FROM generate_series(1, 500) g"));
	if (lsn)
		*lsn = dp_pg_query(pg, "SELECT pg_current_wal_lsn()");
	/* T: the first whole second after the load; the changes come after it. */
	char *srv = dp_pg_query(pg, "SELECT extract(epoch FROM clock_timestamp())::float8");
	time_t t = (time_t)strtod(srv, NULL) + 1;
	free(srv);
	struct tm tm;
	gmtime_r(&t, &tm);
	strftime(T, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
	*at_t = dp_pg_checksums(pg);
	for (;;) {
		char *now = dp_pg_query(pg, "SELECT extract(epoch FROM clock_timestamp()) > %ld.3",
		                        (long)t);
		bool past = strcmp(now, "t") == 0;
		free(now);
		if (past)
			break;
		usleep(50 * 1000);
	}
	free(dp_pg_query(pg,
	                 "UPDATE items SET qty = qty + 1000 WHERE id <= 2500;"
	                 "DELETE FROM notes WHERE id %% 2 = 0;"
	                 "CREATE TABLE extra AS SELECT g AS id FROM generate_series(1, 100) g"));
	*latest = dp_pg_checksums(pg);
	ck_assert_str_ne(*at_t, *latest);
	dp_pg_archive_now(pg);
}

/* The tests run the scripts and dp-worker as nobody: when nobody cannot
 * reach them where they are (a checkout under a private home), use copies
 * in a temp dir. */
static bool nobody_can(const char *test, const char *path)
{
	dp_test_result r;
	int st = dp_test_run(&r, "runuser -u " DP_PG_USER " -- test %s '%s'", test, path);
	dp_test_result_free(&r);
	return st == 0;
}

static const char *nobody_copy(const char *src)
{
	static char dir[PATH_MAX];
	static char out[4][PATH_MAX];
	static int n;
	if (!dir[0])
		dp_pg_mkdtemp(dir, "pgcopy");
	ck_assert_int_lt(n, 4);
	const char *base = strrchr(src, '/');
	FMT(out[n], "%s/%s", dir, base ? base + 1 : src);
	char cmd[PATH_MAX * 3];
	FMT(cmd, "cp -R '%s' '%s' && chmod -R a+rX '%s'", src, out[n], out[n]);
	run_ok("copy for nobody", cmd);
	return out[n++];
}

const char *dp_pg_scripts(void)
{
	static char dir[PATH_MAX];
	if (!dir[0]) {
		const char *m = getenv("DP_METHODS_DIR");
		char cwd[PATH_MAX];
		ck_assert_ptr_nonnull(getcwd(cwd, sizeof(cwd)));
		if (m)
			FMT(dir, "%s/postgresql/scripts", m);
		else
			FMT(dir, "%s/methods/postgresql/scripts", cwd);
		char probe[PATH_MAX];
		FMT(probe, "%s/lib.sh", dir);
		ck_assert_msg(access(probe, R_OK) == 0, "method scripts not found in %s", dir);
		if (!nobody_can("-r", probe))
			FMT(dir, "%s", nobody_copy(dir));
	}
	return dir;
}

void dp_pg_repo_init(char out[PATH_MAX])
{
	char dir[PATH_MAX];
	dp_pg_mkdtemp(dir, "pgrepo");
	ck_assert_int_lt(snprintf(out, PATH_MAX, "%s/repo", dir), PATH_MAX);
	setenv("DP_REPO", out, 1);
	setenv("DP_REPO_PASSPHRASE", "pg-test-passphrase", 1);
	const char *w = dp_test_bin("dp-worker");
	setenv("DP_WORKER", nobody_can("-x", w) ? w : nobody_copy(w), 1);
	setenv("DP_PG_BIN", DP_PG_BIN, 1);
	char cmd[PATH_MAX * 2];
	FMT(cmd, "runuser -u " DP_PG_USER " -- '%s' repo init --repo '%s' >/dev/null",
	    nobody_can("-x", dp_test_bin("dp")) ? dp_test_bin("dp")
	                                        : nobody_copy(dp_test_bin("dp")),
	    out);
	run_ok("dp repo init", cmd);
}

static int vscript(dp_test_result *r, const dp_pg *pg, bool root, const char *fmt, va_list ap)
{
	char body[8192];
	ck_assert_int_lt(vsnprintf(body, sizeof(body), fmt, ap), (int)sizeof(body));
	setenv("S", dp_pg_scripts(), 1);
	setenv("DP_DB_HOST", "127.0.0.1", 1);
	setenv("DP_DB_USER", DP_PG_USER, 1);
	char port[16];
	snprintf(port, sizeof(port), "%d", pg->port);
	setenv("DP_DB_PORT", port, 1);
	setenv("DP_DATA_DIR", pg->data, 1);
	/* The script body goes through a file so that quoting stays simple. */
	char path[PATH_MAX];
	const char *tmp = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
	FMT(path, "%s/dp-pg-script-XXXXXX", tmp);
	int fd = mkstemp(path);
	ck_assert_int_ge(fd, 0);
	FILE *f = fdopen(fd, "w");
	ck_assert_ptr_nonnull(f);
	/* Scripts' own temp files (also those a killed script leaves) go
	 * into a dir of ours, removed with the others. */
	static char scratch[PATH_MAX];
	if (!scratch[0] || access(scratch, F_OK) != 0) /* gone with a destroy */
		dp_pg_mkdtemp(scratch, "pgtmp");
	fprintf(f, "cd / || exit 99\nexport TMPDIR='%s'\n%s\n", scratch, body);
	ck_assert_int_eq(fclose(f), 0);
	ck_assert_int_eq(chmod(path, 0644), 0);
	int st = root ? dp_test_run(r, "bash '%s'", path)
	              : dp_test_run(r, "runuser -u " DP_PG_USER " -- bash '%s'", path);
	unlink(path);
	return st;
}

int dp_pg_script(dp_test_result *r, const dp_pg *pg, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int st = vscript(r, pg, false, fmt, ap);
	va_end(ap);
	return st;
}

int dp_pg_script_root(dp_test_result *r, const dp_pg *pg, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int st = vscript(r, pg, true, fmt, ap);
	va_end(ap);
	return st;
}

/* Stops every server over a data directory in one of our temp dirs (by the
 * PID in postmaster.pid), then removes the dirs. */
static void cleanup_made(void)
{
	int n = nmade;
	nmade = 0; /* once, even if something below ends the process */
	for (int i = 0; i < n; i++) {
		char cmd[PATH_MAX * 2];
		FMT(cmd,
		    "for f in '%s'/*/postmaster.pid; do [ -f \"$f\" ] || continue; "
		    "p=$(head -n 1 \"$f\"); kill -INT \"$p\" 2>/dev/null; "
		    "for i in $(seq 100); do kill -0 \"$p\" 2>/dev/null || break; sleep 0.1; done; "
		    "done",
		    made[i]);
		dp_test_result r;
		dp_test_run(&r, "%s", cmd);
		dp_test_result_free(&r);
		dp_test_rmrf(made[i]);
	}
	if (reaper_list[0]) {
		FILE *f = fopen(reaper_list, "w"); /* nothing left for the reaper */
		if (f)
			fclose(f);
	}
}

void dp_pg_destroy(dp_pg *pg)
{
	dp_pg_stop(pg);
	if (pg->base[0])
		dp_test_rmrf(pg->base);
	memset(pg, 0, sizeof(*pg));
	cleanup_made(); /* restored servers the test left running, temp dirs */
}

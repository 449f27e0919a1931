/*
 * The local runtime: each job is a child process in its own session, so it
 * survives the controller (or the `dp` that started it) and can be adopted
 * by the next one. The child writes ID.pid before anything else, then runs
 *   bash -c '"$@"; rc=$?; echo $rc >ID.exit.tmp && mv ID.exit.tmp ID.exit'
 * so the exit status is kept on disk even when nobody waits for it. A job
 * is identified by pid + start time (from /proc), so a recycled pid is never
 * mistaken for it. Everything the child does between fork and exec uses
 * buffers prepared before the fork (the daemon has other threads).
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "dp/error.h"
#include "runtime.h"

struct local {
	dp_rt rt;
	char dir[4096];
};

static const char WRAP[] = "\"$@\"; rc=$?; printf '%s\\n' \"$rc\" >\"$DP_JOB_EXIT.tmp\" && "
                           "mv -f \"$DP_JOB_EXIT.tmp\" \"$DP_JOB_EXIT\"; exit $rc";

static void lpath(dp_rt *rt, const char *id, const char *suffix, char *out, size_t outlen)
{
	struct local *l = (struct local *)rt;
	snprintf(out, outlen, "%s/%s.%s", l->dir, id, suffix);
}

/* Field 22 (starttime) of /proc/PID/stat and the state letter. */
static int proc_start(long pid, unsigned long long *start, char *state)
{
	char p[64], buf[1024];
	snprintf(p, sizeof(p), "/proc/%ld/stat", pid);
	int fd = open(p, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return -1;
	buf[n] = 0;
	char *s = strrchr(buf, ')');
	if (!s || s[1] != ' ')
		return -1;
	s += 2;
	if (state)
		*state = *s;
	/* s points at field 3; starttime is field 22. */
	for (int f = 3; f < 22; f++) {
		s = strchr(s, ' ');
		if (!s)
			return -1;
		s++;
	}
	*start = strtoull(s, NULL, 10);
	return 0;
}

static int write_all(int fd, const char *s, size_t n)
{
	while (n) {
		ssize_t w = write(fd, s, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -1;
		s += w;
		n -= (size_t)w;
	}
	return 0;
}

static int local_launch(dp_rt *rt, const dp_rt_job *job, dp_rt_handle *out)
{
	char pidf[4200], logf[4200], evf[4200], exitf[4200], tmp[4300];
	lpath(rt, job->id, "pid", pidf, sizeof(pidf));
	lpath(rt, job->id, "log", logf, sizeof(logf));
	lpath(rt, job->id, "events", evf, sizeof(evf));
	lpath(rt, job->id, "exit", exitf, sizeof(exitf));
	snprintf(tmp, sizeof(tmp), "%s.tmp", pidf);
	if (access(pidf, F_OK) == 0 || access(exitf, F_OK) == 0)
		return dp_error_set(DP_EEXIST, "job \"%s\" was already started", job->id);

	/* argv: bash -c WRAP dp-job CMD... ; env: job env + DP_JOB_EXIT +
	 * DP_STATUS_FD. */
	size_t na = 0, ne = 0;
	while (job->argv[na])
		na++;
	while (job->env[ne])
		ne++;
	char **argv = calloc(na + 5, sizeof(*argv));
	char **env = calloc(ne + 3, sizeof(*env));
	char exit_env[4300];
	snprintf(exit_env, sizeof(exit_env), "DP_JOB_EXIT=%s", exitf);
	if (!argv || !env) {
		free(argv);
		free(env);
		return dp_error_set(DP_ERROR, "out of memory");
	}
	argv[0] = "bash";
	argv[1] = "-c";
	argv[2] = (char *)WRAP;
	argv[3] = "dp-job";
	for (size_t i = 0; i < na; i++)
		argv[4 + i] = job->argv[i];
	for (size_t i = 0; i < ne; i++)
		env[i] = job->env[i];
	env[ne] = exit_env;
	env[ne + 1] = "DP_STATUS_FD=3";

	int err[2];
	if (pipe2(err, O_CLOEXEC) != 0) {
		free(argv);
		free(env);
		return dp_error_errno(DP_ERROR, errno, "cannot start job \"%s\"", job->id);
	}
	pid_t pid = fork();
	if (pid < 0) {
		int e = errno;
		close(err[0]);
		close(err[1]);
		free(argv);
		free(env);
		return dp_error_errno(DP_ERROR, e, "cannot start job \"%s\": fork", job->id);
	}
	if (pid == 0) {
		/* Child: only system calls and preformatted buffers. */
		const char *what = "setsid";
		setsid();
		signal(SIGPIPE, SIG_DFL);
		sigset_t none;
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		unsigned long long st = 0;
		char line[64];
		int fd;
		what = "pid file";
		if (proc_start(getpid(), &st, NULL) != 0)
			goto fail;
		int n = snprintf(line, sizeof(line), "%ld %llu\n", (long)getpid(), st);
		fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
		if (fd < 0 || write_all(fd, line, (size_t)n) || fsync(fd) || close(fd) ||
		    rename(tmp, pidf))
			goto fail;
		what = "log file";
		fd = open(logf, O_WRONLY | O_CREAT | O_APPEND, 0600);
		if (fd < 0 || dup2(fd, 1) < 0 || dup2(fd, 2) < 0)
			goto fail;
		if (fd > 2)
			close(fd);
		what = "events file";
		fd = open(evf, O_WRONLY | O_CREAT | O_APPEND, 0600);
		if (fd < 0 || (fd != 3 && (dup2(fd, 3) < 0 || close(fd))))
			goto fail;
		what = "/dev/null";
		fd = open("/dev/null", O_RDONLY);
		if (fd < 0 || dup2(fd, 0) < 0)
			goto fail;
		if (fd > 0)
			close(fd);
		/* Nothing else of ours leaks into the job (the API's sockets, the
		 * catalog, locks): a worker that outlives us must not hold them.
		 * err[1] stays until exec (close-on-exec tells the parent). */
		what = "closing descriptors";
		if (err[1] > 4 && close_range(4, (unsigned)err[1] - 1, 0) != 0)
			goto fail;
		if (close_range((unsigned)err[1] + 1 > 4 ? (unsigned)err[1] + 1 : 4, ~0U, 0) != 0)
			goto fail;
		what = "working directory";
		if (job->cwd && chdir(job->cwd) != 0)
			goto fail;
		what = "bash";
		execvpe("bash", argv, env);
	fail:;
		int e = errno;
		char msg[256];
		int m = snprintf(msg, sizeof(msg), "%s: %s", what, strerror(e));
		if (write_all(err[1], msg, (size_t)m))
			_exit(127);
		_exit(127);
	}
	close(err[1]);
	free(argv);
	free(env);
	char msg[256];
	ssize_t n;
	do
		n = read(err[0], msg, sizeof(msg) - 1);
	while (n < 0 && errno == EINTR);
	close(err[0]);
	if (n > 0) {
		msg[n] = 0;
		waitpid(pid, NULL, 0);
		return dp_error_set(DP_ERROR, "cannot start job \"%s\": %s", job->id, msg);
	}
	/* exec succeeded (the close-on-exec pipe closed): the pid file is there. */
	out->pid = pid;
	out->start = 0;
	if (proc_start(pid, &out->start, NULL) != 0) {
		FILE *f = fopen(pidf, "r");
		if (f) {
			long p;
			if (fscanf(f, "%ld %llu", &p, &out->start) != 2)
				out->start = 0;
			fclose(f);
		}
	}
	return 0;
}

static int read_exit(dp_rt *rt, const char *id, int *code)
{
	char p[4200];
	lpath(rt, id, "exit", p, sizeof(p));
	FILE *f = fopen(p, "r");
	if (!f)
		return -1;
	int c = -1, ok = fscanf(f, "%d", &c) == 1;
	fclose(f);
	if (!ok)
		return -1;
	*code = c;
	return 0;
}

static int local_poll(dp_rt *rt, const char *id, dp_rt_handle *h, enum dp_rt_state *state,
                      int *exit_code)
{
	if (h->pid <= 0) {
		char p[4200];
		lpath(rt, id, "pid", p, sizeof(p));
		FILE *f = fopen(p, "r");
		if (f) {
			if (fscanf(f, "%ld %llu", &h->pid, &h->start) != 2)
				h->pid = 0;
			fclose(f);
		}
	}
	*exit_code = -1;
	if (h->pid > 0) {
		int st;
		pid_t w = waitpid((pid_t)h->pid, &st, WNOHANG);
		if (w == 0) {
			*state = DP_RT_RUNNING; /* our child, alive */
			return 0;
		}
		if (w == (pid_t)h->pid) {
			/* Our child ended: the exit file holds the command's status;
			 * without it the wrapper itself was killed (LOST). */
			if (read_exit(rt, id, exit_code) == 0) {
				*state = DP_RT_EXITED;
			} else {
				*exit_code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
				*state = DP_RT_LOST;
			}
			return 0;
		}
		unsigned long long start;
		char ps = 0;
		if (proc_start(h->pid, &start, &ps) == 0 && start == h->start && ps != 'Z') {
			*state = DP_RT_RUNNING;
			return 0;
		}
	}
	*state = read_exit(rt, id, exit_code) == 0 ? DP_RT_EXITED : DP_RT_LOST;
	return 0;
}

static bool alive(const dp_rt_handle *h)
{
	unsigned long long start;
	char st = 0;
	if (proc_start(h->pid, &start, &st) != 0 || start != h->start || st == 'Z')
		return false;
	return true;
}

static int local_stop(dp_rt *rt, const dp_rt_handle *h, int grace_ms)
{
	(void)rt;
	if (h->pid <= 0 || !alive(h))
		return 0;
	kill(-(pid_t)h->pid, SIGTERM);
	for (int waited = 0; waited < grace_ms; waited += 50) {
		waitpid((pid_t)h->pid, NULL, WNOHANG);
		if (!alive(h))
			return 0;
		struct timespec ts = {0, 50 * 1000000L};
		nanosleep(&ts, NULL);
	}
	kill(-(pid_t)h->pid, SIGKILL);
	waitpid((pid_t)h->pid, NULL, WNOHANG);
	return 0;
}

static void local_free(dp_rt *rt)
{
	free(rt);
}

int dp_rt_local_new(dp_rt **out, const char *logdir)
{
	struct local *l = calloc(1, sizeof(*l));
	if (!l)
		return dp_error_set(DP_ERROR, "out of memory");
	snprintf(l->dir, sizeof(l->dir), "%s", logdir);
	if (mkdir(logdir, 0700) != 0 && errno != EEXIST) {
		int e = errno;
		free(l);
		return dp_error_errno(DP_ERROR, e, "cannot create the log directory \"%s\"",
		                      logdir);
	}
	l->rt.launch = local_launch;
	l->rt.poll = local_poll;
	l->rt.stop = local_stop;
	l->rt.path = lpath;
	l->rt.free = local_free;
	*out = &l->rt;
	return 0;
}

int dp_rt_log_tail(dp_rt *rt, const char *id, int n, dp_buf *out)
{
	char p[4200];
	rt->path(rt, id, "log", p, sizeof(p));
	FILE *f = fopen(p, "r");
	if (!f)
		return 0;
	char buf[8192];
	if (fseeko(f, 0, SEEK_END) == 0) {
		off_t sz = ftello(f);
		fseeko(f, sz > (off_t)sizeof(buf) - 1 ? sz - (off_t)sizeof(buf) + 1 : 0, SEEK_SET);
	}
	size_t got = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[got] = 0;
	while (got && (buf[got - 1] == '\n' || buf[got - 1] == ' '))
		buf[--got] = 0;
	char *start = buf + got;
	int lines = 0;
	while (start > buf) {
		if (start[-1] == '\n' && ++lines == n)
			break;
		start--;
	}
	return dp_buf_append(out, start, strlen(start));
}

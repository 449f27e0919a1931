/*
 * Human logging to stderr: "prog: level: message". One write(2) per line so
 * lines from several threads and processes do not interleave.
 */
#include "dp/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static enum dp_log_level min_level = DP_LOG_INFO;
static char prog[64] = "dp";

void dp_log_set_level(enum dp_log_level level)
{
	min_level = level;
}

void dp_log_set_prog(const char *p)
{
	snprintf(prog, sizeof(prog), "%s", p);
}

void dp_log(enum dp_log_level level, const char *fmt, ...)
{
	static const char *names[] = {"debug", "info", "warning", "error"};
	if (level < min_level)
		return;
	char line[2048];
	int n = snprintf(line, sizeof(line), "%s: %s: ", prog, names[level]);
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
	va_end(ap);
	size_t len = strlen(line);
	line[len++] = '\n';
	ssize_t w = write(STDERR_FILENO, line, len);
	(void)w;
}

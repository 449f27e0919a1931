/*
 * The thread-local error record (see dp/error.h). Messages are truncated at
 * 1 KiB; every setter is safe to call with any thread's record.
 */
#include "dp/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static _Thread_local struct {
	int rc;
	char msg[1024];
} last;

static int vset(int rc, const char *fmt, va_list ap)
{
	last.rc = rc;
	vsnprintf(last.msg, sizeof(last.msg), fmt, ap);
	return rc;
}

int dp_error_set(int rc, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vset(rc, fmt, ap);
	va_end(ap);
	return rc;
}

int dp_error_errno(int rc, int errnum, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vset(rc, fmt, ap);
	va_end(ap);
	size_t len = strlen(last.msg);
	snprintf(last.msg + len, sizeof(last.msg) - len, ": %s", strerror(errnum));
	return rc;
}

int dp_error_prefix(const char *fmt, ...)
{
	char prefix[512], old[sizeof(last.msg)];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(prefix, sizeof(prefix), fmt, ap);
	va_end(ap);
	memcpy(old, last.msg, sizeof(old));
	/* Truncation is fine: messages are for people and capped. */
	size_t plen = strlen(prefix);
	if (plen > sizeof(last.msg) - 3)
		plen = sizeof(last.msg) - 3;
	memcpy(last.msg, prefix, plen);
	memcpy(last.msg + plen, ": ", 2);
	size_t rest = sizeof(last.msg) - plen - 3;
	size_t olen = strnlen(old, rest);
	memcpy(last.msg + plen + 2, old, olen);
	last.msg[plen + 2 + olen] = 0;
	return last.rc;
}

const char *dp_error_last(void)
{
	return last.msg;
}

int dp_error_code(void)
{
	return last.rc;
}

void dp_error_clear(void)
{
	last.rc = 0;
	last.msg[0] = 0;
}

void dp_error_restore(int rc, const char *msg)
{
	last.rc = rc;
	snprintf(last.msg, sizeof(last.msg), "%s", msg ? msg : "");
}

int dp_error_exit_code(int rc)
{
	switch (rc) {
	case DP_OK:
		return 0;
	case DP_EUSAGE:
		return 2;
	case DP_EAUTH:
		return 3;
	case DP_ECORRUPT:
		return 4;
	case DP_ENOTFOUND:
		return 5;
	case DP_ELOCKED:
		return 6;
	default:
		return 1;
	}
}

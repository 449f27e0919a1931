/*
 * Cron expressions, durations and RFC 3339 timestamps (see dp/cron.h).
 *
 * A parsed expression is five bitsets; the next fire time is found by
 * walking forward field by field (month, day, hour, minute), each miss
 * jumping to the start of the next unit, so a search costs at most a few
 * thousand steps even for a leap day. All functions are pure and
 * thread-safe (gmtime_r/timegm only).
 */
#include "dp/cron.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "dp/error.h"

enum { F_MINUTE, F_HOUR, F_DOM, F_MONTH, F_DOW };

static const struct {
	const char *name;
	int min, max;
} fields[] = {
    {"minute", 0, 59}, {"hour", 0, 23},       {"day of month", 1, 31},
    {"month", 1, 12},  {"day of week", 0, 7},
};

static const char *month_names[] = {"jan", "feb", "mar", "apr", "may", "jun",
                                    "jul", "aug", "sep", "oct", "nov", "dec"};
static const char *dow_names[] = {"sun", "mon", "tue", "wed", "thu", "fri", "sat"};

/* Reads a number or (for month/day of week) a name at *p; advances *p. */
static int parse_value(int f, const char **p, int *out, const char *item)
{
	const char *s = *p;
	if (isdigit((unsigned char)*s)) {
		long v = 0;
		while (isdigit((unsigned char)*s)) {
			v = v * 10 + (*s - '0');
			if (v > 1000)
				return dp_error_set(DP_EUSAGE, "%s out of range", fields[f].name);
			s++;
		}
		if (v < fields[f].min || v > fields[f].max)
			return dp_error_set(DP_EUSAGE, "%s out of range", fields[f].name);
		*out = (int)v;
		*p = s;
		return 0;
	}
	if ((f == F_MONTH || f == F_DOW) && isalpha((unsigned char)*s)) {
		size_t n = 0;
		while (isalpha((unsigned char)s[n]))
			n++;
		const char **names = f == F_MONTH ? month_names : dow_names;
		int count = f == F_MONTH ? 12 : 7;
		for (int i = 0; n == 3 && i < count; i++) {
			if (strncasecmp(s, names[i], 3) == 0) {
				*out = f == F_MONTH ? i + 1 : i;
				*p = s + 3;
				return 0;
			}
		}
	}
	return dp_error_set(DP_EUSAGE, "bad %s \"%s\"", fields[f].name, item);
}

/* One comma-separated item: "*", "v", "a-b", each optionally "/step". */
static int parse_item(int f, const char *item, uint64_t *bits)
{
	const char *p = item;
	int lo, hi, step = 1, rc;
	bool single = false;
	if (*p == '*') {
		lo = fields[f].min;
		hi = fields[f].max;
		p++;
	} else {
		if ((rc = parse_value(f, &p, &lo, item)))
			return rc;
		if (*p == '-') {
			p++;
			if ((rc = parse_value(f, &p, &hi, item)))
				return rc;
			if (hi < lo)
				return dp_error_set(DP_EUSAGE, "%s range \"%s\" is backwards",
				                    fields[f].name, item);
		} else {
			hi = lo;
			single = true;
		}
	}
	if (*p == '/') {
		p++;
		if (!isdigit((unsigned char)*p))
			return dp_error_set(DP_EUSAGE, "bad step in %s \"%s\"", fields[f].name,
			                    item);
		long v = 0;
		while (isdigit((unsigned char)*p) && v <= 1000)
			v = v * 10 + (*p++ - '0');
		if (v < 1 || v > fields[f].max - fields[f].min + 1 || isdigit((unsigned char)*p))
			return dp_error_set(DP_EUSAGE, "step out of range in %s \"%s\"",
			                    fields[f].name, item);
		step = (int)v;
		if (single)
			hi = fields[f].max; /* "a/n": from a to the end */
	}
	if (*p != 0)
		return dp_error_set(DP_EUSAGE, "bad %s \"%s\"", fields[f].name, item);
	for (int v = lo; v <= hi; v += step)
		*bits |= 1ULL << (f == F_DOW && v == 7 ? 0 : v);
	return 0;
}

static int parse_field(int f, const char *text, uint64_t *bits)
{
	char item[64];
	const char *p = text;
	*bits = 0;
	for (;;) {
		const char *comma = strchr(p, ',');
		size_t n = comma ? (size_t)(comma - p) : strlen(p);
		if (n == 0 || n >= sizeof(item))
			return dp_error_set(DP_EUSAGE, "bad %s \"%s\"", fields[f].name, text);
		memcpy(item, p, n);
		item[n] = 0;
		int rc = parse_item(f, item, bits);
		if (rc)
			return rc;
		if (!comma)
			return 0;
		p = comma + 1;
	}
}

static const int month_days[] = {0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};

int dp_cron_parse(dp_cron *out, const char *expr)
{
	static const struct {
		const char *name, *expr;
	} macros[] = {
	    {"@hourly", "0 * * * *"},   {"@daily", "0 0 * * *"},   {"@midnight", "0 0 * * *"},
	    {"@weekly", "0 0 * * 0"},   {"@monthly", "0 0 1 * *"}, {"@yearly", "0 0 1 1 *"},
	    {"@annually", "0 0 1 1 *"},
	};
	char copy[256];
	char *parts[6];
	int n = 0;
	memset(out, 0, sizeof(*out));
	if (!expr)
		return dp_error_set(DP_EUSAGE, "empty cron expression");
	while (isspace((unsigned char)*expr))
		expr++;
	if (expr[0] == '@') {
		size_t len = strlen(expr);
		while (len && isspace((unsigned char)expr[len - 1]))
			len--;
		for (size_t i = 0; i < sizeof(macros) / sizeof(macros[0]); i++)
			if (strlen(macros[i].name) == len &&
			    strncasecmp(expr, macros[i].name, len) == 0)
				return dp_cron_parse(out, macros[i].expr);
		return dp_error_set(
		    DP_EUSAGE, "unknown macro (use @hourly, @daily, @weekly, @monthly or @yearly)");
	}
	size_t len = strlen(expr);
	if (len >= sizeof(copy))
		return dp_error_set(DP_EUSAGE, "cron expression too long");
	memcpy(copy, expr, len + 1);
	for (char *p = copy; *p;) {
		while (isspace((unsigned char)*p))
			*p++ = 0;
		if (!*p)
			break;
		if (n < 6)
			parts[n] = p;
		n++;
		while (*p && !isspace((unsigned char)*p))
			p++;
	}
	if (n != 5)
		return dp_error_set(
		    DP_EUSAGE,
		    "expected 5 fields (minute hour day-of-month month day-of-week), "
		    "got %d",
		    n);
	uint64_t bits[5];
	for (int f = 0; f < 5; f++) {
		int rc = parse_field(f, parts[f], &bits[f]);
		if (rc)
			return rc;
	}
	out->minute = bits[F_MINUTE];
	out->hour = (uint32_t)bits[F_HOUR];
	out->dom = (uint32_t)bits[F_DOM];
	out->month = (uint16_t)bits[F_MONTH];
	out->dow = (uint8_t)bits[F_DOW];
	out->dom_star = parts[F_DOM][0] == '*';
	out->dow_star = parts[F_DOW][0] == '*';
	/* A day-of-month that no selected month has never fires (unless the
	 * day-of-week alone can match: OR semantics). */
	if (!out->dom_star && out->dow_star) {
		bool ok = false;
		for (int m = 1; m <= 12 && !ok; m++)
			for (int d = 1; d <= month_days[m] && (out->month >> m & 1); d++)
				if (out->dom >> d & 1) {
					ok = true;
					break;
				}
		if (!ok)
			return dp_error_set(DP_EUSAGE,
			                    "day of month never occurs in the selected months");
	}
	return 0;
}

static bool day_matches(const dp_cron *c, const struct tm *tm)
{
	bool dom = c->dom >> tm->tm_mday & 1;
	bool dow = c->dow >> tm->tm_wday & 1;
	if (c->dom_star || c->dow_star)
		return dom && dow;
	return dom || dow;
}

int dp_cron_next(const dp_cron *c, int64_t after, int64_t *out)
{
	int64_t t = after - ((after % 60) + 60) % 60 + 60;
	const int64_t limit = after + (int64_t)3660 * 86400; /* ten years and then some */
	struct tm tm;
	while (t <= limit) {
		time_t tt = (time_t)t;
		if (!gmtime_r(&tt, &tm))
			break;
		if (!(c->month >> (tm.tm_mon + 1) & 1)) {
			tm.tm_mon++;
			tm.tm_mday = 1;
			tm.tm_hour = tm.tm_min = tm.tm_sec = 0;
		} else if (!day_matches(c, &tm)) {
			tm.tm_mday++;
			tm.tm_hour = tm.tm_min = tm.tm_sec = 0;
		} else if (!(c->hour >> tm.tm_hour & 1)) {
			tm.tm_hour++;
			tm.tm_min = tm.tm_sec = 0;
		} else if (!(c->minute >> tm.tm_min & 1)) {
			tm.tm_min++;
			tm.tm_sec = 0;
		} else {
			*out = t;
			return 0;
		}
		tm.tm_isdst = 0;
		t = (int64_t)timegm(&tm);
	}
	return dp_error_set(DP_ENOTFOUND, "cron expression does not fire within ten years");
}

/* ---- durations ---- */

int dp_duration_parse(int64_t *out, const char *text)
{
	static const struct {
		const char *unit;
		int64_t seconds;
	} units[] = {
	    {"y", 365 * 86400LL},
	    {"mo", 30 * 86400LL},
	    {"w", 7 * 86400LL},
	    {"d", 86400},
	    {"h", 3600},
	    {"m", 60},
	    {"s", 1},
	};
	const int nunits = (int)(sizeof(units) / sizeof(units[0]));
	const char *p = text;
	int64_t total = 0;
	int last = -1;
	*out = 0;
	if (!p || !*p)
		return dp_error_set(DP_EUSAGE, "empty duration (use e.g. 7d, 12h, 1y2mo3w4d5h6m)");
	if (strcmp(p, "0") == 0)
		return 0;
	while (*p) {
		if (!isdigit((unsigned char)*p))
			return dp_error_set(
			    DP_EUSAGE, "bad duration (use a number and a unit: y, mo, w, d, h, m, "
			               "s, as in 7d or 1y2mo3w4d5h6m)");
		int64_t v = 0;
		while (isdigit((unsigned char)*p)) {
			v = v * 10 + (*p++ - '0');
			if (v > 1000000000LL)
				return dp_error_set(DP_EUSAGE, "duration too large");
		}
		char unit[8];
		size_t n = 0;
		while (isalpha((unsigned char)p[n]) && n < sizeof(unit) - 1) {
			unit[n] = p[n];
			n++;
		}
		unit[n] = 0;
		if (n == 0)
			return dp_error_set(DP_EUSAGE,
			                    "missing unit after %lld (use y, mo, w, d, h, m or s)",
			                    (long long)v);
		int u = -1;
		for (int i = 0; i < nunits; i++)
			if (strcmp(unit, units[i].unit) == 0)
				u = i;
		if (u < 0)
			return dp_error_set(
			    DP_EUSAGE, "unknown unit \"%s\" (use y, mo, w, d, h, m or s)", unit);
		if (u <= last)
			return dp_error_set(DP_EUSAGE, "units must appear once each, largest first "
			                               "(y mo w d h m s)");
		last = u;
		total += v * units[u].seconds;
		if (total > 1000LL * 365 * 86400)
			return dp_error_set(DP_EUSAGE, "duration too large (over 1000 years)");
		p += n;
	}
	*out = total;
	return 0;
}

void dp_duration_format(char *out, size_t outlen, int64_t s)
{
	size_t len = 0;
	if (outlen == 0)
		return;
	out[0] = 0;
	if (s < 0)
		s = 0;
	if (s == 0) {
		snprintf(out, outlen, "0s");
		return;
	}
	const int64_t div[] = {86400, 3600, 60, 1};
	const char *suf[] = {"d", "h", "m", "s"};
	for (int i = 0; i < 4; i++) {
		int64_t v = s / div[i];
		s %= div[i];
		if (v == 0 || len >= outlen)
			continue;
		int n = snprintf(out + len, outlen - len, "%lld%s", (long long)v, suf[i]);
		if (n < 0)
			return;
		len += (size_t)n;
	}
}

/* ---- timestamps ---- */

static int digits(const char **p, int n, int *out)
{
	int v = 0;
	for (int i = 0; i < n; i++) {
		if (!isdigit((unsigned char)(*p)[i]))
			return -1;
		v = v * 10 + ((*p)[i] - '0');
	}
	*p += n;
	*out = v;
	return 0;
}

int dp_time_parse(int64_t *out, const char *text)
{
	const char *p = text;
	int y, mo, d, h, mi, s;
	struct tm tm;
	const char *bad = "bad time (use RFC 3339, e.g. 2026-05-07T09:20:00Z)";
	if (!p || digits(&p, 4, &y) || *p++ != '-' || digits(&p, 2, &mo) || *p++ != '-' ||
	    digits(&p, 2, &d) || (*p != 'T' && *p != 't' && *p != ' ') || !*p++ ||
	    digits(&p, 2, &h) || *p++ != ':' || digits(&p, 2, &mi) || *p++ != ':' ||
	    digits(&p, 2, &s))
		return dp_error_set(DP_EUSAGE, "%s", bad);
	if (*p == '.') {
		p++;
		if (!isdigit((unsigned char)*p))
			return dp_error_set(DP_EUSAGE, "%s", bad);
		while (isdigit((unsigned char)*p))
			p++;
	}
	int offset = 0;
	if (*p == 'Z' || *p == 'z') {
		p++;
	} else if (*p == '+' || *p == '-') {
		int sign = *p++ == '-' ? -1 : 1, oh, om;
		if (digits(&p, 2, &oh) || *p++ != ':' || digits(&p, 2, &om) || oh > 23 || om > 59)
			return dp_error_set(DP_EUSAGE, "%s", bad);
		offset = sign * (oh * 3600 + om * 60);
	} else {
		return dp_error_set(DP_EUSAGE, "%s", bad);
	}
	if (*p)
		return dp_error_set(DP_EUSAGE, "%s", bad);
	bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
	if (mo < 1 || mo > 12 || d < 1 || d > (mo == 2 && !leap ? 28 : month_days[mo]) || h > 23 ||
	    mi > 59 || s > 60)
		return dp_error_set(DP_EUSAGE, "time out of range");
	memset(&tm, 0, sizeof(tm));
	tm.tm_year = y - 1900;
	tm.tm_mon = mo - 1;
	tm.tm_mday = d;
	tm.tm_hour = h;
	tm.tm_min = mi;
	tm.tm_sec = s;
	*out = (int64_t)timegm(&tm) - offset;
	return 0;
}

void dp_time_format(char *out, size_t outlen, int64_t t)
{
	struct tm tm;
	time_t tt = (time_t)t;
	if (!gmtime_r(&tt, &tm) || strftime(out, outlen, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0) {
		if (outlen)
			out[0] = 0;
	}
}

/*
 * Cron expressions (UTC) for BackupSchedules, and durations and timestamps
 * used by retention.
 *
 * Cron: five fields "minute hour day-of-month month day-of-week" with `*`,
 * values, ranges `a-b`, lists `a,b`, steps `*\/n`, `a-b/n` and `a/n` (a to
 * the field's maximum), month names jan..dec and day names sun..sat (any
 * case; day 7 is Sunday too), or one of @hourly @daily @midnight @weekly
 * @monthly @yearly @annually. Day matching follows Vixie cron: when both the
 * day-of-month and day-of-week fields are restricted (neither starts with
 * `*`), a day matches if EITHER matches; otherwise both must.
 *
 * Errors are DP_EUSAGE with a short message naming the field and the problem
 * ("minute out of range", "bad day of week \"fry\""); callers prefix the
 * expression and where it came from. Everything here is pure and thread-safe.
 */
#ifndef DP_CRON_H
#define DP_CRON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct dp_cron {
	uint64_t minute; /* bit m set: minute m (0-59) */
	uint32_t hour; /* bits 0-23 */
	uint32_t dom; /* bits 1-31 */
	uint16_t month; /* bits 1-12 */
	uint8_t dow; /* bits 0-6, Sunday = 0 */
	bool dom_star; /* the day-of-month field started with '*' */
	bool dow_star;
} dp_cron;

/* Parses expr. Rejects expressions that can never fire ("0 0 30 2 *"). */
int dp_cron_parse(dp_cron *out, const char *expr);

/* The first fire time strictly after `after` (unix seconds, UTC); always a
 * whole minute. DP_ENOTFOUND if none within ten years (cannot happen for a
 * parsed expression, which is checked to fire). */
int dp_cron_next(const dp_cron *c, int64_t after, int64_t *out);

/* ---- durations ---- */

/* Parses "7d", "30m", "12h", "1y2mo3w4d5h6m", "90s" or "0" into seconds.
 * Units, each at most once and from the largest to the smallest: y (365
 * days), mo (30 days), w, d, h, m, s. DP_EUSAGE with a short message. */
int dp_duration_parse(int64_t *out, const char *text);

/* Formats seconds as the largest units down to seconds, without zero parts:
 * 0 -> "0s", 90 -> "1m30s", 93784 -> "1d2h3m4s". Days are the largest unit. */
void dp_duration_format(char *out, size_t outlen, int64_t seconds);

/* ---- timestamps ---- */

/* RFC 3339: "2026-05-07T09:20:00Z", with optional fractional seconds
 * (dropped) and a "+hh:mm"/"-hh:mm" offset instead of Z. */
int dp_time_parse(int64_t *out, const char *text);
/* "2026-05-07T09:20:00Z"; out needs 21 bytes. */
void dp_time_format(char *out, size_t outlen, int64_t t);

#endif

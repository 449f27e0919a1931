/*
 * Tests for catalog/cron.c: cron parsing and next fire times (month ends,
 * leap days, Vixie day-of-month/day-of-week OR, steps, names, macros), bad
 * expressions and their messages, durations and RFC 3339 timestamps.
 */
#include <string.h>

#include "dp/cron.h"
#include "dp/error.h"
#include "../../harness/dp_test.h"

static int64_t ts(const char *text)
{
	int64_t t;
	ck_assert_msg(dp_time_parse(&t, text) == 0, "bad test time %s", text);
	return t;
}

static const struct {
	const char *expr, *after, *next;
} next_cases[] = {
    {"* * * * *", "2026-11-25T15:16:17Z", "2026-11-25T15:17:00Z"},
    {"* * * * *", "2026-11-25T15:16:00Z", "2026-11-25T15:17:00Z"},
    {"0 * * * *", "2026-11-25T15:16:00Z", "2026-11-25T16:00:00Z"},
    {"@hourly", "2026-11-25T23:59:00Z", "2026-11-26T00:00:00Z"},
    {"@daily", "2026-12-31T12:00:00Z", "2027-01-01T00:00:00Z"},
    {"@midnight", "2026-12-31T00:00:00Z", "2027-01-01T00:00:00Z"},
    {"@weekly", "2026-11-25T00:00:00Z", "2026-11-29T00:00:00Z"}, /* a Wednesday -> Sunday */
    {"@monthly", "2026-01-31T10:00:00Z", "2026-02-01T00:00:00Z"},
    {"@yearly", "2026-11-25T00:00:00Z", "2027-01-01T00:00:00Z"},
    {"@annually", "2026-11-25T00:00:00Z", "2027-01-01T00:00:00Z"},
    {"30 2 * * *", "2026-11-25T02:30:00Z", "2026-11-26T02:30:00Z"},
    {"30 2 * * *", "2026-11-25T02:29:59Z", "2026-11-25T02:30:00Z"},
    /* month ends */
    {"0 0 31 * *", "2026-04-01T00:00:00Z", "2026-05-31T00:00:00Z"},
    {"0 0 31 * *", "2026-07-31T00:00:00Z", "2026-08-31T00:00:00Z"},
    {"0 0 30 * *", "2026-01-30T00:00:00Z", "2026-03-30T00:00:00Z"},
    {"59 23 31 12 *", "2026-01-01T00:00:00Z", "2026-12-31T23:59:00Z"},
    /* leap days */
    {"0 0 29 2 *", "2026-11-25T00:00:00Z", "2028-02-29T00:00:00Z"},
    {"0 0 29 2 *", "2028-02-29T00:00:00Z", "2032-02-29T00:00:00Z"},
    {"0 0 29 2 *", "2096-03-01T00:00:00Z", "2104-02-29T00:00:00Z"}, /* 2100 is no leap year */
    {"0 12 28-29 feb *", "2027-02-28T12:00:00Z", "2028-02-28T12:00:00Z"},
    /* day of month OR day of week when both are restricted */
    {"0 0 13 * 5", "2026-11-25T00:00:00Z", "2026-11-27T00:00:00Z"}, /* Friday 27th first */
    {"0 0 13 * 5", "2026-11-27T00:00:00Z", "2026-12-04T00:00:00Z"},
    {"0 0 1 * mon", "2026-11-25T00:00:00Z", "2026-11-30T00:00:00Z"},
    {"0 0 1 * mon", "2026-11-30T00:00:00Z", "2026-12-01T00:00:00Z"},
    /* AND when one of them starts with '*' */
    {"0 0 * * 1", "2026-11-25T00:00:00Z", "2026-11-30T00:00:00Z"},
    {"0 0 */2 * 1", "2026-11-25T00:00:00Z", "2026-12-07T00:00:00Z"}, /* odd days that are Mondays */
    {"0 0 1 * *", "2026-11-25T00:00:00Z", "2026-12-01T00:00:00Z"},
    /* steps, ranges, lists */
    {"*/15 * * * *", "2026-11-25T15:16:00Z", "2026-11-25T15:30:00Z"},
    {"*/15 * * * *", "2026-11-25T15:46:00Z", "2026-11-25T16:00:00Z"},
    {"5/20 * * * *", "2026-11-25T15:46:00Z", "2026-11-25T16:05:00Z"},
    {"10-20/5 3 * * *", "2026-11-25T03:16:00Z", "2026-11-25T03:20:00Z"},
    {"10-20/5 3 * * *", "2026-11-25T03:20:00Z", "2026-11-26T03:10:00Z"},
    {"0 1,13 * * *", "2026-11-25T02:00:00Z", "2026-11-25T13:00:00Z"},
    {"0 0 * * 1-5", "2026-11-28T00:00:00Z", "2026-11-30T00:00:00Z"}, /* Sat -> Mon */
    /* names, any case; 7 is Sunday */
    {"0 0 * * sun", "2026-11-25T00:00:00Z", "2026-11-29T00:00:00Z"},
    {"0 0 * * 7", "2026-11-25T00:00:00Z", "2026-11-29T00:00:00Z"},
    {"0 0 * * MON-FRI", "2026-11-27T00:00:00Z", "2026-11-30T00:00:00Z"},
    {"0 0 1 JAN,jul *", "2026-11-25T00:00:00Z", "2027-01-01T00:00:00Z"},
    {"0 0 1 jul-aug *", "2026-11-25T00:00:00Z", "2027-07-01T00:00:00Z"},
    {"  0   4  *  *  *  ", "2026-11-25T05:00:00Z", "2026-11-26T04:00:00Z"},
};

START_TEST(test_next)
{
	const char *expr = next_cases[_i].expr;
	dp_cron c;
	int rc = dp_cron_parse(&c, expr);
	ck_assert_msg(rc == 0, "%s: %s", expr, dp_error_last());
	int64_t next = 0;
	ck_assert_int_eq(dp_cron_next(&c, ts(next_cases[_i].after), &next), 0);
	char got[32];
	dp_time_format(got, sizeof(got), next);
	ck_assert_msg(strcmp(got, next_cases[_i].next) == 0, "%s after %s: got %s, want %s", expr,
	              next_cases[_i].after, got, next_cases[_i].next);
}
END_TEST

static const struct {
	const char *expr, *msg;
} bad_cases[] = {
    {"61 * * * *", "minute out of range"},
    {"* 24 * * *", "hour out of range"},
    {"* * 0 * *", "day of month out of range"},
    {"* * 32 * *", "day of month out of range"},
    {"* * * 13 *", "month out of range"},
    {"* * * 0 *", "month out of range"},
    {"* * * * 8", "day of week out of range"},
    {"* * * *", "expected 5 fields (minute hour day-of-month month day-of-week), got 4"},
    {"* * * * * *", "expected 5 fields (minute hour day-of-month month day-of-week), got 6"},
    {"", "expected 5 fields (minute hour day-of-month month day-of-week), got 0"},
    {"x * * * *", "bad minute \"x\""},
    {"1,,2 * * * *", "bad minute \"1,,2\""},
    {"* * * * fry", "bad day of week \"fry\""},
    {"* * * janu *", "bad month \"janu\""},
    {"* * * * mon-", "bad day of week \"mon-\""},
    {"30-10 * * * *", "minute range \"30-10\" is backwards"},
    {"*/0 * * * *", "step out of range in minute \"*/0\""},
    {"*/61 * * * *", "step out of range in minute \"*/61\""},
    {"*/ * * * *", "bad step in minute \"*/\""},
    {"5-10x * * * *", "bad minute \"5-10x\""},
    {"0 0 30 2 *", "day of month never occurs in the selected months"},
    {"0 0 31 apr,jun *", "day of month never occurs in the selected months"},
    {"@reboot", "unknown macro (use @hourly, @daily, @weekly, @monthly or @yearly)"},
};

START_TEST(test_bad)
{
	dp_cron c;
	dp_error_clear();
	int rc = dp_cron_parse(&c, bad_cases[_i].expr);
	ck_assert_msg(rc == DP_EUSAGE, "\"%s\" was accepted", bad_cases[_i].expr);
	ck_assert_str_eq(dp_error_last(), bad_cases[_i].msg);
}
END_TEST

START_TEST(test_leap_30_feb_with_dow)
{
	/* OR semantics: "30 feb OR Monday" fires on Mondays in February. */
	dp_cron c;
	ck_assert_int_eq(dp_cron_parse(&c, "0 0 30 2 1"), 0);
	int64_t next;
	ck_assert_int_eq(dp_cron_next(&c, ts("2026-11-25T00:00:00Z"), &next), 0);
	char got[32];
	dp_time_format(got, sizeof(got), next);
	ck_assert_str_eq(got, "2027-02-01T00:00:00Z");
}
END_TEST

START_TEST(test_every_minute_sequence)
{
	/* Successive next() calls walk every fire time exactly once. */
	dp_cron c;
	ck_assert_int_eq(dp_cron_parse(&c, "*/7 1 * * *"), 0);
	int64_t t = ts("2026-01-01T00:00:00Z"), n;
	int count = 0;
	for (;;) {
		ck_assert_int_eq(dp_cron_next(&c, t, &n), 0);
		if (n >= ts("2026-01-02T00:00:00Z"))
			break;
		ck_assert_int_gt(n, t);
		t = n;
		count++;
	}
	ck_assert_int_eq(count, 9); /* 01:00, 01:07 ... 01:56 */
}
END_TEST

static const struct {
	const char *text;
	int64_t seconds;
} dur_cases[] = {
    {"7d", 7 * 86400},
    {"30m", 1800},
    {"12h", 43200},
    {"90s", 90},
    {"0", 0},
    {"1y", 365 * 86400},
    {"1mo", 30 * 86400},
    {"2w", 14 * 86400},
    {"1y2mo3w4d5h6m", 365 * 86400 + 60 * 86400 + 21 * 86400 + 4 * 86400 + 5 * 3600 + 360},
    {"1d12h", 86400 + 43200},
};

START_TEST(test_duration)
{
	int64_t s = -1;
	int rc = dp_duration_parse(&s, dur_cases[_i].text);
	ck_assert_msg(rc == 0, "%s: %s", dur_cases[_i].text, dp_error_last());
	ck_assert_int_eq(s, dur_cases[_i].seconds);
}
END_TEST

static const struct {
	const char *text, *msg;
} bad_dur[] = {
    {"", "empty duration (use e.g. 7d, 12h, 1y2mo3w4d5h6m)"},
    {"7", "missing unit after 7 (use y, mo, w, d, h, m or s)"},
    {"7x", "unknown unit \"x\" (use y, mo, w, d, h, m or s)"},
    {"7days", "unknown unit \"days\" (use y, mo, w, d, h, m or s)"},
    {"5h3d", "units must appear once each, largest first (y mo w d h m s)"},
    {"1d1d", "units must appear once each, largest first (y mo w d h m s)"},
    {"-1d", "bad duration (use a number and a unit: y, mo, w, d, h, m, s, as in 7d or "
            "1y2mo3w4d5h6m)"},
    {"d", "bad duration (use a number and a unit: y, mo, w, d, h, m, s, as in 7d or "
          "1y2mo3w4d5h6m)"},
    {"1001y", "duration too large (over 1000 years)"},
    {"99999999999d", "duration too large"},
};

START_TEST(test_bad_duration)
{
	int64_t s;
	ck_assert_int_eq(dp_duration_parse(&s, bad_dur[_i].text), DP_EUSAGE);
	ck_assert_str_eq(dp_error_last(), bad_dur[_i].msg);
}
END_TEST

START_TEST(test_duration_format)
{
	char b[32];
	dp_duration_format(b, sizeof(b), 0);
	ck_assert_str_eq(b, "0s");
	dp_duration_format(b, sizeof(b), 90);
	ck_assert_str_eq(b, "1m30s");
	dp_duration_format(b, sizeof(b), 93784);
	ck_assert_str_eq(b, "1d2h3m4s");
	dp_duration_format(b, sizeof(b), 7200);
	ck_assert_str_eq(b, "2h");
}
END_TEST

START_TEST(test_time)
{
	int64_t t;
	ck_assert_int_eq(dp_time_parse(&t, "1970-01-01T00:00:00Z"), 0);
	ck_assert_int_eq(t, 0);
	ck_assert_int_eq(dp_time_parse(&t, "2026-05-07T09:20:00.123Z"), 0);
	ck_assert_int_eq(t, 1778145600);
	ck_assert_int_eq(dp_time_parse(&t, "2026-05-07T17:20:00+08:00"), 0);
	ck_assert_int_eq(t, 1778145600);
	char b[32];
	dp_time_format(b, sizeof(b), t);
	ck_assert_str_eq(b, "2026-05-07T09:20:00Z");
	ck_assert_int_eq(dp_time_parse(&t, "2026-05-07 09:20"), DP_EUSAGE);
	ck_assert_int_eq(dp_time_parse(&t, "2026-02-29T00:00:00Z"), DP_EUSAGE);
	ck_assert_str_eq(dp_error_last(), "time out of range");
	ck_assert_int_eq(dp_time_parse(&t, "2028-02-29T00:00:00Z"), 0);
	ck_assert_int_eq(dp_time_parse(&t, "2026-05-07T09:20:00"), DP_EUSAGE);
}
END_TEST

static Suite *cron_suite(void)
{
	Suite *s = suite_create("cron");
	TCase *tc = tcase_create("cron");
	tcase_add_checked_fixture(tc, dp_test_setup, dp_test_teardown);
	tcase_add_loop_test(tc, test_next, 0, (int)(sizeof(next_cases) / sizeof(next_cases[0])));
	tcase_add_loop_test(tc, test_bad, 0, (int)(sizeof(bad_cases) / sizeof(bad_cases[0])));
	tcase_add_test(tc, test_leap_30_feb_with_dow);
	tcase_add_test(tc, test_every_minute_sequence);
	tcase_add_loop_test(tc, test_duration, 0, (int)(sizeof(dur_cases) / sizeof(dur_cases[0])));
	tcase_add_loop_test(tc, test_bad_duration, 0, (int)(sizeof(bad_dur) / sizeof(bad_dur[0])));
	tcase_add_test(tc, test_duration_format);
	tcase_add_test(tc, test_time);
	suite_add_tcase(s, tc);
	return s;
}

DP_TEST_MAIN(cron_suite)

/*
 * common/cliopt.c: flag parsing, names, sizes, the passphrase and status
 * events, without running a program.
 */
#include "../../harness/dp_test.h"

#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "dp/cliopt.h"
#include "dp/error.h"

static void setup(void)
{
	dp_test_setup();
	unsetenv("DP_REPO");
	unsetenv("DP_REPO_PASSPHRASE");
	unsetenv("DP_STATUS_FD");
}

struct own {
	int seen_x;
	const char *y;
};

static int own_opt(int val, const char *arg, void *ctx)
{
	struct own *o = ctx;
	if (val == 'x')
		o->seen_x++;
	else if (val == 1)
		o->y = arg;
	if (o->y && strcmp(o->y, "bad") == 0)
		return dp_error_set(DP_EUSAGE, "--y \"bad\" is bad");
	return 0;
}

static const struct option own_opts[] = {
    {"x", no_argument, NULL, 'x'},
    {"y", required_argument, NULL, 1},
    {0},
};

static int parse(dp_cli *c, struct own *o, unsigned flags, int min, int max, char **argv)
{
	int argc = 0;
	while (argv[argc])
		argc++;
	dp_cli_cmd cmd = {
	    .prog = "t cmd",
	    .synopsis = "[OPTIONS] A [B]",
	    .about = "about\n",
	    .examples = "  t cmd a\n",
	    .flags = flags,
	    .opts = own_opts,
	    .on_opt = own_opt,
	    .ctx = o,
	    .min_args = min,
	    .max_args = max,
	};
	return dp_cli_parse(c, &cmd, argc, argv);
}

START_TEST(test_parse_common_and_own)
{
	dp_cli c;
	struct own o = {0};
	char *argv[] = {"cmd",     "--repo",  "/r",          "a",  "--threads", "3", "--x",
	                "--y=val", "--quiet", "--s3-region", "eu", "--json",    "b", NULL};
	ck_assert_int_eq(parse(&c, &o, DP_CLI_REPO_FLAGS | DP_CLI_JSON, 1, 2, argv), 0);
	ck_assert_str_eq(c.repo, "/r");
	ck_assert_int_eq(c.threads, 3);
	ck_assert(c.quiet && c.json);
	ck_assert_str_eq(c.bopts.s3_region, "eu");
	ck_assert_int_eq(c.bopts.retries, -1);
	ck_assert_int_eq(o.seen_x, 1);
	ck_assert_str_eq(o.y, "val");
	ck_assert_int_eq(c.nargs, 2);
	ck_assert_str_eq(c.args[0], "a");
	ck_assert_str_eq(c.args[1], "b");
}
END_TEST

START_TEST(test_parse_errors)
{
	dp_cli c;
	struct own o = {0};
	char *unknown[] = {"cmd", "--nope", "a", NULL};
	ck_assert_int_eq(parse(&c, &o, DP_CLI_REPO_FLAGS, 1, 1, unknown), DP_EUSAGE);
	ck_assert_msg(strstr(dp_error_last(), "--nope") && strstr(dp_error_last(), "--help"), "%s",
	              dp_error_last());
	char *noval[] = {"cmd", "a", "--repo", NULL};
	ck_assert_int_eq(parse(&c, &o, DP_CLI_REPO_FLAGS, 1, 1, noval), DP_EUSAGE);
	ck_assert_msg(strstr(dp_error_last(), "--repo"), "%s", dp_error_last());
	char *threads[] = {"cmd", "--threads", "0", "a", NULL};
	ck_assert_int_eq(parse(&c, &o, DP_CLI_REPO_FLAGS, 1, 1, threads), DP_EUSAGE);
	char *style[] = {"cmd", "--s3-uri-style", "odd", "a", NULL};
	ck_assert_int_eq(parse(&c, &o, DP_CLI_REPO_FLAGS, 1, 1, style), DP_EUSAGE);
	/* A flag the command did not ask for is unknown. */
	char *json[] = {"cmd", "--json", "a", NULL};
	ck_assert_int_eq(parse(&c, &o, DP_CLI_REPO_FLAGS, 1, 1, json), DP_EUSAGE);
	char *few[] = {"cmd", NULL};
	ck_assert_int_eq(parse(&c, &o, DP_CLI_REPO_FLAGS, 1, 1, few), DP_EUSAGE);
	ck_assert_msg(strstr(dp_error_last(), "missing argument"), "%s", dp_error_last());
	char *many[] = {"cmd", "a", "b", NULL};
	ck_assert_int_eq(parse(&c, &o, DP_CLI_REPO_FLAGS, 1, 1, many), DP_EUSAGE);
	ck_assert_msg(strstr(dp_error_last(), "\"b\""), "%s", dp_error_last());
	char *bad[] = {"cmd", "--y", "bad", "a", NULL};
	ck_assert_int_eq(parse(&c, &o, DP_CLI_REPO_FLAGS, 1, 1, bad), DP_EUSAGE);
	/* "--" ends the options: a name may start with '-'. */
	char *dash[] = {"cmd", "--", "-odd", NULL};
	ck_assert_int_eq(parse(&c, &o, DP_CLI_REPO_FLAGS, 1, 1, dash), 0);
	ck_assert_str_eq(c.args[0], "-odd");
}
END_TEST

START_TEST(test_parse_help_and_env)
{
	dp_cli c;
	struct own o = {0};
	char *help[] = {"cmd", "a", "--help", NULL};
	/* Help goes to stdout; keep the test output clean. */
	fflush(stdout);
	int saved = dup(1);
	int nul = open("/dev/null", O_WRONLY);
	dup2(nul, 1);
	int rc = parse(&c, &o, DP_CLI_REPO_FLAGS, 1, 1, help);
	fflush(stdout);
	dup2(saved, 1);
	close(nul);
	close(saved);
	ck_assert_int_eq(rc, DP_CLI_HELP);

	setenv("DP_REPO", "/from/env", 1);
	char *plain[] = {"cmd", "a", NULL};
	ck_assert_int_eq(parse(&c, &o, DP_CLI_REPO_FLAGS, 1, 1, plain), 0);
	ck_assert_str_eq(c.repo, "/from/env");
	char *flag[] = {"cmd", "--repo", "/flag", "a", NULL};
	ck_assert_int_eq(parse(&c, &o, DP_CLI_REPO_FLAGS, 1, 1, flag), 0);
	ck_assert_str_eq(c.repo, "/flag");
	unsetenv("DP_REPO");
	ck_assert_int_eq(parse(&c, &o, DP_CLI_REPO_FLAGS, 1, 1, plain), 0);
	ck_assert_ptr_null(c.repo);
	ck_assert_int_eq(dp_cli_need_repo(&c), DP_EUSAGE);
}
END_TEST

START_TEST(test_help_text)
{
	char path[PATH_MAX];
	snprintf(path, sizeof(path), "%s/help", dp_test_dir);
	FILE *f = fopen(path, "w+");
	dp_cli_cmd cmd = {.prog = "t cmd",
	                  .synopsis = "NAME",
	                  .about = "Does it.\n\noptions:\n  --json                   own words\n",
	                  .examples = "  t cmd x\n",
	                  .flags = DP_CLI_REPO_FLAGS | DP_CLI_JSON};
	dp_cli_help(&cmd, f);
	rewind(f);
	char buf[8192] = {0};
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	ck_assert_uint_gt(n, 0);
	ck_assert_msg(strstr(buf, "usage: t cmd NAME") && strstr(buf, "--passphrase-file F") &&
	                  strstr(buf, "--s3-endpoint") && strstr(buf, "exit status") &&
	                  strstr(buf, "6 locked") && strstr(buf, "example:\n  t cmd x"),
	              "%s", buf);
	/* The command's own --json text replaces the generic one. */
	ck_assert_ptr_null(strstr(buf, "print the result as JSON"));
}
END_TEST

START_TEST(test_names)
{
	const char *good[] = {"a",    "db1/base", "db1/base/2024-01-01T00:00:00Z",
	                      "a..b", ".x",       "a/.b"};
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
		ck_assert_msg(dp_cli_check_name(good[i]) == 0, "\"%s\": %s", good[i],
		              dp_error_last());
	const char *bad[] = {"", "/a", "..", "../a", "a/..", "a/../b", "a\nb", "a\tb", "\x7f"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		ck_assert_msg(dp_cli_check_name(bad[i]) == DP_EUSAGE, "\"%s\" accepted", bad[i]);
	char longname[300];
	memset(longname, 'a', sizeof(longname));
	longname[256] = 0;
	ck_assert_int_eq(dp_cli_check_name(longname), DP_EUSAGE);
	longname[255] = 0;
	ck_assert_int_eq(dp_cli_check_name(longname), 0);
}
END_TEST

START_TEST(test_sizes_and_ints)
{
	uint64_t v = 0;
	ck_assert_int_eq(dp_cli_parse_size(&v, "--s", "4096", 1, UINT64_MAX), 0);
	ck_assert_uint_eq(v, 4096);
	ck_assert_int_eq(dp_cli_parse_size(&v, "--s", "64K", 1, UINT64_MAX), 0);
	ck_assert_uint_eq(v, 65536);
	ck_assert_int_eq(dp_cli_parse_size(&v, "--s", "16MiB", 1, UINT64_MAX), 0);
	ck_assert_uint_eq(v, 16u << 20);
	ck_assert_int_eq(dp_cli_parse_size(&v, "--s", "2g", 1, UINT64_MAX), 0);
	ck_assert_uint_eq(v, 2ull << 30);
	ck_assert_int_eq(dp_cli_parse_size(&v, "--s", "1mb", 1, UINT64_MAX), 0);
	ck_assert_uint_eq(v, 1u << 20);
	const char *bad[] = {"", "-1", "12Q", "K", "1.5M", "99999999999999999999", "4 K"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		ck_assert_msg(dp_cli_parse_size(&v, "--s", bad[i], 1, UINT64_MAX) == DP_EUSAGE,
		              "\"%s\" accepted", bad[i]);
	ck_assert_int_eq(dp_cli_parse_size(&v, "--pack-size", "1K", 4096, 1 << 30), DP_EUSAGE);
	ck_assert_msg(strstr(dp_error_last(), "--pack-size") && strstr(dp_error_last(), "4.00 KiB"),
	              "%s", dp_error_last());
	long l = 0;
	ck_assert_int_eq(dp_cli_parse_int(&l, "--n", "-7", -7, 22), 0);
	ck_assert_int_eq(l, -7);
	ck_assert_int_eq(dp_cli_parse_int(&l, "--n", "23", -7, 22), DP_EUSAGE);
	ck_assert_int_eq(dp_cli_parse_int(&l, "--n", "3x", -7, 22), DP_EUSAGE);
	ck_assert_int_eq(dp_cli_parse_int(&l, "--n", "", -7, 22), DP_EUSAGE);
	char b[32];
	dp_cli_fmt_bytes(b, sizeof(b), 0);
	ck_assert_str_eq(b, "0 B");
	dp_cli_fmt_bytes(b, sizeof(b), 1536);
	ck_assert_str_eq(b, "1.50 KiB");
	dp_cli_fmt_bytes(b, sizeof(b), 200ull << 20);
	ck_assert_str_eq(b, "200 MiB");
	dp_cli_fmt_time(b, sizeof(b), 0);
	ck_assert_str_eq(b, "1970-01-01T00:00:00Z");
}
END_TEST

START_TEST(test_passphrase)
{
	dp_cli c;
	memset(&c, 0, sizeof(c));
	char *p = NULL;
	ck_assert_int_eq(dp_cli_passphrase(&p, &c), DP_EUSAGE);
	ck_assert_msg(strstr(dp_error_last(), "DP_REPO_PASSPHRASE") &&
	                  strstr(dp_error_last(), "--passphrase-file"),
	              "%s", dp_error_last());
	ck_assert_ptr_null(p);
	setenv("DP_REPO_PASSPHRASE", "from env", 1);
	ck_assert_int_eq(dp_cli_passphrase(&p, &c), 0);
	ck_assert_str_eq(p, "from env");
	dp_cli_passphrase_free(p);

	/* The file wins over the environment; only its first line counts. */
	char path[PATH_MAX];
	snprintf(path, sizeof(path), "%s/pass", dp_test_dir);
	FILE *f = fopen(path, "w");
	fprintf(f, "first line\r\nsecond line\n");
	fclose(f);
	c.passphrase_file = path;
	ck_assert_int_eq(dp_cli_passphrase(&p, &c), 0);
	ck_assert_str_eq(p, "first line");
	dp_cli_passphrase_free(p);
	/* Long passphrases grow the buffer. */
	f = fopen(path, "w");
	for (int i = 0; i < 1000; i++)
		fputc('a' + i % 26, f);
	fclose(f);
	ck_assert_int_eq(dp_cli_passphrase(&p, &c), 0);
	ck_assert_uint_eq(strlen(p), 1000);
	dp_cli_passphrase_free(p);
	f = fopen(path, "w");
	fprintf(f, "\n");
	fclose(f);
	ck_assert_int_eq(dp_cli_passphrase(&p, &c), DP_EUSAGE);
	ck_assert_msg(strstr(dp_error_last(), "empty"), "%s", dp_error_last());
	snprintf(path, sizeof(path), "%s/missing", dp_test_dir);
	ck_assert_int_eq(dp_cli_passphrase(&p, &c), DP_EUSAGE);
	ck_assert_msg(strstr(dp_error_last(), path), "%s", dp_error_last());
	dp_cli_passphrase_free(NULL);
}
END_TEST

START_TEST(test_status_events)
{
	char path[PATH_MAX];
	snprintf(path, sizeof(path), "%s/events", dp_test_dir);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	ck_assert_int_ge(fd, 3);
	char num[16];
	snprintf(num, sizeof(num), "%d", fd);
	setenv("DP_STATUS_FD", num, 1);
	ck_assert_int_eq(dp_cli_status_fd(), fd);
	dp_cli_event("{\"event\":\"x\"}");
	char big[4000];
	memset(big, 'b', sizeof(big));
	memcpy(big, "{\"event\":\"", 10);
	memcpy(big + sizeof(big) - 3, "\"}", 3);
	dp_cli_event(big);
	close(fd);
	FILE *f = fopen(path, "r");
	char line[5000];
	ck_assert_ptr_nonnull(fgets(line, sizeof(line), f));
	ck_assert_str_eq(line, "{\"event\":\"x\"}\n");
	ck_assert_ptr_nonnull(fgets(line, sizeof(line), f));
	ck_assert_uint_eq(strlen(line), sizeof(big));
	fclose(f);
}
END_TEST

START_TEST(test_status_fd_invalid)
{
	/* Not a number, or not an open descriptor: no events, no error. */
	setenv("DP_STATUS_FD", "999", 1);
	ck_assert_int_eq(dp_cli_status_fd(), -1);
	dp_cli_event("{}");
}
END_TEST

static Suite *cliopt_suite(void)
{
	Suite *s = suite_create("cliopt");
	TCase *tc = tcase_create("cliopt");
	tcase_add_checked_fixture(tc, setup, dp_test_teardown);
	tcase_add_test(tc, test_parse_common_and_own);
	tcase_add_test(tc, test_parse_errors);
	tcase_add_test(tc, test_parse_help_and_env);
	tcase_add_test(tc, test_help_text);
	tcase_add_test(tc, test_names);
	tcase_add_test(tc, test_sizes_and_ints);
	tcase_add_test(tc, test_passphrase);
	tcase_add_test(tc, test_status_events);
	tcase_add_test(tc, test_status_fd_invalid);
	suite_add_tcase(s, tc);
	return s;
}

DP_TEST_MAIN(cliopt_suite)

/*
 * Random-key slots (repos/keyslot.c) on a posix repository in a temp dir: a
 * slot key opens the repository and reads what the passphrase wrote; wrong,
 * malformed, revoked or foreign keys are DP_EAUTH; the passphrase still opens
 * with slots present, without warnings; the slot object holds no secret; the
 * last passphrase key cannot be removed; opening with a key reads only the
 * config and its own key object.
 */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../../harness/backends.h"
#include "../../harness/dp_test.h"
#include "dp/backend.h"
#include "dp/crypto.h"
#include "dp/error.h"
#include "dp/repo.h"

static const char *PASS = "correct horse battery staple";
static char repo_path[PATH_MAX];

static void setup(void)
{
	dp_test_setup();
	snprintf(repo_path, sizeof(repo_path), "%s/repo", dp_test_dir);
	ck_assert_msg(dp_repo_init(repo_path, NULL, NULL, PASS, NULL) == 0, "%s", dp_error_last());
}

static dp_repo *open_pass(void)
{
	dp_repo *r = NULL;
	ck_assert_msg(dp_repo_open(&r, repo_path, NULL, PASS) == 0, "%s", dp_error_last());
	return r;
}

static void add_slot(char token[DP_KEYSLOT_TOKEN_LEN], char id[DP_ID_HEX], const char *label)
{
	dp_repo *r = open_pass();
	ck_assert_msg(dp_keyslot_add(r, label, token, id) == 0, "%s", dp_error_last());
	dp_repo_free(r);
}

static char *slurp(const char *path, size_t *n)
{
	FILE *f = fopen(path, "rb");
	ck_assert_ptr_nonnull(f);
	char *buf = calloc(1, 1 << 16);
	*n = fread(buf, 1, (1 << 16) - 1, f);
	fclose(f);
	return buf;
}

START_TEST(key_opens_and_reads_passphrase_data)
{
	char token[DP_KEYSLOT_TOKEN_LEN], id[DP_ID_HEX], tid[DP_ID_HEX];
	add_slot(token, id, "archive pg-main on db1");
	ck_assert_int_eq(strlen(token), DP_KEYSLOT_TOKEN_LEN - 1);
	ck_assert_int_eq(strncmp(token, "dpk1-", 5), 0);
	ck_assert_int_eq(dp_keyslot_token_id(token, tid), 0);
	ck_assert_str_eq(tid, id);

	dp_repo *r = open_pass();
	ck_assert_int_eq(dp_repo_put_file(r, "meta/x", "hello", 5), 0);
	dp_repo_free(r);

	dp_repo *k = NULL;
	ck_assert_msg(dp_repo_open_key(&k, repo_path, NULL, token) == 0, "%s", dp_error_last());
	dp_buf b = {0};
	ck_assert_msg(dp_repo_get_file(k, "meta/x", &b) == 0, "%s", dp_error_last());
	ck_assert_int_eq(b.len, 5);
	ck_assert_int_eq(memcmp(b.data, "hello", 5), 0);
	dp_buf_free(&b);
	/* And the other way round: what the key writes, the passphrase reads. */
	ck_assert_int_eq(dp_repo_put_file(k, "meta/y", "world", 5), 0);
	dp_repo_free(k);
	r = open_pass();
	ck_assert_int_eq(dp_repo_get_file(r, "meta/y", &b), 0);
	ck_assert_int_eq(memcmp(b.data, "world", 5), 0);
	dp_buf_free(&b);

	dp_keyslot_info *v = NULL;
	size_t n = 0;
	ck_assert_int_eq(dp_keyslot_list(r, &v, &n), 0);
	ck_assert_int_eq(n, 2);
	int random = strcmp(v[0].kind, "random") == 0 ? 0 : 1;
	ck_assert_str_eq(v[random].kind, "random");
	ck_assert_str_eq(v[random].id, id);
	ck_assert_str_eq(v[random].label, "archive pg-main on db1");
	ck_assert_str_eq(v[1 - random].kind, "passphrase");
	free(v);
	dp_repo_free(r);
}
END_TEST

START_TEST(slot_object_holds_no_secret)
{
	char token[DP_KEYSLOT_TOKEN_LEN], id[DP_ID_HEX], path[PATH_MAX];
	add_slot(token, id, "x");
	snprintf(path, sizeof(path), "%s/keys/%s", repo_path, id);
	size_t n;
	char *text = slurp(path, &n);
	ck_assert_ptr_nonnull(strstr(text, "\"kdf\":\"hkdf-sha256\""));
	/* Neither the secret half of the key nor the passphrase is stored. */
	ck_assert_ptr_null(strstr(text, token + 5 + 65));
	ck_assert_ptr_null(strstr(text, token + 5 + 65 + 32));
	ck_assert_ptr_null(strstr(text, PASS));
	free(text);
}
END_TEST

START_TEST(wrong_malformed_revoked_keys_are_eauth)
{
	char token[DP_KEYSLOT_TOKEN_LEN], id[DP_ID_HEX], bad[DP_KEYSLOT_TOKEN_LEN];
	add_slot(token, id, "x");
	dp_repo *k = NULL;
	/* One hex digit of the secret changed. */
	memcpy(bad, token, sizeof(bad));
	bad[DP_KEYSLOT_TOKEN_LEN - 2] = bad[DP_KEYSLOT_TOKEN_LEN - 2] == '0' ? '1' : '0';
	ck_assert_int_eq(dp_repo_open_key(&k, repo_path, NULL, bad), DP_EAUTH);
	ck_assert_ptr_nonnull(strstr(dp_error_last(), "wrong repository key"));
	/* Malformed: truncated, not hex, the passphrase itself. */
	memcpy(bad, token, sizeof(bad));
	bad[DP_KEYSLOT_TOKEN_LEN - 5] = 0;
	ck_assert_int_eq(dp_repo_open_key(&k, repo_path, NULL, bad), DP_EAUTH);
	memcpy(bad, token, sizeof(bad));
	bad[10] = 'g';
	ck_assert_int_eq(dp_repo_open_key(&k, repo_path, NULL, bad), DP_EAUTH);
	ck_assert_int_eq(dp_repo_open_key(&k, repo_path, NULL, PASS), DP_EAUTH);
	/* A slot id naming the passphrase key: not a random slot. */
	dp_repo *r = open_pass();
	dp_keyslot_info *v = NULL;
	size_t n = 0;
	ck_assert_int_eq(dp_keyslot_list(r, &v, &n), 0);
	const char *pass_id = strcmp(v[0].kind, "passphrase") == 0 ? v[0].id : v[1].id;
	memcpy(bad, token, sizeof(bad));
	memcpy(bad + 5, pass_id, 64);
	ck_assert_int_eq(dp_repo_open_key(&k, repo_path, NULL, bad), DP_EAUTH);
	free(v);
	/* Revoked. */
	ck_assert_int_eq(dp_keyslot_remove(r, id), 0);
	dp_repo_free(r);
	ck_assert_int_eq(dp_repo_open_key(&k, repo_path, NULL, token), DP_EAUTH);
	ck_assert_ptr_nonnull(strstr(dp_error_last(), "revoked"));
	ck_assert_ptr_null(k);
	/* The passphrase is unaffected. */
	dp_repo_free(open_pass());
}
END_TEST

START_TEST(key_of_another_repository_does_not_open)
{
	char token[DP_KEYSLOT_TOKEN_LEN], id[DP_ID_HEX], other[PATH_MAX], src[PATH_MAX],
	    dst[PATH_MAX];
	add_slot(token, id, "x");
	snprintf(other, sizeof(other), "%s/other", dp_test_dir);
	ck_assert_int_eq(dp_repo_init(other, NULL, NULL, PASS, NULL), 0);
	dp_repo *k = NULL;
	ck_assert_int_eq(dp_repo_open_key(&k, other, NULL, token), DP_EAUTH);
	/* Even with the slot object copied over: it is bound to its repository. */
	snprintf(src, sizeof(src), "%s/keys/%s", repo_path, id);
	snprintf(dst, sizeof(dst), "%s/keys/%s", other, id);
	size_t n;
	char *text = slurp(src, &n);
	FILE *f = fopen(dst, "wb");
	ck_assert_ptr_nonnull(f);
	ck_assert_int_eq(fwrite(text, 1, n, f), n);
	fclose(f);
	free(text);
	ck_assert_int_eq(dp_repo_open_key(&k, other, NULL, token), DP_EAUTH);
	ck_assert_ptr_null(k);
}
END_TEST

START_TEST(passphrase_open_skips_slots_quietly)
{
	char token[DP_KEYSLOT_TOKEN_LEN], id[DP_ID_HEX];
	for (int i = 0; i < 3; i++)
		add_slot(token, id, "x");
	/* No "malformed key" warning on stderr for the random slots. */
	int fd = open(dp_test_dir, O_RDONLY);
	ck_assert_int_ge(fd, 0);
	close(fd);
	char errpath[PATH_MAX];
	snprintf(errpath, sizeof(errpath), "%s/stderr", dp_test_dir);
	fflush(stderr);
	int saved = dup(2);
	int ef = open(errpath, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	dup2(ef, 2);
	close(ef);
	dp_repo *r = NULL;
	int rc = dp_repo_open(&r, repo_path, NULL, PASS);
	dp_repo *w = NULL;
	int rcw = dp_repo_open(&w, repo_path, NULL, "wrong");
	fflush(stderr);
	dup2(saved, 2);
	close(saved);
	ck_assert_int_eq(rc, 0);
	ck_assert_int_eq(rcw, DP_EAUTH);
	dp_repo_free(r);
	size_t n;
	char *text = slurp(errpath, &n);
	ck_assert_msg(n == 0, "unexpected output: %s", text);
	free(text);
}
END_TEST

START_TEST(remove_rules)
{
	char token[DP_KEYSLOT_TOKEN_LEN], id[DP_ID_HEX];
	add_slot(token, id, "x");
	dp_repo *r = open_pass();
	dp_keyslot_info *v = NULL;
	size_t n = 0;
	ck_assert_int_eq(dp_keyslot_list(r, &v, &n), 0);
	const char *pass_id = strcmp(v[0].kind, "passphrase") == 0 ? v[0].id : v[1].id;
	/* The last passphrase key stays. */
	ck_assert_int_eq(dp_keyslot_remove(r, pass_id), DP_EUSAGE);
	ck_assert_ptr_nonnull(strstr(dp_error_last(), "last passphrase key"));
	/* Too short, unknown. */
	ck_assert_int_eq(dp_keyslot_remove(r, "abc"), DP_EUSAGE);
	char other[DP_ID_HEX];
	memcpy(other, id, DP_ID_HEX);
	other[0] = other[0] == 'a' ? 'b' : 'a';
	if (strncmp(other, pass_id, 16) != 0) {
		other[16] = 0;
		ck_assert_int_eq(dp_keyslot_remove(r, other), DP_ENOTFOUND);
	}
	free(v);
	/* By prefix. */
	char prefix[9];
	memcpy(prefix, id, 8);
	prefix[8] = 0;
	ck_assert_int_eq(dp_keyslot_remove(r, prefix), 0);
	ck_assert_int_eq(dp_keyslot_list(r, &v, &n), 0);
	ck_assert_int_eq(n, 1);
	free(v);
	/* Labels: control characters and overlong ones are refused. */
	ck_assert_int_eq(dp_keyslot_add(r, "a\nb", token, id), DP_EUSAGE);
	char longl[300];
	memset(longl, 'a', sizeof(longl) - 1);
	longl[sizeof(longl) - 1] = 0;
	ck_assert_int_eq(dp_keyslot_add(r, longl, token, id), DP_EUSAGE);
	dp_repo_free(r);
}
END_TEST

/* Opening with a key reads the config and one key object: no listing. */
START_TEST(key_open_reads_two_objects)
{
	char token[DP_KEYSLOT_TOKEN_LEN], id[DP_ID_HEX];
	add_slot(token, id, "x");
	dp_backend *pb = NULL, *fb = NULL;
	ck_assert_int_eq(dp_backend_open(&pb, repo_path, NULL), 0);
	ck_assert_int_eq(dp_faulty_backend_new(&fb, pb), 0);
	dp_repo *k = NULL;
	ck_assert_msg(dp_repo_open_key_backend(&k, fb, token) == 0, "%s", dp_error_last());
	ck_assert_int_eq(dp_faulty_calls(fb, DP_OP_LIST), 0);
	ck_assert_int_eq(dp_faulty_calls(fb, DP_OP_GET), 2);
	dp_repo_free(k);
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("repos/keyslot");
	TCase *tc = tcase_create("core");
	tcase_add_checked_fixture(tc, setup, dp_test_teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, key_opens_and_reads_passphrase_data);
	tcase_add_test(tc, slot_object_holds_no_secret);
	tcase_add_test(tc, wrong_malformed_revoked_keys_are_eauth);
	tcase_add_test(tc, key_of_another_repository_does_not_open);
	tcase_add_test(tc, passphrase_open_skips_slots_quietly);
	tcase_add_test(tc, remove_rules);
	tcase_add_test(tc, key_open_reads_two_objects);
	suite_add_tcase(s, tc);
	return s;
}

DP_TEST_MAIN(suite)

/*
 * common/blake3.c: keyed BLAKE3 against the specification's test-vector
 * inputs (byte i is i % 251, key "whats the Elvish word for friend"; the
 * expected hashes are the first 32 bytes of its keyed_hash outputs, as b3sum
 * --keyed prints them), the AVX-512 path against the portable one on every
 * shape of tree, and against the b3sum tool on random data when it is
 * installed; the batch (dp_blake3_keyed_many) against one call per input.
 */
#include "../../harness/dp_test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dp/crypto.h"

static const uint8_t KEY[32] = "whats the Elvish word for friend";

static const struct {
	size_t len;
	const char *hex;
} VECTORS[] = {
    {0, "92b2b75604ed3c761f9d6f62392c8a9227ad0ea3f09573e783f1498a4ed60d26"},
    {1, "6d7878dfff2f485635d39013278ae14f1454b8c0a3a2d34bc1ab38228a80c95b"},
    {1023, "c951ecdf03288d0fcc96ee3413563d8a6d3589547f2c2fb36d9786470f1b9d6e"},
    {1024, "75c46f6f3d9eb4f55ecaaee480db732e6c2105546f1e675003687c31719c7ba4"},
    {1025, "357dc55de0c7e382c900fd6e320acc04146be01db6a8ce7210b7189bd664ea69"},
    {2048, "879cf1fa2ea0e79126cb1063617a05b6ad9d0b696d0d757cf053439f60a99dd1"},
    {2049, "9f29700902f7c86e514ddc4df1e3049f258b2472b6dd5267f61bf13983b78dd5"},
    {3072, "044a0e7b172a312dc02a4c9a818c036ffa2776368d7f528268d2e6b5df191770"},
    {3073, "68dede9bef00ba89e43f31a6825f4cf433389fedae75c04ee9f0cf16a427c95a"},
    {4096, "befc660aea2f1718884cd8deb9902811d332f4fc4a38cf7c7300d597a081bfc0"},
    {4097, "00df940cd36bb9fa7cbbc3556744e0dbc8191401afe70520ba292ee3ca80abbc"},
    {5120, "2c493e48e9b9bf31e0553a22b23503c0a3388f035cece68eb438d22fa1943e20"},
    {5121, "6ccf1c34753e7a044db80798ecd0782a8f76f33563accaddbfbb2e0ea4b2d024"},
    {6144, "3d6b6d21281d0ade5b2b016ae4034c5dec10ca7e475f90f76eac7138e9bc8f1d"},
    {6145, "9ac301e9e39e45e3250a7e3b3df701aa0fb6889fbd80eeecf28dbc6300fbc539"},
    {7168, "b42835e40e9d4a7f42ad8cc04f85a963a76e18198377ed84adddeaecacc6f3fc"},
    {7169, "ed9b1a922c046fdb3d423ae34e143b05ca1bf28b710432857bf738bcedbfa511"},
    {8192, "dc9637c8845a770b4cbf76b8daec0eebf7dc2eac11498517f08d44c8fc00d58a"},
    {8193, "954a2a75420c8d6547e3ba5b98d963e6fa6491addc8c023189cc519821b4a1f5"},
    {16384, "9e9fc4eb7cf081ea7c47d1807790ed211bfec56aa25bb7037784c13c4b707b0d"},
    {31744, "efa53b389ab67c593dba624d898d0f7353ab99e4ac9d42302ee64cbf9939a419"},
    {102400, "1c35d1a5811083fd7119f5d5d1ba027b4d01c0c6c49fb6ff2cf75393ea5db4a7"},
    {262145, "d90e1ca9e8c450f1937898a2a38d4fe2e6977cfa280db88213603eb9e61af23d"},
    {600000, "e897d49ef52ce304403803e88f97d428e71ecc8720febf285adf9bf676f1af0d"},
};

static void hex(char out[65], const uint8_t h[32])
{
	for (int i = 0; i < 32; i++)
		snprintf(out + 2 * i, 3, "%02x", h[i]);
}

START_TEST(specification_inputs)
{
	size_t max = 600000;
	uint8_t *in = malloc(max), h[32];
	char got[65];
	for (size_t i = 0; i < max; i++)
		in[i] = (uint8_t)(i % 251);
	for (size_t v = 0; v < sizeof(VECTORS) / sizeof(VECTORS[0]); v++) {
		dp_blake3_keyed(h, KEY, in, VECTORS[v].len);
		hex(got, h);
		ck_assert_msg(strcmp(got, VECTORS[v].hex) == 0, "len %zu: %s", VECTORS[v].len, got);
		dp_blake3_keyed_portable(h, KEY, in, VECTORS[v].len);
		hex(got, h);
		ck_assert_msg(strcmp(got, VECTORS[v].hex) == 0, "portable, len %zu: %s",
		              VECTORS[v].len, got);
	}
	free(in);
}
END_TEST

/* Every number of 1 KiB chunks up to 600 (subtrees, odd levels, lanes
 * partly used), plus ragged ends: both paths agree. */
START_TEST(simd_matches_portable)
{
	size_t max = 600 * 1024 + 1000;
	uint8_t *in = malloc(max), a[32], b[32];
	uint64_t s = 88172645463325252ull;
	for (size_t i = 0; i < max; i++) {
		s ^= s << 13;
		s ^= s >> 7;
		s ^= s << 17;
		in[i] = (uint8_t)s;
	}
	for (size_t chunks = 0; chunks <= 600; chunks++) {
		size_t ends[] = {0, 1, 64, 1000};
		for (size_t e = 0; e < 4; e++) {
			size_t len = chunks * 1024 + ends[e];
			dp_blake3_keyed(a, KEY, in, len);
			dp_blake3_keyed_portable(b, KEY, in, len);
			ck_assert_msg(memcmp(a, b, 32) == 0, "len %zu", len);
		}
	}
	free(in);
}
END_TEST

static uint64_t xorshift(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

/* Random sets of 1 to 40 inputs, lengths from the chunk and block edges or
 * random up to 70 KiB, at random offsets of one buffer (so inputs overlap and
 * are unaligned): the batch gives the one-by-one digests, AVX-512 and
 * portable alike. Some sets hold one input past the batch's group size. */
START_TEST(many_matches_one_by_one)
{
	static const size_t EDGES[] = {
	    0, 1, 63, 64, 65, 1023, 1024, 1025, 2048, 15 * 1024 + 7, 16 * 1024, 64 * 1024};
	size_t max = 2 * 1024 * 1024;
	uint8_t *in = malloc(max);
	uint64_t s = 0x9E3779B97F4A7C15ull;
	for (size_t i = 0; i < max; i++)
		in[i] = (uint8_t)xorshift(&s);
	for (int round = 0; round < 400; round++) {
		const uint8_t *data[40];
		size_t len[40], n = 1 + xorshift(&s) % 40;
		uint8_t want[40][32], got[40][32], port[40][32];
		for (size_t i = 0; i < n; i++) {
			uint64_t r = xorshift(&s);
			if (round % 50 == 7 && i == n / 2)
				len[i] = 1024 * 1024 + 1 + r % 5000; /* over a group */
			else if (r % 3)
				len[i] = EDGES[(r >> 8) % (sizeof(EDGES) / sizeof(EDGES[0]))];
			else
				len[i] = (r >> 8) % (70 * 1024 + 1);
			data[i] = in + xorshift(&s) % (max - len[i] + 1);
			dp_blake3_keyed_portable(want[i], KEY, data[i], len[i]);
		}
		ck_assert_int_eq(dp_blake3_keyed_many(got, KEY, data, len, n), 0);
		ck_assert_int_eq(dp_blake3_keyed_many_portable(port, KEY, data, len, n), 0);
		for (size_t i = 0; i < n; i++) {
			ck_assert_msg(memcmp(got[i], want[i], 32) == 0,
			              "round %d, input %zu of %zu, len %zu", round, i, n, len[i]);
			ck_assert_msg(memcmp(port[i], want[i], 32) == 0,
			              "portable, round %d, input %zu of %zu, len %zu", round, i, n,
			              len[i]);
		}
	}
	free(in);
}
END_TEST

/* The specification's inputs through the batch, all in one call. */
START_TEST(many_specification_inputs)
{
	enum { NV = sizeof(VECTORS) / sizeof(VECTORS[0]) };
	size_t max = 600000, len[NV];
	uint8_t *in = malloc(max), h[NV][32];
	const uint8_t *data[NV];
	char got[65];
	for (size_t i = 0; i < max; i++)
		in[i] = (uint8_t)(i % 251);
	for (size_t v = 0; v < NV; v++) {
		data[v] = in;
		len[v] = VECTORS[v].len;
	}
	dp_blake3_keyed_many(h, KEY, data, len, NV);
	for (size_t v = 0; v < NV; v++) {
		hex(got, h[v]);
		ck_assert_msg(strcmp(got, VECTORS[v].hex) == 0, "len %zu: %s", len[v], got);
	}
	free(in);
}
END_TEST

START_TEST(matches_b3sum)
{
	if (system("command -v b3sum >/dev/null 2>&1") != 0) {
		fprintf(stderr, "blake3_test: b3sum not installed, comparison skipped\n");
		return;
	}
	char path[4200], kpath[4200], cmd[9000];
	snprintf(path, sizeof(path), "%s/in", dp_test_dir);
	snprintf(kpath, sizeof(kpath), "%s/key", dp_test_dir);
	FILE *k = fopen(kpath, "wb");
	fwrite(KEY, 1, 32, k);
	fclose(k);
	size_t sizes[] = {777, 16384, 65537, 1048576 + 3, 4194304};
	uint8_t *in = malloc(4194304), h[32];
	for (size_t i = 0; i < 4194304; i++)
		in[i] = (uint8_t)((i * 2654435761u) >> 13);
	for (size_t t = 0; t < sizeof(sizes) / sizeof(sizes[0]); t++) {
		FILE *f = fopen(path, "wb");
		fwrite(in, 1, sizes[t], f);
		fclose(f);
		snprintf(cmd, sizeof(cmd), "b3sum --keyed --no-names '%s' < '%s'", path, kpath);
		FILE *p = popen(cmd, "r");
		char want[80] = "";
		ck_assert(fgets(want, sizeof(want), p) != NULL);
		pclose(p);
		want[64] = 0;
		char got[65];
		dp_blake3_keyed(h, KEY, in, sizes[t]);
		hex(got, h);
		ck_assert_msg(strcmp(got, want) == 0, "len %zu: %s, b3sum %s", sizes[t], got, want);
	}
	free(in);
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("common/blake3");
	TCase *tc = tcase_create("core");
	tcase_set_timeout(tc, 120);
	tcase_add_checked_fixture(tc, dp_test_setup, dp_test_teardown);
	tcase_add_test(tc, specification_inputs);
	tcase_add_test(tc, simd_matches_portable);
	tcase_add_test(tc, matches_b3sum);
	tcase_add_test(tc, many_matches_one_by_one);
	tcase_add_test(tc, many_specification_inputs);
	suite_add_tcase(s, tc);
	return s;
}

DP_TEST_MAIN(suite)

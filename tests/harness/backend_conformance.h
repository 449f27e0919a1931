/*
 * The backend conformance suite: generic tests of the transport contract in
 * dp/sys/backend.h, run against any backend a factory makes (posix, s3, the
 * harness's in-memory and faulty backends).
 *
 * Usage, in a test file:
 *
 *   static int make_posix(dp_backend **out, const char *tmpdir) { ... }
 *   Suite *s = suite_create("posix");
 *   dp_backend_conformance_add(s, "posix", make_posix);
 *
 * Each test runs forked in a fresh dp_test_dir (the TCase has the
 * dp_test_setup/dp_test_teardown checked fixture) and calls make(&b,
 * dp_test_dir) for an empty, usable backend (make runs b->create itself if
 * the backend needs it). make returns 0 or a DP_E* code with dp_error set.
 * Up to 8 backends may be added to one program.
 */
#ifndef DP_TEST_BACKEND_CONFORMANCE_H
#define DP_TEST_BACKEND_CONFORMANCE_H

#include <check.h>

#include "dp/sys/backend.h"

typedef int (*dp_backend_factory)(dp_backend **out, const char *tmpdir);

/* Adds a TCase named "<name> conformance" to s. */
void dp_backend_conformance_add(Suite *s, const char *name, dp_backend_factory make);

#endif

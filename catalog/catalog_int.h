/*
 * Private to catalog/ and its tests: schema migration steps.
 */
#ifndef DP_CATALOG_INT_H
#define DP_CATALOG_INT_H

/* Opens path and brings its schema to exactly `version` (1 ..
 * DP_CATALOG_SCHEMA_VERSION), for tests of the migrations. */
int dp_catalog_migrate_to(const char *path, int version);

#endif

# dp — build, test, demo.
#
#   make            build bin/dp, bin/dp-worker, bin/dp-controller
#   make test       install test dependencies if missing, lint, build, run every test
#                   (unit + integration, then the unit tests again under ASan/UBSan)
#   make demo       install what is missing, build, run the end-to-end demo
#   make asan       build everything with -fsanitize=address,undefined into build-asan/
#   make lint       clang-format check + banned unsafe functions
#   make bench      the benchmarks in bench/ (slow; not part of test)
#
# OBJ and BIN may be set to build out of tree (OBJ=/tmp/x BIN=/tmp/x/bin).

OBJ ?= build
BIN ?= bin
CC ?= cc
PKGS := libarchive libzstd libcrypto libcurl sqlite3 libcjson yaml-0.1 libmicrohttpd

DEPS_OK := $(shell pkg-config --exists $(PKGS) check 2>/dev/null && echo yes)
ifeq ($(DEPS_OK),yes)
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS))
PKG_LIBS := $(shell pkg-config --libs $(PKGS))
CHECK_CFLAGS := $(shell pkg-config --cflags check)
CHECK_LIBS := $(shell pkg-config --libs check)
endif

OPT ?= -O2
SAN ?=
CFLAGS := -std=c11 -D_GNU_SOURCE $(OPT) -g -Wall -Wextra -Wshadow -Werror -Wno-missing-field-initializers -Wno-format-truncation \
	-Iinclude -pthread $(PKG_CFLAGS) $(SAN)
LDFLAGS := -pthread $(SAN)
LDLIBS := $(PKG_LIBS) -lm

# One static library per directory; a file named main.c is a program.
lib_srcs = $(filter-out %/main.c,$(wildcard $(1)/*.c $(1)/*/*.c))
COMMON_SRC := $(call lib_srcs,common)
REPOS_SRC := $(call lib_srcs,repos)
CATALOG_SRC := $(call lib_srcs,catalog)
WORKER_SRC := $(call lib_srcs,dp-worker)
CTL_SRC := $(call lib_srcs,dp-controller)
CLI_SRC := $(call lib_srcs,cli)
HARNESS_SRC := $(wildcard tests/harness/*.c)

objs = $(patsubst %.c,$(OBJ)/%.o,$(1))
LIB_COMMON := $(OBJ)/libdpcommon.a
LIB_REPOS := $(OBJ)/libdprepos.a
LIB_CATALOG := $(OBJ)/libdpcatalog.a
LIB_WORKER := $(OBJ)/libdpworker.a
LIB_CTL := $(OBJ)/libdpctl.a
LIB_CLI := $(OBJ)/libdpcli.a
LIB_HARNESS := $(OBJ)/libdpharness.a
# Link order: dependants first.
ALL_LIBS := $(LIB_CLI) $(LIB_CTL) $(LIB_WORKER) $(LIB_CATALOG) $(LIB_REPOS) $(LIB_COMMON)

PROGS := $(BIN)/dp $(BIN)/dp-worker $(if $(wildcard dp-controller/main.c),$(BIN)/dp-controller)
UNIT_TESTS := $(patsubst %.c,$(OBJ)/%,$(wildcard tests/unit/*/*_test.c tests/unit/*_test.c))
INTEG_TESTS := $(patsubst %.c,$(OBJ)/%,$(wildcard tests/integration/*_test.c))


.PHONY: all deps-check asan-build test-deps test unit integration asan asan-unit lint demo bench clean
.DEFAULT_GOAL := all

all: deps-check $(PROGS)

deps-check:
ifneq ($(DEPS_OK),yes)
	@echo "make: build dependencies are missing: run 'bash scripts/install-deps.sh' (as root), or 'make test' / 'make demo', which run it" >&2
	@exit 1
endif

$(OBJ)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(CHECK_CFLAGS) -MMD -MP -c $< -o $@

define mklib
$(1): $(call objs,$(2))
	@mkdir -p $$(dir $$@)
	rm -f $$@ && ar rcs $$@ $$^
endef
$(eval $(call mklib,$(LIB_COMMON),$(COMMON_SRC)))
$(eval $(call mklib,$(LIB_REPOS),$(REPOS_SRC)))
$(eval $(call mklib,$(LIB_CATALOG),$(CATALOG_SRC)))
$(eval $(call mklib,$(LIB_WORKER),$(WORKER_SRC)))
$(eval $(call mklib,$(LIB_CTL),$(CTL_SRC)))
$(eval $(call mklib,$(LIB_CLI),$(CLI_SRC)))
$(eval $(call mklib,$(LIB_HARNESS),$(HARNESS_SRC)))

$(BIN)/dp: $(OBJ)/cli/main.o $(ALL_LIBS)
	@mkdir -p $(BIN)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)
$(BIN)/dp-worker: $(OBJ)/dp-worker/main.o $(ALL_LIBS)
	@mkdir -p $(BIN)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)
$(BIN)/dp-controller: $(OBJ)/dp-controller/main.o $(ALL_LIBS)
	@mkdir -p $(BIN)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(OBJ)/tests/%: $(OBJ)/tests/%.o $(LIB_HARNESS) $(ALL_LIBS)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS) $(CHECK_LIBS)

# ---- tests ----

test-deps:
	bash scripts/install-deps.sh test

unit: all $(UNIT_TESTS)
	BIN=$(abspath $(BIN)) bash tests/run.sh unit $(UNIT_TESTS)

integration: all $(INTEG_TESTS)
	BIN=$(abspath $(BIN)) bash tests/run.sh integration $(INTEG_TESTS)

# Everything: lint, unit and integration tests, then the unit tests under
# the sanitizers. tests/run.sh prints one closing "N passed, N failed" line.
test: test-deps
	$(MAKE) --no-print-directory lint
	$(MAKE) --no-print-directory all $(UNIT_TESTS) $(INTEG_TESTS)
	$(MAKE) --no-print-directory asan-build
	BIN=$(abspath $(BIN)) ASAN_OBJ=build-asan bash tests/run.sh all $(UNIT_TESTS) $(INTEG_TESTS)

asan-build:
	$(MAKE) --no-print-directory OBJ=build-asan BIN=build-asan/bin OPT=-O1 \
		SAN="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined" \
		all $(patsubst $(OBJ)/%,build-asan/%,$(UNIT_TESTS))

asan: asan-build

asan-unit: asan-build
	BIN=$(abspath build-asan/bin) bash tests/run.sh unit $(patsubst $(OBJ)/%,build-asan/%,$(UNIT_TESTS))

# ---- lint ----

LINT_FILES := $(shell find common repos catalog dp-worker dp-controller cli include tests/unit tests/integration tests/harness -name '*.[ch]' 2>/dev/null)
lint:
	clang-format --dry-run --Werror $(LINT_FILES)
	@if grep -nE '\b(sprintf|vsprintf|strcpy|strcat|strtok|atoi|atol|gets)[[:space:]]*\(' $(LINT_FILES); then \
		echo "lint: banned function (use snprintf, memcpy with a length, strtol, strtok_r)" >&2; exit 1; fi
	@echo "lint: ok"

# ---- demo, bench ----

demo: 
	bash scripts/install-deps.sh test
	$(MAKE) --no-print-directory all
	bash scripts/demo.sh

bench: all
	bash bench/push.sh
	bash bench/s3.sh
	bash bench/pg.sh

clean:
	rm -rf build build-asan bin

-include $(shell find $(OBJ) -name '*.d' 2>/dev/null)

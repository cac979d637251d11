# The two commands.  Everything else is meson and ninja:
#   make demo    install what is missing, build, run the demo end to end
#   make check   install what is missing, build, run every test
# Other targets: build, sanitize (ASan+UBSan build and tests), clean.

BUILD ?= build
SAN_BUILD ?= build-san

.PHONY: all deps build demo check sanitize valgrind bench bench-api clean

all: build

deps:
	@tools/install-deps

$(BUILD)/build.ninja:
	meson setup $(BUILD)

build: deps $(BUILD)/build.ninja
	ninja -C $(BUILD)

demo: build
	@tools/demo $(BUILD)

check: build
	@tools/run-tests $(BUILD)

sanitize: deps
	@[ -f $(SAN_BUILD)/build.ninja ] || CC=clang meson setup $(SAN_BUILD) \
	    -Db_sanitize=address,undefined -Db_lundef=false
	ninja -C $(SAN_BUILD)
	@tools/run-tests $(SAN_BUILD)

valgrind: build
	@tools/run-tests $(BUILD) --suite unit --wrap='valgrind --error-exitcode=1 --leak-check=full -q'

bench: build
	@tools/install-deps tools/deps.txt bench/deps.txt
	bench/run.sh
	BUILD=$(BUILD) bench/api/run.sh

# DescribeImages against moto_server alone (part of `make bench`).
bench-api: build
	BUILD=$(BUILD) bench/api/run.sh

clean:
	rm -rf $(BUILD) $(SAN_BUILD)

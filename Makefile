# b2c-builder: `make release` builds every architecture into releases/<version>/, `make build`
# one architecture (ARCH) into releases/, `make test` runs every test.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
ARCH ?= amd64
# Debian's kernel metapackage for ARCH (config.ARCHES kernel_package).
KERNEL_PACKAGE ?= linux-image-$(if $(filter ppc64el,$(ARCH)),powerpc64le,$(ARCH))
# Host packages: the build needs gpgv + the archive keyring (and zstd for .deb members in zstd);
# --podman trimmed also needs patch (Debian's patches), gcc and pkgconf (cgo; everything else,
# the Go toolchain, the Go code and the C headers and libraries, comes from the archive);
# the tests add QEMU (qemu-system-misc: riscv64 with Debian's OpenSBI, and s390x; qemu-system-ppc:
# ppc64el with SLOF), the registry, skopeo, GNU cpio, bsdtar, kmod, shellcheck, busybox,
# chrony (an NTP server on 127.0.0.1 for b2c.ntp_peer; it replaces systemd-timesyncd) and
# gpg-agent (gpg only Recommends it, but the test archive's signing key is made through it).
# Boot entries and ISOs: xorriso, isolinux/syslinux-common/pxelinux, systemd-boot-efi, mtools,
# ovmf (UEFI boots), grub-pc-bin + grub-common (grub-script-check, a GRUB netboot test).
# tests/test_linters.py checks that every host tool the tests run comes from these lists.
BUILD_DEBS := gpgv debian-archive-keyring zstd xz-utils python3-venv patch gcc pkgconf
TEST_DEBS := $(BUILD_DEBS) qemu-system-x86 qemu-utils cpio libarchive-tools skopeo \
	docker-registry shellcheck busybox-static kmod gpg gpg-agent dpkg-dev e2fsprogs gcc binutils \
	chrony \
	qemu-system-arm qemu-system-misc qemu-system-ppc xorriso isolinux syslinux-common pxelinux \
	systemd-boot-efi mtools ovmf \
	grub-pc-bin grub-common
PYSRC := b2c_builder tests bench

.PHONY: all release build test lint fmt bench clean deps-build deps-test

all: release

define apt_install
	@missing=$$(for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing: $$missing"; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi
endef

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

deps-build: $(BIN)/python
	$(call apt_install,$(BUILD_DEBS))
	$(BIN)/pip install -q -e .

deps-test: $(BIN)/python
	$(call apt_install,$(TEST_DEBS))
	$(BIN)/pip install -q -e '.[test]'

# Every architecture of b2c_builder/config.py's ARCHES, with SHA256SUMS and SPDX SBOMs;
# RELEASE_ARGS adds options (e.g. RELEASE_ARGS="--arch amd64 --suite bookworm --podman trimmed").
release: deps-build
	$(BIN)/b2c-builder release $(RELEASE_ARGS)

build: deps-build
	$(BIN)/b2c-builder build --arch $(ARCH) --kernel-package $(KERNEL_PACKAGE)

test: deps-test
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: deps-test
	$(BIN)/ruff check $(PYSRC)
	$(BIN)/ruff format --check $(PYSRC)
	$(BIN)/mypy
	shellcheck init/*

fmt: deps-test
	$(BIN)/ruff format $(PYSRC)
	$(BIN)/ruff check --fix $(PYSRC)

bench: deps-test
	$(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf releases/*.zst releases/*.xz releases/*.gz releases/*.cpio releases/*.sha256 \
		releases/*.json releases/linux-* releases/*+*/ build dist .pytest_cache .mypy_cache \
		.ruff_cache

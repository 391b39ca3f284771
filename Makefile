# msync's build, test and install steps. `make test` and `make demo` are the
# README's two set-up commands: on a fresh Debian 12 machine (as root) they
# install every package the project needs, build, and run.

SHELL := /bin/bash
CARGO ?= cargo
PREFIX ?= /usr/local

# Debian packages: the Go toolchain and rclone's packaged source (plus three
# Go libraries its dependencies need that the source package does not pull
# in) build librclone; the rest are for the union mount, the tests (rclone
# CLI as an independent checker, sshd and vsftpd as real SFTP and FTP
# servers, which the tests run on loopback themselves) and bindgen.
DEBIAN_PACKAGES := golang-go golang-github-rclone-rclone-dev \
	golang-github-aalpar-deheap-dev golang-github-coreos-go-semver-dev \
	golang-github-youmark-pkcs8-dev \
	rclone mergerfs fuse3 inotify-tools openssh-server vsftpd git \
	libclang-dev build-essential pkg-config hyperfine python3-venv \
	openssl ca-certificates man-db

# A real S3 server for the tests (S3 has no `about`, so quotas are tested
# against it): moto from PyPI, in a virtual environment of its own.
MOTO_VERSION := 5.2.5
MOTO := target/moto/bin/moto_server
# Prometheus's own parser, which checks `msync status --prometheus`.
PROMETHEUS_CLIENT_VERSION := 0.26.0
PYTOOLS := target/pytools/bin/python

LIBRCLONE_SRC := $(wildcard vendor/librclone/*.go)
LIBRCLONE := target/librclone/librclone.so
GO_ENV := GO111MODULE=off GOPATH=$(CURDIR)/target/gopath:/usr/share/gocode GOFLAGS=

# The aufs VM (make test-aufs): Debian's kernel source and what builds it,
# QEMU, busybox for the initramfs, dosfstools for a vfat branch.
AUFS_VM := target/aufs-vm
AUFS_VM_PACKAGES := linux-source-6.1 flex bison bc libelf-dev libssl-dev \
	busybox-static qemu-system-x86 cpio dosfstools
AUFS_VM_INPUTS := tests/aufs-vm/build-kernel.sh tests/aufs-vm/kernel.config \
	tests/aufs-vm/mmap-6.1.y.patch

.PHONY: all deps aufs-vm-deps aufs-kernel librclone build release test test-aufs lint install dist demo bench clean

all: build

# Installs only what is missing, so re-running is cheap.
# vsftpd's package starts a system FTP service on port 21 where systemd
# runs; the tests start their own, so the one it installs is turned off.
deps:
	@missing=$$(for p in $(DEBIAN_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:" $$missing; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
		if echo "$$missing" | grep -qx vsftpd && command -v systemctl >/dev/null; then \
			systemctl disable --now vsftpd 2>/dev/null || true; \
		fi; \
	fi
	@command -v $(CARGO) >/dev/null || { echo "cargo not found: install the Rust toolchain (rustup)"; exit 1; }

# librclone.so from Debian's rclone source, offline, in GOPATH mode. make
# skips it when the shim is older than the library.
$(LIBRCLONE): $(LIBRCLONE_SRC)
	@mkdir -p $(dir $@) target/gopath
	cd vendor/librclone && $(GO_ENV) go build -trimpath -buildmode=c-shared \
		-ldflags='-s -w' -o $(CURDIR)/$@ .
	@rm -f $(basename $@).h

# make librclone BACKENDS="local sftp" also builds a library with only
# those backends (and alias and crypt) into target/librclone-local-sftp/.
BACKENDS ?=
librclone: deps $(LIBRCLONE)
	@if [ -n "$(strip $(BACKENDS))" ]; then vendor/librclone/build-trimmed.sh "$(BACKENDS)"; fi

# The trimmed library the tests use.
TRIMMED_TEST_LIB := target/librclone-local-sftp/librclone.so
$(TRIMMED_TEST_LIB): $(LIBRCLONE_SRC) vendor/librclone/build-trimmed.sh
	vendor/librclone/build-trimmed.sh "local sftp"

$(MOTO):
	python3 -m venv target/moto
	target/moto/bin/pip install -q 'moto[s3,server]==$(MOTO_VERSION)'

$(PYTOOLS):
	python3 -m venv target/pytools
	target/pytools/bin/pip install -q 'prometheus-client==$(PROMETHEUS_CLIENT_VERSION)'

# The debug and release binaries each get librclone.so beside them.
build: librclone
	$(CARGO) build --all-targets
	cp -f $(LIBRCLONE) target/debug/librclone.so

release: librclone
	$(CARGO) build --release
	cp -f $(LIBRCLONE) target/release/librclone.so

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings

# Tests named *inotify_limit* lower system-wide inotify limits: they run
# after the others, alone, so no other test's watcher meets the low limit.
test: build lint $(MOTO) $(PYTOOLS) $(TRIMMED_TEST_LIB)
	MSYNC_LIBRCLONE=$(CURDIR)/target/debug/librclone.so $(CARGO) test -- --test-threads=2 --skip inotify_limit
	MSYNC_LIBRCLONE=$(CURDIR)/target/debug/librclone.so $(CARGO) test --test it inotify_limit -- --test-threads=1

# aufs is in neither this kernel nor Debian's: its tests run inside a QEMU
# VM with a kernel of our own (tests/aufs-vm/), built once and cached.
aufs-vm-deps:
	@missing=$$(for p in $(AUFS_VM_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages for the aufs VM:" $$missing; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

$(AUFS_VM)/bzImage: $(AUFS_VM_INPUTS)
	$(MAKE) aufs-vm-deps
	tests/aufs-vm/build-kernel.sh $(CURDIR)/$(AUFS_VM)

aufs-kernel: $(AUFS_VM)/bzImage

test-aufs: build aufs-vm-deps $(AUFS_VM)/bzImage
	tests/aufs-vm/test.sh

# Benchmarks report, never assert: numbers go to bench/results/ (see
# bench/README.md). They run the release build with librclone beside it;
# the CLI tools come from `deps`. MSYNC_BENCH_SCALE=tiny|full sizes `sync`.
bench: release
	MSYNC_LIBRCLONE=$(CURDIR)/$(LIBRCLONE) $(CARGO) bench --bench rc_call
	MSYNC_LIBRCLONE=$(CURDIR)/$(LIBRCLONE) $(CARGO) bench --bench sync

# The main job on a built-in default: three local folders stand in for three
# clouds; install, start, copy in, status, stop, and import into a fresh
# install (demo/run.sh).
demo: release
	demo/run.sh target/release/msync

install: release
	install -d -m 0755 $(PREFIX)/lib/msync $(PREFIX)/bin
	install -m 0755 target/release/msync $(PREFIX)/lib/msync/msync
	install -m 0644 target/release/librclone.so $(PREFIX)/lib/msync/librclone.so
	ln -sf $(PREFIX)/lib/msync/msync $(PREFIX)/bin/msync
	target/release/msync manual $(PREFIX)/share/man/man1
	install -d $(PREFIX)/share/bash-completion/completions \
		$(PREFIX)/share/zsh/site-functions $(PREFIX)/share/fish/vendor_completions.d
	target/release/msync completions bash > $(PREFIX)/share/bash-completion/completions/msync
	target/release/msync completions zsh > $(PREFIX)/share/zsh/site-functions/_msync
	target/release/msync completions fish > $(PREFIX)/share/fish/vendor_completions.d/msync.fish

# The release bundle: target/dist/msync-<version>-<arch>.tar.gz with msync,
# librclone.so beside it, the man pages, completions, unit and a README.
dist: release
	dist/bundle.sh target/release target/dist

clean:
	$(CARGO) clean

#!/usr/bin/env bash
# Build every container image ase-cluster needs, without a registry.
#
# Usage:
#   deploy/images/build.sh            # build what is missing, print the tags
#   deploy/images/build.sh node       # only the named images (sast, demo, v2, node, agent, agent-claude)
#   ASE_CACHE=/some/dir deploy/images/build.sh
#   ASE_BIN=target/debug/ase deploy/images/build.sh node
#
# Images produced (one tag per line on stdout, nothing else goes to stdout):
#   ase-sast:<content-hash>  and  ase-sast:latest
#       semgrep-core from the PyPI `semgrep` wheel (pinned below), invoked as `osemgrep`,
#       FROM scratch: its bundled libs, the host's libc/loader, a static busybox (sh, uname),
#       the CA bundle, and our rule packs at /rules.
#
#   ase-v2-<name>:<content-hash>  and  ase-v2-<name>:latest, one per deploy/images/v2-<name>/
#       test images implementing the A.S.E v2 contract (image_status_check, test_case, poc
#       scripts, the project under /app), FROM scratch with a static busybox providing every
#       applet.
#
#   ase-demo-<name>:<content-hash>  and  ase-demo-<name>:1, one per deploy/images/demo-<name>/
#       the v2 images of the demo dataset (examples/demo): the demo repo's vulnerable base tree
#       (examples/demo/repos/<name>/base) under /app, python3.11-minimal and its libraries
#       from Debian's .debs (apt-get download + dpkg -x), a static busybox, and the contract
#       scripts (build = byte-compile, tests = the project's unit tests, PoC = an exploit)
#       under /ase. `:1` is the stable tag the demo's v2 task file names; every build moves it.
#
#   ase-agent-mini-swe-agent:<content-hash>  and  ase-agent-mini-swe-agent:latest
#       the agent image of the `mini-swe-agent` preset (agent mode): mini-swe-agent from PyPI
#       (pinned below, pip install --target, wheels for CPython 3.11 manylinux) under
#       /opt/agent/site, Python 3.11 with its standard library from Debian's .debs (apt-get
#       download + dpkg -x), a static busybox (sh and the commands the agent runs), a `mini`
#       launcher (about 570 MB). The wheels are installed once into $ASE_CACHE/agent-site and
#       the .debs cached in $ASE_CACHE/debs/agent, so later builds are offline.
#
#   ase-agent-claude-code:<content-hash>  and  ase-agent-claude-code:latest
#       the agent image of the `claude-code` preset: the Claude Code CLI bundled in PyPI's
#       claude-agent-sdk wheel (pinned below; `pip download`, digest checked; no npm) at
#       /usr/local/bin/claude, glibc and bash from Debian's .debs, a static busybox, user
#       `agent` (uid 1000: Claude Code refuses --dangerously-skip-permissions as root), about
#       420 MB. The wheel is cached in $ASE_CACHE/wheels, the binary in $ASE_CACHE/claude-code.
#
#   ase-node:<content-hash>  and  ase-node:latest
#       one image for every cluster role (coordinator, worker, client): the `ase` binary
#       (ASE_BIN, else the debug build `cargo build -p ase` makes; debug info stripped in the
#       image), git with its helpers and templates, GNU patch, semgrep-core as `osemgrep`, our
#       rule packs at /rules, a static busybox; FROM scratch with the host's libs and loader.
#
# Side product: the bare host binary `$ASE_CACHE/semgrep/bin/osemgrep` (with its libs), used by
# the worker's tests and by `bench sast` to compare bare and container scans.
#
# Properties:
#   - Offline after the first run: the wheel and the busybox .deb are cached in $ASE_CACHE
#     (default ~/.cache/ase-cluster). The first run needs PyPI (pip) and a Debian mirror
#     (apt-get download; run `apt-get update` once if apt has no package lists).
#   - Idempotent and fast when nothing changed: the tag is a hash of every input (pinned wheel
#     digest, busybox .deb, host libraries, CA bundle, Dockerfile, rule files); an existing tag
#     is not rebuilt.
#   - Installs nothing system-wide.
set -euo pipefail

SEMGREP_VERSION="1.185.0"
# Digest of semgrep-${SEMGREP_VERSION}-...-manylinux_2_34_x86_64.whl as fetched from PyPI.
SEMGREP_WHEEL_SHA256="0eb6aaadad5b957af96d1300487e10af1dc8016e8ef53072effb48cd4906c02b"

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
IMAGES_DIR="$REPO_ROOT/deploy/images"
CACHE="${ASE_CACHE:-$HOME/.cache/ase-cluster}"

log() { printf '[build.sh] %s\n' "$*" >&2; }
die() { printf '[build.sh] error: %s\n' "$*" >&2; exit 1; }

for tool in pip unzip sha256sum dpkg apt-get ldd flock strip; do
    command -v "$tool" >/dev/null 2>&1 || die "required tool '$tool' not found"
done
# Only the bare osemgrep (`build.sh osemgrep`) can be had without Docker.
need_docker() { command -v docker >/dev/null 2>&1 || die "required tool 'docker' not found"; }
docker info >/dev/null 2>&1 || die "the Docker daemon does not answer (docker info failed)"

mkdir -p "$CACHE/wheels" "$CACHE/debs" "$CACHE/images"

# One build at a time per cache (several engineers share a machine); under the lock, temporary
# directories left by an interrupted run are garbage and can go.
exec 9>"$CACHE/build.lock"
flock 9
rm -rf "$CACHE"/images/sast-ctx.* "$CACHE"/images/v2-ctx.* "$CACHE"/images/node-ctx.* \
    "$CACHE"/images/demo-ctx.* "$CACHE"/semgrep.tmp.* "$CACHE"/python-rootfs.tmp.* \
    "$CACHE"/agent-site.tmp.* "$CACHE"/agent-rootfs.tmp.* "$CACHE"/claude-code.tmp.*

# --- inputs --------------------------------------------------------------------------------

fetch_semgrep_wheel() {
    local wheel
    wheel="$(find "$CACHE/wheels" -maxdepth 1 -name "semgrep-${SEMGREP_VERSION}-*manylinux*x86_64.whl" | head -n1)"
    if [[ -z "$wheel" ]]; then
        log "downloading semgrep==${SEMGREP_VERSION} wheel"
        pip download --quiet --no-deps --only-binary=:all: --platform manylinux_2_34_x86_64 \
            "semgrep==${SEMGREP_VERSION}" -d "$CACHE/wheels" >&2
        wheel="$(find "$CACHE/wheels" -maxdepth 1 -name "semgrep-${SEMGREP_VERSION}-*manylinux*x86_64.whl" | head -n1)"
        [[ -n "$wheel" ]] || die "pip did not produce a semgrep ${SEMGREP_VERSION} manylinux wheel"
        local got
        got="$(sha256sum "$wheel" | cut -d' ' -f1)"
        if [[ "$got" != "$SEMGREP_WHEEL_SHA256" ]]; then
            rm -f "$wheel"
            die "semgrep wheel digest $got differs from the pinned $SEMGREP_WHEEL_SHA256"
        fi
    fi
    printf '%s\n' "$wheel"
}

# Extract semgrep-core and its bundled libs into $CACHE/semgrep/bin (host use and image input).
# The binary's RUNPATH is $ORIGIN/libs, so libs/ must sit beside it.
extract_semgrep() {
    local wheel="$1" dest="$CACHE/semgrep"
    if [[ -f "$dest/VERSION" && "$(cat "$dest/VERSION")" == "$SEMGREP_VERSION" && -x "$dest/bin/semgrep-core" ]]; then
        return
    fi
    log "extracting semgrep-core ${SEMGREP_VERSION} into $dest"
    local tmp
    tmp="$(mktemp -d "$CACHE/semgrep.tmp.XXXXXX")"
    unzip -q "$wheel" "semgrep-${SEMGREP_VERSION}.data/purelib/semgrep/bin/semgrep-core" \
        "semgrep-${SEMGREP_VERSION}.data/purelib/semgrep/bin/libs/*" -d "$tmp/unz"
    mkdir -p "$tmp/out"
    mv "$tmp/unz/semgrep-${SEMGREP_VERSION}.data/purelib/semgrep/bin" "$tmp/out/bin"
    chmod 0755 "$tmp/out/bin/semgrep-core"
    # semgrep-core selects its osemgrep CLI from argv[0].
    ln -s semgrep-core "$tmp/out/bin/osemgrep"
    printf '%s\n' "$SEMGREP_VERSION" >"$tmp/out/VERSION"
    rm -rf "$dest"
    mv "$tmp/out" "$dest"
    rm -rf "$tmp"
}

fetch_busybox_deb() {
    local deb
    deb="$(find "$CACHE/debs" -maxdepth 1 -name 'busybox-static_*_amd64.deb' | sort | tail -n1)"
    if [[ -z "$deb" ]]; then
        log "downloading Debian busybox-static"
        (cd "$CACHE/debs" && apt-get download busybox-static >&2) ||
            die "apt-get download busybox-static failed (run 'apt-get update' once?)"
        deb="$(find "$CACHE/debs" -maxdepth 1 -name 'busybox-static_*_amd64.deb' | sort | tail -n1)"
        [[ -n "$deb" ]] || die "apt-get download produced no busybox-static .deb"
    fi
    printf '%s\n' "$deb"
}

# Host libraries semgrep-core needs that the wheel does not bundle (libc, the loader, ...).
host_libs() {
    local bin="$CACHE/semgrep/bin/semgrep-core" libs_dir="$CACHE/semgrep/bin/libs"
    ldd "$bin" | awk -v own="$libs_dir/" '
        $2 == "=>" && $3 ~ /^\// && index($3, own) != 1 { print $3 }
        $1 ~ /^\// { print $1 }' | sort -u
}

rule_files() {
    (cd "$REPO_ROOT" && find rules -type f -name '*.yaml' -not -path 'rules/fixtures/*' | LC_ALL=C sort)
}

# The one builder of every image: builds `tag` from a fresh context filled by `populate`
# (a function given the context directory) unless an image of that tag exists, labelled with
# its kind and content hash (the tag is the hash: a changed input is a new image).
# build_image TAG KIND HASH DOCKERFILE POPULATE [--label K=V ...]
build_image() {
    local tag="$1" kind="$2" hash="$3" dockerfile="$4" populate="$5"
    shift 5
    if docker image inspect "$tag" >/dev/null 2>&1; then
        log "$tag already built"
        return
    fi
    log "assembling the build context for $tag"
    local ctx
    ctx="$(mktemp -d "$CACHE/images/ctx.XXXXXX")"
    # shellcheck disable=SC2064 # expand now: ctx is local
    trap "rm -rf '$ctx'" EXIT
    "$populate" "$ctx"
    cp "$dockerfile" "$ctx/Dockerfile"
    log "building $tag"
    DOCKER_BUILDKIT=0 docker build --quiet \
        --label "ase.image=$kind" --label "ase.content-hash=$hash" "$@" \
        -t "$tag" "$ctx" >&2
    rm -rf "$ctx"
    trap - EXIT
}

# --- ase-sast ------------------------------------------------------------------------------

# The build context of the image sast (its root file system in "$1/rootfs"); called by
# build_image with the caller's locals in scope.
sast_context() {
    local ctx="$1"
    local root="$ctx/rootfs"
    mkdir -p "$root/semgrep" "$root/bin" "$root/etc/ssl/certs" "$root/tmp" "$root/rules"
    cp -a "$CACHE/semgrep/bin" "$root/semgrep/bin"
    for lib in "${libs[@]}"; do
        mkdir -p "$root$(dirname "$lib")"
        cp -L "$lib" "$root$lib"
    done
    dpkg -x "$deb" "$ctx/busybox"
    cp "$ctx/busybox/bin/busybox" "$root/bin/busybox"
    for applet in sh uname; do ln -s busybox "$root/bin/$applet"; done
    cp -L "$ca" "$root/etc/ssl/certs/ca-certificates.crt"
    for rule in "${rules[@]}"; do
        mkdir -p "$root/$(dirname "$rule")"
        cp "$REPO_ROOT/$rule" "$root/$rule"
    done
}

build_sast() {
    local wheel deb ca="/etc/ssl/certs/ca-certificates.crt"
    wheel="$(fetch_semgrep_wheel)"
    extract_semgrep "$wheel"
    deb="$(fetch_busybox_deb)"
    [[ -f "$ca" ]] || die "CA bundle $ca not found on the host"
    mapfile -t libs < <(host_libs)
    [[ ${#libs[@]} -gt 0 ]] || die "ldd found no host libraries for semgrep-core"
    mapfile -t rules < <(rule_files)
    [[ ${#rules[@]} -gt 0 ]] || die "no rule files under $REPO_ROOT/rules"

    local hash
    hash="$(
        {
            printf 'semgrep-wheel %s %s\n' "$SEMGREP_VERSION" "$SEMGREP_WHEEL_SHA256"
            printf 'busybox-deb %s\n' "$(sha256sum "$deb" | cut -d' ' -f1)"
            printf 'build.sh %s\n' "$(sha256sum "${BASH_SOURCE[0]}" | cut -d' ' -f1)"
            printf 'dockerfile %s\n' "$(sha256sum "$IMAGES_DIR/sast/Dockerfile" | cut -d' ' -f1)"
            printf 'ca %s\n' "$(sha256sum "$ca" | cut -d' ' -f1)"
            for lib in "${libs[@]}"; do
                printf 'lib %s %s\n' "$lib" "$(sha256sum "$(readlink -f "$lib")" | cut -d' ' -f1)"
            done
            for rule in "${rules[@]}"; do
                printf 'rule %s %s\n' "$rule" "$(sha256sum "$REPO_ROOT/$rule" | cut -d' ' -f1)"
            done
        } | sha256sum | cut -c1-16
    )"
    local tag="ase-sast:$hash"

    build_image "$tag" "sast" "$hash" "$IMAGES_DIR/sast/Dockerfile" sast_context --label "ase.semgrep-version=$SEMGREP_VERSION"
    docker tag "$tag" "ase-sast:latest"
    printf '%s\n' "$tag" "ase-sast:latest"
}

# --- ase-v2-* (v2 contract test images) ----------------------------------------------------

# The build context of the image v2 (its root file system in "$1/rootfs"); called by
# build_image with the caller's locals in scope.
v2_context() {
    local ctx="$1"
    local root="$ctx/rootfs"
    mkdir -p "$root/bin" "$root/tmp"
    chmod 1777 "$root/tmp"
    dpkg -x "$deb" "$ctx/busybox"
    cp "$ctx/busybox/bin/busybox" "$root/bin/busybox"
    # Every applet, so the images' scripts (and the worker's md5sum check) find their tools.
    local applet
    while read -r applet; do
        [[ "$applet" == busybox || -z "$applet" ]] || ln -s busybox "$root/bin/$applet"
    done < <("$root/bin/busybox" --list)
    if [[ -d "$dir/app" ]]; then cp -a "$dir/app" "$root/app"; fi
}

build_v2_image() {
    local dir="$1" name deb
    name="$(basename "$dir")"
    deb="$(fetch_busybox_deb)"
    mapfile -t files < <(cd "$dir" && find . -type f | LC_ALL=C sort)
    [[ ${#files[@]} -gt 0 ]] || die "no files under $dir"
    local hash
    hash="$(
        {
            printf 'busybox-deb %s\n' "$(sha256sum "$deb" | cut -d' ' -f1)"
            printf 'build.sh %s\n' "$(sha256sum "${BASH_SOURCE[0]}" | cut -d' ' -f1)"
            for f in "${files[@]}"; do
                printf 'file %s %s %s\n' "$f" "$(stat -c '%a' "$dir/$f")" \
                    "$(sha256sum "$dir/$f" | cut -d' ' -f1)"
            done
        } | sha256sum | cut -c1-16
    )"
    local repo="ase-$name" tag="ase-$name:$hash"
    build_image "$tag" "$name" "$hash" "$dir/Dockerfile" v2_context
    docker tag "$tag" "$repo:latest"
    printf '%s\n' "$tag" "$repo:latest"
}

# --- ase-demo-* (the demo dataset's v2 images) ---------------------------------------------

# Debian packages of a minimal Python 3.11 (python3.11-minimal and its Depends/PreDepends).
PYTHON_DEBS=(python3.11-minimal libpython3.11-minimal libc6 libexpat1 zlib1g)
DEMO_STABLE_TAG="1"

# The .debs, downloaded once into $CACHE/debs/python; prints their paths, sorted.
fetch_python_debs() {
    local pkg deb dir="$CACHE/debs/python"
    mkdir -p "$dir"
    for pkg in "${PYTHON_DEBS[@]}"; do
        deb="$(find "$dir" -maxdepth 1 -name "${pkg}_*_amd64.deb" | sort | tail -n1)"
        if [[ -z "$deb" ]]; then
            log "downloading Debian $pkg"
            (cd "$dir" && apt-get download "$pkg" >&2) ||
                die "apt-get download $pkg failed (run 'apt-get update' once?)"
            deb="$(find "$dir" -maxdepth 1 -name "${pkg}_*_amd64.deb" | sort | tail -n1)"
            [[ -n "$deb" ]] || die "apt-get download produced no $pkg .deb"
        fi
        printf '%s\n' "$deb"
    done | LC_ALL=C sort
}

# The Python rootfs unpacked from the .debs, cached by their digests; prints its directory.
python_rootfs() {
    local debs_hash dir
    mapfile -t debs < <(fetch_python_debs)
    debs_hash="$(sha256sum "${debs[@]}" | cut -d' ' -f1 | sha256sum | cut -c1-16)"
    dir="$CACHE/python-rootfs/$debs_hash"
    if [[ ! -x "$dir/usr/bin/python3" ]]; then
        log "unpacking Python from ${#debs[@]} .debs"
        local tmp deb
        tmp="$(mktemp -d "$CACHE/python-rootfs.tmp.XXXXXX")"
        for deb in "${debs[@]}"; do dpkg -x "$deb" "$tmp/root"; done
        # Documentation, locales and iconv modules: nothing the demo projects use.
        rm -rf "$tmp/root/usr/share" "$tmp/root/usr/lib/x86_64-linux-gnu/gconv" \
            "$tmp/root/etc" "$tmp/root/var" "$tmp/root/sbin" "$tmp/root/usr/sbin"
        ln -s python3.11 "$tmp/root/usr/bin/python3"
        mkdir -p "$CACHE/python-rootfs"
        rm -rf "$dir"
        mv "$tmp/root" "$dir"
        rm -rf "$tmp"
    fi
    printf '%s\n' "$dir"
}

# The build context of the image demo (its root file system in "$1/rootfs"); called by
# build_image with the caller's locals in scope.
demo_context() {
    local ctx="$1"
    local root="$ctx/rootfs"
    cp -a "$pyroot" "$root"
    mkdir -p "$root/bin" "$root/tmp"
    chmod 1777 "$root/tmp"
    dpkg -x "$deb" "$ctx/busybox"
    cp "$ctx/busybox/bin/busybox" "$root/bin/busybox"
    local applet
    while read -r applet; do
        [[ "$applet" == busybox || -z "$applet" || -e "$root/bin/$applet" ]] ||
            ln -s busybox "$root/bin/$applet"
    done < <("$root/bin/busybox" --list)
    # The project as the demo repo's base commit has it (files 0644, as committed).
    mkdir -p "$root/app"
    (cd "$app" && cp --parents "${app_files[@]}" "$root/app/")
    find "$root/app" -type f -exec chmod 0644 {} +
    cp -a "$dir/ase" "$root/ase"
}

build_demo_image() {
    local dir="$1" name deb pyroot
    name="$(basename "$dir")"
    name="${name#demo-}"
    local app="$REPO_ROOT/examples/demo/repos/$name/base"
    [[ -d "$app" ]] || die "no demo repo tree $app for $dir"
    deb="$(fetch_busybox_deb)"
    pyroot="$(python_rootfs)"
    mapfile -t files < <(cd "$dir" && find . -type f | LC_ALL=C sort)
    mapfile -t app_files < <(cd "$app" && find . -type f | LC_ALL=C sort)
    local hash
    hash="$(
        {
            printf 'busybox-deb %s\n' "$(sha256sum "$deb" | cut -d' ' -f1)"
            printf 'python-rootfs %s\n' "$(basename "$pyroot")"
            printf 'build.sh %s\n' "$(sha256sum "${BASH_SOURCE[0]}" | cut -d' ' -f1)"
            for f in "${files[@]}"; do
                printf 'file %s %s %s\n' "$f" "$(stat -c '%a' "$dir/$f")" \
                    "$(sha256sum "$dir/$f" | cut -d' ' -f1)"
            done
            for f in "${app_files[@]}"; do
                printf 'app %s %s\n' "$f" "$(sha256sum "$app/$f" | cut -d' ' -f1)"
            done
        } | sha256sum | cut -c1-16
    )"
    local repo="ase-demo-$name" tag="ase-demo-$name:$hash"
    build_image "$tag" "demo-$name" "$hash" "$dir/Dockerfile" demo_context
    docker tag "$tag" "$repo:$DEMO_STABLE_TAG"
    printf '%s\n' "$tag" "$repo:$DEMO_STABLE_TAG"
}

# --- ase-agent-mini-swe-agent (agent mode) -------------------------------------------------

MINI_SWE_AGENT_VERSION="2.4.6"
# Python 3.11 with its full standard library (mini-swe-agent and litellm need ssl, sqlite3,
# ctypes, ...): libpython3.11-stdlib's Depends, less readline/ncurses-free extras it never loads.
AGENT_DEBS=(python3.11-minimal libpython3.11-minimal libpython3.11-stdlib libc6 libexpat1 zlib1g
    libbz2-1.0 libcrypt1 libffi8 liblzma5 libncursesw6 libreadline8 libsqlite3-0 libssl3
    libtinfo6 libuuid1 libgcc-s1 libstdc++6 media-types)

fetch_agent_debs() {
    local pkg deb dir="$CACHE/debs/agent"
    mkdir -p "$dir"
    for pkg in "${AGENT_DEBS[@]}"; do
        deb="$(find "$dir" -maxdepth 1 -name "${pkg}_*.deb" | sort | tail -n1)"
        if [[ -z "$deb" ]]; then
            log "downloading Debian $pkg"
            (cd "$dir" && apt-get download "$pkg" >&2) ||
                die "apt-get download $pkg failed (run 'apt-get update' once?)"
            deb="$(find "$dir" -maxdepth 1 -name "${pkg}_*.deb" | sort | tail -n1)"
            [[ -n "$deb" ]] || die "apt-get download produced no $pkg .deb"
        fi
        printf '%s\n' "$deb"
    done | LC_ALL=C sort
}

# mini-swe-agent and its dependencies as wheels for CPython 3.11 on x86_64 Linux, installed
# once into $CACHE/agent-site/<version> (pip only downloads; nothing is installed on the host).
agent_site() {
    local dir="$CACHE/agent-site/mini-swe-agent-$MINI_SWE_AGENT_VERSION"
    if [[ ! -f "$dir/.complete" ]]; then
        log "pip install --target mini-swe-agent==$MINI_SWE_AGENT_VERSION (wheels for CPython 3.11)"
        local tmp
        tmp="$(mktemp -d "$CACHE/agent-site.tmp.XXXXXX")"
        pip install --quiet --disable-pip-version-check --no-compile --target "$tmp/site" \
            --python-version 3.11 --implementation cp --only-binary=:all: \
            --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
            --platform manylinux_2_28_x86_64 --platform manylinux_2_34_x86_64 \
            "mini-swe-agent==$MINI_SWE_AGENT_VERSION" >&2 ||
            die "pip install mini-swe-agent failed (is PyPI reachable?)"
        # Launchers pip wrote name the host's interpreter: the image has its own (see below).
        rm -rf "$tmp/site/bin"
        pip freeze --path "$tmp/site" 2>/dev/null | LC_ALL=C sort >"$tmp/site/.frozen" || true
        touch "$tmp/site/.complete"
        mkdir -p "$CACHE/agent-site"
        rm -rf "$dir"
        mv "$tmp/site" "$dir"
        rm -rf "$tmp"
    fi
    printf '%s\n' "$dir"
}

agent_context() {
    local ctx="$1"
    local root="$ctx/rootfs"
    mkdir -p "$root"
    for deb in "${debs[@]}"; do dpkg -x "$deb" "$root"; done
    rm -rf "$root/usr/share/doc" "$root/usr/share/man" "$root/usr/share/locale" \
        "$root/usr/share/lintian" "$root/usr/lib/x86_64-linux-gnu/gconv"
    ln -sf python3.11 "$root/usr/bin/python3"
    mkdir -p "$root/bin" "$root/tmp" "$root/workspace" "$root/usr/local/bin" "$root/opt/agent" "$root/etc"
    chmod 1777 "$root/tmp"
    chmod 0777 "$root/workspace"
    dpkg -x "$busybox" "$ctx/busybox"
    cp "$ctx/busybox/bin/busybox" "$root/bin/busybox"
    local applet
    while read -r applet; do
        [[ "$applet" == busybox || -z "$applet" || -e "$root/bin/$applet" || -e "$root/usr/bin/$applet" ]] ||
            ln -s busybox "$root/bin/$applet"
    done < <("$root/bin/busybox" --list)
    cp -a "$site" "$root/opt/agent/site"
    printf '#!/bin/sh\nexec python3 -m minisweagent.run.mini "$@"\n' >"$root/usr/local/bin/mini"
    chmod 0755 "$root/usr/local/bin/mini"
    printf 'root:x:0:0:root:/tmp/agent-home:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$root/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
}

build_agent() {
    local busybox site
    busybox="$(fetch_busybox_deb)"
    mapfile -t debs < <(fetch_agent_debs)
    site="$(agent_site)"
    local hash
    hash="$(
        {
            printf 'mini-swe-agent %s\n' "$MINI_SWE_AGENT_VERSION"
            cat "$site/.frozen" 2>/dev/null || true
            printf 'busybox-deb %s\n' "$(sha256sum "$busybox" | cut -d' ' -f1)"
            sha256sum "${debs[@]}" | cut -d' ' -f1
            printf 'build.sh %s\n' "$(sha256sum "${BASH_SOURCE[0]}" | cut -d' ' -f1)"
            printf 'dockerfile %s\n' "$(sha256sum "$IMAGES_DIR/agent-mini-swe-agent/Dockerfile" | cut -d' ' -f1)"
        } | sha256sum | cut -c1-16
    )"
    local tag="ase-agent-mini-swe-agent:$hash"
    build_image "$tag" "agent-mini-swe-agent" "$hash" "$IMAGES_DIR/agent-mini-swe-agent/Dockerfile" agent_context
    docker tag "$tag" "ase-agent-mini-swe-agent:latest"
    local old
    while read -r old; do
        [[ "$old" == "$tag" || "$old" == "ase-agent-mini-swe-agent:latest" ]] || docker rmi "$old" >/dev/null 2>&1 || true
    done < <(docker image ls --filter label=ase.image=agent-mini-swe-agent --format '{{.Repository}}:{{.Tag}}')
    printf '%s\n' "$tag" "ase-agent-mini-swe-agent:latest"
}

# --- ase-agent-claude-code (agent mode) ---------------------------------------------------

# Claude Code as PyPI's claude-agent-sdk bundles it (`claude_agent_sdk/_bundled/claude`: one
# Bun-compiled executable, node and ripgrep inside; it needs glibc and, for its Bash tool, bash
# or zsh). No npm.
CLAUDE_AGENT_SDK_VERSION="0.2.189"
# Digest of claude_agent_sdk-${CLAUDE_AGENT_SDK_VERSION}-py3-none-manylinux_2_17_x86_64.whl from PyPI.
CLAUDE_AGENT_SDK_WHEEL_SHA256="b26a6a30a4e2cb025a6f5c95e1ce4469b38fcc51015c392f627bea7c948d67ad"
# glibc for the binary, bash (and its libtinfo) for the Bash tool; busybox gives the rest.
CLAUDE_DEBS=(libc6 libgcc-s1 bash libtinfo6)

fetch_claude_debs() {
    local pkg deb dir="$CACHE/debs/agent-claude"
    mkdir -p "$dir"
    for pkg in "${CLAUDE_DEBS[@]}"; do
        deb="$(find "$dir" -maxdepth 1 -name "${pkg}_*.deb" | sort | tail -n1)"
        if [[ -z "$deb" ]]; then
            log "downloading Debian $pkg"
            (cd "$dir" && apt-get download "$pkg" >&2) ||
                die "apt-get download $pkg failed (run 'apt-get update' once?)"
            deb="$(find "$dir" -maxdepth 1 -name "${pkg}_*.deb" | sort | tail -n1)"
            [[ -n "$deb" ]] || die "apt-get download produced no $pkg .deb"
        fi
        printf '%s\n' "$deb"
    done | LC_ALL=C sort
}

# The `claude` executable of the pinned wheel, extracted once into $CACHE/claude-code/<version>
# (the wheel is downloaded with pip, digest checked, never installed).
claude_binary() {
    local dir="$CACHE/claude-code/$CLAUDE_AGENT_SDK_VERSION"
    if [[ ! -x "$dir/claude" ]]; then
        local wheel
        wheel="$(find "$CACHE/wheels" -maxdepth 1 -name "claude_agent_sdk-${CLAUDE_AGENT_SDK_VERSION}-*manylinux*x86_64.whl" | head -n1)"
        if [[ -z "$wheel" ]]; then
            log "downloading claude-agent-sdk==${CLAUDE_AGENT_SDK_VERSION} wheel (about 180 MB)"
            pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
                --python-version 3.11 --platform manylinux_2_17_x86_64 \
                "claude-agent-sdk==${CLAUDE_AGENT_SDK_VERSION}" -d "$CACHE/wheels" >&2 ||
                die "pip download claude-agent-sdk failed (is PyPI reachable?)"
            wheel="$(find "$CACHE/wheels" -maxdepth 1 -name "claude_agent_sdk-${CLAUDE_AGENT_SDK_VERSION}-*manylinux*x86_64.whl" | head -n1)"
            [[ -n "$wheel" ]] || die "pip did not produce a claude-agent-sdk ${CLAUDE_AGENT_SDK_VERSION} manylinux wheel"
        fi
        local got
        got="$(sha256sum "$wheel" | cut -d' ' -f1)"
        if [[ "$got" != "$CLAUDE_AGENT_SDK_WHEEL_SHA256" ]]; then
            rm -f "$wheel"
            die "claude-agent-sdk wheel digest $got differs from the pinned $CLAUDE_AGENT_SDK_WHEEL_SHA256"
        fi
        log "extracting claude_agent_sdk/_bundled/claude into $dir"
        local tmp
        tmp="$(mktemp -d "$CACHE/claude-code.tmp.XXXXXX")"
        unzip -q "$wheel" 'claude_agent_sdk/_bundled/claude' 'claude_agent_sdk/_bundled/claude.version' -d "$tmp"
        mkdir -p "$tmp/out"
        mv "$tmp/claude_agent_sdk/_bundled/claude" "$tmp/out/claude"
        mv "$tmp/claude_agent_sdk/_bundled/claude.version" "$tmp/out/claude.version"
        chmod 0755 "$tmp/out/claude"
        mkdir -p "$CACHE/claude-code"
        rm -rf "$dir"
        mv "$tmp/out" "$dir"
        rm -rf "$tmp"
    fi
    printf '%s\n' "$dir"
}

claude_context() {
    local ctx="$1"
    local root="$ctx/rootfs"
    mkdir -p "$root"
    for deb in "${debs[@]}"; do dpkg -x "$deb" "$root"; done
    rm -rf "$root/usr/share/doc" "$root/usr/share/man" "$root/usr/share/locale" \
        "$root/usr/share/lintian" "$root/usr/share/info" "$root/usr/lib/x86_64-linux-gnu/gconv" \
        "$root/usr/share/bash-completion"
    mkdir -p "$root/bin" "$root/tmp" "$root/workspace" "$root/usr/local/bin" "$root/etc"
    chmod 1777 "$root/tmp"
    chmod 0777 "$root/workspace"
    dpkg -x "$busybox" "$ctx/busybox"
    cp "$ctx/busybox/bin/busybox" "$root/bin/busybox"
    local applet
    while read -r applet; do
        [[ "$applet" == busybox || -z "$applet" || -e "$root/bin/$applet" || -e "$root/usr/bin/$applet" ]] ||
            ln -s busybox "$root/bin/$applet"
    done < <("$root/bin/busybox" --list)
    cp "$claude/claude" "$root/usr/local/bin/claude"
    # Claude Code refuses to skip its permission prompts as root: the agent is uid 1000.
    printf 'root:x:0:0:root:/root:/bin/sh\nagent:x:1000:1000:agent:/tmp/agent-home:/bin/bash\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$root/etc/passwd"
    printf 'root:x:0:\nagent:x:1000:\nnogroup:x:65534:\n' >"$root/etc/group"
}

build_agent_claude() {
    local busybox claude
    busybox="$(fetch_busybox_deb)"
    mapfile -t debs < <(fetch_claude_debs)
    claude="$(claude_binary)"
    local dockerfile="$IMAGES_DIR/agent-claude-code/Dockerfile"
    local hash
    hash="$(
        {
            printf 'claude-agent-sdk %s %s\n' "$CLAUDE_AGENT_SDK_VERSION" "$CLAUDE_AGENT_SDK_WHEEL_SHA256"
            printf 'busybox-deb %s\n' "$(sha256sum "$busybox" | cut -d' ' -f1)"
            sha256sum "${debs[@]}" | cut -d' ' -f1
            printf 'build.sh %s\n' "$(sha256sum "${BASH_SOURCE[0]}" | cut -d' ' -f1)"
            printf 'dockerfile %s\n' "$(sha256sum "$dockerfile" | cut -d' ' -f1)"
        } | sha256sum | cut -c1-16
    )"
    local repo="ase-agent-claude-code" tag="ase-agent-claude-code:$hash"
    build_image "$tag" "agent-claude-code" "$hash" "$dockerfile" claude_context \
        --label "ase.claude-code-version=$(cut -d' ' -f1 "$claude/claude.version" | tr -d '\n')"
    docker tag "$tag" "$repo:latest"
    local old
    while read -r old; do
        [[ "$old" == "$tag" || "$old" == "$repo:latest" ]] || docker rmi "$old" >/dev/null 2>&1 || true
    done < <(docker image ls --filter label=ase.image=agent-claude-code --format '{{.Repository}}:{{.Tag}}')
    printf '%s\n' "$tag" "$repo:latest"
}

# --- ase-node (every cluster role) ---------------------------------------------------------

# The `ase` binary of the image: ASE_BIN, else the workspace's debug build (scripts/test.sh
# builds it anyway; cargo answers in a second when it is up to date).
node_ase_binary() {
    if [[ -n "${ASE_BIN:-}" ]]; then
        [[ -x "$ASE_BIN" ]] || die "ASE_BIN=$ASE_BIN is not an executable file"
        readlink -f "$ASE_BIN"
        return
    fi
    command -v cargo >/dev/null 2>&1 || die "no ASE_BIN and no cargo to build the ase binary"
    log "cargo build -p ase (set ASE_BIN to use a binary already built)"
    (cd "$REPO_ROOT" && cargo build --quiet -p ase >&2) || die "cargo build -p ase failed"
    local target="${CARGO_TARGET_DIR:-$REPO_ROOT/target}"
    [[ -x "$target/debug/ase" ]] || die "cargo build -p ase produced no $target/debug/ase"
    readlink -f "$target/debug/ase"
}

# Every shared library the given binaries load from the host (semgrep's bundled ones excepted).
node_host_libs() {
    local own="$CACHE/semgrep/bin/libs/"
    # With several files ldd heads each list with `FILE:`; those lines are not libraries.
    ldd "$@" | awk -v own="$own" '
        $1 ~ /:$/ { next }
        $2 == "=>" && $3 ~ /^\// && index($3, own) != 1 { print $3 }
        $1 ~ /^\// { print $1 }' | sort -u
}

# The hash of a directory's files (content, mode) and symlinks (target).
tree_digest() {
    (cd "$1" && find . \( -type f -o -type l \) -printf '%y %m %p %l\n' | LC_ALL=C sort &&
        find . -type f -print0 | LC_ALL=C sort -z | xargs -0r sha256sum) | sha256sum | cut -d' ' -f1
}

# The build context of the image node (its root file system in "$1/rootfs"); called by
# build_image with the caller's locals in scope.
node_context() {
    local ctx="$1"
    local root="$ctx/rootfs"
    mkdir -p "$root/usr/local/bin" "$root/usr/bin" "$root/bin" "$root/etc/ssl/certs" \
        "$root/tmp" "$root/semgrep" "$root/rules" "$root/data" "$root/cache" "$root/certs"
    chmod 1777 "$root/tmp"
    # Debug info is most of a debug build's size and nothing a node needs.
    strip --strip-debug -o "$root/usr/local/bin/ase" "$ase"
    cp "$git_bin" "$root/usr/bin/git"
    mkdir -p "$root$(dirname "$git_exec")"
    cp -a "$git_exec" "$root$git_exec"
    if [[ -d "$git_templates" ]]; then
        mkdir -p "$root$(dirname "$git_templates")"
        cp -a "$git_templates" "$root$git_templates"
    fi
    cp "$patch_bin" "$root/usr/bin/patch"
    cp -a "$CACHE/semgrep/bin" "$root/semgrep/bin"
    for lib in "${libs[@]}"; do
        mkdir -p "$root$(dirname "$lib")"
        cp -L "$lib" "$root$lib"
    done
    dpkg -x "$deb" "$ctx/busybox"
    cp "$ctx/busybox/bin/busybox" "$root/bin/busybox"
    local applet
    while read -r applet; do
        # git and patch are the real ones (PATH puts /usr/bin first; no shadowing here).
        case "$applet" in busybox | "" | git | patch) ;; *) ln -s busybox "$root/bin/$applet" ;; esac
    done < <("$root/bin/busybox" --list)
    cp -L "$ca" "$root/etc/ssl/certs/ca-certificates.crt"
    # git and glibc look the user up; Docker supplies /etc/hosts and /etc/resolv.conf.
    printf 'root:x:0:0:root:/tmp:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$root/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
    printf 'hosts: files dns\n' >"$root/etc/nsswitch.conf"
    for rule in "${rules[@]}"; do
        mkdir -p "$root/$(dirname "$rule")"
        cp "$REPO_ROOT/$rule" "$root/$rule"
    done
}

build_node() {
    local wheel deb ase git_bin git_exec git_templates patch_bin ca="/etc/ssl/certs/ca-certificates.crt"
    wheel="$(fetch_semgrep_wheel)"
    extract_semgrep "$wheel"
    deb="$(fetch_busybox_deb)"
    ase="$(node_ase_binary)"
    # Debian's git keeps its helpers in /usr/lib/git-core; a git of another prefix is copied to
    # the same paths, since its exec path and template dir are compiled in.
    if [[ -x /usr/bin/git ]]; then git_bin=/usr/bin/git; else git_bin="$(command -v git)" || die "git not found"; fi
    git_exec="$("$git_bin" --exec-path)"
    [[ -d "$git_exec" ]] || die "git exec path $git_exec is not a directory"
    git_templates="$(dirname "$git_exec")/../share/git-core/templates"
    git_templates="$(readlink -f "$git_templates" || true)"
    patch_bin="$(command -v patch)" || die "GNU patch not found"
    [[ -f "$ca" ]] || die "CA bundle $ca not found on the host"
    mapfile -t libs < <(node_host_libs "$ase" "$git_bin" "$patch_bin" "$CACHE/semgrep/bin/semgrep-core")
    [[ ${#libs[@]} -gt 0 ]] || die "ldd found no host libraries for the node image"
    mapfile -t rules < <(rule_files)
    [[ ${#rules[@]} -gt 0 ]] || die "no rule files under $REPO_ROOT/rules"

    local hash
    hash="$(
        {
            printf 'semgrep-wheel %s %s\n' "$SEMGREP_VERSION" "$SEMGREP_WHEEL_SHA256"
            printf 'busybox-deb %s\n' "$(sha256sum "$deb" | cut -d' ' -f1)"
            printf 'build.sh %s\n' "$(sha256sum "${BASH_SOURCE[0]}" | cut -d' ' -f1)"
            printf 'dockerfile %s\n' "$(sha256sum "$IMAGES_DIR/node/Dockerfile" | cut -d' ' -f1)"
            printf 'ase %s\n' "$(sha256sum "$ase" | cut -d' ' -f1)"
            printf 'git %s %s\n' "$git_bin" "$(sha256sum "$git_bin" | cut -d' ' -f1)"
            printf 'git-exec %s %s\n' "$git_exec" "$(tree_digest "$git_exec")"
            if [[ -d "$git_templates" ]]; then
                printf 'git-templates %s %s\n' "$git_templates" "$(tree_digest "$git_templates")"
            fi
            printf 'patch %s\n' "$(sha256sum "$patch_bin" | cut -d' ' -f1)"
            printf 'ca %s\n' "$(sha256sum "$ca" | cut -d' ' -f1)"
            for lib in "${libs[@]}"; do
                printf 'lib %s %s\n' "$lib" "$(sha256sum "$(readlink -f "$lib")" | cut -d' ' -f1)"
            done
            for rule in "${rules[@]}"; do
                printf 'rule %s %s\n' "$rule" "$(sha256sum "$REPO_ROOT/$rule" | cut -d' ' -f1)"
            done
        } | sha256sum | cut -c1-16
    )"
    local tag="ase-node:$hash"

    build_image "$tag" "node" "$hash" "$IMAGES_DIR/node/Dockerfile" node_context --label "ase.semgrep-version=$SEMGREP_VERSION"
    docker tag "$tag" "ase-node:latest"
    # Every ase build makes a new ~350 MB image: drop the older ones (an image a container
    # still uses stays, `docker rmi` refuses it).
    local old
    while read -r old; do
        [[ "$old" == "$tag" || "$old" == "ase-node:latest" ]] || docker rmi "$old" >/dev/null 2>&1 || true
    done < <(docker image ls --filter label=ase.image=node --format '{{.Repository}}:{{.Tag}}')
    printf '%s\n' "$tag" "ase-node:latest"
}

# Which images: the arguments (sast, v2, demo, node, agent, agent-claude; osemgrep: only the bare
# host binary), all images by default.
wanted=("$@")
[[ ${#wanted[@]} -gt 0 ]] || wanted=(sast v2 demo node agent agent-claude)
for image in "${wanted[@]}"; do
    [[ "$image" == osemgrep ]] || need_docker
    case "$image" in
    osemgrep) extract_semgrep "$(fetch_semgrep_wheel)" ;;
    sast) build_sast ;;
    v2)
        for v2_dir in "$IMAGES_DIR"/v2-*/; do
            build_v2_image "${v2_dir%/}"
        done
        ;;
    demo)
        for demo_dir in "$IMAGES_DIR"/demo-*/; do
            build_demo_image "${demo_dir%/}"
        done
        ;;
    node) build_node ;;
    agent) build_agent ;;
    agent-claude) build_agent_claude ;;
    *) die "unknown image '$image' (osemgrep, sast, v2, demo, node, agent, agent-claude)" ;;
    esac
done

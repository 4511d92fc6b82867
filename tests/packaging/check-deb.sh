#!/usr/bin/env bash
# Check functions are called through `check`, which shellcheck cannot see.
# shellcheck disable=SC2317
# Builds the callbridge .deb with cargo-deb and checks it: control fields, contents,
# conffiles, then installs it on THIS machine (dpkg -i: user, directories, API token, binary,
# config, unit), reinstalls over a locally edited conffile, and purges it.
#
# Needs root and dpkg (CI runs it as root on its own machine, from ./scripts/test). One line
# per check, then exactly `packaging: N passed, M failed`; exits non-zero if M > 0.
# Idempotent: the package is purged at the end, also on failure or interruption (trap). It
# refuses to touch a callbridge package it did not install itself (a real installation).
#
# Honours CARGO_TARGET_DIR (cargo-deb builds `--release` there).
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 2

CARGO_DEB_VERSION=3.8.0
PKG=callbridge
CONFIG=/etc/callbridge/callbridge.toml
TOKEN_FILE=/etc/callbridge/api.token
STATE_DIR=/var/lib/callbridge
# Present while a callbridge package installed by this script may be on the machine; holds
# the run's work directory, so a run after a hard kill (no trap) can clean that up too.
MARKER=/var/tmp/callbridge-check-deb.installed
# The postinst applies these (packaging/sysctl/60-callbridge.conf) where /proc/sys is
# writable, and a purge does not undo them (nor should it on a real host). The test does: it
# saves them before installing and puts them back at the end, so a run leaves no trace. The
# saved values live next to the marker: after a hard kill the next run restores the values
# from before the killed run, not the package's.
SYSCTL_KEYS="net.core.rmem_max net.core.wmem_max net.core.busy_poll net.core.busy_read"
SYSCTL_SAVED=/var/tmp/callbridge-check-deb.sysctl

passed=0
failed=0
ok() {
  passed=$((passed + 1))
  echo "ok    $*"
}
bad() {
  failed=$((failed + 1))
  echo "FAIL  $*"
}
# check "description" command...: one line, ok or FAIL.
check() {
  local what=$1
  shift
  if "$@"; then ok "$what"; else bad "$what"; fi
}
summary() {
  echo "packaging: $passed passed, $failed failed"
  [ "$failed" -eq 0 ]
}
indent() { sed 's/^/      | /'; }

if [ "$(id -u)" -ne 0 ] || ! command -v dpkg >/dev/null 2>&1; then
  echo "check-deb: needs root and dpkg (it installs and purges the package on this machine)" >&2
  exit 2
fi
[ -f "${HOME:-/root}/.cargo/env" ] && . "${HOME:-/root}/.cargo/env"
export DEBIAN_FRONTEND=noninteractive

known_to_dpkg() { dpkg-query -W -f='${Status}' "$PKG" >/dev/null 2>&1 &&
  ! dpkg-query -W -f='${Status}' "$PKG" 2>/dev/null | grep -q 'not-installed$'; }

WORK=$(mktemp -d /tmp/callbridge-check-deb.XXXXXX)
save_sysctl() {
  local k
  [ -s "$SYSCTL_SAVED" ] && return 0 # left by a killed run: those are the real originals
  for k in $SYSCTL_KEYS; do
    echo "$k=$(sysctl -n "$k" 2>/dev/null)"
  done >"$SYSCTL_SAVED"
}
restore_sysctl() {
  local line k v
  [ -s "$SYSCTL_SAVED" ] || return 0
  while IFS= read -r line; do
    k=${line%%=*}
    v=${line#*=}
    [ -n "$v" ] || continue
    if [ "$(sysctl -n "$k" 2>/dev/null)" != "$v" ]; then
      sysctl -q -w "$k=$v" >/dev/null 2>&1 && echo "cleanup: restored $k = $v"
    fi
  done <"$SYSCTL_SAVED"
  rm -f "$SYSCTL_SAVED"
}
# Purges what this script installed and restores the kernel settings. Idempotent: called
# before the summary (so the summary stays the last line) and again from the EXIT trap
# (interruptions, early exits).
teardown() {
  [ -e "$MARKER" ] || [ -e "$SYSCTL_SAVED" ] || return 0
  if [ -e "$MARKER" ]; then
    if known_to_dpkg; then
      echo "cleanup: purging $PKG"
      dpkg --purge "$PKG" >"$WORK/cleanup-purge.log" 2>&1 || indent <"$WORK/cleanup-purge.log"
    fi
    rm -f "$MARKER"
  fi
  restore_sysctl
}
cleanup() {
  local rc=$?
  teardown
  rm -rf "$WORK"
  exit "$rc"
}
# Teardown, then the summary as the last line; exits 1 if anything failed.
finish() {
  teardown
  summary
  exit $?
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- 0. A clean start -------------------------------------------------------------------------
if known_to_dpkg; then
  if [ -e "$MARKER" ]; then
    echo "setup: purging $PKG left by an interrupted earlier run"
    dpkg --purge "$PKG" 2>&1 | indent
  else
    bad "no callbridge package installed before the test (found one not installed by this" \
      "script: refusing to purge it; remove it or run this elsewhere)"
    trap - EXIT
    rm -rf "$WORK"
    finish
  fi
fi

# The rest of an interrupted run: its work directory and the kernel settings it changed.
if [ -e "$MARKER" ]; then
  old_work=$(cat "$MARKER")
  case $old_work in /tmp/callbridge-check-deb.?*) rm -rf "$old_work" ;; esac
  rm -f "$MARKER"
fi
restore_sysctl

# --- 1. cargo-deb, pinned -------------------------------------------------------------------
have=$(cargo-deb --version 2>/dev/null || true)
if [ "$have" != "cargo-deb $CARGO_DEB_VERSION" ]; then
  echo "setup: installing cargo-deb $CARGO_DEB_VERSION (found: ${have:-none})"
  if ! cargo install cargo-deb --locked --version "$CARGO_DEB_VERSION" >"$WORK/install.log" 2>&1; then
    tail -n 30 "$WORK/install.log" | indent
    bad "cargo-deb $CARGO_DEB_VERSION installed"
    finish
  fi
fi

# --- 2. Build -------------------------------------------------------------------------------
echo "setup: cargo deb --locked (release build)"
if ! cargo deb --locked --output "$WORK/" >"$WORK/build.log" 2>&1; then
  tail -n 40 "$WORK/build.log" | indent
  bad "cargo deb builds the package"
  finish
fi
DEB=$(find "$WORK" -maxdepth 1 -name "${PKG}_*.deb" | head -n 1)
if [ -z "$DEB" ]; then
  tail -n 20 "$WORK/build.log" | indent
  bad "cargo deb builds the package"
  finish
fi
ok "cargo deb builds the package: $(basename "$DEB") ($(($(stat -c %s "$DEB") / 1024)) KiB)"

# --- 3. Control fields ----------------------------------------------------------------------
field() { dpkg-deb -f "$DEB" "$1"; }
pkgid=$(cargo pkgid --quiet 2>/dev/null)
CARGO_VERSION=${pkgid##*[#@]}
deb_version=$(field Version)
arch=$(dpkg --print-architecture)
depends=$(field Depends)
check "control: Package is $PKG" [ "$(field Package)" = "$PKG" ]
check "control: Version $deb_version is Cargo's $CARGO_VERSION (+ Debian revision)" \
  [ "${deb_version%-*}" = "$CARGO_VERSION" ]
check "control: Architecture is $arch" [ "$(field Architecture)" = "$arch" ]
check "control: Depends has the computed libc6 ($depends)" \
  grep -Eq '(^|, )libc6( \(|,|$)' <<<"$depends"
check "control: Depends has adduser (maintainer scripts use it)" \
  grep -Eq '(^|, )adduser( \(|,|$)' <<<"$depends"
check "control: Section net, Priority optional" \
  [ "$(field Section)/$(field Priority)" = "net/optional" ]

# --- 4. Contents ----------------------------------------------------------------------------
# "mode owner size date time path" → "path mode", path without the leading "."
dpkg-deb -c "$DEB" | awk '{ p = $6; sub(/^\./, "", p); print p, $1 }' >"$WORK/contents"
has() { grep -q "^$1 " "$WORK/contents"; }
mode_of() { awk -v p="$1" '$1 == p { print $2 }' "$WORK/contents"; }
check "contents: /usr/bin/callbridge, -rwxr-xr-x" [ "$(mode_of /usr/bin/callbridge)" = "-rwxr-xr-x" ]
check "contents: $CONFIG, -rw-r--r--" [ "$(mode_of $CONFIG)" = "-rw-r--r--" ]
UNIT=""
for u in /usr/lib/systemd/system/callbridge.service /lib/systemd/system/callbridge.service; do
  if has "$u"; then UNIT=$u; fi
done
check "contents: unit ${UNIT:-callbridge.service under /usr/lib/systemd/system or /lib/systemd/system}" \
  [ -n "$UNIT" ]
check "contents: /usr/lib/sysctl.d/60-callbridge.conf" has /usr/lib/sysctl.d/60-callbridge.conf
prompts_ok=true
for p in beep.wav silence-1s.wav tone-440-1s.wav; do
  has "/usr/share/callbridge/prompts/$p" || prompts_ok=false
done
check "contents: prompts beep, silence-1s, tone-440-1s in /usr/share/callbridge/prompts" $prompts_ok
docs_ok=true
for d in README.md docs/*.md configs/examples/*.* configs/examples/cluster/*; do
  case $d in
    configs/examples/cluster/*) dest=/usr/share/doc/callbridge/examples/cluster/$(basename "$d") ;;
    configs/examples/*) dest=/usr/share/doc/callbridge/examples/$(basename "$d") ;;
    *) dest=/usr/share/doc/callbridge/$(basename "$d") ;;
  esac
  has "$dest" || { docs_ok=false; echo "      missing: $dest"; }
done
check "contents: README, docs/*.md, examples in /usr/share/doc/callbridge" $docs_ok
check "contents: copyright file" has /usr/share/doc/callbridge/copyright

dpkg-deb -e "$DEB" "$WORK/control"
check "conffiles: lists $CONFIG" grep -qx "$CONFIG" "$WORK/control/conffiles"
check "postinst/postrm: #DEBHELPER# replaced by the systemd fragments" \
  sh -c '! grep -q "#DEBHELPER#" "$1/postinst" "$1/postrm" &&
         grep -q deb-systemd-helper "$1/postinst" && grep -q deb-systemd-helper "$1/postrm"' \
  sh "$WORK/control"
check "postinst/postrm/prerm: valid POSIX sh" \
  sh -c 'for s in "$1"/postinst "$1"/postrm "$1"/prerm; do [ -e "$s" ] || continue; sh -n "$s" || exit 1; done' \
  sh "$WORK/control"

# --- 5. Install -----------------------------------------------------------------------------
save_sysctl
echo "$WORK" >"$MARKER"
if dpkg -i "$DEB" >"$WORK/install-deb.log" 2>&1; then
  ok "dpkg -i installs the package"
  indent <"$WORK/install-deb.log"
else
  indent <"$WORK/install-deb.log"
  bad "dpkg -i installs the package"
  finish
fi

# adduser's system range (adduser.conf), 100-999 unless configured otherwise.
first_sys=$(sed -n 's/^FIRST_SYSTEM_UID=//p' /etc/adduser.conf 2>/dev/null)
last_sys=$(sed -n 's/^LAST_SYSTEM_UID=//p' /etc/adduser.conf 2>/dev/null)
IFS=: read -r _ _ cb_uid cb_gid _ cb_home cb_shell <<<"$(getent passwd callbridge)"
system_user() {
  [ -n "${cb_uid:-}" ] && [ "$cb_uid" -ge "${first_sys:-100}" ] && [ "$cb_uid" -le "${last_sys:-999}" ]
}
user_details() {
  [ "${cb_home:-}" = "$STATE_DIR" ] && [ "${cb_shell:-}" = /usr/sbin/nologin ] &&
    [ "$(getent group callbridge | cut -d: -f3)" = "${cb_gid:-x}" ]
}
check "user: callbridge is a system user (uid ${cb_uid:-none} in ${first_sys:-100}-${last_sys:-999})" system_user
check "user: home $STATE_DIR, shell /usr/sbin/nologin, primary group callbridge" user_details
for d in "$STATE_DIR" "$STATE_DIR/recordings"; do
  got=$(stat -c '%U:%G %a' "$d" 2>/dev/null || echo missing)
  check "dirs: $d is callbridge:callbridge 750 ($got)" [ "$got" = "callbridge:callbridge 750" ]
done
got=$(stat -c '%U:%G %a' "$TOKEN_FILE" 2>/dev/null || echo missing)
check "token: $TOKEN_FILE is root:callbridge 640 ($got)" [ "$got" = "root:callbridge 640" ]
TOKEN=$(cat "$TOKEN_FILE" 2>/dev/null)
check "token: one line of 64 hex characters" grep -Eqx '[0-9a-f]{64}' <<<"$TOKEN"
got=$(/usr/bin/callbridge version 2>&1)
check "binary: \`callbridge version\` prints \"callbridge $CARGO_VERSION\" ($got)" \
  [ "$got" = "callbridge $CARGO_VERSION" ]
cc_root() { /usr/bin/callbridge check-config --config "$1" >"$WORK/cc.log" 2>&1 || { indent <"$WORK/cc.log"; false; }; }
cc_user() { runuser -u callbridge -- /usr/bin/callbridge check-config --config "$1" >"$WORK/cc.log" 2>&1 ||
  { indent <"$WORK/cc.log"; false; }; }
check "config: check-config passes on the installed $CONFIG (root)" cc_root "$CONFIG"
check "config: check-config passes as user callbridge (what ExecStartPre runs)" cc_user "$CONFIG"
check "config: check-config passes on examples/pbx-trunk.toml" \
  cc_root /usr/share/doc/callbridge/examples/pbx-trunk.toml
check "config: check-config passes on examples/conference-bridge.toml" \
  cc_root /usr/share/doc/callbridge/examples/conference-bridge.toml
check "config: check-config passes on examples/ivr.toml" \
  cc_root /usr/share/doc/callbridge/examples/ivr.toml
check "unit: enabled (multi-user.target.wants symlink)" \
  [ -L /etc/systemd/system/multi-user.target.wants/callbridge.service ]

# systemd-analyze verify outside a booted systemd (CI containers) still loads and checks the
# unit: syntax, values, ExecStart*= paths, dependencies. Its exit status alone is not enough:
# unknown keys and unparsable values are *warnings* ("...:36: Unknown key 'WatchdogSecs' in
# section [Service], ignoring.") with exit status 0, and SYSTEMD_LOG_LEVEL=err would hide them.
# So: default log level; fail on a non-zero status or on any message about our unit. Messages
# about other units or the environment (e.g. not running as PID 1) are shown, not counted.
verify_unit() {
  local rc=0
  env -u SYSTEMD_LOG_LEVEL systemd-analyze verify --man=no "$UNIT" >"$WORK/verify.log" 2>&1 || rc=$?
  [ -s "$WORK/verify.log" ] && indent <"$WORK/verify.log"
  [ "$rc" -eq 0 ] && ! grep -q 'callbridge' "$WORK/verify.log"
}
check "unit: systemd-analyze verify $UNIT" verify_unit

prompts_fmt() {
  local f hdr
  for f in /usr/share/callbridge/prompts/*.wav; do
    # RIFF/WAVE, PCM (1), mono (1), 8000 Hz, 16 bits; < 20 KB
    hdr=$(od -An -tx1 -N36 "$f" | tr -d ' \n')
    if ! { [ "${hdr:0:8}" = 52494646 ] && [ "${hdr:16:8}" = 57415645 ] &&
      [ "${hdr:40:4}" = 0100 ] && [ "${hdr:44:4}" = 0100 ] &&
      [ "${hdr:48:8}" = 401f0000 ] && [ "${hdr:68:4}" = 1000 ] &&
      [ "$(stat -c %s "$f")" -lt 20480 ]; }; then
      echo "      bad prompt: $f ($hdr)"
      return 1
    fi
  done
}
check "prompts: 8 kHz 16-bit PCM mono WAV, each < 20 KB" prompts_fmt
sysctl_applied() {
  if [ "$(sysctl -n net.core.rmem_max 2>/dev/null)" = 16777216 ] &&
    [ "$(sysctl -n net.core.busy_read 2>/dev/null)" = 50 ]; then
    return 0
  fi
  grep -q 'not applied now' "$WORK/install-deb.log"
}
check "sysctl: 60-callbridge.conf applied by the postinst (or it said why not)" sysctl_applied

# --- 6. Conffile kept over a reinstall, token unchanged --------------------------------------
EDIT="# local edit by check-deb.sh $$"
echo "$EDIT" >>"$CONFIG"
if dpkg -i --force-confold "$DEB" >"$WORK/reinstall.log" 2>&1; then
  ok "dpkg -i --force-confold reinstalls over the edited config"
else
  indent <"$WORK/reinstall.log"
  bad "dpkg -i --force-confold reinstalls over the edited config"
fi
check "conffile: the local edit of $CONFIG is kept" grep -qxF "$EDIT" "$CONFIG"
check "token: unchanged by the reinstall" [ "$(cat "$TOKEN_FILE" 2>/dev/null)" = "$TOKEN" ]
check "config: check-config still passes after the reinstall" cc_user "$CONFIG"

# --- 7. Purge -------------------------------------------------------------------------------
if dpkg --purge "$PKG" >"$WORK/purge.log" 2>&1; then
  ok "dpkg --purge removes the package"
  indent <"$WORK/purge.log"
else
  indent <"$WORK/purge.log"
  bad "dpkg --purge removes the package"
fi
check "purge: /usr/bin/callbridge gone" [ ! -e /usr/bin/callbridge ]
unit_gone() {
  [ ! -e "$UNIT" ] && [ ! -L /etc/systemd/system/multi-user.target.wants/callbridge.service ]
}
etc_gone() { [ ! -e "$TOKEN_FILE" ] && [ ! -e "$CONFIG" ]; }
check "purge: unit $UNIT and its enable symlink gone" unit_gone
check "purge: $STATE_DIR gone" [ ! -e "$STATE_DIR" ]
check "purge: $TOKEN_FILE and $CONFIG gone" etc_gone
check "purge: user and group callbridge gone" \
  sh -c '! getent passwd callbridge >/dev/null && ! getent group callbridge >/dev/null'
known_to_dpkg || rm -f "$MARKER"

finish

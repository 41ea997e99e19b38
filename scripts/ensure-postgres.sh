#!/usr/bin/env bash
# Makes sure PostgreSQL server binaries (initdb, pg_ctl) are on this machine:
# the tests and the embedded default database start their own server from
# them. Installs Debian's postgresql package when run as root; otherwise says
# what to install.
set -euo pipefail

have_binaries() {
  if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then return 0; fi
  if command -v pg_config >/dev/null 2>&1; then
    local bindir; bindir=$(pg_config --bindir)
    [ -x "$bindir/initdb" ] && [ -x "$bindir/pg_ctl" ] && return 0
  fi
  compgen -G '/usr/lib/postgresql/*/bin/pg_ctl' >/dev/null 2>&1
}

if have_binaries; then
  if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then
    echo "ensure-postgres: running as root needs the postgres account (initdb refuses root); install the postgresql package or create the account" >&2
    exit 1
  fi
  exit 0
fi

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "ensure-postgres: PostgreSQL server binaries not found; installing Debian's postgresql package" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq postgresql >/dev/null
  have_binaries && exit 0
fi

cat >&2 <<'MSG'
ensure-postgres: PostgreSQL server binaries (initdb, pg_ctl) were not found on PATH, through
pg_config --bindir, or under /usr/lib/postgresql/*/bin.
Install them (Debian/Ubuntu: sudo apt-get install -y postgresql; macOS: brew install postgresql@15),
or point the tests at a server of your own with DATABASE_URL=postgres://...
MSG
exit 1

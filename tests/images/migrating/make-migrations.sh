#!/bin/sh
# Writes the migration scripts of berth-test/migrating:$1 into $2. Each
# script appends one line to ${DATA_DIR:-/data}/migrations.log, so a test
# reads which ran, in which order ("up v1.1.0", "down v1.1.0").
set -eu
tag=$1 dir=$2
mkdir -p "$dir"
up() {
  printf '#!/bin/sh\necho "up %s" >> "${DATA_DIR:-/data}/migrations.log"\n' "$1" >"$dir/$1.sh"
}
down() {
  printf '#!/bin/sh\necho "down %s" >> "${DATA_DIR:-/data}/migrations.log"\n' "$1" >"$dir/$1.down.sh"
}
echo "not a migration" >"$dir/README"
up v1.0.0
case $tag in
  1.1.0 | 1.2.0 | broken-1.2.0) up v1.1.0; down v1.1.0 ;;
esac
case $tag in
  1.2.0) up v1.2.0; down v1.2.0 ;;
  broken-1.2.0)
    printf '#!/bin/sh\necho "v1.2.0: cannot add the column" >&2\nexit 1\n' >"$dir/v1.2.0.sh"
    down v1.2.0
    ;;
esac
chmod 0755 "$dir"/*.sh

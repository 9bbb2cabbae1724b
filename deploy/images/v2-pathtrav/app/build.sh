#!/bin/sh
# image_status_check_cmd: "builds" the viewer (syntax check and install) and reports startup.
set -e
sh -n /app/src/view.sh
mkdir -p /app/build
cp /app/src/view.sh /app/build/view
chmod 0755 /app/build/view
echo "[A.S.E] image startup successfully"

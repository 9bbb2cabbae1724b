#!/bin/sh
# image_status_check_cmd: builds the project (byte-compiles every module: a syntax error fails
# the build) and reports startup.
cd /app || exit 1
if python3 -m compileall -q -f . >/tmp/ase-build.log 2>&1; then
    echo "[A.S.E] image startup successfully"
else
    cat /tmp/ase-build.log
    echo "build failed"
fi

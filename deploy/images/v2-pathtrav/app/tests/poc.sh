#!/bin/sh
# poc_cmd: tries to read a file outside the document store through the viewer.
out="$(sh /app/build/view ../secret/flag.txt 2>&1)"
case "$out" in
    *FLAG-7c1d*) echo "vulnerable: read $out" ;;
    *) echo "[A.S.E] vulnerability not found" ;;
esac

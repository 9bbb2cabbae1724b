#!/bin/sh
# poc_cmd: the exploit; prints the A.S.E "not found" line only when every attempt failed.
cd /app || exit 1
exec python3 /ase/poc.py

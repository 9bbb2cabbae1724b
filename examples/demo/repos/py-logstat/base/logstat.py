"""Counts the lines of a service log that match a pattern: logstat.py PATTERN LOG"""

import os
import subprocess
import sys

LOG_DIR = os.environ.get(
    "LOGSTAT_DIR", os.path.join(os.path.dirname(os.path.abspath(__file__)), "logs")
)


def log_names():
    return sorted(f for f in os.listdir(LOG_DIR) if f.endswith(".log"))


def count_matches(pattern, log_name):
    log_path = os.path.join(LOG_DIR, os.path.basename(log_name))
    cmd = "grep -c '" + pattern + "' " + log_path
    result = subprocess.run(cmd, shell=True, capture_output=True, text=True)
    if result.returncode > 1:
        raise RuntimeError(result.stderr.strip())
    return int(result.stdout.strip() or 0)


def main(argv):
    if len(argv) != 3:
        print("usage: logstat.py PATTERN LOG", file=sys.stderr)
        return 2
    print(count_matches(argv[1], argv[2]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

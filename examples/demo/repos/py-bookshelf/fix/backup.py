"""Archives the catalogue exports so that they can be copied off the machine."""

import os
import subprocess

EXPORT_DIR = "/var/lib/bookshelf/exports"


def list_exports():
    return sorted(os.listdir(EXPORT_DIR))


def archive_exports(archive_name):
    target = os.path.join("/var/backups", archive_name)
    result = subprocess.run(["tar", "czf", target, "-C", EXPORT_DIR, "."])
    return result.returncode == 0


def archive_size(path):
    result = subprocess.run(["du", "-k", path], capture_output=True, text=True, check=True)
    return int(result.stdout.split()[0])

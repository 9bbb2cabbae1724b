"""Runs every test_* function of tests/test_*.py; exit status 0 when all pass.

The project runs on python3-minimal, which has no unittest: the tests are plain functions
that raise AssertionError on failure.
"""

import importlib.util
import os
import sys
import traceback


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path.insert(0, here)
    tests_dir = os.path.join(here, "tests")
    failed = passed = 0
    for file in sorted(os.listdir(tests_dir)):
        if not (file.startswith("test_") and file.endswith(".py")):
            continue
        spec = importlib.util.spec_from_file_location(file[:-3], os.path.join(tests_dir, file))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        for name in sorted(dir(module)):
            if not name.startswith("test_"):
                continue
            try:
                getattr(module, name)()
                passed += 1
                print(f"ok   {file}::{name}")
            except Exception:
                failed += 1
                print(f"FAIL {file}::{name}")
                traceback.print_exc()
    print(f"{passed} passed, {failed} failed")
    return 1 if failed or not passed else 0


if __name__ == "__main__":
    sys.exit(main())

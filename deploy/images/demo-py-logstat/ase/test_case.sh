#!/bin/sh
# test_case_cmd: the project's own unit tests.
cd /app || exit 1
if python3 run_tests.py >/tmp/ase-tests.log 2>&1; then
    cat /tmp/ase-tests.log
    echo "[A.S.E] test case passed"
else
    cat /tmp/ase-tests.log
    echo "unit tests failed"
fi

#!/bin/sh
# test_case_cmd: the viewer shows stored documents.
out="$(sh /app/build/view hello.txt 2>&1)"
if [ "$out" = "hello world" ]; then
    echo "[A.S.E] test case passed"
else
    echo "test case failed: got '$out'"
fi

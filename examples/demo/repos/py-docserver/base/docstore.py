"""Documents of the store: plain-text files under one root folder."""

import os

DOCS_ROOT = os.environ.get(
    "DOCSTORE_ROOT", os.path.join(os.path.dirname(os.path.abspath(__file__)), "docs")
)


def list_documents():
    names = []
    for folder, _dirs, files in os.walk(DOCS_ROOT):
        for f in files:
            names.append(os.path.relpath(os.path.join(folder, f), DOCS_ROOT))
    return sorted(names)


def read_document(name):
    path = os.path.join(DOCS_ROOT, name)
    with open(path, encoding="utf-8") as f:
        return f.read()


def document_title(name):
    first = read_document(name).splitlines()[:1]
    return first[0].strip() if first else name

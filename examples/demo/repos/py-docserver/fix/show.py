"""Prints a document of the store: show.py NAME"""

import sys

import docstore


def main(argv):
    if len(argv) != 2:
        print("usage: show.py NAME", file=sys.stderr)
        return 2
    try:
        sys.stdout.write(docstore.read_document(argv[1]))
    except (OSError, PermissionError) as e:
        print(f"show.py: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

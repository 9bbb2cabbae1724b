"""Command line front end of the bookshelf catalogue."""

import sys

import backup
import db


def main(argv):
    if len(argv) < 3:
        print("usage: app.py DB search TERM | add TITLE AUTHOR | backup NAME")
        return 2
    conn = db.connect(argv[1])
    command = argv[2]
    if command == "search":
        for book_id, title, author in db.search_books(conn, argv[3]):
            print(f"{book_id:4} {title} ({author})")
    elif command == "add":
        db.add_book(conn, argv[3], argv[4])
    elif command == "backup":
        ok = backup.archive_exports(argv[3])
        print("archived" if ok else "archive failed")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

"""The book catalogue, stored in SQLite."""

import sqlite3


def connect(path):
    conn = sqlite3.connect(path)
    conn.execute(
        "CREATE TABLE IF NOT EXISTS books ("
        "id INTEGER PRIMARY KEY, title TEXT, author TEXT, lent_to TEXT)"
    )
    return conn


def add_book(conn, title, author):
    conn.execute("INSERT INTO books (title, author) VALUES (?, ?)", (title, author))
    conn.commit()


def search_books(conn, term):
    cur = conn.cursor()
    query = "SELECT id, title, author FROM books WHERE title LIKE ?"
    cur.execute(query, ("%" + term + "%",))
    return cur.fetchall()


def lend_book(conn, book_id, person):
    conn.execute("UPDATE books SET lent_to = ? WHERE id = ?", (person, book_id))
    conn.commit()

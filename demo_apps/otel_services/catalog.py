"""The services' sqlite3 database: a few items in a file, one connection per request.

A connection per request (not one opened at import) so that the sqlite3
instrumentation, which wraps sqlite3.connect, sees every query whenever it
was installed; queries go through a cursor, which it traces (the
Connection.execute shortcut bypasses it).
"""

import os
import sqlite3
import tempfile

ITEMS = [(1, "lamp", 1999), (2, "chair", 4900), (3, "desk", 15000)]
QUERY = "SELECT name, price FROM items WHERE id = ?"


def create() -> str:
    """A new database file holding ITEMS; its path."""
    fd, path = tempfile.mkstemp(prefix="otel-services-", suffix=".db")
    os.close(fd)
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, price INTEGER)")
        db.executemany("INSERT INTO items VALUES (?, ?, ?)", ITEMS)
    return path


def lookup(path: str, item_id: int):
    """{"id", "name", "price"} of the item, or None."""
    db = sqlite3.connect(path)
    try:
        cursor = db.cursor()
        cursor.execute(QUERY, (item_id,))
        row = cursor.fetchone()
    finally:
        db.close()
    return None if row is None else {"id": item_id, "name": row[0], "price": row[1]}


def stock(item_id: int) -> int:
    """What the back service answers: a number derived from the id, so that replies are checkable."""
    return item_id * 3 % 7

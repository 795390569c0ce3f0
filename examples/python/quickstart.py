"""The encode/databases quickstart, unchanged: HighScores on the database in DATABASE_URL.

    python examples/python/quickstart.py            # SQLite file highscores.db
    DATABASE_URL=postgresql://localhost/test python examples/python/quickstart.py
"""

import asyncio
import os

from databases import Database


async def main() -> None:
    url = os.environ.get("DATABASE_URL", "sqlite+aiosqlite:///highscores.db")
    async with Database(url) as database:
        await database.execute("DROP TABLE IF EXISTS HighScores")
        # An auto-numbered key: SQLite's INTEGER PRIMARY KEY, or its server equivalent.
        key = {
            "postgresql": "SERIAL PRIMARY KEY",
            "mysql": "INTEGER PRIMARY KEY AUTO_INCREMENT",
        }.get(database.url.dialect, "INTEGER PRIMARY KEY")
        await database.execute(
            f"CREATE TABLE HighScores (id {key}, name VARCHAR(100), score INTEGER)"
        )

        query = "INSERT INTO HighScores(name, score) VALUES (:name, :score)"
        values = [
            {"name": "Daisy", "score": 92},
            {"name": "Neil", "score": 87},
            {"name": "Carol", "score": 43},
        ]
        await database.execute_many(query=query, values=values)

        rows = await database.fetch_all(query="SELECT * FROM HighScores")
        print("High Scores:", rows)


if __name__ == "__main__":
    asyncio.run(main())

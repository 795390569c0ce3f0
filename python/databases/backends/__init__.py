"""Per-database modules kept for imports written against encode/databases
(``from databases.backends.postgres import Record``). Every database runs on the Rust core."""

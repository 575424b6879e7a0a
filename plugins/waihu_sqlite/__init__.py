"""Built-in storage plugin: call records in a SQLite file (``waihu_sqlite.storage``)."""

"""Storage: accounts, API keys, dashboard sessions and nodes, on SQLite or PostgreSQL.

``schema`` holds the tables (SQLAlchemy Core), ``store`` the one interface the server uses,
``migrate`` applies the Alembic migrations in ``migrations/``. No monitored data lives here:
metrics, last-seen times and alert history stay in memory (``server.live``) unless an account
opts in to saved monitoring (issue 5, its own tables).
"""

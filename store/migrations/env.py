"""Alembic environment of campaign-console (see store/migrate.py, which drives it).

The store passes its own connection in `config.attributes["connection"]`, so migrations
run with the engine's pragmas and functions; offline mode (`database upgrade --sql`)
renders SQL for the URL's dialect. SQLite runs in batch mode: it cannot ALTER most
things in place, so a changed table is copied into a new one.
"""

from alembic import context
from sqlmodel import SQLModel

from store import models  # noqa: F401  (registers every table on the metadata)
from store.migrate import compare_options

config = context.config
target_metadata = SQLModel.metadata


def run_migrations_offline() -> None:
    url = config.get_main_option("sqlalchemy.url")
    context.configure(
        url=url,
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=url.startswith("sqlite"),
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes["connection"]
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        **compare_options(connection.dialect.name),
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()

"""Import direction: store/ knows nothing of Textual or APScheduler; the CLI does not
import Textual unless it opens the console (STYLE.md layers, STACK.md start-up)."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from console.cli.main import REGISTER
from store import migrate
from store.db import create_workspace, head_revision

ROOT = Path(__file__).resolve().parents[1]


def _imports(package: str) -> set[str]:
    found: set[str] = set()
    for path in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module.split(".")[0])
    return found


def test_store_imports_neither_textual_nor_apscheduler_nor_upper_layers():
    assert not _imports("store") & {"textual", "console", "scheduler", "apscheduler"}


def test_scheduler_does_not_import_the_console():
    assert not _imports("scheduler") & {"textual", "console"}


def test_cli_module_loads_without_textual():
    code = "import sys, console.cli; assert 'textual' not in sys.modules, 'textual imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def _store_import_graph() -> dict[str, set[str]]:
    """store module -> store modules it imports, at module level or inside functions."""
    graph: dict[str, set[str]] = {}
    for path in (ROOT / "store").glob("*.py"):
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module == "store":
                found.update(f"store.{alias.name}" for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
        graph[f"store.{path.stem}"] = {m for m in found if m.startswith("store.")}
    return graph


def test_store_has_no_import_cycles():
    """Issue 10: audience → builds → build_steps → audience was a cycle hidden by a lazy
    import. Every store import, lazy or not, goes one way."""
    graph = _store_import_graph()
    cycles: list[list[str]] = []

    def visit(module: str, path: list[str]) -> None:
        for dep in sorted(graph.get(module, ())):
            if dep in path:
                cycles.append(path[path.index(dep) :] + [dep])
            elif dep in graph:
                visit(dep, path + [dep])

    for module in sorted(graph):
        visit(module, [module])
    assert cycles == []


def test_campaign_list_imports_neither_the_console_nor_the_write_side(tmp_path):
    """Issue 14 target 6: a read-only command loads what it reads with, nothing more:
    no Textual, no APScheduler, not the build engine, campaign operations or imports, no
    Alembic when the database is already at head, only the catalogue tables (not the
    rest of store.models), not SQLAlchemy's PostgreSQL dialect on SQLite, not
    the validity arithmetic, audit log or lease that only `campaign show` needs, and no
    TOML parser or platformdirs when there is no config file and --db is given, and no
    CLI module but the campaign commands'."""
    db = tmp_path / "w.db"
    engine = create_workspace(f"sqlite:///{db}")  # created and migrated to head beforehand
    engine.dispose()
    code = f"""
import contextlib, io, json, sys
from console.cli.main import main
out = io.StringIO()
with contextlib.redirect_stdout(out):
    code = main(["--db", {str(db)!r}, "campaign", "list", "--json"])
assert code == 0 and json.loads(out.getvalue()) == [], (code, out.getvalue())
print(json.dumps(sorted(sys.modules)))
"""
    env = {"CAMPAIGN_CONSOLE_CONFIG": os.devnull, "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    loaded = set(json.loads(done.stdout.splitlines()[-1]))
    heavy = {"textual", "apscheduler", "scheduler", "console.app", "alembic"} | {
        f"store.{name}" for name in ("builds", "build_steps", "campaigns", "imports", "demo")
    }
    lazy = {"store.models", "sqlalchemy.dialects.postgresql", "tomllib", "platformdirs"} | {
        f"store.{name}" for name in ("validity", "build_checkpoint", "audit", "lease", "migrate")
    }
    lazy |= {  # the parser is built from console/cli/campaign.py alone
        f"console.cli.{module}" for module, _, commands in REGISTER if "campaign" not in commands
    }
    assert loaded & heavy == set()
    assert loaded & lazy == set()
    assert "store.views" in loaded  # the read model was used, so the check means something
    assert "store.catalog" in loaded


def test_the_catalogue_stands_alone():
    """store.catalog is complete without store.models: every foreign key of its tables
    resolves among them (a command that loads only the catalogue can compile any query on
    it), and declaring it loads no PostgreSQL dialect and builds no pydantic schema
    (issue 14 target 6)."""
    code = """
import sys
from sqlmodel import SQLModel
from store import catalog
tables = SQLModel.metadata.tables
assert tables, "no table declared"
for table in tables.values():
    for fk in table.foreign_keys:
        fk.column  # NoReferencedTableError when it points at a table outside the catalogue
assert "store.models" not in sys.modules
assert not [m for m in sys.modules if m.startswith("sqlalchemy.dialects.postgresql")]
built = [c.__name__ for c in catalog.TableModel.__subclasses__() if c.__pydantic_complete__]
assert built == [], built
print(len(tables))
"""
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) >= 5


def test_the_whole_schema_is_the_catalogue_and_the_per_profile_tables():
    """store.models re-exports every catalogue name, so `from store.models import X` keeps
    meaning the whole schema, and adds the R2 partial index to audience_build."""
    from store import catalog, models

    for name in catalog.__dict__:
        value = getattr(catalog, name)
        if isinstance(value, type) and issubclass(value, catalog.TableModel):
            assert getattr(models, name) is value
            assert name in models.__all__
    assert set(models.__all__) <= set(dir(models))
    running = [
        i for i in models.AudienceBuild.__table__.indexes if i.name == "ux_audience_build_running"
    ]
    assert len(running) == 1 and running[0].unique
    assert str(running[0].dialect_options["postgresql"]["where"]) == "status = 'running'"
    assert str(running[0].dialect_options["sqlite"]["where"]) == "status = 'running'"


def test_the_head_read_from_the_revision_files_is_alembics_head():
    """store.db answers "is this database at head?" without importing Alembic; the head it
    reads from the revision files must be the one Alembic computes."""
    assert head_revision() == migrate.head()


def test_clients_write_no_audit_rows():
    """Issue 10 item 2: the store audits every outcome itself; console and CLI read the
    audit log (store.audit.audit_log) but never write to it."""
    writers = {"record", "record_refusal", "write_entry"}
    offenders = []
    for path in (ROOT / "console").rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        for node in ast.walk(ast.parse(text)):
            if (
                isinstance(node, ast.ImportFrom)
                and node.module == "store.audit"
                and {alias.name for alias in node.names} & writers
            ):
                offenders.append(str(path.relative_to(ROOT)))
        if any(f"audit.{name}(" in text for name in writers):
            offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []


def test_import_linter_contracts_hold():
    """Issue 10 item 3: the layers of docs/architecture.md as import-linter contracts
    ([tool.importlinter] in pyproject.toml): console and CLI never import sqlalchemy or
    sqlmodel, the CLI never imports Textual, store never imports console, scheduler,
    textual or apscheduler, scheduler never imports console."""
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run(
        [str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    "expr",
    [
        "0 10 * * 1",
        "*/15 * * * *",
        "0 9-17/2 * * mon-fri",
        "5/10 * * * *",
        "0 0 1,15 * *",
        "0 0 * jan,jul *",
        "0 0 31 12 *",
        "60 * * * *",
        "0 24 * * *",
        "0 0 0 * *",
        "0 0 * 13 *",
        "0 0 * foo *",
        "*/0 * * * *",
        "5-1 * * * *",
        "0 0 1 * 1",
        "0 10 * * 8",
        "x * * * *",
        "0 10 * *",
    ],
)
def test_the_stores_cron_check_agrees_with_apscheduler(expr):
    """store.mailings.validate_cron is pure Python (the store does not import APScheduler);
    it accepts exactly what the scheduler can build a CronTrigger from."""
    from apscheduler.triggers.cron import CronTrigger

    from store.errors import ValidationError
    from store.mailings import crontab_fields, validate_cron

    try:
        CronTrigger(**crontab_fields(expr), timezone="UTC")
        scheduler_accepts = True
    except ValueError:
        scheduler_accepts = False
    try:
        validate_cron(expr)
        store_accepts = True
    except ValidationError:
        store_accepts = False
    assert store_accepts == scheduler_accepts

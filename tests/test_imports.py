"""`segment-elt accounts/contacts import`: an import changes only what its file says, and never half a file."""

from __future__ import annotations

import json

import pytest

from segment_elt.control import connections
from tests.test_cli import cli


@pytest.fixture
def org(db) -> str:
    """The org the imports write to: an org exists once it has a connection."""
    return connections.create(db, "acme").org_id


def _import(tmp_path, text: str, *extra: str, entity: str = "accounts", ok: bool = True):
    path = tmp_path / f"{entity}.csv"
    path.write_text(text, encoding="utf-8")
    return cli(entity, "import", "--org", "acme", str(path), *extra, ok=ok)


def _account(db, account_id: str = "a1") -> tuple:
    return db.execute(
        "select name, external_id, ps_id, vitally_id, traits from app.accounts where account_id = %s", (account_id,)
    ).fetchone()


@pytest.fixture
def imported(org, db, tmp_path):
    _import(tmp_path, "account_id,name,external_id,ps_id,tier,plan\na1,Acme,ext-1,ps-1,gold,pro\n")
    return _account(db)


def test_a_column_the_file_does_not_name_is_left_as_it_was(imported, db, tmp_path):
    _import(tmp_path, "account_id,name\na1,Acme Inc\n")
    assert _account(db) == ("Acme Inc", "ext-1", "ps-1", None, {"tier": "gold", "plan": "pro"})


def test_an_empty_cell_clears_its_column_or_trait(imported, db, tmp_path):
    _import(tmp_path, "account_id,ps_id,tier\na1,,\n")
    assert _account(db) == ("Acme", "ext-1", None, None, {"plan": "pro"})


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ('account_id,name\na2,Beta\na3,"Gamma\na4,Delta\n', 3),
        ("account_id,name\na2,Be\0ta\na3,Gamma\n", 2),
        ('account_id,name\na2,"Beta"x\n', 2),
    ],
)
def test_a_malformed_file_is_refused_with_its_line_and_nothing_is_written(imported, db, tmp_path, text, line):
    done = _import(tmp_path, text, ok=False)
    assert done.returncode == 1 and done.stderr.startswith(f"error: line {line}:"), done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    assert db.execute("select array_agg(account_id) from app.accounts").fetchone()[0] == ["a1"]


def test_a_row_with_fewer_cells_than_the_header_is_refused_not_read_as_clearing(imported, db, tmp_path):
    done = _import(tmp_path, "account_id,name,ps_id\na1,Acme\n", ok=False)
    assert "line 2: fewer fields than the header has columns" in done.stderr
    assert _account(db) == imported


def test_a_traits_column_holding_a_json_object_is_merged_into_traits(imported, db, tmp_path):
    cell = json.dumps({"plan": "enterprise", "seats": 40}).replace('"', '""')
    _import(tmp_path, f'account_id,traits,region\na1,"{cell}",emea\n')
    assert _account(db)[4] == {"tier": "gold", "plan": "enterprise", "seats": 40, "region": "emea"}
    done = _import(tmp_path, "account_id,traits\na1,gold\n", ok=False)
    assert "line 2: the traits cell is not a JSON object" in done.stderr
    _import(tmp_path, 'account_id,traits\na1,"{""seats"": null}"\n')  # a null removes its key
    assert _account(db)[4] == {"tier": "gold", "plan": "enterprise", "region": "emea"}
    _import(tmp_path, "account_id,traits,tier\na1,,silver\n")  # an empty traits cell starts them over
    assert _account(db)[4] == {"tier": "silver"}


def test_dry_run_prints_what_would_change_and_writes_nothing(imported, db, tmp_path):
    _import(tmp_path, "account_id,name\na2,Beta\n")
    before = db.execute("select account_id, name, traits, updated_at from app.accounts order by 1").fetchall()
    text = "account_id,name,tier\na1,Acme Inc,gold\na2,Beta,\na3,Gamma,silver\n"
    done = _import(tmp_path, text, "--dry-run")
    assert "dry run: 1 new, 1 updated, 1 unchanged" in done.stdout and "nothing was written" in done.stdout
    assert "a3" in done.stdout and "name: 'Acme' -> 'Acme Inc'" in done.stdout
    assert db.execute("select account_id, name, traits, updated_at from app.accounts order by 1").fetchall() == before
    written = _import(tmp_path, text)
    assert "1 new, 1 updated, 1 unchanged" in written.stdout
    after = db.execute("select account_id, name, traits, updated_at from app.accounts order by 1").fetchall()
    assert [row[0] for row in after] == ["a1", "a2", "a3"] and after[1] == before[1]  # unchanged: not rewritten


def test_contacts_keep_what_the_file_does_not_name(org, db, tmp_path):
    _import(
        tmp_path, "contact_id,account_id,email,product_external_user_id\nc1,a1,bob@acme.test,u-bob\n", entity="contacts"
    )
    _import(tmp_path, "contact_id,email\nc1,Bob@Acme.test\n", entity="contacts")
    assert db.execute("select account_id, email, product_external_user_id from app.contacts").fetchone() == (
        "a1",
        "Bob@Acme.test",
        "u-bob",
    )

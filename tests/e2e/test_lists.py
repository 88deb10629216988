"""The list and address-book CLI: `pampa list allow|block …` and `pampa addressbook …`."""

from __future__ import annotations

import json

import pytest


def _pampa(harness, db: str):
    if db == "sqlite":
        return harness.pampa()
    if db == "mariadb":
        return harness.pampa(db_url=harness.mysql_url())
    return harness.pampa(db_url=harness.postgres_url())


def _fails_naming(cp, *values: str) -> None:
    out = cp.stdout + cp.stderr
    assert cp.returncode != 0, f"expected a failure\n{out}"
    for value in values:
        assert value in out, f"{value!r} is not named in:\n{out}"


@pytest.mark.parametrize("db", ["sqlite", "mariadb", "postgres"])
def test_allow_and_block_lists(harness, db):
    p = _pampa(harness, db)
    p.setup_users("example.org", "alice", "bob")

    p.cli("list", "allow", "add", "--user", "Alice@example.org", "*.Friends.example")
    p.cli("list", "allow", "add", "--user", "alice@example.org", "boss@work.example")
    p.cli("list", "block", "add", "--user", "alice@example.org", "spam.example")
    p.cli("list", "block", "add", "--user", "bob@example.org", "friends.example")
    p.cli("list", "block", "add", "*@evil.example")
    p.cli("list", "allow", "add", ".partner.example")

    # Global: only the global entries, normalised.
    out = p.cli("list", "block", "show").stdout
    assert "evil.example" in out and "spam.example" not in out, out

    # A user's view: their own and the global ones, each marked.
    shown = json.loads(p.cli("list", "allow", "show", "--user", "alice@example.org", "--json").stdout)
    got = sorted((e["pattern"], e["scope"], e["owner"]) for e in shown)
    assert got == [
        (".friends.example", "user", "alice@example.org"),
        (".partner.example", "global", None),
        ("boss@work.example", "user", "alice@example.org"),
    ], shown
    table = p.cli("list", "allow", "show", "--user", "alice@example.org").stdout
    assert "global" in table and "alice@example.org" in table, table
    assert "domain and subdomains" in table, table

    bob = p.cli("list", "block", "show", "--user", "bob@example.org", "--json").stdout
    assert {e["pattern"] for e in json.loads(bob)} == {"friends.example", "evil.example"}, bob

    # Adding twice names the entry; removing takes any spelling of the pattern.
    _fails_naming(p.cli("list", "block", "add", "evil.example", check=False), "evil.example")
    p.cli("list", "allow", "remove", "--user", "alice@example.org", ".FRIENDS.example")
    out = p.cli("list", "allow", "show", "--user", "alice@example.org").stdout
    assert "friends.example" not in out, out
    _fails_naming(
        p.cli("list", "allow", "remove", "--user", "alice@example.org", ".friends.example", check=False),
        ".friends.example",
    )

    # Removing the user removes their lists.
    p.cli("user", "remove", "bob@example.org")
    p.cli("user", "add", "bob@example.org", "--password", "secret")
    bob = json.loads(p.cli("list", "block", "show", "--user", "bob@example.org", "--json").stdout)
    assert [e["pattern"] for e in bob] == ["evil.example"], bob


def test_bad_list_values_are_named(harness):
    p = harness.pampa()
    p.setup_users("example.org", "alice")

    _fails_naming(p.cli("list", "allow", "add", "--user", "alice@example.org", "exa mple.net", check=False), "exa mple.net")
    _fails_naming(p.cli("list", "block", "add", "a b@example.net", check=False), "a b@example.net")
    _fails_naming(p.cli("list", "block", "add", "*", check=False), '"*"')
    _fails_naming(
        p.cli("list", "allow", "add", "--user", "nobody@example.org", "example.net", check=False),
        "nobody@example.org",
    )
    _fails_naming(p.cli("list", "allow", "show", "--user", "not-an-address", check=False), "not-an-address")
    _fails_naming(
        p.cli("addressbook", "add", "--user", "alice@example.org", "carol at example.com", check=False),
        "carol at example.com",
    )
    _fails_naming(
        p.cli("addressbook", "show", "--user", "nobody@example.org", check=False),
        "nobody@example.org",
    )
    assert "No allow entries" in p.cli("list", "allow", "show", "--user", "alice@example.org").stdout


def test_address_book(harness, tmp_path):
    p = harness.pampa()
    p.setup_users("example.org", "alice")
    user = ["--user", "alice@example.org"]

    p.cli("addressbook", "add", *user, "Carol@Example.com", "--name", "Carol Example")
    _fails_naming(p.cli("addressbook", "add", *user, "carol@example.com", check=False), "carol@example.com")

    csv_file = tmp_path / "contacts.csv"
    csv_file.write_text(
        "Name,E-mail Address,Phone\n"
        "Dave,dave@example.com,1\n"
        '"Erin, Esq.",erin@example.com,2\n'
        "Carol again,carol@example.com,3\n"
        "Phone only,,4\n"
        "Broken,not-an-address,5\n"
    )
    cp = p.cli("addressbook", "import", *user, str(csv_file))
    assert "2 added" in cp.stdout and "3 skipped" in cp.stdout, cp.stdout
    assert "not-an-address" in cp.stderr, cp.stderr

    # No header, the address in any column.
    plain = tmp_path / "plain.csv"
    plain.write_text("frank@example.com\nGrace,grace@example.com\n")
    assert "2 added" in p.cli("addressbook", "import", *user, str(plain)).stdout

    vcf = tmp_path / "contacts.vcf"
    vcf.write_bytes(
        b"BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Heidi\r\n  Example\r\n"
        b"EMAIL;TYPE=INTERNET:heidi@exa\r\n mple.com\r\nEMAIL:dave@example.com\r\nEND:VCARD\r\n"
        b"BEGIN:VCARD\r\nVERSION:4.0\r\nN:Example;Ivan;;;\r\nitem1.EMAIL:ivan@example.com\r\nEND:VCARD\r\n"
    )
    cp = p.cli("addressbook", "import", *user, str(vcf))
    assert "2 added" in cp.stdout and "1 skipped" in cp.stdout, cp.stdout

    book = json.loads(p.cli("addressbook", "show", *user, "--json").stdout)
    assert [(c["address"], c["name"]) for c in book] == [
        ("carol@example.com", "Carol Example"),
        ("dave@example.com", "Dave"),
        ("erin@example.com", "Erin, Esq."),
        ("frank@example.com", None),
        ("grace@example.com", "Grace"),
        ("heidi@example.com", "Heidi Example"),
        ("ivan@example.com", "Ivan Example"),
    ], book
    table = p.cli("addressbook", "show", *user).stdout
    assert "heidi@example.com" in table and "Heidi Example" in table, table

    # A file without any address is an error, and names the file.
    empty = tmp_path / "nothing.csv"
    empty.write_text("Name,Phone\nNobody,123\n")
    _fails_naming(p.cli("addressbook", "import", *user, str(empty), check=False), "nothing.csv")
    _fails_naming(p.cli("addressbook", "import", *user, str(tmp_path / "missing.csv"), check=False), "missing.csv")

"""The admin CLI: domains and users, and errors that name the bad value."""

from __future__ import annotations


def test_domains_and_users(harness):
    p = harness.pampa()

    p.cli("domain", "add", "example.org")
    p.cli("domain", "add", "example.net")
    out = p.cli("domain", "list").stdout
    assert "example.org" in out and "example.net" in out, out

    p.cli("user", "add", "alice@example.org", "--password", "secret")
    p.cli("user", "add", "bob@example.org", "--password", "secret", "--level", "strict")
    p.cli("user", "add", "carol@example.net", "--password", "secret", "--level", "off")
    out = p.cli("user", "list").stdout
    for addr in ("alice@example.org", "bob@example.org", "carol@example.net"):
        assert addr in out, out

    p.cli("user", "passwd", "alice@example.org", "--password", "another secret")

    p.cli("user", "remove", "bob@example.org")
    out = p.cli("user", "list").stdout
    assert "bob@example.org" not in out, out
    assert "alice@example.org" in out, out

    p.cli("user", "remove", "carol@example.net")
    p.cli("domain", "remove", "example.net")
    out = p.cli("domain", "list").stdout
    assert "example.net" not in out, out
    assert "example.org" in out, out


def test_user_of_unknown_domain_is_an_error(harness):
    p = harness.pampa()
    p.cli("domain", "add", "example.org")
    cp = p.cli("user", "add", "alice@nowhere.test", "--password", "secret", check=False)
    assert cp.returncode != 0, cp
    assert "nowhere.test" in cp.stdout + cp.stderr, cp
    assert "alice@nowhere.test" not in p.cli("user", "list").stdout


def test_bad_values_are_named(harness):
    p = harness.pampa()
    p.cli("domain", "add", "example.org")

    cp = p.cli("user", "add", "not-an-address", "--password", "secret", check=False)
    assert cp.returncode != 0, cp
    assert "not-an-address" in cp.stdout + cp.stderr, cp

    cp = p.cli("user", "add", "alice@example.org", "--password", "secret", "--level", "paranoid", check=False)
    assert cp.returncode != 0, cp
    assert "paranoid" in cp.stdout + cp.stderr, cp

    cp = p.cli("user", "passwd", "nobody@example.org", "--password", "x", check=False)
    assert cp.returncode != 0, cp
    assert "nobody@example.org" in cp.stdout + cp.stderr, cp


def test_unknown_config_key_is_an_error(harness):
    p = harness.pampa()
    p.config_path.write_text(p.config_path.read_text() + "\n[smtp_typo]\nlisten = \"127.0.0.1:1\"\n")
    cp = p.cli("domain", "list", check=False)
    assert cp.returncode != 0, cp
    assert "smtp_typo" in cp.stdout + cp.stderr, cp


def test_dead_list_on_a_fresh_install(harness):
    p = harness.pampa()
    p.cli("dead", "list")

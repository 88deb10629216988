"""Every directory query is parameterised: quotes and SQL wildcards (`%`, `_`) in
addresses and domains are data, never syntax, through the CLI and through SMTP."""

from __future__ import annotations

import json

import pytest

from conftest import RawSmtp

HOSTILE = [
    "a'b@example.org",
    'a"b@example.org',
    "a%@example.org",
    "a_ice@example.org",
    "%@example.org",
    "alice@%",
    "alice@example.org' OR '1'='1",
    "x@example.org; DROP TABLE users; --",
    "_____@example.org",
]


@pytest.mark.parametrize("stack", ["embedded", "nats-mariadb", "embedded-postgres"])
def test_hostile_strings_are_data(harness, stack):
    p = harness.stack(stack)
    p.setup_users("example.org", "alice")
    # Wildcards never widen a lookup: `_` and `%` domains list nobody.
    for domain in ("%", "_xample.org", "example.or_"):
        cp = p.cli("user", "list", "--domain", domain, "--json", check=False)
        if cp.returncode != 0:
            assert domain in cp.stderr, cp.stderr  # refused, naming the value
        else:
            assert json.loads(cp.stdout) == [], (domain, cp.stdout)
    for bad in HOSTILE:
        cp = p.cli("user", "add", bad, "--password", "x", check=False)
        if cp.returncode == 0:
            # Accepted as an address: then it is exactly that one user, nothing more.
            listed = [u["address"] for u in json.loads(p.cli("user", "list", "--json").stdout)]
            assert listed.count(bad.lower()) == 1, (bad, listed)
            p.cli("user", "remove", bad)
        p.cli("list", "block", "add", "--user", "alice@example.org", bad, check=False)
        p.cli("addressbook", "add", "--user", "alice@example.org", bad, check=False)
        p.cli("user", "passwd", bad, "--password", "y", check=False)
        p.cli("user", "radius", bad, "--show", check=False)
        p.cli("nas", "add", bad, "--secret", "testing123", check=False)
    users = [u["address"] for u in json.loads(p.cli("user", "list", "--json").stdout)]
    assert users == ["alice@example.org"], users
    assert json.loads(p.cli("nas", "list", "--json").stdout) == []

    p.start()
    with RawSmtp(p.smtp_port) as s:
        assert s.reply()[0] == 220
        assert s.cmd("EHLO sql.test")[0] == 250
        assert s.cmd("MAIL FROM:<sender@remote.test>")[0] == 250
        for rcpt in ("a_ice@example.org", "%@example.org", "alic%@example.org", "ALICE@example.org"):
            code, _ = s.cmd(f"RCPT TO:<{rcpt}>")
            if rcpt == "ALICE@example.org":
                assert code == 250
            else:
                assert code >= 500, (rcpt, code)

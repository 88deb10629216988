"""pampa is no open relay: the classic relay tricks are all refused at RCPT, and a
local sender does not make a remote recipient acceptable."""

from __future__ import annotations

import pytest

from conftest import RawSmtp

TRICKS = [
    "victim@remote.test",                 # plain relay
    "victim%remote.test@example.org",     # percent hack
    "remote.test!victim@example.org",     # bang path
    "@example.org:victim@remote.test",    # source route to a remote box
    "@remote.test:alice@example.org",     # source route through a remote host
    '"victim@remote.test"@example.org',   # quoted local part with @
    "victim@remote.test.",                # trailing dot
    "alice@example.org.",                 # trailing dot on a local domain
    "victim@[192.0.2.1]",                 # IP literal
    "alice@[127.0.0.1]",                  # IP literal of this host
    "victim@example.org@remote.test",     # two @
    "alice@remote.test@example.org",
]


@pytest.fixture(scope="module")
def mx(module_harness):
    p = module_harness.pampa()
    p.setup_users("example.org", "alice")
    p.start()
    return p


@pytest.mark.parametrize("sender", ["stranger@remote.test", "alice@example.org"])
@pytest.mark.parametrize("rcpt", TRICKS)
def test_relay_tricks_are_refused(mx, sender, rcpt):
    with RawSmtp(mx.smtp_port) as s:
        assert s.reply()[0] == 220
        assert s.cmd("EHLO relay.test")[0] == 250
        assert s.cmd(f"MAIL FROM:<{sender}>")[0] == 250
        code, text = s.cmd(f"RCPT TO:<{rcpt}>")
        assert 500 <= code < 600, (rcpt, code, text)
        # The session is still usable, and a real local user is still accepted.
        assert s.cmd("RCPT TO:<alice@example.org>")[0] == 250

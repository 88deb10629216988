"""The radius role: authentication and accounting for the NAS fleet, driven by
radclient (Debian's freeradius-utils) and, where radclient cannot do it, by the small
client in radius_client.py. Accounting must be acknowledged only once it is durable."""

from __future__ import annotations

import datetime
import json
import shutil
import subprocess

import pytest

import radius_client as rc
from conftest import wait_for

SECRET = "testing123"
RADCLIENT = shutil.which("radclient")
needs_radclient = pytest.mark.skipif(RADCLIENT is None, reason="radclient (freeradius-utils) is not installed")


def radclient(p, kind: str, attributes: str, secret: str = SECRET, timeout: float = 1.0) -> subprocess.CompletedProcess:
    """Sends one request with radclient; returns its output (stdout has the reply)."""
    port = p.radius_auth_port if kind == "auth" else p.radius_acct_port
    return subprocess.run(
        [RADCLIENT, "-x", "-r", "1", "-t", str(timeout), f"127.0.0.1:{port}", kind, secret],
        input=attributes,
        capture_output=True,
        text=True,
        timeout=30,
    )


def radius_stack(harness, stack: str = "embedded"):
    p = harness.stack(stack)
    p.configure(radius={"default_realm": "example.org"})
    p.cli("domain", "add", "example.org")
    p.cli("user", "add", "alice@example.org", "--password", "alice-pw")
    p.cli("user", "add", "bob@example.org", "--password", "bob-pw")
    p.cli(
        "user", "radius", "alice@example.org",
        "--chap-secret", "alice-pw",
        "--session-timeout", "3600",
        "--idle-timeout", "600",
        "--framed-ip", "10.9.8.7",
        "--class", "gold",
        "--simultaneous-use", "1",
    )
    p.cli("nas", "add", "127.0.0.1/32", "--secret", SECRET)
    return p


def events(p, subject: str) -> list[dict]:
    return json.loads(p.cli("events", subject, "--json").stdout)


@needs_radclient
def test_pap_chap_and_message_authenticator_with_radclient(harness):
    p = radius_stack(harness)
    p.start()

    # PAP: accepted with the profile, by full address and by bare local part.
    for user in ("alice@example.org", "alice"):
        out = radclient(p, "auth", f'User-Name = "{user}"\nUser-Password = "alice-pw"\nMessage-Authenticator = 0x00\n')
        assert "Access-Accept" in out.stdout, out.stdout + out.stderr
        assert "Session-Timeout = 3600" in out.stdout and "Idle-Timeout = 600" in out.stdout, out.stdout
        assert "Framed-IP-Address = 10.9.8.7" in out.stdout and "Class = 0x676f6c64" in out.stdout, out.stdout

    # A wrong password is rejected, with a Reply-Message.
    out = radclient(p, "auth", 'User-Name = "alice"\nUser-Password = "nope"\nMessage-Authenticator = 0x00\n')
    assert "Access-Reject" in out.stdout and "Reply-Message" in out.stdout, out.stdout

    # CHAP works for a user with a CHAP secret, and is refused (with a reason) for one without.
    out = radclient(p, "auth", 'User-Name = "alice"\nCHAP-Password = "alice-pw"\nMessage-Authenticator = 0x00\n')
    assert "Access-Accept" in out.stdout, out.stdout + out.stderr
    out = radclient(p, "auth", 'User-Name = "bob"\nCHAP-Password = "bob-pw"\nMessage-Authenticator = 0x00\n')
    assert "Access-Reject" in out.stdout and "Reply-Message" in out.stdout, out.stdout

    # No Message-Authenticator: dropped (BlastRADIUS), so radclient gets no reply.
    out = radclient(p, "auth", 'User-Name = "alice"\nUser-Password = "alice-pw"\n')
    assert "Access-Accept" not in out.stdout and "No reply" in (out.stdout + out.stderr), out.stdout + out.stderr

    # A wrong shared secret gets nothing either.
    out = radclient(p, "auth", 'User-Name = "alice"\nUser-Password = "alice-pw"\nMessage-Authenticator = 0x00\n', secret="wrong")
    assert "Access-Accept" not in out.stdout, out.stdout

    dropped = [l for l in p.http_get("/metrics")[1].splitlines() if l.startswith("pampa_radius_dropped_total{")]
    assert any("message_authenticator" in l for l in dropped), dropped


def test_unknown_nas_is_dropped_and_counted(harness):
    p = radius_stack(harness)
    p.cli("nas", "remove", "127.0.0.1/32")
    p.cli("nas", "add", "192.0.2.0/24", "--secret", SECRET)
    p.start()
    client = rc.Client(p.radius_auth_port, SECRET.encode())
    try:
        assert client.send(client.access_request("alice", "alice-pw"), timeout=1) is None
    finally:
        client.close()
    wait_for(lambda: "unknown_nas" in p.http_get("/metrics")[1], 10, "the unknown-NAS drop in /metrics")


def test_retransmission_gets_the_cached_reply_and_one_audit_event(harness):
    p = radius_stack(harness)
    p.start()
    client = rc.Client(p.radius_auth_port, SECRET.encode())
    try:
        packet = client.access_request("bob@example.org", "bob-pw")
        first = client.send(packet)
        again = client.send(packet)
    finally:
        client.close()
    assert first is not None and first.code == rc.ACCESS_ACCEPT
    assert again is not None and again.raw == first.raw
    audits = wait_for(lambda: events(p, "access.auth") or None, 10, "access.auth events")
    bob = [e for e in audits if e["payload"]["user"] == "bob@example.org"]
    assert len(bob) == 1, audits
    assert bob[0]["payload"]["result"] == "accept" and "bob-pw" not in json.dumps(audits)



def test_mschapv2_accept_wrong_password_and_no_cleartext_secret(harness):
    """MS-CHAPv2 (RFC 2759 in RFC 2548 attributes) with the client of radius_client.py,
    itself proven against the RFC's vectors in test_radius_client.py, since radclient
    cannot do MS-CHAPv2."""
    p = radius_stack(harness)
    p.start()
    client = rc.Client(p.radius_auth_port, SECRET.encode())
    try:
        # Accepted by full address and by bare local part (default realm). The NT-Response
        # covers the User-Name as sent (RFC 2759 §8.2), so each name is hashed as is.
        # client.send checks the Response Authenticator and Message-Authenticator.
        for ident, user in ((5, "alice@example.org"), (6, "alice")):
            packet, attempt = client.mschapv2_request(user, "alice-pw", ident=ident)
            reply = client.send(packet)
            assert reply is not None, f"no reply for {user}"
            assert reply.code == rc.ACCESS_ACCEPT, (user, reply)
            # The server proves it knows the password: S= is what the peer computes.
            attempt.check_success(reply.vendor(rc.VENDOR_MICROSOFT, rc.MS_CHAP2_SUCCESS))
            assert reply.vendor(rc.VENDOR_MICROSOFT, rc.MS_CHAP_ERROR) is None, reply
            assert reply.get(rc.SESSION_TIMEOUT) == rc.u32(3600), reply
            assert reply.get(rc.FRAMED_IP_ADDRESS) == bytes([10, 9, 8, 7]) and reply.get(rc.CLASS) == b"gold", reply

        # A wrong password: rejected with MS-CHAP-Error (our ident, E=691) and a Reply-Message.
        packet, _ = client.mschapv2_request("alice@example.org", "alice-pW", ident=9)
        reply = client.send(packet)
        assert reply is not None and reply.code == rc.ACCESS_REJECT, reply
        error = reply.vendor(rc.VENDOR_MICROSOFT, rc.MS_CHAP_ERROR)
        assert error is not None and error[0] == 9 and b"E=691" in error[1:], error
        assert b" M=Authentication failed" in error, error
        assert reply.vendor(rc.VENDOR_MICROSOFT, rc.MS_CHAP2_SUCCESS) is None, reply
        assert reply.get(rc.REPLY_MESSAGE), reply

        # bob has no CHAP secret, so MS-CHAPv2 cannot work for him, and the reply says why.
        packet, _ = client.mschapv2_request("bob@example.org", "bob-pw", ident=11)
        reply = client.send(packet)
        assert reply is not None and reply.code == rc.ACCESS_REJECT, reply
        error = reply.vendor(rc.VENDOR_MICROSOFT, rc.MS_CHAP_ERROR)
        assert error is not None and error[0] == 11 and b"E=691" in error[1:], error
        assert b"cleartext secret" in (reply.get(rc.REPLY_MESSAGE) or b""), reply
    finally:
        client.close()

    def mschap_audits():
        found = [e["payload"] for e in events(p, "access.auth") if e["payload"].get("method") == "mschapv2"]
        return found if len(found) == 4 else None

    audits = wait_for(mschap_audits, 10, "four mschapv2 access.auth events")
    assert [a["result"] for a in audits] == ["accept", "accept", "reject", "reject"], audits
    assert "cleartext" in audits[3]["reason"] and audits[3]["user"] == "bob@example.org", audits
    assert "alice-pw" not in json.dumps(audits) and "bob-pw" not in json.dumps(audits)

@pytest.mark.parametrize("stack", ["embedded", "nats"])
def test_accounting_events_sessions_usage_and_accounting_on(harness, stack):
    p = radius_stack(harness, stack)
    p.start()
    client = rc.Client(p.radius_acct_port, SECRET.encode())
    try:
        start = client.accounting_request(rc.START, "s-1", user="alice@example.org")
        assert client.send(start).code == rc.ACCOUNTING_RESPONSE
        # A retransmission (Acct-Delay-Time grows) is acknowledged but not billed twice.
        assert client.send(client.accounting_request(rc.START, "s-1", user="alice@example.org", delay=3)).code == rc.ACCOUNTING_RESPONSE
        sessions = json.loads(p.cli("sessions", "--json").stdout)
        assert [s["session_id"] for s in sessions] == ["s-1"], sessions

        # Simultaneous-Use 1: alice may not log in twice.
        auth = rc.Client(p.radius_auth_port, SECRET.encode())
        try:
            reply = auth.send(auth.access_request("alice", "alice-pw"))
            assert reply is not None and reply.code == rc.ACCESS_REJECT, reply
            assert b"too many sessions" in (reply.get(rc.REPLY_MESSAGE) or b"").lower(), reply
        finally:
            auth.close()

        big = 5 * 2**32 + 1234  # needs Gigawords
        interim = client.accounting_request(rc.INTERIM, "s-1", user="alice@example.org", session_time=60,
                                            octets_in=1000, octets_out=big // 2)
        assert client.send(interim).code == rc.ACCOUNTING_RESPONSE
        stop = client.accounting_request(rc.STOP, "s-1", user="alice@example.org", session_time=120,
                                         octets_in=2000, octets_out=big)
        assert client.send(stop).code == rc.ACCOUNTING_RESPONSE
        assert json.loads(p.cli("sessions", "--json").stdout) == []

        acct = events(p, "access.acct")
        assert [e["payload"]["status"] for e in acct] == ["start", "interim_update", "stop"], acct
        month = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m")
        usage = json.loads(p.cli("usage", "--user", "alice@example.org", "--month", month, "--json").stdout)
        assert usage["sessions"] == 1 and usage["time_online_seconds"] == 120, usage
        assert usage["input_octets"] == 2000 and usage["output_octets"] == big, usage

        # Accounting-On from the NAS closes every session it had open.
        for sid in ("s-2", "s-3"):
            client.send(client.accounting_request(rc.START, sid, user="bob@example.org"))
        assert len(json.loads(p.cli("sessions", "--json").stdout)) == 2
        assert client.send(client.accounting_request(rc.ACCOUNTING_ON, "")).code == rc.ACCOUNTING_RESPONSE
        assert json.loads(p.cli("sessions", "--json").stdout) == []
    finally:
        client.close()


def test_accounting_is_unanswered_while_the_log_is_down(harness):
    nats = harness.nats()
    p = harness.pampa(bus_url=nats.url)
    p.configure(radius={"default_realm": "example.org"})
    p.cli("domain", "add", "example.org")
    p.cli("user", "add", "alice@example.org", "--password", "alice-pw")
    p.cli("nas", "add", "127.0.0.1/32", "--secret", SECRET)
    p.start()
    client = rc.Client(p.radius_acct_port, SECRET.encode())
    try:
        nats.stop()
        packet = client.accounting_request(rc.START, "down-1", user="alice@example.org")
        assert client.send(packet, timeout=3) is None, "accounting was acknowledged with the log down"
        nats.start()
        reply = wait_for(lambda: client.send(packet, timeout=2), 60, "an Accounting-Response after NATS came back")
        assert reply.code == rc.ACCOUNTING_RESPONSE
        client.send(packet)
    finally:
        client.close()
    starts = [e for e in events(p, "access.acct") if e["payload"].get("session_id") == "down-1"]
    assert len(starts) == 1, starts


@needs_radclient
def test_accounting_and_the_unknown_nas_with_radclient(harness):
    p = radius_stack(harness)
    p.start()
    base = 'User-Name = "alice"\nAcct-Session-Id = "rc-1"\nNAS-IP-Address = 127.0.0.1\n'
    out = radclient(p, "acct", base + "Acct-Status-Type = Start\n")
    assert "Accounting-Response" in out.stdout, out.stdout + out.stderr
    assert [s["session_id"] for s in json.loads(p.cli("sessions", "--json").stdout)] == ["rc-1"]
    out = radclient(
        p, "acct",
        base + "Acct-Status-Type = Interim-Update\nAcct-Session-Time = 30\n"
        "Acct-Input-Octets = 100\nAcct-Output-Octets = 7\nAcct-Output-Gigawords = 1\n",
    )
    assert "Accounting-Response" in out.stdout, out.stdout
    out = radclient(
        p, "acct",
        base + "Acct-Status-Type = Stop\nAcct-Session-Time = 90\nAcct-Terminate-Cause = User-Request\n"
        "Acct-Input-Octets = 200\nAcct-Output-Octets = 9\nAcct-Output-Gigawords = 2\n",
    )
    assert "Accounting-Response" in out.stdout, out.stdout
    month = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m")
    usage = json.loads(p.cli("usage", "--user", "alice", "--month", month, "--json").stdout)
    assert usage["sessions"] == 1 and usage["time_online_seconds"] == 90, usage
    assert usage["input_octets"] == 200 and usage["output_octets"] == 2 * 2**32 + 9, usage
    stop = [e for e in events(p, "access.acct") if e["payload"]["status"] == "stop"]
    assert len(stop) == 1 and stop[0]["payload"]["terminate_cause"] == "User-Request", stop

    # Accounting-On from the NAS closes what it had open.
    radclient(p, "acct", 'User-Name = "bob"\nAcct-Session-Id = "rc-2"\nAcct-Status-Type = Start\n')
    assert len(json.loads(p.cli("sessions", "--json").stdout)) == 1
    out = radclient(p, "acct", "Acct-Status-Type = Accounting-On\nNAS-IP-Address = 127.0.0.1\n")
    assert "Accounting-Response" in out.stdout, out.stdout
    assert json.loads(p.cli("sessions", "--json").stdout) == []

    # A NAS that is not registered gets nothing at all.
    p.cli("nas", "remove", "127.0.0.1/32")
    p.cli("nas", "add", "192.0.2.0/24", "--secret", SECRET)
    def dropped() -> bool:
        out = radclient(p, "auth", 'User-Name = "alice"\nUser-Password = "alice-pw"\nMessage-Authenticator = 0x00\n')
        return "Access-Accept" not in out.stdout and "No reply" in (out.stdout + out.stderr)
    # The NAS list is cached for a few seconds; the removal takes effect within them.
    wait_for(dropped, 30, "the unregistered NAS to be dropped", 1.0)

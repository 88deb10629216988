"""Outbound mail end to end: the submission role (587 STARTTLS, 465 TLS, AUTH only in
TLS, lockouts, sender checks, rate limits), the outbound checks (spam is held and its
sender flagged), and the relay (MX lookup through pampa's own DNS role, opportunistic
STARTTLS, DKIM, retries, DSNs, the queue commands).

Two pampas run side by side: `out` (the ISP: submission, relay, its own MX for
example.org, and the DNS role serving the test zones) and `remote` (remote.test's MX,
with the auth stage, so mail-auth verifies the DKIM signature on the receiving side).
A scripted MX (below) plays a remote that answers 451 once and then accepts.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import smtplib
import socketserver
import ssl
import subprocess
import threading
import time
from email.parser import BytesParser
from email import policy

import pytest

from conftest import LOCALHOST, RawSmtp, free_port, make_message, wait_for

OPENSSL = shutil.which("openssl")
pytestmark = pytest.mark.skipif(OPENSSL is None, reason="the openssl CLI is not installed")

PASSWORD = "secret"
SPAM_PHRASE = "cheap replica watches outbound test"


def make_cert(directory, name):
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [OPENSSL, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", f"/CN={name}", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    return cert, key


def tls_context():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


class ScriptedMx:
    """A remote MX that answers each recipient from a script: the replies listed for it,
    in order, the last one repeating. It records every message it accepted."""

    def __init__(self, script: dict[str, list[str]]):
        self.script = {rcpt: list(replies) for rcpt, replies in script.items()}
        self.accepted: list[tuple[str, list[str], bytes]] = []
        self.rcpt_replies: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        self.open_sessions = 0
        self.most_open = 0
        outer = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self):
                with outer.lock:
                    outer.open_sessions += 1
                    outer.most_open = max(outer.most_open, outer.open_sessions)
                try:
                    self.converse()
                finally:
                    with outer.lock:
                        outer.open_sessions -= 1

            def converse(self):
                def send(line):
                    self.wfile.write(line.encode() + b"\r\n")
                    self.wfile.flush()

                send("220 scripted.test ESMTP")
                sender, rcpts = "", []
                while True:
                    line = self.rfile.readline()
                    if not line:
                        return
                    cmd = line.decode(errors="replace").strip()
                    verb = cmd.split(" ", 1)[0].upper().split(":")[0]
                    if verb in ("EHLO", "HELO"):
                        send("250-scripted.test")
                        send("250 SIZE 10000000")
                    elif verb == "MAIL":
                        sender, rcpts = cmd.split(":", 1)[1].split(">")[0].strip("< "), []
                        send("250 2.1.0 Ok")
                    elif verb == "RCPT":
                        rcpt = cmd.split(":", 1)[1].strip().strip("<>")
                        with outer.lock:
                            replies = outer.script.get(rcpt, ["250 2.1.5 Ok"])
                            reply = replies.pop(0) if len(replies) > 1 else replies[0]
                            outer.rcpt_replies.append((rcpt, reply))
                        if reply.startswith("2"):
                            rcpts.append(rcpt)
                        send(reply)
                    elif verb == "DATA":
                        send("354 go ahead")
                        data = b""
                        while True:
                            chunk = self.rfile.readline()
                            if not chunk or chunk == b".\r\n":
                                break
                            data += chunk
                        # A slow remote, so that sessions overlap when they may.
                        time.sleep(0.2)
                        with outer.lock:
                            outer.accepted.append((sender, rcpts, data))
                        send("250 2.0.0 Ok: queued")
                    elif verb == "QUIT":
                        send("221 2.0.0 Bye")
                        return
                    else:
                        send("250 2.0.0 Ok")

        self.server = socketserver.ThreadingTCPServer((LOCALHOST, 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


REMOTE_ZONE = """$ORIGIN remote.test.
$TTL 60
@    IN SOA ns.remote.test. hostmaster.remote.test. 1 3600 600 86400 60
@    IN NS  ns.remote.test.
@    IN MX  10 mx.remote.test.
mx   IN A   127.0.0.1
ns   IN A   127.0.0.1
"""

OWN_ZONE = """$ORIGIN example.org.
$TTL 60
@    IN SOA ns.example.org. hostmaster.example.org. 1 3600 600 86400 60
@    IN NS  ns.example.org.
ns   IN A   127.0.0.1
"""


@pytest.fixture(scope="module")
def world(module_harness, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("outbound")
    scripted = ScriptedMx({
        "twice@scripted.test": ["451 4.2.0 Greylisted, try again", "250 2.1.5 Ok"],
    })

    remote = module_harness.pampa()
    rcert, rkey = make_cert(remote.dir, "mx.remote.test")
    remote.configure(smtp={"hostname": "mx.remote.test", "tls_cert": str(rcert), "tls_key": str(rkey)})
    remote.setup_users("remote.test", "bob")

    out = module_harness.pampa()
    cert, key = make_cert(out.dir, "submit.example.org")
    out.submission_port = free_port()
    out.submissions_port = free_port()
    (tmp / "remote.test.zone").write_text(REMOTE_ZONE)
    (tmp / "example.org.zone").write_text(OWN_ZONE)
    (tmp / "outbound.cf").write_text(
        f"body OUTBOUND_TEST_SPAM /{SPAM_PHRASE}/i\nscore OUTBOUND_TEST_SPAM 20\n"
    )
    out.add_toml(f"""
        [submission]
        listen = "{LOCALHOST}:{out.submission_port}"
        tls_listen = "{LOCALHOST}:{out.submissions_port}"
        hostname = "submit.example.org"
        tls_cert = "{cert}"
        tls_key = "{key}"
        auth_failures_per_ip = 1000
        auth_failures_per_user = 3

        [relay]
        hostname = "out.example.org"
        nameserver = "{LOCALHOST}:{out.dns_port}"
        smtp_port = {remote.smtp_port}
        retry_base = "1s"
        retry_max = "2s"
        poll_interval = "200ms"
        connect_timeout = "2s"
        command_timeout = "20s"
        max_per_domain = 2

        [relay.routes]
        "example.org" = "{LOCALHOST}:{out.smtp_port}"
        "scripted.test" = "{LOCALHOST}:{scripted.port}"

        [stages.score]
        rules = ["{tmp / 'outbound.cf'}"]

        [[dns.zones]]
        name = "remote.test"
        file = "{tmp / 'remote.test.zone'}"
        [[dns.zones]]
        name = "example.org"
        file = "{tmp / 'example.org.zone'}"
    """)
    out.setup_users("example.org", "alice", "carol", "dave", "erin", "frank", "locked")
    out.cli("user", "add", "other@example.org", "--password", PASSWORD)
    out.start()

    # The receiving side checks DKIM against out's DNS role.
    remote.add_toml(f"""
        [pipeline]
        stages = ["auth", "score"]
        [stages.auth]
        resolver = "{LOCALHOST}:{out.dns_port}"
    """)
    remote.start()
    yield out, remote, scripted
    scripted.stop()


@contextlib.contextmanager
def authed(out, user):
    """A submission session on 587, in TLS, logged in as `user`."""
    with smtplib.SMTP(LOCALHOST, out.submission_port, timeout=30) as s:
        s.ehlo("client.test")
        s.starttls(context=tls_context())
        s.ehlo("client.test")
        s.login(user, PASSWORD)
        yield s


def submit(out, user, recipients, note="", sender=None, headers_from=None, body_extra=""):
    """Sends one message through submission (STARTTLS + AUTH PLAIN); returns the marker
    and the queue id from the 250 reply."""
    sender = sender or user
    marker, msg = make_message(headers_from or sender, recipients, note)
    if body_extra:
        msg = msg.replace(b"\r\nthe end\r\n", f"\r\n{body_extra}\r\nthe end\r\n".encode())
    with authed(out, user) as s:
        s.mail(sender)
        for rcpt in recipients:
            code, text = s.rcpt(rcpt)
            assert code == 250, (rcpt, code, text)
        code, text = s.data(msg)
        assert code == 250, (code, text)
    return marker, text.decode().rsplit(" ", 1)[-1]


def events(p, subject):
    return json.loads(p.cli("events", subject, "--json").stdout)


def test_auth_is_offered_only_inside_tls_and_mail_needs_it(world):
    out, _, _ = world
    with RawSmtp(out.submission_port) as s:
        assert s.reply()[0] == 220
        code, text = s.cmd("EHLO client.test")
        assert code == 250 and b"STARTTLS" in text and b"AUTH" not in text, text
        assert s.cmd("AUTH PLAIN AGFsaWNlQGV4YW1wbGUub3JnAHNlY3JldA==")[0] == 538
        assert s.cmd("MAIL FROM:<alice@example.org>")[0] == 530
    with smtplib.SMTP(LOCALHOST, out.submission_port, timeout=30) as s:
        s.ehlo("client.test")
        s.starttls(context=tls_context())
        s.ehlo("client.test")
        assert "PLAIN" in s.esmtp_features.get("auth", "").upper()
        with pytest.raises(smtplib.SMTPAuthenticationError) as refused:
            s.login("alice@example.org", "wrong")
        assert refused.value.smtp_code == 535
        assert s.login("alice@example.org", PASSWORD)[0] == 235
    # Port 465: TLS from the first byte, and AUTH LOGIN works there too.
    with smtplib.SMTP_SSL(LOCALHOST, out.submissions_port, context=tls_context(), timeout=30) as s:
        s.ehlo("client.test")
        s.user, s.password = "alice@example.org", PASSWORD
        code, _ = s.auth("LOGIN", s.auth_login, initial_response_ok=False)
        assert code == 235


def test_repeated_failures_lock_the_user_out(world):
    out, _, _ = world
    # Three spellings of one account count as one account.
    for spelling in ("locked@example.org", "LOCKED@example.org", "locked@example.org."):
        with smtplib.SMTP_SSL(LOCALHOST, out.submissions_port, context=tls_context(), timeout=30) as s:
            s.ehlo("client.test")
            with pytest.raises(smtplib.SMTPAuthenticationError):
                s.login(spelling, "guess")
    with smtplib.SMTP_SSL(LOCALHOST, out.submissions_port, context=tls_context(), timeout=30) as s:
        s.ehlo("client.test")
        with pytest.raises(smtplib.SMTPAuthenticationError) as locked:
            s.login("locked@example.org", PASSWORD)
        assert locked.value.smtp_code == 454, "the right password must not open a locked account"
        # Another user from the same address is not affected.
        assert s.login("alice@example.org", PASSWORD)[0] == 235
    metrics = out.http_get("/metrics")[1]
    assert 'pampa_submission_auth_lockouts_total{scope="user"} 1' in metrics, metrics


def test_forged_senders_are_refused(world):
    out, _, _ = world
    with authed(out, "erin@example.org") as s:
        code, text = s.mail("other@example.org")
        assert (code, text[:5]) == (553, b"5.7.1"), text
        s.rset()
        code, text = s.mail("ceo@bank.test")
        assert code == 553, text
        # An envelope that is hers, with a From: header that is not.
        s.rset()
        assert s.mail("erin@example.org")[0] == 250
        assert s.rcpt("bob@remote.test")[0] == 250
        _, msg = make_message("other@example.org", ["bob@remote.test"], "forged header")
        code, text = s.data(msg)
        assert code == 553 and b"other@example.org" in text, text
        # Two From: headers, the second one hers: refused, whatever a reader would show.
        assert s.mail("erin@example.org")[0] == 250
        assert s.rcpt("bob@remote.test")[0] == 250
        _, msg = make_message("erin@example.org", ["bob@remote.test"], "two froms")
        code, text = s.data(b"From: ceo@bank.test\r\n" + msg)
        assert code == 550 and b"more than one From" in text, text
        # A Sender: that is not hers is refused too.
        assert s.mail("erin@example.org")[0] == 250
        assert s.rcpt("bob@remote.test")[0] == 250
        code, text = s.data(b"Sender: other@example.org\r\n" + msg)
        assert code == 553 and b"other@example.org" in text, text
    # An alias makes the same address hers.
    out.cli("user", "alias", "add", "erin@example.org", "sales@example.org")
    marker, _ = submit(out, "erin@example.org", ["bob@remote.test"], "alias", sender="sales@example.org")
    assert marker


def test_the_rate_limit_answers_451_and_is_recorded(world):
    out, _, _ = world
    out.cli("user", "limits", "carol@example.org", "--messages-per-hour", "2")
    shown = out.cli("user", "limits", "carol@example.org").stdout
    assert re.search(r"^messages\s+2\s*$", shown, re.M) and re.search(r"^recipients\s+500 \(default\)", shown, re.M), shown
    for i in range(2):
        submit(out, "carol@example.org", ["bob@remote.test"], f"within limit {i}")
    with authed(out, "carol@example.org") as s:
        code, text = s.mail("carol@example.org")
        assert (code, text[:5]) == (451, b"4.7.1"), text
    limited = wait_for(
        lambda: [e for e in events(out, "mail.submission_limited")
                 if e["payload"]["user"] == "carol@example.org"],
        20, "a mail.submission_limited event for carol",
    )
    assert limited[0]["payload"]["limit"] == "messages_per_hour"
    assert 'pampa_submission_rate_limited_total{limit="messages_per_hour"}' in out.http_get("/metrics")[1]


def test_mail_goes_out_over_tls_dkim_signed_and_verifies_remotely(world):
    out, remote, _ = world
    generated = out.cli("dkim", "generate", "example.org", "--selector", "e2e", "--zone", "example.org").stdout
    assert "e2e._domainkey.example.org. IN TXT" in generated, generated
    record = generated.split("IN TXT ", 1)[1].splitlines()[0]
    assert record in out.cli("dkim", "show", "example.org").stdout
    refused = out.cli("dkim", "generate", "stranger.test", check=False)
    assert refused.returncode != 0 and "not a local domain" in refused.stderr
    out.cli("dns", "reload")
    marker, queue_id = submit(out, "alice@example.org", ["bob@remote.test"], "signed")
    path = remote.wait_delivered("bob@remote.test", marker)
    delivered = path.read_bytes()
    assert b"DKIM-Signature:" in delivered and b"d=example.org" in delivered and b"s=e2e" in delivered
    # mail-auth, in remote's auth stage, verified the signature against out's DNS.
    remote_id = re.search(rb"with ESMTPS id ([\w-]+)", delivered).group(1).decode()
    trace = remote.cli("trace", remote_id).stdout
    assert "DKIM_VALID" in trace, trace
    history = out.cli("trace", queue_id, "--json").stdout
    assert "mail.relay.attempt" in history and "mail.relay.final" in history, history
    attempts = [e for e in events(out, "mail.relay.attempt") if e["payload"]["message_id"] == queue_id]
    assert attempts and attempts[0]["payload"]["tls"] is True, attempts
    assert attempts[0]["payload"]["mx"] == "mx.remote.test"

    # Rotation: a second key waits as the next one; mail stays signed with the
    # current key until it is activated, then with the new one, which verifies too.
    rotated = out.cli("dkim", "generate", "example.org", "--selector", "e2e2", "--zone", "example.org").stdout
    assert "next" in rotated and "pampa dkim activate example.org" in rotated, rotated
    out.cli("dns", "reload")
    before, _ = submit(out, "alice@example.org", ["bob@remote.test"], "before activation")
    assert b"s=e2e;" in remote.wait_delivered("bob@remote.test", before).read_bytes()
    shown = out.cli("dkim", "show", "example.org").stdout
    assert "; current" in shown and "; next" in shown, shown
    out.cli("dkim", "activate", "example.org")
    after, _ = submit(out, "alice@example.org", ["bob@remote.test"], "after activation")
    rotated_copy = remote.wait_delivered("bob@remote.test", after).read_bytes()
    assert b"s=e2e2;" in rotated_copy, rotated_copy[:800]
    rotated_id = re.search(rb"with ESMTPS id ([\w-]+)", rotated_copy).group(1).decode()
    assert "DKIM_VALID" in remote.cli("trace", rotated_id).stdout


def test_a_4xx_is_retried_and_then_delivered(world):
    out, _, scripted = world
    marker, queue_id = submit(out, "alice@example.org", ["twice@scripted.test"], "greylisted")
    wait_for(lambda: any(marker.encode() in data for _, _, data in scripted.accepted), 30,
             "the scripted MX to accept the message on the second try")
    replies = [r for rcpt, r in scripted.rcpt_replies if rcpt == "twice@scripted.test"]
    assert replies[0].startswith("451") and replies[1].startswith("250"), replies
    finals = wait_for(
        lambda: [e for e in events(out, "mail.relay.final") if e["payload"]["message_id"] == queue_id],
        20, "the final event",
    )
    assert finals[0]["payload"]["outcome"] == "delivered" and finals[0]["payload"]["attempts"] == 2


def test_concurrency_per_destination_domain_is_capped(world):
    out, _, scripted = world
    markers = [submit(out, "alice@example.org", [f"polite{i}@scripted.test"], f"polite {i}")[0] for i in range(6)]
    wait_for(lambda: all(any(m.encode() in data for _, _, data in scripted.accepted) for m in markers), 60,
             "the six messages at the scripted MX")
    assert scripted.most_open == 2, f"{scripted.most_open} sessions at once to one domain (max_per_domain = 2)"


def test_an_unreachable_mx_is_retried_and_a_queued_message_can_be_dropped(world):
    out, remote, _ = world
    remote.stop()
    try:
        marker, queue_id = submit(out, "frank@example.org", ["bob@remote.test"], "while down")
        listed = wait_for(
            lambda: (lambda q: q if q and q[0]["attempts"] >= 1 else None)(
                [e for e in json.loads(out.cli("queue", "list", "--json").stdout) if e["message_id"] == queue_id]),
            30, "the message deferred in the queue",
        )
        assert "connect" in (listed[0]["last_reply"] or ""), listed
        _, dropped_id = submit(out, "frank@example.org", ["bob@remote.test"], "to drop")
        wait_for(lambda: any(e["message_id"] == dropped_id for e in json.loads(out.cli("queue", "list", "--json").stdout)),
                 20, "the second message queued")
        out.cli("queue", "drop", dropped_id)
        shown = out.cli("queue", "show", dropped_id).stdout
        assert "dropped" in shown, shown
    finally:
        remote.start()
    remote.wait_delivered("bob@remote.test", marker, timeout=60)
    deliveries = [e for e in events(out, "mail.relay.attempt") if e["payload"]["message_id"] == queue_id]
    assert len(deliveries) >= 2, deliveries
    finals = [e["payload"]["outcome"] for e in events(out, "mail.relay.final")
              if e["payload"]["message_id"] in (queue_id, dropped_id)]
    assert sorted(finals) == ["delivered", "dropped"], finals
    assert 'pampa_relay_queue_recipients{state="queued"}' in out.http_get("/metrics")[1]


def test_a_5xx_bounces_with_a_dsn_to_the_sender(world):
    out, _, _ = world
    marker, queue_id = submit(out, "alice@example.org", ["nobody@remote.test"], "to nobody")
    def dsn():
        for path in out.inbox("alice@example.org"):
            data = path.read_bytes()
            if b"multipart/report" in data and queue_id.encode() in data:
                return data
        return None
    data = wait_for(dsn, 60, "a DSN in alice's inbox")
    report = BytesParser(policy=policy.default).parsebytes(data)
    assert report.get_content_type() == "multipart/report"
    status = [p for p in report.walk() if p.get_content_type() == "message/delivery-status"]
    assert status, "no message/delivery-status part"
    text = data.decode(errors="replace")
    assert "Final-Recipient: rfc822; nobody@remote.test" in text or "Final-Recipient: rfc822;nobody@remote.test" in text, text
    assert "Status: 5.1.1" in text, text
    finals = [e["payload"] for e in events(out, "mail.relay.final") if e["payload"]["message_id"] == queue_id]
    assert finals and finals[0]["outcome"] == "bounced" and finals[0]["dsn_sent"] is True, finals


def test_spam_is_held_and_its_sender_flagged_until_unflagged(world):
    out, remote, _ = world
    marker, queue_id = submit(out, "dave@example.org", ["bob@remote.test"], "spam", body_extra=SPAM_PHRASE)
    held = wait_for(
        lambda: [e for e in events(out, "mail.held") if e["payload"]["message_id"] == queue_id],
        30, "a mail.held event",
    )
    assert held[0]["payload"]["flagged_now"] is True
    flagged = json.loads(out.cli("user", "flagged", "--json").stdout)
    assert [f["address"] for f in flagged] == ["dave@example.org"], flagged
    assert flagged[0]["message_id"] == queue_id
    # A flagged account may not send any more.
    with authed(out, "dave@example.org") as s:
        code, text = s.mail("dave@example.org")
        assert (code, text[:5]) == (550, b"5.7.1"), text
    out.cli("user", "unflag", "dave@example.org")
    marker2, _ = submit(out, "dave@example.org", ["bob@remote.test"], "clean again")
    remote.wait_delivered("bob@remote.test", marker2)
    assert not remote.copies("bob@remote.test", marker), "held spam reached the remote"
    assert not [e for e in events(out, "mail.relay.attempt") if e["payload"]["message_id"] == queue_id]


def test_the_mx_never_relays_even_for_a_user_who_authenticates(world):
    out, _, _ = world
    with RawSmtp(out.smtp_port) as s:
        assert s.reply()[0] == 220
        assert s.cmd("EHLO client.test")[0] == 250
        code, _ = s.cmd("AUTH PLAIN AGFsaWNlQGV4YW1wbGUub3JnAHNlY3JldA==")
        assert code == 503
        assert s.cmd("MAIL FROM:<alice@example.org>")[0] == 250
        code, text = s.cmd("RCPT TO:<bob@remote.test>")
        assert code == 554, text


EICAR = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"


def test_a_virus_is_held_on_nats_and_postgres_with_clamd(harness):
    """The outbound checks with antivirus, on the production stack: NATS JetStream,
    PostgreSQL, a real clamd. The infected message is held, never relayed, and its
    sender flagged; a clean one from another user goes out."""
    clamd = harness.clamd()
    nats = harness.nats()
    remote = harness.pampa()
    remote.setup_users("remote.test", "bob")
    remote.start()
    out = harness.pampa(bus_url=nats.url, db_url=harness.postgres_url())
    cert, key = make_cert(out.dir, "submit.example.org")
    out.submission_port = free_port()
    out.submissions_port = free_port()
    out.add_toml(f"""
        [submission]
        listen = "{LOCALHOST}:{out.submission_port}"
        tls_listen = "{LOCALHOST}:{out.submissions_port}"
        tls_cert = "{cert}"
        tls_key = "{key}"
        [outbound]
        stages = ["antivirus", "score"]
        [stages.antivirus]
        clamd = "{clamd.url}"
        [relay]
        poll_interval = "200ms"
        [relay.routes]
        "remote.test" = "{LOCALHOST}:{remote.smtp_port}"
    """)
    out.setup_users("example.org", "gina", "hank")
    out.start()
    checked = {c["name"]: c["state"] for c in json.loads(out.cli("streams", "check", "--json").stdout)}
    for consumer in ("MAIL/outbound_antivirus", "MAIL/outbound_score", "MAIL/relay"):
        assert checked.get(consumer) == "ok", checked

    marker, queue_id = submit(out, "gina@example.org", ["bob@remote.test"], "infected", body_extra=EICAR.decode())
    held = wait_for(
        lambda: [e for e in events(out, "mail.held") if e["payload"]["message_id"] == queue_id],
        60, "the infected message held",
    )
    assert "virus" in held[0]["payload"]["reason"].lower(), held
    assert [f["address"] for f in json.loads(out.cli("user", "flagged", "--json").stdout)] == ["gina@example.org"]
    clean, _ = submit(out, "hank@example.org", ["bob@remote.test"], "clean")
    remote.wait_delivered("bob@remote.test", clean)
    assert not remote.copies("bob@remote.test", marker)


def test_split_roles_on_nats_and_mariadb_send_each_message_once(harness):
    """The outbound roles as separate processes, as production runs them: submission,
    the outbound score check and two relays sharing one queue in MariaDB. Every
    message reaches the remote exactly once."""
    nats = harness.nats()
    db = harness.mysql_url()
    scripted = ScriptedMx({})
    try:
        submission = harness.pampa(bus_url=nats.url, db_url=db)
        cert, key = make_cert(submission.dir, "submit.example.org")
        submission.submission_port = free_port()
        submission.submissions_port = free_port()
        submission.add_toml(f"""
            [submission]
            listen = "{LOCALHOST}:{submission.submission_port}"
            tls_listen = "{LOCALHOST}:{submission.submissions_port}"
            tls_cert = "{cert}"
            tls_key = "{key}"
        """)
        submission.setup_users("example.org", "ivy")
        checker = harness.pampa(bus_url=nats.url, db_url=db)
        relays = [harness.pampa(bus_url=nats.url, db_url=db) for _ in range(2)]
        for relay in relays:
            relay.add_toml(f"""
                [relay]
                poll_interval = "100ms"
                [relay.routes]
                "scripted.test" = "{LOCALHOST}:{scripted.port}"
            """)
        submission.start("run", "submission")
        checker.start("run", "outbound-score")
        for relay in relays:
            relay.start("run", "relay")
        markers = [submit(submission, "ivy@example.org", [f"r{i}@scripted.test"], f"split {i}")[0] for i in range(10)]
        wait_for(lambda: all(any(m.encode() in data for _, _, data in scripted.accepted) for m in markers), 60,
                 "the ten messages at the remote")
        for marker in markers:
            copies = [1 for _, _, data in scripted.accepted if marker.encode() in data]
            assert len(copies) == 1, f"{marker}: {len(copies)} copies at the remote"
        assert json.loads(relays[0].cli("queue", "list", "--json").stdout) == []
    finally:
        scripted.stop()

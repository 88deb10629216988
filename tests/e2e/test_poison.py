"""Hostile messages: each ends in a terminal state (delivered, or a dead letter that
`pampa dead retry` can re-queue), none stops the pipeline, and the audit stays clean."""

from __future__ import annotations

import json
import smtplib
import time

from conftest import make_message, send_message, wait_for
from test_durability import assert_audit_clean

SENDER = "sender@remote.test"
ALICE = "alice@example.org"


def headers(marker: str, extra: str = "") -> str:
    return (
        f"From: {SENDER}\r\nTo: {ALICE}\r\nSubject: poison {marker}\r\n"
        f"Message-ID: <{marker}@e2e.test>\r\nMIME-Version: 1.0\r\n{extra}"
    )


def ten_thousand_parts(marker: str) -> bytes:
    parts = "".join(f"--b\r\nContent-Type: text/plain\r\n\r\npart {i}\r\n" for i in range(10_000))
    return (headers(marker, 'Content-Type: multipart/mixed; boundary="b"\r\n') + "\r\n" + parts + "--b--\r\n").encode()


def nested_bomb(marker: str, depth: int = 200) -> bytes:
    body = "innermost\r\n"
    for level in range(depth):
        body = (
            f'Content-Type: multipart/mixed; boundary="l{level}"\r\n\r\n'
            f"--l{level}\r\n{body}--l{level}--\r\n"
        )
    return (headers(marker) + body).encode()


def megabyte_header(marker: str) -> bytes:
    folded = "X-Filler: start\r\n" + "".join(f"\t{'y' * 900}\r\n" for _ in range(1_200))
    return (headers(marker, folded) + "Content-Type: text/plain\r\n\r\nbody\r\n").encode()


def broken_encodings(marker: str) -> bytes:
    return (
        headers(marker, 'Content-Type: multipart/mixed; boundary="z"\r\n')
        + "Subject2: =?utf-8?B?////not-base64?= =?x-unknown?Q?=ZZ=?=\r\n\r\n"
        + "--z\r\nContent-Type: text/plain; charset=x-no-such-charset\r\n"
        + "Content-Transfer-Encoding: base64\r\n\r\n!!!! not base64 at all ####\r\n"
        + "--z\r\nContent-Type: text/html\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
        + "<a href=3D\"http://=ZZ=\r\n"
        + "--z\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: x-unknown\r\n\r\n"
        + "\x01\x02\xff\x7f\r\n--z"  # no closing boundary
    ).encode("latin-1")


def test_hostile_messages_end_in_a_terminal_state_and_the_pipeline_goes_on(harness):
    p = harness.pampa()
    p.add_toml('[pipeline]\nstages = ["rbl", "whitelist", "score"]\n')
    p.setup_users("example.org", "alice")
    p.start()
    started = time.monotonic()
    makers = {"parts": ten_thousand_parts, "bomb": nested_bomb, "header": megabyte_header, "encodings": broken_encodings}
    for name, make in makers.items():
        send_message(p.smtp_port, SENDER, [ALICE], make(f"{name}-{started}"))
    # Each one ends somewhere: its copy written, or a dead letter.
    def settled():
        report = json.loads(p.cli("audit", "--json", check=False).stdout or "{}")
        done = report.get("copies") == len(makers) and report.get("in_flight") == 0
        return report if done else None

    report = wait_for(settled, 120, "every hostile message to reach a terminal state")
    assert report["missing"] == 0 and report["duplicated"] == 0, report
    # NUL bytes are refused at DATA with a clear code, not stored.
    nul = headers(f"nul-{started}").encode() + b"\r\nbody \x00 here\r\n"
    try:
        send_message(p.smtp_port, SENDER, [ALICE], nul)
        raise AssertionError("a message with NUL bytes was accepted")
    except smtplib.SMTPDataError as e:
        assert e.smtp_code == 554, e
    # The pipeline still works after them.
    p.assert_works(ALICE)
    assert_audit_clean(p)
    # Dead letters, if any, can be listed and re-queued.
    dead = json.loads(p.cli("dead", "list", "--json").stdout)
    for letter in dead:
        p.cli("dead", "retry", letter["id"])
    p.check_alive()

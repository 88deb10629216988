"""The directory down (MariaDB or PostgreSQL behind a proxy that the test cuts): ingest
answers 451 for what it cannot verify, never 550 and never 250, and works again once
the database is back. Mail accepted before the cut is still delivered."""

from __future__ import annotations

import socket
import threading
from urllib.parse import urlsplit, urlunsplit

import pytest

from conftest import RawSmtp, free_port, make_message, send_message, wait_for

SENDER = "sender@remote.test"
ALICE = "alice@example.org"


class CuttableProxy:
    """A TCP proxy to the database that can be cut (every connection closed, new ones
    refused by closing them at once) and restored."""

    def __init__(self, target: tuple[str, int]):
        self.target = target
        self.port = free_port()
        self.up = True
        self.conns: list[socket.socket] = []
        self.lock = threading.Lock()
        self.listener = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.up:
                client.close()
                continue
            try:
                server = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.conns += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def cut(self) -> None:
        self.up = False
        with self.lock:
            for s in self.conns:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                    s.close()
                except OSError:
                    pass
            self.conns.clear()

    def restore(self) -> None:
        self.up = True

    def close(self) -> None:
        self.cut()
        self.listener.close()


def through(url: str, proxy: CuttableProxy) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit(":", 1)[0] if ":" in parts.netloc.split("@")[-1] else parts.netloc
    return urlunsplit(parts._replace(netloc=f"{netloc}:{proxy.port}"))


def rcpt_code(port: int, rcpt: str) -> int:
    with RawSmtp(port) as s:
        assert s.reply()[0] == 220
        assert s.cmd("EHLO db.test")[0] == 250
        assert s.cmd(f"MAIL FROM:<{SENDER}>")[0] == 250
        return s.cmd(f"RCPT TO:<{rcpt}>")[0]


@pytest.mark.parametrize("db", ["mysql", "postgres"])
def test_directory_down_gives_451_then_recovers(harness, db):
    url = harness.mysql_url() if db == "mysql" else harness.postgres_url()
    target = urlsplit(url)
    proxy = CuttableProxy((target.hostname or "127.0.0.1", target.port or (3306 if db == "mysql" else 5432)))
    try:
        p = harness.pampa(db_url=through(url, proxy))
        p.setup_users("example.org", "alice")
        p.start()
        marker, msg = make_message(SENDER, [ALICE], "before the cut")
        send_message(p.smtp_port, SENDER, [ALICE], msg)
        p.wait_delivered(ALICE, marker)

        proxy.cut()
        for rcpt in (ALICE, "nobody@example.org"):
            code = wait_for(lambda: (lambda c: c if c != 250 else None)(rcpt_code(p.smtp_port, rcpt)), 30, "a temporary failure")
            assert code == 451, (rcpt, code)

        proxy.restore()
        wait_for(lambda: rcpt_code(p.smtp_port, ALICE) == 250, 60, "RCPT to work again")
        assert rcpt_code(p.smtp_port, "nobody@example.org") == 550
        p.assert_works(ALICE)
    finally:
        proxy.close()

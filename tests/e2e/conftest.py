"""Shared harness of the end-to-end tests: they drive the real `pampa` binary.

Environment:
    PAMPA_BIN                the pampa binary (required; ops/test.sh sets it)
    PAMPA_NATS_SERVER        nats-server >= 2.10; tests that need NATS skip without it
    PAMPA_TEST_MYSQL_URL     mysql://root@127.0.0.1:3306; MariaDB tests skip without it
    PAMPA_TEST_POSTGRES_URL  postgres://postgres@127.0.0.1:5432; PostgreSQL tests skip without it

Every test gets a `harness`: it starts what the test asks for (NATS, a throwaway
database, pampa instances) and tears it all down in reverse order, so pampa is
stopped before its NATS server or its database go away.

No test sleeps for a fixed time where it can wait for a condition: use `wait_for`.
"""

from __future__ import annotations

import contextlib
import email.utils
import os
import shutil
import signal
import smtplib
import socket
import struct
import subprocess
import tempfile
import textwrap
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable

import pytest

LOCALHOST = "127.0.0.1"
REPO = Path(__file__).resolve().parents[2]
READY_TIMEOUT = 60.0
DELIVERY_TIMEOUT = 30.0
CLI_TIMEOUT = 60.0
LOG_TAIL_LINES = 200

# Loopback requests must never go through an http_proxy from the environment.
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


# ----------------------------------------------------------------- helpers --


# Ports are handed out below the kernel's ephemeral range (32768-60999 on Linux),
# so no client socket (the rbl stage's UDP resolver, smtplib, radclient) can take
# one between the check here and pampa's bind: a port that bind(0) returned is an
# ephemeral port, and an outgoing UDP query can grab it a moment later.
_PORT_RANGE = (20000, 32000)
_handed_out: set[int] = set()
_next_port = _PORT_RANGE[0] + (os.getpid() * 7919) % (_PORT_RANGE[1] - _PORT_RANGE[0])


def _bindable(port: int) -> bool:
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind((LOCALHOST, port))
            except OSError:
                return False
    return True


def free_port() -> int:
    """A port on 127.0.0.1, free for both TCP and UDP a moment ago, outside the
    ephemeral range, and not handed out before in this test run."""
    global _next_port
    span = _PORT_RANGE[1] - _PORT_RANGE[0]
    for _ in range(span):
        port = _next_port
        _next_port = _PORT_RANGE[0] + (_next_port + 1 - _PORT_RANGE[0]) % span
        if port not in _handed_out and _bindable(port):
            _handed_out.add(port)
            return port
    raise RuntimeError(f"no free port in {_PORT_RANGE}")


def port_accepts(port: int, host: str = LOCALHOST) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    """Polls `predicate` until it returns something truthy, and returns that.

    Fails with "timed out after N s waiting for WHAT" otherwise.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return f"({path} does not exist)"
    tail = text.splitlines()[-lines:]
    return "\n".join(tail)


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, (str, Path)):
        s = str(value).replace("\\", "\\\\").replace('"', '\\"')
        return f'"{s}"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {value!r}")


def toml_document(top: dict[str, Any], sections: dict[str, dict[str, Any]]) -> str:
    out = [f"{k} = {toml_value(v)}" for k, v in top.items()]
    for name, table in sections.items():
        if not table:
            continue
        out.append("")
        out.append(f"[{name}]")
        out.extend(f"{k} = {toml_value(v)}" for k, v in table.items())
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------ messages --


def make_message(sender: str, recipients: Iterable[str], note: str = "") -> tuple[str, bytes]:
    """A unique RFC 5322 message with CRLF line ends.

    Returns (marker, bytes). The marker is in the Subject, the Message-ID and the
    body, so a delivered copy can be found by it. The body exercises what must
    survive unchanged: a dot-stuffed line, 8-bit UTF-8, tabs, trailing spaces and
    an empty line.
    """
    marker = uuid.uuid4().hex
    to = ", ".join(recipients)
    lines = [
        f"From: Test Sender <{sender}>",
        f"To: {to}",
        f"Subject: pampa e2e {marker} {note}".rstrip(),
        f"Message-ID: <{marker}@e2e.test>",
        f"Date: {email.utils.formatdate(localtime=False)}",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=utf-8",
        "Content-Transfer-Encoding: 8bit",
        "",
        f"marker {marker}",
        ".a line that starts with a dot",
        "..two dots",
        "Grüße aus Córdoba, ñandú en la pampa",
        "tab\there and trailing spaces   ",
        "",
        "the end",
    ]
    return marker, ("\r\n".join(lines) + "\r\n").encode("utf-8")


def lf(data: bytes) -> bytes:
    """How pampa stores a message in a Maildir: LF line ends, as Dovecot's LDA does."""
    return data.replace(b"\r\n", b"\n")


def smtp_connect(port: int, timeout: float = 30) -> smtplib.SMTP:
    s = smtplib.SMTP(LOCALHOST, port, timeout=timeout)
    s.ehlo("client.e2e.test")
    return s


def send_message(port: int, sender: str, recipients: list[str], msg: bytes) -> None:
    """Sends one message in its own session; raises smtplib's exceptions on refusal."""
    with smtp_connect(port) as s:
        opts = ["BODY=8BITMIME"] if s.has_extn("8bitmime") else []
        refused = s.sendmail(sender, recipients, msg, mail_options=opts)
        assert not refused, f"some recipients were refused: {refused}"


class RawSmtp:
    """A bare SMTP client for what smtplib won't send: raw bytes, broken sessions."""

    def __init__(self, port: int, timeout: float = 30):
        self.sock = socket.create_connection((LOCALHOST, port), timeout=timeout)
        self.buf = b""

    def __enter__(self) -> "RawSmtp":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _line(self) -> bytes | None:
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                return None
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return line.rstrip(b"\r")

    def reply(self) -> tuple[int, bytes]:
        """Reads one (possibly multi-line) reply: (code, text of all lines)."""
        texts = []
        while True:
            line = self._line()
            if line is None:
                raise ConnectionError(f"server closed the connection; partial reply: {texts!r}")
            assert len(line) >= 3 and line[:3].isdigit(), f"not an SMTP reply line: {line!r}"
            texts.append(line[4:])
            if line[3:4] != b"-":
                return int(line[:3]), b"\n".join(texts)

    def cmd(self, line: bytes | str) -> tuple[int, bytes]:
        if isinstance(line, str):
            line = line.encode("ascii")
        self.send(line + b"\r\n")
        return self.reply()

    def closed_by_peer(self, timeout: float = 10) -> bool:
        """True when the server closes the connection within `timeout`."""
        self.sock.settimeout(timeout)
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except socket.timeout:
            return False


# ---------------------------------------------------------------- services --


class NatsServer:
    """A throwaway `nats-server -js` on a free port, with its own store dir."""

    def __init__(self, binary: str, workdir: Path):
        self.binary = binary
        self.port = free_port()
        self.store_dir = workdir / "nats-store"
        self.log_path = workdir / "nats-server.log"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"nats://{LOCALHOST}:{self.port}"

    def start(self) -> None:
        assert self.proc is None, "nats-server is already running"
        self.store_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [self.binary, "-js", "-a", LOCALHOST, "-p", str(self.port), "-sd", str(self.store_dir)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        try:
            wait_for(self._up, 30, f"nats-server to accept connections on port {self.port}")
        except AssertionError as e:
            raise AssertionError(f"{e}\n--- nats-server log ---\n{log_tail(self.log_path)}") from None

    def _up(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"nats-server exited with {self.proc.returncode}\n{log_tail(self.log_path)}")
        return port_accepts(self.port)

    def stop(self) -> None:
        """Stops the server (pampa sees its connection drop); the store dir stays."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        wait_for(lambda: not port_accepts(self.port), 10, f"port {self.port} to be closed")


def _mysql_cli(base_url: str, sql: str) -> None:
    u = urllib.parse.urlsplit(base_url)
    client = shutil.which("mariadb") or shutil.which("mysql")
    if client is None:
        pytest.skip("neither the mariadb nor the mysql client is installed")
    args = [client, f"-u{u.username or 'root'}", f"-h{u.hostname or LOCALHOST}", f"-P{u.port or 3306}"]
    if u.password:
        args.append(f"-p{urllib.parse.unquote(u.password)}")
    subprocess.run(args + ["-e", sql], check=True, capture_output=True, text=True, timeout=60)


def _psql(base_url: str, sql: str) -> None:
    client = shutil.which("psql")
    if client is None:
        return
    url = base_url.rstrip("/") + "/postgres"
    subprocess.run([client, "-X", "-q", url, "-c", sql], check=True, capture_output=True, text=True, timeout=60)


# ------------------------------------------------------------------- pampa --


class Pampa:
    """One pampa instance: its config file, data dir, ports and (when started) process."""

    def __init__(
        self,
        binary: str,
        workdir: Path,
        bus_url: str = "embedded",
        db_url: str | None = None,
        smtp: dict[str, Any] | None = None,
        bus: dict[str, Any] | None = None,
    ):
        self.binary = binary
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.data_dir = workdir / "data"
        self.smtp_port = free_port()
        self.metrics_port = free_port()
        self.radius_auth_port = free_port()
        self.radius_acct_port = free_port()
        self.dns_port = free_port()
        self.config_path = workdir / "pampa.toml"
        self.log_path = workdir / "pampa.log"
        self.proc: subprocess.Popen | None = None
        self.crashed_with: int | None = None
        # Environment for pampa's processes beyond the test's own (NOTIFY_SOCKET, say).
        self.extra_env: dict[str, str] = {}

        self.bus_conf: dict[str, Any] = {"url": bus_url, **(bus or {})}
        self.db_conf: dict[str, Any] = {"url": db_url} if db_url else {}
        self.smtp_conf: dict[str, Any] = {"listen": f"{LOCALHOST}:{self.smtp_port}", "hostname": "mx.test"}
        self.dns_conf: dict[str, Any] = {"listen": f"{LOCALHOST}:{self.dns_port}"}
        self.radius_conf: dict[str, Any] = {
            "auth_listen": f"{LOCALHOST}:{self.radius_auth_port}",
            "acct_listen": f"{LOCALHOST}:{self.radius_acct_port}",
        }
        # Raw TOML appended to the file, for sections the helpers above don't model
        # ([pipeline], [stages.*] with arrays of tables and floats).
        self.extra_toml = ""
        self.configure(smtp=smtp)

    def configure(
        self,
        smtp: dict[str, Any] | None = None,
        bus: dict[str, Any] | None = None,
        radius: dict[str, Any] | None = None,
        dns: dict[str, Any] | None = None,
    ) -> None:
        """Merges settings into the config and writes the file (takes effect at the next start)."""
        self.dns_conf.update(dns or {})
        self.smtp_conf.update(smtp or {})
        self.bus_conf.update(bus or {})
        self.radius_conf.update(radius or {})
        sections: dict[str, dict[str, Any]] = {
            "bus": self.bus_conf,
            "db": self.db_conf,
            "smtp": self.smtp_conf,
            "metrics": {"listen": self.metrics_listen},
            "radius": self.radius_conf,
            "dns": self.dns_conf,
        }
        text = toml_document({"data_dir": str(self.data_dir)}, sections)
        self.config_path.write_text(text + ("\n" + self.extra_toml if self.extra_toml else ""))

    def add_toml(self, text: str) -> None:
        """Appends raw TOML to the config (takes effect at the next start)."""
        self.extra_toml += textwrap.dedent(text).strip() + "\n"
        self.configure()

    @property
    def metrics_listen(self) -> str:
        return f"{LOCALHOST}:{self.metrics_port}"

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.setdefault("RUST_BACKTRACE", "1")
        env.update(self.extra_env)
        return env

    # ---- CLI

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """Runs `pampa --config FILE ARGS...`; with check, a non-zero exit fails the test."""
        cmd = [self.binary, "--config", str(self.config_path), *args]
        cp = subprocess.run(cmd, capture_output=True, text=True, timeout=CLI_TIMEOUT, env=self._env())
        if check and cp.returncode != 0:
            raise AssertionError(
                f"`pampa {' '.join(args)}` exited with {cp.returncode}\n"
                f"--- stdout ---\n{cp.stdout}\n--- stderr ---\n{cp.stderr}"
            )
        return cp

    def setup_users(self, domain: str, *users: str) -> None:
        """Adds the domain and `user@domain` for each user, with password 'secret'."""
        self.cli("domain", "add", domain)
        for user in users:
            self.cli("user", "add", f"{user}@{domain}", "--password", "secret")

    # ---- the `up` process

    def start(self, *command: str) -> None:
        """Starts `pampa --config FILE up` (or the given command, e.g. "run", "deliver")."""
        command = command or ("up",)
        self.command = command
        assert self.proc is None, "pampa is already running"
        self.crashed_with = None
        self._last_ready_status: int | None = None
        with open(self.log_path, "ab") as log:
            log.write(f"===== pampa --config {self.config_path} {' '.join(command)} =====\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                [self.binary, "--config", str(self.config_path), *command],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self._env(),
            )
        try:
            wait_for(self._ready, READY_TIMEOUT, f"pampa to be ready (GET http://{self.metrics_listen}/readyz)", 0.1)
        except AssertionError as e:
            self._reap()
            last = self._last_ready_status
            raise AssertionError(
                f"{e} (last /readyz status: {last or 'no answer'})\n"
                f"--- pampa log ({self.log_path}) ---\n{log_tail(self.log_path)}"
            ) from None

    def _ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"pampa exited with {self.proc.returncode} before it was ready")
        status = self.http_status("/readyz")
        self._last_ready_status = status
        return status == 200

    def http_get(self, path: str) -> tuple[int, str]:
        """GET http://{metrics.listen}{path} -> (status, body); status 0 if nothing answers."""
        try:
            with _NO_PROXY.open(f"http://{self.metrics_listen}{path}", timeout=5) as r:
                return r.status, r.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode("utf-8", "replace")
        except (urllib.error.URLError, OSError):
            return 0, ""

    def http_status(self, path: str) -> int:
        return self.http_get(path)[0]

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check_alive(self) -> None:
        """Fails when the `up` process has died on its own."""
        if self.proc is not None and self.proc.poll() is not None:
            self.crashed_with = self.proc.returncode
            raise AssertionError(
                f"pampa exited unexpectedly with {self.proc.returncode}\n"
                f"--- pampa log ---\n{log_tail(self.log_path)}"
            )

    def _reap(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()
        self.proc = None

    def kill9(self) -> None:
        """SIGKILL: a crash with no chance to flush or clean up."""
        assert self.proc is not None, "pampa is not running"
        self.check_alive()
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.proc = None

    def stop(self, timeout: float = 20) -> None:
        """SIGTERM and wait for a clean exit (SIGKILL after `timeout`)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                self.proc = None
                raise AssertionError(f"pampa did not exit within {timeout:g} s of SIGTERM") from None
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start(*getattr(self, "command", ()))

    # ---- Maildirs

    def maildir(self, address: str) -> Path:
        user, _, domain = address.partition("@")
        return self.data_dir / "mail" / domain / user

    def inbox(self, address: str) -> list[Path]:
        """The files in the Maildir's new/ folder (dot files are not messages)."""
        new = self.maildir(address) / "new"
        if not new.is_dir():
            return []
        return sorted(p for p in new.iterdir() if p.is_file() and not p.name.startswith("."))

    def copies(self, address: str, marker: str) -> list[Path]:
        """The files in new/ that hold `marker`."""
        m = marker.encode()
        found = []
        for p in self.inbox(address):
            try:
                if m in p.read_bytes():
                    found.append(p)
            except FileNotFoundError:
                pass  # moved away while we looked
        return found

    def wait_delivered(self, address: str, marker: str, timeout: float = DELIVERY_TIMEOUT) -> Path:
        """Waits until `marker` lands in `address`'s new/, and returns that one file."""
        files = wait_for(
            lambda: self.copies(address, marker), timeout, f"message {marker} in {self.maildir(address)}/new"
        )
        assert len(files) == 1, f"message {marker} was delivered {len(files)} times to {address}: {files}"
        return files[0]

    def send(self, sender: str, recipients: list[str], note: str = "") -> tuple[str, bytes]:
        """Sends a fresh message; returns (marker, message bytes)."""
        marker, msg = make_message(sender, recipients, note)
        send_message(self.smtp_port, sender, recipients, msg)
        return marker, msg

    def assert_works(self, address: str) -> None:
        """A normal session still works: a new message is accepted and delivered."""
        self.check_alive()
        marker, _ = self.send("check@e2e.test", [address], "still works")
        self.wait_delivered(address, marker)


def assert_delivered_verbatim(path: Path, sent: bytes) -> None:
    """The file is pampa's added headers, then the sent message with LF line ends."""
    data = path.read_bytes()
    expected = lf(sent)
    assert data.endswith(expected), (
        f"{path} does not end with the sent message (CRLF -> LF)\n"
        f"--- file ---\n{data[:4000]!r}\n--- expected tail ---\n{expected!r}"
    )
    added = data[: len(data) - len(expected)]
    assert b"\r" not in added, f"pampa's added headers have CR characters: {added!r}"
    assert added.startswith(b"Received:") or b"\nReceived:" in added, (
        f"no Received: header was prepended to {path}: {added!r}"
    )
    for line in added.split(b"\n")[:-1]:
        assert line[:1] in (b" ", b"\t") or b":" in line, f"not a header line in pampa's added headers: {line!r}"


# ---------------------------------------------------------------- harness --


class Rbldnsd:
    """rbldnsd (Debian's package) serving DNSBL zones on 127.0.0.1:PORT over UDP.

    rbldnsd refuses to run as root, so it runs as nobody, from a world-readable
    directory outside pytest's private tmp tree.
    """

    binary = os.environ.get("PAMPA_RBLDNSD", "/usr/sbin/rbldnsd")

    def __init__(self, zones: dict[str, tuple[str, str]]):
        self.dir = Path(tempfile.mkdtemp(prefix="pampa-rbldnsd-"))
        os.chmod(self.dir, 0o755)
        self.port = free_port()
        self.args = []
        for i, (zone, (kind, text)) in enumerate(zones.items()):
            name = f"zone{i}.txt"
            (self.dir / name).write_text(textwrap.dedent(text))
            os.chmod(self.dir / name, 0o644)
            self.args.append(f"{zone}:{kind}:{name}")
        self.proc: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"{LOCALHOST}:{self.port}"

    def start(self) -> None:
        if not Path(self.binary).exists():
            raise AssertionError(f"{self.binary} is missing (ops/test.sh installs rbldnsd)")
        self.proc = subprocess.Popen(
            [self.binary, "-n", "-u", "nobody", "-b", f"{LOCALHOST}/{self.port}", "-r", str(self.dir), *self.args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        first_zone = self.args[0].split(":")[0]
        wait_for(lambda: self.query_a(f"2.0.0.127.{first_zone}") is not None, 20, "rbldnsd to answer")

    def query_a(self, name: str) -> int | None:
        """The DNS rcode of an A query, or None when nothing answers."""
        header = struct.pack(">HHHHHH", 0x5A5A, 0x0100, 1, 0, 0, 0)
        qname = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(0.5)
            try:
                sock.sendto(header + qname + struct.pack(">HH", 1, 1), (LOCALHOST, self.port))
                data = sock.recv(512)
            except OSError:
                return None
        return data[3] & 0x0F

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)


class Clamd:
    """clamd (Debian's clamav-daemon) with the project's test signature database."""

    def __init__(self, workdir: Path):
        self.dir = workdir
        self.port = free_port()
        self.db = Path(os.environ.get("PAMPA_CLAMAV_TEST_DB", REPO / "ops/clamav/testdb"))
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"tcp://{LOCALHOST}:{self.port}"

    def start(self) -> None:
        script = REPO / "ops/clamav/start-clamd.sh"
        self.log = open(self.dir / "clamd.out", "ab")
        self.proc = subprocess.Popen(
            ["bash", str(script), str(self.db), str(self.port), str(self.dir)],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        wait_for(self.ping, 120, f"clamd to answer PING on {self.port}", 0.2)

    def ping(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"clamd exited with {self.proc.returncode}: {log_tail(self.dir / 'clamd.out')}")
        try:
            with socket.create_connection((LOCALHOST, self.port), timeout=1) as sock:
                sock.sendall(b"zPING\0")
                return sock.recv(16).startswith(b"PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


class Harness:
    """Owns everything a test starts, and tears it down in reverse order."""

    def __init__(self, binary: str, workdir: Path):
        self.binary = binary
        self.workdir = workdir
        self._stack = contextlib.ExitStack()
        self._pampas: list[Pampa] = []
        self._n = 0

    def _subdir(self, name: str) -> Path:
        self._n += 1
        d = self.workdir / f"{self._n:02d}-{name}"
        d.mkdir(parents=True)
        return d

    def nats(self) -> NatsServer:
        binary = os.environ.get("PAMPA_NATS_SERVER")
        if not binary:
            pytest.skip("PAMPA_NATS_SERVER is not set (ops/test.sh sets it to a nats-server >= 2.10)")
        server = NatsServer(binary, self._subdir("nats"))
        self._stack.callback(server.stop)
        server.start()
        return server

    def mysql_url(self) -> str:
        """A fresh MariaDB database, dropped at the end: mysql://.../pampa_e2e_XXXX."""
        base = os.environ.get("PAMPA_TEST_MYSQL_URL")
        if not base:
            pytest.skip("PAMPA_TEST_MYSQL_URL is not set (e.g. mysql://root@127.0.0.1:3306)")
        name = f"pampa_e2e_{uuid.uuid4().hex[:12]}"
        _mysql_cli(base, f"CREATE DATABASE {name}")
        self._stack.callback(_mysql_cli, base, f"DROP DATABASE IF EXISTS {name}")
        return f"{base.rstrip('/')}/{name}"

    def postgres_url(self) -> str:
        """A PostgreSQL database name that does not exist yet: pampa creates it. Dropped at the end."""
        base = os.environ.get("PAMPA_TEST_POSTGRES_URL")
        if not base:
            pytest.skip("PAMPA_TEST_POSTGRES_URL is not set (e.g. postgres://postgres@127.0.0.1:5432)")
        name = f"pampa_e2e_{uuid.uuid4().hex[:12]}"
        self._stack.callback(_psql, base, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        return f"{base.rstrip('/')}/{name}"

    def rbldnsd(self, zones: dict[str, tuple[str, str]]) -> "Rbldnsd":
        """A real rbldnsd on a free loopback port; zones: name -> (dataset type, file text)."""
        server = Rbldnsd(zones)
        self._stack.callback(server.stop)
        server.start()
        return server

    def clamd(self) -> "Clamd":
        """A real clamd with the project's test signatures, on a free loopback port."""
        server = Clamd(self._subdir("clamd"))
        self._stack.callback(server.stop)
        server.start()
        return server

    def pampa(self, **kwargs: Any) -> Pampa:
        """A configured (not started) pampa instance; see Pampa for the arguments."""
        p = Pampa(self.binary, self._subdir("pampa"), **kwargs)
        self._pampas.append(p)
        self._stack.callback(self._stop_pampa, p)
        return p

    def stack(self, kind: str) -> Pampa:
        """A pampa on one of the named stacks used by parametrized tests."""
        if kind == "embedded":
            return self.pampa()
        if kind == "nats":
            return self.pampa(bus_url=self.nats().url)
        if kind == "nats-mariadb":
            nats = self.nats()
            return self.pampa(bus_url=nats.url, db_url=self.mysql_url())
        if kind == "embedded-postgres":
            return self.pampa(db_url=self.postgres_url())
        raise ValueError(f"unknown stack {kind!r}")

    def _stop_pampa(self, p: Pampa) -> None:
        died = p.proc is not None and p.proc.poll() is not None
        code = p.proc.returncode if died and p.proc is not None else p.crashed_with
        try:
            p.stop()
        finally:
            print(f"--- pampa log ({p.log_path}) ---\n{log_tail(p.log_path)}")
        if died or code is not None:
            raise AssertionError(f"pampa exited on its own during the test, with {code}")

    def close(self) -> None:
        self._stack.close()


def _pampa_bin() -> str:
    binary = os.environ.get("PAMPA_BIN")
    if not binary:
        pytest.fail("PAMPA_BIN is not set: point it at the pampa binary (ops/test.sh does)", pytrace=False)
    path = Path(binary)
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(f"PAMPA_BIN={binary} is not an executable file (run `cargo build --bin pampa`)", pytrace=False)
    return str(path.resolve())


@pytest.fixture(scope="session")
def pampa_bin() -> str:
    return _pampa_bin()


@pytest.fixture
def harness(pampa_bin: str, tmp_path: Path):
    h = Harness(pampa_bin, tmp_path)
    try:
        yield h
    finally:
        h.close()


@pytest.fixture(scope="module")
def module_harness(pampa_bin: str, tmp_path_factory: pytest.TempPathFactory):
    h = Harness(pampa_bin, tmp_path_factory.mktemp("module"))
    try:
        yield h
    finally:
        h.close()

"""A throwaway Cyrus IMAP server (LMTP + an admin IMAP port) for the end-to-end tests.

Debian's cyrus-imapd 3.6 runs as `master -D -C imapd.conf -M cyrus.conf`, with
everything it writes (configdirectory, the partition, sockets, locks, proc
files) in one temp dir:

    cy = start_cyrus(harness, {"alice@example.org": None, "bob@example.org": 2})  # quota in KiB
    smtplib.LMTP(str(cy.lmtp_socket))            # or smtplib.LMTP(LOCALHOST, cy.lmtp_port)
    cy.messages("alice@example.org", "Spam")     # what alice+Spam@example.org received (IMAP)
    cy.spool_files(marker)                       # message files in the partition with the marker
    cy.stop(); cy.start()                        # same mail store

Users are created over IMAP by the admin `cyrus` (a user's INBOX and a Spam folder
with `anyone p`, so that lmtpd may post user+Spam@domain into it), so an address
that is not in `users` is unknown to Cyrus. No autocreate: Cyrus would create any
INBOX on first delivery (autocreate_post + autocreate_quota >= 0).

Replies a client sees (Cyrus 3.6, lmtp_over_quota_perm_failure: no, the default):
  * RCPT TO an unknown user:  a three-line 550:
        550-Mailbox unknown.  Either there is no mailbox associated with this
        550-name or you do not have authorization to see it.
        550 5.1.1 User unknown
  * RCPT TO a user already over quota:   452 4.2.2 Over quota SESSIONID=<...>
  * a message that takes a user past the quota is still accepted (the check is
    "already over"), unless lmtp_strict_quota: yes; a recipient that goes over
    within one transaction gets 452 4.2.2 Over quota after DATA.
  * after DATA, per accepted recipient: 250 2.1.5 Success SESSIONID=<...>
  * RCPT TO user+Spam@domain (case-insensitive with lmtp_fuzzy_mailbox_match):
    saved into the user's "Spam" folder when it exists and grants `anyone` the
    "p" right; otherwise into the INBOX.
  * TCP LMTP without `lmtpd -a`: MAIL FROM gets "430 Authentication required"
    (the unix socket is always preauthenticated).
Cyrus suppresses duplicates (duplicatesuppression: yes): a second delivery of the
same Message-ID to the same mailbox gets 250 and stores nothing.

Cyrus logs only to syslog: with no /dev/log (a container), its log is lost; the
replies above are the diagnosis.

Every Cyrus program is given `-C imapd.conf`: master does not pass its -C to the
services it starts, which would otherwise read (and write state under)
/etc/imapd.conf's /var/lib/cyrus.

Logins: imapd checks passwords through saslauthd (sasl_pwcheck_method: saslauthd),
answered by a thread here that accepts any user and password, on a unix socket in
the run dir. The admin is `cyrus`; messages() logs in as the user itself.

As root (a container): master drops to the `cyrus` user (cyrus_user), which could
not enter pytest's 0700 tmp tree, so the whole server dir is a world-traversable
/tmp/pampa-cyrus-* owned by cyrus:mail, linked from the workdir as cyrus/ (removed
by close()). As another user, cyrus_user is that user and the dir is in the workdir.
"""

from __future__ import annotations

import grp
import imaplib
import os
import pwd
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
from pathlib import Path

from conftest import LOCALHOST, free_port, log_tail, wait_for, port_accepts

CYRUS_LIBEXEC = Path(os.environ.get("PAMPA_CYRUS_LIBEXEC", "/usr/lib/cyrus/bin"))
MASTER_BIN = CYRUS_LIBEXEC / "master"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
ADMIN = "cyrus"


def cyrus_available() -> bool:
    return all(os.access(CYRUS_LIBEXEC / name, os.X_OK) for name in ("master", "lmtpd", "imapd", "ctl_cyrusdb"))


def _split(address: str) -> tuple[str, str]:
    local, _, domain = address.rpartition("@")
    if not local or not domain:
        raise ValueError(f"not a user@domain address: {address!r}")
    return local, domain


def _mailbox(address: str, folder: str = "INBOX") -> str:
    """The admin's name of a user's folder (virtdomains: userid, unixhierarchysep: yes)."""
    local, domain = _split(address)
    if folder.upper() == "INBOX":
        return f"user/{local}@{domain}"
    return f"user/{local}/{folder}@{domain}"


class _FakeSaslauthd:
    """saslauthd's protocol on a unix socket, saying OK to every login.

    The client sends length-prefixed (2 bytes, big-endian) login, password,
    service and realm; the answer is one length-prefixed "OK" or "NO ...".
    """

    def __init__(self, path: Path):
        self.path = path
        self.path.unlink(missing_ok=True)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        os.chmod(path, 0o777)
        self.sock.listen(16)
        self.logins: list[str] = []
        self._stopped = False
        self.thread = threading.Thread(target=self._serve, name="fake-saslauthd", daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self._stopped:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                try:
                    conn.settimeout(5)
                    fields = [self._field(conn) for _ in range(4)]
                    self.logins.append(fields[0].decode(errors="replace"))
                    conn.sendall(struct.pack(">H", 2) + b"OK")
                except (OSError, EOFError):
                    pass

    @staticmethod
    def _field(conn: socket.socket) -> bytes:
        def exact(n: int) -> bytes:
            buf = b""
            while len(buf) < n:
                chunk = conn.recv(n - len(buf))
                if not chunk:
                    raise EOFError
                buf += chunk
            return buf

        (n,) = struct.unpack(">H", exact(2))
        return exact(n)

    def close(self) -> None:
        self._stopped = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self.thread.join(timeout=5)
        self.path.unlink(missing_ok=True)


class Cyrus:
    """Cyrus lmtpd on the unix socket lmtp_socket and on 127.0.0.1:lmtp_port (preauthenticated,
    `lmtpd -a`), and imapd on 127.0.0.1:imap_port for the admin and for reading mail back."""

    def __init__(self, workdir: Path, users: dict[str, int | None], options: dict[str, str] | None = None):
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.users: dict[str, int | None] = dict(users)
        self.options = dict(options or {})
        self.lmtp_port = free_port()
        self.imap_port = free_port()
        while self.imap_port == self.lmtp_port:
            self.imap_port = free_port()
        self.proc: subprocess.Popen | None = None
        self._log_file = None
        self._authd: _FakeSaslauthd | None = None
        self._public: Path | None = None
        self._created: set[str] = set()

        if os.getuid() == 0:
            # master drops to cyrus_user, which cannot enter pytest's 0700 tmp tree.
            self.cyrus_user = "cyrus"
            self._public = Path(tempfile.mkdtemp(prefix="pampa-cyrus-"))
            os.chmod(self._public, 0o755)
            self.root = self._public
            (self.dir / "cyrus").symlink_to(self.root)
        else:
            self.cyrus_user = pwd.getpwuid(os.getuid()).pw_name
            self.root = self.dir / "cyrus"
            self.root.mkdir()
        entry = pwd.getpwnam(self.cyrus_user)
        self.uid, self.gid = entry.pw_uid, entry.pw_gid
        self.config_dir = self.root / "conf"
        self.partition = self.root / "spool"
        self.run_dir = self.root / "run"
        self.config_path = self.root / "imapd.conf"
        self.cyrus_conf_path = self.root / "cyrus.conf"
        self.lmtp_socket = self.run_dir / "lmtp"
        self.out_path = self.dir / "master.out"

    # ------------------------------------------------------------- config --

    def _imapd_conf(self) -> str:
        settings = {
            "configdirectory": str(self.config_dir),
            "defaultpartition": "default",
            "partition-default": str(self.partition),
            "lmtpsocket": str(self.lmtp_socket),
            "idlesocket": str(self.run_dir / "idle"),
            "notifysocket": str(self.run_dir / "notify"),
            "proc_path": str(self.run_dir / "proc"),
            "mboxname_lockpath": str(self.run_dir / "lock"),
            "cyrus_user": self.cyrus_user,
            "cyrus_group": grp.getgrgid(self.gid).gr_name,
            "servername": "cyrus.e2e.test",
            "syslog_prefix": "pampa-cyrus",
            # alice@example.org is the userid; folders are user/alice/Spam@example.org.
            "virtdomains": "userid",
            "unixhierarchysep": "yes",
            "altnamespace": "yes",
            "lmtp_downcase_rcpt": "yes",
            # user+spam@ finds the folder "Spam".
            "lmtp_fuzzy_mailbox_match": "yes",
            "autocreate_post": "no",
            "admins": ADMIN,
            "allowplaintext": "yes",
            "sasl_pwcheck_method": "saslauthd",
            "sasl_saslauthd_path": str(self.run_dir / "saslauthd"),
            "hashimapspool": "false",
            "umask": "022",
        }
        settings.update(self.options)
        return "".join(f"{k}: {v}\n" for k, v in settings.items())

    def _cyrus_conf(self) -> str:
        c = f"-C {self.config_path}"
        return (
            "START {\n"
            f'  recover cmd="ctl_cyrusdb {c} -r"\n'
            "}\n"
            "SERVICES {\n"
            f'  lmtpunix cmd="lmtpd {c}" listen="{self.lmtp_socket}" prefork=0 maxchild=20\n'
            f'  lmtp cmd="lmtpd {c} -a" listen="{LOCALHOST}:{self.lmtp_port}" prefork=0 maxchild=20\n'
            f'  imap cmd="imapd {c}" listen="{LOCALHOST}:{self.imap_port}" prefork=0 maxchild=10\n'
            "}\n"
            "EVENTS {\n"
            "}\n"
        )

    # ------------------------------------------------------------ process --

    def start(self) -> None:
        assert self.proc is None, "cyrus is already running"
        # conf/socket: services bind their client sockets (idle, notify) there.
        for d in (self.config_dir, self.config_dir / "socket", self.partition, self.run_dir):
            d.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self._imapd_conf())
        self.cyrus_conf_path.write_text(self._cyrus_conf())
        (self.run_dir / "master.pid").unlink(missing_ok=True)
        self.lmtp_socket.unlink(missing_ok=True)
        if os.getuid() == 0:
            for path in [self.root, *self.root.rglob("*")]:
                os.lchown(path, self.uid, self.gid)
        self._authd = _FakeSaslauthd(self.run_dir / "saslauthd")
        self._log_file = open(self.out_path, "ab")
        self.proc = subprocess.Popen(
            [str(MASTER_BIN), "-D", "-C", str(self.config_path), "-M", str(self.cyrus_conf_path),
             "-p", str(self.run_dir / "master.pid")],
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=self.root,
            start_new_session=True,
        )
        try:
            wait_for(self._greets, START_TIMEOUT, f"cyrus lmtpd to greet with 220 on port {self.lmtp_port} and {self.lmtp_socket}",
                     interval=0.1)
            wait_for(self._imap_up, START_TIMEOUT, f"cyrus imapd on port {self.imap_port}", interval=0.1)
            for address in self.users:
                self._create_user(address)
        except Exception as e:
            out = self.log
            self.stop()
            raise AssertionError(f"{e}\n--- cyrus master output ---\n{out}") from None

    def _greet(self, family: int, addr) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"cyrus master exited with {self.proc.returncode}\n{self.log}")
        try:
            with socket.socket(family, socket.SOCK_STREAM) as s:
                s.settimeout(5)
                s.connect(addr)
                greeting = s.recv(512)
                s.sendall(b"QUIT\r\n")
                return greeting.startswith(b"220")
        except OSError:
            return False

    def _greets(self) -> bool:
        return self._greet(socket.AF_INET, (LOCALHOST, self.lmtp_port)) and self._greet(socket.AF_UNIX, str(self.lmtp_socket))

    def _imap_up(self) -> bool:
        try:
            with socket.create_connection((LOCALHOST, self.imap_port), timeout=2) as s:
                s.settimeout(5)
                return s.recv(512).startswith(b"* OK")
        except OSError:
            return False

    def stop(self) -> None:
        """Stops master and its services and waits; the mail store stays, start() may follow."""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout=STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    pass
            # Services outliving master (same process group, start_new_session).
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            if self.proc.poll() is None:
                self.proc.wait()
            self.proc = None
            wait_for(lambda: not port_accepts(self.lmtp_port), 10, f"cyrus's port {self.lmtp_port} to be closed")
        if self._authd is not None:
            self._authd.close()
            self._authd = None
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None


    def close(self) -> None:
        """stop(), and remove the dir made outside the workdir (as root: the whole server), if any."""
        self.stop()
        if self._public is not None:
            shutil.rmtree(self._public, ignore_errors=True)
            self._public = None

    # --------------------------------------------------------------- IMAP --

    def imap(self, user: str = ADMIN) -> imaplib.IMAP4:
        """A logged-in IMAP session (any password is accepted) as the admin or as a user."""
        m = imaplib.IMAP4(LOCALHOST, self.imap_port, timeout=10)
        m.login(user, "secret")
        return m

    @staticmethod
    def _ok(reply: tuple[str, list], what: str) -> list:
        typ, data = reply
        if typ != "OK":
            raise AssertionError(f"cyrus IMAP {what}: {typ} {data}")
        return data

    def _create_user(self, address: str) -> None:
        if address in self._created:
            return
        m = self.imap()
        try:
            for box in (_mailbox(address), _mailbox(address, "Spam")):
                typ, data = m.create(box)
                if typ != "OK" and b"already exists" not in b" ".join(d or b"" for d in data):
                    raise AssertionError(f"cyrus IMAP CREATE {box}: {typ} {data}")
            # lmtpd posts user+Spam@ into the folder only if its ACL lets the
            # (anonymous) poster post.
            self._ok(m.setacl(_mailbox(address, "Spam"), "anyone", "p"), "SETACL")
            quota = self.users.get(address)
            self._set_quota(m, address, quota)
        finally:
            m.logout()
        self._created.add(address)

    @staticmethod
    def _set_quota(m: imaplib.IMAP4, address: str, quota_kib: int | None) -> None:
        limits = "()" if quota_kib is None else f"(STORAGE {int(quota_kib)})"
        Cyrus._ok(m.setquota(_mailbox(address), limits), "SETQUOTA")

    def add_user(self, address: str, quota_kib: int | None = None) -> None:
        self.users[address] = quota_kib
        if self.proc is not None:
            self._create_user(address)

    def set_quota(self, address: str, quota_kib: int | None) -> None:
        """Sets (None: removes) a user's storage quota in KiB; the next delivery sees it."""
        if address not in self.users:
            raise KeyError(f"no such user: {address}")
        self.users[address] = quota_kib
        m = self.imap()
        try:
            self._set_quota(m, address, quota_kib)
        finally:
            m.logout()

    def messages(self, address: str, folder: str = "INBOX") -> list[bytes]:
        """The messages in a user's folder, oldest first, read over IMAP as the user
        (EXAMINE: nothing is marked seen); [] if the folder does not exist."""
        m = self.imap(address)
        try:
            typ, _ = m.select(f'"{folder}"', readonly=True)
            if typ != "OK":
                return []
            typ, data = m.uid("SEARCH", None, "ALL")
            uids = data[0].split() if typ == "OK" and data and data[0] else []
            out = []
            for uid in uids:
                typ, parts = m.uid("FETCH", uid, "(BODY.PEEK[])")
                out.extend(p[1] for p in parts if isinstance(p, tuple))
            return out
        finally:
            m.logout()

    def spool_files(self, marker: str) -> list[Path]:
        """Message files (NNN.) anywhere in the partition that contain the marker."""
        needle = marker.encode()
        return sorted(p for p in self.partition.rglob("*.") if p.is_file() and needle in p.read_bytes())

    @property
    def log(self) -> str:
        return f"(cyrus logs to syslog only)\n{log_tail(self.out_path, 40)}"


def start_cyrus(harness, users: dict[str, int | None], options: dict[str, str] | None = None) -> Cyrus:
    """A started Cyrus in the harness's next work subdir, closed with the harness."""
    cy = Cyrus(harness._subdir("cyrus"), users, options=options)

    def close() -> None:
        try:
            cy.close()
        finally:
            print(f"--- cyrus master output ({cy.out_path}) ---\n{log_tail(cy.out_path)}")

    harness._stack.callback(close)
    cy.start()
    return cy

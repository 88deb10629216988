"""A throwaway Dovecot LMTP server for the end-to-end tests.

Debian's dovecot-core + dovecot-lmtpd (2.3) run as a plain foreground process
(`dovecot -F -c CONF`), configured by a file in the work directory, with its
base_dir (sockets, master.pid), state_dir, log file, passwd-file and mail store
reachable from there:

    dc = start_dovecot(harness, {"alice@example.org": None, "bob@example.org": 1000})
    smtplib.LMTP(LOCALHOST, dc.lmtp_port)       # or smtplib.LMTP(str(dc.lmtp_socket))
    dc.messages("bob@example.org", "Spam")      # what bob+Spam@example.org received
    dc.stop(); dc.start()                       # same mail store

Replies a client sees (tempfail=True, the default; tempfail=False: 552 5.2.2):
  * RCPT TO an unknown user:      550 5.1.1 <x@y> User doesn't exist: x@y
  * RCPT TO a user already at or over quota (lmtp_rcpt_check_quota):
                                  452 4.2.2 <x@y> Quota exceeded (mailbox for user is full)
  * a message that would take a user past the quota: RCPT is accepted (250 2.1.5),
    and that recipient's reply after DATA is the same 452 4.2.2 line; other
    recipients of the transaction get their own 250 2.0.0 <x@y> ... Saved.
  * RCPT TO user+Spam@domain:     saved into the user's "Spam" mailbox (Maildir++
    ".Spam"), created on demand.
smtplib.LMTP.sendmail reads a single reply after DATA, so with several accepted
recipients it desynchronises: use one recipient per sendmail, or conftest.RawSmtp.

As root (a container): LMTP refuses to write mail as uid 0 ("Mail access not
allowed for root", hard-coded) and passwd-file rejects uid 0, so mail belongs to
nobody:nogroup, and what the mail-writing process needs after dropping to it
(Maildirs, homes, base_dir) lives in a world-traversable /tmp/pampa-dovecot-*
dir outside pytest's 0700 tmp tree, linked from the workdir as mail/, home/ and
run/ (removed by close()). Dovecot's internal services run as root instead of
dovecot/dovenull, which could not enter pytest's tmp tree for the passwd-file
and the log. As another user, everything runs as that user under the workdir.
"""

from __future__ import annotations

import os
import pwd
import grp
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from conftest import LOCALHOST, free_port, log_tail, wait_for, port_accepts

DOVECOT_BIN = os.environ.get("PAMPA_DOVECOT", "/usr/sbin/dovecot")
START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0


def dovecot_available() -> bool:
    return os.path.isfile(DOVECOT_BIN) and os.access(DOVECOT_BIN, os.X_OK)


def _split(address: str) -> tuple[str, str]:
    local, _, domain = address.rpartition("@")
    if not local or not domain:
        raise ValueError(f"not a user@domain address: {address!r}")
    return local, domain


class Dovecot:
    """A Dovecot LMTP server on 127.0.0.1:lmtp_port and on the unix socket lmtp_socket."""

    def __init__(self, workdir: Path, users: dict[str, int | None], tempfail: bool = True):
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.tempfail = tempfail
        self.users: dict[str, int | None] = dict(users)
        self.lmtp_port = free_port()
        self.config_path = self.dir / "dovecot.conf"
        self.passwd_path = self.dir / "passwd"
        self.log_path = self.dir / "dovecot.log"
        self.state_dir = self.dir / "state"
        self.proc: subprocess.Popen | None = None
        self._log_file = None
        self._public: Path | None = None

        if os.getuid() == 0:
            # LMTP never writes mail as uid 0 ("Mail access not allowed for root",
            # hard-coded), and passwd-file rejects uid 0 outright. So as root,
            # mail is owned by nobody:nogroup, and what the mail-writing process
            # touches after dropping to it (Maildirs, homes, base_dir's sockets)
            # lives in a world-traversable dir outside pytest's 0700 tmp tree,
            # linked from the workdir as run/, mail/ and home/.
            nobody = pwd.getpwnam("nobody")
            self.mail_uid, self.mail_gid = nobody.pw_uid, nobody.pw_gid
            self._public = Path(tempfile.mkdtemp(prefix="pampa-dovecot-"))
            os.chmod(self._public, 0o755)
            outside = self._public
        else:
            self.mail_uid, self.mail_gid = os.getuid(), os.getgid()
            outside = self.dir
        for name in ("run", "mail", "home"):
            (outside / name).mkdir(exist_ok=True)
            if outside != self.dir:
                (self.dir / name).symlink_to(outside / name)
        if outside != self.dir:
            for name in ("mail", "home"):
                os.chown(outside / name, self.mail_uid, self.mail_gid)
        # Unix socket paths are limited to 107 bytes; Dovecot's longest under
        # base_dir are BASE/token-login/tokenlogin and BASE/replication-notify-fifo
        # (24 bytes past BASE). A deep workdir gets base_dir in a short dir in /tmp.
        if len(str(outside / "run")) > 80:
            if self._public is None:
                self._public = Path(tempfile.mkdtemp(prefix="pampa-dovecot-"))
            (self._public / "run").mkdir(exist_ok=True)
            (self.dir / "run").rmdir()
            (self.dir / "run").symlink_to(self._public / "run")
            self.base_dir = self._public / "run"
        else:
            self.base_dir = outside / "run"
        self.mail_dir = outside / "mail"
        self.home_dir = outside / "home"
        self.lmtp_socket = self.base_dir / "lmtp"

    # ------------------------------------------------------------- config --

    def _passwd_text(self) -> str:
        lines = []
        for address, quota in self.users.items():
            local, domain = _split(address)
            home = self.home_dir / domain / local
            # No quota is an explicit unlimited rule (0): with no rule at all, the
            # maildir++ backend would take the limit left in the user's maildirsize
            # file by an earlier set_quota().
            extra = f"userdb_quota_rule=*:storage={int(quota) if quota is not None else 0}B"
            # user:password:uid:gid:gecos:home:shell:extra_fields
            lines.append(f"{address}:{{PLAIN}}secret:{self.mail_uid}:{self.mail_gid}::{home}::{extra}")
        return "\n".join(lines) + "\n"

    def _write_passwd(self) -> None:
        """Writes the passwd-file so that a running Dovecot sees it at its next lookup.

        Dovecot's passwd-file reloads only when st_mtime (whole seconds) or the
        size changed, and stats the file at most once per second (on the first
        lookup in each second). So the new file gets an mtime at least one second
        past the old one, and this returns only once the clock has entered a
        second after the write: every later lookup then stats and reloads.
        """
        try:
            old_mtime: int | None = int(self.passwd_path.stat().st_mtime)
        except FileNotFoundError:
            old_mtime = None
        tmp = self.passwd_path.with_suffix(".tmp")
        tmp.write_text(self._passwd_text())
        os.chmod(tmp, 0o644)
        os.replace(tmp, self.passwd_path)
        written = time.time()
        if old_mtime is not None:
            stamp = max(int(written), old_mtime + 1)
            os.utime(self.passwd_path, (stamp, stamp))
        if self.proc is not None:
            time.sleep(int(written) + 1 - written + 0.02)

    def _config_text(self) -> str:
        uid = os.getuid()
        lines = [
            f"base_dir = {self.base_dir}",
            f"state_dir = {self.state_dir}",
            f"log_path = {self.log_path}",
            f"info_log_path = {self.log_path}",
            f"debug_log_path = {self.log_path}",
            f"instance_name = pampa-dovecot-{self.lmtp_port}",
            "protocols = lmtp",
            f"listen = {LOCALHOST}",
            "ssl = no",
            "auth_mechanisms = plain",
            "disable_plaintext_auth = no",
            "postmaster_address = postmaster@example.org",
            "hostname = dovecot.e2e.test",
            f"mail_location = maildir:{self.mail_dir}/%d/%n",
            "mail_plugins = $mail_plugins quota",
            "recipient_delimiter = +",
            "lmtp_save_to_detail_mailbox = yes",
            "lda_mailbox_autocreate = yes",
            "lmtp_rcpt_check_quota = yes",
            f"quota_full_tempfail = {'yes' if self.tempfail else 'no'}",
            "shutdown_clients = yes",
            f"first_valid_uid = {self.mail_uid}",
            f"last_valid_uid = {self.mail_uid}",
            f"first_valid_gid = {self.mail_gid}",
            f"last_valid_gid = {self.mail_gid}",
        ]
        if uid == 0:
            # Debian has the dovecot and dovenull users, but the internal services
            # running as them could not enter pytest's 0700 tmp tree (passwd-file,
            # log file, state_dir): run them as root. No login service runs here.
            lines += ["default_internal_user = root", "default_internal_group = root",
                      "default_login_user = root"]
        else:
            me = pwd.getpwuid(uid).pw_name
            group = grp.getgrgid(os.getgid()).gr_name
            lines += [f"default_internal_user = {me}", f"default_internal_group = {group}",
                      f"default_login_user = {me}"]
        lines += [
            "passdb {",
            "  driver = passwd-file",
            f"  args = scheme=PLAIN username_format=%u {self.passwd_path}",
            "}",
            "userdb {",
            "  driver = passwd-file",
            f"  args = username_format=%u {self.passwd_path}",
            "}",
            "plugin {",
            "  quota = maildir:User quota",
            "}",
            "service lmtp {",
            "  inet_listener lmtp {",
            f"    address = {LOCALHOST}",
            f"    port = {self.lmtp_port}",
            "  }",
            "  unix_listener lmtp {",
            "    mode = 0666",
            "  }",
            "}",
        ]
        return "\n".join(lines) + "\n"

    # ------------------------------------------------------------ process --

    def start(self) -> None:
        assert self.proc is None, "dovecot is already running"
        for d in (self.state_dir, self.mail_dir, self.home_dir, self.base_dir):
            d.mkdir(parents=True, exist_ok=True)
        self._write_passwd()
        self.config_path.write_text(self._config_text())
        # A master.pid left by a killed instance would make dovecot refuse to start.
        (self.base_dir / "master.pid").unlink(missing_ok=True)
        self._log_file = open(self.dir / "dovecot.out", "ab")
        self.proc = subprocess.Popen(
            [DOVECOT_BIN, "-F", "-c", str(self.config_path)],
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            wait_for(self._greets, START_TIMEOUT, f"dovecot to greet with 220 on port {self.lmtp_port}", interval=0.1)
        except AssertionError as e:
            self.stop()
            raise AssertionError(f"{e}\n--- dovecot log ---\n{self.log}") from None

    def _greets(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"dovecot exited with {self.proc.returncode}\n--- dovecot log ---\n{self.log}")
        try:
            with socket.create_connection((LOCALHOST, self.lmtp_port), timeout=2) as s:
                s.settimeout(5)
                greeting = s.recv(512)
                s.sendall(b"QUIT\r\n")
                return greeting.startswith(b"220")
        except OSError:
            return False

    def stop(self) -> None:
        """Stops the server and waits for it; the mail store stays, start() may follow."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                # The master and its children share a process group (start_new_session).
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait()
        self.proc = None
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        wait_for(lambda: not port_accepts(self.lmtp_port), 10, f"dovecot's port {self.lmtp_port} to be closed")


    def close(self) -> None:
        """stop(), and remove the dir made outside the workdir (as root: the mail store), if any."""
        self.stop()
        if self._public is not None:
            shutil.rmtree(self._public, ignore_errors=True)
            self._public = None

    # --------------------------------------------------------------- mail --

    def set_quota(self, address: str, quota: int | None) -> None:
        """Sets (None: removes) a user's quota in bytes; the next delivery sees it."""
        if address not in self.users:
            raise KeyError(f"no such user: {address}")
        self.users[address] = quota
        self._write_passwd()

    def add_user(self, address: str, quota: int | None = None) -> None:
        self.users[address] = quota
        self._write_passwd()

    def maildir(self, address: str) -> Path:
        local, domain = _split(address)
        return self.mail_dir / domain / local

    def messages(self, address: str, folder: str = "INBOX") -> list[bytes]:
        """The messages in new/ and cur/ of a folder ("INBOX", or e.g. "Spam" for .Spam), oldest first."""
        root = self.maildir(address)
        box = root if folder.upper() == "INBOX" else root / ("." + folder.replace("/", "."))
        files: list[Path] = []
        for sub in ("new", "cur"):
            d = box / sub
            if d.is_dir():
                files.extend(p for p in d.iterdir() if p.is_file())
        files.sort(key=lambda p: (p.stat().st_mtime, p.name))
        return [p.read_bytes() for p in files]

    @property
    def log(self) -> str:
        out = log_tail(self.dir / "dovecot.out", 40)
        return f"{log_tail(self.log_path)}\n--- dovecot stdout/stderr ---\n{out}"


def start_dovecot(harness, users: dict[str, int | None], tempfail: bool = True) -> Dovecot:
    """A started Dovecot in the harness's next work subdir, closed with the harness."""
    dc = Dovecot(harness._subdir("dovecot"), users, tempfail=tempfail)

    def close() -> None:
        try:
            dc.close()
        finally:
            print(f"--- dovecot log ({dc.log_path}) ---\n{log_tail(dc.log_path)}")

    harness._stack.callback(close)
    dc.start()
    return dc

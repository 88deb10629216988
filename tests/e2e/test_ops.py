"""What an operator installs from ops/: the systemd units pass `systemd-analyze verify`,
the Prometheus config and alert rules pass promtool (and the rules' own unit tests),
the Grafana dashboard and the alerts name only metrics a running pampa exports, the
NATS cluster configs render and form a cluster, and the example zone file, DNSBL
dataset and NAS script load into a running pampa.

The pampa TOML examples in ops/examples/*.toml are parsed by the Rust test
`every_example_config_parses` (src/config.rs), so they are not parsed again here.

The metric names come from /metrics of a running `pampa up` after it has done what
makes each series appear: a delivered mail, a dead letter, DNS queries of every zone
kind, RADIUS authentication and accounting, and accounting while the log is down.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import textwrap
import time
import tomllib
import urllib.request
from pathlib import Path

import pytest
import yaml

import radius_client as rc
from conftest import REPO, free_port, log_tail, make_message, send_message, wait_for

OPS = REPO / "ops"
UNITS = OPS / "systemd"
PROMETHEUS = OPS / "prometheus"
DASHBOARD = OPS / "grafana/dashboards/pampa.json"
EXAMPLES = OPS / "examples"

SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
PROMTOOL = shutil.which("promtool")
DIG = shutil.which("dig")

ALICE = "alice@example.org"
SENDER = "sender@remote.test"
# Exporters other than pampa that the alert rules read (ops/prometheus/prometheus.yml):
# node_exporter (node_*), prometheus-nats-exporter (jetstream_*, gnatsd_*), and
# Prometheus' own `up`.
EXTERNAL_PREFIXES = ("node_", "jetstream_", "gnatsd_")
EXTERNAL_NAMES = {"up"}


# ------------------------------------------------------------ PromQL names --

# PromQL words that look like identifiers but name no metric.
_PROMQL_KEYWORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left",
    "group_right", "offset", "bool", "inf", "nan",
}
_STRING = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")


def promql_metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects.

    Strings, label matchers, range and offset brackets, grouping label lists and
    Grafana's `$variables` are dropped first; what is left are identifiers that are a
    metric name, unless a `(` follows (a function or an aggregation) or they are a
    PromQL keyword, or they are part of a number (`1e3`).
    """
    s = _STRING.sub('""', expr)
    s = re.sub(r"\$\{[^}]*\}|\$\w+", " ", s)
    s = re.sub(r"\{[^}]*\}", " ", s)
    s = re.sub(r"\[[^\]]*\]", " ", s)
    s = _GROUPING.sub(" ", s)
    names = set()
    for m in _IDENT.finditer(s):
        word = m.group(0)
        before = s[m.start() - 1] if m.start() else " "
        if before.isdigit() or before == ".":
            continue
        if s[m.end():].lstrip().startswith("("):
            continue
        if word.lower() in _PROMQL_KEYWORDS:
            continue
        names.add(word)
    return names


def exposition_names(text: str) -> set[str]:
    """The sample names in a Prometheus text exposition, as a query must spell them: a
    histogram `x` is only there as `x_bucket`, `x_sum` and `x_count`."""
    names = set()
    histograms = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(maxsplit=3)
            if kind.strip() == "histogram":
                histograms.add(name)
            continue
        if not line or line.startswith("#"):
            continue
        m = _IDENT.match(line)
        if m:
            names.add(m.group(0))
    for h in histograms:
        missing = {f"{h}_bucket", f"{h}_sum", f"{h}_count"} - names
        assert not missing, f"histogram {h} has no samples {sorted(missing)}"
        assert h not in names, f"histogram {h} has samples under its bare name"
    return names


def test_promql_metric_names():
    cases = {
        'histogram_quantile(0.95, sum by (stage, le) (rate(pampa_stage_duration_seconds_bucket[$__rate_interval])))':
            {"pampa_stage_duration_seconds_bucket"},
        'sum(rate(a_total{code=~"4..", x="by (y)"}[10m])) / sum(rate(a_total[10m])) > 0.05':
            {"a_total"},
        "max by (consumer) (lag) > 100 and max by (consumer) (deriv(lag[10m])) > 0": {"lag"},
        "x unless x offset 15m": {"x"},
        "sum(x) by (le) / on(instance) group_left(role) y * 1e3": {"x", "y"},
        "100 * (1 - node_a{fstype!~\"tmpfs\"} / node_b)": {"node_a", "node_b"},
        "absent(up{job=\"pampa\"})": {"up"},
        'sum by (stage) (increase(d_total[$__range]))': {"d_total"},
    }
    for expr, want in cases.items():
        assert promql_metric_names(expr) == want, expr


def test_exposition_names_spell_histograms_as_queried():
    text = textwrap.dedent(
        """\
        # TYPE h_seconds histogram
        h_seconds_bucket{le="0.1"} 1
        h_seconds_bucket{le="+Inf"} 1
        h_seconds_sum 0.05
        h_seconds_count 1
        # TYPE c_total counter
        c_total{code="250"} 3
        """
    )
    names = exposition_names(text)
    assert names == {"h_seconds_bucket", "h_seconds_sum", "h_seconds_count", "c_total"}
    assert "h_seconds" not in names


# ------------------------------------------------------------------ systemd --


def _unit_root(tmp_path: Path) -> Path:
    """A file system root for `systemd-analyze verify --root`: systemd's own units (for
    the targets the units name), the units under test in /etc/systemd/system, and
    stand-ins for the binaries they run, which verify checks are executable."""
    root = tmp_path / "root"
    system = root / "usr/lib/systemd/system"
    system.parent.mkdir(parents=True)
    for candidate in (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system")):
        if (candidate / "sysinit.target").exists():
            shutil.copytree(candidate, system, symlinks=True)
            break
    else:
        pytest.skip("systemd's unit files (sysinit.target) are not installed")
    etc = root / "etc/systemd/system"
    etc.mkdir(parents=True)
    for unit in UNITS.glob("*.service"):
        shutil.copy(unit, etc / unit.name)
    for binary in ("/usr/bin/pampa", "/usr/local/bin/nats-server", "/bin/kill"):
        stub = root / binary.lstrip("/")
        stub.parent.mkdir(parents=True, exist_ok=True)
        stub.write_text("#!/bin/sh\nexit 0\n")
        stub.chmod(0o755)
    return root


def _unit_settings(path: Path) -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")) and "=" in line:
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


@pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze (the systemd package) is not installed")
def test_systemd_units_verify(tmp_path):
    root = _unit_root(tmp_path)
    units = ["pampa-up.service", "pampa@ingest.service", "pampa@score-2.service", "nats-server@n1.service"]
    cp = subprocess.run(
        [SYSTEMD_ANALYZE, "verify", "--man=no", f"--root={root}", *units],
        capture_output=True, text=True, timeout=120,
    )
    # verify exits 0 on unknown keys and bad values, and only warns: any output fails.
    assert cp.returncode == 0 and not cp.stderr.strip() and not cp.stdout.strip(), (
        f"systemd-analyze verify: exit {cp.returncode}\n{cp.stdout}\n{cp.stderr}"
    )
    # The user the units run as comes from pampa.sysusers.
    sysusers = shutil.which("systemd-sysusers")
    if sysusers:
        users = tmp_path / "sysusers"
        (users / "etc").mkdir(parents=True)
        cp = subprocess.run([sysusers, f"--root={users}", str(UNITS / "pampa.sysusers")],
                            capture_output=True, text=True, timeout=60)
        assert cp.returncode == 0, cp.stderr
        passwd = (users / "etc/passwd").read_text()
        assert re.search(r"^pampa:x:\d+:\d+:[^:]*:/var/lib/pampa:/usr/sbin/nologin$", passwd, re.M), passwd
    # The hardening stays in place: overall exposure at most 2.5 ("OK"; the threshold is
    # on systemd's scale times ten).
    for unit in ("pampa-up.service", "pampa@ingest.service"):
        cp = subprocess.run(
            [SYSTEMD_ANALYZE, "security", "--offline=yes", "--threshold=25", f"--root={root}", unit],
            capture_output=True, text=True, timeout=120,
        )
        assert cp.returncode == 0, f"{unit} is less hardened than before:\n{cp.stdout[-3000:]}\n{cp.stderr}"


def test_units_run_pampa_as_the_issue_says(pampa_bin):
    up = _unit_settings(UNITS / "pampa-up.service")
    role = _unit_settings(UNITS / "pampa@.service")
    for settings in (up, role):
        for key, value in {
            "Type": "notify", "NotifyAccess": "main", "User": "pampa", "StateDirectory": "pampa",
            "ConfigurationDirectory": "pampa", "AmbientCapabilities": "CAP_NET_BIND_SERVICE",
            "NoNewPrivileges": "yes", "ProtectSystem": "strict", "PrivateTmp": "yes",
            "Restart": "on-failure",
        }.items():
            assert settings.get(key) == [value], f"{key}={settings.get(key)}"
        assert settings.get("WatchdogSec"), "no WatchdogSec"
        assert any("/var/lib/pampa" in v for v in settings.get("ReadWritePaths", [])), settings.get("ReadWritePaths")
    assert up["ExecStart"] == ["/usr/bin/pampa --config /etc/pampa/pampa.toml up"]
    assert role["ExecStart"] == ["/usr/bin/pampa --config ${PAMPA_CONFIG} run ${PAMPA_ROLE}"]
    assert role["Environment"] == ["PAMPA_ROLE=%i", "PAMPA_CONFIG=/etc/pampa/%i.toml"]
    assert role["EnvironmentFile"] == ["-/etc/pampa/%i.env"]
    # The instance names the unit documents are the roles `pampa run` knows.
    help_text = subprocess.run([pampa_bin, "run", "--help"], capture_output=True, text=True, timeout=30).stdout
    known = set(re.findall(r"^\s+- ([\w-]+):", help_text, re.M))
    documented = re.search(r"The instance name is the role: ([a-z, -]+?)(?: \(|\.)", (UNITS / "pampa@.service").read_text().replace("\n# ", " "))
    assert documented, "pampa@.service does not list the roles"
    named = set(re.findall(r"[\w-]+", documented.group(1).replace(" or ", " "))) - {"or"}
    assert named == known, f"pampa@.service names {sorted(named)}, `pampa run` has {sorted(known)}"


# --------------------------------------------------------------- Prometheus --


def test_pampa_notifies_systemd_ready_watchdog_and_stopping(harness, tmp_path):
    """What the units' Type=notify and WatchdogSec rely on: READY=1 once pampa serves,
    WATCHDOG=1 at half of WATCHDOG_USEC while it runs, STOPPING=1 on SIGTERM."""
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(0.2)
    received: list[str] = []

    def drain(seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            try:
                received.extend(sock.recv(4096).decode().split("\n"))
            except TimeoutError:
                pass

    try:
        p = harness.pampa()
        p.extra_env = {"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "400000"}
        p.start()
        drain(1.5)
        assert "READY=1" in received, received
        # 1.5 s at one ping per 0.2 s, allowing for a slow machine.
        assert received.count("WATCHDOG=1") >= 3, received
        p.stop()
        drain(0.5)
        assert "STOPPING=1" in received, received
    finally:
        sock.close()


def _promtool(*args: str) -> subprocess.CompletedProcess:
    if PROMTOOL is None:
        pytest.skip("promtool (Debian's prometheus package) is not installed")
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=120, cwd=PROMETHEUS)


def test_promtool_checks_rules_config_and_rule_tests():
    for args in (
        ("check", "rules", "pampa.rules.yml"),
        ("check", "config", "prometheus.yml"),
        ("test", "rules", "pampa.rules.test.yml"),
        ("check", "rules", "pampa-outbound.rules.yml"),
        ("test", "rules", "pampa-outbound.rules.test.yml"),
    ):
        cp = _promtool(*args)
        assert cp.returncode == 0, f"promtool {' '.join(args)}: exit {cp.returncode}\n{cp.stdout}\n{cp.stderr}"
    # Every alert has a unit test (pampa.rules.test.yml, pampa-outbound.rules.test.yml).
    for name in ("pampa", "pampa-outbound"):
        rules = yaml.safe_load((PROMETHEUS / f"{name}.rules.yml").read_text())
        alerts = {r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r}
        tests = yaml.safe_load((PROMETHEUS / f"{name}.rules.test.yml").read_text())
        tested = {t["alertname"] for case in tests["tests"] for t in case.get("alert_rule_test", [])}
        assert alerts - tested == set(), f"{name}: alerts without a promtool test: {sorted(alerts - tested)}"


# ---------------------------------------------- a pampa that exports it all --


def dig(port: int, *args: str) -> list[str]:
    out = subprocess.run(
        [DIG, "@127.0.0.1", "-p", str(port), "+time=2", "+tries=2", "+short", *args],
        capture_output=True, text=True, timeout=30,
    ).stdout
    return [line for line in out.splitlines() if line and not line.startswith(";")]


def dig_status(port: int, *args: str) -> str:
    out = subprocess.run(
        [DIG, "@127.0.0.1", "-p", str(port), "+time=2", "+tries=2", *args],
        capture_output=True, text=True, timeout=30,
    ).stdout
    m = re.search(r"status: (\w+)", out)
    return m.group(1) if m else "no answer"


def _dns_example_toml() -> str:
    """[[dns.zones]] and [[dns.dnsbl]] of ops/examples/dns.toml, with the files read from
    ops/examples/dns/ instead of /etc/pampa/dns/."""
    config = tomllib.loads((EXAMPLES / "dns.toml").read_text())
    out = []
    for kind in ("zones", "dnsbl"):
        for entry in config["dns"][kind]:
            path = Path(entry["file"])
            assert path.parent == Path("/etc/pampa/dns"), path
            local = EXAMPLES / "dns" / path.name
            assert local.is_file(), f"ops/examples/dns.toml names {path}, but {local} is missing"
            out.append(f"[[dns.{kind}]]")
            out.append(f'name = "{entry["name"]}"')
            out.append(f'file = "{local}"')
            if "format" in entry:
                out.append(f'format = "{entry["format"]}"')
    return "\n".join(out)


def _nas_script(tmp: Path) -> tuple[Path, str]:
    """ops/examples/radius-nas.sh with its CHANGE-ME secrets filled in, and the secret
    of its 127.0.0.1/32 entry."""
    text = (EXAMPLES / "radius-nas.sh").read_text()
    filled = re.sub(r"CHANGE-ME-([A-Za-z0-9-]+)", r"\1-e2e-0123456789", text)
    script = tmp / "radius-nas.sh"
    script.write_text(filled)
    m = re.search(r"^127\.0\.0\.1/32\s+(\S+)", filled, re.M)
    assert m, "radius-nas.sh has no 127.0.0.1/32 entry"
    return script, m.group(1)


def _metric_value(body: str, name: str) -> float:
    total = 0.0
    for line in body.splitlines():
        if line.startswith(name) and (line[len(name):len(name) + 1] in ("{", " ")):
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.fixture(scope="module")
def exporting(module_harness):
    """`pampa up` on NATS with every role busy; yields (pampa, /metrics text, NAS secret)."""
    if DIG is None:
        pytest.skip("dig (dnsutils) is not installed")
    h = module_harness
    nats = h.nats()
    clamd = h.clamd()
    p = h.pampa(bus_url=nats.url, bus={"max_deliver": 1, "publish_timeout": "2s"})
    p.add_toml(
        f"""
        [pipeline]
        stages = ["rbl", "whitelist", "antivirus", "score"]
        [stages.rbl]
        resolver = "127.0.0.1:{p.dns_port}"
        timeout_ms = 1000
        [[stages.rbl.lists]]
        zone = "bl.example.net"
        [stages.antivirus]
        clamd = "{clamd.url}"
        timeout = "5s"
        max_scan_bytes = 1500
        oversize = "tempfail"
        """
    )
    p.add_toml(_dns_example_toml())
    p.setup_users("example.org", "alice")
    script, secret = _nas_script(p.dir)
    env = {**os.environ, "PAMPA": p.binary, "PAMPA_CONFIG": str(p.config_path)}
    for _ in range(2):  # the second run keeps what the first added
        cp = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=120, env=env)
        assert cp.returncode == 0, f"radius-nas.sh: exit {cp.returncode}\n{cp.stdout}\n{cp.stderr}"
    assert "registered already" in cp.stdout, cp.stdout

    # Start it the way pampa-up.service does (its ExecStart, with the test's paths).
    exec_start = _unit_settings(UNITS / "pampa-up.service")["ExecStart"][0].split()
    assert exec_start[:3] == ["/usr/bin/pampa", "--config", "/etc/pampa/pampa.toml"], exec_start
    p.start(*exec_start[3:])

    # Mail: one delivered, one that the antivirus stage gives up on (larger than
    # max_scan_bytes, oversize = tempfail, one try): a dead letter.
    marker, _ = p.send(SENDER, [ALICE])
    p.wait_delivered(ALICE, marker)
    _, big = make_message(SENDER, [ALICE], "too big to scan")
    big = big.replace(b"the end\r\n", b"".join(b"filler line %d\r\n" % i for i in range(200)) + b"the end\r\n")
    send_message(p.smtp_port, SENDER, [ALICE], big)

    # DNS: authoritative and DNSBL answers.
    assert dig(p.dns_port, "mx1.example.net", "A") == ["192.0.2.25"]
    assert dig(p.dns_port, "2.0.0.127.bl.example.net", "A") == ["127.0.0.2"]

    # RADIUS: an accepted PAP login from the NAS script's 127.0.0.1/32 entry, a packet
    # without Message-Authenticator (dropped), accounting.
    auth = rc.Client(p.radius_auth_port, secret.encode())
    acct = rc.Client(p.radius_acct_port, secret.encode())
    try:
        reply = auth.send(auth.access_request(ALICE, "secret"))
        assert reply is not None and reply.code == rc.ACCESS_ACCEPT, reply
        assert auth.send(auth.access_request(ALICE, "secret", message_authenticator=False), timeout=1) is None
        reply = acct.send(acct.accounting_request(rc.START, "ops-1", user=ALICE))
        assert reply is not None and reply.code == rc.ACCOUNTING_RESPONSE, reply

        def dead_letter() -> bool:
            return _metric_value(p.http_get("/metrics")[1], "pampa_stage_dead_letters_total") >= 1

        wait_for(dead_letter, 60, "the oversized message in dead.antivirus")

        # Accounting while the log is down stays unanswered, and is counted.
        nats.stop()
        assert acct.send(acct.accounting_request(rc.START, "ops-2", user=ALICE), timeout=4) is None
        wait_for(
            lambda: _metric_value(p.http_get("/metrics")[1], "pampa_radius_acct_unacknowledged_total") >= 1,
            30, "pampa_radius_acct_unacknowledged_total",
        )
        nats.start()
    finally:
        auth.close()
        acct.close()
    wait_for(lambda: p.http_status("/readyz") == 200, 60, "pampa to be ready again after NATS came back")
    status, body = p.http_get("/metrics")
    assert status == 200, status
    p.check_alive()
    yield p, body, secret


def test_grafana_dashboard_names_only_exported_metrics(exporting):
    _, body, _ = exporting
    exported = exposition_names(body)
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"

    ids, missing, queries = set(), {}, 0
    for panel in dashboard["panels"]:
        assert panel["id"] not in ids, f"panel id {panel['id']} twice"
        ids.add(panel["id"])
        assert {"h", "w", "x", "y"} <= panel["gridPos"].keys(), panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], f"panel {panel['title']!r} has no query"
        for target in panel["targets"]:
            names = promql_metric_names(target["expr"])
            assert names, f"no metric in {target['expr']!r}"
            queries += 1
            for name in names - exported:
                missing.setdefault(name, []).append(panel["title"])
    assert not missing, (
        "the dashboard queries metrics pampa does not export: "
        + "; ".join(f"{n} (panel {', '.join(t)})" for n, t in sorted(missing.items()))
    )
    titles = " ".join(p["title"].lower() for p in dashboard["panels"])
    for topic in ("disposition", "stage latency", "stage lag", "reply codes", "radius requests",
                  "radius sessions", "zone kind", "dead letters"):
        assert topic in titles, f"no panel about {topic}"
    assert queries >= 20, queries

    # The provisioning files: one Prometheus data source, one provider for the folder.
    ds = yaml.safe_load((OPS / "grafana/provisioning/datasources/pampa.yaml").read_text())
    assert [d["type"] for d in ds["datasources"]] == ["prometheus"]
    providers = yaml.safe_load((OPS / "grafana/provisioning/dashboards/pampa.yaml").read_text())
    assert providers["providers"][0]["type"] == "file" and providers["providers"][0]["options"]["path"]


def test_alert_rules_name_only_exported_metrics(exporting):
    _, body, _ = exporting
    exported = exposition_names(body)
    rules = yaml.safe_load((PROMETHEUS / "pampa.rules.yml").read_text())
    wanted = {"PampaStageLagGrowing", "PampaDeadLetters", "PampaSmtpTempfailsRising", "PampaClamdUnreachable",
              "PampaDnsblListsTheWorld", "PampaRadiusAccountingUnacknowledged", "NodeDiskAlmostFull",
              "PampaNatsNoQuorum"}
    seen, problems = set(), []
    for group in rules["groups"]:
        for rule in group["rules"]:
            seen.add(rule.get("alert"))
            for name in promql_metric_names(rule["expr"]):
                if name.startswith("pampa_"):
                    if name not in exported:
                        problems.append(f"{rule['alert']}: {name} is not in pampa's /metrics")
                elif not (name.startswith(EXTERNAL_PREFIXES) or name in EXTERNAL_NAMES):
                    problems.append(f"{rule['alert']}: {name} is neither pampa's nor a known exporter's")
    assert not problems, "\n".join(problems)
    assert wanted <= seen, f"missing alerts: {sorted(wanted - seen)}"


def test_example_zones_dataset_and_nas_load(exporting):
    p, _, secret = exporting
    port = p.dns_port
    # ops/examples/dns/example.net.zone
    assert sorted(dig(port, "example.net", "MX")) == ["10 mx1.example.net.", "10 mx2.example.net."]
    assert dig(port, "example.net", "TXT") == ['"v=spf1 mx -all"']
    assert dig(port, "mx2.example.net", "AAAA") == ["2001:db8:1::25"]
    assert dig(port, "_submission._tcp.example.net", "SRV") == ["0 1 587 mail.example.net."]
    # ops/examples/dns/2.0.192.in-addr.arpa.zone: the MX is forward-confirmed.
    assert dig(port, "-x", "192.0.2.25") == ["mx1.example.net."]
    # ops/examples/dns/bl.example.net.ip4set: listed, ranges, per-entry answers and
    # exclusions; the RFC 5782 entry 127.0.0.1 is not listed.
    assert dig(port, "66.113.0.203.bl.example.net", "A") == ["127.0.0.2"]
    assert dig(port, "210.2.0.192.bl.example.net", "A") == ["127.0.0.2"]
    assert dig(port, "5.113.0.203.bl.example.net", "A") == ["127.0.0.4"]
    assert dig_status(port, "200.100.51.198.bl.example.net", "A") == "NXDOMAIN"
    assert dig_status(port, "1.0.0.127.bl.example.net", "A") == "NXDOMAIN"
    txt = dig(port, "66.113.0.203.bl.example.net", "TXT")
    assert txt and "203.0.113.66" in txt[0], txt
    # `systemctl reload pampa-up` (its ExecReload, with the test's paths) reports every
    # zone of the example.
    reload = _unit_settings(UNITS / "pampa-up.service")["ExecReload"][0].split()
    assert reload[:3] == ["/usr/bin/pampa", "--config", "/etc/pampa/pampa.toml"], reload
    out = p.cli(*reload[3:]).stdout
    for zone in ("example.net", "2.0.192.in-addr.arpa", "bl.example.net"):
        assert re.search(rf"^(zone|dnsbl) {re.escape(zone)} \(.*\): (unchanged|loaded)", out, re.M), out
    # ops/examples/radius-nas.sh registered every entry of its table.
    nas = {n["network"]: n for n in json.loads(p.cli("nas", "list", "--json").stdout)}
    table = re.findall(r"^(\S+/\d+)\s+CHANGE-ME", (EXAMPLES / "radius-nas.sh").read_text(), re.M)
    assert set(table) == set(nas), (table, sorted(nas))
    assert nas["203.0.113.20/32"]["require_message_authenticator"] is False
    assert nas["198.51.100.0/28"]["require_message_authenticator"] is True


def test_nas_script_refuses_placeholder_secrets(harness):
    p = harness.pampa()
    env = {**os.environ, "PAMPA": p.binary, "PAMPA_CONFIG": str(p.config_path)}
    cp = subprocess.run(["bash", str(EXAMPLES / "radius-nas.sh")], capture_output=True, text=True, timeout=60, env=env)
    assert cp.returncode != 0 and "CHANGE-ME" in cp.stderr, (cp.returncode, cp.stderr)
    assert json.loads(p.cli("nas", "list", "--json").stdout) == []


# --------------------------------------------------------------------- NATS --


def test_nats_cluster_configs_render_and_form_a_cluster(tmp_path):
    binary = os.environ.get("PAMPA_NATS_SERVER")
    if not binary:
        pytest.skip("PAMPA_NATS_SERVER is not set (ops/test.sh sets it to a nats-server >= 2.10)")
    render = OPS / "nats/render.sh"
    # The committed configs of the three-node layout are what render.sh makes.
    out = tmp_path / "cluster"
    subprocess.run(["bash", str(render), str(out), "10.0.0.1", "10.0.0.2", "10.0.0.3"],
                   check=True, capture_output=True, timeout=30, env={**os.environ, "NATS_STORE_ROOT": "/var/lib/nats"})
    for name in ("n1", "n2", "n3"):
        committed = OPS / f"nats/cluster/{name}.conf"
        assert committed.read_text() == (out / f"{name}.conf").read_text(), f"{committed} differs from render.sh's output"
        cp = subprocess.run([binary, "-t", "-c", str(committed)], capture_output=True, text=True, timeout=30)
        assert cp.returncode == 0, f"{committed}: {cp.stdout}{cp.stderr}"

    # On loopback (ports moved to free ones), the three nodes form a JetStream cluster.
    def three_free() -> int:
        """The first of three consecutive free ports (free_port hands them out in order)."""
        while True:
            base = free_port()
            if [free_port(), free_port()] == [base + 1, base + 2]:
                return base

    ports = {"NATS_CLIENT_PORT": three_free(), "NATS_CLUSTER_PORT": three_free(), "NATS_MONITOR_PORT": three_free()}
    loop = tmp_path / "loopback"
    env = {**os.environ, "NATS_STORE_ROOT": str(tmp_path / "store"), **{k: str(v) for k, v in ports.items()}}
    subprocess.run(["bash", str(render), "--loopback", str(loop)], check=True, capture_output=True, timeout=30, env=env)
    procs = []
    try:
        for i in range(3):
            log = open(tmp_path / f"n{i + 1}.log", "ab")
            procs.append(subprocess.Popen([binary, "-c", str(loop / f"n{i + 1}.conf")], stdout=log, stderr=subprocess.STDOUT))

        def jsz(i: int) -> dict:
            url = f"http://127.0.0.1:{ports['NATS_MONITOR_PORT'] + i}/jsz"
            try:
                with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(url, timeout=2) as r:
                    return json.loads(r.read())
            except OSError:
                return {}

        def formed() -> bool:
            metas = [jsz(i).get("meta_cluster") or {} for i in range(3)]
            return all(m.get("leader") and m.get("cluster_size") == 3 for m in metas)

        try:
            wait_for(formed, 60, "the three loopback nodes to elect a JetStream meta leader")
        except AssertionError as e:
            logs = "\n".join(f"--- n{i + 1} ---\n{log_tail(tmp_path / f'n{i + 1}.log', 30)}" for i in range(3))
            raise AssertionError(f"{e}\n{logs}") from None
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def test_sighup_never_ends_a_role_and_reloads_dns_where_it_runs(harness):
    """SIGHUP's default action ends a process, and systemd does not restart a unit that
    ended on SIGHUP: every role must survive it. `pampa run ingest` has nothing to reload
    and says so; `pampa up` (with dns) reloads its zones."""
    import signal

    ingest = harness.pampa()
    ingest.start("run", "ingest")
    ingest.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "SIGHUP ignored" in ingest.log_path.read_text(), 10, "the ingest role to log the SIGHUP")
    assert ingest.proc.poll() is None, log_tail(ingest.log_path)
    ingest.stop()

    up = harness.pampa()
    up.start()
    up.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "Reloaded on SIGHUP" in up.log_path.read_text(), 10, "pampa up to reload on SIGHUP")
    assert up.proc.poll() is None, log_tail(up.log_path)


def test_json_logs_carry_the_session_and_message_ids(harness):
    """`--log-format json`: one JSON object per line, and an accepted message's line
    names its session and message."""
    p = harness.pampa()
    p.setup_users("example.org", "alice")
    p.start("--log-format", "json", "up")
    _, message = make_message(SENDER, [ALICE], "json logs")
    send_message(p.smtp_port, SENDER, [ALICE], message)

    def accepted():
        for line in p.log_path.read_text().splitlines():
            if line.startswith("{"):
                entry = json.loads(line)
                if entry.get("message") == "Message accepted.":
                    return entry
        return None

    entry = wait_for(accepted, 20, "the accepted message's JSON log line")
    assert entry["level"] == "INFO" and "timestamp" in entry, entry
    assert entry.get("message_id"), entry
    assert entry["span"].get("session_id"), entry
    # No log line in text format (a timestamp first) is left: the only lines that are
    # not JSON are `pampa up`'s banner on stdout and the harness's own headers.
    lines = p.log_path.read_text().splitlines()
    assert not [line for line in lines if re.match(r"\d{4}-\d\d-\d\dT", line)], log_tail(p.log_path)
    for line in lines:
        if line.startswith("{"):
            json.loads(line)


def test_streams_check_says_what_differs_and_apply_makes_it_so(harness):
    """`pampa streams check`: on a fresh server everything is missing (exit 1); `--apply`
    creates it; a changed `[bus] max_age` shows as a difference until applied; and a
    `pampa up` creates the same layout the check wants."""
    nats = harness.nats()
    p = harness.pampa(bus_url=nats.url)

    def check(*extra: str) -> tuple[int, list[dict]]:
        cp = p.cli("streams", "check", "--json", *extra, check=False)
        return cp.returncode, json.loads(cp.stdout or "[]")

    code, findings = check()
    assert code == 1 and findings, findings
    assert {f["state"] for f in findings} == {"missing"}, findings
    names = {(f["kind"], f["name"]) for f in findings}
    assert ("stream", "MAIL") in names and ("bucket", "pampa-bodies") in names, names
    assert ("consumer", "MAIL/deliver") in names and ("consumer", "MAIL/score") in names, names

    code, findings = check("--apply")
    assert code == 0, findings
    assert {f["state"] for f in findings} == {"created"}, findings
    code, findings = check()
    assert code == 0 and {f["state"] for f in findings} == {"ok"}, findings

    p.configure(bus={"max_age": "7d"})
    code, findings = check()
    assert code == 1, findings
    differs = [f for f in findings if f["state"].startswith("differs")]
    assert {f["name"] for f in differs} >= {"MAIL", "ACCESS", "DNS", "DEAD", "pampa-bodies"}, differs
    assert all("max_age" in f["state"] for f in differs), differs
    code, findings = check("--apply")
    assert code == 0 and any(f["state"].startswith("updated") for f in findings), findings
    code, findings = check()
    assert code == 0, findings

    # What a running pampa creates is what the check wants.
    p.start()
    p.stop()
    code, findings = check()
    assert code == 0, findings


def test_run_metrics_listen_overrides_the_config(harness):
    """`pampa run ROLE --metrics-listen ADDR`: the processes of one machine can share one
    configuration file, each with its own metrics address."""
    p = harness.pampa()
    port = free_port()
    proc = subprocess.Popen(
        [p.binary, "--config", str(p.config_path), "run", "dns", "--metrics-listen", f"127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        def live() -> bool:
            try:
                with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(
                    f"http://127.0.0.1:{port}/livez", timeout=1
                ) as r:
                    return r.status == 200
            except OSError:
                return False

        wait_for(live, 30, "the dns role's /livez on --metrics-listen")
        assert p.http_status("/livez") == 0, "the config's own metrics address answered too"
    finally:
        proc.terminate()
        proc.wait(20)


def test_a_fresh_deployment_exports_its_flow_at_zero(harness):
    """Before any mail, the series the dashboard's flow, lag and dead-letter panels read
    exist at zero: "no data" would not tell an operator that nothing happened."""
    p = harness.pampa()
    p.start()
    expected = [
        'pampa_smtp_messages_total{result="accepted"} 0',
        'pampa_smtp_messages_total{result="tempfail"} 0',
        'pampa_stage_processed_total{stage="score",outcome="ok"} 0',
        'pampa_stage_processed_total{stage="deliver",outcome="dead"} 0',
        'pampa_stage_dead_letters_total{stage="rbl"} 0',
        'pampa_bus_consumer_lag_messages{consumer="whitelist"} 0',
    ]

    def missing() -> list[str]:
        lines = set(p.http_get("/metrics")[1].splitlines())
        return [series for series in expected if series not in lines]

    # The stages register theirs once their consumers are open, just after start.
    try:
        wait_for(lambda: not missing(), 20, "every flow series at zero")
    except AssertionError:
        shown = [line for line in p.http_get("/metrics")[1].splitlines()
                 if line.startswith(("pampa_smtp_messages", "pampa_stage_", "pampa_bus_consumer"))]
        raise AssertionError(f"missing at start: {missing()}\n" + "\n".join(shown)) from None

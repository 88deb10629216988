"""The dns role, driven by dig (Debian's dnsutils): authoritative zones, DNSBL mirror
zones (side by side with rbldnsd on the same data), recursion only for allowed
networks, reloads, the query log as events, and the rbl stage resolving through
pampa's own DNS."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess

import pytest

from conftest import make_message, wait_for
from test_filtering import SENDER, send_from, wait_in_folder

DIG = shutil.which("dig")
pytestmark = pytest.mark.skipif(DIG is None, reason="dig (dnsutils) is not installed")

ZONE = """\
$TTL 300
$ORIGIN example.net.
@       IN SOA  ns1.example.net. hostmaster.example.net. ( 2026112701 3600 600 86400 60 )
@       IN NS   ns1.example.net.
@       IN MX   10 mx.example.net.
@       IN TXT  "v=spf1 mx -all"
@       IN CAA  0 issue "letsencrypt.org"
ns1     IN A    192.0.2.53
mx      IN A    192.0.2.25
mx      IN AAAA 2001:db8::25
www     IN CNAME mx.example.net.
_sip._tcp IN SRV 10 60 5060 mx.example.net.
big     IN TXT  "{a}" "{a}"
big     IN TXT  "{b}" "{b}"
big     IN TXT  "{c}" "{c}"
""".replace("{a}", "a" * 200).replace("{b}", "b" * 200).replace("{c}", "c" * 200)

REVERSE = """\
$TTL 300
$ORIGIN 2.0.192.in-addr.arpa.
@   IN SOA ns1.example.net. hostmaster.example.net. ( 1 3600 600 86400 60 )
@   IN NS  ns1.example.net.
25  IN PTR mx.example.net.
"""

DATASET = """\
:127.0.0.2:Listed by the pampa test list, see https://bl.example.net/?$
127.0.0.2
192.0.2.0/24
!192.0.2.7
198.51.100.9 :127.0.0.4:Spam source $
"""


def dig(p, *args: str, tcp: bool = False) -> str:
    cmd = [DIG, "@127.0.0.1", "-p", str(p.dns_port), "+time=2", "+tries=1", *args]
    if tcp:
        cmd.append("+tcp")
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout


def short(p, *args: str, tcp: bool = False) -> list[str]:
    return [l for l in dig(p, "+short", *args, tcp=tcp).splitlines() if l and not l.startswith(";")]


def status(out: str) -> str:
    for line in out.splitlines():
        if "status:" in line:
            return line.split("status:")[1].split(",")[0].strip()
    return "no answer"


def flags(out: str) -> set[str]:
    for line in out.splitlines():
        if line.startswith(";; flags:"):
            return set(line.split(":")[1].split(";")[0].split())
    return set()


def dns_stack(harness, tmp_path, dns: dict | None = None):
    p = harness.pampa()
    (tmp_path / "example.net.zone").write_text(ZONE)
    (tmp_path / "reverse.zone").write_text(REVERSE)
    (tmp_path / "bl.ip4set").write_text(DATASET)
    p.configure(dns=dns or {})
    p.add_toml(
        f"""
        [[dns.zones]]
        name = "example.net"
        file = "{tmp_path / 'example.net.zone'}"
        [[dns.zones]]
        name = "2.0.192.in-addr.arpa"
        file = "{tmp_path / 'reverse.zone'}"
        [[dns.dnsbl]]
        name = "bl.example.net"
        file = "{tmp_path / 'bl.ip4set'}"
        format = "ip4set"
        """
    )
    return p


def test_authoritative_answers_over_udp_and_tcp(harness, tmp_path):
    p = dns_stack(harness, tmp_path)
    p.start()
    for tcp in (False, True):
        assert short(p, "mx.example.net", "A", tcp=tcp) == ["192.0.2.25"]
        assert short(p, "mx.example.net", "AAAA", tcp=tcp) == ["2001:db8::25"]
        assert short(p, "example.net", "MX", tcp=tcp) == ["10 mx.example.net."]
        assert short(p, "example.net", "TXT", tcp=tcp) == ['"v=spf1 mx -all"']
        assert short(p, "example.net", "NS", tcp=tcp) == ["ns1.example.net."]
        assert short(p, "example.net", "CAA", tcp=tcp) == ['0 issue "letsencrypt.org"']
        assert short(p, "_sip._tcp.example.net", "SRV", tcp=tcp) == ["10 60 5060 mx.example.net."]
        assert short(p, "-x", "192.0.2.25", tcp=tcp) == ["mx.example.net."]
        assert short(p, "www.example.net", "A", tcp=tcp) == ["mx.example.net.", "192.0.2.25"]
        soa = short(p, "example.net", "SOA", tcp=tcp)
        assert soa and soa[0].split()[2] == "2026112701", soa

        out = dig(p, "mx.example.net", "A", tcp=tcp)
        assert status(out) == "NOERROR" and "aa" in flags(out), out
        # NXDOMAIN and NODATA, each with the SOA in the authority section.
        out = dig(p, "nope.example.net", "A", tcp=tcp)
        assert status(out) == "NXDOMAIN" and "aa" in flags(out) and "SOA" in out.split("AUTHORITY SECTION")[1], out
        out = dig(p, "ns1.example.net", "MX", tcp=tcp)
        assert status(out) == "NOERROR" and "ANSWER: 0" in out and "AUTHORITY SECTION" in out, out


def test_udp_truncates_to_the_edns_size_and_tcp_gets_it_all(harness, tmp_path):
    p = dns_stack(harness, tmp_path)
    p.start()
    out = dig(p, "+bufsize=512", "+ignore", "big.example.net", "TXT")
    assert "tc" in flags(out), out
    full = dig(p, "big.example.net", "TXT", tcp=True)
    assert "tc" not in flags(full) and "ANSWER: 3" in full, full


def test_dnsbl_zone_answers_what_rbldnsd_answers(harness, tmp_path):
    p = dns_stack(harness, tmp_path)
    p.start()
    rbl = harness.rbldnsd({"bl.example.net": ("ip4set", DATASET)})
    host, port = rbl.address.rsplit(":", 1)
    names = [
        "2.0.0.127", "1.0.0.127", "25.2.0.192", "7.2.0.192", "0.2.0.192", "255.2.0.192",
        "9.100.51.198", "10.100.51.198", "1.1.1.1", "2.0.0", "300.2.0.192",
    ]
    for name in names:
        qname = f"{name}.bl.example.net"
        for qtype in ("A", "TXT"):
            ours = sorted(short(p, qname, qtype))
            theirs = sorted(
                l for l in subprocess.run(
                    [DIG, f"@{host}", "-p", port, "+short", "+time=2", "+tries=1", qname, qtype],
                    capture_output=True, text=True, timeout=30,
                ).stdout.splitlines() if l and not l.startswith(";")
            )
            assert ours == theirs, (qname, qtype, ours, theirs)
    # RFC 5782: the test entry is listed and 127.0.0.1 is not.
    assert short(p, "2.0.0.127.bl.example.net", "A") == ["127.0.0.2"]
    assert status(dig(p, "1.0.0.127.bl.example.net", "A")) == "NXDOMAIN"


def test_recursion_is_refused_outside_the_acl_and_forwarded_inside(harness, tmp_path):
    rbl = harness.rbldnsd({"remote.test": ("ip4set", ":127.0.0.2:remote\n127.0.0.2\n")})
    p = dns_stack(harness, tmp_path, dns={"recursion_allowed": ["192.0.2.0/24"], "forwarders": [rbl.address]})
    p.start()
    out = dig(p, "2.0.0.127.remote.test", "A")
    assert status(out) == "REFUSED", out
    # Our own zones still answer everyone.
    assert short(p, "mx.example.net", "A") == ["192.0.2.25"]
    p.stop()
    p.configure(dns={"recursion_allowed": ["127.0.0.0/8"]})
    p.start()
    assert short(p, "2.0.0.127.remote.test", "A") == ["127.0.0.2"]
    out = dig(p, "2.0.0.127.remote.test", "A")
    assert status(out) == "NOERROR" and "ra" in flags(out) and "aa" not in flags(out), out


def test_reload_by_command_and_sighup_and_a_broken_file_keeps_the_old_zone(harness, tmp_path):
    p = dns_stack(harness, tmp_path)
    p.start()
    zone = tmp_path / "example.net.zone"
    zone.write_text(ZONE.replace("2026112701", "2026112702").replace("192.0.2.25", "192.0.2.26"))
    out = p.cli("dns", "reload").stdout
    assert "example.net" in out and "2026112702" in out, out
    assert short(p, "mx.example.net", "A") == ["192.0.2.26"]

    zone.write_text(ZONE.replace("2026112701", "2026112703").replace("192.0.2.25", "192.0.2.27"))
    os.kill(p.proc.pid, signal.SIGHUP)
    wait_for(lambda: short(p, "mx.example.net", "A") == ["192.0.2.27"], 10, "the SIGHUP reload")

    zone.write_text(ZONE + "broken line without a type\n")
    cp = p.cli("dns", "reload", check=False)
    assert cp.returncode != 0 and "example.net.zone" in (cp.stdout + cp.stderr), cp
    assert short(p, "mx.example.net", "A") == ["192.0.2.27"]

    # The DNSBL dataset reloads by itself when its file changes.
    (tmp_path / "bl.ip4set").write_text(DATASET + "203.0.113.5\n")
    wait_for(lambda: short(p, "5.113.0.203.bl.example.net", "A") == ["127.0.0.2"], 15, "the dataset reload")


def test_every_query_is_an_event_with_top_and_dnstap_export(harness, tmp_path):
    p = dns_stack(harness, tmp_path)
    p.start()
    short(p, "mx.example.net", "A")
    short(p, "nope.example.net", "A", tcp=True)
    short(p, "2.0.0.127.bl.example.net", "A")
    events = wait_for(
        lambda: (lambda e: e if len(e) >= 3 else None)(json.loads(p.cli("events", "dns.query", "--json").stdout)),
        15,
        "three dns.query events",
    )
    by_name = {e["payload"]["qname"]: e["payload"] for e in events}
    mx = by_name["mx.example.net."]
    assert mx["qtype"] == "A" and mx["rcode"] == "NOERROR" and mx["zone_kind"] == "authoritative", mx
    assert mx["answer_count"] == 1 and mx["transport"] == "udp" and mx["client_ip"] == "127.0.0.1", mx
    nope = by_name["nope.example.net."]
    assert nope["rcode"] == "NXDOMAIN" and nope["transport"] == "tcp", nope
    assert by_name["2.0.0.127.bl.example.net."]["zone_kind"] == "dnsbl"

    top = json.loads(p.cli("dns", "top", "--since", "1h", "--json").stdout)
    assert top["queries"] >= 3 and top["clients"][0]["client"] == "127.0.0.1", top

    tap = tmp_path / "queries.dnstap"
    p.cli("dns", "export", "--dnstap", str(tap))
    reader = shutil.which("dnstap-ldns")
    if reader:
        out = subprocess.run([reader, "-r", str(tap)], capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        assert "mx.example.net" in out.stdout and "127.0.0.1" in out.stdout and "CQ" in out.stdout, out.stdout


def test_the_rbl_stage_resolves_through_pampas_own_dns(harness, tmp_path):
    p = dns_stack(harness, tmp_path)
    p.add_toml(
        f"""
        [pipeline]
        stages = ["rbl", "whitelist", "score"]
        [stages.rbl]
        resolver = "127.0.0.1:{p.dns_port}"
        timeout_ms = 1000
        [[stages.rbl.lists]]
        zone = "bl.example.net"
        kind = "ip"
        weights = {{ "127.0.0.2" = 4.0 }}
        tag = "RBL_PAMPA_OWN"
        """
    )
    p.cli("domain", "add", "example.org")
    p.cli("user", "add", "strict@example.org", "--password", "secret", "--level", "strict")
    p.start()
    marker, msg = make_message(SENDER, ["strict@example.org"], "listed in pampa's own DNSBL zone")
    send_from(p.smtp_port, "127.0.0.2", SENDER, ["strict@example.org"], msg)
    spam = wait_in_folder(p, "strict@example.org", "Spam", marker)
    assert b"RBL_PAMPA_OWN" in spam

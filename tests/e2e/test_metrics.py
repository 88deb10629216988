"""GET /metrics, /healthz and /readyz on [metrics] listen."""

from __future__ import annotations

from conftest import wait_for


def test_health_and_metrics(harness):
    p = harness.pampa()
    p.setup_users("example.org", "alice")
    p.start()

    assert p.http_status("/healthz") == 200
    assert p.http_status("/livez") == 200
    assert p.http_status("/readyz") == 200

    marker, _ = p.send("sender@remote.test", ["alice@example.org"])
    p.wait_delivered("alice@example.org", marker)

    names = ("pampa_smtp_sessions_total", "pampa_smtp_messages_total")

    def scraped():
        status, body = p.http_get("/metrics")
        return status == 200 and all(n in body for n in names) and body

    body = wait_for(scraped, 10, f"/metrics to show {', '.join(names)}")
    assert "# TYPE pampa_smtp_sessions_total counter" in body, body[:4000]

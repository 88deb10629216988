"""`pampa replay`: recorded decisions recomputed under other spam levels, on both backends."""

from __future__ import annotations

import datetime
import json

import pytest

from conftest import make_message
from test_filtering import ZONE, filtering, send_from, wait_delivered_event

BACKENDS = ["embedded", "nats"]
SENDER = "sender@remote.test"
LISTED, CLEAN = "127.0.0.2", "127.0.0.1"

# The seeded levels, as a levels file: replaying with them must change nothing.
SEEDED_LEVELS = """\
[levels.strict]
cut = 3.0
discard = 8.0
[levels.normal]
cut = 5
discard = 12.0
[levels.tolerant]
cut = 8.0
discard = 20.0
[levels.off]
"""


@pytest.fixture
def dnsbl(harness):
    return harness.rbldnsd(
        {
            ZONE: (
                "ip4set",
                """\
                :127.0.0.2:Listed by the pampa test list
                127.0.0.2
                """,
            )
        }
    )


def replay_json(p, tmp_path, levels: str, *extra: str) -> dict:
    path = tmp_path / f"levels-{abs(hash(levels))}.toml"
    path.write_text(levels)
    cp = p.cli("replay", "--since", "1h", "--levels", str(path), "--json", *extra)
    return json.loads(cp.stdout)


@pytest.mark.parametrize("stack", BACKENDS)
def test_replay_is_deterministic_and_moves_what_the_new_cut_moves(harness, stack, dnsbl, tmp_path):
    p = filtering(harness, stack, dnsbl)
    # filtering() adds strict@ and carol@ (strict), alice@ (normal) and off@ (off).
    p.cli("user", "add", "bob@example.org", "--password", "secret", "--level", "normal")
    p.start()
    before = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=5)
    levels = {
        "strict@example.org": "strict",
        "carol@example.org": "strict",
        "alice@example.org": "normal",
        "bob@example.org": "normal",
        "off@example.org": "off",
    }
    everyone = list(levels)
    batch = [
        (LISTED, everyone),
        (CLEAN, everyone),
        (LISTED, ["alice@example.org", "strict@example.org"]),
        (LISTED, ["bob@example.org", "off@example.org"]),
        (CLEAN, ["alice@example.org", "bob@example.org"]),
        (LISTED, ["carol@example.org"]),
    ]
    sent = []
    for i, (ip, rcpts) in enumerate(batch):
        _, msg = make_message(SENDER, rcpts, f"replay batch {i}")
        sent.append((send_from(p.smtp_port, ip, SENDER, rcpts, msg), ip, rcpts))
    for message_id, _, _ in sent:
        wait_delivered_event(p, message_id)

    decisions = sum(len(rcpts) for _, _, rcpts in sent)
    listed_normal = [
        (mid, r) for mid, ip, rcpts in sent if ip == LISTED for r in rcpts if levels[r] == "normal"
    ]
    assert listed_normal, "the batch must give the normal level something to move"

    # (1) Determinism: the recorded levels reproduce every recorded disposition.
    same = replay_json(p, tmp_path, SEEDED_LEVELS)
    assert same["decisions"] == decisions, same
    assert same["moves"] == [], same
    # A file that names no level keeps every recorded one, too.
    assert replay_json(p, tmp_path, "")["moves"] == []

    # (2) A lower cut for "normal" files exactly its score-4 decisions as Spam.
    lower = replay_json(p, tmp_path, "[levels.normal]\ncut = 3.5\n")
    assert lower["decisions"] == decisions, lower
    moves = [{k: m[k] for k in ("level", "from", "to", "count")} for m in lower["moves"]]
    assert moves == [{"level": "normal", "from": "inbox", "to": "spam", "count": len(listed_normal)}], lower
    assert set(lower["moves"][0]["samples"]) <= {mid for mid, _ in listed_normal}
    assert lower["affected_users"] == len({r for _, r in listed_normal})

    # The table says the same, in words.
    levels_file = tmp_path / "lower.toml"
    levels_file.write_text("[levels.normal]\ncut = 3.5\n")
    table = p.cli("replay", "--since", "1h", "--levels", str(levels_file)).stdout
    assert "Inbox→Spam" in table and f"{decisions} decisions" in table, table

    # --user --to-level: what if alice switched to strict.
    alice = [(mid, ip) for mid, ip, rcpts in sent if "alice@example.org" in rcpts]
    what_if = replay_json(p, tmp_path, "", "--user", "alice@example.org", "--to-level", "strict")
    assert what_if["decisions"] == len(alice), what_if
    expected = sum(1 for _, ip in alice if ip == LISTED)
    assert [(m["from"], m["to"], m["count"]) for m in what_if["moves"]] == [("inbox", "spam", expected)]

    # --labels: the listed mail is spam, the rest ham; the lower cut catches more spam.
    labels = tmp_path / "labels.csv"
    labels.write_text(
        "message_id,label\n" + "".join(f"{mid},{'spam' if ip == LISTED else 'ham'}\n" for mid, ip, _ in sent)
    )
    labelled = replay_json(p, tmp_path, "[levels.normal]\ncut = 3.5\n", "--labels", str(labels))["labels"]
    assert labelled["labelled_decisions"] == decisions
    assert labelled["new"]["spam_caught"] - labelled["old"]["spam_caught"] == len(listed_normal), labelled
    assert labelled["new"]["ham_to_spam"] == labelled["old"]["ham_to_spam"] == 0, labelled

    # A range with no mail in it is reported, not an error.
    empty = p.cli(
        "replay", "--since", "1h", "--until", before.isoformat(), "--levels", str(levels_file)
    ).stdout
    assert "no scored mail in this range" in empty, empty

    # A typo in the levels file is an error that names the key.
    bad = tmp_path / "bad.toml"
    bad.write_text("[levels.normal]\ncutt = 3.5\n")
    cp = p.cli("replay", "--since", "1h", "--levels", str(bad), check=False)
    assert cp.returncode != 0 and "cutt" in cp.stderr, cp.stderr

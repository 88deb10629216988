"""`pampa replay`: recorded decisions recomputed under other spam levels, on both backends."""

from __future__ import annotations

import datetime
import json
import sqlite3

import pytest

from conftest import make_message, wait_for
from test_filtering import ZONE, all_copies, filtering, send_from, trace, wait_delivered_event

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


RESCORE_RULE = """\
body     PAMPA_REPLAY_CANDIDATE /\\breplay-candidate\\b/i
describe PAMPA_REPLAY_CANDIDATE A rule proposed after the mail was scored
score    PAMPA_REPLAY_CANDIDATE 20.0
"""


@pytest.mark.parametrize("stack", BACKENDS)
def test_rescore_diffs_a_candidate_rule_set_against_the_recorded_verdicts(harness, stack, dnsbl, tmp_path):
    p = filtering(harness, stack, dnsbl)
    p.start()
    alice = "alice@example.org"
    sent = []
    for i, (ip, word) in enumerate([(CLEAN, "replay-candidate"), (LISTED, "plain"), (CLEAN, "plain"),
                                    (LISTED, "replay-candidate")]):
        _, msg = make_message(SENDER, [alice], f"rescore {i} {word}")
        sent.append((send_from(p.smtp_port, ip, SENDER, [alice], msg), word))
    for message_id, _ in sent:
        wait_delivered_event(p, message_id)

    # Determinism: rescoring with the rules in force reproduces every recorded score.
    same = json.loads(p.cli("replay", "--since", "1h", "--rescore", "--json").stdout)
    assert same["decisions"] == len(sent), same
    assert same["moves"] == [], same
    assert same["rescore"]["rescored"] == len(sent), same
    assert same["rescore"]["scores_changed"] == 0, same

    # A candidate rule worth 20 discards the two messages it hits, and only those.
    rules = tmp_path / "candidate"
    rules.mkdir()
    (rules / "50_candidate.cf").write_text(RESCORE_RULE)
    plot = tmp_path / "rescore.svg"
    out = json.loads(
        p.cli("replay", "--since", "1h", "--rescore", "--rules", str(rules), "--plot", str(plot), "--json").stdout
    )
    hits = {mid for mid, word in sent if word == "replay-candidate"}
    assert out["rescore"]["scores_changed"] == len(hits), out
    assert out["rescore"]["rules"] == [{"rule": "PAMPA_REPLAY_CANDIDATE", "added": len(hits), "removed": 0}], out
    moved = {(m["from"], m["to"]): m for m in out["moves"]}
    assert set(moved) == {("inbox", "discard")}, out
    assert moved[("inbox", "discard")]["count"] == len(hits)
    assert set(moved[("inbox", "discard")]["samples"]) == hits
    svg = plot.read_text()
    assert svg.startswith("<svg") and "normal cut" in svg and "unlabelled (4)" in svg, svg[:300]

    # The same in words, with the rule table.
    table = p.cli("replay", "--since", "1h", "--rescore", "--rules", str(rules)).stdout
    assert "Inbox→Discard" in table and "PAMPA_REPLAY_CANDIDATE" in table and "2 scores changed" in table, table

    # A body that retention removed is counted and skipped, not an error.
    if stack == "embedded":
        victim = next(mid for mid, word in sent if word == "plain")
        received = next(e for e in trace(p, victim) if e["event_type"] == "mail.received")
        # The embedded log keeps ordinary bodies in its own `bodies` table.
        with sqlite3.connect(p.data_dir / "log" / "events.db", timeout=30) as db:
            removed = db.execute("DELETE FROM bodies WHERE key = ?", (received["payload"]["blob"]["key"],))
            assert removed.rowcount == 1
        gone = json.loads(p.cli("replay", "--since", "1h", "--rescore", "--json").stdout)
        assert gone["rescore"]["skipped_body_gone"] == 1, gone
        assert gone["rescore"]["rescored"] == len(sent) - 1, gone

    # Bad rule folders are named.
    cp = p.cli("replay", "--since", "1h", "--rescore", "--rules", str(tmp_path / "nope"), check=False)
    assert cp.returncode != 0 and "nope" in cp.stderr, cp.stderr


@pytest.mark.parametrize("stack", BACKENDS)
def test_feedback_labels_recover_and_training(harness, stack, dnsbl, tmp_path):
    p = filtering(harness, stack, dnsbl)
    alice, off = "alice@example.org", "off@example.org"
    # alice blocks the sender: her copy is discarded, off's goes to the inbox.
    p.cli("list", "block", "add", "--user", alice, SENDER)
    p.start()
    marker, msg = make_message(SENDER, [alice, off], "discarded then recovered")
    discarded = send_from(p.smtp_port, CLEAN, SENDER, [alice, off], msg)
    wait_delivered_event(p, discarded)
    assert all_copies(p, alice, marker) == []
    _, msg = make_message(SENDER, [off], "spam for off")
    spammy = send_from(p.smtp_port, LISTED, SENDER, [off], msg)
    wait_delivered_event(p, spammy)

    # Feedback is an event in the message's history.
    out = p.cli("feedback", "ham", discarded, "--user", alice).stdout
    assert "recover" in out, out
    p.cli("feedback", "spam", spammy, "--user", off.upper())
    kinds = [e["event_type"] for e in trace(p, discarded)]
    assert kinds.count("mail.feedback") == 1, kinds
    feedback = next(e for e in trace(p, discarded) if e["event_type"] == "mail.feedback")
    assert feedback["payload"] == {"message_id": discarded, "user": alice, "verdict": "ham", "origin": "cli"}

    # Replay takes the users' verdicts as labels, per recipient.
    labelled = json.loads(p.cli("replay", "--since", "1h", "--labels", "feedback", "--json").stdout)["labels"]
    assert labelled["labelled_decisions"] == 2, labelled
    assert labelled["old"]["ham_discarded"] == 1 and labelled["old"]["ham"] == 1, labelled
    assert labelled["old"]["spam"] == 1 and labelled["old"]["spam_caught"] == 0, labelled

    # Recover puts alice's copy in her inbox, through deliver, once.
    out = p.cli("recover", discarded, "--to", alice).stdout
    assert "Queued" in out, out
    inbox = p.wait_delivered(alice, marker)
    assert b"X-Spam-Flag: NO" in inbox.read_bytes()
    events = wait_for(
        lambda: [e for e in trace(p, discarded) if e["event_type"] == "mail.delivered"][1:] or None,
        30,
        "the recovery's mail.delivered",
    )
    assert events[0]["payload"]["deliveries"][0]["outcome"] == {"kind": "delivered"}, events
    assert any(e["event_type"] == "mail.recovered" for e in trace(p, discarded))
    # Asking again changes nothing: the log drops the duplicate event, and deliver
    # would find the copy in the inbox anyway.
    p.cli("recover", discarded, "--to", alice)
    assert len(p.copies(alice, marker)) == 1

    # What cannot be recovered says why.
    cp = p.cli("recover", discarded, "--to", off, check=False)
    assert cp.returncode != 0 and "nothing to recover" in cp.stderr, cp.stderr
    cp = p.cli("recover", discarded, "--to", "bob@example.org", check=False)
    assert cp.returncode != 0 and "not a recipient" in cp.stderr and alice in cp.stderr, cp.stderr
    cp = p.cli("feedback", "spam", "no-such-message@example", "--user", alice, check=False)
    assert cp.returncode != 0 and "no-such-message@example" in cp.stderr, cp.stderr

    # Training from feedback learns each message once, and relearns a changed verdict.
    model = tmp_path / "model.bin"
    out = p.cli("train", "--from-feedback", "--out", str(model)).stdout
    assert "learned 1 spam and 1 ham" in out, out
    out = p.cli("train", "--from-feedback", "--out", str(model)).stdout
    assert "learned 0 spam and 0 ham" in out and "2 were learned before" in out, out
    p.cli("feedback", "ham", spammy, "--user", off)
    out = p.cli("train", "--from-feedback", "--out", str(model)).stdout
    assert "learned 0 spam and 1 ham (1 of them relearned" in out, out
    assert "has 2 ham and 0 spam messages" in out, out

"""The rule writer's tools: pampa train, pampa score and pampa eval, with no bus."""

from __future__ import annotations

import json
import random

HAM_WORDS = "meeting agenda project review budget quarterly report schedule lunch team notes draft".split()
SPAM_WORDS = "viagra casino winner lottery prize cheap pills bitcoin offer unsubscribe millions".split()


def synthetic(kind: str, i: int, rng: random.Random) -> bytes:
    """A small made-up message; ham and spam differ in vocabulary and in spam signs."""
    words = HAM_WORDS if kind == "ham" else SPAM_WORDS
    text = " ".join(rng.choice(words) for _ in range(40))
    subject = f"{kind} notes {i}" if kind == "ham" else f"WIN BIG MONEY NOW {i}!!!"
    return (
        f"From: sender{i}@example.net\r\nTo: alice@example.org\r\nSubject: {subject}\r\n"
        f"Date: Fri, 27 Nov 2026 12:00:00 +0000\r\nMessage-ID: <{kind}{i}@example.net>\r\n\r\n{text}\r\n"
    ).encode()


def corpus(tmp_path, n: int = 70):
    rng = random.Random(7)
    dirs = {}
    for kind in ("ham", "spam"):
        d = tmp_path / kind
        d.mkdir()
        for i in range(n):
            (d / f"{i:03d}.eml").write_bytes(synthetic(kind, i, rng))
        dirs[kind] = d
    return dirs


def test_score_prints_hits_and_a_disposition_per_level(harness, tmp_path):
    p = harness.pampa()
    msg = tmp_path / "spam.eml"
    msg.write_bytes(b"From ignored-mbox-line\nSubject: FREE MONEY!!! ACT NOW\r\n\r\nClick http://192.0.2.7/win now\r\n")
    out = json.loads(p.cli("score", "--json", str(msg)).stdout)
    assert len(out) == 1
    assert out[0]["hits"], out
    assert set(out[0]["dispositions"]) == {"strict", "normal", "tolerant", "off"}
    assert out[0]["dispositions"]["off"] == "inbox"
    table = p.cli("score", str(msg)).stdout
    assert "RULE" in table and "normal:" in table


def test_train_then_score_with_the_classifier(harness, tmp_path):
    dirs = corpus(tmp_path)
    p = harness.pampa()
    model = tmp_path / "model.bayes"
    out = p.cli("train", "--ham", str(dirs["ham"]), "--spam", str(dirs["spam"]), "--out", str(model))
    assert model.exists(), out.stdout + out.stderr
    p.add_toml(f'[stages.score]\nclassifier = "{model}"\n')
    spammy = tmp_path / "new-spam.eml"
    spammy.write_bytes(synthetic("spam", 999, random.Random(99)))
    hits = [h["name"] for h in json.loads(p.cli("score", "--json", str(spammy)).stdout)[0]["hits"]]
    assert any(h.startswith("BAYES_9") for h in hits), hits
    bad = p.cli("train", "--ham", str(tmp_path / "missing"), "--spam", str(dirs["spam"]), "--out", str(model), check=False)
    assert bad.returncode != 0 and "missing" in bad.stderr


def test_eval_reports_rates_per_level_as_json(harness, tmp_path):
    dirs = corpus(tmp_path)
    p = harness.pampa()
    report = json.loads(
        p.cli("eval", "--ham", str(dirs["ham"]), "--spam", str(dirs["spam"]), "--json", "--plot", str(tmp_path / "p.svg")).stdout
    )
    assert report["messages"] == 140
    levels = {level["name"]: level for level in report["levels"]}
    assert set(levels) == {"strict", "normal", "tolerant", "off"}
    normal = levels["normal"]
    assert normal["cut"] == 5.0 and normal["discard"] == 12.0
    for key in ("spam_caught", "ham_to_spam", "ham_discarded"):
        assert 0.0 <= normal[key] <= 1.0
    # The made-up corpus is easy: cross-validated (56 + 56 to train per fold, above the
    # classifier's minimum of 50 each), the classifier separates it.
    assert normal["spam_caught"] > 0.9 and normal["ham_to_spam"] == 0.0, normal
    assert (tmp_path / "p.svg").read_text().startswith("<svg")

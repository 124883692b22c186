"""medft ask: a trained run answers a question about an image as it answered it in its test."""

from __future__ import annotations

import json

import pytest
from medft_testing import TINY, cache, cli  # noqa: F401 - fixtures

from medft.commands.ask import ask, read_questions
from medft.util.errors import ConfigError


def test_ask_answers_as_the_run_did_in_its_test(cli, cache, tmp_path, capsys):
    from medft.cli import main
    from medft.data.sources import demo

    status, out, err, run = cli("+tune=lora", "trainer.max_epochs=1", *TINY)
    assert status == 0, err
    rows = [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]
    test = {r["id"]: r for r in demo(str(cache / "demo"))["test"]}
    row = rows[0]
    image = test[row["id"]]["image"]

    main(["ask", str(run), f"image={image}", f"question={row['question']}"])
    assert capsys.readouterr().out.strip().splitlines()[-1] == row["prediction"]

    questions = tmp_path / "q.jsonl"
    questions.write_text("".join(json.dumps({"image": test[r["id"]]["image"], "question": r["question"]}) + "\n" for r in rows[:4]))
    main(["ask", str(run), f"questions={questions}"])
    answers = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines() if line.startswith("{")]
    assert [a["answer"] for a in answers] == [r["prediction"] for r in rows[:4]]
    assert [a["question"] for a in answers] == [r["question"] for r in rows[:4]]

    with pytest.raises(SystemExit) as exit_:  # a VQA run needs a question: one line, before the model loads
        main(["ask", str(run), f"image={image}"])
    assert exit_.value.code == 2 and "add question=" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["ask", str(run), f"image={tmp_path / 'missing.png'}", "question=what?"])
    assert "cannot read image" in capsys.readouterr().err


def test_read_questions_errors(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text('{"question": "is it normal?"}\n')
    with pytest.raises(ConfigError, match="no \"image\" and no image= was given"):
        read_questions(path, None)
    assert read_questions(path, "x.png") == [{"image": "x.png", "question": "is it normal?"}]
    path.write_text("not json\n")
    with pytest.raises(ConfigError, match="q.jsonl:1 is not a JSON line"):
        read_questions(path, None)


VQA_RAD = __import__("pathlib").Path(__file__).resolve().parents[1].parent / "shared" / "data" / "vqa_rad" / "mevf"


@pytest.mark.skipif(not VQA_RAD.is_dir(), reason="real VQA-RAD not present (../shared/data/vqa_rad/mevf)")
def test_ask_about_a_real_vqa_rad_image(cli):
    """A tiny model trained a few steps on real VQA-RAD answers a question about one of its images."""
    status, out, err, run = cli("+tune=layernorm", "dataset=vqa_rad", f"dataset.root={VQA_RAD}", "trainer.max_epochs=1",
                                "+trainer.limit_train_batches=3", *TINY)
    assert status == 0, err
    image = sorted((VQA_RAD / "images").iterdir())[0]
    [result] = ask(run, [{"image": str(image), "question": "is there a fracture?"}])
    assert isinstance(result["answer"], str) and result["image"] == str(image)


def test_a_report_run_writes_the_report_from_the_image_alone(cli, tmp_path, capsys):
    from medft.cli import main
    from medft.testing.fixtures import make_iu_xray

    root = make_iu_xray(tmp_path / "iu", sizes=(8, 2, 3))
    status, out, err, run = cli("dataset=iu_xray", f"dataset.root={root}", "+tune=layernorm", "trainer.max_epochs=1",
                                "data.batch_size=4", "dataset.max_new_tokens=6", "test=false",
                                "callbacks.progress_bar.refresh_rate=0")
    assert status == 0, err
    image = next((root / "images").rglob("*.png"))
    main(["ask", str(run), f"image={image}"])
    report = capsys.readouterr().out.strip().splitlines()[-1]
    [again] = ask(run, [{"image": str(image), "question": ""}])
    assert again["report"] == report and "answer" not in again

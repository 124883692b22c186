"""Report generation: R2Gen cleaning, pycocoevalcap scores, the BLIP captioning model (BlipReportGen), every tune mode."""

import pytest
import torch
import yaml
from PIL import Image

from medft.config.search import CONFIG_DIR
from medft.metrics.evaluators import ReportEvaluator, VQAEvaluator, make_evaluator
from medft.metrics.report_gen import clean_report, coco_scores
from medft.tuning import MODE_ORDER, apply_tuning
from tests.conftest import model_cfg


def build(**overrides):
    from medft.models.blip_report_gen import build_blip_report_gen

    return build_blip_report_gen(**model_cfg("blip_report_tiny", **overrides))


def records(n=2):
    reports = ["The heart is normal. No effusion.", "Lungs are clear. No pneumothorax or fracture."]
    return [{"id": f"r{i}", "report": reports[i % 2], "pil_image": Image.new("RGB", (40, 30), (i * 40, 0, 0))}
            for i in range(n)]


@pytest.mark.parametrize("raw, clean", [
    ("1. The heart is normal in size.. 2. No effusion.", "the heart is normal in size . no effusion ."),
    ("Heart: normal;  lungs\nclear__ ok?", "heart normal lungs clear ok ."),
    ('No "acute" disease/abnormality. Left-sided XXXX.', "no acute diseaseabnormality . left-sided xxxx ."),
])
def test_clean_report_the_r2gen_way(raw, clean):
    assert clean_report(raw) == clean
    assert clean_report(clean) == clean  # idempotent


class FakeMeteor:
    """Stands in for METEOR's JVM (10-20 s to start); the real one runs in test_report_e2e."""

    def compute_score(self, gts, res):
        per = [float(gts[i] == res[i]) for i in gts]
        return sum(per) / len(per), per


def test_coco_scores(monkeypatch):
    """Perfect on two reports, poor on one, nothing on an empty one; cleaned before scoring."""
    import pycocoevalcap.meteor.meteor

    monkeypatch.setattr(pycocoevalcap.meteor.meteor, "Meteor", FakeMeteor)
    refs = ["The heart is normal in size. No effusion.", "Lungs are clear. No pneumothorax.",
            "Heart size is normal. No focal consolidation.", "Normal chest."]
    scores = coco_scores(refs, [refs[0], refs[1].upper(), "the heart is big.", ""])
    assert set(scores) == {"bleu_1", "bleu_2", "bleu_3", "bleu_4", "meteor", "rouge_l", "cider"}
    assert all(0.0 < scores[k] < 1.0 for k in ("bleu_1", "bleu_4", "rouge_l"))
    assert scores["meteor"] == 0.5  # refs[1].upper() matches after cleaning
    assert scores["bleu_1"] > scores["bleu_4"]
    from pycocoevalcap.rouge.rouge import Rouge  # the per-report scores behind the mean, without a JVM

    gts = {i: [clean_report(r)] for i, r in enumerate(refs)}
    res = {0: [clean_report(refs[0])], 1: [clean_report(refs[1].upper())], 2: ["the heart is big ."], 3: ["."]}
    mean, per = Rouge().compute_score(gts, res)
    assert [float(x) for x in per[:2]] == [1.0, 1.0] and max(per[2:]) < 1.0 and scores["rouge_l"] == pytest.approx(mean)


def test_report_evaluator_rows_and_cheap_validation_metric():
    ev = ReportEvaluator(coco=False)
    rows = ev.update(["the heart is normal ."], [{"id": "a", "report": "The heart is normal."}])
    assert rows == [{"id": "a", "reference": "The heart is normal.", "generated": "the heart is normal ."}]
    assert set(ev.compute()) == {"bleu_4"} and float(ev.compute()["bleu_4"]) == pytest.approx(1.0)
    assert isinstance(make_evaluator("vqa", "test"), VQAEvaluator)
    assert make_evaluator("report", "test").coco and not make_evaluator("report", "val").coco


def test_collate_masks_prompt_and_padding():
    net = build(prompt="findings:")
    batch = net.collate(records())
    tok = net.tokenizer
    assert batch["pixel_values"].shape == (2, 3, 64, 64)
    assert (batch["input_ids"][:, 0] == tok.bos_token_id).all()
    n_prompt = 1 + len(tok("findings:", add_special_tokens=False).input_ids)
    assert (batch["labels"][:, :n_prompt] == -100).all()
    assert ((batch["labels"] == -100) | (batch["attention_mask"] == 1)).all()
    first = batch["labels"][0][batch["labels"][0] != -100]
    assert tok.decode(first, skip_special_tokens=True).startswith("the heart")
    assert batch["meta"] == [{"id": "r0", "report": records()[0]["report"]}, {"id": "r1", "report": records()[1]["report"]}]
    texts = net.generate(batch, max_new_tokens=5)
    assert len(texts) == 2 and all(isinstance(t, str) and not t.startswith("findings") for t in texts)


@pytest.mark.parametrize("mode", [m for m in MODE_ORDER if m != "prefix"])
def test_every_tune_mode_trains_the_report_model(mode):
    net = build()
    tune = yaml.safe_load((CONFIG_DIR / "tune" / f"{mode}.yaml").read_text())
    report = apply_tuning(net, tune)
    trainable = [p for p in net.model.parameters() if p.requires_grad]
    assert (len(trainable) == 0) == (mode == "frozen")
    batch = net.collate(records())
    loss = net.loss(batch)
    assert torch.isfinite(loss)
    if trainable:
        loss.backward()
        assert all(p.grad is not None for p in trainable)
        frozen = [p for p in net.model.parameters() if not p.requires_grad]
        assert all(p.grad is None for p in frozen)
    assert report.mode == mode


def test_report_model_refuses_the_vqa_task():
    from medft.models.blip_report_gen import build_blip_report_gen
    from medft.util.errors import ConfigError

    with pytest.raises(ConfigError, match="writes reports"):
        build_blip_report_gen(**model_cfg("blip_report_tiny", task="vqa"))


def test_pretrained_round_trip(tmp_path):
    """model.pretrained: a saved captioning model and processor load back and generate the same text."""
    net = build()
    net.model.save_pretrained(tmp_path / "blip")
    net.processor.save_pretrained(tmp_path / "blip")
    loaded = build(pretrained=str(tmp_path / "blip"))
    assert loaded.tokenizer.bos_token == "[DEC]" and loaded.pretrained == str(tmp_path / "blip")
    batch = net.collate(records())
    torch.testing.assert_close(loaded.loss(loaded.collate(records())), net.loss(batch))
    assert loaded.generate(batch, max_new_tokens=6) == net.generate(batch, max_new_tokens=6)


def test_eval_loads_exactly_the_trained_parameters(tmp_path):
    from functools import partial

    from medft.training.module import MedVLMModule
    from medft.training.pipeline import load_trained
    from medft.util.errors import MedftError

    def module(mode):
        net = build()
        apply_tuning(net, yaml.safe_load((CONFIG_DIR / "tune" / f"{mode}.yaml").read_text()))
        return MedVLMModule(net, optim=partial(torch.optim.AdamW), tune_name=mode)

    trained = module("layernorm")
    state = {n: p.detach() + 1.0 for n, p in trained.named_parameters() if p.requires_grad}
    torch.save({"state_dict": state, "medft": {"tune": "layernorm"}}, tmp_path / "best.ckpt")
    fresh = module("layernorm")
    load_trained(fresh, tmp_path / "best.ckpt")
    params = dict(fresh.named_parameters())
    assert all(torch.equal(params[n], v) for n, v in state.items())
    with pytest.raises(MedftError, match="checkpoint does not match this run"):
        load_trained(module("bitfit"), tmp_path / "best.ckpt")

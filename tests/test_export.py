"""medft export: the exported model, loaded with transformers / peft alone, gives medft's logits."""

from __future__ import annotations

import json

import pytest
import torch
from medft_testing import TINY, cache, cli  # noqa: F401 - fixtures
from PIL import Image

from medft.commands.export import export
from medft.training.pipeline import load_run_model
from medft.util.errors import ConfigError

# enough steps that the trained parameters move away from their initial values (LoRA B starts at 0)
TRAIN = ["trainer.max_epochs=1", *TINY]


def records(n: int = 3) -> list[dict]:
    return [{"id": f"q{i}", "question": q, "answer": a, "answer_type": t, "image": f"img{i}.png",
             "pil_image": Image.new("RGB", (48, 40), (40 * i, 120, 200 - 30 * i))}
            for i, (q, a, t) in enumerate([("is there a lesion?", "yes", "CLOSED"), ("which organ is shown?", "chest", "OPEN"),
                                           ("how many lesions?", "two", "OPEN")][:n])]


def blip_logits(model, batch) -> torch.Tensor:
    """Answer-decoder logits of a BlipForQuestionAnswering (plain, or wrapped by peft)."""
    m = model.get_base_model() if hasattr(model, "get_base_model") else model
    with torch.no_grad():
        image = m.vision_model(pixel_values=batch["pixel_values"])[0]
        question = m.text_encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                  encoder_hidden_states=image, return_dict=False)[0]
        return m.text_decoder(input_ids=batch["decoder_input_ids"], attention_mask=batch["decoder_attention_mask"],
                              encoder_hidden_states=question, encoder_attention_mask=batch["attention_mask"]).logits


def llava_logits(model, batch) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                     pixel_values=batch["pixel_values"]).logits


@pytest.mark.parametrize("mode", ["lora", "layernorm", "full"])
def test_blip_export_gives_medfts_logits(cli, tmp_path, mode):
    from peft import PeftModel
    from transformers import AutoProcessor, BlipForQuestionAnswering

    status, out, err, run = cli(f"+tune={mode}", *TRAIN)
    assert status == 0, err
    medft = load_run_model(run)["net"]
    batch = medft.collate(records())
    expected = blip_logits(medft.model, batch)
    medft.model.eval()

    hf = export(run, "hf", tmp_path / "hf")
    plain = BlipForQuestionAnswering.from_pretrained(hf).eval()
    assert torch.allclose(blip_logits(plain, batch), expected, atol=1e-5)
    processor = AutoProcessor.from_pretrained(hf)
    enc = processor(images=[r["pil_image"] for r in records()], text=[r["question"] for r in records()],
                    padding="longest", return_tensors="pt")
    assert torch.equal(enc.input_ids, batch["input_ids"]) and torch.allclose(enc.pixel_values, batch["pixel_values"])
    card = (hf / "README.md").read_text()
    assert f"tune={mode}" in card and "dataset: demo" in card and "test/acc" in card and "trainable parameters" in card

    if mode == "full":
        with pytest.raises(ConfigError, match="tune=full has no peft adapter format.*format=hf"):
            export(run, "peft", tmp_path / "peft")
        return
    adapter = export(run, "peft", tmp_path / "peft")
    config = json.loads((adapter / "adapter_config.json").read_text())
    base_dir = adapter / "base"  # random-weight tiny model: the base is exported beside the adapter
    assert config["base_model_name_or_path"] == str(base_dir.resolve())
    assert config["peft_type"] == {"lora": "LORA", "layernorm": "LN_TUNING"}[mode]
    base = BlipForQuestionAnswering.from_pretrained(config["base_model_name_or_path"]).eval()
    assert not torch.allclose(blip_logits(base, batch), expected, atol=1e-4)  # the training is in the adapter
    tuned = PeftModel.from_pretrained(base, adapter).eval()
    assert torch.allclose(blip_logits(tuned, batch), expected, atol=1e-5)
    if mode == "layernorm":  # exactly the norm modules medft trained
        trained = {k.rsplit(".", 1)[0] for k, p in load_run_model(run)["net"].model.named_parameters() if p.requires_grad}
        wrapped = {n.removeprefix("base_model.model.") for n, m in tuned.named_modules() if type(m).__name__ == "LNTuningLayer"}
        assert wrapped == trained  # (peft writes target_modules as the shortest suffixes matching that set)


def test_llava_lora_export_gives_medfts_logits(cli, tmp_path):
    from peft import PeftModel
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    status, out, err, run = cli("model=llava_tiny", "+tune=lora", *TRAIN)
    assert status == 0, err
    medft = load_run_model(run)["net"]
    batch = medft.collate(records())
    expected = llava_logits(medft.model, batch)
    hf = export(run, "hf", tmp_path / "hf")
    plain = LlavaForConditionalGeneration.from_pretrained(hf).eval()
    assert torch.allclose(llava_logits(plain, batch), expected, atol=1e-4)
    assert AutoProcessor.from_pretrained(hf).chat_template == medft.processor.chat_template
    adapter = export(run, "peft", tmp_path / "peft")
    base = LlavaForConditionalGeneration.from_pretrained(adapter / "base").eval()
    tuned = PeftModel.from_pretrained(base, adapter).eval()
    assert torch.allclose(llava_logits(tuned, batch), expected, atol=1e-4)


def test_export_refuses_bad_arguments(tmp_path, capsys):
    from medft.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["export", str(tmp_path), "format=onnx"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "format='onnx' is not known" in err
    with pytest.raises(SystemExit):
        main(["export", str(tmp_path), "fromat=hf"])
    assert "takes RUN_DIR and format=, out=" in capsys.readouterr().err


def test_peft_adapter_names_the_checkpoint_the_run_started_from(cli, tmp_path):
    """A run from a checkpoint directory (here: an exported medft model): adapter_config.json names it."""
    from peft import PeftModel
    from transformers import BlipForQuestionAnswering

    status, out, err, first = cli("+tune=layernorm", *TRAIN, run_dir=tmp_path / "first")
    assert status == 0, err
    checkpoint = export(first, "hf", tmp_path / "ckpt")
    status, out, err, run = cli("+tune=lora", f"model.pretrained={checkpoint}", *TRAIN, run_dir=tmp_path / "second")
    assert status == 0, err
    adapter = export(run, "peft", tmp_path / "adapter")
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(checkpoint.resolve()) and not (adapter / "base").exists()
    medft = load_run_model(run)["net"]
    batch = medft.collate(records())
    tuned = PeftModel.from_pretrained(BlipForQuestionAnswering.from_pretrained(config["base_model_name_or_path"]), adapter)
    assert torch.allclose(blip_logits(tuned.eval(), batch), blip_logits(medft.model, batch), atol=1e-5)
    assert str(checkpoint.resolve()) in (adapter / "README.md").read_text()


def test_hf_export_of_a_run_on_a_quantized_base_is_refused_before_loading(tmp_path, capsys):
    """format=hf would merge the trained slice into 4-bit approximations of the weights: refused in one line."""
    import yaml

    from medft.cli import main
    from medft.runs.trained import FILENAME as TRAINED_FILE

    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    config = {"model": {"name": "medgemma_4b", "quantization": "nf4"}, "tune": {"name": "layernorm"}}
    (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    (run / TRAINED_FILE).write_bytes(b"")  # never read: the refusal comes first
    with pytest.raises(SystemExit) as exit_:
        main(["export", str(run), "format=hf"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err == ("medft: error: run run trained on a model.quantization=nf4 base: format=hf would write its nf4 "
                   "weights, not the model's; export format=peft (lora, layernorm) and apply it to the unquantized checkpoint")

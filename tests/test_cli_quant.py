"""CLI of the quantization pipeline: calibrate, quantize, quickstart (on the tiny fixtures)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

import quellm
from quellm.cli import main

FIX = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """The tiny tied Llama fixture plus a word-level tokenizer over its 256 ids ("w0".."w255")."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    d = tmp_path_factory.mktemp("model") / "tiny"
    shutil.copytree(FIX / "llama_tied_llama3", d)
    tok = Tokenizer(models.WordLevel({f"w{i}": i for i in range(256)}, unk_token="w0"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece()
    tok.save(str(d / "tokenizer.json"))
    return str(d)


@pytest.fixture(scope="module")
def text(tmp_path_factory):
    p = tmp_path_factory.mktemp("text") / "calib.txt"
    rng = np.random.default_rng(0)
    p.write_text(" ".join(f"w{i}" for i in rng.integers(0, 256, 400)), encoding="utf-8")
    return p


def test_calibrate_then_quantize(model_dir, tmp_path, text, capsys):
    MODEL = model_dir
    stats = tmp_path / "stats.npz"
    assert main(["calibrate", MODEL, "--data", str(text), "--n-samples", "2", "--seq-len", "16",
                 "--out", str(stats)]) == 0
    assert stats.exists() and "points" in capsys.readouterr().out
    assert main(["calibrate", MODEL, "--out", str(stats), "--n-samples", "1", "--seq-len", "8"]) == 2
    assert "already exists" in capsys.readouterr().err
    out = tmp_path / "q"
    assert main(["quantize", MODEL, "--recipe", "smoothquant:alpha=0.6", "--stats", str(stats),
                 "--out", str(out)]) == 0
    msg = capsys.readouterr().out
    assert "w8a8" in msg and "quantized linears" in msg
    q = quellm.load(out)
    assert q.recipe.name.startswith("smoothquant") and q.recipe.alpha == 0.6
    assert main(["quantize", MODEL, "--recipe", "w8a8", "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    # calibrates itself (data-free) when the recipe needs statistics and none are given
    assert main(["quantize", MODEL, "--recipe", "w4a8:group=16", "--n-samples", "2", "--seq-len", "8",
                 "--out", str(out), "--force"]) == 0
    assert quellm.load(out).recipe.name == "w4a8-g16"
    # a GPTQ recipe runs layer by layer (data-free or from --calib), or from the float model's XᵀX
    for extra in ([], ["--calib", str(text)], ["--no-layerwise"], ["--no-layerwise", "--calib", str(text)]):
        assert main(["quantize", MODEL, "--recipe", "gptq:group=16", "--n-samples", "2", "--seq-len", "16",
                     "--out", str(out), "--force", *extra]) == 0, extra
        assert quellm.load(out).recipe.linear.w_method == "gptq"


@pytest.mark.parametrize("args, match", [
    (["--recipe", "nope"], "unknown recipe"),
    (["--recipe", "w4a8:group=7"], "group"),
    (["--recipe", "w8a8", "--stats", "/nonexistent.npz"], "nonexistent"),
])
def test_quantize_errors(model_dir, tmp_path, capsys, args, match):
    MODEL = model_dir
    assert main(["quantize", MODEL, *args, "--out", str(tmp_path / "o")]) == 2
    assert match in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_calibrate_empty_text(model_dir, tmp_path, capsys):
    MODEL = model_dir
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    assert main(["calibrate", MODEL, "--data", str(empty), "--out", str(tmp_path / "s.npz")]) == 2
    assert "empty" in capsys.readouterr().err


def test_quickstart_tiny(model_dir, tmp_path, capsys):
    MODEL = model_dir
    assert main(["quickstart", "--model", MODEL, "--calib-samples", "2", "--eval-tokens", "256",
                 "--out", str(tmp_path / "qs")]) == 0
    out = capsys.readouterr().out
    assert "perplexity" in out and "float32" in out and "smoothquant" in out and "done in" in out
    assert quellm.load(tmp_path / "qs").recipe.smooth == "smoothquant"

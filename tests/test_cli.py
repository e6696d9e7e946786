"""The ``quellm`` command line: info and inspect."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
from conftest import TINY_MAMBA

from quellm.cli import main


def run_cli(*args: str) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("quellm")
    cmd = [str(exe), *args] if exe.exists() else [sys.executable, "-m", "quellm", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ))


def test_info_entry_point():
    out = run_cli("info")
    assert out.returncode == 0, out.stderr
    assert "ISA: active" in out.stdout
    assert "CUDA:" in out.stdout


def test_version(capsys):
    import quellm

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == quellm.__version__


def test_inspect(make_checkpoint, capsys):
    path, tensors = make_checkpoint(dtype=ml_dtypes.bfloat16, shard_bytes=4000)
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "LlamaForCausalLM" in out
    n = sum(t.size for t in tensors.values())
    assert f"{n:,}" in out
    assert "BF16" in out and "safetensors" in out
    assert "model.layers.0.mlp.up_proj.weight" not in out
    assert main(["inspect", str(path), "--tensors"]) == 0
    out = capsys.readouterr().out
    assert "model.layers.0.mlp.up_proj.weight" in out and "[48, 32]" in out


def test_inspect_mamba(make_checkpoint, capsys):
    path, _ = make_checkpoint(TINY_MAMBA, np.float16)
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "MambaForCausalLM" in out and "state_size" in out and "F16" in out


def test_inspect_bad_checkpoint_exits_2(make_checkpoint):
    path, _ = make_checkpoint()
    (path / "model.safetensors").write_bytes(b"\x00" * 3)
    out = run_cli("inspect", str(path))
    assert out.returncode == 2
    assert "error:" in out.stderr and "model.safetensors" in out.stderr
    assert "Traceback" not in out.stderr


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    assert "inspect" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [["inspect"], ["frobnicate"]])
def test_usage_errors(argv):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2


FIXTURES = Path(__file__).parent / "fixtures"


def _with_tokenizer(tmp_path):
    """A fixture model with a small byte-level BPE tokenizer.json, so the CLI can take text."""
    import shutil

    from tokenizers import Tokenizer, models, pre_tokenizers

    d = tmp_path / "m"
    shutil.copytree(FIXTURES / "llama_untied", d)
    vocab = {chr(i) if 33 <= i < 127 else f"<{i}>": i for i in range(256)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<0>"))
    tok.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    tok.save(str(d / "tokenizer.json"))
    return d


def test_generate_streams_and_reports_speed(tmp_path):
    d = _with_tokenizer(tmp_path)
    out = run_cli("generate", str(d), "--prompt", "abc", "--max-new-tokens", "5")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("abc") and len(out.stdout.strip()) > 3
    assert "tok/s" in out.stderr


def test_eval_perplexity_and_against(tmp_path):
    d = _with_tokenizer(tmp_path)
    data = tmp_path / "t.txt"
    data.write_text("hello world, this is a small text for the evaluation window test. " * 3)
    out = run_cli("eval", str(d), "--data", str(data), "--ctx", "32")
    assert out.returncode == 0, out.stderr
    assert "perplexity" in out.stdout and "tokens" in out.stdout
    out = run_cli("eval", str(d), "--data", str(data), "--ctx", "32", "--against", str(d))
    assert out.returncode == 0, out.stderr
    assert "top-1 agreement 100.00 %" in out.stdout


def test_eval_missing_data_file(tmp_path):
    out = run_cli("eval", str(FIXTURES / "llama_untied"), "--data", str(tmp_path / "nope.txt"))
    assert out.returncode == 2 and "cannot read" in out.stderr

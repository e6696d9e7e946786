"""The outlier report: the summary finds a planted outlier channel, the rotated second moments
match a dense numpy computation, the HTML references the PNGs it wrote, bad input is refused."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest

import quellm
from quellm.calibrate import PointStats, Stats
from quellm.cli import main
from quellm.errors import QuellmError
from quellm.hadamard import hadamard_matrix
from quellm.report import rotated_second_moment

FIXTURES = Path(__file__).parent / "fixtures"
PLANTED = 13


def point_from(x: np.ndarray, kind: str = "attn_in", layer: int = 0, xtx: bool = True) -> PointStats:
    x = x.astype(np.float64)
    return PointStats(layer, kind, x.shape[0], np.abs(x).max(0), x.sum(0), (x**2).sum(0), (x**3).sum(0),
                      (x**4).sum(0), x.T @ x if xtx else None)


def synthetic_stats(n: int = 64, layers: int = 4, tokens: int = 512, scale: float = 40.0, xtx: bool = True,
                    kind: str = "attn_in") -> Stats:
    """Gaussian activations with channel PLANTED ``scale`` times larger in every layer."""
    rng = np.random.default_rng(0)
    points = {}
    for layer in range(layers):
        x = rng.standard_normal((tokens, n))
        x[:, PLANTED % n] *= scale
        points[(kind, layer)] = point_from(x, kind, layer, xtx)
    info = {"architecture": "synthetic", "hidden_size": n, "num_hidden_layers": layers, "vocab_size": 0}
    return Stats(info, points, {"n_samples": 1, "seq_len": tokens})


@pytest.mark.parametrize("xtx", [True, False])
def test_summary_finds_planted_channel_and_rotation_flattens_it(xtx):
    s = quellm.report(synthetic_stats(xtx=xtx))
    assert s.out_dir is None and s.files == []
    for p in s.points:
        assert p.top_channels[0] == PLANTED
        assert p.top_absmax[0] == max(p.top_absmax)
        assert p.absmax_ratio > 20 and p.rms_ratio > 30
        assert p.rotation == ("exact" if xtx else "diagonal")
        assert p.rotated_rms_ratio < 1.5  # the Hadamard spreads the one big channel over all of them
    assert s.persistent["attn_in"][0] == (PLANTED, 4, 4)
    text = s.text()
    assert f"{PLANTED}:" in text and f"{PLANTED} (4/4)" in text
    assert ("exact: diag(R XᵀX Rᵀ)" if xtx else "diagonal estimate") in text


def test_rotate_off_and_unsupported_size():
    s = quellm.report(synthetic_stats(), rotate=False)
    assert all(p.rotation == "off" and p.rotated_rms_ratio is None for p in s.points)
    s = quellm.report(synthetic_stats(n=10, layers=1))  # 10 = 5·2 is no Hadamard size
    (p,) = s.points
    assert p.rotation == "n/a" and p.rotated_rms_ratio is None
    assert "-> n/a (n/a)" in s.text() and "not a supported Hadamard size" in s.text()
    assert s.persistent["attn_in"] == []  # one layer: nothing persists


@pytest.mark.parametrize("n", [16, 12, 40, 128])
def test_rotated_second_moment_exact_matches_dense_numpy(n):
    rng = np.random.default_rng(n)
    x = rng.standard_normal((300, n)) @ rng.standard_normal((n, n)) + rng.standard_normal(n)  # correlated
    x[:, 1] *= 30
    p = point_from(x)
    got, how = rotated_second_moment(p, chunk=5)  # several chunks, one ragged
    r = hadamard_matrix(n, normalized=True)  # quellm.fwht(x) == x @ r.T
    want = np.diag(r @ p.xtx @ r.T) / p.count
    assert how == "exact"
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6 * want.max())
    np.testing.assert_allclose(got.sum(), p.sum2.sum() / p.count, rtol=1e-5)  # the trace is preserved
    np.testing.assert_allclose(got, ((x @ r.T) ** 2).mean(0), rtol=1e-5, atol=1e-6 * want.max())


def test_diagonal_estimate_is_exact_for_uncorrelated_channels():
    n, count = 32, 1000
    rng = np.random.default_rng(1)
    mu, var = rng.standard_normal(n) * 3, rng.uniform(0.1, 50, n)
    m2 = var + mu**2
    p = PointStats(0, "attn_in", count, np.sqrt(m2) * 3, mu * count, m2 * count, np.zeros(n), m2**2 * 3 * count,
                   count * (np.diag(var) + np.outer(mu, mu)))
    exact, how = rotated_second_moment(p)
    p.xtx = None
    approx, how2 = rotated_second_moment(p)
    assert (how, how2) == ("exact", "diagonal")
    np.testing.assert_allclose(approx, exact, rtol=1e-5)


def test_real_model_text_only():
    m = quellm.load(FIXTURES / "mamba_rank_nobias")  # time_step_rank 6: dt_proj_in has no Hadamard size
    st = quellm.calibrate(m, list(range(3, 90)), n_samples=2, seq_len=24, progress=False)
    s = quellm.report(st, top=4)
    assert {p.kind for p in s.points} == set(st.kinds())
    assert s.point("dt_proj_in", 0).rotation == "n/a" and s.point("in_proj_in", 1).rotation == "diagonal"
    for p in s.points:
        assert len(p.top_channels) == min(4, p.channels)
        np.testing.assert_allclose(p.top_absmax, np.sort(st[p.kind, p.layer].absmax)[::-1][:len(p.top_absmax)])
    assert "out_proj_in (128 channels, 2 layers)" in s.text()


def test_html_references_existing_pngs(tmp_path):
    pytest.importorskip("matplotlib")
    pyplot_before = "matplotlib.pyplot" in sys.modules
    m = quellm.load(FIXTURES / "llama_untied")
    st = quellm.calibrate(m, list(range(3, 90)), n_samples=2, seq_len=24, xtx=True, progress=False)
    out = tmp_path / "rep"
    s = quellm.report(st, out, top=5)
    page = (out / "index.html").read_text(encoding="utf-8")
    srcs = re.findall(r"<img src='([^']+)'", page)
    assert len(srcs) == len(st) + len(st.kinds())  # one per point, one per kind
    for src in srcs:
        assert not Path(src).is_absolute()
        assert (out / src).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(s.files) == sorted([out / "index.html"] + [out / v for v in srcs])
    for kind in st.kinds():
        assert f"<h2>{kind}</h2>" in page
    assert "exact: diag(R XᵀX Rᵀ)/count" in page
    assert ("matplotlib.pyplot" in sys.modules) == pyplot_before  # no pyplot, no global backend
    assert [p.name for p in tmp_path.iterdir()] == ["rep"]  # no temporary directory left behind


def test_refuses_to_overwrite(tmp_path):
    st = synthetic_stats(layers=2)
    out = tmp_path / "rep"
    out.mkdir()  # an empty directory is fine
    quellm.report(st, out, plots=False)
    assert (out / "index.html").exists() and not (out / "img").exists()
    (out / "mine.txt").write_text("keep")
    with pytest.raises(QuellmError, match="not empty.*--force"):
        quellm.report(st, out, plots=False)
    assert (out / "mine.txt").exists()
    s = quellm.report(st, out, plots=False, force=True)
    assert not (out / "mine.txt").exists() and s.files == [out / "index.html"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(QuellmError, match="not a directory"):
        quellm.report(st, tmp_path / "file", plots=False, force=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "rep"]


def test_bad_stats_files(tmp_path):
    with pytest.raises(QuellmError, match="no such statistics file"):
        quellm.report(tmp_path / "missing.npz")
    (tmp_path / "garbage.npz").write_bytes(b"not a zip at all" * 10)
    good = tmp_path / "good.npz"
    synthetic_stats(layers=1).save(good)
    (tmp_path / "truncated.npz").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    flipped = bytearray(good.read_bytes())
    flipped[len(flipped) // 3: len(flipped) // 3 + 64] = b"\xff" * 64  # inside a member: CRC or header error
    (tmp_path / "flipped.npz").write_bytes(bytes(flipped))
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    for name in ("garbage.npz", "truncated.npz", "flipped.npz", "other.npz"):
        with pytest.raises(QuellmError, match="not a quellm statistics file"):
            quellm.report(tmp_path / name)
    assert quellm.report(good).points[0].top_channels[0] == PLANTED


def test_bad_values():
    st = synthetic_stats(layers=1)
    with pytest.raises(QuellmError, match="top must be"):
        quellm.report(st, top=0)
    st["attn_in", 0].sum2[3] = np.nan
    with pytest.raises(QuellmError, match=r"\('attn_in', 0\).*sum2 has non-finite"):
        quellm.report(st)
    st = synthetic_stats(layers=1)
    st["attn_in", 0].xtx = np.zeros((3, 3))
    with pytest.raises(QuellmError, match="XᵀX has shape"):
        quellm.report(st)


def test_without_matplotlib(tmp_path, monkeypatch):
    for mod in ("matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, mod, None)  # import of these now fails
    st = synthetic_stats(layers=2)
    with pytest.raises(QuellmError, match=re.escape("pip install quellm[report]")):
        quellm.report(st, tmp_path / "rep")
    assert not (tmp_path / "rep").exists()
    s = quellm.report(st, tmp_path / "rep", plots=False)
    assert "<table>" in (tmp_path / "rep" / "index.html").read_text(encoding="utf-8")
    assert f"{PLANTED}:" in s.text()


def test_cli(tmp_path, capsys):
    path = tmp_path / "stats.npz"
    synthetic_stats(layers=2).save(path)
    assert main(["report", str(path), "--text-only", "--top", "3"]) == 0
    out = capsys.readouterr().out
    assert f"{PLANTED} (2/2)" in out and "wrote" not in out
    assert main(["report", str(path)]) == 2
    assert "--out DIR is required" in capsys.readouterr().err
    rep = tmp_path / "rep"
    assert main(["report", str(path), "--out", str(rep), "--text-only", "--no-rotate"]) == 0
    assert "not computed (rotate=False)" in capsys.readouterr().out
    assert main(["report", str(path), "--out", str(rep), "--text-only"]) == 2
    assert "not empty" in capsys.readouterr().err
    (tmp_path / "bad.npz").write_bytes(b"\0" * 100)
    assert main(["report", str(tmp_path / "bad.npz"), "--text-only"]) == 2
    assert "quellm report: error:" in capsys.readouterr().err
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return  # the plots need the `report` extra; the text checks above ran
    assert main(["report", str(path), "--out", str(rep), "--force"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"wrote .*index\.html \(3 plots\)", out)
    assert len(list((rep / "img").glob("*.png"))) == 3

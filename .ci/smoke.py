"""Smoke test of an installed quellm (run by .ci/wheel from a directory outside the checkout).

Usage: python smoke.py FIXTURES_DIR [EXPECTED_ISA]

Checks that ``quellm`` is imported from site-packages (not a source tree), then: the kernels'
ISA level, an FWHT against a dense numpy Hadamard matrix, the integer GEMM against an int64 numpy
product, a W8A8 QuantLinear against its numpy fake quantization, every format's encode/decode and
save round trip, and a fixture model's forward against the transformers logits stored with it.
"""

from __future__ import annotations

import sys
import sysconfig
from pathlib import Path

import numpy as np

import quellm
from quellm import _core, formats

fixtures = Path(sys.argv[1])
expected_isa = sys.argv[2] if len(sys.argv) > 2 else None

site = Path(sysconfig.get_paths()["purelib"]).resolve()
where = Path(quellm.__file__).resolve()
assert site in where.parents, f"quellm imported from {where}, not from the venv's site-packages {site}"
assert Path(_core.__file__).resolve().parent == where.parent, _core.__file__
if expected_isa:
    assert quellm.isa() == expected_isa, f"active ISA {quellm.isa()}, expected {expected_isa}"
print(f"smoke: quellm {quellm.__version__} from {where.parent}, ISA {quellm.isa()}, threads {quellm.num_threads()}")
rng = np.random.default_rng(0)

# FWHT vs the dense Sylvester matrix
n = 64
H = np.array([[1.0]])
while H.shape[0] < n:
    H = np.block([[H, H], [H, -H]])
x = rng.standard_normal((5, n)).astype(np.float32)
y = quellm.fwht(x)
assert np.abs(y - x.astype(np.float64) @ H.T / np.sqrt(n)).max() < 1e-5, "fwht"

# integer GEMM (W8A8) vs int64 numpy
N, K, M = 24, 128, 3
qw = rng.integers(-128, 128, (N, K)).astype(np.int8)
sw = rng.uniform(0.01, 0.1, (N, 1)).astype(np.float32)
qa = rng.integers(-127, 128, (M, K)).astype(np.int8)
sa = rng.uniform(0.1, 1.0, M).astype(np.float32)
got = _core.gemm_int(qa, sa, _core.gemm_w8_repack(qw, sw))
want = (qa.astype(np.int64) @ qw.astype(np.int64).T) * (sa[:, None].astype(np.float64) * sw[:, 0][None, :])
assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max(), "gemm_int"

# QuantLinear W8A8 vs its numpy fake quantization
W = rng.standard_normal((N, K)).astype(np.float32)
ql = quellm.QuantLinear(W, None, w_format="int8", a_format="int8")
xa = rng.standard_normal((M, K)).astype(np.float32)
assert np.abs(ql(xa) - ql.simulate(xa)).max() <= 1e-5 * np.abs(ql.simulate(xa)).max(), "QuantLinear"

# every format: encode, decode, save round trip
for name in formats.names():
    f = formats.get(name)
    xf = rng.standard_normal((4, 64)).astype(np.float32)
    p = f.encode(xf)
    d = p.decode()
    assert d.shape == xf.shape and np.isfinite(d).all(), name
    assert np.mean((d - xf) ** 2) < 0.1 * np.mean(xf**2), f"{name}: reconstruction error"
    back = formats.Packed.from_tensors(p.to_tensors("t"), "t")
    assert np.array_equal(back.decode(), d), f"{name}: save round trip"

# a fixture model's forward vs transformers
ref = np.load(fixtures / "llama_untied" / "reference.npz")
m = quellm.load(fixtures / "llama_untied")
logits = m.forward(ref["tokens"])
err = np.abs(logits - ref["logits_full"]).max() / max(1.0, float(np.abs(ref["logits_full"]).max()))
assert err <= 1e-4 and np.array_equal(logits.argmax(-1), ref["logits_full"].argmax(-1)), f"forward: {err}"
q = quellm.quantize(m, "w8a8")
assert np.isfinite(q.forward(ref["tokens"])).all()
print(f"smoke: ok (ISA {quellm.isa()})")

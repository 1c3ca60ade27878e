"""The generated Triton kernels compile for the H100 (sm_90) without a GPU, and the rule that picks
the persistent kernel never picks it where the compiled kernel would not fit the chip."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

from cellc.speed import kernel_resources as kr  # noqa: E402

# where a Triton install ships no cuobjdump, registers and spills cannot be read
needs_cuobjdump = pytest.mark.skipif(not kr.cuobjdump_path().exists(), reason="this Triton install has no cuobjdump")


@pytest.mark.slow
@needs_cuobjdump
@pytest.mark.parametrize("cell,dtype", [("fgr", "float32"), ("cifg", "bfloat16"), ("vanilla", "float32"),
                                        ("vanilla", "bfloat16"), ("fgr", "bfloat16")])
def test_persistent_rule_never_picks_a_kernel_that_does_not_fit(cell, dtype):
    # at the largest hidden size the rule allows (fgr: 13 resident blocks; cifg bf16: H=128 with two steps
    # of prefetch; vanilla bf16 at H=128 and fgr bf16 at H=64 with one, where two would not fit the chip)
    module = kr.generated_module(cell)
    N = max(n for n in (16, 32, 64, 128) if module.persistent_fits(n, getattr(torch, dtype)))
    for name, constants, warps in kr.launch_configs(module, "persistent", N, dtype):
        need = kr.compile_kernel(module.triton_kernels()[name], constants, dtype, warps, sizes={"B": 16, "N": N})
        assert 0 < need.shared <= kr.SHARED_LIMIT, (cell, dtype, N, name, need)


@pytest.mark.slow
@needs_cuobjdump
def test_tiled_and_staged_kernels_compile_for_sm90():
    # fgr's tiled kernels (four operands, a dense r with zero blocks) and mgu's per-step stages (a
    # current-step product between two kernels) in bf16: the compiled path, which the interpreter skips
    rows = [*kr.survey(["fgr"], dtypes=("float32",), sizes={"tiled": (64,)}),
            *kr.survey(["mgu"], dtypes=("bfloat16",), sizes={"step": (256,)})]
    assert {r.kernel for r in rows} == {"tiled_forward", "tiled_backward", "step_forward_0", "step_forward_1",
                                        "step_backward_0", "step_backward_1"}
    for row in rows:
        assert row.resources is not None, row.error
        assert row.resources.registers > 0 and row.resources.stack >= 0


def test_persistent_verdicts_compare_the_rule_with_compiled_sizes():
    need = {16: 20_000, 64: 300_000}  # vanilla fp32: the rule allows both; say H=64 compiled too big
    rows = [kr.Row("vanilla", "persistent", kernel, N, "float32", "", kr.Resources(need[N], 100, 0))
            for N in need for kernel in ("persistent_forward", "persistent_backward")]
    verdicts = {row[2]: row[-1] for row in kr.persistent_agreement(rows)}
    assert verdicts[16] == "agrees"
    assert verdicts[64].startswith("rule too eager")
    text = kr.render(rows)
    assert "over the limit" in text and "2 need more shared memory" in text


@pytest.mark.slow
@needs_cuobjdump
def test_kernels_with_64_bit_offsets_compile_for_sm90():
    # the I64 variants (buffers of 2**30 elements or more) of every family, which the interpreter runs but
    # never compiles; as large as the 32-bit ones on chip (offsets live in registers)
    module = kr.generated_module("vanilla")
    for family, N in (("step", 256), ("persistent", 64), ("tiled", 64)):
        for name, constants, warps in kr.launch_configs(module, family, N, "float32"):
            kernel = module.triton_kernels()[name]
            wide = kr.compile_kernel(kernel, {**constants, "I64": True}, "float32", warps, sizes={"B": 16, "N": N})
            narrow = kr.compile_kernel(kernel, constants, "float32", warps, sizes={"B": 16, "N": N})
            assert constants["I64"] is False and wide.shared == narrow.shared <= kr.SHARED_LIMIT, (name, wide, narrow)

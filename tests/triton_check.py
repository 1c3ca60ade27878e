"""Run the triton backend's kernels under the Triton interpreter against the eager backend.

Used by tests/test_triton.py in a subprocess, so that TRITON_INTERPRET=1 never leaks into
other tests. Prints one JSON object per line: {"spec", "mode", "case", "error"} where error
is max(|fast - eager| - RTOL * |eager|) over the output, final states and every gradient.
"""

from __future__ import annotations

import json
import os
import sys
import warnings

import torch

import cellc
from cellc.testing import input_size

RTOL = 1e-4
CASES = {
    "plain": dict(num_layers=1, bidirectional=False, lengths=None, N=5),
    "bidir_lengths": dict(num_layers=1, bidirectional=True, lengths=[4, 2], N=5),
    # N=40: several hidden-unit tiles and reduction chunks in the tiled kernels
    "two_layer": dict(num_layers=2, bidirectional=False, lengths=None, N=40),
}
M, T, B = 3, 4, 2


def run(layer, x, state, lengths):
    x = x.clone().requires_grad_(True)
    state = tuple(s.clone().requires_grad_(True) for s in state)
    out, final = layer(x, state, lengths=lengths)
    g = torch.Generator().manual_seed(3)
    loss = (out.float() * torch.randn(out.shape, generator=g)).sum()
    for f in final:
        loss = loss + (f.float() * torch.randn(f.shape, generator=g)).sum()
    grads = torch.autograd.grad(loss, [x, *state, *layer.parameters()])
    return [out.detach(), *[f.detach() for f in final], *grads]


def run64(layer, x, state, lengths):
    """``run`` on a float64 copy of ``layer`` (the eager reference): what the float32 kernels should compute,
    without the float32 reference's own rounding. A layer-normalised cell at N = 5 is ill-conditioned enough
    (rows with little variance) that float32 eager is 1e-4 off float64 where the kernels are 3e-6 off."""
    import copy

    return run(copy.deepcopy(layer).double(), x.double(), tuple(s.double() for s in state), lengths)


def error(fast, ref) -> float:
    """Worst excess over the tolerance, in units of the tensor's scale where that exceeds 1 (a gradient summed
    over steps and batch rows carries the rounding of its largest terms: a layer-normalised cell's weight
    gradients reach 50-150 at these sizes, and float32 eager itself is 5e-5 off float64 there); NaN anywhere
    (where the reference has none) counts as infinite."""
    worst = []
    for a, b in zip(fast, ref):
        excess = (a.float() - b.float()).abs() - RTOL * b.float().abs()
        scale = max(1.0, b.float().abs().max().item()) if b.numel() else 1.0
        worst.append(float("inf") if excess.isnan().any() else excess.max().item() / scale)
    return max(worst)


def layers(spec, opts):
    eager_class = cellc.build(spec, backend="eager")
    m = input_size(eager_class, M, opts["N"])  # N for a cell that reads its input elementwise
    eager = eager_class(m, opts["N"], num_layers=opts["num_layers"], bidirectional=opts["bidirectional"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fast = cellc.build(spec, backend="triton")(m, opts["N"], num_layers=opts["num_layers"],
                                                  bidirectional=opts["bidirectional"])
    fast.load_state_dict(eager.state_dict())
    return eager, fast


def count_launches(layer, saves: list | None = None, offsets64: set | None = None) -> dict:
    """Count the generated module's kernel launches by kind (step_*, persistent_*, tiled_*), from now on;
    into saves, (SAVE, elements of SV) of each forward launch; into offsets64, each launch's I64."""
    module = sys.modules[type(layer).__module__]
    kernels = module.triton_kernels()
    counts: dict[str, int] = {}

    class Counted:
        def __init__(self, kernel, kind):
            self.kernel, self.kind = kernel, kind

        def __getitem__(self, grid):
            counts[self.kind] = counts.get(self.kind, 0) + 1
            launch = self.kernel[grid]

            def recorded(*args, **kwargs):
                if saves is not None and "SAVE" in self.kernel.arg_names:
                    saves.append((kwargs["SAVE"], args[self.kernel.arg_names.index("SV")].numel()))
                if offsets64 is not None:
                    offsets64.add(kwargs["I64"])
                return launch(*args, **kwargs)

            return recorded

    for name, kernel in list(kernels.items()):
        if name.startswith(("step_", "persistent_", "tiled_")):
            kernels[name] = Counted(getattr(kernel, "kernel", kernel), name.split("_")[0])
    return counts


class FakeGraph:
    def __init__(self, replay):
        self.replay = replay


def fake_graphs(layer) -> None:
    """Turn the generated module's CUDA-graph path on for CPU tensors, with a faked graph."""
    module = sys.modules[type(layer).__module__]
    module.FAKE_REPLAYS = [0]

    def capture(steps, tensors, device):
        static = [torch.full_like(t, float("nan")) if t.is_floating_point() else torch.zeros_like(t) for t in tensors]

        def replay():
            module.FAKE_REPLAYS[0] += 1
            steps(*static)

        return FakeGraph(replay), static, 0

    module._graphs_on = lambda tensors: True
    module._capture_or_none = capture
    module._evict = lambda device: None
    module.release_graphs()


def main(specs: list[str]) -> None:
    # On CPU without the interpreter the triton module runs the compiled loops and never imports triton.
    eager, fast = layers(specs[0], CASES["plain"])
    fast(torch.randn(T, B, eager.input_size))
    print(json.dumps({"check": "cpu_without_triton", "ok": "triton" not in sys.modules}), flush=True)

    os.environ["TRITON_INTERPRET"] = "1"  # before triton is first imported (by the kernels' first use)
    for spec in specs:
        for case, opts in CASES.items():
            eager, fast = layers(spec, opts)
            g = torch.Generator().manual_seed(len(spec) + len(case))
            x = torch.randn(T, B, eager.input_size, generator=g)
            n_layers = opts["num_layers"] * (2 if opts["bidirectional"] else 1)
            state = tuple(0.5 * torch.randn(n_layers, B, opts["N"], generator=g) for _ in eager.state_names)
            lengths = None if opts["lengths"] is None else torch.tensor(opts["lengths"])
            ref = run64(eager, x, state, lengths)
            for mode in ("step", "persistent", "tiled"):
                os.environ["CELLC_TRITON_MODE"] = mode
                saves: list = []
                launches = count_launches(fast, saves)
                err = error(run(fast, x, state, lengths), ref)
                print(json.dumps({"spec": spec, "mode": mode, "case": case, "error": err, "launches": launches,
                                  "tiled_kernels": sys.modules[type(fast).__module__].TILED,
                                  "saves": sorted(set(saves))}), flush=True)
                if case == "two_layer":
                    continue
                module = sys.modules[type(fast).__module__]
                # Inference: under torch.no_grad the forward stores no values for a backward
                saves = []
                count_launches(fast, saves)
                with torch.no_grad():
                    out, final = fast(x, state, lengths=lengths)
                    ref_out, ref_final = eager(x, state, lengths=lengths)
                print(json.dumps({"spec": spec, "mode": mode, "case": f"inference_{case}",
                                  "error": error([out, *final], [ref_out, *ref_final]), "saves": sorted(set(saves)),
                                  "staged": sum(n.startswith("step_forward_") for n in module.triton_kernels()) > 1}),
                      flush=True)
    # The persistent forward loads each step's inputs one step ahead: sequences of one and two steps
    os.environ["CELLC_TRITON_MODE"] = "persistent"
    for spec in specs:
        eager, fast = layers(spec, CASES["bidir_lengths"])
        for steps in (1, 2):
            g = torch.Generator().manual_seed(steps)
            x = torch.randn(steps, B, eager.input_size, generator=g)
            state = tuple(0.5 * torch.randn(2, B, 5, generator=g) for _ in eager.state_names)
            lengths = torch.tensor([steps, 1])
            err = error(run(fast, x, state, lengths), run64(eager, x, state, lengths))
            print(json.dumps({"spec": spec, "mode": "persistent", "case": f"steps_{steps}", "error": err}), flush=True)
    # Losses that read part of the outputs: their other gradients reach the backward as None
    for spec in ("vanilla", "gru"):
        eager, fast = layers(spec, CASES["bidir_lengths"])
        g = torch.Generator().manual_seed(11)
        x = torch.randn(T, B, eager.input_size, generator=g)
        lengths = torch.tensor([T, 2])
        for mode in ("step", "persistent", "tiled"):
            os.environ["CELLC_TRITON_MODE"] = mode
            for part in ("final_state", "output"):
                grads = []
                for layer in (fast, eager):
                    out, final = layer(x, lengths=lengths)
                    loss = (final[0] ** 2).sum() if part == "final_state" else (out ** 2).sum()
                    grads.append(torch.autograd.grad(loss, list(layer.parameters())))
                print(json.dumps({"spec": spec, "mode": mode, "case": f"loss_on_{part}",
                                  "error": error(*grads)}), flush=True)
    # The persistent backward with one step of prefetch (what larger resident matrices get): the rule's
    # share for two steps set to nothing, so every size takes the shallow pipeline.
    os.environ["CELLC_TRITON_MODE"] = "persistent"
    for spec in ("vanilla", "gru"):
        for case in ("plain", "two_layer"):
            opts = CASES[case]
            eager, fast = layers(spec, opts)
            module = sys.modules[type(fast).__module__]
            saved, module.PERSISTENT_SHARE = module.PERSISTENT_SHARE, 0.0
            g = torch.Generator().manual_seed(7)
            x = torch.randn(T, B, eager.input_size, generator=g)
            state = tuple(0.5 * torch.randn(opts["num_layers"], B, opts["N"], generator=g) for _ in eager.state_names)
            err = error(run(fast, x, state, None), run(eager, x, state, None))
            stages = module._persistent_config(opts["N"], "ieee", torch.float32)["STAGES"]
            module.PERSISTENT_SHARE = saved
            print(json.dumps({"spec": spec, "mode": "persistent", "case": f"shallow_{case}", "error": err,
                              "stages": stages}), flush=True)
    # 64-bit offsets (buffers of 2**30 elements or more): the threshold set to nothing, so that every launch
    # takes the I64 kernels (the interpreter wraps int32 as a GPU does; sizes that large do not fit a test)
    for spec in ("vanilla", "gru"):
        eager, fast = layers(spec, CASES["bidir_lengths"])
        module = sys.modules[type(fast).__module__]
        g = torch.Generator().manual_seed(13)
        x = torch.randn(T, B, eager.input_size, generator=g)
        state = tuple(0.5 * torch.randn(2, B, 5, generator=g) for _ in eager.state_names)
        lengths = torch.tensor([T, 2])
        ref = run(eager, x, state, lengths)
        saved, module.OFFSETS64_MIN = module.OFFSETS64_MIN, 0
        for mode in ("step", "persistent", "tiled"):
            os.environ["CELLC_TRITON_MODE"] = mode
            flags: set = set()
            count_launches(fast, offsets64=flags)
            err = error(run(fast, x, state, lengths), ref)
            print(json.dumps({"spec": spec, "mode": mode, "case": "offsets64", "error": err,
                              "offsets64": sorted(flags)}), flush=True)
        module.OFFSETS64_MIN = saved
    # CUDA-graph replay of the per-step loops, with the graph faked on CPU: capture hands back buffers
    # full of NaN and "replay" reruns the loop on them, so a tensor the loop reads but the runner does
    # not copy in (or writes but does not copy back) shows up as an error on the next calls.
    for mode, spec, case in [(m, s, c) for m in ("step", "tiled") for s in specs for c in ("plain", "bidir_lengths")]:
        os.environ["CELLC_TRITON_MODE"] = mode
        opts = CASES[case]
        eager, fast = layers(spec, opts)
        fake_graphs(fast)
        module = sys.modules[type(fast).__module__]
        worst = 0.0
        for call in range(6):  # plain loop, capture, replay: training, then inference (its own graph)
            g = torch.Generator().manual_seed(100 + call)
            x = torch.randn(T, B, eager.input_size, generator=g)
            n_layers = opts["num_layers"] * (2 if opts["bidirectional"] else 1)
            state = tuple(0.5 * torch.randn(n_layers, B, opts["N"], generator=g) for _ in eager.state_names)
            lengths = None if opts["lengths"] is None else torch.tensor(opts["lengths"])
            if call < 3:
                worst = max(worst, error(run(fast, x, state, lengths), run(eager, x, state, lengths)))
                trained = module.FAKE_REPLAYS[0]
                continue
            with torch.no_grad():
                out, final = fast(x, state, lengths=lengths)
                ref_out, ref_final = eager(x, state, lengths=lengths)
            worst = max(worst, error([out, *final], [ref_out, *ref_final]))
        print(json.dumps({"spec": spec, "mode": mode, "case": f"graph_{case}", "error": worst, "replayed": trained,
                          "replayed_inference": module.FAKE_REPLAYS[0] - trained}), flush=True)
    # A cache smaller than the shapes taking turns: each key's graph is evicted before its next use. A key is
    # captured at most GRAPH_MAX_CAPTURES times, then its loop runs plainly (not captured at every other use).
    os.environ["CELLC_TRITON_MODE"] = "step"
    eager, fast = layers("vanilla", CASES["plain"])
    fake_graphs(fast)
    module = sys.modules[type(fast).__module__]
    captures: dict = {}
    capture = module._capture_or_none

    def counted_capture(steps, tensors, device):
        key = tuple(tuple(t.shape) for t in tensors)
        captures[key] = captures.get(key, 0) + 1
        return capture(steps, tensors, device)

    def evict(device):
        while len(module.GRAPHS) > module.GRAPH_MAX_ENTRIES:
            module.GRAPHS.popitem(last=False)

    module._capture_or_none, module._evict, module.GRAPH_MAX_ENTRIES = counted_capture, evict, 1
    worst = 0.0
    for call in range(16):
        steps = (T, T - 1)[call % 2]
        g = torch.Generator().manual_seed(200 + call)
        x = torch.randn(steps, B, eager.input_size, generator=g)
        state = tuple(0.5 * torch.randn(1, B, 5, generator=g) for _ in eager.state_names)
        worst = max(worst, error(run(fast, x, state, None), run(eager, x, state, None)))
    print(json.dumps({"spec": "vanilla", "mode": "step", "case": "graph_churn", "error": worst,
                      "captures": sorted(captures.values()), "limit": module.GRAPH_MAX_CAPTURES}), flush=True)
    module.release_graphs()
    # float64 runs the loops (the kernels compute in float32), on any device
    eager, fast = layers("vanilla", CASES["plain"])
    eager, fast = eager.double(), fast.double()
    x = torch.randn(T, B, eager.input_size, dtype=torch.float64)
    state = tuple(0.5 * torch.randn(1, B, 5, dtype=torch.float64) for _ in eager.state_names)
    launches = count_launches(fast)
    err = error(run(fast, x, state, None), run(eager, x, state, None))
    print(json.dumps({"spec": "vanilla", "mode": "auto", "case": "float64", "error": err, "launches": launches}),
          flush=True)
    # A backward called inside an autocast region: the kernels' backward keeps its GEMMs in float32
    for mode in ("step", "persistent"):
        os.environ["CELLC_TRITON_MODE"] = mode
        eager, fast = layers("vanilla", CASES["plain"])
        x = torch.randn(T, B, eager.input_size)
        ref = torch.autograd.grad(eager(x)[0].sum(), list(eager.parameters()))
        out = fast(x)[0].sum()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            grads = torch.autograd.grad(out, list(fast.parameters()))
        print(json.dumps({"spec": "vanilla", "mode": mode, "case": "backward_in_autocast", "error": error(grads, ref),
                          "dtypes": sorted({str(g.dtype) for g in grads})}), flush=True)
    # The lowered path of a 16-bit layer handed a float32 state (what the Triton kernels return for one)
    os.environ["CELLC_TRITON_MODE"] = "lowered"
    for spec in ("np", "gru"):
        eager, fast = layers(spec, CASES["plain"])
        x = torch.randn(T, B, eager.input_size)
        state = tuple(0.5 * torch.randn(1, B, 5) for _ in eager.state_names)
        ref_out, ref_final = eager(x, state)
        out, final = fast.to(torch.bfloat16)(x.to(torch.bfloat16), state)
        print(json.dumps({"spec": spec, "mode": "lowered", "case": "bf16_float32_state",
                          "error": (out.float() - ref_out).abs().max().item(),
                          "final_error": max((f - r).abs().max().item() for f, r in zip(final, ref_final)),
                          "final_dtypes": sorted({str(f.dtype) for f in final})}), flush=True)
    # Mixed precision (autocast): 16-bit matrices, float32 state. The interpreter's tl.dot is wrong
    # for bf16 (numpy has no bf16), so the persistent kernel is checked with fp16 here, bf16 on GPU.
    for spec in ("vanilla", "gru"):
        eager, fast = layers(spec, CASES["plain"])
        x = torch.randn(T, B, eager.input_size)
        ref = eager(x)[0]
        ref.sum().backward()
        ref = ref.detach()
        ref_grads = [p.grad.clone() for p in eager.parameters()]
        for mode, dtype in (("step", torch.bfloat16), ("step", torch.float16), ("persistent", torch.float16),
                            ("tiled", torch.float16)):
            os.environ["CELLC_TRITON_MODE"] = mode
            fast.zero_grad()
            with torch.autocast("cpu", dtype=dtype):
                out = fast(x)[0]
            out.float().sum().backward()
            grads_fp32 = all(p.grad is not None and p.grad.dtype == torch.float32 for p in fast.parameters())
            # each parameter's gradient against float32 eager, relative to its largest entry
            grad_error = max((p.grad - g).abs().max().item() / (g.abs().max().item() + 1e-12)
                             for p, g in zip(fast.parameters(), ref_grads))
            print(json.dumps({"spec": spec, "mode": mode, "case": f"autocast_{str(dtype)[6:]}",
                              "error": (out.float() - ref).abs().max().item(), "out_dtype": str(out.dtype),
                              "grads_fp32": grads_fp32, "grad_error": grad_error}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])

"""Hand-written references for whole stacks: a per-step function written from a cell's paper, run over layers,
directions and each sequence's own length (tests/test_direct_input.py, tests/test_layer_norm.py)."""

from __future__ import annotations

import torch

DT = torch.float64
CASES = {
    "plain": dict(num_layers=1, bidirectional=False, lengths=None),
    "lengths": dict(num_layers=1, bidirectional=False, lengths=[5, 2, 4]),
    "bidir2": dict(num_layers=2, bidirectional=True, lengths=[3, 5, 1]),
}
N, T, B = 4, 5, 3


class HandWritten(torch.nn.Module):
    """The hand-written steps over a whole stack: each sequence alone over its own length, layer by layer,
    direction by direction (the reverse direction reads its sequence backwards), the module's parameters
    through spec_parameter. Outputs past a sequence's length are zero, as the module's are."""

    def __init__(self, module, step):
        super().__init__()
        self.module, self.step = module, step

    def named_parameters(self, *args, **kwargs):
        return self.module.named_parameters(*args, **kwargs)

    def parameters(self, *args, **kwargs):
        return self.module.parameters(*args, **kwargs)

    def forward(self, x, state, lengths=None):
        m = self.module
        D, L, H = m.num_directions, m.num_layers, m.hidden_size
        T_, B_ = x.shape[:2]
        lengths = [T_] * B_ if lengths is None else [int(n) for n in lengths]
        finals: dict[tuple[int, int], list] = {}  # (state, layer * D + direction) -> per sequence
        per_sequence = []
        for b, n in enumerate(lengths):
            inp = x[:n, b : b + 1]
            for layer in range(L):
                outs = []
                for d in range(D):
                    k = layer * D + d
                    P = lambda name, layer=layer, d=d: m.spec_parameter(name, layer, d)  # noqa: E731
                    s = {name: state[j][k, b : b + 1] for j, name in enumerate(m.state_names)}
                    seq = inp.flip(0) if d else inp
                    direct = seq if layer == 0 else seq[:, :, d * H : (d + 1) * H]
                    ys = []
                    for t in range(n):
                        s, y = self.step(P, seq[t], direct[t], s)
                        ys.append(y)
                    ys = torch.stack(ys)
                    outs.append(ys.flip(0) if d else ys)
                    for j, name in enumerate(m.state_names):
                        finals.setdefault((j, k), []).append(s[name])
                inp = torch.cat(outs, 2)
            per_sequence.append(torch.cat([inp, inp.new_zeros(T_ - n, 1, inp.shape[2])]) if n < T_ else inp)
        outputs = torch.cat(per_sequence, 1)
        final = tuple(torch.stack([torch.cat(finals[(j, k)], 0) for k in range(L * D)])
                      for j in range(len(m.state_names)))
        return outputs, final


def inputs(module, case, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(T, B, module.input_size, generator=g, dtype=DT)
    layers = module.num_layers * module.num_directions
    state = tuple(0.5 * torch.randn(layers, B, N, generator=g, dtype=DT) for _ in module.state_names)
    lengths = None if case["lengths"] is None else torch.tensor(case["lengths"])
    return x, state, lengths

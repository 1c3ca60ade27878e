"""Hostile input to the spec front end, at scale: every input must end in success (a cell that renders to
valid Python) or in a CellcError whose rendered message is short and printable; never a traceback, never
more than TIME_LIMIT_S seconds or MEMORY_LIMIT_MB of memory for one input.

Inputs are drawn from a seed alone: random bytes, random YAML documents (nested, with anchors and aliases,
with the spec's keys and hostile values), mutations of the shipped specs and of random valid cells
(cellc.fuzz.cells): tokens inserted, cut, replaced, lines doubled or dropped, control characters, terminal
escape sequences, very long lines, alias bombs. ``python -m cellc.fuzz.frontend --help`` (or
benchmarks/fuzz_frontend.py) runs it.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import signal
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import yaml

from cellc.fuzz.driver import add_run_arguments, print_summary, run_in_workers, worker_seeds

MAX_MESSAGE_CHARS = 2000
TIME_LIMIT_S = 10.0
MEMORY_LIMIT_MB = 1024

# Pieces that tend to matter to a spec: syntax, names, numbers, YAML structure, hostile characters.
TOKENS = [
    "(", ")", "[-1]", "[-2]", "*", "+", "-", "=", " ", "\n", "\n  ", ":", "|", "'", '"', "\t", "#",
    "x", "y", "c", "i", "W_q", "R_q", "p_q", "b_q", "__import__", "os", "self", "1", "0", "1e999",
    "1e300", ".nan", "tanh", "sigmoid", "relu", "swish", "drop gate ", "couple ", "override ",
    "remove peepholes", "add full gate recurrence", "drop activation ", " in ", "extends: ",
    "vanilla", "fuzz", "edits:", "equations: |", "initial:", "init:", "- ", "{", "}", "[", "]", ",",
    "&a", "*a", "!!python/object:os.system", "\x00", "é", "\r\n", "\x1b[31m", "\x07", "\x1b]0;title\x07",
    "\u202e", "\u2028", "\ufeff", "\x7f", "<<: ", "? ", "!!binary ", "%YAML 1.1\n", "---\n", "...\n",
    "v__y", "y_out", "sv_v_y", "t0", "mg0", "acc_b_q", "ZqCell", "input: ", "output: ", "name: ",
    "norm", "norm(", "norm(b_q)", "norm(2)", "a_q * norm(W_q x)", "rf0", "rb1",
    "sizes:", "sizes: {y: proj_size}", "\n  y: proj_size", "proj_size", "hidden_size", "W_p (o * tanh(c))", "P", "SIZES",
]
KEYS = ["name", "description", "reference", "extends", "edits", "equations", "input", "output", "initial", "init",
        "sizes"]
_SPEC_TEXTS: list[str] | None = None


def _spec_texts() -> list[str]:
    global _SPEC_TEXTS
    if _SPEC_TEXTS is None:
        from cellc.spec.loader import builtin_specs_dir

        _SPEC_TEXTS = sorted(p.read_text() for p in builtin_specs_dir().glob("*.yaml"))
    return _SPEC_TEXTS


def _random_scalar(rng: random.Random):
    return rng.choice([
        lambda: rng.choice(TOKENS) * rng.randint(1, 3),
        lambda: rng.randint(-10**6, 10**6),
        lambda: rng.choice([0.5, 1e308, -1e-320, float("nan"), float("inf")]),
        lambda: rng.choice([True, False, None]),
        lambda: "".join(chr(rng.randint(0, 0x2FFF)) for _ in range(rng.randint(0, 12))),
        lambda: rng.choice(["vanilla", "nig", "gru", "../vanilla", "/etc/passwd", "x" * 300]),
        lambda: "y = tanh(W_a x + R_a y[-1])",
    ])()


def _random_value(rng: random.Random, depth: int):
    roll = rng.random()
    if depth > 3 or roll < 0.5:
        return _random_scalar(rng)
    if roll < 0.75:
        return [_random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return {rng.choice(KEYS + [_random_scalar(rng)]): _random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))}


def _random_yaml(rng: random.Random) -> str:
    doc = {key: _random_value(rng, 1) for key in rng.sample(KEYS, rng.randint(0, len(KEYS)))}
    if rng.random() < 0.3:  # shared objects: yaml.dump writes them as anchors and aliases
        shared = [_random_value(rng, 2)]
        doc[rng.choice(KEYS)] = [shared, shared, {"k": shared}]
    try:
        return yaml.dump(doc, allow_unicode=rng.random() < 0.5, default_flow_style=rng.random() < 0.3)
    except (yaml.YAMLError, ValueError, TypeError):
        return repr(doc)


def _alias_bomb(rng: random.Random) -> str:
    levels = rng.randint(3, 9)
    lines = ["name: bomb", 'l0: &l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for k in range(1, levels):
        lines.append(f"l{k}: &l{k} [" + ",".join([f"*l{k - 1}"] * 9) + "]")
    lines.append(f"{rng.choice(['initial', 'init', 'edits', 'name', 'equations'])}: *l{levels - 1}")
    lines.append("equations: |\n  y = tanh(W_y x + R_y y[-1])")
    return "\n".join(lines) + "\n"


def _mutate(rng: random.Random, text: str) -> str:
    for _ in range(rng.randint(1, 5)):
        kind = rng.choice(["insert", "insert", "delete", "replace", "dup_line", "drop_line", "long", "bytes"])
        pos = rng.randint(0, len(text))
        if kind == "insert":
            text = text[:pos] + rng.choice(TOKENS) + text[pos:]
        elif kind == "delete":
            text = text[:pos] + text[pos + rng.randint(1, 8):]
        elif kind == "replace":
            text = text[:pos] + "".join(chr(rng.randint(0, 0x10FFFF) if rng.random() < 0.1 else rng.randint(0, 127))
                                        for _ in range(rng.randint(0, 4))) + text[pos + rng.randint(0, 4):]
        elif kind == "long":
            text = text[:pos] + rng.choice(TOKENS[:40]) * rng.randint(100, 30000) + text[pos:]
        elif kind == "bytes":
            text = text[:pos] + "".join(chr(rng.randint(0, 31)) for _ in range(rng.randint(1, 6))) + text[pos:]
        else:
            lines = text.split("\n")
            k = rng.randint(0, len(lines) - 1)
            if kind == "dup_line":
                lines.insert(k, lines[k])
            else:
                del lines[k]
            text = "\n".join(lines)
    return text


def random_input(seed: int) -> bytes:
    """One hostile spec file, from its seed."""
    rng = random.Random(seed)
    roll = rng.random()
    if roll < 0.1:
        return bytes(rng.randint(0, 255) for _ in range(rng.randint(0, 600)))
    if roll < 0.25:
        text = _random_yaml(rng)
    elif roll < 0.3:
        text = _alias_bomb(rng)
    elif roll < 0.65:
        text = _mutate(rng, rng.choice(_spec_texts()))
    else:
        from cellc.fuzz.cells import random_cell

        text = _mutate(rng, random_cell(rng.randrange(10**6)).text)
    return text.encode("utf-8", errors="surrogatepass")


def _printable_message(message: str) -> str | None:
    """What is wrong with a rendered error message, or None."""
    if len(message) > MAX_MESSAGE_CHARS:
        return f"message of {len(message)} characters"
    lines = message.split("\n")
    if len(lines) > 3:  # the message, and a source line with its caret
        return f"message of {len(lines)} lines"
    bad = [ch for ch in message if ch != "\n" and not ch.isprintable()]
    if bad:
        return f"raw character U+{ord(bad[0]):04X} in the message"
    return None


class _Timeout(Exception):
    pass


def check_input(seed: int, workdir: Path) -> dict:
    from cellc.codegen.render import render_module
    from cellc.errors import CellcError
    from cellc.ir.pipeline import compile_spec

    path = workdir / "spec.yaml"
    path.write_bytes(random_input(seed))
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    signal.setitimer(signal.ITIMER_REAL, TIME_LIMIT_S)
    try:
        compiled = compile_spec(path)
        compile(render_module(compiled, "eager"), "<fuzz>", "exec")
        status, detail = "ok", ""
    except CellcError as error:
        problem = _printable_message(error.render())
        status, detail = ("bad_message", problem) if problem else ("refused", type(error).__name__)
    except _Timeout:
        status, detail = "timeout", f"over {TIME_LIMIT_S} s"
    except Exception as error:  # noqa: BLE001 - a traceback is the finding
        status, detail = "traceback", f"{type(error).__name__}: {str(error)[:300]!r}"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    seconds = time.perf_counter() - start
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - rss_before
    if status in ("ok", "refused") and seconds > TIME_LIMIT_S:
        status, detail = "timeout", f"{seconds:.1f} s"
    if status in ("ok", "refused") and grown > MEMORY_LIMIT_MB:
        status, detail = "memory", f"peak memory grew {grown:.0f} MB"
    return {"seed": seed, "status": status, "detail": detail, "seconds": round(seconds, 4)}


def _worker(seeds: list[int]) -> None:
    def alarm(signum, frame):
        raise _Timeout

    signal.signal(signal.SIGALRM, alarm)
    workdir = Path(tempfile.mkdtemp(prefix="cellc-frontend-fuzz-"))
    for seed in seeds:
        print("START", seed, flush=True)
        print(json.dumps(check_input(seed, workdir)), flush=True)


def run(seeds: list[int], jobs: int = 1, chunk: int = 2000, report=print, progress: bool = True) -> dict:
    def on_row(row: dict) -> None:
        if row["status"] not in ("ok", "refused"):
            report(json.dumps(row))

    rows, seconds = run_in_workers("cellc.fuzz.frontend", seeds, [], jobs=jobs, chunk=chunk, on_row=on_row,
                                   progress=progress)
    return {"inputs": len(rows), "statuses": dict(Counter(r["status"] for r in rows)),
            "slowest_s": max((r.get("seconds", 0.0) for r in rows), default=0.0), "seconds": round(seconds, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="hostile input to the spec front end")
    parser.add_argument("--inputs", type=int, default=1000, help="how many inputs (default: 1000)")
    add_run_arguments(parser, "inputs", chunk=2000)
    args = parser.parse_args(argv)
    if args.worker:
        _worker(worker_seeds(args))
        return 0
    if args.inputs < 1 or args.jobs < 1 or args.chunk < 1:
        parser.error("--inputs, --jobs and --chunk take positive numbers")
    seeds = list(range(args.seed, args.seed + args.inputs))
    print(f"fuzzing the front end with {args.inputs} inputs (seeds {seeds[0]}..{seeds[-1]}), {args.jobs} processes",
          flush=True)
    summary = run(seeds, jobs=args.jobs, chunk=args.chunk)
    summary["seed"] = args.seed
    print_summary(summary, args.json)
    return 1 if set(summary["statuses"]) - {"ok", "refused"} else 0


if __name__ == "__main__":
    sys.exit(main())

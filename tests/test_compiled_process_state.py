"""Loading a compiled cell must not change process-wide floating-point state."""

import subprocess
import sys
import textwrap


def test_loading_compiled_library_keeps_denormals(tmp_path):
    # A fresh interpreter: FTZ/DAZ set by a library constructor would persist for the process.
    code = textwrap.dedent(
        """
        import torch, cellc
        tiny = torch.tensor([1e-40], dtype=torch.float32)
        assert (tiny * 1.0).item() != 0.0
        layer = cellc.build("vanilla", backend="compiled")(3, 2)
        layer(torch.randn(2, 1, 3))
        print((tiny * 1.0).item() != 0.0)
        """
    )
    env = {"CELLC_CACHE_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True", "loading the compiled library turned on flush-to-zero"

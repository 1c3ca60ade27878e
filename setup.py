"""Only a build hook; the project's metadata lives in pyproject.toml.

The built-in specs stay in the top-level specs/ directory of the checkout. A regular install
(`pip install .`, a wheel) has no checkout beside the package, so build_py copies specs/*.yaml
into the package as cellc/specs/, where cellc.spec.loader.builtin_specs_dir() finds them. An
editable install reads specs/ from the checkout and gets no copy (it would go stale)."""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

SPECS = Path(__file__).resolve().parent / "specs"


class BuildPyWithSpecs(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return
        specs = sorted(SPECS.glob("*.yaml"))
        if not specs:
            raise RuntimeError(f"no built-in specs in {SPECS}: the package would have no cells")
        target = Path(self.build_lib) / "cellc" / "specs"
        self.mkpath(str(target))
        for spec in specs:
            self.copy_file(str(spec), str(target / spec.name))


setup(cmdclass={"build_py": BuildPyWithSpecs})

"""The wheel carries the files the toolkit ships beside its code (hf_llm/shipped.py reads them).

`configs/`, `scripts/`, `data/sample/` and the chat sample stay at the top of the repository (the project's layout);
the build copies them into the package as `hf_llm/_shipped/<same relative path>`, so an installed toolkit finds the
default recipes, model presets, accelerate/DeepSpeed configs and the sample corpus from any working directory.
An editable install needs no copy: it runs the checkout, where hf_llm.shipped finds the originals.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

# Keep in step with hf_llm.shipped.SHIPPED_NAMES (tests/unit/test_shipped.py checks both).
SHIPPED = ("configs", "scripts", "data/sample", "tests/data/chat_sample.jsonl",
           "tests/data/preference_sample.jsonl")
SKIP = shutil.ignore_patterns("__pycache__", "*.pyc")


class BuildWithShippedFiles(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return
        root = Path(__file__).resolve().parent
        target = Path(self.build_lib) / "hf_llm" / "_shipped"
        for name in SHIPPED:
            source, dest = root / name, target / name
            if source.is_dir():
                shutil.copytree(source, dest, ignore=SKIP, dirs_exist_ok=True)
            else:
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, dest)


setup(cmdclass={"build_py": BuildWithShippedFiles})

"""The two things pyproject.toml cannot say: the one compiled part of kws, and the shipped model in wheels.

- kws/_gru.c, the engine's GRU layer, is optional: where it cannot be built (no C compiler), the install
  still succeeds and the engine runs its numpy loop (same posteriors, ~1.7x slower per 100 ms chunk;
  README, "Streaming cost").
- A wheel (`pip install kws` / `pip install .`, not editable) carries models/kws12_gru.npz and
  models/marvin.npz as kws/_models/*.npz, so the default model and the wake word that `kws wakeword`
  starts from are found outside a checkout (kws.enginefile.shipped_model_path). Editable installs read
  the checkout's models/.
"""
import shutil
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_py import build_py

SHIPPED = [Path("models") / "kws12_gru.npz", Path("models") / "marvin.npz"]


class BuildPyWithModel(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return
        target = Path(self.build_lib) / "kws" / "_models"
        for model in SHIPPED:
            if model.exists():
                target.mkdir(parents=True, exist_ok=True)
                shutil.copy2(model, target / model.name)


flags = [] if sys.platform == "win32" else ["-O3", "-Wno-psabi"]   # psabi: GCC notes on the SSE2 clone
setup(ext_modules=[Extension("kws._gru", ["kws/_gru.c"], extra_compile_args=flags, optional=True)],
      cmdclass={"build_py": BuildPyWithModel})

"""The one build step pyproject.toml cannot declare yet (setuptools calls its own form
experimental): the optional C twins of booktape/fastframe.py's layout regex and of
booktape/bookside.py's update loops.

``optional=True``: without a C compiler or Python's headers the build goes on without them,
and booktape runs the same code in Python (slower, same results).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            f"booktape.{name}",
            sources=[f"booktape/{name}.c"],
            extra_compile_args=["-O2"],
            optional=True,
        )
        for name in ("_fastframe", "_fastbook")
    ]
)

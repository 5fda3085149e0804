"""The one build step pyproject.toml cannot declare yet (setuptools calls its own form
experimental): the optional C twin of booktape/fastframe.py's layout regex.

``optional=True``: without a C compiler or Python's headers the build goes on without it,
and booktape runs the same regex in Python (slower, same results).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "booktape._fastframe",
            sources=["booktape/_fastframe.c"],
            extra_compile_args=["-O2"],
            optional=True,
        )
    ]
)

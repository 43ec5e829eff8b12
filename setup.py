"""Build the Cython cores in ext/ as extension modules of the `node` package.

Every `ext/<name>.pyx` becomes `node._<name>`: adding a core needs no change here.
"""
from pathlib import Path

from Cython.Build import cythonize
from setuptools import Extension, setup

HERE = Path(__file__).parent

extensions = [
    Extension(f"node._{pyx.stem}", [str(pyx.relative_to(HERE))], extra_compile_args=["-O2"])
    for pyx in sorted((HERE / "ext").glob("*.pyx"))
]

setup(
    ext_modules=cythonize(
        extensions,
        language_level=3,
        compiler_directives={"boundscheck": False, "wraparound": False, "cdivision": True},
    )
)

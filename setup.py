"""Build the Cython kernels.

Every ``fastcollate/*.pyx`` becomes one extension. Directives live here, in one place.
Set ``FASTCOLLATE_DEBUG=1`` to rebuild with bounds checks, ``-O0 -g`` and no NDEBUG.
"""
import glob
import os

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("FASTCOLLATE_DEBUG", "") not in ("", "0")

directives = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": False,
    "initializedcheck": DEBUG,
    "cdivision": True,
    "embedsignature": True,
}
compile_args = ["-O0", "-g", "-UNDEBUG"] if DEBUG else ["-O3"]

extensions = [
    Extension(
        "fastcollate." + os.path.splitext(os.path.basename(path))[0],
        [path],
        include_dirs=[np.get_include(), "fastcollate"],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=compile_args,
    )
    for path in sorted(glob.glob(os.path.join("fastcollate", "*.pyx")))
]

setup(ext_modules=cythonize(extensions, compiler_directives=directives))

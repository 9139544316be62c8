"""Builds the torch_lru extension: the ops (the scan's CPU kernels, and CUDA kernels whenever nvcc
and a CUDA build of torch are present, GPU or not) into python/torch_lru/_C.*.so. The package's
metadata (name, version, dependencies) is in pyproject.toml.

The sources are found by the same globs as CMakeLists.txt (csrc/ops/*.cpp, cuda/*.cu), so the two
builds cannot drift apart; CMake adds csrc/modules, the torch::nn modules for C++ programs. The
default CUDA architecture is CMakeLists.txt's TORCH_LRU_DEFAULT_CUDA_ARCH. Build with the project's
environment: scripts/setup_env.sh.
"""

import glob
import os
import re

import torch
from setuptools import setup
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

ROOT = os.path.dirname(os.path.abspath(__file__))


def default_cuda_arch() -> str:
    with open(os.path.join(ROOT, "CMakeLists.txt")) as f:
        return re.search(r'set\(TORCH_LRU_DEFAULT_CUDA_ARCH "([^"]+)"\)', f.read()).group(1)


def sources(pattern):
    return sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, pattern)))


def want_cuda():
    choice = os.environ.get("TORCH_LRU_CUDA", "auto")  # auto | 1 | 0
    available = torch.version.cuda is not None and CUDA_HOME is not None
    if choice == "1" and not available:
        raise RuntimeError("TORCH_LRU_CUDA=1 but no CUDA toolkit (nvcc) or a CPU-only torch was found")
    return available and choice != "0"


def extension():
    with_cuda = want_cuda()
    # -fno-math-errno -fno-trapping-math: no kernel reads errno or the floating-point exception flags,
    # and without them sqrt and the clamps of the RG-LRU gate kernels keep their loops from vectorising
    cxx_flags = ["-O3", "-fno-math-errno", "-fno-trapping-math", "-fopenmp", "-Wall", "-Wextra"]
    cxx_flags.append("-Wno-unused-parameter")
    kwargs = dict(
        name="torch_lru._C",
        include_dirs=[os.path.join(ROOT, "csrc", "include"), os.path.join(ROOT, "csrc")],
        extra_link_args=["-fopenmp"],
        py_limited_api=True,  # loaded with torch.ops.load_library: no Python symbols needed
    )
    if not with_cuda:
        return CppExtension(sources=sources("csrc/ops/*.cpp"), extra_compile_args={"cxx": cxx_flags}, **kwargs)
    if not os.environ.get("TORCH_CUDA_ARCH_LIST"):
        # Without a GPU to query, torch cannot pick architectures itself.
        os.environ["TORCH_CUDA_ARCH_LIST"] = default_cuda_arch()
    nvcc_flags = ["-O3", "-lineinfo", "--expt-relaxed-constexpr"]
    if os.environ.get("TORCH_LRU_PTXAS_VERBOSE"):  # register and spill report of every kernel
        nvcc_flags.append("-Xptxas=-v")
    return CUDAExtension(
        sources=sources("csrc/ops/*.cpp") + sources("cuda/*.cu"),
        extra_compile_args={"cxx": cxx_flags, "nvcc": nvcc_flags},
        **kwargs,
    )


setup(
    ext_modules=[extension()],
    cmdclass={"build_ext": BuildExtension},
    options={"bdist_wheel": {"py_limited_api": "cp39"}},
)

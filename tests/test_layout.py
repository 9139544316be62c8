"""The project's structure: no import cycle in the Python package or the C++ headers, the layers
below the block and the model, the data package free of the compiled library, the public headers
free of kernel internals, and the package metadata in one place."""

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "python" / "torch_lru"
HEADERS = REPO / "csrc" / "include" / "torch_lru"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def python_imports() -> dict:
    """module -> the package modules it imports (anywhere in it, functions included)."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                    base = f"{anchor}.{base}" if base else anchor
                for alias in node.names:  # `from x import y` imports the module x.y when there is one
                    edges.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
            elif isinstance(node, ast.Import):
                edges.update(a.name for a in node.names)
        graph[name] = {e for e in edges if e in modules and e != name}
    return graph


def find_cycle(graph: dict):
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_python_package_has_no_import_cycle():
    graph = python_imports()
    # A package's __init__ importing its own submodules is how packages are built, not a cycle.
    graph = {m: {e for e in edges if not e.startswith(m + ".")} for m, edges in graph.items()}
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_the_layers_never_import_the_block_or_the_model():
    graph = python_imports()
    for name, edges in graph.items():
        if name.startswith("torch_lru.layers"):
            assert not {"torch_lru.modules", "torch_lru.train", "torch_lru.variants"} & edges, (name, edges)


def test_the_cpp_headers_have_no_include_cycle_and_no_kernel_internals():
    graph = {}
    for header in HEADERS.glob("*.h"):
        includes = re.findall(r'#include "([^"]+)"', header.read_text())
        assert not [i for i in includes if not i.startswith("torch_lru/")], (header.name, includes)
        graph[header.name] = {i.removeprefix("torch_lru/") for i in includes}
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))
    assert "modules.h" not in graph["layers.h"] and "layers.h" in graph["modules.h"]


def test_the_data_package_does_not_load_the_compiled_library():
    code = (
        "import sys\n"
        "from torch_lru.lra import cifar, data, fmnist, listops, pathfinder, retrieval, tasks, text\n"
        "listops.generate(3, min_length=5, max_length=50)\n"
        "assert 'torch_lru._library' not in sys.modules, 'the op library was loaded'\n"
        "import torch_lru\n"
        "assert 'torch_lru._library' not in sys.modules\n"
        "torch_lru.LRUModel\n"
        "assert 'torch_lru._library' in sys.modules\n"
    )
    env = dict(os.environ, PYTHONPATH=str(PACKAGE.parent))
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_the_metadata_is_declared_once(tmp_path):
    version = re.search(r'__version__ = "([^"]+)"', (PACKAGE / "_version.py").read_text()).group(1)
    # egg_info writes the metadata a wheel would carry, without compiling the extension.
    done = subprocess.run(
        [sys.executable, "setup.py", "-q", "egg_info", "--egg-base", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, TORCH_LRU_CUDA="0"),
    )
    assert done.returncode == 0, done.stderr
    info = next(tmp_path.glob("*.egg-info")) / "PKG-INFO"
    text = info.read_text()
    assert f"Version: {version}" in text
    requires = set(re.findall(r"^Requires-Dist: ([A-Za-z_]+)", text, re.M))
    assert {"torch", "numpy", "pillow", "matplotlib"} <= requires, requires
    import torch_lru

    assert torch_lru.__version__ == version
    cmake = (REPO / "CMakeLists.txt").read_text()
    assert "project(torch_lru VERSION ${TORCH_LRU_VERSION}" in cmake and version not in cmake
    for script in ("setup_env.sh", "build_cpp.sh", "test.sh", "gpu_check.sh"):
        assert "9.0" not in (REPO / "scripts" / script).read_text(), script

"""What the CUDA scan kernels compile to, read from their SASS without a GPU: per kernel the
registers, the instruction count, global loads and stores, 64-bit integer instructions, and the
instructions of each phase of a thread (attributed through the line table to the innermost
function of interest in the inline chain), per step for the per-step phases.

    scripts/python scripts/sass_report.py [OBJECT] [--cuobjdump PATH] [--nvdisasm PATH] [--json PATH]

OBJECT defaults to the Python extension's build of cuda/scan_cuda.cu. cuobjdump and nvdisasm come
with the CUDA toolkit or from PyPI (nvidia-cuda-cuobjdump, nvidia-cuda-nvdisasm); they are looked
for on PATH, under CUDA_HOME/bin, and in the installed nvidia wheels. Run it on a build of the
sources that are in the tree: the line table points into them.
"""

import argparse
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# The functions a thread's work is attributed to, in the order a thread runs them.
PHASES = (
    "load_segment",
    "load_full_segment",
    "load_edge_segment",
    "resolve_carry",
    "look_back",
    "segment_carry",
    "scan_segment",
    "scan_full_segment",
    "scan_edge_segment",
)
PER_STEP = {"load_segment", "load_full_segment", "scan_segment", "scan_full_segment"}
INT64 = re.compile(r"\b(IMAD\.WIDE|IADD3\.X|IMAD\.X|LEA\.HI\.X|ISETP\.\S*\.EX|SHF\.\S*\.HI|IMAD\.HI)")


def find_tool(name: str, given) -> str:
    candidates = [given, shutil.which(name)]
    cuda = os.environ.get("CUDA_HOME", "/usr/local/cuda")
    candidates.append(os.path.join(cuda, "bin", name))
    for site in sys.path:
        candidates += glob.glob(os.path.join(site, "nvidia", "*", "bin", name))
    for c in candidates:
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            return c
    sys.exit(f"sass_report.py: {name} not found (install the CUDA toolkit, or pip install nvidia-cuda-{name})")


def function_extents(path: Path) -> list:
    """(first line, last line, name) of every function body in a C++ source, by brace matching."""
    lines = path.read_text().splitlines()
    out, stack, pending = [], [], None
    head = re.compile(r"\b([A-Za-z_]\w*)\(")  # a name right before '(' (the style puts no space there)
    for number, line in enumerate(lines, start=1):
        code = line.split("//", 1)[0]
        m = head.search(code)
        if m and not code.rstrip().endswith(";"):
            pending = (number, m.group(1))
        for ch in code:
            if ch == "{":
                stack.append(pending)
                pending = None
            elif ch == "}" and stack:
                opened = stack.pop()
                if opened:
                    out.append((opened[0], number, opened[1]))
        if code.rstrip().endswith(";"):
            pending = None
    return out


class Attribution:
    def __init__(self):
        self.extents = {}

    def function(self, file: str, line: int):
        if file not in self.extents:
            self.extents[file] = function_extents(Path(file)) if Path(file).is_file() else []
        inside = [(last - first, name) for first, last, name in self.extents[file] if first <= line <= last]
        return min(inside)[1] if inside else None


def parse_location(text: str) -> list:
    """[(file, line), ...] innermost first, from a '//## File "...", line N inlined at ...' comment."""
    return [(f, int(n)) for f, n in re.findall(r'"([^"]+)", line (\d+)', text)]


SIZES = {"float": 4, "double": 8, "c10::complex<float>": 8, "c10::complex<double>": 16}
DTYPES = {
    "float": "float32",
    "double": "float64",
    "c10::complex<float>": "complex64",
    "c10::complex<double>": "complex128",
}


def describe(mangled: str) -> tuple:
    """('forward complex64 constant', steps per thread) of a kernel, from its demangled name."""
    name = (
        subprocess.run(["c++filt", mangled], capture_output=True, text=True).stdout if shutil.which("c++filt") else ""
    )
    m = re.search(r"(Forward|Backward)Steps<(.+?), (true|false)>", name)
    if not m:
        return mangled, 16
    backward, dtype, per_step = m.group(1) == "Backward", m.group(2), m.group(3) == "true"
    # torch_lru::ScanTileTraits: register arrays within 256 bytes, at most 16 steps (8 for 16-byte types).
    arrays = (2 if backward else 1) + per_step
    fit, most = 256 // (arrays * SIZES[dtype]), 8 if SIZES[dtype] >= 16 else 16
    items = most if fit >= most else (8 if fit >= 8 else 4)
    return f"{m.group(1).lower()} {DTYPES[dtype]} {'per-step' if per_step else 'constant'}", items


def report(obj: Path, cuobjdump: str, nvdisasm: str) -> dict:
    usage = subprocess.run([cuobjdump, "-res-usage", str(obj)], capture_output=True, text=True, check=True).stdout
    registers = dict(re.findall(r"Function (\S+):\s*\n\s*REG:(\d+)", usage))
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([cuobjdump, "-xelf", "all", str(obj.resolve())], cwd=tmp, capture_output=True, check=True)
        cubins = sorted(Path(tmp).glob("*.cubin"))
        text = "".join(
            subprocess.run([nvdisasm, "-gi", "-c", str(c)], capture_output=True, text=True, check=True).stdout
            for c in cubins
        )
    where = Attribution()
    kernels, current, location, in_comments = {}, None, [], False
    for line in text.splitlines():
        m = re.match(r"\s*\.text\.(\S+):", line) or re.match(r"^(\S*tiled_scan_kernel\S*):\s*$", line)
        if m and "tiled_scan_kernel" in m.group(1):
            current = m.group(1).rstrip(":")
            kernels[current] = {"instructions": 0, "counts": Counter(), "phases": Counter()}
            continue
        if current is None:
            continue
        if line.lstrip().startswith("//## File"):
            # A group of such lines precedes an instruction: innermost location first, then outwards.
            location = (location if in_comments else []) + parse_location(line)
            in_comments = True
            continue
        in_comments = False
        ins = re.match(r"\s*/\*[0-9a-f]+\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)", line)
        if not ins:
            continue
        op = ins.group(1)
        if op in ("NOP",):
            continue
        k = kernels[current]
        k["instructions"] += 1
        for kind in ("LDG", "STG", "LDS", "STS", "ATOMG", "RED", "BAR", "MEMBAR", "FENCE", "NANOSLEEP", "CALL"):
            if op.startswith(kind):
                k["counts"][kind] += 1
        if INT64.search(line):
            k["counts"]["int64"] += 1
        phase = next((f for f in (where.function(f, n) for f, n in location) if f in PHASES), "other")
        k["phases"][phase] += 1
    out = {}
    for mangled, k in kernels.items():
        name, items = describe(mangled)
        per_step = sum(n for p, n in k["phases"].items() if p in PER_STEP)
        out[name] = {
            "registers": int(registers.get(mangled, 0)),
            "instructions": k["instructions"],
            **dict(k["counts"]),
            "phases": dict(k["phases"]),
            "steps_per_thread": items,
            "per_step_phase_instructions_per_step": round(per_step / items, 1),
        }
    return dict(sorted(out.items()))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default = next(iter(glob.glob(str(REPO / "build" / "temp.*" / "cuda" / "scan_cuda.o"))), None)
    ap.add_argument("object", nargs="?", default=default, help="an object or library holding the kernels")
    ap.add_argument("--cuobjdump")
    ap.add_argument("--nvdisasm")
    ap.add_argument("--json", help="write the figures here too")
    args = ap.parse_args()
    if not args.object or not Path(args.object).exists():
        sys.exit("sass_report.py: no object given and no build/temp.*/cuda/scan_cuda.o (run scripts/setup_env.sh)")
    figures = report(Path(args.object), find_tool("cuobjdump", args.cuobjdump), find_tool("nvdisasm", args.nvdisasm))
    cols = (
        "registers",
        "steps_per_thread",
        "instructions",
        "LDG",
        "STG",
        "int64",
        "per_step_phase_instructions_per_step",
    )
    print(f"{'kernel':32} " + " ".join(f"{c[:14]:>14}" for c in cols))
    for name, f in figures.items():
        print(f"{name:32} " + " ".join(f"{f.get(c, 0):>14}" for c in cols))
    print("\ninstructions per phase (attributed through the line table):")
    phases = sorted({p for f in figures.values() for p in f["phases"]}, key=lambda p: (PHASES + ("other",)).index(p))
    print(f"{'kernel':32} " + " ".join(f"{p[:16]:>16}" for p in phases))
    for name, f in figures.items():
        print(f"{name:32} " + " ".join(f"{f['phases'].get(p, 0):>16}" for p in phases))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()

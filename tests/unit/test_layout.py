"""The tree is the map (README Layout): a package per layer, the pure model
imports no kernel or database library, and no module shadows the standard
library."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("aaa", "bench", "common", "config", "control", "daemon", "importers", "kernel",
            "model", "services", "store")


def modules(package: str = "acctd"):
    base = ROOT / ("cli" if package == "acctctl" else package)
    for p in sorted(base.rglob("*.py")):
        rel = p.relative_to(base).with_suffix("")
        yield ".".join((package, *rel.parts)).removesuffix(".__init__"), p


def test_every_layer_is_a_package_with_a_docstring():
    for name in PACKAGES:
        init = ROOT / "acctd" / name / "__init__.py"
        assert init.exists(), name
        assert init.read_text().lstrip().startswith('"""'), f"{name}: say what the layer is for"
    assert {p.parent.name for p in (ROOT / "acctd").glob("*/__init__.py")} == set(PACKAGES)
    flat = sorted(p.name for p in (ROOT / "acctd").glob("*.py"))
    assert flat == ["__init__.py", "demo.py", "errors.py"], "a module outside the layers"


def test_no_module_is_named_like_a_standard_library_module():
    clash = [str(p) for pkg in ("acctd", "acctctl") for name, p in modules(pkg)
             if name.rsplit(".", 1)[-1] in sys.stdlib_module_names]
    assert clash == []


def test_the_model_is_pure():
    """acctd.model imports neither bcc, DuckDB nor pyroute2 (STYLE 11), nor
    any layer above it; of the kernel layer only the ABI's numbers."""
    mods = [n for n, _ in modules() if n.startswith("acctd.model")]
    code = (f"import sys\nfor m in {mods!r}:\n    __import__(m)\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('bcc', 'duckdb', "
            "'pyroute2') or (m.startswith('acctd.') and m.split('.')[1] not in "
            "('model', 'errors') and m != 'acctd.kernel.abi' and m != 'acctd.kernel')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=ROOT)
    assert out.stdout.strip() == "[]"


def test_every_layer_ships():
    """pyproject's package list is the tree's (a layer missing there would
    pass every test in a checkout and be absent from the wheel)."""
    import tomllib
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
                 ["packages"])
    nested = {".".join(p.parent.relative_to(ROOT).parts)
              for p in (ROOT / "acctd").glob("*/*/__init__.py")}   # acctd.services.central
    assert listed == {"acctd", "acctctl", "acctd.bpf", *(f"acctd.{p}" for p in PACKAGES),
                      *nested}

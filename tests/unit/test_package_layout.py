"""Layout rules: models/ is ComfyUI-free and importable on its own; the root imports without ComfyUI."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = {"comfy", "comfy_api", "comfy_extras", "folder_paths", "nodes", "server", "execution"}


def _imports(path: Path) -> list[tuple[str, int]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, 0) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            found.append((node.module or "", node.level))
    return found


def test_models_never_imports_comfyui_or_leaves_its_package():
    offenders = []
    for path in sorted((ROOT / "models").rglob("*.py")):
        depth = len(path.relative_to(ROOT / "models").parts) - 1  # 0 for models/x.py
        for module, level in _imports(path):
            top = module.split(".")[0]
            if level == 0 and top in FORBIDDEN | {"models", "likeness"}:
                offenders.append(f"{path.relative_to(ROOT)}: import {module}")
            if level > depth + 1:
                offenders.append(f"{path.relative_to(ROOT)}: relative import leaves models/ ({'.' * level}{module})")
    assert offenders == []


def test_models_imports_as_top_level_package_without_comfyui():
    code = (
        "import sys, importlib, pkgutil, models\n"
        "for m in pkgutil.walk_packages(models.__path__, 'models.'):\n"
        "    importlib.import_module(m.name)\n"
        f"bad = sorted(n for n in sys.modules if n.split('.')[0] in {sorted(FORBIDDEN)!r})\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=300)


def test_root_init_imports_without_comfyui_and_exports_no_v1_mapping():
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('likeness_pack', {str(ROOT / '__init__.py')!r}, "
        f"submodule_search_locations=[{str(ROOT)!r}])\n"
        "m = importlib.util.module_from_spec(spec); sys.modules['likeness_pack'] = m; spec.loader.exec_module(m)\n"
        "assert not hasattr(m, 'NODE_CLASS_MAPPINGS')\n"
        "assert m.WEB_DIRECTORY == './web' and callable(m.comfy_entrypoint)\n"
        "assert not [n for n in sys.modules if n.split('.')[0] in ('comfy', 'comfy_api', 'folder_paths')]\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd="/", check=True, timeout=120)


def test_no_print_or_bare_except_in_pack_code():
    offenders = []
    for folder in ("models", "nodes"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print":
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} print()")
                if isinstance(node, ast.ExceptHandler) and node.type is None:
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} bare except")
    assert offenders == []


def test_requirements_mirror_pyproject_and_never_list_torch():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = [
        line.strip()
        for line in (ROOT / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert reqs == project["dependencies"]
    for req in reqs + [d for extra in project["optional-dependencies"].values() for d in extra]:
        assert not req.lower().startswith(("torch", "torchvision", "onnxruntime-gpu")), req
    assert project["name"] == "comfyui-likeness"

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


# --------------------------------------------------------------------------- import graph, sizes, public paths

PACKAGES = ("models", "nodes", "tools")
SIZE_LIMITS = {"models": 450, "nodes": 300}
FUNCTION_LIMIT = 80


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _pack_modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def _import_graph() -> dict[str, set[str]]:
    """``{module: modules it imports}`` over models/, nodes/ and tools/, relative imports resolved.

    Every import statement counts, also those inside functions: a lazy import still ties the
    two modules together. Absolute imports name other distributions (ComfyUI's own top-level
    ``nodes`` module among them) unless they start with ``likeness.``. ``from .pkg import name``
    points at ``pkg.name`` when that is a module, else at ``pkg`` itself.
    """
    modules = _pack_modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names if alias.name.startswith("likeness.")]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                    stem = ".".join(base + ([node.module] if node.module else []))
                else:  # absolute: ComfyUI's own `nodes`, `comfy`...; the pack imports itself relatively
                    stem = "" if not (node.module or "").startswith("likeness.") else node.module
                targets = [
                    f"{stem}.{alias.name}" if f"{stem}.{alias.name}" in modules else stem for alias in node.names
                ]
            for target in targets:
                target = target.removeprefix("likeness.")
                while target and target not in modules and "." in target:
                    target = target.rpartition(".")[0]
                if target in modules and target != name:
                    graph[name].add(target)
    return graph


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        state[node] = 2
        stack.pop()
        return None

    for start in sorted(graph):
        if start not in state:
            found = visit(start)
            if found:
                return found
    return None


def test_import_graph_is_resolved():
    graph = _import_graph()
    assert "models.errors" in graph["models.images"]
    assert "tools.smoke.writers" in graph["tools.cli"]  # a lazy import inside a function counts
    assert "models.attention.schedule" in graph["nodes.patching.wplus"]  # three dots, resolved


def test_no_import_cycle_in_models_nodes_tools():
    cycle = _find_cycle(_import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_cycle_finder_names_the_cycle():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set()}) is None


def test_nodes_and_models_never_import_tools():
    graph = _import_graph()
    offenders = sorted(
        f"{src} -> {dst}"
        for src, dsts in graph.items()
        if src.startswith(("nodes", "models"))
        for dst in dsts
        if dst.startswith("tools")
    )
    assert offenders == []


def test_file_sizes():
    too_long = []
    for pkg, limit in SIZE_LIMITS.items():
        for path in sorted((ROOT / pkg).rglob("*.py")):
            n = len(path.read_text(encoding="utf-8").splitlines())
            if n > limit:
                too_long.append(f"{path.relative_to(ROOT)}: {n} lines (limit {limit})")
    assert too_long == []


def test_function_sizes():
    too_long = []
    for pkg in SIZE_LIMITS:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    n = node.end_lineno - node.lineno + 1
                    if n > FUNCTION_LIMIT:
                        too_long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: {n} lines")
    assert too_long == []


def test_public_import_paths_from_the_repository_root():
    code = (
        "from models.e4e import Encoder4Editing\n"
        "from models.stylegan2 import Generator\n"
        "from models.directions import ganspace_delta\n"
        "from models.wplus_adapter import WProjModel, WPlusAttnProcessor\n"
        "from models.face import create_analyzer\n"
        "import torch\n"
        "assert issubclass(Encoder4Editing, torch.nn.Module) and issubclass(Generator, torch.nn.Module)\n"
        "assert issubclass(WProjModel, torch.nn.Module) and callable(WPlusAttnProcessor.__call__)\n"
        "assert callable(ganspace_delta) and callable(create_analyzer)\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=300)


def test_cli_help_from_the_repository_root():
    out = subprocess.run(
        [sys.executable, "-m", "models.cli", "--help"],
        cwd=ROOT,
        check=True,
        timeout=300,
        capture_output=True,
        text=True,
    ).stdout
    assert out.startswith("usage: python -m models.cli")
    for verb in ("doctor", "smoke-models", "queue", "demo"):
        assert verb in out


def test_requires_comfyui_is_the_version_the_nodes_check():
    import tomllib

    tree = ast.parse((ROOT / "nodes" / "compat.py").read_text(encoding="utf-8"))
    minimum = next(
        ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "MIN_COMFYUI"
    )
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["tool"]["comfy"]["requires-comfyui"] == ">=" + ".".join(map(str, minimum))
    assert f"ComfyUI **{'.'.join(map(str, minimum))} or newer**" in (ROOT / "README.md").read_text()


def test_wheel_packages_are_every_folder_under_the_likeness_prefix():
    import tomllib

    listed = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    folders = sorted(
        "likeness." + ".".join(p.parent.relative_to(ROOT).parts)
        for pkg in PACKAGES
        for p in (ROOT / pkg).rglob("__init__.py")
    )
    assert sorted(listed) == ["likeness", *folders]

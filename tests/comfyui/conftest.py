"""Fixtures for the comfyui tier: real ComfyUI named by ``COMFYUI_PATH``.

* ``smoke_models_dir``: smoke models written once per format version and reused.
* ``comfy_server``: ComfyUI's own ``main.py --cpu`` on 127.0.0.1 with this pack
  in a temporary ``custom_nodes`` folder and the smoke models on the model paths.
* ``workflow_server``: the server a shipped workflow runs on: ``comfy_server``, or for
  SDXL workflows a second one with ``--fp8_e4m3fn-unet --fp8_e4m3fn-text-enc`` (the smoke
  SDXL UNet and IdentityNet take 15 GB of RAM in fp32 on a CPU; measured peak RSS of the
  fp8 server 9.4 to 12.6 GB, in bf16 16.2 GB, which ran out of memory next to the rest of
  the tier on a 24 GB machine). Only one of the two servers runs at a time (all test
  processes together peaked at 14.3 GB in the workflow modules).
* ``comfy_env``: ComfyUI imported in-process (CPU) with this pack's folders registered,
  for tests that call nodes and patches directly.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parents[2]
COMFYUI_PATH = os.environ.get("COMFYUI_PATH", "")


def require_comfyui() -> Path:
    path = Path(COMFYUI_PATH) if COMFYUI_PATH else None
    if path is None or not (path / "main.py").is_file():
        pytest.skip("comfyui tier: COMFYUI_PATH is not set to a ComfyUI checkout (see README, 'Tests')")
    return path


@pytest.fixture(scope="session")
def smoke_models_dir() -> Path:
    require_comfyui()
    from likeness.tools.smoke.writers import SMOKE_FORMAT_VERSION, write_smoke_models

    base = Path(os.environ.get("LIKENESS_SMOKE_DIR", ROOT / ".pytest_cache" / "likeness-smoke"))
    target = base / f"v{SMOKE_FORMAT_VERSION}"
    write_smoke_models(target)
    return target


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


#: Modules that load the full smoke SDXL in this process (fp32, about 11 GB with the adapters): they run first,
#: while the process holds nothing else; later in a long session earlier in-process models and the memory that
#: training left fragmented no longer leave room for it on a 24 GB machine.
IN_PROCESS_SDXL = ("test_instantid_patch.py",)


def pytest_collection_modifyitems(config, items) -> None:
    first = [item for item in items if item.path.name in IN_PROCESS_SDXL]
    if first:
        items[:] = first + [item for item in items if item.path.name not in IN_PROCESS_SDXL]


_STARTED: list[ComfyServer] = []


SDXL_SERVER_ARGS = ("--fp8_e4m3fn-unet", "--fp8_e4m3fn-text-enc")


def free_servers() -> None:
    """Release the memory of every server this session started, for an in-process model that needs it.

    SDXL servers stop (up to 12.6 GB each, and a process does not hand freed memory back to the system;
    ``workflow_server`` starts them again on demand); the others unload their models and drop their caches.
    """
    for server in _STARTED:
        if server.proc is None or server.proc.poll() is not None:
            continue
        if set(SDXL_SERVER_ARGS) <= set(server.extra_args):
            server.stop()
            continue
        try:
            server.client().post("/free", {"unload_models": True, "free_memory": True})
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass  # a server that cannot answer holds nothing we can free


def _die_with_parent() -> None:
    """Run in the server's child process on Linux: SIGTERM when the test process dies (PR_SET_PDEATHSIG).

    A test process killed for memory would otherwise leave its servers running, holding gigabytes. Linux
    sends the signal when the *thread* that started the child ends, so only servers started by the main
    thread get it (a test that restarts a server from a helper thread must not lose it with that thread).
    """
    ctypes.CDLL("libc.so.6").prctl(1, signal.SIGTERM)


def _on_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


class ComfyServer:
    """A ComfyUI server process for one test session."""

    def __init__(self, comfy: Path, base: Path, models: Path, port: int | None = None, extra_args: tuple = ()):
        self.comfy, self.base, self.models = comfy, base, models
        self.extra_args = tuple(extra_args)
        self.port = port or _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = base / "server.log"
        self.proc: subprocess.Popen | None = None
        self.startups: list[tuple[int, int]] = []  # byte ranges of the log written while each start loaded
        for sub in ("input", "output", "temp", "user", "custom_nodes"):
            (base / sub).mkdir(exist_ok=True)
        # what the frontend reads from a used install (else it logs 404s for them): a user stylesheet, the
        # saved-workflow and subgraph folders, the node templates file
        user = base / "user" / "default"
        for sub in ("workflows", "subgraphs"):
            (user / sub).mkdir(parents=True, exist_ok=True)
        settings = {  # a returning user: no first-run template; full-detail nodes at small zoom, no minimap
            "Comfy.TutorialCompleted": False,
            "Comfy.Minimap.Visible": False,
            "LiteGraph.Canvas.MinFontSizeForLOD": 1,
        }
        for name, text in (
            ("user.css", "/* user stylesheet */\n"),
            ("comfy.templates.json", "[]\n"),
            ("comfy.settings.json", json.dumps(settings, indent=1) + "\n"),
        ):
            if not (user / name).exists():
                (user / name).write_text(text)
        link = base / "custom_nodes" / "comfyui-likeness"
        if not link.exists():
            link.symlink_to(ROOT, target_is_directory=True)
        from likeness.models.files.registry import FOLDERS
        from likeness.tools.workflows.shipped import SMOKE_NAMES

        # the model names the shipped workflows use, linked to the smoke models, so a template opens in the
        # frontend with nothing missing (API tests substitute the smoke names with shipped.smoke_prompt)
        aliases = base / "shipped_names"
        for (folder, shipped), smoke in SMOKE_NAMES.items():
            link = aliases / folder / shipped
            link.parent.mkdir(parents=True, exist_ok=True)
            if not link.exists():
                link.symlink_to(models / folder / smoke)
        keys = ["checkpoints", *FOLDERS]
        # Folders nodes save into come first and live in this session's temporary folder, so saving never
        # writes into the shared smoke-model cache; then an empty model tree searched before the smoke models,
        # for tests that put odd files in the way; the smoke files stay readable after them.
        written = ["likeness_identities"]
        self.scratch = base / "scratch_models"
        for key in keys:
            (self.scratch / key).mkdir(parents=True, exist_ok=True)
        (base / "extra_model_paths.yaml").write_text(
            "likeness_tests_written:\n"
            f"  base_path: {base / 'models'}\n"
            + "".join(f"  {k}: {k}\n" for k in written)
            + f"likeness_scratch:\n  base_path: {self.scratch}\n"
            + "".join(f"  {k}: {k}\n" for k in FOLDERS)
            + "likeness_tests:\n"
            f"  base_path: {models}\n"
            + "".join(f"  {k}: {k}\n" for k in keys)
            + f"  custom_nodes: {base / 'custom_nodes'}\n"
            + f"likeness_shipped_names:\n  base_path: {aliases}\n"
            + "".join(f"  {folder}: {folder}\n" for folder in sorted({f for f, _ in SMOKE_NAMES}))
        )
        for k in written:
            (base / "models" / k).mkdir(parents=True, exist_ok=True)

    def start(self, timeout: float = 240.0) -> None:
        args = [
            sys.executable,
            str(self.comfy / "main.py"),
            "--cpu",
            "--listen",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--disable-api-nodes",
            "--disable-auto-launch",
            "--extra-model-paths-config",
            str(self.base / "extra_model_paths.yaml"),
            "--input-directory",
            str(self.base / "input"),
            "--output-directory",
            str(self.base / "output"),
            "--temp-directory",
            str(self.base / "temp"),
            "--user-directory",
            str(self.base / "user"),
            *self.extra_args,
        ]
        begin = self.log_path.stat().st_size if self.log_path.exists() else 0
        log = self.log_path.open("a")
        self.proc = subprocess.Popen(
            args,
            cwd=self.comfy,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") and _on_main_thread() else None,
        )
        from likeness.tools.batch.client import ComfyClient

        client = ComfyClient(self.url, timeout=5)
        if self not in _STARTED:
            _STARTED.append(self)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {self.proc.returncode}:\n{self.log()[-4000:]}")
            try:
                client.get("/system_stats")
                self.startups.append((begin, self.log_path.stat().st_size))
                return
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                time.sleep(1.0)
        raise RuntimeError(f"ComfyUI did not answer within {timeout} s:\n{self.log()[-4000:]}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def startup_log(self) -> str:
        """What every start of this server logged until it answered (custom-node imports included), without
        what the prompts run since then logged (tests provoke node errors on purpose)."""
        data = self.log_path.read_bytes() if self.log_path.exists() else b""
        return "".join(data[a:b].decode(errors="replace") for a, b in self.startups)

    def client(self, timeout: float = 30.0):
        from likeness.tools.batch.client import ComfyClient

        return ComfyClient(self.url, timeout=timeout)


@pytest.fixture(scope="session")
def comfy_server(tmp_path_factory, smoke_models_dir) -> ComfyServer:
    comfy = require_comfyui()
    server = ComfyServer(comfy, tmp_path_factory.mktemp("comfy_server"), smoke_models_dir)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def free_comfy_servers():
    """``free_comfy_servers()`` asks the servers this session started to release their models (memory)."""
    return free_servers


def uses_sdxl(prompt: dict) -> bool:
    """Whether an API workflow loads the smoke SDXL checkpoint."""
    from likeness.tools.smoke.writers import SMOKE_SDXL_CHECKPOINT

    return any(node["inputs"].get("ckpt_name") == SMOKE_SDXL_CHECKPOINT for node in prompt.values())


def _alive(server: ComfyServer) -> bool:
    return server.proc is not None and server.proc.poll() is None


@pytest.fixture(scope="session")
def workflow_server(request, tmp_path_factory, smoke_models_dir, reference_dir):
    """``server_for(prompt) -> ComfyServer`` with the reference faces as input images.

    SDXL workflows get their own server, and only one of the two runs at a time: the SDXL
    one needs up to 12.6 GB (measured), the shared SD1.5 one keeps its models cached. The shared
    server is running again when this fixture ends, for the modules that use it directly.
    """
    shared = request.getfixturevalue("comfy_server")
    sdxl: list[ComfyServer] = []

    def server_for(prompt: dict) -> ComfyServer:
        if not uses_sdxl(prompt):
            if sdxl and _alive(sdxl[0]):
                sdxl[0].stop()
            if not _alive(shared):
                shared.start()
            server = shared
        else:
            if _alive(shared):
                shared.stop()
            if not sdxl:
                sdxl.append(
                    ComfyServer(
                        require_comfyui(),
                        tmp_path_factory.mktemp("comfy_sdxl"),
                        smoke_models_dir,
                        extra_args=SDXL_SERVER_ARGS,
                    )
                )
            server = sdxl[0]
            if not _alive(server):
                server.start()
        for src, name in (("astronaut.png", "likeness_face.png"), ("grace_hopper.png", "likeness_expression.png")):
            shutil.copy(reference_dir / "faces" / src, server.base / "input" / name)
        return server

    yield server_for
    if sdxl:
        sdxl[0].stop()
    if not _alive(shared):
        shared.start()


@pytest.fixture(scope="session")
def comfy_env(smoke_models_dir) -> SimpleNamespace:
    """ComfyUI imported in-process on the CPU, with Likeness folders pointing at the smoke models."""
    path = str(require_comfyui())
    if path not in sys.path:
        sys.path.insert(0, path)
    import comfy.options

    comfy.options.enable_args_parsing(False)
    import comfy.cli_args

    comfy.cli_args.args.cpu = True
    import comfy.model_management
    import comfy.sd
    import folder_paths

    import nodes
    from likeness.models.files.registry import FOLDERS
    from likeness.nodes.folders import register_model_folders

    register_model_folders()
    for key in ["checkpoints", *FOLDERS]:
        folder_paths.add_model_folder_path(key, str(smoke_models_dir / key), is_default=True)
    return SimpleNamespace(path=Path(path), models=smoke_models_dir, nodes=nodes, folder_paths=folder_paths)


@pytest.fixture(scope="session")
def sd15_checkpoint(comfy_env):
    """(model, clip, vae) of the smoke SD1.5 checkpoint, loaded once per session."""
    import comfy.sd

    from likeness.tools.smoke.writers import SMOKE_CHECKPOINT

    path = comfy_env.models / "checkpoints" / SMOKE_CHECKPOINT
    model, clip, vae, _ = comfy.sd.load_checkpoint_guess_config(str(path), output_vae=True, output_clip=True)
    return model, clip, vae


@pytest.fixture(scope="session")
def count_site_calls():
    """A context manager counting calls of every W+ site replace, per ComfyUI key (a spy, not a hook)."""
    from collections import Counter
    from contextlib import contextmanager
    from unittest import mock

    @contextmanager
    def counting():
        from likeness.nodes.patching.wplus import WPlusSiteReplace

        hits: Counter = Counter()
        real = WPlusSiteReplace.__call__

        def spy(self, q, k, v, extra_options):
            hits[self.key] += 1
            return real(self, q, k, v, extra_options)

        with mock.patch.object(WPlusSiteReplace, "__call__", spy):
            yield hits

    return counting

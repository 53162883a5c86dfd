"""README.md's quick start runs as written, so a renamed command, option, key, recipe or file fails
the suite instead of a new user.

Every line of the bash blocks under "## Quick start" is run in a temporary directory, in order:
`transformer ...` through the command's own main(); a recipe longer than the tiny one is replaced
by the tiny recipe (a few steps) after its own keys and overrides have been checked, and writes
where the real recipe would, so that the lines after it find its checkpoint; `transformer serve`
serves on a free port of 127.0.0.1 and the `curl` lines after it are sent there; `tensorboard
--logdir DIR` is checked to point at the runs' event files. A line of any other kind fails the test:
teach it here first. The README's `pip install` lines must name extras that pyproject.toml has, and
its links must lead to files that exist.
"""

from __future__ import annotations

import re
import shlex
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from transformer.commands.main import main as transformer_main
from transformer.config import load_config

ROOT = Path(__file__).parent.parent
README = ROOT / "README.md"
# A few steps of the tiny recipe, one thread: enough for every checkpoint the README names.
FAST = [
    "train.max_steps=3",
    "train.validate_every=3",
    "train.device=cpu",
    "train.threads=1",
    "train.num_samples=1",
    "model.d_model=32",
    "model.n_heads=2",
    "model.d_ff=64",
    "data.tokenizer.vocab_size=260",
    "data.max_tokens=1024",
]


def section(text: str, heading: str) -> str:
    return text.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]


def bash_lines(markdown: str) -> list[str]:
    """The command lines of the ```bash blocks (continuations joined; comments and blanks left out)."""
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", markdown, re.DOTALL):
        for line in block.replace("\\\n", " ").splitlines():
            if shlex.split(line, comments=True):
                lines.append(line)
    return lines


def test_the_quick_start_has_the_commands_the_issue_asks_for() -> None:
    commands = [" ".join(shlex.split(line, comments=True)[:2]) for line in quick_start()]
    for expected in (
        "transformer train",
        "transformer translate",
        "transformer serve",
        "curl -s",
        "tensorboard --logdir",
    ):
        assert expected in commands, f"README.md's quick start lost `{expected} ...`"
    recipes = {w for line in quick_start() for w in re.findall(r"--config (\S+)", line)}
    assert {"tiny", "multi30k_en_de"} <= recipes


def quick_start() -> list[str]:
    return bash_lines(section(README.read_text(encoding="utf-8"), "Quick start"))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Sandbox:
    """Runs the README's lines one by one in a temporary directory (see the module docstring)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
        self.monkeypatch, self.capsys = monkeypatch, capsys
        self.server: Any = None  # uvicorn.Server once a `transformer serve` line ran
        self.thread: threading.Thread | None = None

    def run(self, line: str) -> None:
        words = shlex.split(line, comments=True)
        if words[0] == "transformer":
            self.transformer(words[1:], line)
        elif words[0] == "curl":
            self.curl(words[1:], line)
        elif words[:2] == ["tensorboard", "--logdir"]:
            pytest.importorskip("tensorboard")
            events = list(Path(words[2]).rglob("events.out.tfevents.*"))
            assert events, f"{line!r}: no TensorBoard events under {words[2]}"
        else:
            pytest.fail(f"README.md's quick start has a line this test cannot run: {line!r}")

    def transformer(self, argv: list[str], line: str) -> None:
        if argv[0] == "train":
            argv = self.tiny_instead(argv)
        if argv[0] == "serve":
            self.serve(argv, line)
            return
        assert transformer_main(argv) == 0, f"{line!r} failed: {self.capsys.readouterr().err}"
        out = self.capsys.readouterr().out
        if argv[0] == "translate" and "-o" not in argv:
            assert out.endswith("\n"), f"{line!r} printed no translation"  # one line per input

    def tiny_instead(self, argv: list[str]) -> list[str]:
        """The same train command on the tiny recipe, a few steps, where the README's recipe would
        write; a longer recipe's own file and overrides are checked first (load_config refuses an
        unknown recipe or key)."""
        recipe = argv[argv.index("--config") + 1]
        overrides = [a for a in argv[1:] if "=" in a and not a.startswith("-")]
        config = load_config(recipe, overrides)
        if recipe == "tiny":
            return [*argv, *FAST]
        flags = [a for a in argv[1:] if a in ("--resume", "--overwrite")]
        return ["train", "--config", "tiny", *flags, f"train.run_dir={config.train.run_dir}", *FAST]

    def serve(self, argv: list[str], line: str) -> None:
        """`transformer serve` as written, with uvicorn.run started in a thread on a free port."""
        pytest.importorskip("fastapi")
        uvicorn = pytest.importorskip("uvicorn")
        started: list[Any] = []
        self.monkeypatch.setattr(uvicorn, "run", lambda app, **options: started.append(app))
        assert transformer_main(argv) == 0, f"{line!r} failed: {self.capsys.readouterr().err}"
        (app,) = started
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "serve did not start"
            time.sleep(0.02)

    def curl(self, args: list[str], line: str) -> None:
        """A `curl` line of the README, sent with httpx to the server started above."""
        httpx = pytest.importorskip("httpx")
        assert self.server is not None, f"{line!r} comes before any `transformer serve`"
        headers, data, url = {}, None, None
        words = iter(args)
        for word in words:
            if word == "-H":
                name, value = next(words).split(":", 1)
                headers[name.strip()] = value.strip()
            elif word == "-d":
                data = next(words)
            elif not word.startswith("-"):
                url = word
        assert url and re.match(r"(http://)?(127\.0\.0\.1|localhost):8000/", url), line
        path = url.split(":8000", 1)[1]
        address = f"http://127.0.0.1:{self.server.config.port}{path}"
        if data is None:
            answer = httpx.get(address, timeout=60)
        else:
            answer = httpx.post(address, content=data, headers=headers, timeout=60)
        assert answer.status_code == 200, f"{line!r}: {answer.status_code} {answer.text}"
        answer.json()

    def stop(self) -> None:
        if self.server is not None and self.thread is not None:
            self.server.should_exit = True
            self.thread.join(timeout=30)


@pytest.fixture
def sandbox(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> Iterator[Sandbox]:
    (tmp_path / "configs").symlink_to(ROOT / "configs")  # the README's paths, from the root
    monkeypatch.chdir(tmp_path)
    box = Sandbox(monkeypatch, capsys)
    yield box
    box.stop()


def test_the_quick_start_runs_as_written(sandbox: Sandbox) -> None:
    for line in quick_start():
        sandbox.run(line)


def test_the_install_lines_name_extras_that_exist() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    table = pyproject.split("[project.optional-dependencies]", 1)[1].split("\n[", 1)[0]
    extras = re.findall(r"^([a-z]+) = ", table, re.MULTILINE)
    named = re.findall(r'pip install -e "\.\[([a-z,]+)\]"', README.read_text(encoding="utf-8"))
    assert named, "README.md lost its pip install lines"
    for group in named:
        for extra in group.split(","):
            assert extra in extras, f"README.md installs [{extra}], which pyproject.toml lacks"


def test_the_links_lead_to_files_that_exist() -> None:
    text = README.read_text(encoding="utf-8")
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text)
    local = [link for link in links if not re.match(r"[a-z]+://", link)]
    assert any(link.startswith("docs/") for link in local)
    for link in local:
        assert (ROOT / link).exists(), f"README.md links to {link}, which does not exist"

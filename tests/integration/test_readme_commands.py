"""Every `keel` command in README.md works as written right after `keel up`.

The commands are read from README.md's shell and console blocks, so a command
added there is run here too. They run with no `--url` or `--token-file` and no
config file, against a `keel up` on ports away from the defaults (a scripted
model instead of the local one): what lets them find the stack is the data
directory, `./.keel` in the working directory or `KEEL_DATA_DIR`.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from agentkeel.testing.ports import free_port_run
from tests.integration import test_keel_up_e2e as e2e

pytestmark = pytest.mark.slow

README = Path(__file__).resolve().parents[2] / "README.md"
KEEL = ("keel", ".venv/bin/keel")
COMMAND_TIMEOUT_S = 120.0

# Commands that cannot run here as written, and why.
EXCEPTIONS = {
    "keel secrets put orgs/acme/openai --value-file ./acme-openai.key": (
        "writes into secrets_dir (/run/secrets by default); tests/cli/test_secret_values_cmd.py "
        "runs keel secrets put against a temporary secrets directory"
    ),
    "keel secrets rotate openai_api_key --new-value-file ./openai-new.key --deadline 2h": (
        "needs a provider key in secrets_dir and a new key file; tests/cli/test_secrets_cmd.py "
        "and tests/integration/test_rotation_live_sessions.py rotate one against real replicas"
    ),
    "keel secrets rotate openai_api_key --service http://10.0.0.5:8081 --service "
    "http://10.0.0.6:8081": "names services of another deployment (as above)",
    "keel serve agent --agent examples.echo_agent:agent --port 8085": (
        "a server that runs until stopped, on a fixed port; tests/cli/test_serve.py and "
        "tests/integration start replicas"
    ),
    "keel up --auth": (
        "a second stack beside the one this test runs; tests/integration/"
        "test_front_door_e2e.py runs keel up --auth with keys, owners and a forged assertion"
    ),
    "keel serve tools --tools myapp.tools": (
        "serves the reader's own module (myapp.tools does not exist) until stopped"
    ),
    "keel rollback --dry-run": (
        "needs a release that keel rollout recorded; tests/cli/test_rollback_cmd.py runs "
        "keel rollback against a real router, agents and memory server"
    ),
    "keel rollback": "needs a release that keel rollout recorded (as above)",
    "keel --config examples/keel.yaml --env production config show": (
        "reads the repository's examples/ (the test runs in a project directory without "
        "them); tests/config/test_overlays.py loads that overlay and tests/cli/"
        "test_config_cmd.py runs keel --env config show against overlays"
    ),
    "keel --config examples/keel.yaml config diff examples/keel.yaml production": (
        "reads the repository's examples/ (as above); tests/cli/test_config_diff_cmd.py runs "
        "keel config diff on environments and files"
    ),
    "keel config diff staging production --exit-code": (
        "needs keel.staging.yaml and keel.production.yaml, and exits 1 when they differ; "
        "tests/cli/test_config_diff_cmd.py runs it"
    ),
    "keel flags set agent.model_chain premium": (
        "needs the agent.model_chain flag and the premium chain of the README's example, which "
        "this stack's keel.yaml lacks; tests/integration/test_flags_live_sessions.py runs it "
        "under 100 live sessions"
    ),
    "keel rollback --release v2-20261201T1230 --code-only --json": (
        "needs a release of that name that keel rollout recorded (as above)"
    ),
}

# Commands that ask before acting: the reader answers yes.
CONFIRMED = ("keel snapshot restore",)

# What each command's output shows, beyond exit code 0 and some output (--json: valid JSON).
EXPECTED = {
    "keel chat": "agent> echo: ",
    "keel eval local-smoke": "local-smoke: ",
    "keel config show": "keel settings",
    "keel memory put": "stored memory",
    "keel memory search": "Prefers email",
    "keel memory integrity": "hash chain",
    "keel snapshot create": "snapshot taken",
    "keel snapshot verify": "verification of",
    "keel snapshot restore": "restored to seq",
    "keel memory quarantine list": "quarantine",
    "keel snapshot prune": "retention (dry run",
    "keel golden run": "local-smoke against ",
    "keel secrets rotate admin_token": "rotated to generation 2",
    "keel secrets status": "admin_token",
    "keel flags list": "guardrails.max_steps_per_turn",
    "keel flags show": "served for user ana of acme: 4 (variant strict",
    "keel flags validate": "valid: 1 flag",
}


@dataclass(frozen=True)
class ReadmeCommand:
    argv: tuple[str, ...]
    """The command as `keel ...`, whichever way the README spells the script."""
    stdin: str = ""
    """What the reader types (a console block's `you>` lines)."""

    @property
    def text(self) -> str:
        return shlex.join(self.argv)


def readme_commands(markdown: str) -> list[ReadmeCommand]:
    """`keel` commands of the ```sh and ```console blocks, in README order."""
    commands: list[ReadmeCommand] = []
    for language, body in re.findall(r"^```(\w*)\n(.*?)^```", markdown, re.M | re.S):
        if language not in ("sh", "console", "bash"):
            continue
        lines = body.replace("\\\n", " ").splitlines()
        for index, line in enumerate(lines):
            if language == "console":
                if not line.startswith("$ "):
                    continue
                line = line[2:]
            words = shlex.split(line, comments=True)
            if not words or words[0] not in KEEL:
                continue
            typed = []
            for following in lines[index + 1 :] if language == "console" else []:
                if following.startswith("$ "):
                    break
                if following.startswith("you> "):
                    typed.append(following.removeprefix("you> "))
            stdin = "".join(f"{text}\n" for text in typed)
            commands.append(ReadmeCommand(argv=("keel", *words[1:]), stdin=stdin))
    return commands


COMMANDS = readme_commands(README.read_text(encoding="utf-8"))


def test_the_readme_commands_are_found() -> None:
    """The extraction finds the tour's commands, and every exception is still in the README
    (an exception for a command that is gone would hide nothing but itself)."""
    texts = [command.text for command in COMMANDS]
    assert "keel snapshot create --kind deploy --label v42" in texts
    assert "keel memory integrity" in texts
    assert "keel chat" in texts
    assert set(EXCEPTIONS) <= set(texts), set(EXCEPTIONS) - set(texts)
    chat = next(command for command in COMMANDS if command.text == "keel chat")
    assert chat.stdin == "What is the capital of France?\nAnd of Italy?\n"


def run_keel(
    command: ReadmeCommand, *, cwd: Path, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    stdin = command.stdin or ("y\n" if command.text.startswith(CONFIRMED) else "")
    return subprocess.run(
        [sys.executable, "-m", "agentkeel.cli.main", *command.argv[1:]],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=COMMAND_TIMEOUT_S,
    )


def test_every_readme_command_works_right_after_keel_up(
    tmp_path: Path, start_keel_up: e2e.StartKeelUp
) -> None:
    """Each README `keel` command exits 0 with the output it promises, finding the stack's
    URLs and tokens through ./.keel (and KEEL_DATA_DIR), with no --url or --token-file;
    keel up marks its stack file stopped when it exits."""
    base_port = free_port_run(5)
    memory_port, tools_port, router_port = base_port + 2, base_port + 3, base_port + 4
    script = tmp_path / "script.yaml"
    script.write_text("on_end: echo\nsteps: []\n")
    keel = start_keel_up(
        f"""
models:
  - {{name: scripted, kind: scripted, script: {script}}}
memory:
  port: {memory_port}
tools:
  server:
    port: {tools_port}
router:
  port: {router_port}
up:
  base_port: {base_port}
  replicas: 2
""",
        "--no-local-model",
    )
    keel.wait_running()
    stack = json.loads((keel.data_dir / "stack.json").read_text())
    assert stack["state"] == "running", stack
    assert stack["services"]["memory"]["port"] == memory_port
    assert stack["services"]["replica-2"]["url"] == f"http://127.0.0.1:{base_port + 1}"
    # keel chat and keel eval below talk to the router.
    assert stack["router"]["url"] == f"http://127.0.0.1:{router_port}"

    # A project directory as after `make run`: the data directory is ./.keel.
    project = tmp_path / "project"
    project.mkdir()
    (project / ".keel").symlink_to(keel.data_dir, target_is_directory=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEEL_")} | {
        "COLUMNS": "200",
        "PYTHONUNBUFFERED": "1",
    }
    values: dict[str, str] = {}
    ran: list[str] = []
    for command in COMMANDS:
        if command.text in EXCEPTIONS:
            continue
        argv = tuple(_fill(word, values, command) for word in command.argv)
        filled = ReadmeCommand(argv=argv, stdin=command.stdin)
        result = run_keel(filled, cwd=project, env=env)
        report = f"{filled.text}\nstdout:\n{result.stdout[-3000:]}\nstderr:\n{result.stderr}"
        assert result.returncode == 0, f"{report}\n{keel.diagnostics()}"
        assert result.stdout.strip(), report
        expected = next((v for k, v in EXPECTED.items() if filled.text.startswith(k)), None)
        if "--json" in argv:
            json.loads(result.stdout)
        elif expected is not None:
            assert expected in result.stdout, report
        if filled.text.startswith("keel chat"):
            assert re.search(r"turn 1 · \d+ ms · \d+ in / \d+ out tokens", result.stdout), report
        if filled.text.startswith("keel snapshot create"):
            found = re.search(r"keel snapshot verify (snap-\S+)", result.stdout)
            assert found, report
            values["<id>"] = found.group(1)
        ran.append(filled.text)
    assert len(ran) == len(COMMANDS) - len(EXCEPTIONS)

    # KEEL_DATA_DIR finds the same stack from anywhere.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    integrity = run_keel(
        ReadmeCommand(argv=("keel", "memory", "integrity")),
        cwd=elsewhere,
        env=env | {"KEEL_DATA_DIR": str(keel.data_dir)},
    )
    assert integrity.returncode == 0, integrity.stderr
    assert "hash chain" in integrity.stdout

    assert keel.interrupt() == 0, keel.diagnostics()
    assert json.loads((keel.data_dir / "stack.json").read_text())["state"] == "stopped"


def _fill(word: str, values: dict[str, str], command: ReadmeCommand) -> str:
    """Replace a README placeholder (`<id>`) with the value an earlier command printed."""
    if re.fullmatch(r"<\w+>", word):
        assert word in values, f"{command.text}: nothing earlier in the README gives {word}"
        return values[word]
    return word


start_keel_up = e2e.start_keel_up

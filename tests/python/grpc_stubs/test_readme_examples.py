"""Every ``curl`` and ``grpcurl`` example of README.md, run against a live server.

The README's examples are extracted from its fenced code blocks, run as
written (with ``bash -o pipefail``, from the repository root) and their output
checked, so the README cannot drift from what the server does.

How examples are found:

* Only code blocks whose language is a shell (``sh``, ``bash``, ``shell``,
  ``zsh``) are parsed as commands.  A line of another block that starts with
  ``curl`` or ``grpcurl`` fails the test: such a block must be marked ``sh``.
* A command is one logical shell command: lines ending in ``\\``, lines ending
  in ``|``, ``&&`` or ``||``, and lines inside an open quote continue it, so a
  producer piped into a client (``python3 -c '...' | grpcurl -d @ ...``) is one
  command.  Comment lines between commands are not part of them.
* An example is a command with a pipeline stage that runs ``curl`` or
  ``grpcurl``; that client must be its last stage, since its output is what
  is checked.  The other commands (starting the server, running the tests,
  the bundled Rust client) are not run.
* The server is started with the flags of the README's own server command
  (the first shell command with ``--model_base_path``), on free ports.  In each
  example ``127.0.0.1:<port>`` and ``localhost:<port>`` are rewritten to the
  test server: the README's ``--port`` (default 8500) to its gRPC port, its
  ``--rest_api_port`` to its REST port.  An example that addresses neither
  fails.
* Fewer than ``MIN_EXAMPLES`` examples fail the test, so a reformatted README
  cannot silently turn it off.

What each example must print (decided by its client and what it calls):

* ``grpcurl ... list`` and ``describe``: grpcurl's text listing / description.
* any other ``grpcurl`` call: one JSON object; a ``Predict`` answer must have
  outputs whose value counts match their shapes (and the mnist model's
  ``probabilities`` rows of 10 probabilities summing to 1).
* ``curl`` of ``/monitoring/prometheus/metrics``: Prometheus text format,
  including ``:tensorflow:serving:request_count``.
* any other ``curl``: one JSON object without an ``"error"`` key; a
  ``:predict`` answer must hold ``predictions`` or ``outputs`` rows as above.

Examples that show an error: a comment line starting with ``# -> error``
right before the command (only other comment lines may come between) marks
it.  A marked REST example must answer JSON with an ``"error"`` key (``curl
-s`` still exits 0); a marked gRPC example must make grpcurl exit with its
RPC-failure status (64 + the gRPC code) and report the code.  Unmarked
examples must exit 0 and print something.
"""

from __future__ import annotations

import base64
import collections
import dataclasses
import json
import math
import os
import re
import shlex
import subprocess
import sysconfig

import digits
import numpy as np
import pytest
import serverproc
from prometheus_client.parser import text_string_to_metric_families
from test_grpcurl import find_grpcurl, json_field

README = serverproc.REPO_ROOT / "README.md"
# The README has 10 examples as of writing; far fewer means extraction broke.
MIN_EXAMPLES = 8
COMMAND_TIMEOUT_S = 30

SHELL_LANGUAGES = frozenset({"sh", "bash", "shell", "zsh"})
CLIENTS = frozenset({"curl", "grpcurl"})
# Shell operators that end one pipeline stage and start the next command word.
STAGE_SEPARATORS = frozenset({"|", "|&", "||", "&&", ";", "&"})
ERROR_MARK = re.compile(r"#\s*->\s*error\b", re.IGNORECASE)
# A client address in an example: the README's host and one of its ports.
README_ADDRESS = re.compile(r"\b(?:127\.0\.0\.1|localhost):(\d+)\b")
# grpcurl's target argument (host:port).
GRPC_TARGET = re.compile(r"^[\w.-]+:\d+$")
FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`]*)$")

DEFAULT_GRPC_PORT = 8500
METRICS_PATH = "/monitoring/prometheus/metrics"
REQUEST_COUNT_METRIC = ":tensorflow:serving:request_count"
PROBABILITIES_OUTPUT = "probabilities"
# grpcurl exits with 64 + the gRPC status code when the RPC fails.
GRPCURL_RPC_FAILURE_BASE = 64


# --- Extraction ---------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class CodeBlock:
    """A fenced code block: its language and its lines, numbered as in the file."""

    language: str
    lines: tuple[tuple[int, str], ...]


@dataclasses.dataclass(frozen=True)
class Command:
    """One logical shell command of a code block."""

    text: str  # as written: continuation lines, quotes and comments included
    line: int  # README line number where it starts
    expects_error: bool = False

    @property
    def stages(self) -> list[list[str]]:
        """The words of each pipeline stage (or ``&&``/``;``-joined command)."""
        # bash drops backslash-newline; shlex would keep the newline as a word.
        lexer = shlex.shlex(
            self.text.replace("\\\n", " "), posix=True, punctuation_chars=True
        )
        lexer.whitespace_split = True
        stages: list[list[str]] = [[]]
        for token in lexer:
            if token in STAGE_SEPARATORS:
                stages.append([])
            else:
                stages[-1].append(token)
        return [stage for stage in stages if stage]

    @property
    def client_stage(self) -> list[str] | None:
        """The words of the last stage that runs curl or grpcurl, if any."""
        clients = [stage for stage in self.stages if stage[0] in CLIENTS]
        return clients[-1] if clients else None


def code_blocks(markdown: str) -> list[CodeBlock]:
    """The fenced code blocks of a Markdown text.

    A block opens with three or more backticks or tildes followed by an
    optional info string (whose first word is the language) and closes with
    at least as many of the same character.  Content lines lose up to the
    opening fence's indentation.  An unclosed block is an error.
    """
    blocks = []
    lines = markdown.splitlines()
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        index += 1
        if opening is None:
            continue
        fence, indent = opening["fence"], len(opening["indent"])
        info = opening["info"].split()
        language = info[0].lower() if info else ""
        start = index
        content = []
        while True:
            if index >= len(lines):
                raise ValueError(f"README line {start}: code block never closed")
            line = lines[index]
            index += 1
            if re.fullmatch(rf"\s*{re.escape(fence[0])}{{{len(fence)},}}\s*", line):
                break
            # Remove at most the fence's own indentation.
            removable = len(line) - len(line.lstrip(" "))
            stripped = line[min(indent, removable) :]
            content.append((index, stripped))
        blocks.append(CodeBlock(language=language, lines=tuple(content)))
    return blocks


def _is_complete(lines: list[str]) -> bool:
    """Whether the lines form a whole shell command (no continuation pending)."""
    last = lines[-1].rstrip()
    if lines[-1].endswith("\\") or last.endswith(("|", "&&", "||")):
        return False
    try:
        # Raises on an open quote or a trailing escape.
        shlex.split("\n".join(lines), comments=True)
    except ValueError:
        return False
    return True


def block_commands(block: CodeBlock) -> list[Command]:
    """The logical commands of a shell code block, in order."""
    commands = []
    pending: list[str] = []
    pending_line = 0
    error_marked = False
    for number, line in block.lines:
        if not pending:
            stripped = line.strip()
            if not stripped:
                error_marked = False  # a mark applies only to the next command
                continue
            if stripped.startswith("#"):
                error_marked = error_marked or bool(ERROR_MARK.match(stripped))
                continue
            pending_line = number
        pending.append(line)
        if _is_complete(pending):
            commands.append(
                Command(
                    text="\n".join(pending),
                    line=pending_line,
                    expects_error=error_marked,
                )
            )
            pending = []
            error_marked = False
    if pending:
        raise ValueError(
            f"README line {pending_line}: command continues past the end of its "
            "code block (open quote or trailing \\ or |)"
        )
    return commands


def shell_commands(markdown: str) -> list[Command]:
    """All commands of the shell code blocks of a Markdown text.

    Fails on a line that starts with a client in a block of another language,
    which would otherwise go unchecked.
    """
    commands = []
    for block in code_blocks(markdown):
        if block.language in SHELL_LANGUAGES:
            commands += block_commands(block)
            continue
        for number, line in block.lines:
            words = line.split()
            if words and words[0] in CLIENTS:
                raise ValueError(
                    f"README line {number}: {words[0]} command in a "
                    f"{block.language or 'unlabelled'} code block; label the block "
                    "```sh so that it is tested"
                )
    return commands


def examples(commands: list[Command]) -> list[Command]:
    """The commands that call the server through curl or grpcurl.

    The client must be the last stage, so that what it prints is what the
    test checks.
    """
    found = []
    for command in commands:
        stage = command.client_stage
        if stage is None:
            continue
        if command.stages[-1][0] not in CLIENTS:
            raise ValueError(
                f"README line {command.line}: {stage[0]} is piped into another "
                "command; the tested examples end with the client"
            )
        found.append(command)
    return found


@dataclasses.dataclass(frozen=True)
class ServerSpec:
    """The README's server command: the flags to reuse and its ports."""

    flags: tuple[str, ...]  # without the port flags
    grpc_port: int
    rest_port: int


def server_spec(commands: list[Command]) -> ServerSpec:
    """Flags and ports of the README's server command.

    That is the first command with ``--model_base_path``; its flags are the
    words after ``--`` (``cargo run ... -- FLAGS``) or after the program.
    ``--port`` and ``--rest_api_port`` are taken out (the test picks free
    ports) and remembered, so examples can be pointed at the test server.
    """
    for command in commands:
        words = [word for stage in command.stages for word in stage]
        if not any(word.startswith("--model_base_path") for word in words):
            continue
        flags = words[words.index("--") + 1 :] if "--" in words else words[1:]
        ports = {"--port": DEFAULT_GRPC_PORT, "--rest_api_port": None}
        kept = []
        words_left = iter(flags)
        for word in words_left:
            name, equals, value = word.partition("=")
            if name in ports:
                ports[name] = int(value if equals else next(words_left))
            else:
                kept.append(word)
        if not ports["--rest_api_port"]:
            raise ValueError(
                f"README line {command.line}: the server command does not turn on "
                "the REST API (--rest_api_port), which the curl examples need"
            )
        return ServerSpec(tuple(kept), ports["--port"], ports["--rest_api_port"])
    raise ValueError("README has no server command with --model_base_path")


# --- What an example is -------------------------------------------------------


def grpcurl_call(stage: list[str]) -> list[str]:
    """The words after grpcurl's host:port target (verb or method, then args)."""
    for position, word in enumerate(stage[1:], start=1):
        if GRPC_TARGET.match(word):
            return stage[position + 1 :]
    raise ValueError(f"no host:port target in {shlex.join(stage)}")


def curl_request(stage: list[str]) -> tuple[str, str]:
    """The HTTP method and URL path of a curl stage."""
    urls = [word for word in stage if word.startswith(("http://", "https://"))]
    if len(urls) != 1:
        raise ValueError(f"expected one URL in {shlex.join(stage)}, found {urls}")
    method = "GET"
    for position, word in enumerate(stage):
        if word in ("-X", "--request"):
            method = stage[position + 1]
        elif word.startswith(("-d", "--data", "--json")) and method == "GET":
            method = "POST"
    path = re.sub(r"^https?://[^/]+", "", urls[0]) or "/"
    return method.upper(), path


def example_id(command: Command) -> str:
    """A short name: producers, client, and what it calls."""
    producers = [stage[0] for stage in command.stages if stage[0] not in CLIENTS]
    stage = command.client_stage
    if stage[0] == "grpcurl":
        call = " ".join(grpcurl_call(stage)[:2])
    else:
        call = " ".join(curl_request(stage))
    return " | ".join([*producers, f"{stage[0]} {call}"])


def unique_ids(names: list[str]) -> list[str]:
    """The names, with ``#2``, ``#3`` ... appended to repeats."""
    seen: collections.Counter[str] = collections.Counter()
    ids = []
    for name in names:
        seen[name] += 1
        ids.append(name if seen[name] == 1 else f"{name} #{seen[name]}")
    return ids


# Read at import: a README the extraction cannot handle fails collection.
_README_COMMANDS = shell_commands(README.read_text(encoding="utf-8"))
EXAMPLES = examples(_README_COMMANDS)
SERVER_SPEC = server_spec(_README_COMMANDS)


# --- Output checks ------------------------------------------------------------


def check_probability_rows(rows, where: str) -> None:
    """Rows of the mnist model's softmax: 10 probabilities summing to 1."""
    assert isinstance(rows, list) and rows, f"{where}: no rows in {rows!r}"
    for row in rows:
        assert isinstance(row, list) and len(row) == digits.NUM_CLASSES, (
            f"{where}: expected {digits.NUM_CLASSES} values per row, got {row!r}"
        )
        assert all(isinstance(value, (int, float)) for value in row), row
        assert all(0.0 <= value <= 1.0 for value in row), row
        assert math.isclose(sum(row), 1.0, abs_tol=1e-3), f"{where}: sum {sum(row)}"


def check_grpc_predict(answer: dict) -> None:
    """Each output holds as many values as its shape says."""
    outputs = answer.get("outputs")
    assert isinstance(outputs, dict) and outputs, f"no outputs in {answer}"
    for alias, tensor in outputs.items():
        dims = [int(dim["size"]) for dim in json_field(tensor, "tensor_shape")["dim"]]
        content = json_field(tensor, "tensor_content", default=None)
        if content is not None:
            assert tensor["dtype"] == "DT_FLOAT", f"{alias}: cannot unpack {tensor}"
            values = np.frombuffer(base64.b64decode(content), dtype="<f4").tolist()
        else:
            values = json_field(tensor, "float_val", default=None)
            assert values is not None, f"{alias}: no float values in {tensor}"
        assert len(values) == math.prod(dims), (
            f"{alias}: {len(values)} values, shape {dims}"
        )
        if alias == PROBABILITIES_OUTPUT:
            rows = [values[i : i + dims[-1]] for i in range(0, len(values), dims[-1])]
            check_probability_rows(rows, f"output {alias}")


def check_rest_predict(answer: dict) -> None:
    """Row form (``predictions``) or columnar form (``outputs``) of the mnist model."""
    if "predictions" in answer:
        rows = answer["predictions"]
        assert isinstance(rows, list) and rows, f"empty predictions in {answer}"
        # One output gives its value per row; several give a dict per row.
        rows = [
            row[PROBABILITIES_OUTPUT] if isinstance(row, dict) else row for row in rows
        ]
    else:
        assert "outputs" in answer, f"neither predictions nor outputs in {answer}"
        rows = answer["outputs"]
        if isinstance(rows, dict):
            rows = rows[PROBABILITIES_OUTPUT]
    check_probability_rows(rows, "predict answer")


def parse_json_object(stdout: str) -> dict:
    try:
        answer = json.loads(stdout)
    except json.JSONDecodeError as err:
        pytest.fail(f"output is not JSON ({err}):\n{stdout}")
    assert isinstance(answer, dict), f"expected a JSON object, got:\n{stdout}"
    return answer


def check_grpcurl_output(
    stage: list[str], result: subprocess.CompletedProcess, expects_error: bool
) -> None:
    call = grpcurl_call(stage)
    if expects_error:
        code = result.returncode - GRPCURL_RPC_FAILURE_BASE
        assert 1 <= code <= 16, (
            f"expected grpcurl to fail with an RPC status, got exit status "
            f"{result.returncode}:\n{result.stderr}{result.stdout}"
        )
        # Printed as "Code: NotFound" on stderr, or {"code": 5, ...} with -format-error.
        assert "Code:" in result.stderr or '"code"' in result.stdout, result.stderr
        return
    assert result.stdout.strip(), "empty output"
    verb = call[0] if call else ""
    if verb == "list":
        names = result.stdout.split()
        for name in names:
            assert re.fullmatch(r"[A-Za-z_][\w.]*", name), f"not a symbol: {name!r}"
    elif verb == "describe":
        first_line = result.stdout.splitlines()[0]
        assert re.fullmatch(r"[\w.]+ is an? [\w ]+:", first_line), first_line
        if len(call) > 1:
            assert first_line.startswith(f"{call[1]} "), first_line
    else:
        answer = parse_json_object(result.stdout)
        if verb.endswith("/Predict"):
            check_grpc_predict(answer)


def check_curl_output(
    stage: list[str], result: subprocess.CompletedProcess, expects_error: bool
) -> None:
    _, path = curl_request(stage)
    assert result.stdout.strip(), "empty output"
    if path.split("?")[0] == METRICS_PATH:
        families = {
            family.name for family in text_string_to_metric_families(result.stdout)
        }
        assert REQUEST_COUNT_METRIC in families, sorted(families)
        return
    answer = parse_json_object(result.stdout)
    if expects_error:
        assert isinstance(answer.get("error"), str), f"expected an error, got {answer}"
        return
    assert "error" not in answer, f"error answer: {answer}"
    if path.endswith(":predict"):
        check_rest_predict(answer)


# --- Running --------------------------------------------------------------------


@pytest.fixture(scope="module")
def readme_server():
    """One server with the README's flags; yields README port -> test port."""
    with serverproc.running_server(
        "readme", SERVER_SPEC.flags, rest_api=True
    ) as server:
        yield {
            SERVER_SPEC.grpc_port: int(server.address.rsplit(":", 1)[1]),
            SERVER_SPEC.rest_port: int(server.rest_address.rsplit(":", 1)[1]),
        }


@pytest.fixture(scope="module")
def command_env():
    """The environment examples run in: grpcurl and the venv's python3 first on PATH."""
    scripts = sysconfig.get_path("scripts")
    assert os.access(os.path.join(scripts, "python3"), os.X_OK), (
        f"no python3 in {scripts}"
    )
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join(
        [str(find_grpcurl().parent), scripts, env.get("PATH", os.defpath)]
    )
    # A proxy configured in the environment must not see the loopback calls.
    for name in ("no_proxy", "NO_PROXY"):
        env[name] = ",".join(filter(None, [env.get(name), "127.0.0.1", "localhost"]))
    return env


def point_at(command: Command, ports: dict[int, int]) -> str:
    """The command with its README addresses replaced by the test server's."""

    def replace(match: re.Match) -> str:
        port = int(match[1])
        if port not in ports:
            pytest.fail(
                f"README line {command.line}: port {port} is neither the server "
                f"command's gRPC ({SERVER_SPEC.grpc_port}) nor REST "
                f"({SERVER_SPEC.rest_port}) port"
            )
        return f"127.0.0.1:{ports[port]}"

    text, count = README_ADDRESS.subn(replace, command.text)
    assert count, (
        f"README line {command.line}: example addresses no 127.0.0.1/localhost port"
    )
    return text


def test_readme_examples_are_found():
    assert len(EXAMPLES) >= MIN_EXAMPLES, (
        f"only {len(EXAMPLES)} curl/grpcurl examples found in README.md "
        f"(expected at least {MIN_EXAMPLES}); did its code blocks change format?"
    )
    clients = {command.client_stage[0] for command in EXAMPLES}
    assert clients == CLIENTS, f"examples found only for {clients}"


@pytest.mark.parametrize(
    "example", EXAMPLES, ids=unique_ids([example_id(command) for command in EXAMPLES])
)
def test_readme_example(example: Command, readme_server, command_env):
    script = point_at(example, readme_server)
    result = subprocess.run(
        ["bash", "-o", "pipefail", "-c", script],
        cwd=serverproc.REPO_ROOT,
        env=command_env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
        check=False,
    )
    where = f"README line {example.line}:\n{example.text}\n"
    stage = example.client_stage
    expects_grpc_failure = example.expects_error and stage[0] == "grpcurl"
    if not expects_grpc_failure:
        assert result.returncode == 0, (
            f"{where}exited with status {result.returncode}:\n{result.stderr}{result.stdout}"
        )
    try:
        if stage[0] == "grpcurl":
            check_grpcurl_output(stage, result, example.expects_error)
        else:
            check_curl_output(stage, result, example.expects_error)
    except AssertionError as err:
        raise AssertionError(f"{where}{err}\nstderr:\n{result.stderr}") from None


# --- The extraction itself ------------------------------------------------------

SAMPLE_README = """\
Set up:

```sh
cargo run --release -- --model_name=m --model_base_path=models/m --rest_api_port=9001
```

```sh
# A comment; it's not a command.
grpcurl -plaintext localhost:8500 list
grpcurl -plaintext -d '{"a": 1}' \\
  127.0.0.1:8500 pkg.Service/Method
python3 -c 'print(
  "multi-line")' \\
  | curl -s -X POST --data-binary @- http://127.0.0.1:9001/v1/models/m:predict
# -> error
# (the model does not exist)
curl -s http://127.0.0.1:9001/v1/models/none

echo '{}' &&
  curl -s http://127.0.0.1:9001/v1/models/m
```

```python
print("curl http://example.com is not a shell command here")
```
"""


def test_extraction_joins_continuations_pipes_and_quotes():
    commands = shell_commands(SAMPLE_README)
    found = examples(commands)

    assert [example_id(command) for command in found] == [
        "grpcurl list",
        "grpcurl pkg.Service/Method",
        "python3 | curl POST /v1/models/m:predict",
        "curl GET /v1/models/none",
        "echo | curl GET /v1/models/m",
    ]
    assert [command.expects_error for command in found] == [
        False,
        False,
        False,
        True,
        False,
    ]
    assert found[2].text.count("\n") == 2 and found[2].line == 12
    assert server_spec(commands) == ServerSpec(
        flags=("--model_name=m", "--model_base_path=models/m"),
        grpc_port=8500,
        rest_port=9001,
    )


def test_extraction_refuses_unlabelled_client_commands_and_open_commands():
    with pytest.raises(ValueError, match="label the block"):
        shell_commands("```\ncurl -s http://127.0.0.1:8501/v1/models/m\n```\n")
    with pytest.raises(ValueError, match="past the end"):
        shell_commands("```sh\ncurl -s 'http://127.0.0.1:8501/\n```\n")
    with pytest.raises(ValueError, match="never closed"):
        shell_commands("```sh\ncurl -s http://127.0.0.1:8501/\n")
    with pytest.raises(ValueError, match="piped into another command"):
        examples(shell_commands("```sh\ncurl -s http://127.0.0.1:8501/ | jq .\n```\n"))

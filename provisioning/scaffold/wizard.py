"""``converge init``: ask for a driver URL, then each of its fields in order, and write a cluster file.

Every answer is checked the moment it is given (type, the warehouse's choices), so a person at a
terminal is asked again, and an ``--answers`` file fails at the step that is wrong, naming the key
and the choices. Secret fields go to the config's ``credentials`` (``provisioning.yml``, mode
0600), never into the cluster file. The questions come from the driver's ``OptionField``s: the
same declarations that validation and ``describe()`` read (va_master's driver "steps").
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import field
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from provisioning.config import load_yaml_file
from provisioning.driver.options import OptionField, format_choices
from provisioning.errors import ConfigError, ProvisioningError
from provisioning.inputs.records import record
from provisioning.inputs.schema import closest
from provisioning.inputs.url import parse_driver_url
from provisioning.registry import driver_class, driver_for_url, known_schemes

if TYPE_CHECKING:  # pragma: no cover
    from provisioning.config import Config
    from provisioning.driver import Driver

__all__ = ["Question", "InitResult", "AnswerSource", "FileAnswers", "TerminalAnswers",
           "InitWizard", "render_cluster_file", "write_credentials", "write_init_outputs",
           "load_answers", "DEFAULT_MACHINE"]

DEFAULT_MACHINE = "web"
_MACHINE_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
#: an answer that was not given (use the default, or leave the option out)
MISSING: Any = type("Missing", (), {"__repr__": lambda self: "MISSING"})()
#: keys an answers file may hold at the top level
ANSWER_KEYS = ("driver", "driver_options", "machine", "count", "machine_options")


@record(frozen=True)
class Question:
    """One step of the wizard: ``key`` is where its answer lives in an answers file."""

    key: str
    label: str
    field: OptionField
    choices: tuple[Any, ...] | None = None
    #: extra check after type and choices: returns a message when the value is wrong
    extra_check: Callable[[Any], str | None] | None = None

    @property
    def secret(self) -> bool:
        return self.field.secret


@record(frozen=True)
class InitResult:
    """The answers, checked: what ``render_cluster_file`` and ``write_credentials`` write."""

    driver_url: str
    canonical_url: str
    driver_fields: tuple[OptionField, ...]
    driver_options: Mapping[str, Any]
    credentials: Mapping[str, Any]
    machine: str
    count: int
    machine_fields: tuple[OptionField, ...]
    machine_options: Mapping[str, Any]
    choices: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)


class AnswerSource:
    """Where answers come from: a person at a terminal, or an answers file. The defaults suit a
    person: nothing to name in errors, no answers given ahead of the questions."""

    #: a wrong answer is asked again (True) or is an error at once (False)
    interactive: bool = False
    #: the answers file, named in errors (None: answers typed at a terminal)
    file: str | None = None

    def ask(self, question: Question, step: int) -> Any:
        """The raw answer (text, or a typed value from a file), or MISSING."""
        raise NotImplementedError

    def tell(self, text: str) -> None:
        """Show a line to the person (errors at a step, notes)."""

    def unused(self) -> list[str]:
        """Answers given that no question asked for (typos), as dotted paths."""
        return []

    def asked(self) -> list[str]:
        """The keys of the questions asked so far."""
        return []


# -- answer sources -------------------------------------------------------------------------------
def load_answers(path: str) -> dict[str, Any]:
    """An answers file (YAML or JSON: JSON is YAML) as a mapping; ConfigError naming the file."""
    data = load_yaml_file(path)
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ConfigError("an answers file is a mapping: driver, driver_options, machine, count, "
                          "machine_options", file=path)
    return dict(data)


class FileAnswers(AnswerSource):
    """Answers from a mapping (an ``--answers`` file). A wrong answer is a ConfigError at once."""

    interactive = False

    def __init__(self, answers: Mapping[str, Any], *, file: str | None = None) -> None:
        self.answers = answers
        self.file = file
        self.used: set[str] = set()
        self.notes: list[str] = []

    def ask(self, question: Question, step: int) -> Any:
        self.used.add(question.key)
        if question.key in self.answers:            # flat: "machine_options.size: medium"
            return self.answers[question.key]
        node: Any = self.answers
        for part in question.key.split("."):
            if not isinstance(node, Mapping) or part not in node:
                return MISSING
            node = node[part]
        return node

    def tell(self, text: str) -> None:
        self.notes.append(text)

    def unused(self) -> list[str]:
        """Answer keys that no question asked for (typos), as dotted paths."""
        leaves: list[str] = []

        def walk(node: Mapping[str, Any], prefix: str) -> None:
            for key, value in node.items():
                path = f"{prefix}{key}"
                if isinstance(value, Mapping) and value:
                    walk(value, path + ".")
                else:
                    leaves.append(path)

        def asked(path: str) -> bool:
            return path in ANSWER_KEYS or any(path == u or path.startswith(u + ".")
                                              for u in self.used)
        walk(self.answers, "")
        return [path for path in leaves if not asked(path)]

    def asked(self) -> list[str]:
        return sorted(self.used)


class TerminalAnswers(AnswerSource):
    """Asks a person through click prompts (secrets hidden); a wrong answer is asked again."""

    interactive = True

    def __init__(self, total_hint: str = "") -> None:
        self.total_hint = total_hint

    def ask(self, question: Question, step: int) -> Any:
        import click

        item = question.field
        click.echo("")
        click.secho(f"[{step}] {question.label}", bold=True)
        if item.help:
            click.echo(f"    {item.help}")
        if question.choices is not None:
            click.echo(f"    choices: {format_choices(question.choices, limit=30)}")
        default = item.default
        shown = "" if default is None else (default if isinstance(default, str)
                                            else json.dumps(default))
        suffix = "" if item.required or default is not None or question.secret else \
            " (Enter to skip)"
        text = click.prompt(f"  {question.key}{suffix}", default=shown, show_default=bool(shown),
                            hide_input=question.secret, type=str)
        return MISSING if text == "" else text

    def tell(self, text: str) -> None:
        import click

        click.secho(text, fg="red", err=False)


# -- the wizard -----------------------------------------------------------------------------------
def _check_machine_name(value: Any) -> str | None:
    if not _MACHINE_NAME.match(str(value)):
        return ("a machine name is lower-case letters, digits and '-' (for example 'web'); "
                f"got {value!r}")
    return None


def _check_count(value: Any) -> str | None:
    return None if value >= 1 else f"expected a count of 1 or more, got {value}"


class InitWizard:
    """Runs the questions against one answer source and returns a checked ``InitResult``."""

    def __init__(self, source: AnswerSource, config: "Config", *,
                 default_driver: str | None = None) -> None:
        self.source = source
        self.config = config
        self.default_driver = default_driver or _default_driver()
        self.step = 0

    # -- one question --------------------------------------------------------------------------
    def ask(self, question: Question) -> Any:
        """Ask until the answer is valid (terminal) or fail at this step (answers file)."""
        self.step += 1
        while True:
            raw = self.source.ask(question, self.step)
            try:
                return self.accept(question, raw)
            except ValueError as exc:
                if not self.source.interactive:
                    raise ConfigError(f"step {self.step} ({question.label}): {exc}",
                                      file=self.source.file,
                                      key=question.key) from None
                self.source.tell(f"    {exc}; try again")

    @staticmethod
    def accept(question: Question, raw: Any) -> Any:
        """The answer as a typed, valid value (MISSING: leave the option out). ValueError
        says what is wrong and, where there are choices, lists them."""
        item = question.field
        if raw is MISSING or raw is None or (isinstance(raw, str) and not raw.strip()):
            if item.default is None:
                if item.required:
                    raise ValueError("an answer is required"
                                     + (f": {item.help}" if item.help else ""))
                return MISSING
            message = question.extra_check(item.default) if question.extra_check else None
            if message:
                raise ValueError(message)
            return item.default
        value = item.parse(raw)
        if question.choices is not None and value not in question.choices:
            raise ValueError(f"unknown {item.choices_label} {value!r}; choices: "
                             f"{format_choices(question.choices)}")
        message = item.check(value)
        if message is None and question.extra_check is not None:
            message = question.extra_check(value)
        if message:
            raise ValueError(message)
        return value

    # -- all of them ---------------------------------------------------------------------------
    def run(self) -> InitResult:
        resolved: dict[str, Any] = {}

        def check_url(value: Any) -> str | None:
            try:
                parsed = parse_driver_url(value)
                cls = driver_class(parsed.scheme)
                resolved["canonical"] = cls.canonicalize_url(str(parsed), self.config)
                resolved["cls"] = cls
            except ImportError as exc:
                return (f"the {value!r} driver needs a package that is not installed "
                        f"({exc.name or exc})")
            except ConfigError as exc:
                return "; ".join(problem.message for problem in exc.problems)
            except ProvisioningError as exc:
                return str(exc)
            return None

        url_field = OptionField("driver", default=self.default_driver, required=True,
                                help="where machines come from: a driver URL, scheme:rest "
                                     f"(known schemes: {', '.join(known_schemes())})")
        driver_url = self.ask(Question("driver", "driver URL", url_field, extra_check=check_url))
        cls, canonical = resolved["cls"], resolved["canonical"]

        driver_fields = tuple(cls.driver_option_fields)
        driver_options: dict[str, Any] = {}
        secrets: dict[str, Any] = {}
        for item in driver_fields:
            value = self.ask(Question(f"driver_options.{item.name}", f"driver option {item.name}",
                                      item, _static(item)))
            if value is not MISSING:
                _put(secrets if item.secret else driver_options, item.name, value)

        config = self.config.with_data({"driver_options": {canonical: driver_options},
                                        "credentials": {canonical: secrets}})
        driver = self._build(driver_for_url, canonical, config)
        listed = self._listed(driver)

        machine = self.ask(Question("machine", "machine name", OptionField(
            "machine", default=DEFAULT_MACHINE, required=True,
            help="a name for this group of machines (count 3 makes NAME-1..NAME-3)"),
            extra_check=_check_machine_name))
        count = self.ask(Question("count", "how many machines", OptionField(
            "count", type="int", default=1, required=True, help="machines in this group"),
            extra_check=_check_count))

        machine_fields = tuple(driver.machine_option_fields)
        machine_options: dict[str, Any] = {}
        choices: dict[str, tuple[Any, ...]] = {}
        for item in machine_fields:
            allowed = self._choices(driver, item, listed)
            if allowed is not None:
                choices[item.name] = allowed
            value = self.ask(Question(f"machine_options.{item.name}", f"machine option {item.name}",
                                      item, allowed))
            if value is not MISSING and value != item.default:
                _put(machine_options, item.name, value)
        problems = driver.validate_machine_options(machine_options, where="machine_options",
                                                   file=self.source.file)
        if problems:
            raise ConfigError(problems=problems)
        self._reject_unused()
        return InitResult(driver_url=str(parse_driver_url(driver_url)), canonical_url=canonical,
                          driver_fields=driver_fields,
                          driver_options={k: v for k, v in driver_options.items()},
                          credentials=secrets, machine=machine, count=count,
                          machine_fields=machine_fields, machine_options=machine_options,
                          choices=choices)

    def _build(self, driver_for_url, url: str, config: "Config") -> "Driver":
        try:
            return driver_for_url(url, config)
        except ImportError as exc:
            raise ConfigError(f"the driver for {url!r} needs a package that is not installed "
                              f"({exc.name or exc})", key="driver") from exc

    def _listed(self, driver: "Driver") -> Mapping[str, Sequence[Any]]:
        """The warehouse's lists (sizes, images, ...) once; a failure is told, not fatal."""
        try:
            return driver.list_choices()
        except ProvisioningError as exc:
            self.source.tell(f"could not list the warehouse's choices ({exc}); any value of the "
                             "right type is accepted")
            return {}

    def _choices(self, driver: "Driver", item: OptionField,
                 listed: Mapping[str, Sequence[Any]]) -> tuple[Any, ...] | None:
        try:
            found = driver.choices_for(item, listed)
        except ProvisioningError as exc:
            self.source.tell(f"could not list choices for {item.name} ({exc})")
            return None
        return tuple(found) if found else None

    def _reject_unused(self) -> None:
        leftover = self.source.unused()
        if leftover:
            asked = self.source.asked()
            problems = []
            for key in leftover:
                close = closest(key, asked)
                hint = f"; did you mean {close[0]!r}?" if close else \
                    f"; the questions are: {', '.join(asked)}"
                problems.append(f"no question asks for {key!r}{hint}")
            raise ConfigError("; ".join(problems), file=self.source.file,
                              key=leftover[0])


def _static(item: OptionField) -> tuple[Any, ...] | None:
    return tuple(item.choices) if item.choices is not None else None


def _put(target: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``a.b.c`` in nested dicts."""
    parts = dotted.split(".")
    for part in parts[:-1]:
        target = target.setdefault(part, {})
    target[parts[-1]] = value


def _default_driver() -> str:
    """The embedded default: ``nspawn:`` when this host can run it, else ``fake:``."""
    import shutil

    return "nspawn:" if os.geteuid() == 0 and shutil.which("systemd-nspawn") else "fake:"


# -- output ---------------------------------------------------------------------------------------
def _value(value: Any) -> str:
    """A YAML value on one line (JSON is YAML, and quotes what YAML would misread)."""
    return json.dumps(value, ensure_ascii=False)


def _comment(item: OptionField, choices: Sequence[Any] | None) -> str:
    parts = [item.help or item.type]
    if choices:
        parts.append(f"choices: {format_choices(choices, limit=12)}")
    if item.default is not None:
        parts.append(f"default: {_value(item.default)}")
    return "; ".join(parts)


def _option_lines(fields: Sequence[OptionField], values: Mapping[str, Any],
                  choices: Mapping[str, Sequence[Any]], indent: str) -> list[str]:
    """One commented line per top-level option: set ones as values, the rest commented out."""
    lines: list[str] = []
    seen: set[str] = set()
    for item in fields:
        top = item.name.split(".")[0]
        if top in seen or item.secret:
            continue
        seen.add(top)
        lines.append(f"{indent}# {_comment(item, choices.get(item.name))}")
        if top in values:
            lines.append(f"{indent}{top}: {_value(values[top])}")
        else:
            shown = item.default if "." not in item.name else None
            lines.append(f"{indent}# {top}: {_value(shown) if shown is not None else ''}".rstrip())
    return lines


def _named(result: InitResult) -> str:
    """`` (named web-1 .. web-3)`` for a group of more than one machine."""
    if result.count <= 1:
        return ""
    return f" (named {result.machine}-1 .. {result.machine}-{result.count})"


def render_cluster_file(result: InitResult, *, credentials_file: str | None = None) -> str:
    """A commented cluster file for ``result``. It never contains a secret value."""
    lines = [
        "# Cluster file written by `converge init`. Edit freely, then:",
        "#   converge up --why-run    (the plan: what would be created or changed)",
        "#   converge up              (create, ready and converge the machines)",
        "",
        "# Where machines come from (a driver URL; `converge drivers describe URL` lists its",
        "# options and the warehouse's choices).",
        f"driver: {_value(result.driver_url)}",
    ]
    secret_names = [f.name for f in result.driver_fields if f.secret]
    if result.driver_fields:
        lines += ["", "# Options of that driver."]
        if secret_names:
            where = credentials_file or "the config file"
            lines.append(f"# Secrets ({', '.join(secret_names)}) are kept in {where} under "
                         "`credentials:`, not here.")
        body = _option_lines(result.driver_fields, result.driver_options, {}, "    ")
        head = ["driver_options:", f"  {_value(result.driver_url)}:"]
        if result.driver_options:
            lines += head + body
        elif body:
            lines += [f"# {line}" for line in head] + body
    lines += [
        "",
        "machines:",
        f"  {result.machine}:",
        f"    # machines in this group{_named(result)}",
        f"    count: {result.count}",
    ]
    body = _option_lines(result.machine_fields, result.machine_options, result.choices, "      ")
    if result.machine_options:
        lines += ["    machine_options:"] + body
    elif body:
        lines += ["    # machine_options:"] + body
    lines += [
        "    # steps that converge each machine, in order (file, directory, command, script):",
        "    # converge:",
        "    #   - command: {run: \"echo hello > hello.txt\", creates: hello.txt}",
    ]
    text = "\n".join(lines) + "\n"
    for value in _flatten(result.credentials):  # belt and braces: a secret never lands here
        if isinstance(value, str) and value and value in text:
            raise ProvisioningError("refusing to write a cluster file that contains a secret; "
                                    "this is a bug in converge init")
    return text


def _flatten(value: Any) -> list[Any]:
    if isinstance(value, Mapping):
        return [leaf for item in value.values() for leaf in _flatten(item)]
    if isinstance(value, list):
        return [leaf for item in value for leaf in _flatten(item)]
    return [value]


def _write_private(path: str, text: str, *, mode: int = 0o600, replace: bool = True) -> None:
    """Write atomically (temp file, then rename) with ``mode`` from the start."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".converge-init-", dir=directory)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        if replace:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # fails if path exists: never overwrite
            os.unlink(tmp)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_credentials(path: str, url: str, secrets: Mapping[str, Any]) -> None:
    """Merge ``secrets`` into ``credentials[url]`` of the config file at ``path`` (mode 0600)."""
    import yaml

    data: Any = load_yaml_file(path) if os.path.exists(path) else {}
    data = data or {}
    if not isinstance(data, dict):
        raise ConfigError("a config file must be a mapping of settings", file=path)
    table = data.setdefault("credentials", {})
    if not isinstance(table, dict):
        raise ConfigError("credentials must be a mapping of driver URL to secrets", file=path,
                          key="credentials")
    entry = table.setdefault(url, {})
    entry.update(secrets)
    text = "# provisioning config: settings and credentials (keep this file private)\n" + \
        yaml.safe_dump(data, sort_keys=False, default_flow_style=False)
    _write_private(path, text, mode=0o600)


def write_init_outputs(result: InitResult, cluster_path: str, config_path: str, *,
                       force: bool = False) -> list[str]:
    """Write the cluster file (refusing to replace one unless ``force``) and, when there are
    secrets, the credentials. Returns the paths written."""
    if os.path.exists(cluster_path) and not force:
        raise ConfigError(f"{cluster_path} already exists; pass --force to replace it, or "
                          "-f OTHER.yml to write another file", file=cluster_path)
    written = []
    text = render_cluster_file(result, credentials_file=os.path.basename(config_path)
                               if result.credentials else None)
    if result.credentials:
        write_credentials(config_path, result.canonical_url, result.credentials)
        written.append(config_path)
    _write_private(cluster_path, text, mode=0o644, replace=True)
    written.insert(0, cluster_path)
    return written

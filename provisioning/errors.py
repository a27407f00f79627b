"""The one error hierarchy of provisioning.

Branches are split by who must act::

    ProvisioningError                 root: catch this to catch everything we raise
    +-- ConfigError                   the user's input (file, key path, option) is wrong
    |   +-- InvalidDriverURL          a driver URL does not parse or is not canonicalizable
    |   +-- DriverNotFound            no driver is registered for a scheme
    |   +-- MissingExtra              a driver needs an optional dependency that is not installed
    |   +-- ClusterConflict           a machine of this file belongs to another cluster in the state
    |   +-- StalePlan                 a saved plan no longer matches the cluster file or the state
    +-- MachineNotFound               no state entry (or no provider resource) for a machine
    +-- StateError                    the state store cannot do what was asked
    |   +-- StateLocked               another runner holds the machine's lock (names the holder)
    |   +-- StateConflict             someone else saved the entry since we read it
    +-- TransportError                reaching a machine failed (has .host)
    |   +-- ConnectError              transient: not reachable (yet); worth retrying
    |   +-- AuthenticationError       the credentials were refused; retrying will not help
    |   +-- HostKeyMismatch           the host presented another key than the pinned one
    |   +-- CommandTimeout            a command ran past its timeout (has .command, .timeout)
    |   +-- TransferError             a file transfer failed or its checksum differs
    +-- CommandFailed                 a command exited non-zero (has .result, .exit_status)
    +-- ConvergenceFailed             a strategy's tool (ansible) failed (has .output)
    +-- VerifyFailed                  a machine's verify tests failed (has .output)
    +-- ProviderError                 the warehouse (cloud API, nspawn, ...) refused (has .provider)
    +-- UnsupportedOperation          the driver cannot do this (declared by a capability flag)

Every error carries a one-line message that says what was wrong and how to fix it; structured
fields let programs react without parsing text.

``CommandResult`` lives here too, at the bottom of the layers: transports return it and
``CommandFailed`` carries it, so neither has to import the other's layer.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

from provisioning.inputs.records import record

__all__ = [
    "CommandResult",
    "ProvisioningError",
    "error_message",
    "ConfigError",
    "ConfigProblem",
    "InvalidDriverURL",
    "DriverNotFound",
    "MissingExtra",
    "ClusterConflict",
    "StalePlan",
    "DamagedEntry",
    "MachineNotFound",
    "StateError",
    "StateLocked",
    "StateConflict",
    "TransportError",
    "ConnectError",
    "AuthenticationError",
    "HostKeyMismatch",
    "CommandTimeout",
    "TransferError",
    "CommandFailed",
    "ConvergenceFailed",
    "VerifyFailed",
    "ProviderError",
    "UnsupportedOperation",
]


@record(frozen=True)
class CommandResult:
    """What a command did. ``ok`` is true when it exited 0.

    Kept immutable so a result can travel inside ``CommandFailed`` and across threads safely.
    """

    command: str
    exit_status: int
    stdout: str = ""
    stderr: str = ""
    host: str | None = None
    duration: float = 0.0

    @property
    def ok(self) -> bool:
        return self.exit_status == 0

    def __bool__(self) -> bool:
        return self.ok

    def to_dict(self) -> dict[str, Any]:
        return {
            "command": self.command,
            "exit_status": self.exit_status,
            "stdout": self.stdout,
            "stderr": self.stderr,
            "host": self.host,
            "duration": round(self.duration, 6),
        }


class ProvisioningError(Exception):
    """Root of every error this library raises on purpose.

    ``machine`` names the machine the error is about, when there is one.
    """

    #: exit code the CLI uses for this kind of error (2: bad input, 1: a machine failed)
    exit_code = 1

    def __init__(self, message: str, *, machine: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.machine = machine

    def __str__(self) -> str:
        if self.machine and not self.message.startswith(f"[{self.machine}]"):
            return f"[{self.machine}] {self.message}"
        return self.message


class ConfigProblem:
    """One problem in one input: the file, the key path inside it, what is wrong."""

    __slots__ = ("file", "key", "message")

    def __init__(self, message: str, *, file: str | None = None, key: str | None = None) -> None:
        self.file = file
        self.key = key
        self.message = message

    def __str__(self) -> str:
        where = ": ".join(part for part in (self.file, self.key) if part)
        return f"{where}: {self.message}" if where else self.message

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return f"ConfigProblem({str(self)!r})"

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "key": self.key, "message": self.message}


def error_message(error: BaseException | None) -> str:
    """An error's own message: ``ProvisioningError.message`` (without the ``[machine]`` prefix
    its ``str()`` adds), else ``str(error)``."""
    return error.message if isinstance(error, ProvisioningError) else str(error)


class ConfigError(ProvisioningError):
    """The user's input is wrong. Holds every problem found, not just the first."""

    exit_code = 2

    def __init__(
        self,
        message: str | None = None,
        *,
        file: str | None = None,
        key: str | None = None,
        problems: Sequence[ConfigProblem] | None = None,
        machine: str | None = None,
    ) -> None:
        if problems is None:
            problems = [ConfigProblem(message or "invalid configuration", file=file, key=key)]
        self.problems = list(problems)
        self.file = file if file is not None else (self.problems[0].file if self.problems else None)
        self.key = key if key is not None else (self.problems[0].key if self.problems else None)
        if message is None or problems is not None and len(self.problems) > 1:
            text = "\n".join(str(p) for p in self.problems)
            if len(self.problems) > 1:
                text = f"{len(self.problems)} problems:\n" + text
        else:
            text = str(self.problems[0]) if self.problems else message
        super().__init__(text, machine=machine)


class InvalidDriverURL(ConfigError):
    """A driver URL does not parse; the message says what a valid one looks like."""

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        super().__init__(f"invalid driver URL {url!r}: {reason}", key="driver")


class DriverNotFound(ConfigError):
    """No driver for a scheme. ``known`` lists the schemes that do exist."""

    def __init__(self, scheme: str, known: Iterable[str], hint: str | None = None) -> None:
        self.scheme = scheme
        self.known = sorted(known)
        text = f"no driver for scheme {scheme!r}; known schemes: {', '.join(self.known) or '(none)'}"
        if hint:
            text += f"; {hint}"
        super().__init__(text, key="driver")


class MissingExtra(ConfigError):
    """An optional dependency is missing: the message names the pip extra to install."""

    def __init__(self, feature: str, extra: str, module: str) -> None:
        self.extra = extra
        super().__init__(
            f"{feature} needs the Python package {module!r}, which is not installed; "
            f"install it with: pip install 'provisioning[{extra}]'"
        )


class ClusterConflict(ConfigError):
    """A machine this cluster file names is recorded in the state as another cluster's: acting
    on it would take over someone else's machine. ``owner`` names that cluster."""

    def __init__(self, name: str, owner: str, cluster: str, *, file: str | None = None) -> None:
        self.owner = owner
        self.cluster = cluster
        super().__init__(f"machine {name!r} belongs to cluster {owner!r} in this state, not to "
                         f"{cluster!r}: rename the machine in this file, use another state, or "
                         f"if it really is this cluster's, run 'converge state mv {name} "
                         f"--to-cluster {cluster}'", file=file, key=f"machines.{name}",
                         machine=name)


class StalePlan(ConfigError):
    """A saved plan was made from another cluster file or state than there is now: make a new
    plan. ``changes`` lists what changed."""

    def __init__(self, plan_file: str, changes: Sequence[str]) -> None:
        self.changes = list(changes)
        super().__init__(f"the plan is stale: {'; '.join(self.changes)}; run 'converge plan "
                         f"--out {plan_file}' again, review it, then apply it", file=plan_file)


class DamagedEntry(ConfigError):
    """An entry of the state store that this tool did not write as it reads it (edited by
    hand, or written by something else): refused, naming it, rather than acted on."""

    def __init__(self, kind: str, name: str, why: str, *, state: str | None = None) -> None:
        self.kind = kind
        self.name = name
        self.why = why
        where = f"the state ({state})" if state else "the state"
        fix = (f"forget it with 'converge state rm {name}' (its resource, if any, is left as it "
               "is) or restore the state from a backup" if kind == "machine" else
               "restore the state from a backup")
        super().__init__(f"{where} holds a damaged {kind} entry {name!r}: {why}; {fix}",
                         key="state", machine=name if kind == "machine" else None)


class MachineNotFound(ProvisioningError):
    """No state entry, or no resource at the provider, for a machine."""


class StateError(ProvisioningError):
    """The state store cannot do what was asked (unreachable, corrupt, too new a schema)."""


class StateLocked(StateError):
    """Another runner holds the lock on a machine. ``holder`` says who and since when."""

    def __init__(self, name: str, holder: dict[str, Any] | None) -> None:
        self.name = name
        self.holder = dict(holder or {})
        who = ", ".join(
            f"{k} {self.holder[k]}" for k in ("host", "pid", "command", "since") if self.holder.get(k)
        )
        super().__init__(
            f"machine {name!r} is locked by another run ({who or 'unknown holder'}); "
            "wait for it to finish, or if that run died, its lock frees when its lease expires",
            machine=name,
        )


class StateConflict(StateError):
    """The entry changed in the store since it was read: re-read it and try again."""


class TransportError(ProvisioningError):
    """Reaching a machine failed. ``host`` names where we tried to go."""

    def __init__(self, message: str, *, host: str | None = None, machine: str | None = None) -> None:
        self.host = host
        super().__init__(message, machine=machine)


class ConnectError(TransportError):
    """The machine is not reachable (yet). Transient: waiting may help."""


class AuthenticationError(TransportError):
    """The machine refused our credentials. Retrying will not help: fix the key or password."""


class HostKeyMismatch(TransportError):
    """The host presented a different key than the one pinned for it: possibly an attack."""

    def __init__(
        self, message: str, *, host: str | None = None, expected: str | None = None,
        seen: str | None = None, machine: str | None = None,
    ) -> None:
        self.expected = expected
        self.seen = seen
        super().__init__(message, host=host, machine=machine)


class CommandTimeout(TransportError):
    """A command ran past its timeout and was stopped."""

    def __init__(
        self, command: str, timeout: float, *, host: str | None = None,
        machine: str | None = None, stdout: str = "", stderr: str = "",
    ) -> None:
        self.command = command
        self.timeout = timeout
        self.stdout = stdout
        self.stderr = stderr
        super().__init__(
            f"command timed out after {timeout:g} s on {host or 'the machine'}: {command!r}; "
            "raise its timeout or check why it hangs",
            host=host, machine=machine,
        )


class TransferError(TransportError):
    """A file transfer failed, timed out, or arrived with another sha256."""


class CommandFailed(ProvisioningError):
    """A command exited with a non-zero status. ``result`` holds its full output."""

    def __init__(self, result: CommandResult, *, machine: str | None = None) -> None:
        self.result = result
        self.command = result.command
        self.exit_status = result.exit_status
        tail = result.stderr.strip().splitlines()[-5:] or result.stdout.strip().splitlines()[-5:]
        text = f"command exited with status {result.exit_status}: {result.command!r}"
        if tail:
            text += "\n  " + "\n  ".join(tail)
        super().__init__(text, machine=machine)


class ConvergenceFailed(ProvisioningError):
    """A convergence tool (ansible-playbook) failed; the message names the failing tasks and
    ``output`` keeps the tool's whole output."""

    def __init__(self, message: str, *, machine: str | None = None, output: str = "") -> None:
        self.output = output
        super().__init__(message, machine=machine)


class VerifyFailed(ProvisioningError):
    """Verify tests failed; the message lists the failing tests with their assertions and
    ``output`` keeps the whole test report."""

    def __init__(self, message: str, *, machine: str | None = None, output: str = "") -> None:
        self.output = output
        super().__init__(message, machine=machine)


class ProviderError(ProvisioningError):
    """The warehouse refused: the cloud's own message is kept in ``provider_message``."""

    def __init__(
        self, message: str, *, provider: str | None = None, provider_message: str | None = None,
        machine: str | None = None,
    ) -> None:
        self.provider = provider
        self.provider_message = provider_message
        super().__init__(message, machine=machine)


class UnsupportedOperation(ProvisioningError):
    """The driver or machine cannot do this; drivers declare it through capability flags."""

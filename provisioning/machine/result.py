"""CommandResult: the immutable outcome of one command on one machine."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
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

    def to_dict(self) -> dict:
        return {
            "command": self.command,
            "exit_status": self.exit_status,
            "stdout": self.stdout,
            "stderr": self.stderr,
            "host": self.host,
            "duration": round(self.duration, 6),
        }

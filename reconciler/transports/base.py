"""The transport seam: structured commands in, structured results out.

A command is data (cmdlet + parameters), never PowerShell source text, so no manifest value can
ever become code. Real transports splat the parameters; the lab interprets them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from reconciler.commands import HTTP_METHODS, MASK, Command, CommandResult, Transport
from reconciler.portable import check_private  # POSIX mode bits, or the file's access list on Windows

__all__ = ["HTTP_METHODS", "MASK", "Command", "CommandResult", "Sensitive", "Transport", "check_private"]

class Sensitive:
    """A secret value that never shows itself: repr and str are the mask; `reveal()` is explicit.

    Transports hold passwords, client secrets, assertions and tokens in these, so no log line,
    exception or repr can carry one by accident.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return MASK

    __str__ = __repr__

    def __reduce__(self) -> Any:
        raise TypeError("a sensitive value cannot be pickled")


def send_unrefused(commands: Sequence[Command], refusals: Mapping[int, CommandResult], stop_on_error: bool,
                   send: Callable[[list[Command], bool], list[CommandResult]]) -> list[CommandResult]:
    """Send what the transport does not refuse; a refused command gets its error result in its place.

    With `stop_on_error` the commands before the first refusal are sent and nothing after it (what a runner
    does at a failure); without, every other command is sent and the results keep the commands' order.
    """
    if stop_on_error and refusals:
        first = min(refusals)
        sent = list(commands[:first])
        tail: list[CommandResult] = [refusals[first]]
    else:
        sent = [c for i, c in enumerate(commands) if i not in refusals]
        tail = []
    answered = send(sent, stop_on_error) if sent else []
    if stop_on_error:
        if answered and not answered[-1].ok:
            return answered
        return answered + tail
    merged = iter(answered)
    return [refusals[i] if i in refusals else next(merged) for i in range(len(commands))]
